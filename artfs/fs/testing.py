"""A small in-memory ``BlobCacheAPI`` twin, so the mount can be tested without the real cache.

It fetches a whole blob on first read, verifies its sha256 and keeps it in a
dict. Counting ``opens``/``fetches`` lets tests see what the mount asked for.
Not for production: the real cache is ``artfs.cache.blobcache``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from ..cache.protocol import CacheStats
from ..client.base import RegistryClient
from ..errors import IntegrityError


class MemoryBlobReader:
    def __init__(self, cache: MemoryBlobCache, sha256: str, size: int) -> None:
        self.cache = cache
        self.sha256 = sha256
        self.size = size
        self.closed = False

    async def read(self, offset: int, length: int) -> bytes:
        data = await self.cache._complete(self.sha256, self.size)
        return data[offset : offset + length]

    async def read_reply(self, offset: int, length: int) -> bytes:
        return await self.read(offset, length)  # (bytes in memory: no file to reply from)

    def cached_bytes(self) -> int:
        return self.cache.cached_bytes(self.sha256, self.size)

    async def complete_fd(self, fetch_max: int = 0) -> int | None:
        return None  # bytes in memory: nothing for the kernel to read

    async def aclose(self) -> None:
        self.closed = True
        self.cache.open_readers -= 1


class MemoryBlobCache:
    def __init__(self, client: RegistryClient, root: Path) -> None:
        self.client = client
        self.root = root
        self.blobs: dict[str, bytes] = {}
        self.opens = 0
        self.fetches = 0
        self.open_readers = 0
        self.prefetched: list[str] = []  # what prefetch_soon was asked for, in order

    async def _complete(self, sha256: str, size: int) -> bytes:
        if sha256 in self.blobs:
            return self.blobs[sha256]
        chunks: list[bytes] = []
        self.fetches += 1
        await self.client.read_range(sha256, size, 0, size, chunks.append)
        data = b"".join(chunks)
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError(f"blob {sha256[:12]}… arrived damaged")
        self.blobs[sha256] = data
        return data

    async def open(self, sha256: str, size: int) -> MemoryBlobReader:
        self.opens += 1
        self.open_readers += 1
        return MemoryBlobReader(self, sha256, size)

    def cached_bytes(self, sha256: str, size: int) -> int:
        return size if sha256 in self.blobs else 0

    async def fetch(self, sha256: str, size: int) -> Path:
        data = await self._complete(sha256, size)
        path = self.root / "blobs" / sha256
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def prefetch_soon(self, blobs: Sequence[tuple[str, int]]) -> None:
        """Recorded, not fetched: tests check what the mount asked for."""
        self.prefetched.extend(sha for sha, _ in blobs)

    def stats(self) -> CacheStats:
        held = sum(len(b) for b in self.blobs.values())
        return CacheStats(len(self.blobs), held, 0, 0, None)

    def prune(self, to_bytes: int) -> int:
        freed = 0
        for sha in list(self.blobs):
            if sum(len(b) for b in self.blobs.values()) <= to_bytes:
                break
            freed += len(self.blobs.pop(sha))
        return freed
