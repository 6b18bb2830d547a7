"""The blob cache shared by real processes on one root.

This module is also the worker: ``python test_cache_procs.py read|hold ...`` runs one
process's side of a test (each with its own BlobCache and an in-memory source that
serves the same deterministic blob and logs every byte it serves to a shared file).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

MiB = 1 << 20


def blob_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# --------------------------------------------------------------------------- worker side
def _worker_client(size: int, seed: int, log: Path, delay: float) -> object:
    from artfs.client.base import DataSink
    from artfs.client.memory import MemoryRegistryClient

    class LoggingClient(MemoryRegistryClient):
        """Appends 'length' per delivered chunk to a file shared by all workers (O_APPEND)."""

        async def read_range(
            self, sha256: str, size: int, offset: int, length: int, sink: DataSink
        ) -> None:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

            def logged(data: bytes) -> None:
                os.write(fd, f"{len(data)}\n".encode())
                sink(data)

            try:
                if delay:
                    for i in range(offset, offset + length, 256 * 1024):
                        await trio.sleep(delay)
                        n = min(256 * 1024, offset + length - i)
                        await super().read_range(sha256, size, i, n, logged)
                else:
                    await super().read_range(sha256, size, offset, length, logged)
            finally:
                os.close(fd)

    client = LoggingClient()
    client.add_blob(blob_bytes(size, seed))
    return client


async def _worker(argv: list[str]) -> None:
    from artfs.cache import BlobCache

    mode, root, size_s, seed_s, log, ready, go = argv[:7]
    size, seed = int(size_s), int(seed_s)
    delay = float(argv[7]) if len(argv) > 7 else 0.0
    client = _worker_client(size, seed, Path(log), delay)
    sha = hashlib.sha256(blob_bytes(size, seed)).hexdigest()
    async with BlobCache(Path(root), client) as cache:  # type: ignore[arg-type]
        Path(ready).touch()
        while not Path(go).exists():
            await trio.sleep(0.005)
        h = hashlib.sha256()
        if mode == "read":  # sequential, like cat through the mount
            async with await cache.open(sha, size) as reader:
                offset = 0
                while offset < size:
                    piece = await reader.read(offset, MiB)
                    h.update(piece)
                    offset += len(piece)
        elif mode == "fetch":
            h.update((await cache.fetch(sha, size)).read_bytes())
        elif mode == "hold":  # keep the blob open until the go file disappears
            async with await cache.open(sha, size) as reader:
                h.update(await reader.read(0, size))
                Path(ready + ".held").touch()
                while Path(go).exists():
                    await trio.sleep(0.01)
    print(json.dumps({"ok": h.hexdigest() == sha}), flush=True)


# --------------------------------------------------------------------------- test side
def spawn(
    mode: str, root: Path, size: int, seed: int, log: Path, name: str, go: Path, delay: float = 0.0
) -> tuple[subprocess.Popen[str], Path]:
    ready = root.parent / f"{name}.ready"
    args = [
        sys.executable,
        __file__,
        mode,
        str(root),
        str(size),
        str(seed),
        str(log),
        str(ready),
        str(go),
        str(delay),
    ]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True), ready


def wait_for(paths: list[Path], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert time.monotonic() < end, f"timed out waiting for {paths}"
        time.sleep(0.01)


def served(log: Path) -> int:
    return sum(int(line) for line in log.read_text().split()) if log.exists() else 0


@pytest.mark.parametrize("modes", [("read", "read", "read"), ("read", "fetch", "read")])
def test_concurrent_processes_download_each_region_once(
    tmp_path: Path, modes: tuple[str, ...]
) -> None:
    root, log, go = tmp_path / "cache", tmp_path / "served.log", tmp_path / "go"
    size = 96 * MiB + 4321
    procs = [spawn(m, root, size, 7, log, f"w{i}", go) for i, m in enumerate(modes)]
    wait_for([ready for _, ready in procs])
    go.touch()
    for proc, _ in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        assert json.loads(out) == {"ok": True}  # every reader got the exact bytes
    assert served(log) == size  # one download per region across all processes
    complete = root / "v1" / "blobs"
    assert [p.name for p in complete.glob("*/*")] == [
        hashlib.sha256(blob_bytes(size, 7)).hexdigest()
    ]


def test_killed_fetcher_leaves_no_lock_and_no_bad_bytes(tmp_path: Path) -> None:
    root, log, go = tmp_path / "cache", tmp_path / "served.log", tmp_path / "go"
    size = 64 * MiB
    go.touch()
    proc, _ = spawn("fetch", root, size, 8, log, "slow", go, delay=0.01)
    end = time.monotonic() + 60
    while served(log) < 8 * MiB:
        assert time.monotonic() < end and proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = served(log)
    log2 = tmp_path / "served2.log"
    proc2, _ = spawn("fetch", root, size, 8, log2, "fast", go)
    out, _ = proc2.communicate(timeout=300)
    assert json.loads(out) == {"ok": True}
    assert served(log2) < size  # what the dead process verified and stored was reused
    assert served(log2) + first >= size


async def test_blob_open_in_another_process_is_not_evicted(tmp_path: Path) -> None:
    from artfs.cache import BlobCache
    from artfs.client.memory import MemoryRegistryClient

    root, log, go = tmp_path / "cache", tmp_path / "served.log", tmp_path / "go"
    size = 2 * MiB
    sha = hashlib.sha256(blob_bytes(size, 9)).hexdigest()
    go.touch()
    proc, ready = spawn("hold", root, size, 9, log, "holder", go)
    with trio.fail_after(60):
        while not Path(str(ready) + ".held").exists():
            await trio.sleep(0.01)
    client = MemoryRegistryClient()
    others = [client.add_blob(blob_bytes(MiB, 100 + i)) for i in range(6)]
    async with BlobCache(root, client, max_bytes=3 * MiB) as cache:
        for other in others:
            await cache.fetch(other, MiB)
        cache.prune(0)
        assert cache.cached_bytes(sha, size) == size  # pinned by the other process
        go.unlink()
        out, _ = proc.communicate(timeout=60)
        assert json.loads(out) == {"ok": True}
        assert cache.prune(0) >= size
        assert cache.cached_bytes(sha, size) == 0


async def test_stuck_peer_lock_fails_with_unavailable_then_recovers(tmp_path: Path) -> None:
    from artfs.cache import BlobCache, CacheTuning
    from artfs.client.memory import MemoryRegistryClient
    from artfs.errors import Unavailable

    client = MemoryRegistryClient()
    data = blob_bytes(4 * MiB, 10)
    sha = client.add_blob(data)
    async with BlobCache(tmp_path, client, tuning=CacheTuning(timeout=0.5)) as cache:
        reader = await cache.open(sha, len(data))
        map_path = cache.layout.partial_map(sha)
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import fcntl, os, sys, time\n"
                f"fd = os.open({str(map_path)!r}, os.O_RDWR)\n"
                "fcntl.lockf(fd, fcntl.LOCK_EX, 0, 0)\n"
                "print('locked', flush=True)\n"
                "time.sleep(600)\n",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            with trio.fail_after(30), pytest.raises(Unavailable):
                await reader.read(MiB, 100)
        finally:
            holder.kill()
            holder.wait()
        # the kernel dropped the dead holder's locks: reading works again
        assert await reader.read(MiB, 100) == data[MiB : MiB + 100]
        await reader.aclose()


if __name__ == "__main__":
    trio.run(_worker, sys.argv[1:])
