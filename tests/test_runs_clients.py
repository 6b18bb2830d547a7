"""The run methods of the in-process client (the SQLite store) and the in-memory twin give
the same answers for the same calls: inputs kept once with ``declared`` winning, config
merged and bounded, ending once, the runs of a version, and the lineage graph with runs."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from artfs.client.local import LocalRegistryClient
from artfs.client.memory import MemoryRegistryClient
from artfs.errors import Conflict, InvalidInput, NotFound
from artfs.manifest import Manifest
from artfs.registry import Registry
from artfs.registry.sqlbase import SCHEMA_VERSION
from artfs.runs import DECLARED, FAILED, OBSERVED, RUNNING, visible_run
from tests.backends import backend_params, make_spec, release

Client = LocalRegistryClient | MemoryRegistryClient


@pytest.fixture(params=["local", "memory"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Client]:
    files = {"data": [b"d0", b"d1"], "model": [b"m0"]}
    if request.param == "memory":
        mem = MemoryRegistryClient()
        for artifact, contents in files.items():
            for data in contents:
                mem.publish("p", artifact, {"f": data})
        yield mem
        return
    reg = Registry.open(tmp_path / "reg")
    reg.create_project("p")
    for artifact, contents in files.items():
        reg.create_artifact("p", artifact, type="dataset")
        for data in contents:
            sha = hashlib.sha256(data).hexdigest()
            (tmp_path / sha).write_bytes(data)
            reg.put_file(sha, tmp_path / sha)
            reg.commit("p", artifact, Manifest.build([("f", len(data), sha)]))
    reg.close()
    async with LocalRegistryClient(tmp_path / "reg") as local:
        yield local


def _graph(graph: Any, run_id: str) -> tuple[list[tuple[str, str, int]], list[tuple[str, str]]]:
    def name(node_id: str) -> str:
        return "run:R" if node_id == f"run:{run_id}" else node_id

    nodes = sorted((name(n.id), n.kind, n.distance) for n in graph.nodes)
    return nodes, sorted((name(e.source), name(e.target)) for e in graph.edges)


async def test_both_clients_keep_runs_alike(client: Client) -> None:
    run = await client.create_run("p", name="r", job_type="train", config={"a": 1})
    assert (run.status, run.project, run.config, run.input_count) == (RUNNING, "p", {"a": 1}, 0)
    assert len(run.id) == 16
    await client.add_run_inputs(run.id, ["p/data:v0"], kind=OBSERVED)
    after = await client.add_run_inputs(run.id, ["p/data:latest", "p/data:v0"], kind=DECLARED)
    assert after.input_count == 2
    await client.add_run_inputs(run.id, ["p/data:v1"], kind=OBSERVED)  # declared stays
    assert (await client.add_run_outputs(run.id, ["p/model", "p/model:v0"])).output_count == 1
    merged = await client.update_run(run.id, config={"b": [1, 2]})
    assert merged.config == {"a": 1, "b": [1, 2]}
    with pytest.raises(InvalidInput, match="larger than"):
        await client.update_run(run.id, config={"c": "x" * 70_000})
    ended = await client.update_run(run.id, status=FAILED, exit_code=2)
    assert (ended.status, ended.exit_code) == (FAILED, 2) and ended.ended is not None
    for change in (
        client.update_run(run.id),
        client.update_run(run.id, status="finished"),
        client.add_run_inputs(run.id, ["p/data:v0"]),
        client.add_run_outputs(run.id, ["p/data:v0"]),
    ):
        with pytest.raises(Conflict, match="already ended"):
            await change

    full = await client.get_run(run.id)
    assert [(i.ref, i.kind) for i in full.inputs] == [
        ("p/data:v0", DECLARED),
        ("p/data:v1", DECLARED),
    ]
    assert [o.ref for o in full.outputs] == ["p/model:v0"]
    hidden = visible_run(full, lambda project: False)
    assert [(i.ref, i.kind) for i in hidden.inputs] == [("(hidden)", DECLARED)] * 2

    data_runs = await client.version_runs("p", "data", 1)
    assert [r.name for r in data_runs.used_by] == ["r"] and data_runs.produced_by == ()
    model_runs = await client.version_runs("p", "model", 0)
    assert [r.id for r in model_runs.produced_by] == [run.id]

    graph = await client.lineage("p", "model", 0, up=None, down=None)
    assert _graph(graph, run.id) == (
        [
            ("p/data:v0", "version", -2),
            ("p/data:v1", "version", -2),
            ("p/model:v0", "version", 0),
            ("run:R", "run", -1),
        ],
        [("p/data:v0", "run:R"), ("p/data:v1", "run:R"), ("run:R", "p/model:v0")],
    )
    down = await client.lineage("p", "data", 0, up=0, down=1)
    assert _graph(down, run.id)[0] == [("p/data:v0", "version", 0), ("run:R", "run", 1)]
    assert down.node(f"run:{run.id}").status == FAILED

    second = await client.create_run("p", name="r")
    listed = await client.list_runs("p", limit=1)
    assert [r.id for r in listed] == [second.id] and listed[0].inputs == ()


async def test_both_clients_refuse_alike(client: Client) -> None:
    with pytest.raises(InvalidInput, match="run id"):
        await client.get_run("nope")
    with pytest.raises(NotFound):
        await client.get_run("0123456789abcdef")
    with pytest.raises(NotFound):
        await client.create_run("q", name="r")
    for bad in (
        {"name": ""},
        {"name": "a\nb"},
        {"name": "r", "lease": 0.5},
        {"name": "r", "config": [1]},
    ):
        with pytest.raises(InvalidInput):
            await client.create_run("p", **bad)
    run = await client.create_run("p", name="r")
    with pytest.raises(InvalidInput, match="declared or observed"):
        await client.add_run_inputs(run.id, ["p/data"], kind="seen")
    with pytest.raises(NotFound):
        await client.add_run_inputs(run.id, ["p/data:v7"])
    with pytest.raises(InvalidInput):
        await client.update_run(run.id, status="running")
    with pytest.raises(InvalidInput):
        await client.list_runs("p", limit=0)
    assert (await client.get_run(run.id)).input_count == 0


def test_run_nodes_round_trip_and_render() -> None:
    from artfs.lineage_graph import RUN, LineageEdge, LineageGraph, LineageNode, version_node
    from artfs.lineage_render import RENDERERS

    run = LineageNode("run:0123456789abcdef", RUN, "p", name='tr"ain', status="crashed")
    hidden = LineageNode("hidden-1", RUN, hidden=True, distance=-2)
    root = version_node("p", "model", 0, "d")
    data = version_node("p", "data", 3, "e")
    graph = LineageGraph(
        root.id,
        (root, run, hidden, data),
        (
            LineageEdge(hidden.id, run.id),
            LineageEdge(data.id, run.id),
            LineageEdge(run.id, root.id),
        ),
        None,
        None,
        False,
        10_000,
    )
    graph = LineageGraph.from_json(graph.to_json())
    assert graph.node(run.id) == run and graph.node(hidden.id) == hidden
    assert run.to_json() == {
        "id": "run:0123456789abcdef",
        "kind": "run",
        "project": "p",
        "name": 'tr"ain',
        "status": "crashed",
        "distance": 0,
    }
    assert run.label == 'run p/tr"ain (0123456789abcdef, crashed)'
    assert hidden.label == "(hidden run)"
    assert (
        '"run:0123456789abcdef" [label="run p/tr\\"ain (0123456789abcdef, crashed)", shape=ellipse];'
        in RENDERERS["dot"](graph)
    )
    mermaid = RENDERERS["mermaid"](graph)
    assert 'n1(["run p/tr#quot;ain (0123456789abcdef, crashed)"])' in mermaid
    assert 'n2(["(hidden run)"]):::hidden' in mermaid


@pytest.mark.parametrize("backend", backend_params())
def test_concurrent_writers_to_one_run_lose_nothing(backend: str, tmp_path: Path) -> None:
    """Parent and child (``artfs run`` and ``artfs.run()`` in CMD) record into one run at
    once: positions are drawn under the run's row lock, so every input and output lands."""
    spec = make_spec(backend, tmp_path / "data")
    reg = spec.open()
    try:
        reg.create_project("p")
        reg.create_artifact("p", "d", type="dataset")
        data = tmp_path / "blob"
        for i in range(8):
            data.write_bytes(b"%d" % i)
            sha = hashlib.sha256(data.read_bytes()).hexdigest()
            reg.put_file(sha, data)
            reg.commit("p", "d", Manifest.build([("f", len(data.read_bytes()), sha)]))
        run = reg.create_run("p", name="shared")
        errors: list[BaseException] = []

        def writer(i: int) -> None:
            try:
                for _ in range(3):
                    reg.add_run_inputs(run.id, [f"p/d:v{i}"], kind=OBSERVED if i % 2 else DECLARED)
                    reg.add_run_outputs(run.id, [f"p/d:v{7 - i}"])
                    reg.update_run(run.id, config={f"k{i}": i})
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        full = reg.get_run(run.id)
        assert sorted(i.ref for i in full.inputs) == [f"p/d:v{i}" for i in range(8)]
        assert sorted(o.ref for o in full.outputs) == [f"p/d:v{i}" for i in range(8)]
        assert full.config == {f"k{i}": i for i in range(8)}  # no merge lost
    finally:
        reg.close()
        release(spec)


def test_schema_8_upgrades_an_older_sqlite_registry(tmp_path: Path) -> None:
    """A registry of schema 7 (before runs) gains the run tables when opened; what it held
    stays."""
    import sqlite3

    reg = Registry.open(tmp_path)
    reg.create_project("p")
    reg.close()
    db = sqlite3.connect(tmp_path / "registry.db")
    for table in ("run_outputs", "run_inputs", "runs"):
        db.execute(f"DROP TABLE {table}")
    db.execute("PRAGMA user_version=7")
    db.commit()
    db.close()
    reg = Registry.open(tmp_path)
    try:
        assert [p.name for p in reg.list_projects()] == ["p"]
        run = reg.create_run("p", name="after-upgrade")
        assert [r.id for r in reg.list_runs("p")] == [run.id]
    finally:
        reg.close()
    db = sqlite3.connect(tmp_path / "registry.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 8
    db.close()
