"""Room kept beside the SQLite registry so that it can be opened and collected on a full disk.

A WAL-mode SQLite database can't even be read when its disk is full and no process has it
open: the first connection must create a 32 KiB ``-shm`` index, and that fails ("disk I/O
error"). The garbage collector, the one command that frees space, must also write (it
marks blobs doomed before deleting them, for safety against concurrent commits). So every
open of a registry keeps ``RESERVE_BYTES`` in a file beside the database (when there is
room for twice that), and gives it back to the filesystem:

- when opening the database fails on a full disk (then retried once), and
- when ``artfs gc`` writes on a full disk (``SqliteMetaStore(spend_reserve=True)``).

The reserve comes back on a later open, once the disk has room again
(docs/deploy.md, "A full disk"; docs/decisions.md, "Full disk").
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3

RESERVE_BYTES = 8 << 20
FULL_BELOW = 1 << 20  # free space under which an I/O error opening the database means "full"
log = logging.getLogger("artfs.registry")


def reserve_path(db_path: str) -> str:
    return db_path + ".reserve"


def is_disk_full(e: BaseException, db_path: str) -> bool:
    """Whether a SQLite or OS error is the disk being full. SQLite says "database or disk is
    full" for a write it could not make, and only "disk I/O error" when it could not size the
    ``-shm`` index; the latter counts when the filesystem has under ``FULL_BELOW`` left."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(e, sqlite3.OperationalError):
        text = str(e)
        if "database or disk is full" in text:
            return True
        return "disk I/O error" in text and free_bytes(db_path) < FULL_BELOW
    return False


def free_bytes(path: str) -> int:
    try:
        st = os.statvfs(os.path.dirname(path) or ".")
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def keep_reserve(db_path: str) -> None:
    """Create the reserve if it is missing and the disk has room for twice it; never fails
    (a registry without its reserve works, it only can't open on a full disk)."""
    path = reserve_path(db_path)
    try:
        if os.path.getsize(path) >= RESERVE_BYTES:
            return
    except OSError:
        pass
    if free_bytes(db_path) < 2 * RESERVE_BYTES:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:  # real blocks, so that releasing them gives room back
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            except OSError:
                os.ftruncate(fd, 0)
                os.write(fd, bytes(RESERVE_BYTES))
        finally:
            os.close(fd)
    except OSError as e:
        log.warning("could not keep %s bytes in reserve at %s: %s", RESERVE_BYTES, path, e)
        try:
            os.unlink(path)
        except OSError:
            pass


def release_reserve(db_path: str) -> bool:
    """Give the reserve back to the filesystem; whether there was one."""
    path = reserve_path(db_path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    log.warning(
        "the disk of %s is full: released the %d MiB kept in reserve at %s (free space, e.g. "
        "artfs gc; the reserve comes back once there is room)",
        db_path,
        RESERVE_BYTES >> 20,
        path,
    )
    return True
