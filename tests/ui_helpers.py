"""A registry for the web page's tests (tests/test_ui*.py): seeded in-process, then served
by ``python -m artfs.server --auth on`` on both configurations.

Projects ``vision`` and ``nlp``; tokens ``reader`` (read on vision only), ``admin`` (read
on every project). Lineage: ``nlp/corpus:v0`` and ``vision/data:v1`` -> ``vision/model:v0``
-> ``vision/eval:v0``, so the reader sees the corpus as a hidden node. ``vision/many`` has
120 versions (three pages), ``vision/wide:v0`` 1,200 files in one directory (three pages).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from artfs.manifest import Manifest
from artfs.registry import Registry

from .backends import RegistrySpec, make_spec, release
from .conftest_server import RunningServer, start_spec_server, stop_server

MANY = 120
WIDE = 1200
MAX_PAGE = 1 << 20  # no page over 1 MB (issue 13)


@dataclass
class UiRegistry:
    spec: RegistrySpec
    server: RunningServer
    reader: str = ""
    admin: str = ""
    files: dict[str, bytes] = field(default_factory=dict)  # content by sha256

    @property
    def url(self) -> str:
        return self.server.url

    def open(self) -> Registry:
        return self.spec.open()

    def get(self, path: str, token: str | None = None, **kw: object) -> httpx.Response:
        """GET a page with the token as the login form leaves it: a cookie."""
        cookies = {"artfs_ui_token": token} if token else None
        r = httpx.get(self.url + path, cookies=cookies, timeout=30, **kw)  # type: ignore[arg-type]
        assert len(r.content) < MAX_PAGE, f"{path}: {len(r.content)} bytes"
        return r


def _blob(reg: Registry, tmp: Path, data: bytes, files: dict[str, bytes]) -> tuple[int, str]:
    sha = hashlib.sha256(data).hexdigest()
    (tmp / "blob").write_bytes(data)
    reg.put_file(sha, tmp / "blob")
    files[sha] = data
    return len(data), sha


def seed(reg: Registry, tmp: Path) -> tuple[str, str, dict[str, bytes]]:
    files: dict[str, bytes] = {}

    def m(entries: dict[str, bytes]) -> Manifest:
        return Manifest.build([(p, *_blob(reg, tmp, d, files)) for p, d in entries.items()])

    for project in ("vision", "nlp"):
        reg.create_project(project)
    reg.create_artifact("nlp", "corpus", type="dataset")
    reg.commit("nlp", "corpus", m({"secret-corpus.txt": b"nlp only\n"}), creator="nlp-team")
    reg.create_artifact("vision", "data", type="dataset", description="images")
    v0 = {"a.txt": b"alpha\n", "sub/b.txt": b"bravo\n", "same.txt": b"same\n"}
    reg.commit("vision", "data", m(v0), metadata={"rows": 2, "split": "train"}, creator="ana")
    v1 = {"a.txt": b"alpha two\n", "c.txt": b"charlie\n", "same.txt": b"same\n"}
    reg.commit(
        "vision",
        "data",
        m(v1),
        metadata={"rows": 3, "source": "cam"},
        aliases=["best"],
        creator="ana",
    )
    reg.create_artifact("vision", "model", type="model")
    reg.commit(
        "vision",
        "model",
        m({"weights.bin": b"w" * 1000}),
        inputs=["vision/data:v1", "nlp/corpus:v0"],
        metadata={"acc": 0.91},
        creator="bob",
    )
    reg.create_artifact("vision", "eval", type="report")
    reg.commit("vision", "eval", m({"report.md": b"# ok\n"}), inputs=["vision/model:v0"])
    reg.create_artifact("vision", "many", type="dataset")
    for i in range(MANY):
        reg.commit("vision", "many", m({f"step-{i}.txt": b"s"}), metadata={"step": i})
    reg.create_artifact("vision", "wide", type="dataset")
    wide = {f"dir/f{i:04d}.txt": b"x" * (i % 7) for i in range(WIDE)}
    reg.commit("vision", "wide", m({**wide, "top.txt": b"top\n"}))
    _, reader = reg.tokens.create("reader", {"vision": "read"})
    _, admin = reg.tokens.create("admin", {"*": "read"})
    return reader, admin, files


def ui_registry(backend: str, root: Path, *extra: str) -> Iterator[UiRegistry]:
    """The seeded registry behind a server started with ``extra`` arguments."""
    spec = make_spec(backend, root / "data", for_servers=True)
    try:
        reg = spec.open()
        try:
            reader, admin, files = seed(reg, root)
        finally:
            reg.close()
        server = start_spec_server(spec, *extra)
        try:
            yield UiRegistry(spec, server, reader, admin, files)
        finally:
            stop_server(server.proc)
    finally:
        release(spec)


def backend_of(request: pytest.FixtureRequest) -> str:
    return str(request.param)
