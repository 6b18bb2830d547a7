"""Least-recently-used eviction of whole blobs, safe against every process that has a blob open.

Recency is the mtime of the blob's pin file, which every process touches when it opens
or closes a blob, so the order is host-wide without any shared index (the data file's
mtime where there is no pin: a blob published by a commit and never opened since). The
data file itself is never touched once complete, so that its ctime tells whether its
bytes may have changed since they were checked (trust.py). A blob is evicted
only after taking LOCK_EX on its pin file without blocking: any process holding the blob
open holds LOCK_SH there, so open blobs are skipped, never waited for.

A complete blob whose data file has another name (``artfs get --link`` hard-linked it into
a destination: ``copyout.py``) is never evicted: removing the cache's name would free no
space, the bytes stay on disk under the other name. Deleting that copy unpins it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .layout import CacheLayout
from .locks import try_exclusive_file_lock, try_pin_exclusive

log = logging.getLogger("artfs.cache")


@dataclass(frozen=True, slots=True)
class CacheEntry:
    sha: str
    complete: bool
    held: int  # bytes on disk for this blob's data
    last_used: float
    linked: bool = False  # the complete file has another name (get --link): not evictable


def scan(layout: CacheLayout) -> list[CacheEntry]:
    """Every blob in the cache (complete or partial), one entry per sha."""
    used = _pin_times(layout)
    found: dict[str, CacheEntry] = {}
    for top, complete in ((layout.blobs_dir, True), (layout.partial_dir, False)):
        for shard in _scandir(str(top)):
            for entry in _scandir(shard.path):
                name = entry.name
                if not complete:
                    if not name.endswith(".data"):
                        continue
                    name = name[: -len(".data")]
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                held = st.st_size if complete else min(st.st_size, st.st_blocks * 512)
                last = used.get(name, st.st_mtime)
                prev = found.get(name)
                linked = complete and st.st_nlink > 1
                if prev is not None:  # complete and partial copies: count both, newest use
                    found[name] = CacheEntry(
                        name,
                        True,
                        prev.held + held,
                        max(prev.last_used, last),
                        prev.linked or linked,
                    )
                else:
                    found[name] = CacheEntry(name, complete, held, last, linked)
    return list(found.values())


def _pin_times(layout: CacheLayout) -> dict[str, float]:
    """sha -> mtime of its pin file (when it was last opened or closed)."""
    times: dict[str, float] = {}
    for shard in _scandir(str(layout.pins_dir)):
        for entry in _scandir(shard.path):
            if entry.name.endswith(".pin"):
                try:
                    times[entry.name[: -len(".pin")]] = entry.stat().st_mtime
                except FileNotFoundError:
                    continue
    return times


def _scandir(path: str) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def evict_one(layout: CacheLayout, sha: str) -> bool:
    """Remove every file of one blob unless some process has it open; True if removed."""
    pin_path = layout.pin(sha)
    fd = try_pin_exclusive(pin_path)
    if fd is None:
        return False
    try:
        for path in (
            layout.complete(sha),
            layout.partial_map(sha),
            layout.partial_data(sha),
            layout.digests(sha),
            layout.verified(sha),
            pin_path,  # last, while still locked: a waiting opener re-checks the inode
        ):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    finally:
        os.close(fd)
    return True


def evict_to(layout: CacheLayout, target: int) -> tuple[int, int]:
    """Evict LRU unpinned blobs until the cache holds at most ``target`` bytes if possible.

    Returns ``(bytes_freed, bytes_held_after)``. Only one process evicts at a time; if
    another is already evicting, this returns at once having freed nothing.
    """
    entries = scan(layout)
    total = sum(e.held for e in entries)
    if total <= target:
        return 0, total
    lock = try_exclusive_file_lock(layout.evict_lock)
    if lock is None:
        return 0, total
    freed = 0
    try:
        for entry in sorted(entries, key=lambda e: e.last_used):
            if total - freed <= target:
                break
            if entry.linked:
                continue
            if evict_one(layout, entry.sha):
                freed += entry.held
                log.debug("evicted blob %s (%d bytes)", entry.sha[:12], entry.held)
    finally:
        os.close(lock)
    return freed, total - freed
