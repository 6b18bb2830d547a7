"""Hashing file ranges without a page fault per 4 KiB.

``os.pread`` of several MiB returns a fresh ``bytes`` each time; glibc serves such
sizes with a new ``mmap``, so every 4 KiB page of it faults on first touch — measured
as costly as the copy itself while verifying cached blobs. Reading into one reused
buffer with ``preadv`` avoids that. ``hashlib`` and ``preadv`` release the GIL.
"""

from __future__ import annotations

import hashlib
import os

READ_CHUNK = 8 << 20


def hash_file_range(h: hashlib._Hash, fd: int, start: int, end: int) -> bool:
    """Feed bytes ``[start, end)`` of ``fd`` to ``h``; False if the file is shorter."""
    buf = memoryview(bytearray(min(READ_CHUNK, max(0, end - start))))
    offset = start
    while offset < end:
        n = os.preadv(fd, [buf[: min(len(buf), end - offset)]], offset)
        if n <= 0:
            return False
        h.update(buf[:n])
        offset += n
    return True
