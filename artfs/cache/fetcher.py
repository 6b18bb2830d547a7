"""One ranged request: stream a run of blocks from the registry, verify each block, store it.

Bytes arrive in chunks of any size. They are assembled into blocks (copied only when a
block straddles chunks), each block's sha256 is checked against its published digest,
and only then is it handed to ``store`` — so a waiting reader is woken per block, as
soon as its block is in, not when the whole multi-MiB request ends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container, Sequence

import trio

from ..client.base import RegistryClient
from ..errors import ProtocolError, Unavailable
from ..hashing import BLOCK_SIZE
from .blockmap import block_bounds

StoreBlock = Callable[[int, memoryview], None]


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
        digests: Sequence[bytes],
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
        if index in self.skip:
            self.next = index + 1
            return
        if hashlib.sha256(block).digest() != self.digests[index]:
            raise BadBlock(index)
        self.store(index, block)
        self.next = index + 1

    @property
    def done(self) -> bool:
        return self.next >= self.stop


async def fetch_blocks(
    client: RegistryClient,
    sha: str,
    size: int,
    first: int,
    stop: int,
    digests: Sequence[bytes],
    store: StoreBlock,
    stall_timeout: float,
    skip: Container[int] = (),
) -> None:
    """Fetch, verify and store blocks ``[first, stop)`` in one ranged request; blocks in
    ``skip`` are received and dropped (someone else fetches them).

    Raises ``BadBlock`` (earlier blocks are stored), ``Unavailable`` when no byte arrives
    for ``stall_timeout`` seconds (a progress deadline, so big requests on slow links
    are fine), or whatever ``store`` raises (``StorageFull``).
    """
    asm = RunAssembler(first, stop, size, digests, store, skip)
    start = block_bounds(first, size)[0]
    end = block_bounds(stop - 1, size)[1]
    with trio.CancelScope(deadline=trio.current_time() + stall_timeout) as scope:

        def sink(data: bytes) -> None:
            asm.feed(data)
            scope.deadline = trio.current_time() + stall_timeout

        try:
            await client.read_range(sha, size, start, end - start, sink)
        except BaseException:
            if asm.error is not None and not isinstance(asm.error, trio.Cancelled):
                raise asm.error from None
            raise
        asm.finish()
    if scope.cancelled_caught:
        raise Unavailable(f"blob {sha[:12]}: no data from the registry for {stall_timeout:g}s")
    if not asm.done:
        raise Unavailable(
            f"blob {sha[:12]}: the registry ended the range early (block {asm.next} of {stop})"
        )
