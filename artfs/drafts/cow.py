"""Copy-on-write of inherited files: their bytes come from the blob cache before the first change.

A draft made from a base version holds the base's files by reference. Reading
one goes through the cache like a version file; the first write or truncation
(to a size other than 0) needs the whole content locally, so the mount calls
``Materializer.ensure_local`` first. Lazily: opening for write does not copy
anything, only the first ``pwrite``/``truncate`` does, and ``O_TRUNC`` never
does. The copy is made beside the data file and renamed into place by the
store, so a crash in the middle leaves the file inherited and intact.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol

import trio

from ..cache.protocol import BlobReader
from .oserrors import disk_error
from .store import DraftStore


class BlobSource(Protocol):
    """What copy-on-write needs from the blob cache (``BlobCache`` and its test twin)."""

    async def open(self, sha256: str, size: int) -> BlobReader: ...

    async def fetch(self, sha256: str, size: int) -> Path: ...


def _copy(src: Path | None, dst: Path) -> None:
    try:
        if src is None:
            dst.write_bytes(b"")
        else:
            shutil.copyfile(src, dst)  # copy_file_range/sendfile on Linux
            os.chmod(dst, 0o600)
    except OSError as e:
        dst.unlink(missing_ok=True)
        raise disk_error(e, f"copying an inherited file into {dst.parent}") from None


class Materializer:
    """Makes inherited files local, one copy per file even when several writers ask at once."""

    def __init__(self, store: DraftStore, cache: BlobSource) -> None:
        self.store = store
        self.cache = cache
        self._locks: dict[int, trio.Lock] = {}

    async def ensure_local(self, node_id: int) -> None:
        """Return once the file's bytes are local (at once if they already are)."""
        if self.store.needs_data(node_id) is None:
            return
        lock = self._locks.setdefault(node_id, trio.Lock())
        try:
            async with lock:
                target = self.store.materialize_target(node_id)
                if target is None:
                    return
                entry, tmp = target
                if entry.size == 0:
                    await trio.to_thread.run_sync(_copy, None, tmp)
                else:
                    reader = await self.cache.open(entry.sha256, entry.size)  # pins the blob
                    try:
                        src = await self.cache.fetch(entry.sha256, entry.size)
                        await trio.to_thread.run_sync(_copy, src, tmp)
                    finally:
                        with trio.CancelScope(shield=True):
                            await reader.aclose()
                self.store.adopt_materialized(node_id, tmp, entry)
        finally:
            if not lock.statistics().tasks_waiting and not lock.locked():
                self._locks.pop(node_id, None)
