"""Remembering, host-wide, that a complete blob was checked: verify once per boot, not per process.

Every process checks each block of a complete blob against its digest the first time it
reads it (corruption at rest, SPEC §2). For a restarted mount, ``artfs get`` or
``prefetch`` of cached data, that check is the whole cost of the read: sha256 at ~2 GB/s
per core against a page-cache copy at ~10 GB/s. So once a process has checked every block
of a complete blob (or verified it while fetching), it leaves a *stamp* beside it:

    v1/meta/ab/<sha>.verified    "<boot id> <dev> <ino> <size> <mtime_ns> <ctime_ns>"

A later process that finds the stamp equal to what ``fstat`` says of the open data file,
in the same boot, takes every block as checked. Anything that could change the bytes
changes the stamp: a write, truncate or chmod moves ``ctime`` (which no user can set
back); a replaced file has another inode; a crash or reboot (data not yet written back,
a torn write) changes the boot id, so after a reboot everything is checked again. What
this does not catch is the disk silently flipping bits under an unchanged inode within one
boot, which a process that kept the blob open never re-checked either.

For this to work nothing of ours may change a complete file's ``ctime``: recency for
eviction is therefore recorded on the blob's pin file, not on its data file (eviction.py).
Blobs of one block are not stamped: checking one costs less than reading a stamp.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from .layout import CacheLayout

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


@cache
def boot_id() -> str:
    """This boot's id ("" where unknown: then nothing is ever trusted)."""
    try:
        with open(BOOT_ID_PATH) as f:
            return f.read().strip()
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class Stamp:
    boot: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(boot_id(), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def encode(self) -> bytes:
        fields = (self.boot, self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)
        return (" ".join(str(f) for f in fields) + "\n").encode()

    @classmethod
    def decode(cls, raw: bytes) -> Stamp | None:
        parts = raw.decode("ascii", "replace").split()
        if len(parts) != 6:
            return None
        try:
            numbers = [int(p) for p in parts[1:]]
        except ValueError:
            return None
        return cls(parts[0], *numbers)


def is_trusted(layout: CacheLayout, sha: str, seen: Stamp) -> bool:
    """Whether the complete file last seen as ``seen`` is the one a process stamped as checked."""
    if not seen.boot:
        return False
    try:
        raw = layout.verified(sha).read_bytes()
    except OSError:
        return False
    return Stamp.decode(raw) == seen


def stamp(layout: CacheLayout, sha: str, fd: int, seen: Stamp | None = None) -> bool:
    """Record that the complete file ``fd`` was checked; True if stamped.

    ``seen``: the file as it was when the check began; if it changed since (ctime moved),
    the check may not cover the current bytes and nothing is recorded. Failing to write
    the stamp only costs a later process a check, so errors are swallowed.
    """
    if not boot_id():
        return False
    now = Stamp.of(os.fstat(fd))
    if seen is not None and seen != now:
        return False
    try:
        layout.write_file(layout.verified(sha), now.encode(), replace=True)
    except Exception:  # StorageFull and friends: not worth failing a read for
        return False
    return True


def stamp_path(layout: CacheLayout, sha: str, path: os.PathLike[str]) -> None:
    """``stamp`` a complete file just published from bytes hashed in full (commit, insert)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        stamp(layout, sha, fd)
    finally:
        os.close(fd)


def forget(layout: CacheLayout, sha: str) -> None:
    """Drop the stamp (the blob is being demoted or evicted)."""
    try:
        os.unlink(layout.verified(sha))
    except OSError:
        pass
