"""Hand verified blob data to a sink ahead of a sequential reader.

A FUSE mount can put whole verified chunks into the kernel's page cache
(``notify_store``), so that a sequential reader finds its pages present and sends
no read requests at all: a request the kernel can't answer itself costs ~70 µs here,
a page already present costs nothing. The cache stays FUSE-agnostic: a reader may be
given a *sink* ``sink(offset, data)``, called in a worker thread with verified bytes
only; it may block.

What is pushed: blocks ``[next, target)`` of the blob, in order, in chunks of up to
``CHUNK_BLOCKS`` blocks, as they become available —

* blocks this process has verified (it fetched or checked them) are read back from
  the cache file (page cache: cheap) in the worker thread;
* blocks present but not yet verified by this process (a warm blob) are checked
  against their digests in that same thread call; a damaged block stops the push
  (the reader's own read of it repairs it, see ``BlobState.ensure``);
* missing blocks are waited for: read-ahead or the reader fetches them. The pusher
  never fetches by itself; no progress for ``timeout`` seconds ends the push.

Nothing unverified ever reaches the sink. The sink is never called on the trio
thread, so a sink that waits for the kernel (which may wait for a read request
this process answers on the trio thread) cannot deadlock it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ..errors import ArtfsError
from .blobstate import BlobState, read_checked
from .blockmap import BLOCK_SHIFT, PRESENT

log = logging.getLogger("artfs.cache")

Sink = Callable[[int, bytes], None]

CHUNK_BLOCKS = 32  # 4 MiB per thread hop: amortizes the ~170 µs hop, small enough to overlap


class Pusher:
    """The push state of one reader: where the next push starts and how far it may go."""

    def __init__(self, state: BlobState, sink: Sink, timeout: float) -> None:
        self.state = state
        self.sink: Sink | None = sink
        self.timeout = timeout
        self.next = 0  # next block to push
        self.target = 0  # push blocks below this
        self.running = False

    def extend(self, start: int, end: int) -> bool:
        """Allow pushing bytes ``[start, end)``; True if a push task should be started.

        ``start`` is where the reader's last read ended: pages before it are in the
        kernel already (the read's reply put them there).
        """
        first = start >> BLOCK_SHIFT
        stop = min(self.state.nblocks, ((end - 1) >> BLOCK_SHIFT) + 1) if end > 0 else 0
        if first > self.next:
            self.next = first
        self.target = max(self.target, stop)
        return not self.running and self.next < self.target and self.sink is not None

    def halt(self) -> None:
        """The reader jumped: stop after the chunk in progress."""
        self.target = self.next

    async def run(self) -> None:
        self.running = True
        try:
            await self._run()
        finally:
            self.running = False

    async def _run(self) -> None:
        state = self.state
        idle_since = trio.current_time()
        while self.sink is not None and self.next < self.target:
            k = self.next
            stop = min(self.target, k + CHUNK_BLOCKS)
            if state.verified[k]:
                end = state.verified.find(0, k, stop)
                await self._push(k, stop if end < 0 else end, check=False)
            elif state.present_flags(k, k + 1)[0] == PRESENT:
                flags = state.present_flags(k, stop)
                run = flags.find(bytes([1 - PRESENT]))
                run_stop = stop if run < 0 else k + run
                # blocks verified meanwhile are simply checked again: harmless
                if not await self._push(k, run_stop, check=True):
                    return  # damaged: the reader's own read repairs it
            else:
                with trio.move_on_at(idle_since + self.timeout) as scope:
                    await state.changed.wait()
                if scope.cancelled_caught:
                    return
                continue
            idle_since = trio.current_time()

    async def _push(self, first: int, stop: int, *, check: bool) -> bool:
        """Push blocks ``[first, stop)`` (checking them if ``check``); False if one was bad."""
        state, sink = self.state, self.sink
        if sink is None:
            return False
        digests = None
        if check:
            try:
                digests = await state.need_digests()
            except ArtfsError:
                return False
        fd, size = state.data_fd, state.size

        def work() -> int:
            data, good = read_checked(fd, size, first, stop, digests)
            if data:
                sink(first << BLOCK_SHIFT, data)
            return good

        good = await trio.to_thread.run_sync(work)
        log.debug("pushed blocks %d-%d of %d (checked: %s)", first, good, stop, check)
        if check:
            state.verified[first:good] = bytes([1]) * (good - first)
        self.next = max(self.next, good)
        return good == stop
