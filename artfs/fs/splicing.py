"""READ replies made from the cache file: libfuse splices its pages into /dev/fuse.

A READ the daemon answers (a blob not yet complete, or any read with passthrough off) used
to cost a ``pread`` into a new Python bytes object and pyfuse3's ``writev`` of it, both on
the trio thread and the second under the GIL. The reader can instead say where the
verified bytes lie (``FileSlice``); pyfuse3, patched by scripts/pyfuse3_passthrough.py,
hands that to ``fuse_reply_data`` without the GIL, and libfuse moves the cache file's pages
through a pipe into /dev/fuse: one copy in the kernel instead of two, no allocation.

libfuse splices only when the whole reply fits its pipe: a 1 MiB READ needs a 2 MiB pipe,
above the default ``/proc/sys/fs/pipe-max-size`` (1 MiB) unless the daemon has
CAP_SYS_RESOURCE. Otherwise it copies the file into a buffer of its own, which measured
slower than the bytes path (docs/decisions.md, "READ replies spliced from the cache file"),
so slices are answered only where a probe shows that the pipe can grow enough.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass

READ_MAX = 1 << 20  # the largest READ the kernel sends (FUSE's 256 pages)
# What libfuse asks of its pipe for such a reply: the data, the 16-byte header, 3 pages.
PIPE_NEEDED = READ_MAX + 16 + 3 * 4096


@dataclass(frozen=True, slots=True)
class ReplyState:
    """Whether this mount answers READs from the cache file, and if not, why."""

    spliced: bool
    reason: str  # why not ("" when spliced)

    @property
    def mode(self) -> str:
        return "spliced from the cache file" if self.spliced else f"copied ({self.reason})"


OFF_BY_ENV = ReplyState(False, "turned off (ARTFS_SPLICE=0)")


def pipe_fits(nbytes: int = PIPE_NEEDED) -> bool:
    """Can a pipe of this process hold ``nbytes`` (what libfuse will ask of its own)?"""
    r, w = os.pipe()
    try:
        return int(fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, nbytes)) >= nbytes
    except OSError:
        return False
    finally:
        os.close(r)
        os.close(w)


def decide(*, wanted: bool, patched: bool, granted: bool, fits: bool) -> ReplyState:
    """The reply mode from what the mount found (pure: tested without a mount)."""
    if not wanted:
        return OFF_BY_ENV
    if not patched:
        return ReplyState(False, "this pyfuse3 cannot reply from a file (scripts/build_fuse.sh)")
    if not granted:
        return ReplyState(False, "the kernel or libfuse offers no splice")
    if not fits:
        return ReplyState(
            False,
            "a 1 MiB reply does not fit a pipe: /proc/sys/fs/pipe-max-size is below 2 MiB "
            "and the mount lacks CAP_SYS_RESOURCE",
        )
    return ReplyState(True, "")
