"""``Version.open``: a read-only binary file over one blob of the shared verified cache.

Reads of a blob that is complete and verified in the cache (the common case once a job
has read it once, or after ``download``) are ``os.preadv`` calls on the cache's own file
descriptor, made directly in the caller's thread into the caller's buffer: no hop to the
loop thread and no copy, which is how this matches reading the same blob through the
mount (scripts/bench_python.py). The descriptor is the one the mount's passthrough hands
the kernel, with the same guarantee: every block was checked against its digest.

Any other read goes through the loop thread to ``CachedBlobReader.read``, which fetches
missing blocks and verifies each before returning it. Both paths hold the blob open in the
cache (an open reader), so it is never evicted under the file.
"""

from __future__ import annotations

import io
import os
import threading
from typing import TYPE_CHECKING, Any

from ..cache.reader import CachedBlobReader
from ..errors import InvalidInput
from .sync import PORTAL_THREAD, RUNTIME

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from .sync import Portal, Session

MAX_READ = 64 << 20  # one read through the loop at most (a huge read() is split)


class BlobReadFunctions:
    """The reads shared by ``VersionFile`` and the fsspec file (``ArtfsFile``)."""

    def __init__(self, portal: Portal, session: Session, sha256: str, size: int, timeout: float):
        self.portal = portal
        self.session = session
        self.size = size
        self.timeout = timeout
        self.reader: CachedBlobReader | None = portal.call(
            session.cache.open, sha256, size, timeout=timeout
        )
        self.fd: int | None = None
        self._try_fast()

    def _try_fast(self) -> None:
        reader = self.reader
        assert reader is not None
        if reader.cached_bytes() < self.size:
            return
        self.fd = self.portal.call(reader.complete_fd, 0, timeout=self.timeout)

    def read_at(self, offset: int, length: int) -> bytes:
        reader = self._open()
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        if self.fd is not None:
            return os.pread(self.fd, length, offset)
        parts: list[bytes] = []
        while length > 0:
            n = min(length, MAX_READ)
            data = self.portal.call(reader.read, offset, n, timeout=self.timeout)
            if not data:
                break
            parts.append(data)
            offset += len(data)
            length -= len(data)
        if self.fd is None and offset >= self.size:
            self._try_fast()  # the blob may be complete now: later reads skip the loop
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto_at(self, offset: int, buffer: memoryview) -> int:
        self._open()
        if self.fd is not None:
            length = max(0, min(len(buffer), self.size - offset))
            return os.preadv(self.fd, [buffer[:length]], offset) if length else 0
        data = self.read_at(offset, len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _open(self) -> CachedBlobReader:
        if self.reader is None:
            raise ValueError("I/O operation on closed file")
        if self.session.generation != RUNTIME.generation:
            raise InvalidInput("this artfs file was opened before fork(); open it again")
        return self.reader

    def close(self) -> None:
        reader, self.reader, self.fd = self.reader, None, None
        if reader is None or not self.portal.alive:
            return
        if threading.current_thread().name == PORTAL_THREAD:  # closed by the GC in the loop
            self.portal.call_soon(reader.aclose)
        else:
            self.portal.call(reader.aclose, timeout=self.timeout)


class VersionFile(io.RawIOBase):
    """A file of a version, opened for binary reading (``rb``); seekable."""

    def __init__(self, name: str, reads: BlobReadFunctions) -> None:
        super().__init__()
        self.name = name
        self.mode = "rb"
        self._reads = reads
        self._pos = 0

    @property
    def size(self) -> int:
        return self._reads.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_closed()
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_closed()
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        self._check_closed()
        view = memoryview(buffer).cast("B")
        n = self._reads.readinto_at(self._pos, view)
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        self._check_closed()
        if size is None or size < 0:
            size = max(0, self.size - self._pos)
        data = self._reads.read_at(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer at the end), without moving the position."""
        self._check_closed()
        return self._reads.read_at(offset, length)

    def close(self) -> None:
        if not self.closed:
            try:
                self._reads.close()
            finally:
                super().close()

    def __enter__(self) -> VersionFile:
        self._check_closed()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_closed(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
