"""A hung or dead registry never slows reads of what the mount knows (issue 10, item 7).

A real ``artfs serve`` process, versions published with the CLI, a real FUSE mount with
``--timeout 5 --ttl 1``: files are read into the cache, then the server is stopped with
SIGSTOP (it accepts connections and never answers: the worst case) or killed. Cached reads,
``open``, listings of the artifact and of a version, ``stat`` and ``readlink`` must stay
quick and right while every listing is stale; metadata the mount never fetched fails with
EIO within ``--timeout``; once the server answers again, a new version shows up.

Before the fix, with the server SIGSTOPped: ``md5`` of a cached file 15.1 s, ``open``
15.0 s, ``ls`` of the artifact 15.0 s, ``readlink latest`` 20.0 s; after: 1.05 s for the
first access (the 1 s wait that puts the registry down), milliseconds for every later one
(docs/decisions.md).
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.backends import backend_params
from tests.e2e import Server, backend_server, mounted, run_cli

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")

T = TypeVar("T")
TIMEOUT = 5  # the mount's --timeout
QUICK = 3.0  # generous bound for an operation on known data (the bug: 5 to 30 s and more)


def publish(server: Server, src: Path, files: dict[str, bytes]) -> str:
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return run_cli("put", str(src), "proj/data", "--registry", server.url).stdout.strip()


def md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def opened(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    os.close(fd)
    return fd


@pytest.fixture(params=backend_params())
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """SQLite + local blobs (the data port stops with the server), or PostgreSQL + S3
    (presigned reads: the store stays up)."""
    with backend_server(request.param, tmp_path / "registry") as s:
        yield s


@pytest.mark.parametrize("how", ["sigstop", "sigkill"])
def test_a_hung_or_dead_registry_never_slows_known_data(
    server: Server, tmp_path: Path, how: str
) -> None:
    v0_files = {"big.bin": os.urandom(3 << 20), "dir/small.txt": b"small\n"}
    cold = {"cold/never-read.bin": os.urandom(200_000)}  # its blob is never fetched
    assert publish(server, tmp_path / "src0", v0_files | cold) == "proj/data:v0"
    assert publish(server, tmp_path / "src1", {"other.txt": b"v1\n"}) == "proj/data:v1"
    with mounted(
        server.url, tmp_path / "mnt", tmp_path / "cache", "--timeout", str(TIMEOUT), "--ttl", "1"
    ) as mnt:
        art = mnt / "proj" / "data"
        v0 = art / "v0"
        for rel, data in v0_files.items():
            assert (v0 / rel).read_bytes() == data  # into the cache
        assert set(os.listdir(art)) == {"v0", "v1", "latest"}
        assert server.proc is not None
        pid = server.proc.pid
        if how == "sigstop":
            os.kill(pid, signal.SIGSTOP)
        else:
            server.proc.kill()
            server.proc.wait()
        try:
            slowest: dict[str, float] = {}

            def timed(what: str, fn: Callable[[], T]) -> T:
                start = time.monotonic()
                result = fn()
                took = time.monotonic() - start
                slowest[what] = max(slowest.get(what, 0.0), took)
                print(f"{how} {what}: {took:.3f} s", flush=True)
                return result

            big = hashlib.md5(v0_files["big.bin"]).hexdigest()
            for _ in range(3):
                time.sleep(1.5)  # every listing on the way is stale (TTL 1 s)
                assert timed("md5 cached file", lambda: md5(v0 / "big.bin")) == big
                assert timed("open", lambda: opened(v0 / "dir" / "small.txt")) >= 0
                listing = timed("ls artifact", lambda: set(os.listdir(art)))
                assert listing == {"v0", "v1", "latest"}
                assert timed("ls version", lambda: set(os.listdir(v0))) == {
                    "big.bin",
                    "dir",
                    "cold",
                }
                assert timed("stat file", lambda: os.stat(v0 / "big.bin").st_size) == 3 << 20
                assert timed("stat artifact", lambda: os.stat(art).st_nlink) >= 1
                assert timed("readlink latest", lambda: os.readlink(art / "latest")) == "v1"
                assert timed("ls root", lambda: os.listdir(mnt)) == ["proj"]
            print(f"{how}: slowest {slowest}", flush=True)
            assert max(slowest.values()) < QUICK, slowest

            # metadata never fetched (v1's manifest): a clean EIO within --timeout
            start = time.monotonic()
            with pytest.raises(OSError) as info:
                os.listdir(art / "v1")
            took = time.monotonic() - start
            print(f"{how} unknown metadata: EIO after {took:.3f} s", flush=True)
            assert info.value.errno == errno.EIO
            assert took < TIMEOUT + 2
            # bytes never fetched: EIO too, within the read deadline (the data port is hung too)
            start = time.monotonic()
            with pytest.raises(OSError) as info:
                (v0 / "cold" / "never-read.bin").read_bytes()
            took = time.monotonic() - start
            print(f"{how} uncached bytes: EIO after {took:.3f} s", flush=True)
            assert info.value.errno == errno.EIO
            assert took < TIMEOUT + 2
        finally:
            if how == "sigstop":
                os.kill(pid, signal.SIGCONT)
        if how == "sigkill":
            server.start()  # same data, same ports

        assert publish(server, tmp_path / "src2", {"new.txt": b"v2\n"}) == "proj/data:v2"
        start = time.monotonic()
        while "v2" not in os.listdir(art):
            assert time.monotonic() - start < 30, "the new version never showed up"
            time.sleep(0.2)
        print(f"{how}: v2 visible {time.monotonic() - start:.1f} s after it was published")
        assert (art / "v2" / "new.txt").read_bytes() == b"v2\n"
        assert os.readlink(art / "latest") == "v2"
        assert sorted(os.listdir(art / "v1")) == ["other.txt"]  # now fetched
