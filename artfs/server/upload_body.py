"""Receiving an upload's body on the data port: ``recv_into`` buffers that a worker thread
hashes and writes (``BlobWriter``) while the next one fills.

Buffers are allocated only once bytes are there to fill them, and small first: the first
is ``FIRST_BUFFER`` (64 KiB), each next one twice the last, up to ``UPLOAD_BUFFER``
(4 MiB); at most ``UPLOAD_BUFFERS`` exist per upload. A fast upload reaches 4 MiB buffers
after 6 of them (under 4 MiB received); a client that dribbles holds 64 KiB, not the
12 MiB every upload used to allocate before its first byte (docs/decisions.md, "Bounded
server ports"). Every wait on the socket is paced by a ``BodyPacer`` (``limits.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from ..registry.blobs import BlobWriter
from .limits import BodyPacer

FIRST_BUFFER = 64 << 10
UPLOAD_BUFFER = 4 << 20  # one worker-thread write (hash + write) per this many bytes, at most
UPLOAD_BUFFERS = 3  # filling one while the thread works on another, one spare


async def _recv_into(sock: trio.socket.SocketType, view: memoryview, pacer: BodyPacer) -> int:
    """One read of at most ``len(view)`` bytes, waiting no longer than the pacer allows."""
    while True:
        with trio.move_on_at(pacer.deadline()) as scope:
            n = await sock.recv_into(view, len(view))
        if scope.cancelled_caught:
            pacer.expired()  # raises TooSlow when the window came up short
            continue
        pacer.arrived(n)
        if n == 0:
            raise trio.BrokenResourceError("client closed mid-upload")
        return n


async def _readable(sock: trio.socket.SocketType, pacer: BodyPacer) -> None:
    while True:
        with trio.move_on_at(pacer.deadline()) as scope:
            await trio.lowlevel.wait_readable(sock)
        if not scope.cancelled_caught:
            pacer.arrived(0)
            return
        pacer.expired()


async def _turn(turns: trio.CapacityLimiter) -> None:
    """Wait for a turn: at most ``turns.total_tokens`` tasks come out of this in one
    scheduler pass, each running its next step there (what follows up to its next await),
    not held across a wait on a client or a worker thread."""
    async with turns:
        pass


async def receive_body(
    sock: trio.socket.SocketType,
    writer: BlobWriter,
    first: bytes,
    length: int,
    pacer: BodyPacer,
    count: Callable[[int], None],
    turns: trio.CapacityLimiter,
) -> None:
    """Receive ``length`` body bytes (``first`` already here) into ``writer``; ``count`` is
    told of every chunk received. Each chunk waits for a turn (``turns``: the bytes of many
    uploads arrive together; a GET takes no turn). Raises ``TooSlow`` (``pacer``),
    ``BrokenResourceError`` (the client left) or what the writer raises."""
    full_send, full_recv = trio.open_memory_channel[tuple[bytearray, int]](UPLOAD_BUFFERS)
    free_send, free_recv = trio.open_memory_channel[bytearray](UPLOAD_BUFFERS)
    allocated = 0
    next_size = FIRST_BUFFER

    async def store() -> None:
        async with full_recv:
            async for buf, n in full_recv:
                await _turn(turns)
                await trio.to_thread.run_sync(writer.write, memoryview(buf)[:n])
                free_send.send_nowait(buf)

    async def take_buffer(remaining: int) -> bytearray:
        """A buffer to fill: a free one of the current size, else a new one (while fewer than
        ``UPLOAD_BUFFERS`` exist), else wait for the thread to hand one back."""
        nonlocal allocated, next_size
        want = min(next_size, remaining)
        while True:
            try:
                buf = free_recv.receive_nowait()
            except trio.WouldBlock:
                if allocated < UPLOAD_BUFFERS:
                    allocated += 1
                    break
                buf = await free_recv.receive()
            if len(buf) >= want:
                return buf
            allocated -= 1  # too small for this stage: drop it, make a bigger one
        next_size = min(next_size * 2, UPLOAD_BUFFER)
        return bytearray(want)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store)
        async with full_send:
            if first:
                await _turn(turns)
                await trio.to_thread.run_sync(writer.write, first)
                count(len(first))
            remaining = length - len(first)
            while remaining:
                await _readable(sock, pacer)  # no buffer before there are bytes for it
                await _turn(turns)
                buf = await take_buffer(remaining)
                view = memoryview(buf)
                want = min(len(buf), remaining)
                filled = 0
                while filled < want:
                    filled += await _recv_into(sock, view[filled:want], pacer)
                remaining -= filled
                count(filled)
                await full_send.send((buf, filled))
