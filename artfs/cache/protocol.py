"""What the mount and the CLI need from the blob cache (implemented in ``blobcache.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class CacheStats:
    complete_blobs: int
    complete_bytes: int
    partial_blobs: int
    partial_bytes: int  # bytes actually held of partial blobs
    limit_bytes: int | None


class FileSlice(NamedTuple):
    """``size`` verified bytes of the open file ``fd`` from ``offset``: a READ the mount answers
    from the cache file itself (libfuse splices its pages into /dev/fuse), the bytes never
    becoming a Python object (fs/splicing.py)."""

    fd: int
    offset: int
    size: int


class BlobReader(Protocol):
    """An open blob. While any reader of a blob is open, no process evicts that blob."""

    sha256: str
    size: int

    async def read(self, offset: int, length: int) -> bytes:
        """Verified bytes ``[offset, offset+length)`` (short only at end of blob).

        Fetches missing blocks (with read-ahead when this reader goes sequentially),
        waits for fetches another task or process already runs, verifies each block's
        sha256 before returning it. Raises ``Unavailable`` (registry unreachable within
        the timeout), ``IntegrityError`` (the source keeps sending wrong bytes),
        ``StorageFull``.
        """
        ...

    async def read_reply(self, offset: int, length: int) -> bytes | FileSlice:
        """``read``, for a FUSE reply: the same bytes, or where they lie in a cache file of
        this reader (valid until the caller's next checkpoint: the reply is made at once)."""
        ...

    def cached_bytes(self) -> int: ...

    async def complete_fd(self, fetch_max: int = 0) -> int | None:
        """The fd of the blob's complete cache file once every byte of it is verified, for the
        kernel to read itself (FUSE passthrough); None when it is not (yet) that.

        A blob of at most ``fetch_max`` bytes is fetched whole first; a complete file not
        yet checked by this process (after a reboot) is checked first when small. The fd
        stays valid, and the blob pinned, until ``aclose``.
        """
        ...

    async def aclose(self) -> None: ...


class BlobCacheAPI(Protocol):
    root: Path

    async def open(self, sha256: str, size: int) -> BlobReader: ...

    def cached_bytes(self, sha256: str, size: int) -> int:
        """Bytes of this blob held locally (``size`` when complete), without I/O to the registry."""
        ...

    async def fetch(self, sha256: str, size: int) -> Path:
        """Make the blob complete and verified in the cache; return the path of the complete file."""
        ...

    def prefetch_soon(self, blobs: Sequence[tuple[str, int]]) -> None:
        """Fetch these (sha256, size) blobs whole in the background; never blocks or fails."""
        ...

    def stats(self) -> CacheStats: ...

    def prune(self, to_bytes: int) -> int:
        """Evict least-recently-used unpinned complete blobs until at most ``to_bytes``; return bytes freed."""
        ...
