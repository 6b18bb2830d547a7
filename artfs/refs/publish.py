"""Committing external refs: read each source once, record its size, sha256 and block digests.

The bytes are not uploaded; the block-digest list (32 bytes per 128 KiB) is, as an
ordinary blob the ref names, so a reader can verify each block of a range it fetches
from the URL before the whole object is there (refs/model.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from ..errors import InvalidInput
from ..hashing import BLOCK_SIZE, BlobHasher
from ..names import manifest_path
from ..progress import Progress
from ..publish import one_error
from .model import BlobRef, check_url
from .sources import Sources

HASH_PARALLELISM = 4  # sources are remote: a few at once hides their latency


@dataclass(frozen=True, slots=True)
class HashedRef:
    path: str
    size: int
    sha256: str
    ref: BlobRef
    md5: bytes  # of the bytes read (W&B's manifests name files by md5: artfs/wandb_io.py)


async def hash_refs(
    pairs: Sequence[tuple[str, str]],
    sources: Sources,
    tmp: Path,
    progress: Progress | None = None,
) -> tuple[list[HashedRef], dict[str, Path]]:
    """Read every ``(path, url)`` once; returns the entries and, for refs over one block,
    their block lists written under ``tmp`` (sha256 -> file, to upload with the rest)."""
    for path, url in pairs:
        manifest_path(path)
        check_url(url)
    limiter = trio.Semaphore(HASH_PARALLELISM)
    done: dict[str, HashedRef] = {}
    lists: dict[str, Path] = {}

    async def one(path: str, url: str) -> None:
        async with limiter:
            size = await sources.size(url)
            hasher = BlobHasher()
            md5 = hashlib.md5(usedforsecurity=False)

            def take(data: bytes) -> None:
                hasher.update(data)
                md5.update(data)
                if progress:
                    progress.advance(len(data))

            await sources.read(url, size, 0, size, take)
            if hasher.size != size:
                raise InvalidInput(f"{url} changed size while being read; retry when stable")
            sha = hasher.hexdigest()
            blocks = None
            if size > BLOCK_SIZE:
                raw = hasher.block_digests()
                blocks = hashlib.sha256(raw).hexdigest()
                (tmp / blocks).write_bytes(raw)
                lists[blocks] = tmp / blocks
            done[path] = HashedRef(path, size, sha, BlobRef(url, blocks), md5.digest())

    try:
        async with trio.open_nursery() as nursery:
            for path, url in pairs:
                nursery.start_soon(one, path, url)
    except BaseExceptionGroup as group:  # one clear error for the Python API, as for the CLI
        raise one_error(group) from None
    return [done[p] for p, _ in pairs], lists


def manifest_refs(hashed: Sequence[HashedRef]) -> dict[str, BlobRef]:
    """sha256 -> ref; a blob two refs name (same bytes at two URLs) is read from the first
    by path: the bytes are the same, whichever URL they come from."""
    refs: dict[str, BlobRef] = {}
    for h in sorted(hashed, key=lambda h: h.path):
        refs.setdefault(h.sha256, h.ref)
    return refs
