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
import os
from collections.abc import Callable

import trio

from ..errors import ArtfsError
from .blobstate import BlobState, read_checked
from .blockmap import BLOCK_SHIFT, PRESENT

log = logging.getLogger("artfs.cache")

Sink = Callable[[int, bytes], None]

CHUNK_BLOCKS = 16  # 2 MiB per thread hop: amortizes the ~170 µs hop, small enough to overlap
# While fetching, start this far beyond the reader's last read: the kernel already asks
# for the next ~2 MiB itself (its own read-ahead, with read_ahead_kb = 1024) and those
# pages are locked until we answer; pushing there would only wait and copy twice.
# (A warm blob is pushed from the reader's position on: its reads wait for the check.)
LEAD_BLOCKS = 16
WORKERS = 2  # chunks pushed at once: checking a warm blob is CPU-bound (sha256), use both cores


class Pusher:
    """The push state of one reader: where the next push starts and how far it may go."""

    def __init__(self, state: BlobState, sink: Sink, timeout: float) -> None:
        self.state = state
        self.sink: Sink | None = sink
        self.timeout = timeout
        self.next = 0  # next block to push
        self.target = 0  # push blocks below this
        self.running = False
        self._fd = -1
        self._fd_of = -1
        self._damaged = False

    def extend(self, start: int, end: int) -> bool:
        """Allow pushing bytes ``[start, end)``; True if a push task should be started.

        ``start`` is where the reader's last read ended: pages before it are in the
        kernel already (the read's reply put them there).
        """
        first = start >> BLOCK_SHIFT
        if self.state.complete:  # costs no fetch: keep a few chunks going from the start
            end = max(end, start + (WORKERS + 1) * CHUNK_BLOCKS * (1 << BLOCK_SHIFT))
        else:
            first += LEAD_BLOCKS
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
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._fd_of = -1, -1

    async def _run(self) -> None:
        state = self.state
        idle_since = trio.current_time()
        slots = trio.Semaphore(WORKERS)
        async with trio.open_nursery() as nursery:
            while self.sink is not None and self.next < self.target and not self._damaged:
                k = self.next
                stop = min(self.target, k + CHUNK_BLOCKS)
                if state.verified[k]:
                    end = state.verified.find(0, k, stop)
                    check = False
                elif state.present_flags(k, k + 1)[0] == PRESENT:
                    end = state.present_flags(k, stop).find(bytes([1 - PRESENT]))
                    end = end if end < 0 else k + end
                    check = True  # blocks verified meanwhile are checked again: harmless
                else:
                    with trio.move_on_at(idle_since + self.timeout) as scope:
                        await state.changed.wait()
                    if scope.cancelled_caught:
                        break
                    continue
                stop = stop if end < 0 else end
                await slots.acquire()
                if self.sink is None or self._damaged:
                    slots.release()
                    break
                self.next = max(self.next, stop)
                nursery.start_soon(self._push_slot, slots, k, stop, check)
                idle_since = trio.current_time()

    async def _push_slot(self, slots: trio.Semaphore, first: int, stop: int, check: bool) -> None:
        try:
            if not await self._push(first, stop, check=check):
                self._damaged = True  # the reader's own read of it repairs it
        finally:
            slots.release()

    async def _push(self, first: int, stop: int, *, check: bool) -> bool:
        """Push blocks ``[first, stop)`` (checking them if ``check``); False if one was bad."""
        state, sink = self.state, self.sink
        if sink is None:
            return True
        digests = None
        if check:
            try:
                digests = await state.need_digests()
            except ArtfsError:
                return False
        fd, size = state.data_fd, state.size
        if self._fd_of != fd:  # our own open file: the kernel keeps read-ahead state per file
            self._close_fd()
            self._fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
            self._fd_of = fd
        own = self._fd
        events: dict[int, trio.Event] = {}
        if check:  # readers of these blocks wait for this check instead of repeating it
            for k in range(first, stop):
                if not state.verified[k] and k not in state.checking:
                    events[k] = state.checking[k] = trio.Event()
        good = first

        def checked(upto: int) -> None:
            nonlocal good
            good = upto
            if check:
                state.verified[first:upto] = bytes([1]) * (upto - first)
            for k, event in events.items():
                if state.checking.get(k) is event:
                    del state.checking[k]
                event.set()
            events.clear()

        def work() -> None:
            data, upto = read_checked(own, size, first, stop, digests)
            # Mark them verified (waking readers) *before* the sink, which may wait for
            # the kernel, which may wait for a read of these blocks.
            trio.from_thread.run_sync(checked, upto)
            if data:
                sink(first << BLOCK_SHIFT, data)

        try:
            await trio.to_thread.run_sync(work)
        finally:
            checked(good)  # (no-op unless the thread failed before marking)
        log.debug("pushed blocks %d-%d of %d (checked: %s)", first, good, stop, check)
        return good == stop
