"""What one server port may hold at once, and how slow a request body may be.

A port without limits is a memory and socket budget any client can spend: 200 clients that
declared 100 MiB bodies and sent one byte every 3 s once took a server from 74 MB to 2.45 GB
(12 MiB of upload buffers allocated per connection before any body arrived) and made a blob
GET wait 9 s. The limits here (docs/decisions.md, "Bounded server ports"):

- ``max_connections``: connections the data port serves at once, requests the API port
  runs at once. Over it, a new one is answered ``503`` with ``Retry-After`` at once (a
  queue in the kernel's backlog would stall GETs behind idle sockets, silently);
- ``max_uploads``: blob uploads a port receives at once; one over it waits up to
  ``upload_wait`` seconds for a slot, then gets ``503``;
- ``body_timeout`` and ``body_min_rate``: each ``body_timeout`` seconds spent waiting for a
  body's bytes must bring ``body_min_rate * body_timeout`` of them, or the request is
  answered ``408`` and the connection closed (time the server spends writing what arrived
  doesn't count against the client).

Buffers are allocated only once bytes arrive, small first (``upload_body.py``), and large
ones come from ``mmap`` so that freeing them gives the memory back (``return_freed_memory``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import trio

from ..errors import TooSlow, Unavailable

MAX_CONNECTIONS = 1024
MAX_UPLOADS = 64
UPLOAD_WAIT = 10.0
BODY_TIMEOUT = 30.0
BODY_MIN_RATE = 1024  # bytes/s: a 10 Mbit/s link is 1,280 times faster
READ_TIMEOUT = 120  # Hypercorn: seconds a connection may send nothing while a request is open
MMAP_THRESHOLD = 256 << 10  # malloc: blocks this large and up come from mmap, go back on free


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """``artfs serve --max-connections/--max-uploads/--body-timeout/--body-min-rate``."""

    max_connections: int = MAX_CONNECTIONS
    max_uploads: int = MAX_UPLOADS
    upload_wait: float = UPLOAD_WAIT
    body_timeout: float = BODY_TIMEOUT
    body_min_rate: int = BODY_MIN_RATE

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_uploads < 1:
            raise ValueError("--max-connections and --max-uploads must be at least 1")
        if self.body_timeout <= 0 or self.body_min_rate < 0 or self.upload_wait < 0:
            raise ValueError("--body-timeout must be positive, --body-min-rate 0 or more")

    def pacer(self) -> BodyPacer:
        return BodyPacer(self.body_timeout, self.body_min_rate)


DEFAULT_LIMITS = ServerLimits()


def add_limit_arguments(parser: Any) -> None:
    """The limit options on an argparse parser (``artfs serve``, ``-m artfs.server``)."""
    parser.add_argument(
        "--max-connections",
        type=int,
        default=MAX_CONNECTIONS,
        help="connections the data port serves at once, and requests the API runs at once; "
        "more are answered 503 (default %(default)s)",
    )
    parser.add_argument(
        "--max-uploads",
        type=int,
        default=MAX_UPLOADS,
        help="blob uploads each port receives at once; more wait up to 10 s, then get 503 "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=BODY_TIMEOUT,
        help="a request body must bring --body-min-rate bytes/s over every this many "
        "seconds, or it is cut off with 408 (default %(default)s)",
    )
    parser.add_argument(
        "--body-min-rate",
        type=int,
        default=BODY_MIN_RATE,
        help="slowest accepted request body, bytes/s (default %(default)s; 0: no minimum)",
    )


def limit_options(args: Any) -> ServerLimits:
    try:
        return ServerLimits(
            max_connections=args.max_connections,
            max_uploads=args.max_uploads,
            body_timeout=args.body_timeout,
            body_min_rate=args.body_min_rate,
        )
    except ValueError as e:
        from ..errors import InvalidInput

        raise InvalidInput(str(e)) from None


class BodyPacer:
    """Cuts off a request body that arrives slower than ``min_rate`` bytes/s.

    Only time spent waiting on the client counts: each read asks ``deadline()``, reports
    what it got with ``arrived``, or ``expired`` when the deadline passed. Every ``window``
    seconds of waiting must have brought ``min_rate * window`` bytes."""

    __slots__ = ("_read_started", "_waited", "_window_bytes", "min_rate", "window")

    def __init__(self, window: float, min_rate: int) -> None:
        self.window = window
        self.min_rate = min_rate
        self._waited = 0.0
        self._window_bytes = 0
        self._read_started = 0.0

    def deadline(self) -> float:
        """When the read about to start must give up (``trio.move_on_at``)."""
        self._read_started = trio.current_time()
        if self.min_rate == 0:
            return math.inf
        return self._read_started + max(self.window - self._waited, 0.0)

    def arrived(self, n: int) -> None:
        """A read brought ``n`` bytes (0 at end of stream)."""
        self._window_bytes += n
        self._account()

    def expired(self) -> None:
        """The read's deadline passed with nothing: raise ``TooSlow`` if the window came up
        short, else start the next window."""
        self._account()

    def _account(self) -> None:
        self._waited += trio.current_time() - self._read_started
        if self.min_rate == 0 or self._waited < self.window:
            return
        needed = self.min_rate * self.window
        if self._window_bytes < needed:
            raise TooSlow(
                f"request body too slow: {self._window_bytes} bytes in {self._waited:.0f} s, "
                f"under the {self.min_rate} bytes/s this server requires"
            )
        self._waited = 0.0
        self._window_bytes = 0


class UploadSlots:
    """At most ``limit`` uploads at once on one port; the next waits ``wait`` seconds."""

    def __init__(self, limit: int, wait: float) -> None:
        self._limiter = trio.CapacityLimiter(limit)
        self.wait = wait

    @property
    def in_use(self) -> int:
        return int(self._limiter.borrowed_tokens)

    async def acquire(self, borrower: object) -> None:
        with trio.move_on_after(self.wait):
            await self._limiter.acquire_on_behalf_of(borrower)
            return
        raise Unavailable(
            f"the server is receiving {self._limiter.total_tokens:.0f} uploads already: "
            "retry in a moment"
        )

    def release(self, borrower: object) -> None:
        self._limiter.release_on_behalf_of(borrower)


async def paced_receive(receive: Any, pacer: BodyPacer) -> AsyncIterator[bytes]:
    """The chunks of an ASGI request body (``http.request`` messages), cut off by ``pacer``.
    Reads ``receive`` directly: a memory-channel receive is safe to cancel, an iterator
    over ``request.stream()`` would be closed by the first deadline."""
    while True:
        with trio.move_on_at(pacer.deadline()) as scope:
            message = await receive()
        if scope.cancelled_caught:
            pacer.expired()
            continue
        if message["type"] != "http.request":  # http.disconnect
            from starlette.requests import ClientDisconnect

            raise ClientDisconnect()
        body: bytes = message.get("body", b"")
        pacer.arrived(len(body))
        if body:
            yield body
        if not message.get("more_body", False):
            return


class RequestCap:
    """ASGI middleware: at most ``limit`` HTTP requests running at once; one over it is
    answered 503 with ``Retry-After: 1`` without touching the application."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.running = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.running >= self.limit:
            await send_busy(send, f"the server is running {self.limit} requests already")
            return
        self.running += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.running -= 1


def busy_body(message: str) -> bytes:
    err = Unavailable(f"{message}: retry in a moment")
    return json.dumps({"error": {"code": err.code, "message": err.message}}).encode()


async def send_busy(send: Any, message: str) -> None:
    body = busy_body(message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def return_freed_memory() -> None:
    """Make glibc serve blocks of ``MMAP_THRESHOLD`` and up from ``mmap``, always.

    By default glibc raises its mmap threshold each time a large block is freed (up to
    32 MiB), so after one burst of uploads later 4 MiB buffers come from the heap, which is
    never given back: the memory stayed taken after the connections closed. A fixed
    threshold turns that adjustment off. No-op where glibc isn't the allocator."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_mmap_threshold = -3
    mallopt(m_mmap_threshold, MMAP_THRESHOLD)
