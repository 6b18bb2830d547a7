"""End to end, publishing through real FUSE mounts (SPEC §2 Publishing, issue 3).

A real ``artfs serve`` process, mounts made by the CLI, and plain shell tools or
plain Python file calls on the mount: mkdir, cp, write-then-rename, setfattr,
``ln -sfn``, ``rm -rf``, ``artfs commit``, daemon crashes and a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from artfs.mountinfo import read_record
from tests.e2e import ARTFS, Server, is_mounted, mounted, named_mount, run_cli

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
    pytest.mark.timeout(300),
]


@pytest.fixture(autouse=True)
def private_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mount records of this test only (other tests on the machine mount too)."""
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "registry")
    s.start()
    yield s
    s.stop()


def mount_at(
    server: Server, tmp_path: Path, name: str, *extra: str
) -> contextlib.AbstractContextManager[Path]:
    """A mount with its own cache and state directory (both named after it)."""
    return named_mount(server.url, tmp_path, name, *extra)


def tree(seed: int, big: int = 3 * 1024 * 1024) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {
        "README.md": f"version {seed}\n".encode(),
        "empty": b"",
        "weights/model.bin": rng.randbytes(big),
        "weights/shard-001.bin": rng.randbytes(200_000),
        "deep/a/b/c/leaf.txt": b"leaf\n",
        "données/ünï.txt": "ünïcode\n".encode(),
    }


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def list_tree(root: Path) -> list[str]:
    return sorted(
        str((Path(dirpath) / n).relative_to(root))
        for dirpath, _dirs, names in os.walk(root)
        for n in names
    )


def read_tree(root: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def commit(draft: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_cli("commit", str(draft), *args, check=check)


def versions(server: Server, project: str, artifact: str) -> list[int]:
    body = httpx.get(f"{server.url}/v1/projects/{project}/artifacts/{artifact}", timeout=5).json()
    return sorted(int(v["number"]) for v in body["versions"])


def expect_errno(code: int | set[int], fn: Callable[[], object]) -> None:
    codes = {code} if isinstance(code, int) else code
    with pytest.raises(OSError) as exc:
        fn()
    assert exc.value.errno in codes, (fn, exc.value)


# --------------------------------------------------------------------------------------------


def test_mkdir_cp_commit_and_a_second_host_reads_it(server: Server, tmp_path: Path) -> None:
    files = tree(1)
    write_tree(tmp_path / "src", files)
    with mount_at(server, tmp_path, "m1") as m:
        os.mkdir(m / "proj")
        assert "proj" in os.listdir(m)
        os.mkdir(m / "proj" / "model")
        os.setxattr(m / "proj" / "model", "user.artfs.type", b"model")
        os.mkdir(m / "proj" / "model" / "wip")
        assert os.listdir(m / "proj" / "model") == ["wip"]
        subprocess.run(
            ["cp", "-r", f"{tmp_path / 'src'}/.", str(m / "proj" / "model" / "wip")], check=True
        )
        assert read_tree(m / "proj" / "model" / "wip") == files
        out = commit(m / "proj" / "model" / "wip", "--alias", "best", "--metadata", '{"acc": 1}')
        assert out.stdout.strip() == "proj/model:v0"
        art = m / "proj" / "model"
        assert sorted(os.listdir(art)) == ["best", "latest", "v0"]  # the draft is gone at once
        assert os.readlink(art / "best") == "v0"
        before = server.stats()["blob_bytes_sent"]
        assert read_tree(art / "v0") == files
        assert server.stats()["blob_bytes_sent"] == before  # its bytes were cached by the commit
        info = json.loads(run_cli("info", str(art / "v0")).stdout)
        assert info["type"] == "model" and info["metadata"] == {"acc": 1}
        assert sorted(info["aliases"]) == ["best", "latest"]
    with mount_at(server, tmp_path, "m2") as other:  # another host: its own cache
        assert read_tree(other / "proj" / "model" / "v0") == files


def test_draft_from_base_is_lazy_and_an_unchanged_recommit_moves_nothing(
    server: Server, tmp_path: Path
) -> None:
    files = tree(2)
    write_tree(tmp_path / "src", files)
    run_cli("put", "--registry", server.url, str(tmp_path / "src"), "p/a")
    with mount_at(server, tmp_path, "m") as m:
        art = m / "p" / "a"
        out = run_cli("draft", "--registry", server.url, "p/a:v0", "next")  # the one mount's
        assert "no bytes copied" in out.stdout
        assert (art / "next").is_dir()
        sent = server.stats()["blob_bytes_sent"]
        assert list_tree(art / "next") == sorted(files)  # a listing fetches no data
        assert os.stat(art / "next" / "weights" / "model.bin").st_size == len(
            files["weights/model.bin"]
        )
        assert server.stats()["blob_bytes_sent"] == sent
        received = server.stats()["blob_bytes_received"]
        out = commit(art / "next")
        assert out.stdout.strip() == "p/a:v0"  # identical to latest: the existing version
        assert server.stats()["blob_bytes_received"] == received
        assert versions(server, "p", "a") == [0]

        run_cli("draft", "p/a:v0", "edit")
        edit = art / "edit"
        with open(edit / "weights" / "model.bin", "r+b") as f:  # copy-on-write, then a patch
            f.seek(1000)
            f.write(b"PATCHED")
        (edit / "README.md").unlink()
        expected = dict(files)
        del expected["README.md"]
        data = bytearray(files["weights/model.bin"])
        data[1000:1007] = b"PATCHED"
        expected["weights/model.bin"] = bytes(data)
        assert read_tree(edit) == expected
        received = server.stats()["blob_bytes_received"]
        assert commit(edit).stdout.strip() == "p/a:v1"
        assert server.stats()["blob_bytes_received"] - received == len(data)  # only the change
        assert read_tree(art / "v1") == expected


def test_file_operations_inside_a_draft(server: Server, tmp_path: Path) -> None:
    run_cli("put", "--registry", server.url, str(_one_file(tmp_path)), "p/a", "--alias", "best")
    with mount_at(server, tmp_path, "m") as m:
        art = m / "p" / "a"
        d = art / "d"
        os.mkdir(d)
        for taken in ("v0", "best", "latest", "d"):
            expect_errno(errno.EEXIST, lambda t=taken: os.mkdir(art / t))  # type: ignore[misc]
        for bad in ("v7", "a:b"):
            expect_errno(errno.EINVAL, lambda b=bad: os.mkdir(art / b))  # type: ignore[misc]

        # create, write at offsets, read while writing
        with open(d / "f.bin", "w+b") as f:
            f.write(b"0123456789")
            f.seek(20)
            f.write(b"xy")
            f.flush()
            f.seek(0)
            assert f.read() == b"0123456789" + b"\0" * 10 + b"xy"
            os.fsync(f.fileno())
        assert os.stat(d / "f.bin").st_size == 22
        os.truncate(d / "f.bin", 4)
        assert (d / "f.bin").read_bytes() == b"0123"
        with open(d / "f.bin", "ab") as f:
            f.write(b"++")
        assert (d / "f.bin").read_bytes() == b"0123++"

        # directories, rename (also over an existing file), unlink, rmdir
        os.makedirs(d / "x" / "y")
        (d / "x" / "y" / "g").write_bytes(b"g")
        os.rename(d / "x", d / "z")
        assert (d / "z" / "y" / "g").read_bytes() == b"g"
        (d / "old").write_bytes(b"old contents")
        os.rename(d / "f.bin", d / "old")
        assert (d / "old").read_bytes() == b"0123++"
        assert not (d / "f.bin").exists()
        expect_errno(errno.ENOTEMPTY, lambda: os.rmdir(d / "z"))
        os.unlink(d / "z" / "y" / "g")
        os.rmdir(d / "z" / "y")
        assert os.listdir(d / "z") == []

        # chmod, utimens: real modes and mtimes
        os.chmod(d / "old", 0o600)
        assert stat.S_IMODE(os.stat(d / "old").st_mode) == 0o600
        os.utime(d / "old", ns=(1_000_000_000, 1_500_000_000_000_000_000))
        assert os.stat(d / "old").st_mtime_ns == 1_500_000_000_000_000_000

        # the write-then-rename pattern of checkpoint writers, in plain Python
        for step in range(3):
            tmp = d / "ckpt.tmp"
            with open(tmp, "wb") as f:
                f.write(f"step {step}\n".encode() * 1000)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, d / "ckpt")
        assert (d / "ckpt").read_bytes() == b"step 2\n" * 1000

        # unlinked while open: still readable and fstat-able
        with open(d / "old", "rb") as f:
            os.unlink(d / "old")
            assert f.read() == b"0123++"
            assert os.fstat(f.fileno()).st_size == 6

        # a symlink is kept (issue 12; tests/test_version_shape.py); what a version cannot hold
        os.symlink("ckpt", d / "link")
        assert os.readlink(d / "link") == "ckpt" and (d / "link").read_bytes()[:7] == b"step 2\n"
        os.unlink(d / "link")
        expect_errno(errno.EPERM, lambda: os.link(d / "ckpt", d / "hard"))
        expect_errno(errno.EPERM, lambda: os.mkfifo(d / "fifo"))
        assert sorted(os.listdir(d)) == ["ckpt", "z"]

        assert commit(d).stdout.strip() == "p/a:v1"
        assert read_tree(art / "v1") == {"ckpt": b"step 2\n" * 1000}
        expect_errno(errno.EROFS, lambda: open(art / "v1" / "ckpt", "wb"))  # noqa: SIM115


def _one_file(tmp_path: Path) -> Path:
    src = tmp_path / "one"
    src.mkdir(exist_ok=True)
    (src / "f.txt").write_bytes(b"first\n")
    return src


def test_aliases_from_the_shell(server: Server, tmp_path: Path) -> None:
    src = _one_file(tmp_path)
    run_cli("put", "--registry", server.url, str(src), "p/a")
    (src / "f.txt").write_bytes(b"second\n")
    run_cli("put", "--registry", server.url, str(src), "p/a")
    with mount_at(server, tmp_path, "m1") as m1, mount_at(server, tmp_path, "m2") as m2:
        a1, a2 = m1 / "p" / "a", m2 / "p" / "a"
        assert os.readlink(a2 / "latest") == "v1"
        subprocess.run(["ln", "-sfn", "v0", str(a1 / "best")], check=True)  # creates
        assert os.readlink(a1 / "best") == "v0"
        with open(a1 / "best" / "f.txt", "rb") as opened:  # opened through the old target
            subprocess.run(["ln", "-sfn", "v1", str(a1 / "best")], check=True)  # moves
            assert os.readlink(a1 / "best") == "v1"  # at once in this mount
            assert (a1 / "best" / "f.txt").read_bytes() == b"second\n"
            assert opened.read() == b"first\n"
        deadline = time.monotonic() + 10
        while os.path.lexists(a2 / "best") is False or os.readlink(a2 / "best") != "v1":
            assert time.monotonic() < deadline, "the other mount never saw the move"
            time.sleep(0.2)
        body = httpx.get(f"{server.url}/v1/projects/p/artifacts/a", timeout=5).json()
        assert body["aliases"]["best"] == 1
        assert not [n for n in os.listdir(a1) if n not in ("best", "latest", "v0", "v1")]

        expect_errno(errno.EINVAL, lambda: os.symlink("v9", a1 / "bad"))
        expect_errno(errno.EINVAL, lambda: os.symlink("../other", a1 / "bad"))
        expect_errno(errno.EPERM, lambda: os.unlink(a1 / "latest"))
        ln = subprocess.run(["ln", "-sfn", "v0", str(a1 / "latest")], capture_output=True)
        assert ln.returncode != 0 and os.readlink(a1 / "latest") == "v1"
        expect_errno(errno.EPERM, lambda: os.rename(a1 / "best", a1 / "latest"))
        os.unlink(a1 / "best")
        assert sorted(os.listdir(a1)) == ["latest", "v0", "v1"]
        body = httpx.get(f"{server.url}/v1/projects/p/artifacts/a", timeout=5).json()
        assert "best" not in body["aliases"]


def test_setfattr_commit_and_rm_rf_discard(server: Server, tmp_path: Path) -> None:
    with mount_at(server, tmp_path, "m") as m:
        os.makedirs(m / "p")
        art = m / "p" / "a"
        os.mkdir(art)
        os.mkdir(art / "keep")
        (art / "keep" / "x").write_bytes(b"x")
        os.mkdir(art / "scrap")
        os.makedirs(art / "scrap" / "deep" / "er")
        (art / "scrap" / "deep" / "er" / "y").write_bytes(b"y" * 100_000)
        subprocess.run(["rm", "-rf", str(art / "scrap")], check=True)
        assert os.listdir(art) == ["keep"]
        bad = subprocess.run(
            ["setfattr", "-n", "user.artfs.commit", "-v", '{"aliases": ["v3"]}', str(art / "keep")],
            capture_output=True,
        )
        assert bad.returncode != 0 and (art / "keep" / "x").read_bytes() == b"x"  # intact
        subprocess.run(
            [
                "setfattr",
                "-n",
                "user.artfs.commit",
                "-v",
                '{"aliases":["best"]}',
                str(art / "keep"),
            ],
            check=True,
        )
        assert sorted(os.listdir(art)) == ["best", "latest", "v0"]
        assert (art / "best" / "x").read_bytes() == b"x"
        info = json.loads(run_cli("info", str(art / "v0")).stdout)
        assert info["type"] == "dataset"
        assert versions(server, "p", "a") == [0]


def _daemon_pid(point: Path) -> int:
    record = read_record(Path(os.path.abspath(point)))
    assert record is not None
    return int(record["pid"])


def _kill_mount(point: Path) -> None:
    pid = _daemon_pid(point)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    subprocess.run(["fusermount3", "-u", "-z", str(point)], capture_output=True, check=False)
    assert not is_mounted(point)


def test_sigkill_of_the_daemon_keeps_closed_files(server: Server, tmp_path: Path) -> None:
    files = tree(3, big=1_000_000)
    m = tmp_path / "m"
    with mount_at(server, tmp_path, "m"):
        os.makedirs(m / "p" / "a" / "d")
        write_tree(m / "p" / "a" / "d", files)
        with open(m / "p" / "a" / "d" / "synced", "wb") as f:
            f.write(b"fsynced\n")
            os.fsync(f.fileno())
        os.rename(m / "p" / "a" / "d" / "README.md", m / "p" / "a" / "d" / "README")
        files["README"] = files.pop("README.md")
        files["synced"] = b"fsynced\n"
        _kill_mount(m)
    with mount_at(server, tmp_path, "m"):
        assert read_tree(m / "p" / "a" / "d") == files
        assert commit(m / "p" / "a" / "d").stdout.strip() == "p/a:v0"


def test_sigkill_in_the_middle_of_a_commit_then_retry(server: Server, tmp_path: Path) -> None:
    files = tree(4, big=8 * 1024 * 1024)
    m = tmp_path / "m"
    with mount_at(server, tmp_path, "m", "--timeout", "60"):
        os.makedirs(m / "p" / "a" / "d")
        write_tree(m / "p" / "a" / "d", files)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)  # the registry stops answering mid-commit
        try:
            pending = subprocess.Popen(
                [*ARTFS, "commit", str(m / "p" / "a" / "d")],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            time.sleep(1.5)
            _kill_mount(m)
            pending.wait(30)
        finally:
            server.proc.send_signal(signal.SIGCONT)
    with mount_at(server, tmp_path, "m"):
        assert read_tree(m / "p" / "a" / "d") == files  # intact until committed
        assert commit(m / "p" / "a" / "d").stdout.strip() == "p/a:v0"
        assert not (m / "p" / "a" / "d").exists()
    assert versions(server, "p", "a") == [0]


def test_two_mounts_commit_to_one_artifact_at_once(server: Server, tmp_path: Path) -> None:
    trees = {name: tree(seed) for seed, name in enumerate(("m1", "m2"), start=10)}
    with mount_at(server, tmp_path, "m1") as m1, mount_at(server, tmp_path, "m2") as m2:
        drafts: dict[str, Path] = {}
        for name, m in (("m1", m1), ("m2", m2)):
            os.makedirs(m / "p" / "a" / f"from-{name}")
            write_tree(m / "p" / "a" / f"from-{name}", trees[name])
            drafts[name] = m / "p" / "a" / f"from-{name}"
        results: dict[str, str] = {}

        def run(name: str) -> None:
            results[name] = commit(drafts[name]).stdout.strip()

        threads = [threading.Thread(target=run, args=(n,)) for n in drafts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(results.values()) == ["p/a:v0", "p/a:v1"]
        assert versions(server, "p", "a") == [0, 1]
        for name, ref in results.items():
            label = ref.split(":")[1]
            # m1 lists the other mount's version within the listing TTL (1 s here)
            deadline = time.monotonic() + 10
            while not (m1 / "p" / "a" / label).is_dir() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert read_tree(m1 / "p" / "a" / label) == trees[name]


def test_full_state_dir_gives_enospc_and_leaves_versions_alone(
    server: Server, tmp_path: Path
) -> None:
    if os.getuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    state = tmp_path / "small-state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(state)], check=True)
    try:
        src = _one_file(tmp_path)
        run_cli("put", "--registry", server.url, str(src), "p/a")
        m = tmp_path / "m"
        with mounted(server.url, m, tmp_path / "cache", "--state-dir", str(state)):
            os.mkdir(m / "p" / "a" / "big")
            chunk = os.urandom(1024 * 1024)
            f = open(m / "p" / "a" / "big" / "fill", "wb")  # noqa: SIM115
            with pytest.raises(OSError) as exc:
                for _ in range(64):
                    f.write(chunk)
                    f.flush()
            with contextlib.suppress(OSError):
                f.close()
            assert exc.value.errno == errno.ENOSPC
            assert (m / "p" / "a" / "v0" / "f.txt").read_bytes() == b"first\n"
            subprocess.run(["rm", "-rf", str(m / "p" / "a" / "big")], check=True)  # cleanup works
            assert sorted(os.listdir(m / "p" / "a")) == ["latest", "v0"]
        assert versions(server, "p", "a") == [0]
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def test_artfs_draft_needs_a_state_dir_when_several_mounts_run(
    server: Server, tmp_path: Path
) -> None:
    run_cli("put", "--registry", server.url, str(_one_file(tmp_path)), "p/a")
    with mount_at(server, tmp_path, "m1"), mount_at(server, tmp_path, "m2"):
        out = run_cli("draft", "p/a:v0", "x", check=False)
        assert out.returncode != 0
        assert "the draft's path" in out.stderr and len(out.stderr.strip().splitlines()) == 1
        state = str(tmp_path / "m2-state")
        run_cli("draft", "--registry", server.url, "p/a:v0", "x", "--state-dir", state)
        assert (tmp_path / "m2" / "p" / "a" / "x" / "f.txt").read_bytes() == b"first\n"
        assert not (tmp_path / "m1" / "p" / "a" / "x").exists()


def test_cp_tree_matches_put_digest(server: Server, tmp_path: Path) -> None:
    """A tree published with cp + commit is the same version content as ``artfs put``'s."""
    files = tree(5, big=100_000)
    write_tree(tmp_path / "src", files)
    run_cli("put", "--registry", server.url, str(tmp_path / "src"), "p/put")
    with mount_at(server, tmp_path, "m") as m:
        os.makedirs(m / "p" / "cp")
        shutil.copytree(tmp_path / "src", m / "p" / "cp" / "d")
        commit(m / "p" / "cp" / "d")
    put = httpx.get(f"{server.url}/v1/projects/p/artifacts/put", timeout=5).json()
    cp = httpx.get(f"{server.url}/v1/projects/p/artifacts/cp", timeout=5).json()
    assert put["versions"][0]["digest"] == cp["versions"][0]["digest"]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root``: file bytes, or None for a directory."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirs, names in os.walk(root):
        base = Path(dirpath)
        for d in dirs:
            out[str((base / d).relative_to(root))] = None
        for n in names:
            out[str((base / n).relative_to(root))] = (base / n).read_bytes()
    return out


def _random_op(rng: random.Random, paths: list[str]) -> tuple[str, tuple[object, ...]]:
    names = ["a", "b", "c", "d1", "d2"]
    some = rng.choice(paths) if paths else "a"
    fresh = "/".join([*(some.split("/")[:-1] if rng.random() < 0.5 else []), rng.choice(names)])
    kind = rng.choice(["create", "write", "truncate", "rename", "unlink", "mkdir", "rmdir"])
    if kind == "create":
        return kind, (fresh, rng.randbytes(rng.randrange(0, 300_000)))
    if kind == "write":
        return kind, (some, rng.randrange(0, 200_000), rng.randbytes(rng.randrange(1, 50_000)))
    if kind == "truncate":
        return kind, (some, rng.randrange(0, 250_000))
    if kind == "rename":
        return kind, (some, fresh)
    if kind in ("unlink", "rmdir"):
        return kind, (some,)
    return kind, (fresh,)


def _apply(root: Path, kind: str, args: tuple[object, ...]) -> int:
    """Apply one operation under ``root``; the errno it failed with, 0 if it worked."""
    p = root / str(args[0])
    try:
        if kind == "create":
            p.write_bytes(args[1])  # type: ignore[arg-type]
        elif kind == "write":
            with open(p, "r+b") as f:
                f.seek(args[1])  # type: ignore[arg-type]
                f.write(args[2])  # type: ignore[arg-type]
        elif kind == "truncate":
            os.truncate(p, args[1])  # type: ignore[arg-type]
        elif kind == "rename":
            os.rename(p, root / str(args[1]))
        elif kind == "unlink":
            os.unlink(p)
        elif kind == "rmdir":
            os.rmdir(p)
        else:
            os.mkdir(p)
    except OSError as e:
        return e.errno or -1
    return 0


def test_random_operations_match_a_local_directory(server: Server, tmp_path: Path) -> None:
    """One seeded sequence of file operations on a draft and on a local directory."""
    rng = random.Random(1234)
    local = tmp_path / "local"
    local.mkdir()
    with mount_at(server, tmp_path, "m") as m:
        os.makedirs(m / "p" / "a" / "rand")
        draft = m / "p" / "a" / "rand"
        for step in range(150):
            paths = sorted(_snapshot(local))
            kind, args = _random_op(rng, paths)
            expected = _apply(local, kind, args)
            got = _apply(draft, kind, args)
            assert got == expected, (step, kind, args[:2])
            assert _snapshot(draft) == _snapshot(local), (step, kind, args[:2])
        files = {k: v for k, v in _snapshot(local).items() if v is not None}
        if files:
            commit(draft)
            assert read_tree(m / "p" / "a" / "v0") == files


def test_mount_again_after_the_daemon_was_killed(server: Server, tmp_path: Path) -> None:
    """A killed daemon leaves a dead mount ("Transport endpoint is not connected"); mounting
    again at the same place replaces it, and the drafts written before are there."""
    files = tree(4, big=300_000)
    m = tmp_path / "m"
    with mount_at(server, tmp_path, "m"):
        os.makedirs(m / "p" / "a" / "d")
        write_tree(m / "p" / "a" / "d", files)
        pid = _daemon_pid(m)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(OSError) as dead:
            os.listdir(m)
        assert dead.value.errno == errno.ENOTCONN
        again = run_cli(
            "mount",
            "--registry",
            server.url,
            str(m),
            "--cache-dir",
            str(tmp_path / "m-cache"),
            "--state-dir",
            str(tmp_path / "m-state"),
        )
        assert f"its daemon (pid {pid}) is gone" in again.stderr
        assert read_tree(m / "p" / "a" / "d") == files
        refused = run_cli("mount", "--registry", server.url, str(m), check=False)
        assert refused.returncode == 1 and "already mounted" in refused.stderr
        assert commit(m / "p" / "a" / "d").stdout.strip() == "p/a:v0"
