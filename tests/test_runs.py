"""Runs (issue 11, item 2) through the Python API and the CLI, against a real server in both
configurations and a registry directory: the lifecycle (finished, failed, the exception
still raised), ``run.use``/``run.log`` lineage, ``artfs run -- CMD`` (exit status, signals,
a child attaching through ``ARTFS_RUN_ID``), the crashed rule, ``ls --runs``, ``info`` and
the lineage graph with runs in it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import artfs
from artfs.api.sync import normalize_registry
from artfs.cli_runs import run_command
from artfs.client import open_client
from artfs.errors import Conflict, InvalidInput
from artfs.runs import CRASHED, DECLARED, FAILED, FINISHED, OBSERVED, RUNNING, RunInfo
from tests.e2e import ARTFS, run_cli
from tests.pyapi_helpers import Target, private_dirs, target

__all__ = ["private_dirs", "target"]  # fixtures

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def env(target: Target, tmp_path: Path) -> dict[str, str]:
    return {"ARTFS_REGISTRY": target.location, "ARTFS_CACHE_DIR": str(tmp_path / "cache")}


@pytest.fixture
def reg(target: Target, env: dict[str, str], tmp_path: Path) -> Iterator[artfs.Registry]:
    with artfs.Registry(target.location, cache_dir=env["ARTFS_CACHE_DIR"]) as r:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "rows.csv").write_bytes(b"a,b\n1,2\n")
        r.put(tmp_path / "data", "p/data")
        yield r


def _tree(root: Path, data: bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "weights.bin").write_bytes(data)
    return root


def test_a_run_records_what_it_used_and_logged(reg: artfs.Registry, tmp_path: Path) -> None:
    with artfs.run("p/train-1", job_type="train", config={"lr": 0.1}, registry=reg) as run:
        assert run.status == RUNNING and run.project == "p" and run.name == "train-1"
        data = run.use("p/data:latest")
        assert data.ref == "p/data:v0"
        run.use("p/data:v0")  # the same version twice: one input
        model = run.log(_tree(tmp_path / "m", b"w1"), "p/model", type="model", aliases=["c"])
        assert model.inputs == ("p/data:v0",)  # the run's inputs are the version's lineage
        draft = reg.draft("p/model", base=model)
        draft.add_file(_tree(tmp_path / "e", b"eval") / "weights.bin", "eval.bin")
        second = run.log(draft, metadata={"acc": 1})
        assert second.number == 1 and second.inputs == ("p/data:v0",)
        assert run.update_config(epochs=3) == {"lr": 0.1, "epochs": 3}
    info = run.refresh()
    assert info.status == FINISHED and info.ended is not None and info.exit_code is None
    assert [(i.ref, i.kind) for i in info.inputs] == [("p/data:v0", DECLARED)]
    assert [o.ref for o in info.outputs] == ["p/model:v0", "p/model:v1"]
    assert info.config == {"lr": 0.1, "epochs": 3} and info.job_type == "train"
    assert info.host and info.user
    with pytest.raises(Conflict, match="already ended"):
        run.update_config(x=1)

    # the graph: data -> run -> model (and data -> model, the version's own lineage)
    graph = reg.lineage("p/model:v0")
    run_id = f"run:{run.id}"
    assert {(e.source, e.target) for e in graph.edges} == {
        ("p/data:v0", "p/model:v0"),
        ("p/data:v0", run_id),
        (run_id, "p/model:v0"),
    }
    node = graph.node(run_id)
    assert (node.kind, node.name, node.status, node.distance) == ("run", "train-1", FINISHED, -1)
    down = reg.lineage("p/data:v0", up=0, down=2)
    assert {n.id: n.distance for n in down.nodes} == {
        "p/data:v0": 0,
        "p/model:v0": 1,
        run_id: 1,
        "p/model:v1": 1,  # its own lineage lists data (and the run made it)
    }


def test_a_failed_block_fails_the_run_and_the_error_goes_on(reg: artfs.Registry) -> None:
    with pytest.raises(ZeroDivisionError), artfs.run("boom", project="p", registry=reg) as run:
        1 / 0  # noqa: B018
    assert run.refresh().status == FAILED
    with pytest.raises(SystemExit), artfs.run("exits", project="p", registry=reg) as run:
        sys.exit(4)
    assert (run.refresh().status, run.info.exit_code) == (FAILED, 4)
    with pytest.raises(SystemExit), artfs.run("exits0", project="p", registry=reg) as run:
        sys.exit(0)
    assert (run.refresh().status, run.info.exit_code) == (FINISHED, 0)


def test_runs_refuse_what_they_cannot_hold(
    reg: artfs.Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ARTFS_PROJECT", raising=False)
    with pytest.raises(InvalidInput, match="needs a project"):
        artfs.run("no-project", registry=reg)
    with pytest.raises(InvalidInput, match="larger than"):
        artfs.run("big", project="p", config={"x": "y" * 70_000}, registry=reg)
    with pytest.raises(InvalidInput, match="JSON"):
        artfs.run("bad", project="p", config={"x": object()}, registry=reg)
    with pytest.raises(artfs.NotFound):
        artfs.run("nowhere", project="no-such-project", registry=reg)
    monkeypatch.setenv("ARTFS_RUN_LEASE", "0.1")
    with pytest.raises(InvalidInput, match="lease"):
        artfs.run("short", project="p", registry=reg)
    monkeypatch.setenv("ARTFS_PROJECT", "p")
    monkeypatch.delenv("ARTFS_RUN_LEASE")
    with artfs.run("from-env", registry=reg) as run:
        with pytest.raises(artfs.NotFound):
            run.use("p/data:v9")
        with pytest.raises(InvalidInput):
            run.use("not a ref")
    assert run.refresh().inputs == () and run.project == "p"
    monkeypatch.setenv("ARTFS_RUN_ID", "xyz")
    with pytest.raises(InvalidInput, match="run id"):
        artfs.run(registry=reg)


def _runs(env: dict[str, str], project: str = "p") -> list[dict[str, object]]:
    out = run_cli("ls", "--runs", project, "--json", env=env).stdout
    runs: list[dict[str, object]] = json.loads(out)
    return runs


def test_artfs_run_exit_status_is_the_commands(
    reg: artfs.Registry, env: dict[str, str], tmp_path: Path
) -> None:
    bad = run_cli(
        "run", "p/shell", "--job-type", "t", "--", "sh", "-c", "exit 3", env=env, check=False
    )
    assert bad.returncode == 3, bad.stderr
    ok = run_cli("run", "--project", "p", "fine", "--", "true", env=env)
    missing = run_cli("run", "p/nothing", "--", str(tmp_path / "no-such-cmd"), env=env, check=False)
    assert missing.returncode == 127 and "can't run" in missing.stderr
    killed = run_cli("run", "p/killed", "--", "sh", "-c", "kill -KILL $$", env=env, check=False)
    assert killed.returncode == 128 + signal.SIGKILL
    runs = {r["name"]: r for r in _runs(env)}
    assert (runs["shell"]["status"], runs["shell"]["exit_code"]) == (FAILED, 3)
    assert runs["shell"]["job_type"] == "t"
    assert (runs["fine"]["status"], runs["fine"]["exit_code"]) == (FINISHED, 0)
    assert (runs["nothing"]["status"], runs["nothing"]["exit_code"]) == (FAILED, 127)
    assert (runs["killed"]["status"], runs["killed"]["exit_code"]) == (FAILED, 137)
    assert ok.stderr.startswith("artfs run: p/fine is run ")
    table = run_cli("ls", "--runs", "p", env=env).stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "NAME", "JOB", "TYPE"]
    assert [line.split()[1] for line in table[1:]] == ["killed", "nothing", "fine", "shell"]
    assert "failed (3)" in table[4]
    assert run_cli("run", "p/x", env=env, check=False).stderr.endswith("which command?\n")
    bad_config = run_cli("run", "p/x", "--config", "[1]", "--", "true", env=env, check=False)
    assert bad_config.returncode == 1 and "--config must be a JSON object" in bad_config.stderr


CHILD = """
import sys
import artfs
with artfs.run("ignored-name", config={"seed": 7}) as run:
    data = run.use("p/data:latest")
    model = run.log(sys.argv[1], "p/model", type="model")
    print(run.id, model.ref, run.owner)
"""


def test_a_child_attaches_to_the_run_of_artfs_run(
    reg: artfs.Registry, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "child.py").write_text(CHILD)
    model_dir = _tree(tmp_path / "model", b"weights")
    proc = run_cli(
        "run",
        "p/train-cli",
        "--job-type",
        "train",
        "--config",
        '{"lr": 0.5}',
        "--",
        sys.executable,
        str(tmp_path / "child.py"),
        str(model_dir),
        env=env,
    )
    child_run, model_ref, owner = proc.stdout.split()
    assert proc.stderr.startswith(f"artfs run: p/train-cli is run {child_run}")
    assert owner == "False"  # attached, not a second run
    (only,) = _runs(env)
    assert only["id"] == child_run and only["status"] == FINISHED
    info = json.loads(run_cli("info", "--run", child_run, env=env).stdout)
    assert info["inputs"] == [{"ref": "p/data:v0", "kind": DECLARED}]
    assert info["outputs"] == [model_ref] == ["p/model:v0"]
    assert info["config"] == {"lr": 0.5, "seed": 7}  # the child's keys merged in
    assert info["name"] == "train-cli" and info["job_type"] == "train"
    assert reg.version(model_ref).inputs == ("p/data:v0",)
    data_info = json.loads(run_cli("info", "p/data:v0", env=env).stdout)
    assert data_info["used_by_runs"] == [f"p/train-cli ({child_run}, finished)"]
    assert data_info["produced_by_runs"] == []
    assert data_info["lineage"].startswith("artfs lineage p/data:v0")
    model_info = json.loads(run_cli("info", "p/model:v0", env=env).stdout)
    assert model_info["produced_by_runs"] == [f"p/train-cli ({child_run}, finished)"]
    text = run_cli("lineage", "p/model:v0", env=env).stdout
    assert f"run p/train-cli ({child_run}, finished)" in text
    dot = run_cli("lineage", "p/model:v0", "--format", "dot", env=env).stdout
    assert f'"run:{child_run}" [label="run p/train-cli' in dot and "shape=ellipse" in dot
    mermaid = run_cli("lineage", "p/data:v0", "--format", "mermaid", env=env).stdout
    assert '(["run p/train-cli' in mermaid
    as_json = json.loads(run_cli("lineage", "p/data:v0", "--format", "json", env=env).stdout)
    kinds = {n["id"]: n["kind"] for n in as_json["nodes"]}
    assert kinds[f"run:{child_run}"] == "run"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_reach_the_command(
    signum: int, env: dict[str, str], reg: artfs.Registry, tmp_path: Path
) -> None:
    """Forwarded once each (SIGINT too: not in a terminal's foreground group here)."""
    script = tmp_path / "trap.py"
    marker = tmp_path / "got"
    script.write_text(
        textwrap.dedent(
            f"""
            import signal, sys, time
            def stop(signum, frame):
                with open({str(marker)!r}, "a") as f:
                    f.write(str(signum) + "\\n")
                time.sleep(0.5)  # a second delivery would land here
                sys.exit(5)
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(s, stop)
            print("ready", flush=True)
            time.sleep(60)
            """
        )
    )
    proc = subprocess.Popen(
        [*ARTFS, "run", "p/trapped", "--", sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # not the test's terminal: what a batch scheduler sees
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signum)
    assert proc.wait(60) == 5
    assert marker.read_text().split() == [str(int(signum))]
    (run,) = _runs(env)
    assert (run["status"], run["exit_code"]) == (FAILED, 5)


def test_a_killed_owner_reads_as_crashed_and_heartbeats_keep_a_run_alive(
    reg: artfs.Registry, env: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "die.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, signal, sys, time
            import artfs
            with artfs.run(sys.argv[1], project="p") as run:
                print(run.id, flush=True)
                while not os.path.exists(sys.argv[2]):  # until the test lets it end
                    time.sleep(0.05)
                if sys.argv[3] == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    lease = {**os.environ, **env, "ARTFS_RUN_LEASE": "1"}
    alive = subprocess.Popen(
        [sys.executable, str(script), "alive", str(tmp_path / "end"), "no"],
        stdout=subprocess.PIPE,
        text=True,
        env=lease,
    )
    assert alive.stdout is not None
    alive_id = alive.stdout.readline().strip()
    dead = subprocess.run(
        [sys.executable, str(script), "dead", str(script), "kill"],
        capture_output=True,
        text=True,
        env=lease,
    )
    assert dead.returncode == -signal.SIGKILL
    dead_id = dead.stdout.strip()
    # the killed run reads as crashed once its lease (1 s) has passed without a heartbeat;
    # the live one, beating every 0.25 s, stays running meanwhile
    deadline = time.monotonic() + 30
    while True:
        runs = {r["id"]: r for r in _runs(env)}
        if runs[dead_id]["status"] == CRASHED:
            break
        assert time.monotonic() < deadline, runs[dead_id]
        time.sleep(0.3)
    assert runs[alive_id]["status"] == RUNNING
    time.sleep(1.5)
    runs = {r["id"]: r for r in _runs(env)}
    assert runs[alive_id]["status"] == RUNNING  # > its lease after start: heartbeats
    assert float(str(runs[alive_id]["heartbeat"])) > float(str(runs[alive_id]["started"])) + 1
    (tmp_path / "end").touch()
    assert alive.wait(60) == 0
    assert {r["id"]: r["status"] for r in _runs(env)}[alive_id] == FINISHED


def test_observed_inputs_hook_records_observed_inputs(
    reg: artfs.Registry, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``artfs run`` records what ``observed_inputs_for(pid)`` returns after CMD exits, as
    ``observed`` inputs (the mount side plugs in there)."""
    seen: list[int] = []

    def observe(pid: int, since: float, registry: str) -> list[str]:
        assert since <= time.time() and registry == normalize_registry(target.location)
        seen.append(pid)
        return ["p/data:latest"]

    async def main() -> int:
        client = open_client(target.location, timeout=10)
        try:
            return await run_command(
                client,
                target.location,
                "p",
                "observed",
                ["true"],
                job_type="",
                run_config=None,
                observe=observe,
            )
        finally:
            await client.aclose()

    assert trio.run(main) == 0
    runs: list[RunInfo] = reg._call(reg.client.list_runs, "p")
    (summary,) = [r for r in runs if r.name == "observed"]
    assert len(seen) == 1 and seen[0] > 0
    full = reg._call(reg.client.get_run, summary.id)
    assert [(i.ref, i.kind) for i in full.inputs] == [("p/data:v0", OBSERVED)]
    assert full.status == FINISHED
