"""End to end: a project made by ``mkdir MOUNT/p`` is local to the mount until its first
commit (issue 12, rough edge "rmdir of a project made by mkdir and never committed"),
through real mounts of a real server, in both registry configurations."""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from tests.backends import backend_params, make_spec, release
from tests.e2e import Server, backend_server, named_mount, run_cli

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
    pytest.mark.timeout(300),
]


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.setenv("ARTFS_CACHE_DIR", str(tmp_path / "cli-cache"))


@pytest.fixture(params=backend_params())
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with backend_server(request.param, tmp_path / "registry") as s:
        yield s


def mount(server: Server, tmp_path: Path, name: str) -> AbstractContextManager[Path]:
    return named_mount(server.url, tmp_path, name)


def registry_projects(server: Server) -> list[str]:
    out = run_cli("ls", "--registry", server.url, "--json").stdout
    return [p["name"] for p in json.loads(out)]


def wait_listed(directory: Path, name: str) -> None:
    deadline = time.monotonic() + 10
    while name not in os.listdir(directory):
        assert time.monotonic() < deadline, f"{name} never listed in {directory}"
        time.sleep(0.1)


def rmdir_errno(path: Path) -> int:
    with pytest.raises(OSError) as e:
        os.rmdir(path)
    return int(e.value.errno or 0)


def commit_one(m: Path, project: str, artifact: str, text: str) -> None:
    draft = m / project / artifact / "d"
    draft.mkdir(parents=True)
    (draft / "f.txt").write_text(text)
    run_cli("commit", str(draft))


def test_mkdir_then_rmdir_of_a_project_leaves_nothing(server: Server, tmp_path: Path) -> None:
    with mount(server, tmp_path, "m") as m:
        (m / "p").mkdir()
        assert "p" in os.listdir(m)
        assert (m / "p").is_dir() and os.listdir(m / "p") == []
        assert "p" not in registry_projects(server)  # local until its first commit
        with pytest.raises(FileExistsError):
            (m / "p").mkdir()
        os.rmdir(m / "p")
        assert "p" not in os.listdir(m)
        assert not (m / "p").exists()
        assert "p" not in registry_projects(server)
        (m / "p").mkdir()  # the name can be made again at once
        (m / "p" / "a").mkdir()  # a local artifact in a local project
        assert rmdir_errno(m / "p") == errno.ENOTEMPTY
        os.rmdir(m / "p" / "a")
        os.rmdir(m / "p")
        assert "p" not in os.listdir(m) and "p" not in registry_projects(server)


def test_first_commit_creates_the_project_then_rmdir_is_refused(
    server: Server, tmp_path: Path
) -> None:
    with mount(server, tmp_path, "m") as m:
        (m / "p").mkdir()
        commit_one(m, "p", "a", "one\n")
        assert "p" in registry_projects(server)
        assert (m / "p" / "a" / "v0" / "f.txt").read_text() == "one\n"
        out = run_cli("ls", "--registry", server.url, "p").stdout
        assert out.startswith("a\tdataset\t1 version")
        assert rmdir_errno(m / "p") == errno.ENOTEMPTY
        assert "p" in os.listdir(m)
        # a project the registry has but that lists nothing is still not a mount's to delete
        created = httpx.post(server.url + "/v1/projects", json={"name": "empty"}, timeout=10)
        assert created.status_code == 201
        wait_listed(m, "empty")  # (the mount's root listing is a TTL old at most)
        assert rmdir_errno(m / "empty") == errno.EPERM
        assert "empty" in registry_projects(server)


def test_a_draft_in_a_local_project_survives_a_remount(server: Server, tmp_path: Path) -> None:
    with mount(server, tmp_path, "m") as m:
        (m / "p" / "a" / "d").mkdir(parents=True)
        (m / "p" / "a" / "d" / "f.txt").write_text("kept\n")
        (m / "gone").mkdir()  # empty: lives in the mount's memory only
    with mount(server, tmp_path, "m") as m:
        assert sorted(os.listdir(m)) == ["p"]
        assert (m / "p" / "a" / "d" / "f.txt").read_text() == "kept\n"
        assert "p" not in registry_projects(server)
        run_cli("commit", str(m / "p" / "a" / "d"))
        assert (m / "p" / "a" / "v0" / "f.txt").read_text() == "kept\n"
        assert "p" in registry_projects(server)


def test_two_mounts_and_a_project_created_elsewhere(server: Server, tmp_path: Path) -> None:
    with mount(server, tmp_path, "a") as ma, mount(server, tmp_path, "b") as mb:
        (ma / "p").mkdir()
        (mb / "p").mkdir()  # the registry has no p yet: local to each mount
        commit_one(ma, "p", "x", "from a\n")
        # b's p now shows the registry's project: not b's to remove
        assert rmdir_errno(mb / "p") == errno.ENOTEMPTY
        assert os.listdir(mb / "p") == ["x"]
        commit_one(mb, "p", "y", "from b\n")  # committing into it from b works too
        assert sorted(os.listdir(mb / "p")) == ["x", "y"]
        # mkdir of a name the registry has (created by `artfs put` meanwhile) is EEXIST,
        # even before the mount's root listing shows it
        (mb / "q").mkdir()
        src = tmp_path / "src"
        src.mkdir()
        (src / "f").write_text("put\n")
        run_cli("put", "--registry", server.url, str(src), "q/z")
        with pytest.raises(FileExistsError):
            (ma / "q").mkdir()
        assert rmdir_errno(mb / "q") == errno.ENOTEMPTY
        assert "q" in registry_projects(server)


@pytest.fixture(params=backend_params())
def auth_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Server, str]]:
    """A server with ``--auth on`` and a token that reads every project, writes ``mine``."""
    spec = make_spec(request.param, tmp_path / "registry", for_servers=True)
    store = ["--data", spec.data_dir, *(["--db", spec.db] if spec.db else [])]
    token = run_cli("token", "create", "ci", "--read", "*", "--write", "mine", *store).stdout
    s = Server(Path(spec.data_dir), extra_args=(*spec.serve_args(), "--auth", "on"))
    s.start()
    try:
        yield s, token.strip()
    finally:
        s.stop()
        release(spec)


def test_the_token_decides_at_mkdir_what_it_may_read_and_at_commit_what_it_may_write(
    auth_server: tuple[Server, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, token = auth_server
    monkeypatch.setenv("ARTFS_TOKEN", token)
    with mount(server, tmp_path, "m") as m:
        (m / "mine").mkdir()
        (m / "other").mkdir()  # readable and free: made here, the write right is the commit's
        draft = m / "other" / "a" / "d"
        draft.mkdir(parents=True)
        (draft / "f.txt").write_text("x\n")
        proc = run_cli("commit", str(draft), check=False)
        assert proc.returncode == 1 and "no write right on project 'other'" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert (draft / "f.txt").read_text() == "x\n"  # the draft is kept
        os.unlink(draft / "f.txt")
        os.rmdir(draft)
        os.rmdir(m / "other" / "a")
        os.rmdir(m / "other")
        assert "other" not in os.listdir(m) and "other" not in registry_projects(server)
        commit_one(m, "mine", "a", "mine\n")
        assert registry_projects(server) == ["mine"]
        assert (m / "mine" / "a" / "v0" / "f.txt").read_text() == "mine\n"


def test_a_draft_in_a_local_project_is_reachable_while_the_registry_is_down(
    server: Server, tmp_path: Path
) -> None:
    """A project and artifact made here have nothing at the registry to miss: a remount
    while the registry is down lists and serves their drafts (the listings of an earlier
    mount's copy would not have them)."""
    with mount(server, tmp_path, "m") as m:
        (m / "p" / "a" / "d").mkdir(parents=True)
        (m / "p" / "a" / "d" / "f.txt").write_text("kept\n")
    server.stop()
    started = False
    try:
        with mount(server, tmp_path, "m") as m:
            assert os.listdir(m / "p") == ["a"] and os.listdir(m / "p" / "a") == ["d"]
            assert (m / "p" / "a" / "d" / "f.txt").read_text() == "kept\n"
            (m / "p" / "a" / "d" / "g.txt").write_text("more\n")
            assert sorted(os.listdir(m / "p" / "a" / "d")) == ["f.txt", "g.txt"]
            assert "p" in os.listdir(m)
            server.start()
            started = True
            run_cli("commit", str(m / "p" / "a" / "d"))
            assert (m / "p" / "a" / "v0" / "g.txt").read_text() == "more\n"
    finally:
        if not started:
            server.start()
