#!/usr/bin/env python3
"""Micro-benchmark of the blob cache's read path, reported as ratios to baselines of the same run.

Cold: a sequential 1 MiB-at-a-time read of one blob through ``BlobCache`` (what the FUSE
layer does with 1 MiB kernel read-ahead), and ``BlobCache.fetch``, each against the
same in-memory source streamed straight into a file (a plain download: no cache, no
verification). Warm: reads of the complete cached blob — first pass in a fresh cache
instance (each block verified once), second pass (plain inline pread) — against
``os.pread`` of the same file.

    .venv/bin/python scripts/bench_cache.py [--size-mib 1024] [--chunk-kib 64] [--dir DIR]

``--small N`` measures many small blobs instead (the "cat 10,000 small files" workload):
open+read+close of N blobs of 100-4,095 bytes through ``BlobCache``, cold (empty cache),
warm in a fresh cache instance (first read verifies) and warm again in the same one.
``--mount REGISTRY`` (with ``--small N``) also publishes N such files to REGISTRY (a
registry directory, or a server URL) with ``artfs put``, mounts it with an empty cache and
times ``cat`` of all of them (cold), then again on a fresh mount of the filled cache (warm).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from artfs.cache import BlobCache, CacheTuning
from artfs.client.base import DataSink
from artfs.client.memory import MemoryRegistryClient

MiB = 1 << 20


class MemorySource(MemoryRegistryClient):
    """Serves blob bytes from memory in ``chunk``-sized pieces, yielding to trio between them
    like a socket read would; it does nothing per byte beyond slicing."""

    def __init__(self, chunk: int) -> None:
        super().__init__()
        self.chunk = chunk
        self._digests: dict[str, list[bytes]] = {}

    async def blob_blocks(self, sha256: str, size: int) -> list[bytes]:
        # A registry stores these; computing them per request would bill the cache for it.
        if sha256 not in self._digests:
            self._digests[sha256] = await super().blob_blocks(sha256, size)
        return self._digests[sha256]

    async def read_range(
        self, sha256: str, size: int, offset: int, length: int, sink: DataSink
    ) -> None:
        self.requests += 1
        view = memoryview(self.blobs[sha256])[offset : offset + length]
        for i in range(0, len(view), self.chunk):
            await trio.sleep(0)
            piece = view[i : i + self.chunk]
            self.bytes_served += len(piece)
            sink(piece)  # type: ignore[arg-type]


async def plain_download(source: MemorySource, sha: str, size: int, dest: Path) -> float:
    """The baseline: the same ranged stream written to a file, no checks, no cache."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        start = time.perf_counter()
        pos = 0

        def sink(data: bytes) -> None:
            nonlocal pos
            pos += os.pwrite(fd, data, pos)

        await source.read_range(sha, size, 0, size, sink)
        return time.perf_counter() - start
    finally:
        os.close(fd)


async def sequential_read(cache: BlobCache, sha: str, size: int, step: int = MiB) -> float:
    start = time.perf_counter()
    async with await cache.open(sha, size) as reader:
        offset = 0
        while offset < size:
            offset += len(await reader.read(offset, step))
    return time.perf_counter() - start


def pread_file(path: Path, size: int, step: int = MiB) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.perf_counter()
        offset = 0
        while offset < size:
            offset += len(os.pread(fd, step, offset))
        return time.perf_counter() - start
    finally:
        os.close(fd)


def rate(size: int, seconds: float) -> str:
    return f"{size / seconds / MiB:8.0f} MiB/s"


def small_sizes(n: int, seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(100, 4096) for _ in range(n)]


async def open_read_close(cache: BlobCache, blobs: list[tuple[str, int]]) -> float:
    """Seconds per blob for open + one read of the whole blob + close, one after another."""
    start = time.perf_counter()
    for sha, size in blobs:
        reader = await cache.open(sha, size)
        try:
            if len(await reader.read(0, 128 * 1024)) != size:
                raise AssertionError(f"short read of {sha[:12]}")
        finally:
            await reader.aclose()
    return (time.perf_counter() - start) / len(blobs)


async def bench_small(n: int, chunk: int, where: Path | None) -> None:
    source = MemorySource(chunk)
    blobs = [(source.add_blob(os.urandom(size)), size) for size in small_sizes(n)]
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        root = Path(tmp) / "cache"
        start = time.perf_counter()
        async with BlobCache(root, source) as cache:
            source.requests = 0
            cold = await open_read_close(cache, blobs)
            requests = source.requests
        settled = (time.perf_counter() - start) / n  # incl. publishing left to the background
        async with BlobCache(root, source) as cache:
            warm1 = await open_read_close(cache, blobs)
            warm2 = await open_read_close(cache, blobs)
        partial = sum(1 for _ in (root / "v1" / "partial").rglob("*.map"))
    print(f"{n} small blobs (100-4,095 B), open+read+close each, in-memory source")
    print(f"cold                        {cold * 1e6:8.0f} us/blob  ({requests} source requests)")
    print(f"cold, until all published   {settled * 1e6:8.0f} us/blob")
    print(f"warm, fresh cache instance  {warm1 * 1e6:8.0f} us/blob")
    print(f"warm, same instance         {warm2 * 1e6:8.0f} us/blob")
    print(f"partial maps left behind    {partial}")


def bench_small_mount(n: int, registry: str, where: Path | None) -> None:
    """``cat`` of n small files through a real mount: cold (empty cache), then warm."""
    artfs = [sys.executable, "-m", "artfs.cli"]
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        base = Path(tmp)
        src = base / "src"
        src.mkdir()
        for i, size in enumerate(small_sizes(n, seed=int(time.time()))):
            (src / f"f{i:05d}.bin").write_bytes(os.urandom(size))
        project = f"bench{os.getpid()}"
        env = {**os.environ, "ARTFS_REGISTRY": registry}
        subprocess.run(
            [*artfs, "put", str(src), f"{project}/small"],
            check=True,
            env=env,
            capture_output=True,
        )
        cache, mnt = base / "cache", base / "mnt"
        mnt.mkdir()
        for label in ("cold", "warm"):
            subprocess.run(
                [*artfs, "mount", "--registry", registry, "--cache-dir", str(cache), str(mnt)],
                check=True,
                env=env,
            )
            try:
                files = sorted((mnt / project / "small" / "v0").iterdir())
                start = time.perf_counter()
                subprocess.run(["cat", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
                took = time.perf_counter() - start
            finally:
                subprocess.run([*artfs, "umount", str(mnt)], check=True, env=env)
            print(f"mount, cat of {n} files, {label}: {took:6.2f} s  {took / n * 1e3:6.2f} ms/file")
        shutil.rmtree(src)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-kib", type=int, default=64, help="source delivery chunk size")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the cache")
    parser.add_argument("--small", type=int, default=0, help="N small blobs instead of one big")
    parser.add_argument("--mount", default=None, help="with --small: registry dir or URL to mount")
    args = parser.parse_args()
    if args.small:
        await bench_small(args.small, args.chunk_kib * 1024, args.dir)
        if args.mount:
            await trio.to_thread.run_sync(bench_small_mount, args.small, args.mount, args.dir)
        return
    tuning = CacheTuning()
    size = args.size_mib * MiB
    source = MemorySource(args.chunk_kib * 1024)
    print(f"generating a {args.size_mib} MiB blob...", file=sys.stderr)
    sha = source.add_blob(os.urandom(size))
    await source.blob_blocks(sha, size)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        t_plain_runs = []
        for _ in range(2):  # the first big write of a run is often slowed by writeback
            t_plain_runs.append(await plain_download(source, sha, size, root / "plain.bin"))
            (root / "plain.bin").unlink()
        t_plain = min(t_plain_runs)

        async with BlobCache(root / "c1", source, tuning=tuning) as cache:
            source.bytes_served = 0
            t_seq = await sequential_read(cache, sha, size)
            moved = source.bytes_served
        async with BlobCache(root / "c2", source, tuning=tuning) as cache:
            start = time.perf_counter()
            path = await cache.fetch(sha, size)
            t_fetch = time.perf_counter() - start

        async with BlobCache(
            root / "c2", source, tuning=tuning
        ) as cache:  # "restart": verify once per block
            reader = await cache.open(sha, size)  # keeps this process's verified state alive
            t_warm1 = await sequential_read(cache, sha, size)
            t_warm2 = await sequential_read(cache, sha, size)
            await reader.aclose()
        t_pread = min(pread_file(path, size) for _ in range(2))

    print(f"blob {args.size_mib} MiB, source chunks {args.chunk_kib} KiB, reads of 1 MiB")
    print(f"plain download (baseline)   {rate(size, t_plain)}")
    print(
        f"cold sequential via cache   {rate(size, t_seq)}  {t_plain / t_seq:5.2f}x plain"
        f"   (moved {moved / size:.3f}x the blob)"
    )
    print(
        f"cold fetch() (parallel)     {rate(size, t_fetch)}  {t_plain / t_fetch:5.2f}x plain"
        "   (includes whole-blob sha256 before publishing)"
    )
    print(f"os.pread of cached file     {rate(size, t_pread)}")
    print(
        f"warm, first read in process {rate(size, t_warm1)}  {t_pread / t_warm1:5.2f}x pread"
        "   (verifies each block once)"
    )
    print(f"warm, verified              {rate(size, t_warm2)}  {t_pread / t_warm2:5.2f}x pread")


if __name__ == "__main__":
    trio.run(main)
