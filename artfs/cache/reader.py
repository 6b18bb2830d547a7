"""An open blob of the cache (``BlobReader``): reads served from verified blocks inline,
missing ones fetched, read-ahead started; the blob stays pinned while it is open.

Split from blobcache.py (the cache service) along the reader/cache seam: the reader holds a
``BlobState`` and asks its ``BlobCache`` for everything shared (acquire, release, read-ahead
tasks, completion).
"""

from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING

import trio

from ..errors import InvalidInput
from .blobstate import BlobState
from .blockmap import BLOCK_SHIFT, span
from .protocol import FileSlice
from .readahead import ReadAhead

if TYPE_CHECKING:
    from .blobcache import BlobCache


class CachedBlobReader:
    """An open blob (``BlobReader``). While open, no process evicts the blob.

    ``state`` None: a blob of one block not cached when opened; the first read fetches it
    (``BlobCache._small_blob``) and pins it from then on, so opening costs no request and
    errors surface on read, as for larger blobs.
    """

    def __init__(self, cache: BlobCache, sha: str, size: int, state: BlobState | None) -> None:
        self.sha256 = sha
        self.size = size
        self._cache = cache
        self._state: BlobState | None = state
        self._closed = False
        self._first: trio.Lock | None = None if state is not None else trio.Lock()
        tuning = cache.tuning
        self._readahead = ReadAhead(size, tuning.readahead_initial, tuning.readahead_max)
        self._background: set[trio.CancelScope] = set()
        self._queue: deque[tuple[int, int]] = deque()  # read-ahead pieces not yet started
        self._idle = trio.Event()  # set whenever no read-ahead task of this reader is pending
        self._idle.set()

    async def _first_state(self) -> BlobState:
        """The blob's state for a reader opened before the blob was cached."""
        if self._first is None or self._closed:
            raise InvalidInput("read from a closed blob reader")
        async with self._first:
            if self._state is None and not self._closed:
                state = await self._cache._acquire(self.sha256, self.size)
                if self._closed:  # closed while we fetched: drop the pin at once
                    self._cache._release(state)
                else:
                    self._state = state
            if self._state is None:
                raise InvalidInput("read from a closed blob reader")
            return self._state

    async def read(self, offset: int, length: int) -> bytes:
        data = await self._read(offset, length, False)
        assert isinstance(data, bytes)
        return data

    async def read_reply(self, offset: int, length: int) -> bytes | FileSlice:
        return await self._read(offset, length, True)

    async def _read(self, offset: int, length: int, slices: bool) -> bytes | FileSlice:
        if self._closed:
            raise InvalidInput("read from a closed blob reader")
        if offset < 0 or length < 0:
            raise InvalidInput(f"invalid read range offset={offset} length={length}")
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        state = self._state
        if state is None:
            state = await self._first_state()
        ahead = self._readahead.on_read(offset, end)
        if ahead is not None and not state.complete:
            self._cache._start_readahead(self, state, ahead)
        first, stop = span(offset, end)
        if state.verified.find(0, first, stop) >= 0:
            if not self._readahead.sequential and self._cache.tuning.random_fill_after:
                self._cache._random_miss(state)
            data = state.read_verified_once(first, stop)
            if data is not None:
                base = first << BLOCK_SHIFT
                if offset == base and end - offset == len(data):
                    return data  # (aligned reads: no copy)
                return data[offset - base : end - base]
            state.refs += 1  # an aclose() racing with this read must not close the fds
            try:
                if await state.ensure(first, stop):
                    self._cache._check_complete_soon(state)
                if not slices or self._closed:  # (closed meanwhile: only this ref holds it)
                    return os.pread(state.data_fd, end - offset, offset)
            finally:
                self._cache._release(state)
        # Verified blocks are read inline, no thread hop (see fuse-performance.md). A FUSE
        # reply takes them from the file itself, held open by this open reader's pin.
        if slices:
            return FileSlice(state.data_fd, offset, end - offset)
        return os.pread(state.data_fd, end - offset, offset)

    def cached_bytes(self) -> int:
        if self._state is None:
            return self._cache.cached_bytes(self.sha256, self.size)
        return self._state.held()

    async def complete_fd(self, fetch_max: int = 0) -> int | None:
        state = self._state
        if state is None:  # one block, not cached when opened
            if self.size > fetch_max:
                return None
            state = await self._first_state()
        if not state.complete:
            if self.size > fetch_max:
                return None
            state.refs += 1
            try:
                await self._cache._make_complete(state, None)
            finally:
                self._cache._release(state)
        if not await state.verify_all(self._cache.tuning.passthrough_verify_max):
            return None
        return state.data_fd

    async def aclose(self) -> None:
        self._closed = True
        state, self._state = self._state, None
        if state is None:
            return
        for scope in list(self._background):
            scope.cancel()
        # Wait for them so that once aclose returns the blob is really unpinned.
        await self._idle.wait()
        self._cache._release(state)

    async def __aenter__(self) -> CachedBlobReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
