"""External references end to end (issue 12, item 3): ``artfs put --ref`` against a real
server (both configurations), refs at ``file://``, ``http://`` (a loopback range server)
and ``s3://`` (the test SeaweedFS), read back by ``artfs get`` and through a real mount;
a source changed after the commit is an error (EIO in the mount), never wrong bytes."""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.backends import backend_params
from tests.e2e import Server, backend_server, mounted, run_cli
from tests.refsources import S3_ENDPOINT, Place, RangeServer, place

__all__ = ["place"]  # fixtures

pytestmark = pytest.mark.timeout(300)
FUSE = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
BIG = 3 * 1024 * 1024 + 12_345  # 25 blocks, the last one short


@pytest.fixture(autouse=True)
def private_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.setenv("ARTFS_REF_FILE_ROOTS", str(tmp_path / "data"))
    if S3_ENDPOINT:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", S3_ENDPOINT)


@pytest.fixture(params=backend_params())
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with backend_server(request.param, tmp_path / "registry") as s:
        yield s


def get(server: Server, ref: str, dest: Path, cache: Path, check: bool = True) -> str:
    proc = run_cli(
        "get", "--registry", server.url, "--cache-dir", str(cache), ref, str(dest), check=check
    )
    return proc.stderr


def test_put_ref_then_get_and_mount_read_it(server: Server, place: Place, tmp_path: Path) -> None:
    rng = random.Random(7)
    big, small = rng.randbytes(BIG), b"small ref\n"
    src = tmp_path / "src"
    src.mkdir()
    (src / "local.txt").write_text("uploaded\n")
    (src / "small.txt.artfs-ref").write_text(place.put("small.txt", small) + "\n")
    out = run_cli(
        "put", "--registry", server.url, str(src), "p/refs",
        "--ref", place.put("big.bin", big), "data/big.bin",
    )  # fmt: skip
    assert out.stdout.strip() == "p/refs:v0"
    # only local.txt (9 bytes) and big.bin's block list (25 x 32 bytes) were uploaded
    assert "3 files, 3.0 MiB, uploaded 809 B" in out.stderr, out.stderr

    get(server, "p/refs:v0", tmp_path / "out", tmp_path / "c1")
    assert (tmp_path / "out/data/big.bin").read_bytes() == big
    assert (tmp_path / "out/small.txt").read_bytes() == small
    assert (tmp_path / "out/local.txt").read_text() == "uploaded\n"
    assert not (tmp_path / "out/small.txt.artfs-ref").exists()
    if os.path.exists("/dev/fuse"):
        with mounted(server.url, tmp_path / "m", tmp_path / "mc") as m:
            with open(m / "p/refs/v0/data/big.bin", "rb") as f:
                assert os.pread(f.fileno(), 300_000, 1_000_000) == big[1_000_000:1_300_000]
                assert f.read() == big
            assert (m / "p/refs/latest/small.txt").read_bytes() == small
            assert (m / "p/refs/v0/local.txt").read_text() == "uploaded\n"  # beside refs
            assert os.stat(m / "p/refs/v0/data/big.bin").st_size == BIG


@FUSE
def test_changed_source_is_eio_in_the_mount_and_an_error_in_get(
    server: Server, place: Place, tmp_path: Path
) -> None:
    rng = random.Random(8)
    big = rng.randbytes(BIG)
    small = b"0123456789"
    run_cli(
        "put", "--registry", server.url, "p/chg",
        "--ref", place.put("big.bin", big), "big.bin",
        "--ref", place.put("small.bin", small), "small.bin",
    )  # fmt: skip
    changed = bytearray(big)
    changed[5 * 131072 + 17] ^= 0xFF  # same size, one byte of block 5
    place.put("big.bin", bytes(changed))
    place.put("small.bin", b"0123456789AB")  # grew

    err = get(server, "p/chg:v0", tmp_path / "out", tmp_path / "c1", check=False)
    assert "external ref" in err and ("does not match" in err or "changed" in err), err
    assert not (tmp_path / "out/big.bin").exists()

    with mounted(server.url, tmp_path / "m", tmp_path / "mc") as m:
        with open(m / "p/chg/v0/big.bin", "rb") as f:
            assert os.pread(f.fileno(), 4096, 0) == big[:4096]  # block 0 is unchanged
            with pytest.raises(OSError) as e:
                os.pread(f.fileno(), 4096, 5 * 131072)
            assert e.value.errno == errno.EIO
        with pytest.raises(OSError) as e:
            (m / "p/chg/v0/small.bin").read_bytes()
        assert e.value.errno == errno.EIO


def test_file_refs_are_off_unless_the_reader_allows_them(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.bin").write_bytes(b"x" * 1000)
    run_cli("put", "--registry", server.url, "p/f", "--ref", (data / "x.bin").as_uri(), "x.bin")
    monkeypatch.setenv("ARTFS_REF_FILE_ROOTS", str(tmp_path / "elsewhere"))
    err = get(server, "p/f:v0", tmp_path / "out", tmp_path / "c", check=False)
    assert "ARTFS_REF_FILE_ROOTS" in err, err
    monkeypatch.delenv("ARTFS_REF_FILE_ROOTS")
    err = get(server, "p/f:v0", tmp_path / "out2", tmp_path / "c", check=False)
    assert "ARTFS_REF_FILE_ROOTS" in err, err


def test_a_client_that_predates_refs_is_refused_clearly(server: Server, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.bin").write_bytes(os.urandom(200_000))
    run_cli("put", "--registry", server.url, "p/old", "--ref", (data / "x.bin").as_uri(), "x.bin")
    base = f"{server.url}/v1/projects/p/artifacts/old/versions/0/manifest"
    for params in ({}, {"format": "canonical"}):
        old = httpx.get(base, params=params, timeout=10)
        assert old.status_code == 400 and "predates" in old.text, old.text
    new = httpx.get(base, params={"refs": "1"}, timeout=10)
    body = new.json()
    assert new.status_code == 200
    assert next(iter(body["refs"].values()))["url"].startswith("file://")
    assert len(body["files"]) == 1 and body["files"][0][1] == 200_000


def test_put_refuses_a_bad_ref_before_committing(server: Server, tmp_path: Path) -> None:
    for url, said in (
        ("ftp://host/x", "scheme"),
        ((tmp_path / "nope").as_uri(), "No such file"),
        ("s3://bucket", "no host/bucket or key"),
    ):
        proc = run_cli("put", "--registry", server.url, "p/bad", "--ref", url, "x", check=False)
        assert proc.returncode != 0 and said in proc.stderr, proc.stderr
    proc = run_cli("ls", "--registry", server.url, "p/bad", check=False)
    assert "v0" not in proc.stdout


@FUSE
def test_a_draft_commits_artfs_ref_files_and_keeps_inherited_refs(
    server: Server, place: Place, tmp_path: Path
) -> None:
    """``echo URL > DRAFT/x.artfs-ref`` commits ``x`` as a ref; a draft based on a version
    with refs keeps them (their bytes are never uploaded)."""
    rng = random.Random(9)
    big, other = rng.randbytes(BIG), rng.randbytes(200_000)
    big_url, other_url = place.put("big.bin", big), place.put("other.bin", other)
    run_cli("put", "--registry", server.url, "p/d", "--ref", big_url, "big.bin")
    with mounted(server.url, tmp_path / "m", tmp_path / "mc", "--ttl", "1") as m:
        art = m / "p" / "d"
        run_cli("draft", "--registry", server.url, "p/d:v0", "next")
        (art / "next" / "notes.txt").write_text("local\n")
        (art / "next" / "more").mkdir()
        (art / "next" / "more" / "other.bin.artfs-ref").write_text(other_url + "\n")
        out = run_cli("commit", str(art / "next"))
        assert out.stdout.strip() == "p/d:v1", out.stderr
        v1 = art / "v1"
        assert sorted(os.listdir(v1)) == ["big.bin", "more", "notes.txt"]
        assert os.listdir(v1 / "more") == ["other.bin"]
        assert (v1 / "more" / "other.bin").read_bytes() == other
        assert (v1 / "big.bin").read_bytes() == big
    body = httpx.get(
        f"{server.url}/v1/projects/p/artifacts/d/versions/1/manifest?refs=1", timeout=10
    ).json()
    assert sorted(r["url"] for r in body["refs"].values()) == sorted([big_url, other_url])


def test_python_api_and_fsspec_read_refs_and_fail_on_a_changed_source(
    server: Server, tmp_path: Path
) -> None:
    import fsspec

    import artfs
    from artfs.api.fsspec_fs import ArtfsFileSystem
    from artfs.errors import IntegrityError

    data = tmp_path / "data"
    data.mkdir()
    big = random.Random(10).randbytes(BIG)
    http = RangeServer(data)
    try:
        (data / "big.bin").write_bytes(big)
        run_cli("put", "--registry", server.url, "p/py", "--ref", http.url("big.bin"), "big.bin")
        reg = artfs.Registry(server.url, cache_dir=tmp_path / "pyc")
        try:
            with reg.version("p/py:v0").open("big.bin") as f:
                f.seek(2_000_000)
                assert f.read(100_000) == big[2_000_000:2_100_000]
            made = reg.put(None, "p/py2", refs={"a/big.bin": http.url("big.bin")})
            assert made.ref == "p/py2:v0"
            with made.open("a/big.bin") as f:
                assert f.read() == big
        finally:
            reg.close()
        fsspec.register_implementation("artfs", ArtfsFileSystem, clobber=True)
        opts = {"registry": server.url, "cache_dir": str(tmp_path / "fsc")}
        with fsspec.open("artfs://p/py:v0/big.bin", "rb", **opts) as f:
            assert f.read() == big
        ArtfsFileSystem(**opts).registry.close()
        ArtfsFileSystem.clear_instance_cache()
        changed = bytearray(big)
        changed[-1] ^= 1  # the last block
        (data / "big.bin").write_bytes(bytes(changed))
        reg = artfs.Registry(server.url, cache_dir=tmp_path / "pyc2")
        try:
            with reg.version("p/py:v0").open("big.bin") as f:
                assert f.read(1000) == big[:1000]
                f.seek(BIG - 10)
                with pytest.raises(IntegrityError):
                    f.read(10)
        finally:
            reg.close()
    finally:
        http.close()


def test_gc_keeps_a_refs_block_list_while_its_version_lives(server: Server, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    big = random.Random(11).randbytes(BIG)
    (data / "big.bin").write_bytes(big)
    run_cli("put", "--registry", server.url, "p/gc", "--ref", (data / "big.bin").as_uri(), "b")
    gc = ["gc", "--data", str(server.data), *server.extra_args, "--grace", "0s"]
    first = run_cli(*gc)
    get(server, "p/gc:v0", tmp_path / "out", tmp_path / "c")  # the block list is still there
    assert (tmp_path / "out" / "b").read_bytes() == big
    run_cli("delete", "--registry", server.url, "p/gc:v0", "--force")
    second = run_cli(*gc)
    said = first.stdout + first.stderr
    assert "1 blob scanned, 1 referenced by 1 live version," in said, said
    said = second.stdout + second.stderr
    assert "freed 1 blob," in said, said  # the list was the version's only blob
