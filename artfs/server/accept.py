"""Admitting the data port's connections: reads at once, uploads a few per scheduler pass.

``trio.serve_listeners`` accepts one connection per scheduler pass and starts a task for
each. When 400 uploads connect together, a GET that connects just after them waits in the
kernel's backlog until all 400 are accepted and have each run a step or two, and every step
of the GET then waits for a pass of 400 steps: 110-330 ms measured (docs/decisions.md,
"GETs behind a crowd of uploads"). Here one pass accepts everything queued (up to
``ACCEPT_BATCH``) and reads what each connection has sent already, without a task: a
connection that starts with ``PUT`` joins a queue that starts ``per_pass`` upload tasks per
pass; any other (a GET, a HEAD, nothing sent yet) gets its task at once.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger("artfs.server.blobs")

ACCEPT_BATCH = 512  # connections accepted in one scheduler pass, at most
FIRST_READ = 16 << 10  # what a new connection has sent, read at accept (h11 takes it)
CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
CAPACITY_SLEEP = 0.1  # out of file descriptors or memory: retry after this long (as trio does)
# The connection went away before we took it (trio's SocketListener retries these too).
GONE_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}

Handler = Callable[[trio.SocketStream, bytes], Awaitable[None]]
"""(the connection, the bytes it sent before it was accepted) -> None; closes the stream."""


class Admission:
    """Accepts connections and runs ``handler`` for each: over ``limit`` open ones, ``busy``
    instead; uploads (their first bytes say ``PUT``) wait in a queue and start at most
    ``per_pass`` per scheduler pass. Counts the connections open and queued (``open``)."""

    def __init__(self, handler: Handler, busy: Handler, limit: int, per_pass: int) -> None:
        self.handler = handler
        self.busy = busy
        self.limit = limit
        self.per_pass = per_pass
        self.open = 0
        self.uploads_queued = 0  # uploads that waited in the queue (a test counts them)
        self._queue: deque[tuple[socket.socket, bytes]] = deque()
        self._queued = trio.lowlevel.ParkingLot()

    async def serve(self, listeners: list[trio.SocketListener]) -> None:
        """Accept on ``listeners`` until cancelled."""
        async with trio.open_nursery() as handlers:
            try:
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(self._start_uploads, handlers)
                    for listener in listeners:
                        sock = socket.socket(fileno=listener.socket.detach())
                        sock.setblocking(False)
                        accepting.start_soon(self._accept_loop, sock, handlers)
            finally:
                for conn, _ in self._queue:
                    conn.close()
                self._queue.clear()

    async def _accept_loop(self, sock: socket.socket, handlers: trio.Nursery) -> None:
        with sock:
            while True:
                await trio.lowlevel.wait_readable(sock)
                for _ in range(ACCEPT_BATCH):
                    try:
                        conn, _ = sock.accept()
                    except BlockingIOError:
                        break
                    except OSError as e:
                        if e.errno in GONE_ERRNOS:
                            continue
                        if e.errno not in CAPACITY_ERRNOS:
                            raise
                        log.error("accept failed: %s; retrying in %.1f s", e, CAPACITY_SLEEP)
                        await trio.sleep(CAPACITY_SLEEP)
                        break
                    self._admit(conn, handlers)

    def _admit(self, conn: socket.socket, handlers: trio.Nursery) -> None:
        conn.setblocking(False)
        try:
            first = conn.recv(FIRST_READ)
        except BlockingIOError:
            first = b""
        except OSError:  # reset already
            conn.close()
            return
        if self.open >= self.limit:
            handlers.start_soon(self._run, self.busy, conn, first)
            return
        self.open += 1
        if first.startswith(b"PUT "):
            self.uploads_queued += 1
            self._queue.append((conn, first))
            self._queued.unpark_all()
        else:
            handlers.start_soon(self._run_counted, conn, first)

    async def _start_uploads(self, handlers: trio.Nursery) -> None:
        while True:
            if not self._queue:
                await self._queued.park()
            for _ in range(min(self.per_pass, len(self._queue))):
                conn, first = self._queue.popleft()
                handlers.start_soon(self._run_counted, conn, first)
            await trio.lowlevel.checkpoint()  # the next ones in the next pass

    async def _run_counted(self, conn: socket.socket, first: bytes) -> None:
        try:
            await self._run(self.handler, conn, first)
        finally:
            self.open -= 1

    @staticmethod
    async def _run(handler: Handler, conn: socket.socket, first: bytes) -> None:
        await handler(trio.SocketStream(trio.socket.from_stdlib_socket(conn)), first)
