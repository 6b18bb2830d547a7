"""W&B interoperability (issue 12, item 4): ``artfs import wandb`` / ``artfs export wandb``
against a real server (both configurations). Manifests are written from the documented
format (``wandb_io``) and, where the ``wandb`` package is installed, round-tripped offline
through W&B's own manifest classes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends import backend_params, make_spec, release
from tests.e2e import Server, run_cli
from tests.refsources import RangeServer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def private_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("ARTFS_REF_FILE_ROOTS", str(tmp_path / "remote"))


@pytest.fixture(params=backend_params())
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    spec = make_spec(request.param, tmp_path / "registry", for_servers=True)
    s = Server(tmp_path / "registry", extra_args=tuple(spec.serve_args()))
    s.start()
    yield s
    s.stop()
    release(spec)


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def wandb_dir(
    root: Path, files: dict[str, bytes], refs: dict[str, tuple[str, bytes]] | None = None
) -> dict[str, Any]:
    """A directory as the W&B SDK downloads it, with its manifest (documented format)."""
    contents: dict[str, Any] = {}
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
        contents[path] = {"digest": b64md5(data), "size": len(data)}
    for path, (url, data) in (refs or {}).items():
        contents[path] = {"digest": b64md5(data), "size": len(data), "ref": url}
    contents[next(iter(files))]["extra"] = {"note": "kept"}
    contents[next(iter(files))]["birthArtifactID"] = "QXJ0aWZhY3Q6MTIz"
    doc = {
        "version": 1,
        "storagePolicy": "wandb-storage-policy-v1",
        "storagePolicyConfig": {"storageLayout": "V2"},
        "contents": contents,
    }
    (root / "wandb_manifest.json").write_text(json.dumps(doc))
    return doc


def sample(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {
        "model.pt": rng.randbytes(700_000),
        "config/params.json": b'{"lr": 0.1}\n',
        "empty.txt": b"",
    }


def cli(server: Server, *args: str, check: bool = True) -> Any:
    return run_cli(*args, "--registry", server.url, check=check)


def test_import_checks_every_md5_and_publishes(server: Server, tmp_path: Path) -> None:
    files = sample(1)
    wandb_dir(tmp_path / "dl", files)
    out = cli(server, "import", "wandb", str(tmp_path / "dl"), "w/model", "--alias", "prod")
    assert out.stdout.strip() == "w/model:v0"
    assert "3 files" in out.stderr and "every md5 checked" in out.stderr
    cli(server, "get", "w/model:prod", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"))
    got = {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")}
    assert got == {"model.pt", "config", "config/params.json", "empty.txt"}
    for path, data in files.items():
        assert (tmp_path / "out" / path).read_bytes() == data
    info = json.loads(cli(server, "info", "w/model:v0").stdout)
    assert info["metadata"]["wandb"]["extra"] == {"model.pt": {"note": "kept"}}
    assert info["metadata"]["wandb"]["storagePolicyConfig"] == {"storageLayout": "V2"}


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("flip", "md5 mismatch"),
        ("size", "says 700000 bytes"),
        ("missing", "not in"),
        ("alg", "artfs checks md5 only"),
        ("gs", "unsupported"),
        ("policy", "storage policy"),
    ],
)
def test_import_refuses_what_does_not_match(
    server: Server, tmp_path: Path, damage: str, said: str
) -> None:
    files = sample(2)
    doc = wandb_dir(tmp_path / "dl", files)
    model = tmp_path / "dl/model.pt"
    if damage == "flip":
        data = bytearray(files["model.pt"])
        data[12345] ^= 1  # same size, one bit: only the md5 can tell
        model.write_bytes(bytes(data))
    elif damage == "size":
        model.write_bytes(files["model.pt"] + b"x")
    elif damage == "missing":
        model.unlink()
    else:
        if damage == "alg":
            doc["contents"]["model.pt"]["extra"] = {"alg": "xxh128"}
        elif damage == "gs":
            doc["contents"]["x"] = {"digest": "abc", "size": 1, "ref": "gs://bucket/x"}
        else:
            doc["storagePolicy"] = "other-policy"
        (tmp_path / "dl/wandb_manifest.json").write_text(json.dumps(doc))
    proc = cli(server, "import", "wandb", str(tmp_path / "dl"), "w/bad", check=False)
    assert proc.returncode != 0 and said in proc.stderr, proc.stderr
    listing = cli(server, "ls", "w", check=False)
    assert "bad" not in listing.stdout  # nothing made, not even the artifact


def test_references_become_artfs_refs_and_export_back_as_references(
    server: Server, tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    big = random.Random(3).randbytes(400_000)
    (remote / "big.bin").write_bytes(big)
    (remote / "small.txt").write_bytes(b"by reference\n")
    http = RangeServer(remote)
    try:
        refs = {
            "ext/big.bin": (http.url("big.bin"), big),
            "ext/small.txt": ((remote / "small.txt").as_uri(), b"by reference\n"),
        }
        wandb_dir(tmp_path / "dl", sample(4), refs)
        out = cli(server, "import", "wandb", str(tmp_path / "dl"), "w/refs")
        assert "5 files" in out.stderr
        manifest = httpx.get(
            f"{server.url}/v1/projects/w/artifacts/refs/versions/0/manifest?refs=1", timeout=10
        ).json()
        assert sorted(r["url"] for r in manifest["refs"].values()) == sorted(
            u for u, _ in refs.values()
        )
        cli(server, "export", "wandb", "w/refs:v0", str(tmp_path / "exp"),
            "--cache-dir", str(tmp_path / "c"))  # fmt: skip
        exported = json.loads((tmp_path / "exp/wandb_manifest.json").read_text())
        original = json.loads((tmp_path / "dl/wandb_manifest.json").read_text())
        for path, entry in original["contents"].items():
            mine = exported["contents"][path]
            assert (mine["digest"], mine["size"], mine.get("ref")) == (
                entry["digest"],
                entry["size"],
                entry.get("ref"),
            )
        assert exported["contents"]["model.pt"]["extra"] == {"note": "kept"}
        assert (tmp_path / "exp/ext/big.bin").read_bytes() == big
        # W&B's md5 of a reference it did not checksum (a multipart ETag): imported, counted
        doc = original
        doc["contents"]["ext/small.txt"]["digest"] = "0123456789abcdef0123456789abcdef-2"
        (tmp_path / "dl/wandb_manifest.json").write_text(json.dumps(doc))
        out = cli(server, "import", "wandb", str(tmp_path / "dl"), "w/refs2")
        assert "except 1 reference W&B gave no md5" in out.stderr
    finally:
        http.close()


def test_export_refuses_a_nonempty_dir_and_a_clashing_manifest(
    server: Server, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "wandb_manifest.json").write_text("{}")
    cli(server, "put", str(src), "w/clash")
    proc = cli(server, "export", "wandb", "w/clash", str(tmp_path / "e"), check=False)
    assert proc.returncode != 0 and "--manifest" in proc.stderr
    cli(server, "export", "wandb", "w/clash", str(tmp_path / "e"),
        "--manifest", str(tmp_path / "m.json"), "--cache-dir", str(tmp_path / "c"))  # fmt: skip
    assert json.loads((tmp_path / "m.json").read_text())["contents"]["wandb_manifest.json"]


def test_round_trip_through_wandbs_own_manifest_classes(server: Server, tmp_path: Path) -> None:
    """W&B's ``ArtifactManifest`` reads what export writes and writes what import reads;
    an import of the export is the same content (no new version)."""
    pytest.importorskip("wandb", reason="the wandb package is not installed")
    os.environ["WANDB_MODE"] = "disabled"
    from wandb.sdk.artifacts.artifact_manifest import ArtifactManifest

    files = sample(5)
    doc = wandb_dir(tmp_path / "dl", files)
    theirs = ArtifactManifest.from_manifest_json(doc).to_manifest_json()
    (tmp_path / "dl/wandb_manifest.json").write_text(json.dumps(theirs))
    cli(server, "import", "wandb", str(tmp_path / "dl"), "w/rt")
    cli(server, "export", "wandb", "w/rt:v0", str(tmp_path / "exp"),
        "--cache-dir", str(tmp_path / "c"))  # fmt: skip
    exported = json.loads((tmp_path / "exp/wandb_manifest.json").read_text())
    parsed = ArtifactManifest.from_manifest_json(exported)
    assert {p: (e.digest, e.size) for p, e in parsed.entries.items()} == {
        p: (b64md5(d), len(d)) for p, d in files.items()
    }
    assert parsed.to_manifest_json()["contents"].keys() == theirs["contents"].keys()
    assert parsed.digest() == ArtifactManifest.from_manifest_json(theirs).digest()
    again = cli(server, "import", "wandb", str(tmp_path / "exp"), "w/rt")
    assert again.stdout.strip() == "w/rt:v0" and "unchanged" in again.stderr
