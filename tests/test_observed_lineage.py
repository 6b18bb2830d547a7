"""Lineage from what a job read (issue 11, item 5), with real processes through a real mount.

Each job runs in a session of its own, as a terminal's would: ``bash -c 'set -m; ...'`` is
an interactive shell (every command its own process group), ``bash -c '...'`` a script.
A process started by pytest directly would share pytest as an ancestor with every other
one, and pytest is a script as far as the rule goes (docs/design.md, "Observed lineage").
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from artfs import observed
from artfs.mountinfo import running_records
from artfs.observed import observed_read_details, observed_reads
from tests.backends import backend_params
from tests.e2e import Server, backend_server, mounted, named_mount, run_cli

TRAIN = """
import multiprocessing, pathlib, sys

def load(path):
    return pathlib.Path(path).read_bytes()

if __name__ == "__main__":
    mnt, p, draft = sys.argv[1:4]
    data = pathlib.Path(mnt, p, "data", "latest", "x").read_bytes()
    # DataLoader-like: forked workers read the other dataset; the trainer never opens it
    with multiprocessing.get_context("fork").Pool(2) as pool:
        parts = pool.map(load, [f"{mnt}/{p}/extra/latest/a", f"{mnt}/{p}/extra/latest/b"])
    out = pathlib.Path(mnt, p, "model", draft)
    out.mkdir(exist_ok=True)
    (out / "y").write_bytes(data + b"".join(parts) + draft.encode())
"""


@pytest.fixture(params=backend_params())
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with backend_server(request.param, tmp_path / "registry") as s:
        yield s


def session(script: str, timeout: float = 60) -> subprocess.Popen[bytes]:
    """Run ``script`` in bash as the leader of a new session (a terminal of its own)."""
    return subprocess.Popen(["bash", "-c", script], start_new_session=True)


def run_session(script: str) -> None:
    proc = session(script)
    assert proc.wait(60) == 0, script


def publish(server: Server, tmp_path: Path, p: str) -> None:
    for artifact, files in (
        ("data", {"x": b"zero"}),
        ("data", {"x": b"one"}),
        ("extra", {"a": b"A", "b": b"B"}),
    ):
        src = tmp_path / f"src-{uuid.uuid4().hex[:6]}"
        src.mkdir()
        for name, data in files.items():
            (src / name).write_bytes(data)
        run_cli("put", str(src), f"{p}/{artifact}", "--registry", server.url)


def mount(server: Server, tmp_path: Path, name: str, *extra: str) -> object:
    return named_mount(server.url, tmp_path, name, "--xattrs", *extra)


def info(path: Path) -> dict[str, object]:
    facts = json.loads(run_cli("info", str(path)).stdout)
    assert isinstance(facts, dict)
    return facts


def test_a_job_records_what_it_read_and_nothing_else(server: Server, tmp_path: Path) -> None:
    p = f"obs{uuid.uuid4().hex[:8]}"
    publish(server, tmp_path, p)
    train = tmp_path / "train.py"
    train.write_text(TRAIN)
    (tmp_path / "y").write_bytes(b"local")
    with mount(server, tmp_path, "m") as mnt:  # type: ignore[attr-defined]
        model = Path(mnt) / p / "model"
        model.mkdir()
        python = f"{sys.executable} {train} {mnt} {p}"
        # an interactive shell: `cat` earlier, then the training job; then a `cp`
        run_session(f"set -m; cat {mnt}/{p}/data/v0/x >/dev/null; {python} run1")
        run_session(
            f"set -m; cat {mnt}/{p}/data/v0/x >/dev/null; mkdir {model}/run2; "
            f"cp {tmp_path}/y {model}/run2/y"
        )
        # a script: reads with one command, writes with another
        run_session(
            f"cat {mnt}/{p}/data/v0/x >/dev/null; mkdir {model}/run3; "
            f"cp {tmp_path}/y {model}/run3/y; echo 3 >> {model}/run3/y"
        )
        for run in ("run1", "run2", "run3"):
            run_cli("commit", str(model / run))
        v0, v1, v2 = (info(model / f"v{n}") for n in range(3))
        assert v0["inputs"] == [f"{p}/data:v1", f"{p}/extra:v0"]  # no --input given
        assert v0["observed_inputs"] == v0["inputs"]  # and not data:v0, the shell's `cat`
        assert v1["inputs"] == [] and v1["observed_inputs"] == []
        assert v2["inputs"] == [f"{p}/data:v0"] and v2["observed_inputs"] == [f"{p}/data:v0"]
        observed = json.loads(os.getxattr(model / "v0", "user.artfs.observed_inputs"))
        assert observed == json.loads(os.getxattr(model / "v0", "user.artfs.inputs"))
        assert observed == [f"{p}/data:v1", f"{p}/extra:v0"]
        used = info(Path(mnt) / p / "extra" / "v0")
        assert used["used_by"] == [f"{p}/model:v0"]

        # declared and observed together; one both declared and observed counts as declared
        run_session(f"{python} run4")
        run_cli("commit", str(model / "run4"), "--input", f"{p}/data:v1", "--input", f"{p}/data:v0")
        v3 = info(model / "v3")
        assert v3["inputs"] == [f"{p}/data:v1", f"{p}/data:v0", f"{p}/extra:v0"]
        assert v3["observed_inputs"] == [f"{p}/extra:v0"]
        body = server_version(server, p, "model", 3)
        assert [i.get("kind") for i in body["inputs"]] == ["declared", "declared", "observed"]

        # turned off for one commit
        run_session(f"{python} run5")
        run_cli("commit", str(model / "run5"), "--no-observed-inputs", "--input", f"{p}/data:v0")
        v4 = info(model / "v4")
        assert v4["inputs"] == [f"{p}/data:v0"] and v4["observed_inputs"] == []

        # a draft from v4: reading v4 itself is its parent, not an input
        state = ["--state-dir", str(tmp_path / "m-state")]  # (other suites' mounts may run)
        run_cli("draft", "--registry", server.url, *state, f"{p}/model:v4", "run6")
        deadline = time.monotonic() + 30
        while not (model / "run6").is_dir():  # listed within the mount's --ttl
            assert time.monotonic() < deadline
            time.sleep(0.2)
        run_session(f"cat {model}/v4/y {mnt}/{p}/data/v0/x >/dev/null; echo 6 >> {model}/run6/y")
        run_cli("commit", str(model / "run6"))
        v5 = info(model / "v5")
        assert v5["parent"] == f"{p}/model:v4" and v5["observed_inputs"] == [f"{p}/data:v0"]


def server_version(server: Server, p: str, artifact: str, number: int) -> dict[str, object]:
    import httpx

    url = f"{server.url}/v1/projects/{p}/artifacts/{artifact}/versions/v{number}"
    body = httpx.get(url, timeout=10).json()
    assert isinstance(body, dict)
    return body


def test_a_mount_without_observed_inputs(server: Server, tmp_path: Path) -> None:
    p = f"obs{uuid.uuid4().hex[:8]}"
    publish(server, tmp_path, p)
    train = tmp_path / "train.py"
    train.write_text(TRAIN)
    with mount(server, tmp_path, "off", "--no-observed-inputs") as mnt:  # type: ignore[attr-defined]
        (Path(mnt) / p / "model").mkdir()
        proc = session(f"{sys.executable} {train} {mnt} {p} run1")
        assert proc.wait(60) == 0
        run_cli("commit", str(Path(mnt) / p / "model" / "run1"))
        assert info(Path(mnt) / p / "model" / "v0")["inputs"] == []
        query = json.dumps({"pid": proc.pid, "request": uuid.uuid4().hex}).encode()
        with pytest.raises(OSError) as exc:
            os.setxattr(mnt, "user.artfs.observed", query)
        assert exc.value.errno == errno.EPERM
        assert observed_reads(proc.pid) == []  # that mount is skipped, quietly


def test_observed_reads_of_a_process_tree(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = f"obs{uuid.uuid4().hex[:8]}"
    publish(server, tmp_path, p)
    with mounted(  # without --xattrs: the kernel soon stops sending getxattr, not setxattr
        server.url, tmp_path / "m", tmp_path / "cache", "--state-dir", str(tmp_path / "state")
    ) as mnt:
        with pytest.raises(OSError) as exc:
            os.getxattr(mnt, "user.anything")
        assert exc.value.errno in (errno.ENOTSUP, errno.ENOSYS)
        since = time.time()
        # the root, a child that reads and exits, a grandchild (a subshell's child) that reads
        root = session(
            f"cat {mnt}/{p}/data/v0/x >/dev/null; "
            f"( cat {mnt}/{p}/extra/latest/a >/dev/null; true ); sleep 0.2"
        )
        other = session(f"cat {mnt}/{p}/data/latest/x >/dev/null")  # another tree
        assert root.wait(60) == 0 and other.wait(60) == 0  # all exited before the question
        assert observed_reads(root.pid, since) == [f"{p}/data:v0", f"{p}/extra:v0"]
        details = observed_read_details(root.pid, since, registry=server.url)
        assert [d.ref for d in details] == [f"{p}/data:v0", f"{p}/extra:v0"]
        assert all(d.mountpoint == str(mnt) and since <= d.read <= time.time() for d in details)
        assert observed_reads(other.pid, since) == [f"{p}/data:v1"]
        assert observed_reads(root.pid, time.time() + 60) == []  # nothing read after that
        assert observed_reads(root.pid, since, registry="http://elsewhere") == []
        me = observed_reads(os.getpid(), since)  # pytest is an ancestor of both trees
        assert list((tmp_path / "state" / "requests").glob("*")) == []  # answers cleaned up

        # a hung mount daemon is skipped after ASK_TIMEOUT, not waited for
        monkeypatch.setattr(observed, "ASK_TIMEOUT", 1.0)
        daemon = next(int(r["pid"]) for r in running_records() if r["mountpoint"] == str(mnt))
        os.kill(daemon, signal.SIGSTOP)
        try:
            started = time.monotonic()
            assert observed_reads(root.pid, since, registry=server.url) == []
            assert time.monotonic() - started < 10
        finally:
            os.kill(daemon, signal.SIGCONT)
        assert observed_reads(root.pid, since) == [f"{p}/data:v0", f"{p}/extra:v0"]
        assert sorted(me) == [f"{p}/data:v0", f"{p}/data:v1", f"{p}/extra:v0"]


def test_artfs_run_records_what_its_command_read(server: Server, tmp_path: Path) -> None:
    """``artfs run NAME -- CMD``: the versions CMD and its children read through a mount
    become the run's ``observed`` inputs; reads by other processes in the same moment, and
    reads through a mount of another registry, do not."""
    p = f"obs{uuid.uuid4().hex[:8]}"
    publish(server, tmp_path, p)
    with mount(server, tmp_path, "m") as mnt:
        other = session(f"cat {mnt}/{p}/extra/latest/a >/dev/null")  # not the run's
        assert other.wait(60) == 0
        out = run_cli(
            "run",
            f"{p}/job",
            "--registry",
            server.url,
            "--",
            "bash",
            "-c",
            f"cat {mnt}/{p}/data/latest/x >/dev/null; (cat {mnt}/{p}/data/v0/x >/dev/null)",
        )
        run_id = out.stderr.split(" is run ")[1].split()[0]
        facts = json.loads(run_cli("info", "--run", run_id, "--registry", server.url).stdout)
        assert facts["status"] == "finished"
        assert facts["inputs"] == [
            {"ref": f"{p}/data:v1", "kind": "observed"},
            {"ref": f"{p}/data:v0", "kind": "observed"},
        ]
