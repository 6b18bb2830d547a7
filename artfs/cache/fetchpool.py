"""Fetch threads: ranged requests received, checked and stored off the trio thread.

The trio thread stays the only one that touches a blob's in-process state (which blocks
are verified, who waits for what, range locks, progress); a worker thread does the
byte-moving work of one request at a time:

1. the trio side claims a run of blocks, locates the blob (``HttpRegistryClient.fetch_range``
   hands the transfer a ``BlobSource``: URL and headers) and gives the run to an idle
   thread of the cache's ``FetchPool``;
2. the thread sends the ranged GET on its own keep-alive connection and receives the body
   with ``readinto`` into its own buffer (the GIL is released while it waits and copies),
   checks each 128 KiB block's sha256 (hashlib releases the GIL), writes the verified
   blocks into the partial data file and then their bytes of the presence map (data
   before map, as on the trio path: a crash in between leaves them absent);
3. after each receive that completed blocks it tells the trio thread which, without
   waiting (``TrioToken.run_sync_soon``); the trio thread marks them verified, wakes their
   waiters, drops their range locks and reports progress.

A bad block stops the thread with ``BadBlock`` (the blocks before it are stored): the trio
side fetches from it once more, then gives up, as on the trio path. A cancelled waiter
aborts its thread (a flag checked between chunks, and a shutdown of the socket it may
block on) and waits, shielded, the moment it takes to stop, so that no thread writes
blocks whose claims were given up or into fds that get closed. Every blocking call in the
thread has the client's timeout (no byte for that long: ``Unavailable``).

A fetch takes a thread only if one is idle; otherwise, and for clients that cannot hand
a thread a URL (a local registry, the in-memory twin), it runs on the trio thread
(``fetcher.fetch_blocks``), as everything did before.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Container, Sequence
from typing import Any, Protocol, runtime_checkable

import trio

from ..client.ranges import Abort, BlobSource, RangeConnections, RangeTransfer
from ..errors import ProtocolError, Unavailable
from .blockmap import BLOCK_SHIFT, PRESENT, block_bounds
from .fetcher import BadBlock, DigestSlot
from .layout import storage_error

THREAD_BUFFER = 1 << 20  # each thread's receive buffer (a whole number of blocks)


@runtime_checkable
class ThreadedFetchClient(Protocol):
    """A registry client whose blob bytes a worker thread can fetch (``HttpRegistryClient``)."""

    async def fetch_range(
        self, sha256: str, size: int, offset: int, length: int, transfer: RangeTransfer
    ) -> bool: ...


class FetchPool:
    """``size`` worker threads owned by one ``BlobCache`` (``start`` when it opens, ``aclose``
    stops and joins them; it must run after every fetch has ended).

    A fetch holds a thread from ``try_acquire`` to ``release`` and runs its jobs (one per
    attempt) on it, so a job never queues behind another one.
    """

    def __init__(self, client: ThreadedFetchClient, size: int) -> None:
        self.client = client
        self.size = size
        self.token = trio.lowlevel.current_trio_token()
        self._busy = 0
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def start(self) -> None:
        """Start the threads (idle until given work: not on a first fetch's critical path)."""
        while len(self._threads) < self.size:
            thread = threading.Thread(
                target=self._work, name=f"artfs-fetch-{len(self._threads)}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def try_acquire(self) -> bool:
        """Take an idle thread; False when all are busy."""
        if self._closed or self._busy >= self.size:
            return False
        self._busy += 1
        self.start()
        return True

    def release(self) -> None:
        self._busy -= 1

    async def aclose(self) -> None:
        self._closed = True
        threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)

        def join() -> None:
            for thread in threads:
                thread.join()

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(join)

    def _work(self) -> None:
        connections = RangeConnections()
        buf: memoryview | None = None
        try:
            while (job := self._jobs.get()) is not None:
                if buf is None:
                    buf = memoryview(bytearray(THREAD_BUFFER))
                job.run(connections, buf)
        finally:
            connections.close()

    async def run(self, job: _Job) -> None:
        """Run ``job`` on the thread the caller holds and wait for it to end."""
        if self._closed:
            raise Unavailable("the blob cache is closing")
        self._jobs.put(job)
        try:
            await job.done.wait()
        except BaseException:
            job.abort.abort()
            with trio.CancelScope(shield=True):
                await job.done.wait()
            raise
        if job.error is not None:
            raise job.error


class ThreadedRun:
    """Blocks ``[start, stop)`` of a blob, claimed by the caller, fetched by a pool thread:
    a ``RangeTransfer`` for ``fetch_range``, one job per attempt (a resumed attempt starts
    at the first block not yet delivered).

    ``mark(first, stop, skip)`` is called on the trio thread for each batch of blocks
    stored (those in ``skip`` are received and dropped); ``delivered`` counts whole blocks.
    """

    def __init__(
        self,
        pool: FetchPool,
        sha: str,
        size: int,
        start: int,
        stop: int,
        skip: Container[int],
        digests: DigestSlot,
        fds: tuple[int, int],
        mark: Callable[[int, int, Container[int]], None],
        timeout: float,
    ) -> None:
        self.delivered = 0
        self.pool = pool
        self.sha = sha
        self.size = size
        self.start = start
        self.stop = stop
        self.skip = skip
        self.digests = digests
        self.fds = fds
        self.mark = mark
        self.timeout = timeout
        self._failure: BaseException | None = None

    async def __call__(self, source: BlobSource, offset: int, length: int) -> None:
        first = self.start + (self.delivered >> BLOCK_SHIFT)
        if first << BLOCK_SHIFT != offset:
            raise AssertionError(f"a threaded fetch resumed at {offset}, not at block {first}")
        job = _Job(self, source, first)
        try:
            await self.pool.run(job)
        finally:
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure

    def stored(self, first: int, stop: int) -> None:
        """(Trio thread, from ``run_sync_soon``: must not raise.) The thread has checked and
        written blocks ``[first, stop)`` (but those skipped) and set their map bytes."""
        try:
            self.mark(first, stop, self.skip)
        except BaseException as e:  # (a progress callback): surfaces when the job ends
            if self._failure is None:
                self._failure = e
        self.delivered = block_bounds(stop - 1, self.size)[1] - (self.start << BLOCK_SHIFT)


class _Job:
    """One ranged request of a ``ThreadedRun``, from block ``first`` to its end."""

    def __init__(self, run: ThreadedRun, source: BlobSource, first: int) -> None:
        self.run_of = run
        self.source = source
        self.first = first
        self.abort = Abort()
        self.done = trio.Event()
        self.error: BaseException | None = None

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self.run_of.pool.token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:  # (the pool is joined before trio ends: not expected)
            pass

    # --- in the worker thread -------------------------------------------------------------
    def run(self, connections: RangeConnections, buf: memoryview) -> None:
        error: BaseException | None = None
        try:
            self._receive(connections, buf)
        except BaseException as e:
            error = e
        self._post(self._finish, error)

    def _receive(self, connections: RangeConnections, buf: memoryview) -> None:
        run, size = self.run_of, self.run_of.size
        start = self.first << BLOCK_SHIFT
        end = block_bounds(run.stop - 1, size)[1]
        body = connections.get(self.source, start, end - start, size, self.abort)
        try:
            per_buffer = len(buf) >> BLOCK_SHIFT
            k = self.first
            while k < run.stop:
                top = min(run.stop, k + per_buffer)
                base = k << BLOCK_SHIFT
                want = block_bounds(top - 1, size)[1] - base
                fill = 0
                while k < top:
                    self.abort.check()
                    n = body.readinto(buf[fill:want])
                    if n <= 0:
                        raise ProtocolError(f"{self.source.url} ended the body early")
                    fill += n
                    ready = top if fill == want else (base + fill) >> BLOCK_SHIFT
                    if ready > k:
                        self._blocks(buf, base, k, ready)
                        k = ready
        finally:
            body.close()

    def _blocks(self, buf: memoryview, base: int, first: int, stop: int) -> None:
        """Check blocks ``[first, stop)`` (in ``buf``, which starts at byte ``base``), write
        the good ones, tell the trio thread; ``BadBlock`` at the first bad one."""
        run = self.run_of
        digests: Sequence[bytes] | None = run.digests.value
        if digests is None:
            digests = run.digests.wait_blocking(run.timeout, lambda: self.abort.aborted)
            self.abort.check()
            if digests is None:
                raise Unavailable(
                    f"blob {run.sha[:12]}: no block digests from the registry in {run.timeout:g}s"
                )
        good = first  # blocks [good, k) are checked and not yet written
        for k in range(first, stop):
            if k in run.skip:
                self._write(buf, base, good, k)
                good = k + 1
                continue
            lo, hi = block_bounds(k, run.size)
            if hashlib.sha256(buf[lo - base : hi - base]).digest() != digests[k]:
                self._write(buf, base, good, k)
                self._post(run.stored, first, k)
                raise BadBlock(k)
        self._write(buf, base, good, stop)
        self._post(run.stored, first, stop)

    def _write(self, buf: memoryview, base: int, first: int, stop: int) -> None:
        if stop <= first:
            return
        run = self.run_of
        data_fd, map_fd = run.fds
        try:
            # One write per block: larger writes measured up to 5x the CPU here (kernel 6.18,
            # ext4: large page-cache folios for large writes), 128 KiB ones steady.
            for k in range(first, stop):
                lo, hi = block_bounds(k, run.size)
                if os.pwrite(data_fd, buf[lo - base : hi - base], lo) != hi - lo:
                    raise OSError(errno.ENOSPC, "short write")
            os.pwrite(map_fd, bytes([PRESENT]) * (stop - first), first)
        except OSError as e:
            raise storage_error(e, f"storing blob {run.sha[:12]}") from None

    # --- on the trio thread -----------------------------------------------------------------
    def _finish(self, error: BaseException | None) -> None:
        self.error = error
        self.done.set()
