"""One scenario of what changes after a commit, against the in-memory twin
(``MemoryRegistryClient``) and a registry directory (``LocalRegistryClient``): the twin
must answer as the registry does, so tests built on it mean something."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from artfs.client.editing import editor_of
from artfs.client.local import LocalRegistryClient
from artfs.client.memory import MemoryRegistryClient
from artfs.errors import Conflict, InvalidInput, NotFound
from artfs.manifest import Manifest

from .test_api import upload


@pytest.fixture(params=["memory", "local"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    c: Any = MemoryRegistryClient() if request.param == "memory" else None
    if c is None:
        c = LocalRegistryClient(tmp_path / "registry")
    try:
        yield c
    finally:
        await c.aclose()


async def _manifest(client: Any, tmp_path: Path, data: bytes) -> Manifest:
    if isinstance(client, MemoryRegistryClient):
        sha = client.add_blob(data)
    else:
        sha = await upload(client, tmp_path, data)
    return Manifest.build([("f", len(data), sha)])


async def test_twin_and_registry_agree(client: Any, tmp_path: Path) -> None:
    await client.create_project("p", exist_ok=True)
    await client.create_artifact("p", "a", type="dataset")
    m0 = await _manifest(client, tmp_path, b"zero")
    m1 = await _manifest(client, tmp_path, b"one")
    v0 = (await client.commit("p", "a", m0, tags=["x"], ttl="1d", metadata={"k": 1})).version
    assert v0.tags == ("x",) and v0.expires is not None
    await client.commit("p", "a", m1, aliases=["best"])
    again = await client.commit("p", "a", m0)
    assert not again.created and again.version.number == 0
    assert (await client.commit("p", "a", m0, allow_duplicate=True)).version.number == 2

    ed = editor_of(client)
    got = await ed.edit_version("p", "a", 0, metadata={"k": None, "j": 2}, editor="me")
    assert got.metadata == {"j": 2} and got.tags == ("x",)
    await ed.edit_version("p", "a", 0, metadata={"j": 2})  # no change: no record
    history = await ed.edit_history("p", "a", 0)
    assert [(h.editor, h.changes) for h in history] == [("me", {"metadata": [{"k": 1}, {"j": 2}]})]
    assert await ed.change_tags("p", "a", 0, add=["y"], remove=["x"]) == ("y",)
    summaries = (await client.get_artifact("p", "a")).versions
    assert [v.tags for v in summaries] == [("y",), (), ()]
    assert await ed.set_ttl("p", "a", 0, None) is None
    assert (await client.get_version("p", "a", "v0")).expires is None
    art = await ed.edit_artifact("p", "a", description="d", type="model")
    assert (art.description, art.type) == ("d", "model")
    await ed.protect_alias("p", "a", "best")
    assert (await client.get_artifact("p", "a")).protected == ("best",)
    with pytest.raises(NotFound):
        await ed.protect_alias("p", "a", "nope")
    with pytest.raises(InvalidInput):
        await ed.change_tags("p", "a", 0, add=["bad tag"])
    with pytest.raises(InvalidInput):
        await ed.edit_version("p", "a", 0, mode="zap", description="x")
    with pytest.raises(Conflict):
        await ed.delete_artifact("p", "a")
    assert await ed.delete_artifact("p", "a", force=True) == 3
    with pytest.raises(NotFound):
        await client.get_artifact("p", "a")
