"""Translation of local-disk failures (OSError, sqlite3.Error) into ``artfs.errors``.

A full state directory must surface as ``StorageFull`` (ENOSPC to the writer),
never as a stray OSError, so every disk touch in the draft store goes through here.
"""

from __future__ import annotations

import errno
import sqlite3

from ..errors import ArtfsError, StorageFull

_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_error(exc: OSError | sqlite3.Error, what: str) -> ArtfsError:
    """The artfs error for a failed local-disk operation ``what``."""
    if isinstance(exc, OSError):
        if exc.errno in _FULL:
            return StorageFull(f"{what}: the draft state directory is full ({exc.strerror})")
        return ArtfsError(f"{what}: {exc.strerror or exc}")
    text = str(exc)
    if "full" in text.lower() or getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return StorageFull(f"{what}: the draft state directory is full ({text})")
    return ArtfsError(f"{what}: draft database error: {text}")
