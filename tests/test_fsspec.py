"""``artfs://`` through fsspec, pandas and pyarrow (issue 11, item 3), against a real server in
both configurations and a registry directory."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow.dataset as pads
import pytest

import artfs
from artfs.api.fsspec_fs import ArtfsFileSystem
from tests.pyapi_helpers import Target, make_tree, private_dirs, sha, target

__all__ = ["private_dirs", "target"]  # fixtures

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).parents[1]


@pytest.fixture(autouse=True)
def registered() -> None:
    """The entry point of pyproject.toml registers the protocol once artfs is installed
    (tested in a subprocess below); here, register this checkout's class directly."""
    fsspec.register_implementation("artfs", ArtfsFileSystem, clobber=True)


@pytest.fixture
def options(target: Target, tmp_path: Path) -> Iterator[dict[str, str]]:
    opts = {"registry": target.location, "cache_dir": str(tmp_path / "cache")}
    yield opts
    fs = ArtfsFileSystem(**opts)  # the cached instance every call above used
    fs.registry.close()
    ArtfsFileSystem.clear_instance_cache()


@pytest.fixture
def fs(options: dict[str, str]) -> ArtfsFileSystem:
    return ArtfsFileSystem(**options)


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"id": range(5000), "name": [f"row-{i}" for i in range(5000)]})


def test_ls_info_glob_and_ranged_cat_file(fs: ArtfsFileSystem, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", 11)
    with artfs.Registry(fs.registry.url, cache_dir=fs.registry.cache_dir) as reg:
        reg.put(tmp_path / "src", "proj/data", aliases=["best"])
    assert fs.ls("", detail=False) == ["proj"]
    assert fs.ls("proj", detail=False) == ["proj/data"]
    assert fs.ls("artfs://proj/data", detail=False) == [
        "proj/data:v0",
        "proj/data:best",
        "proj/data:latest",
    ]
    top = fs.ls("artfs://proj/data:latest/")
    assert [(e["name"], e["type"]) for e in top] == [
        ("proj/data:latest/big.bin", "file"),
        ("proj/data:latest/small.txt", "file"),
        ("proj/data:latest/sub", "directory"),
    ]
    assert top[0]["size"] == len(files["big.bin"]) and top[0]["sha256"] == sha(files["big.bin"])
    assert fs.ls("proj/data:v0/sub", detail=False) == [
        "proj/data:v0/sub/b.bin",
        "proj/data:v0/sub/deeper",
    ]
    assert fs.info("proj/data:best/sub/deeper")["type"] == "directory"
    assert fs.info("proj/data:best/small.txt")["size"] == len(files["small.txt"])
    assert fs.isdir("proj/data:v0") and fs.isfile("proj/data:v0/sub/b.bin")
    assert not fs.exists("proj/data:v0/nope")
    assert fs.glob("proj/data:v0/**/*.bin") == ["proj/data:v0/big.bin", "proj/data:v0/sub/b.bin"]
    assert fs.find("proj/data:latest/sub") == [
        "proj/data:latest/sub/b.bin",
        "proj/data:latest/sub/deeper/a.json",
    ]
    big = files["big.bin"]
    assert fs.cat_file("proj/data:v0/big.bin") == big
    assert fs.cat_file("proj/data:v0/big.bin", 1000, 5000) == big[1000:5000]
    assert fs.cat_file("proj/data:v0/big.bin", -100) == big[-100:]
    assert fs.cat_file("proj/data:v0/big.bin", 3 << 20, 10 << 20) == big[3 << 20 :]
    assert fs.cat("artfs://proj/data:v0/sub/deeper/a.json") == files["sub/deeper/a.json"]
    with pytest.raises(FileNotFoundError):
        fs.cat_file("proj/data:v0/nope")
    with pytest.raises(FileNotFoundError):
        fs.ls("proj/data:v9")
    with pytest.raises(IsADirectoryError):
        fs.cat_file("proj/data:v0/sub")


def test_fsspec_open_seeks_through_the_cache(options: dict[str, str], tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", 12)
    with artfs.Registry(options["registry"], cache_dir=options["cache_dir"]) as reg:
        reg.put(tmp_path / "src", "proj/data")
    big = files["big.bin"]
    with fsspec.open("artfs://proj/data:latest/big.bin", "rb", **options) as f:
        assert f.size == len(big)
        f.seek(4 << 20)
        assert f.read(1 << 20) == big[4 << 20 : 5 << 20]
        f.seek(-10, os.SEEK_END)
        assert f.read() == big[-10:]
        f.seek(0)
        assert sha(f.read()) == sha(big)


def test_pandas_and_pyarrow_read_artfs_urls(
    options: dict[str, str], frame: pd.DataFrame, tmp_path: Path
) -> None:
    src = tmp_path / "table"
    (src / "parts").mkdir(parents=True)
    frame.to_parquet(src / "x.parquet")
    for i in range(3):
        frame.iloc[i * 1000 : (i + 1) * 1000].to_parquet(src / "parts" / f"part-{i}.parquet")
    with artfs.Registry(options["registry"], cache_dir=options["cache_dir"]) as reg:
        reg.put(src, "proj/data")
    back = pd.read_parquet("artfs://proj/data:latest/x.parquet", storage_options=options)
    pd.testing.assert_frame_equal(back, frame)
    fs = ArtfsFileSystem(**options)
    table = pads.dataset("proj/data:v0/parts", filesystem=fs, format="parquet").to_table()
    assert sorted(table.column("id").to_pylist()) == list(range(3000))
    columns = pd.read_parquet(
        "artfs://proj/data:v0/x.parquet", columns=["name"], storage_options=options
    )
    assert columns["name"].tolist() == frame["name"].tolist()


def test_writing_through_fsspec_makes_a_version_on_commit(
    fs: ArtfsFileSystem, options: dict[str, str], frame: pd.DataFrame, tmp_path: Path
) -> None:
    frame.to_parquet("artfs://proj/out/x.parquet", storage_options=options)
    with fs.open("proj/out/notes/readme.txt", "wb") as f:
        f.write(b"hello ")
        f.write(b"world")
    assert fs.ls("proj/out", detail=False) == ["proj/out/notes", "proj/out/x.parquet"]
    assert fs.info("proj/out/notes/readme.txt") == {
        "name": "proj/out/notes/readme.txt",
        "type": "file",
        "size": len(b"hello world"),
    }
    assert fs.info("proj/out/notes")["type"] == "directory"
    with artfs.Registry(fs.registry.url, cache_dir=fs.registry.cache_dir) as reg:
        with pytest.raises(artfs.NotFound):
            reg.version("proj/out")  # nothing is published before the commit
        done = fs.commit(metadata={"rows": len(frame)}, aliases=["fresh"])
        v = done["proj/out"]
        assert v.ref == "proj/out:v0" and v.metadata == {"rows": len(frame)}
        assert [f.path for f in reg.version("proj/out:fresh").files()] == [
            "notes/readme.txt",
            "x.parquet",
        ]
    assert fs.cat_file("proj/out:v0/notes/readme.txt") == b"hello world"
    pd.testing.assert_frame_equal(
        pd.read_parquet("artfs://proj/out:latest/x.parquet", storage_options=options), frame
    )
    assert fs.commit() == {}  # nothing pending
    with pytest.raises(PermissionError):
        fs.open("proj/out:v0/y.txt", "wb")


def test_a_transaction_commits_a_written_directory_and_an_error_discards_it(
    fs: ArtfsFileSystem, frame: pd.DataFrame, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    make_tree(local, 13)
    with fs.transaction:
        for i in range(3):
            with fs.open(f"proj/parts/part-{i}.parquet", "wb") as f:
                frame.iloc[i * 10 : (i + 1) * 10].to_parquet(f)
        fs.put(str(local), "proj/parts/raw", recursive=True)
    assert fs.find("proj/parts:latest") == [
        "proj/parts:latest/part-0.parquet",
        "proj/parts:latest/part-1.parquet",
        "proj/parts:latest/part-2.parquet",
        "proj/parts:latest/raw/big.bin",
        "proj/parts:latest/raw/small.txt",
        "proj/parts:latest/raw/sub/b.bin",
        "proj/parts:latest/raw/sub/deeper/a.json",
    ]
    assert fs.cat_file("proj/parts:v0/raw/big.bin") == (local / "big.bin").read_bytes()
    table = pads.dataset(fs.glob("proj/parts:v0/*.parquet"), filesystem=fs).to_table()
    assert table.num_rows == 30
    with pytest.raises(RuntimeError, match="boom"), fs.transaction:
        with fs.open("proj/parts/part-9.parquet", "wb") as f:
            f.write(b"never published")
        raise RuntimeError("boom")
    assert fs.ls("proj/parts", detail=False) == ["proj/parts:v0", "proj/parts:latest"]
    assert fs.commit() == {}


def test_the_entry_point_registers_the_protocol(target: Target, tmp_path: Path) -> None:
    """An installed artfs (here: its metadata made from pyproject.toml, first on the path)
    gives fsspec the ``artfs`` protocol with no import or registration by the user."""
    if target.spec is None or target.spec.backend != "sqlite+local":
        pytest.skip("the entry point does not depend on the registry; one configuration")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dist = tmp_path / "site" / f"artfs-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: artfs\nVersion: {project['version']}\n"
    )
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in entries.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_bytes(b"via the entry point")
    with artfs.Registry(target.location, cache_dir=tmp_path / "cache") as reg:
        reg.put(tmp_path / "src", "proj/data")
    where = f"registry={target.location!r}, cache_dir={str(tmp_path / 'cache2')!r}"
    code = (
        "import fsspec\n"
        f"with fsspec.open('artfs://proj/data:latest/a.txt', {where}) as f:\n"
        "    print(f.read().decode(), type(f.fs).__name__)\n"
    )
    path = [str(tmp_path / "site"), *os.environ.get("PYTHONPATH", "").split(":"), str(ROOT)]
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ":".join(p for p in path if p)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "via the entry point ArtfsFileSystem"


def test_a_pickled_filesystem_reads_in_another_process(
    fs: ArtfsFileSystem, options: dict[str, str], tmp_path: Path
) -> None:
    """Dask and multiprocessing ship the filesystem by pickling it: the copy reopens the same
    registry and cache from its options."""
    import pickle

    files = make_tree(tmp_path / "src", 14)
    with artfs.Registry(options["registry"], cache_dir=options["cache_dir"]) as reg:
        reg.put(tmp_path / "src", "proj/data")
    blob = pickle.dumps(fs)
    code = (
        "import pickle, sys\n"
        "fs = pickle.loads(sys.stdin.buffer.read())\n"
        "sys.stdout.buffer.write(fs.cat_file('proj/data:v0/sub/b.bin', 10, 20))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], input=blob, capture_output=True, timeout=120, env=os.environ
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == files["sub/b.bin"][10:20]
