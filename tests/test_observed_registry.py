"""Observed lineage inputs at the registry (schema 9, registry/observeddb.py): stored with
their kind, best effort where declared ones are strict, hidden or dropped by access."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from artfs.client.base import RegistryClient
from artfs.client.http import HttpRegistryClient
from artfs.drafts.requests import CommitRequest
from artfs.errors import Forbidden, InvalidInput, NotFound
from artfs.manifest import Manifest
from artfs.models import HIDDEN_INPUT, VersionInput
from artfs.registry import Registry
from artfs.registry.sqlbase import SCHEMA_VERSION

from .test_api import publish, upload
from .test_isolation import Isolated, iso

__all__ = ["iso"]  # the fixture, shared with the isolation tests


async def _model(client: RegistryClient, tmp_path: Path, project: str, data: bytes) -> Manifest:
    await client.create_artifact(project, "model", type="model", exist_ok=True)
    return Manifest.build([("w.bin", len(data), await upload(client, tmp_path, data))])


async def test_observed_inputs_are_stored_with_their_kind(
    client: RegistryClient, unique_project: str, tmp_path: Path
) -> None:
    p = unique_project
    await publish(client, tmp_path, p, {"rows": b"first"})
    await publish(client, tmp_path, p, {"rows": b"second"})
    await client.create_artifact(p, "extra", type="dataset")
    await client.commit(p, "extra", Manifest.build([]))
    made = await client.commit(
        p,
        "model",
        await _model(client, tmp_path, p, b"w1"),
        inputs=[f"{p}/data:v1"],
        # one also declared (stored once, declared), one gone, one twice, one new
        observed_inputs=[f"{p}/data:v1", f"{p}/data:v7", f"{p}/extra:v0", f"{p}/extra:v0"],
    )
    shown = [(i.ref, i.kind) for i in made.version.inputs]
    assert shown == [(f"{p}/data:v1", "declared"), (f"{p}/extra:v0", "observed")]
    again = await client.get_version(p, "model", "v0")
    assert [(i.ref, i.kind) for i in again.inputs] == shown
    assert [u.ref for u in await client.used_by(p, "extra", 0)] == [f"{p}/model:v0"]

    # observed only; a deleted version observed is skipped, not a failure
    await client.delete_version(p, "data", 0, force=True)
    second = await client.commit(
        p,
        "model",
        await _model(client, tmp_path, p, b"w2"),
        observed_inputs=[f"{p}/data:v0", f"{p}/data:v1"],
    )
    assert [(i.ref, i.kind) for i in second.version.inputs] == [(f"{p}/data:v1", "observed")]
    with pytest.raises(NotFound):  # declared ones stay strict
        await client.commit(
            p, "model", await _model(client, tmp_path, p, b"w3"), inputs=[f"{p}/data:v0"]
        )
    with pytest.raises(InvalidInput):
        await client.commit(p, "model", Manifest.build([]), observed_inputs=["not a ref"])


def test_schema_9_adds_its_table(tmp_path: Path) -> None:
    assert SCHEMA_VERSION >= 9
    Registry.open(tmp_path / "reg").close()
    with sqlite3.connect(tmp_path / "reg" / "registry.db") as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "observed_inputs" in names


def test_the_wire_form_is_backward_compatible() -> None:
    old = {"project": "p", "artifact": "a", "number": 3, "digest": "d"}
    assert VersionInput.from_json(old).kind is None
    assert VersionInput.from_json(old).to_json() == old  # an older server's form, unchanged
    marked = VersionInput("p", "a", 3, "d", kind="observed")
    assert marked.to_json() == {**old, "kind": "observed"}
    assert VersionInput.from_json(marked.to_json()) == marked
    assert VersionInput.from_json({**old, "kind": "guessed"}).kind is None  # a newer kind
    assert VersionInput.from_json({"hidden": True}) == HIDDEN_INPUT


def test_a_commit_request_can_turn_observation_off() -> None:
    assert CommitRequest.parse(b"").observed is True
    off = CommitRequest(inputs=("p/a:v1",), observed=False)
    assert CommitRequest.parse(off.encode()) == off
    assert b"observed" not in CommitRequest(inputs=("p/a:v1",)).encode()
    with pytest.raises(InvalidInput, match="observed"):
        CommitRequest.parse(b'{"observed": "no"}')


async def test_observed_inputs_the_token_cannot_read_are_dropped(iso: Isolated) -> None:
    """A declared input in an unreadable project is refused (naming it would reveal it);
    an observed one is dropped, so the commit neither fails nor says anything about it."""
    async with HttpRegistryClient(iso.url, token=iso.beta_writer) as beta:
        await beta.create_artifact("beta", "observed", type="model", exist_ok=True)
        with pytest.raises(Forbidden):
            await beta.commit("beta", "observed", Manifest.build([]), inputs=["alpha/data:v0"])
        made = await beta.commit(
            "beta", "observed", Manifest.build([]), observed_inputs=["alpha/data:v0"]
        )
        assert made.version.inputs == ()
    async with HttpRegistryClient(iso.url, token=iso.bridge) as bridge:  # reads alpha
        await bridge.create_artifact("beta", "observed2", type="model", exist_ok=True)
        made = await bridge.commit(
            "beta", "observed2", Manifest.build([]), observed_inputs=["alpha/data:v0"]
        )
        assert [(i.ref, i.kind) for i in made.version.inputs] == [("alpha/data:v0", "observed")]
    # who may not read alpha sees it hidden, as any lineage input
    url = f"{iso.url}/v1/projects/beta/artifacts/observed2/versions/v0"
    raw = httpx.get(url, headers=iso.headers(iso.beta_reader))
    assert raw.status_code == 200 and raw.json()["inputs"] == [{"hidden": True}]


def test_the_in_memory_twin_keeps_kinds_as_the_store_does() -> None:
    from artfs.client.memory import MemoryRegistryClient

    reg = MemoryRegistryClient()
    reg.publish("p", "data", {"x": b"0"})
    reg.publish("p", "data", {"x": b"1"})
    made = reg.publish(
        "p",
        "model",
        {"w": b"w"},
        inputs=["p/data:v1"],
        observed_inputs=["p/data:v1", "p/data:v9", "p/data:v0", "p/data:v0"],
    )
    assert [(i.ref, i.kind) for i in made.inputs] == [
        ("p/data:v1", "declared"),
        ("p/data:v0", "observed"),
    ]
