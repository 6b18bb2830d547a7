"""Fixtures shared by the Python API and fsspec tests: a registry to point them at (a real
``artfs serve`` in both configurations, or a registry directory) and a sample tree."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends import RegistrySpec, backend_params, make_spec, release
from tests.e2e import Server

__all__ = ["Target", "make_tree", "private_dirs", "read_dir", "sha", "target"]


@dataclass
class Target:
    """Where the API under test points: a server (and its spec) or a registry directory."""

    location: str
    server: Server | None
    spec: RegistrySpec | None


@pytest.fixture(params=[*backend_params(), pytest.param("dir", id="registry-dir")])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "dir":
        yield Target(str(tmp_path / "registry-dir"), None, None)
        return
    spec = make_spec(request.param, tmp_path / "registry", for_servers=True)
    server = Server(Path(spec.data_dir), extra_args=tuple(spec.serve_args()))
    server.start()
    try:
        yield Target(server.url, server, spec)
    finally:
        server.stop()
        release(spec)


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mount records of this test only; downloads with no destination land in tmp_path."""
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.chdir(tmp_path)


def make_tree(root: Path, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {
        "big.bin": rng.randbytes(5 * 1024 * 1024 + 12345),  # several cache blocks, odd tail
        "small.txt": f"small {seed}\n".encode(),
        "sub/deeper/a.json": b'{"a": 1}',
        "sub/b.bin": rng.randbytes(70_000),
    }
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return files


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_dir(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
