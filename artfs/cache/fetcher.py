"""One ranged request on the trio thread: stream a run of blocks, verify each block, store it.

Bytes arrive in chunks of any size. They are assembled into blocks (copied only when a
block straddles chunks), each block's sha256 is checked against its published digest,
and only then is it handed to ``store`` — so a waiting reader is woken per block, as
soon as its block is in, not when the whole multi-MiB request ends.

The block digests may still be on their way (``DigestSlot``: a cold blob's first request
goes out beside its digest request, one round trip instead of two); blocks that arrive
before them are held and checked when they come. ``fetchpool.py`` does the same work in
worker threads for clients that can hand a thread the blob's URL.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Container, Sequence

import trio

from ..client.base import RegistryClient
from ..errors import ArtfsError, IntegrityError, NotFound, ProtocolError, Unavailable
from ..hashing import BLOCK_SIZE
from .blockmap import block_bounds

StoreBlock = Callable[[int, memoryview], None]

_THREAD_POLL = 0.01  # seconds between a worker thread's looks at its abort flag while it waits
REPORT_TIMEOUT = 5.0  # seconds a damage report may delay the reader's error, at most
log = logging.getLogger("artfs.cache")


async def missing_blob(client: RegistryClient, sha256: str, e: NotFound) -> IntegrityError:
    """A blob a version references is gone from the registry (quarantined as damaged, or
    lost): for the reader an I/O error, not "no such file" (the file is listed); the
    registry is told, so it records the loss against the version."""
    await report_damage(client, sha256, f"not found: {e.message}")
    return IntegrityError(f"blob {sha256[:12]} is missing on the registry: {e.message}")


async def report_damage(client: RegistryClient, sha256: str, detail: str) -> None:
    """Tell the registry that it served bytes not matching a blob's digests (it re-checks and
    quarantines the stored blob: registry/integrity.py). Best effort and bounded: the reader
    gets its integrity error either way, a few seconds later at most."""
    with trio.move_on_after(REPORT_TIMEOUT):
        try:
            answer = await client.report_damage(sha256, detail)
            # INFO: the mount's log keeps it; a command's one error line says the rest
            log.info("blob %s: damage reported to the registry (%s)", sha256[:12], answer)
        except ArtfsError as e:
            log.warning("blob %s: the damage report failed: %s", sha256[:12], e)


class DigestSlot:
    """A blob's block digests, given at once or later (requested beside the first data).

    Set on the trio thread; awaited there (``wait``) or in a worker thread (``wait_blocking``).
    """

    def __init__(self, digests: Sequence[bytes] | None = None) -> None:
        self.value = digests
        self._ready = threading.Event()
        self._event: trio.Event | None = None
        self.listeners: set[Callable[[], None]] = set()  # called (trio thread) when set
        if digests is not None:
            self._ready.set()

    def set(self, digests: Sequence[bytes]) -> None:
        self.value = digests
        self._ready.set()
        if self._event is not None:
            self._event.set()
        for listener in list(self.listeners):
            listener()

    async def wait(self) -> Sequence[bytes]:
        if self.value is None:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()
        assert self.value is not None
        return self.value

    def wait_blocking(self, timeout: float, aborted: Callable[[], bool]) -> Sequence[bytes] | None:
        """(In a worker thread.) The digests, or None once ``aborted()`` or after ``timeout``
        seconds (the trio side's request has its own deadline and aborts the thread first)."""
        waited = 0.0
        while not self._ready.wait(_THREAD_POLL):
            waited += _THREAD_POLL
            if aborted() or waited >= timeout:
                return None
        return self.value


class BadBlock(Exception):
    """A block whose bytes do not match its digest (internal: the caller retries, then gives up)."""

    def __init__(self, index: int) -> None:
        super().__init__(f"block {index} does not match its digest")
        self.index = index


class RunAssembler:
    """Turns the in-order byte stream of blocks ``[first, stop)`` into verified, stored blocks."""

    def __init__(
        self,
        first: int,
        stop: int,
        size: int,
        digests: Sequence[bytes] | None,
        store: StoreBlock,
        skip: Container[int] = (),
    ) -> None:
        self.skip = skip  # blocks received only to keep one request: dropped, never hashed
        self.next = first
        self.stop = stop
        self.size = size
        self.digests = digests
        self.store = store
        self.error: BaseException | None = None
        self._buf = bytearray(BLOCK_SIZE)
        self._fill = 0
        self._held: list[tuple[int, bytes]] = []  # blocks received before their digests

    def provide(self, digests: Sequence[bytes]) -> None:
        """The digests arrived: check and store the blocks held for them."""
        self.digests = digests
        held, self._held = self._held, []
        try:
            for index, block in held:
                self._check_and_store(index, memoryview(block))
        except BaseException as e:
            if self.error is None:
                self.error = e
            raise

    def _need(self) -> int:
        start, end = block_bounds(self.next, self.size)
        return end - start

    def feed(self, data: bytes | memoryview) -> None:
        try:
            self._feed(memoryview(data))
        except BaseException as e:
            # Remember why: a client may wrap exceptions raised by its sink.
            if self.error is None:
                self.error = e
            raise

    def _feed(self, view: memoryview) -> None:
        while view:
            if self.next >= self.stop:
                raise ProtocolError("the registry sent more bytes than the range asked for")
            need = self._need()
            if self._fill == 0 and len(view) >= need:
                self._finish_block(view[:need])
                view = view[need:]
                continue
            take = min(need - self._fill, len(view))
            self._buf[self._fill : self._fill + take] = view[:take]
            self._fill += take
            view = view[take:]
            if self._fill == need:
                self._fill = 0
                self._finish_block(memoryview(self._buf)[:need])

    def finish(self) -> None:
        """Called at the end of the stream: an empty final block (a 0-byte blob) completes here."""
        if self.next < self.stop and self._fill == 0 and self._need() == 0:
            self._finish_block(memoryview(b""))

    def _finish_block(self, block: memoryview) -> None:
        index = self.next
        self.next = index + 1
        if index in self.skip:
            return
        if self.digests is None:
            self._held.append((index, bytes(block)))
        else:
            self._check_and_store(index, block)

    def _check_and_store(self, index: int, block: memoryview) -> None:
        assert self.digests is not None
        if hashlib.sha256(block).digest() != self.digests[index]:
            raise BadBlock(index)
        self.store(index, block)

    @property
    def done(self) -> bool:
        return self.next >= self.stop and not self._held


async def fetch_blocks(
    client: RegistryClient,
    sha: str,
    size: int,
    first: int,
    stop: int,
    digests: Sequence[bytes] | DigestSlot,
    store: StoreBlock,
    stall_timeout: float,
    skip: Container[int] = (),
) -> None:
    """Fetch, verify and store blocks ``[first, stop)`` in one ranged request; blocks in
    ``skip`` are received and dropped (someone else fetches them). Blocks received before
    the digests (a ``DigestSlot`` not yet set) are held until they arrive.

    Raises ``BadBlock`` (earlier blocks are stored), ``Unavailable`` when no byte arrives
    for ``stall_timeout`` seconds (a progress deadline, so big requests on slow links
    are fine), or whatever ``store`` raises (``StorageFull``).
    """
    slot = digests if isinstance(digests, DigestSlot) else DigestSlot(digests)
    asm = RunAssembler(first, stop, size, slot.value, store, skip)
    start = block_bounds(first, size)[0]
    end = block_bounds(stop - 1, size)[1]
    with trio.CancelScope(deadline=trio.current_time() + stall_timeout) as scope:

        def sink(data: bytes) -> None:
            if asm.digests is None and slot.value is not None:
                asm.provide(slot.value)
            asm.feed(data)
            scope.deadline = trio.current_time() + stall_timeout

        def digests_came() -> None:  # held blocks are checked at once, not at the next chunk
            if asm.digests is None and slot.value is not None and asm.error is None:
                try:
                    asm.provide(slot.value)
                except BaseException:
                    scope.cancel()  # (asm.error says why)

        slot.listeners.add(digests_came)
        try:
            await client.read_range(sha, size, start, end - start, sink)
            asm.finish()
            if asm.digests is None:
                asm.provide(await slot.wait())
        except BaseException:
            if asm.error is not None and not isinstance(asm.error, trio.Cancelled):
                raise asm.error from None
            raise
        finally:
            slot.listeners.discard(digests_came)
    if scope.cancelled_caught:
        raise Unavailable(f"blob {sha[:12]}: no data from the registry for {stall_timeout:g}s")
    if not asm.done:
        raise Unavailable(
            f"blob {sha[:12]}: the registry ended the range early (block {asm.next} of {stop})"
        )
