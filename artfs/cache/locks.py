"""Cross-process coordination primitives, all non-blocking so the trio thread never stalls.

Two kinds of kernel locks are used, for their different semantics:

* ``fcntl.lockf`` byte-range locks on a presence map, one byte per block: a process
  holds the bytes of the blocks it is fetching. They vanish when the process dies, so
  a crashed fetcher never blocks others. They do not exclude within one process (the
  cache uses trio Events for that) and are dropped when the process closes *any* fd
  of the file, so each process keeps exactly one fd per map (``BlobState``).
* ``fcntl.flock`` whole-file locks, per open file description: pins (shared while a
  blob is open, exclusive to evict) and the short global state lock. These do exclude
  between tasks of one process, since each acquisition opens its own fd.

Waiting is polling with a short, growing sleep, bounded by a deadline.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from ..errors import Unavailable
from .layout import storage_error

POLL_MIN = 0.0005
POLL_MAX = 0.02


def try_lock_range(fd: int, start: int, length: int = 1) -> bool:
    """Exclusive lockf on bytes ``[start, start+length)``; False if another process holds any."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start, os.SEEK_SET)
    except (BlockingIOError, PermissionError):
        return False
    return True


def unlock_range(fd: int, start: int, length: int = 1) -> None:
    fcntl.lockf(fd, fcntl.LOCK_UN, length, start, os.SEEK_SET)


def _try_flock_path(path: Path, mode: int) -> int | None:
    """flock ``path`` without blocking; None if held incompatibly.

    The file may be unlinked (by an evictor) between our open and our lock; a lock on
    an unlinked inode protects nothing, so re-check that the path still names our inode.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _try_flock_path(path, mode)
    except OSError as e:
        raise storage_error(e, f"opening {path}") from None
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def try_pin_exclusive(path: Path) -> int | None:
    """For the evictor: an fd holding LOCK_EX on the pin, or None if the blob is open somewhere."""
    return _try_flock_path(path, fcntl.LOCK_EX)


async def _poll_flock(path: Path, mode: int, timeout: float, what: str) -> int:
    delay = POLL_MIN
    deadline = trio.current_time() + timeout
    while True:
        fd = _try_flock_path(path, mode)
        if fd is not None:
            return fd
        if trio.current_time() >= deadline:
            raise Unavailable(f"timed out after {timeout:g}s waiting for {what} ({path})")
        await trio.sleep(delay)
        delay = min(delay * 2, POLL_MAX)


async def pin_shared(path: Path, timeout: float) -> int:
    """Hold LOCK_SH on a blob's pin file for as long as the returned fd stays open."""
    return await _poll_flock(path, fcntl.LOCK_SH, timeout, "the cache pin lock")


@asynccontextmanager
async def exclusive_file_lock(path: Path, timeout: float) -> AsyncIterator[None]:
    """A short critical section across all processes and tasks (never held across network I/O)."""
    fd = await _poll_flock(path, fcntl.LOCK_EX, timeout, "the cache state lock")
    try:
        yield
    finally:
        os.close(fd)


def try_exclusive_file_lock(path: Path) -> int | None:
    return _try_flock_path(path, fcntl.LOCK_EX)
