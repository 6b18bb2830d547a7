"""Lineage (SPEC §1: a version records "the version it was derived from, and its lineage
inputs"): inputs resolved at commit time, stored, returned, and followed backwards."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from artfs.client.base import RegistryClient
from artfs.errors import InvalidInput, NotFound
from artfs.manifest import Manifest

from .conftest_server import RunningServer
from .e2e import Server, mounted, run_cli
from .test_api import publish, upload
from .test_e2e_publish import server, write_tree

__all__ = ["server"]  # the fixture, shared with the publishing tests


async def _model(client: RegistryClient, tmp_path: Path, project: str, data: bytes) -> Manifest:
    await client.create_artifact(project, "model", type="model", exist_ok=True)
    return Manifest.build([("weights.bin", len(data), await upload(client, tmp_path, data))])


async def test_inputs_are_resolved_stored_and_followed_back(
    client: RegistryClient, unique_project: str, tmp_path: Path
) -> None:
    p = unique_project
    v0 = (await publish(client, tmp_path, p, {"rows": b"first"})).version
    v1 = (await publish(client, tmp_path, p, {"rows": b"second"}, aliases=["best"])).version
    manifest = await _model(client, tmp_path, p, b"weights 1")
    result = await client.commit(
        p, "model", manifest, inputs=[f"{p}/data:best", f"{p}/data:v0", f"{p}/data:best"]
    )
    inputs = result.version.inputs
    assert [i.ref for i in inputs] == [f"{p}/data:v1", f"{p}/data:v0"]  # resolved, deduplicated
    assert [i.digest for i in inputs] == [v1.digest, v0.digest]
    assert (await client.get_version(p, "model", "v0")).inputs == inputs
    assert [u.ref for u in await client.used_by(p, "data", 1)] == [f"{p}/model:v0"]
    assert [u.ref for u in await client.used_by(p, "data", 0)] == [f"{p}/model:v0"]
    assert await client.used_by(p, "model", 0) == []

    # moving the alias later does not rewrite history
    await client.set_alias(p, "data", "best", 0)
    assert (await client.get_version(p, "model", "v0")).inputs == inputs

    # an identical commit returns the existing version, lineage included
    again = await client.commit(p, "model", manifest, inputs=[f"{p}/data:v0"])
    assert not again.created and again.version.inputs == inputs

    # a second consumer; deleting a consumer drops it from used_by
    second = await client.commit(
        p, "model", await _model(client, tmp_path, p, b"weights 2"), inputs=[f"{p}/data"]
    )
    assert [i.ref for i in second.version.inputs] == [f"{p}/data:v1"]  # p/a means latest
    assert [u.ref for u in await client.used_by(p, "data", 1)] == [
        f"{p}/model:v0",
        f"{p}/model:v1",
    ]
    await client.delete_version(p, "model", 1)
    assert [u.ref for u in await client.used_by(p, "data", 1)] == [f"{p}/model:v0"]

    # a deleted input stays in the lineage of what was made from it (with its digest)
    await client.delete_version(p, "data", 0, force=True)
    assert (await client.get_version(p, "model", "v0")).inputs == inputs
    with pytest.raises(NotFound):
        await client.used_by(p, "data", 0)


async def test_bad_inputs_are_refused_and_nothing_is_committed(
    client: RegistryClient, unique_project: str, tmp_path: Path
) -> None:
    p = unique_project
    await publish(client, tmp_path, p, {"rows": b"x"})
    manifest = await _model(client, tmp_path, p, b"w")
    for bad in ["no-slash", f"{p}/data:", f"{p}/data:x:y", "../x/y", 42]:
        with pytest.raises(InvalidInput):
            await client.commit(p, "model", manifest, inputs=[bad])  # type: ignore[list-item]
    for missing in [f"{p}/data:v7", f"{p}/data:nosuchalias", f"{p}/nope", "nope/data"]:
        with pytest.raises(NotFound):
            await client.commit(p, "model", manifest, inputs=[missing])
    with pytest.raises(InvalidInput, match="inputs"):
        await client.commit(p, "model", manifest, inputs=[f"{p}/data:v0"] * 1001)
    assert (await client.get_artifact(p, "model")).versions == ()


def test_lineage_from_the_command_line_and_the_mount(server: Server, tmp_path: Path) -> None:
    p = f"lin{os.getpid()}{random.randrange(1 << 30)}"
    write_tree(tmp_path / "ds", {"rows.csv": b"a,b\n1,2\n"})
    run_cli("put", str(tmp_path / "ds"), f"{p}/data", "--registry", server.url, "--alias", "best")
    write_tree(tmp_path / "m1", {"w.bin": b"weights"})
    put = run_cli(
        "put",
        str(tmp_path / "m1"),
        f"{p}/model",
        "--registry",
        server.url,
        "--input",
        f"{p}/data:best",
    )
    assert f"{p}/model:v0" in put.stdout + put.stderr
    info = json.loads(run_cli("info", f"{p}/model:v0", "--registry", server.url).stdout)
    assert info["inputs"] == [f"{p}/data:v0"]
    used = json.loads(run_cli("info", f"{p}/data:v0", "--registry", server.url).stdout)
    assert used["used_by"] == [f"{p}/model:v0"]
    bad = run_cli(
        "put",
        str(tmp_path / "m1"),
        f"{p}/model",
        "--registry",
        server.url,
        "--input",
        "x/y:v9",
        check=False,
    )
    assert bad.returncode == 1 and "x" in bad.stderr

    with mounted(server.url, tmp_path / "mnt", tmp_path / "cache", "--xattrs") as mnt:
        art = mnt / p / "model"
        (art / "next").mkdir()
        (art / "next" / "w.bin").write_bytes(b"weights 2")
        commit = json.dumps({"inputs": [f"{p}/data:v0", f"{p}/model:v0"]})
        subprocess.run(
            ["setfattr", "-n", "user.artfs.commit", "-v", commit, str(art / "next")], check=True
        )
        (art / "third").mkdir()
        (art / "third" / "w.bin").write_bytes(b"weights 3")
        out = run_cli("commit", str(art / "third"), "--input", f"{p}/model:v1").stdout
        assert f"{p}/model:v2" in out
        got = json.loads(os.getxattr(art / "v1", "user.artfs.inputs"))
        assert got == [f"{p}/data:v0", f"{p}/model:v0"]
        assert json.loads(os.getxattr(art / "v2", "user.artfs.inputs")) == [f"{p}/model:v1"]
        assert json.loads(os.getxattr(art / "v0", "user.artfs.inputs")) == [f"{p}/data:v0"]
        listed = json.loads(run_cli("info", str(art / "v1")).stdout)
        assert listed["inputs"] == [f"{p}/data:v0", f"{p}/model:v0"]


def test_inputs_over_raw_http(registry_server: RunningServer) -> None:
    import httpx

    base = registry_server.url + "/v1"
    p = f"raw{os.getpid()}{random.randrange(1 << 30)}"
    httpx.post(f"{base}/projects", json={"name": p}).raise_for_status()
    art = f"{base}/projects/{p}/artifacts"
    httpx.post(art, json={"name": "a", "type": "dataset"}).raise_for_status()
    empty = {"files": []}
    r = httpx.post(f"{art}/a/versions", json={"manifest": empty, "inputs": "p/a"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid"
    r = httpx.post(f"{art}/a/versions", json={"manifest": empty})
    assert r.status_code in (200, 201), r.text
    assert r.json()["version"]["inputs"] == []
    r = httpx.get(f"{art}/a/versions/v0/used-by")
    assert r.status_code == 200 and r.json() == {"used_by": []}
    assert httpx.get(f"{art}/a/versions/v5/used-by").status_code == 404
