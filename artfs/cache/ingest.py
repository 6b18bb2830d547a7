"""Local files into the cache as complete blobs: a committed draft's files (``insert_file``),
or staged while they upload and published after the commit (``stage_file`` /
``publish_staged`` / ``discard_staged``).

A mixin of ``BlobCache`` (its ``layout``, ``tuning`` and ``_reserve``), kept apart so the
cache service stays readable. Every path hashes the bytes on the way: a file whose bytes do
not match its sha256 raises ``IntegrityError`` and leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import trio

from ..errors import IntegrityError
from ..hashing import BLOCK_SIZE, BlobHasher, hash_file, sha256_hex
from . import locks, trust
from .blockmap import BLOCK_SHIFT
from .layout import CacheLayout, storage_error
from .settings import CacheTuning


@dataclass(frozen=True, slots=True)
class StagedBlob:
    """A verified local file waiting in the cache's temp dir (``BlobCache.stage_file``)."""

    sha256: str
    size: int
    tmp: Path
    digests: bytes  # block digests, as the cache keeps them


def _copy_hashing(src: Path, dst: Path) -> BlobHasher:
    hasher = BlobHasher()
    with open(src, "rb", buffering=0) as fin, open(dst, "wb") as fout:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while n := fin.readinto(buf):
            hasher.update(view[:n])
            fout.write(view[:n])
    return hasher


class LocalIngest:
    """``BlobCache``'s side for local files (mixed in)."""

    layout: CacheLayout
    tuning: CacheTuning

    async def _reserve(self, nbytes: int) -> None:
        raise NotImplementedError

    async def insert_file(self, sha256: str, src: Path) -> Path:
        """Copy a local file (e.g. a committed draft's) into the cache as a complete blob."""
        return await self.publish_staged(await self._stage(sha256, src, link=False))

    async def stage_file(self, sha256: str, src: Path) -> StagedBlob:
        """First half of adding a local file as a complete blob, done while it is uploaded.

        Hard-links ``src`` into the cache's temp directory (or copies it when on another
        filesystem) and hashes it in a worker thread: whole sha256 and block digests in one
        pass. Nothing is visible until ``publish_staged``; ``discard_staged`` drops it. With a
        link, the caller must not change ``src`` in between (a committing draft is frozen)
        and should drop its own name for the file before publishing.
        """
        return await self._stage(sha256, src, link=True)

    async def _stage(self, sha256: str, src: Path, *, link: bool) -> StagedBlob:
        sha256_hex(sha256)
        size = src.stat().st_size
        await self._reserve(size)
        tmp = self.layout.tmp_path(sha256)

        def link_or_copy() -> BlobHasher:
            if link:
                try:
                    os.link(src, tmp)
                except OSError as e:
                    if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                        raise
                else:
                    return hash_file(tmp)
            return _copy_hashing(src, tmp)

        try:
            hasher = await trio.to_thread.run_sync(link_or_copy)
            if hasher.hexdigest() != sha256 or hasher.size != size:
                raise IntegrityError(f"{src} does not have sha256 {sha256}")
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise storage_error(e, f"adding {src} to the cache") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return StagedBlob(sha256, size, tmp, hasher.block_digests())

    async def publish_staged(self, staged: StagedBlob) -> Path:
        """Make a staged blob complete (unless another process already did); returns its path."""
        try:
            async with locks.exclusive_file_lock(self.layout.state_lock, self.tuning.timeout):
                target = self.layout.complete(staged.sha256)
                if not target.exists():
                    if staged.size > (1 << BLOCK_SHIFT):
                        self.layout.write_file(
                            self.layout.digests(staged.sha256), staged.digests, replace=True
                        )
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.chmod(staged.tmp, 0o444)
                    os.rename(staged.tmp, target)
                    if staged.size > BLOCK_SIZE:
                        trust.stamp_path(self.layout, staged.sha256, target)
            return target
        except OSError as e:
            raise storage_error(e, f"adding blob {staged.sha256[:12]} to the cache") from None
        finally:
            staged.tmp.unlink(missing_ok=True)

    @staticmethod
    def discard_staged(staged: StagedBlob) -> None:
        staged.tmp.unlink(missing_ok=True)
