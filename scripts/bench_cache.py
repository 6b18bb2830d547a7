#!/usr/bin/env python3
"""Micro-benchmark of the blob cache's read path, reported as ratios to baselines of the same run.

Cold: a sequential 1 MiB-at-a-time read of one blob through ``BlobCache`` (what the FUSE
layer does with 1 MiB kernel read-ahead), and ``BlobCache.fetch``, each against the
same in-memory source streamed straight into a file (a plain download: no cache, no
verification). Warm: reads of the complete cached blob — first pass in a fresh cache
instance (each block verified once), second pass (plain inline pread) — against
``os.pread`` of the same file.

    .venv/bin/python scripts/bench_cache.py [--size-mib 1024] [--chunk-kib 64] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-kib", type=int, default=64, help="source delivery chunk size")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the cache")
    args = parser.parse_args()
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
