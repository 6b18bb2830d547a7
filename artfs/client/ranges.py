"""Ranged reads of blob bytes over HTTP: on trio sockets, and blocking in worker threads.

The blob data path of ``HttpRegistryClient`` (``http.py`` keeps the metadata calls and
the resume loop around these, ``locations.py`` where blobs live, ``uploads.py`` the
uploads):

* ``RawRangeFetcher``: ranged GETs over plain HTTP on pooled trio sockets, the body read
  with ``recv_into`` (httpx carries https on the trio side);
* ``RangeConnections``: the same exchange on blocking sockets (http or https), one
  keep-alive connection per origin per worker thread, for the blob cache's fetch threads
  (``cache/fetchpool.py``): they receive a range into their own buffer with ``readinto``
  (the GIL is released while the socket is read), while the trio side only locates the
  blob (``BlobSource``) and is told what arrived. ``Abort`` stops such a thread from the
  trio side: a flag checked between chunks, and a shutdown of the socket it may block on.

Every wait has a deadline (``timeout``: connecting, sending, each wait for bytes); a
stall raises ``Unavailable``. Statuses: 403/404/410 from a store URL raise ``Gone`` (the
caller locates the blob again), a 401/403 from the registry's own origins ``Refused``
(the caller rebuilds the registry's error), a connection cut after some body bytes
``Cut`` (the caller resumes after the bytes delivered). A pooled connection the server
closed before answering is replaced by a new one, once (``resend.may_resend``).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

import h11
import httpx
import trio

from ..errors import ProtocolError, Unavailable
from .base import DataSink
from .resend import PeerClosed, may_resend

RECV_BUFFER = 1 << 20
MAX_IDLE_PER_HOST = 8
REFUSAL_BODY_MAX = 64 << 10  # the error body of a refused blob request read at most


def range_request(
    parts: SplitResult, offset: int, length: int, extra: Iterable[tuple[str, str]]
) -> tuple[str, list[tuple[str, str]]]:
    """The target and head of a ranged GET of the split URL ``parts`` (both fetch paths)."""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = [
        # As written in the URL: presigned URLs sign the Host header, port included or not.
        ("Host", parts.netloc.rsplit("@", 1)[-1]),
        ("Range", f"bytes={offset}-{offset + length - 1}"),
        ("Accept-Encoding", "identity"),
        ("User-Agent", "artfs"),
        *extra,
    ]
    return target, head


@dataclass(frozen=True, slots=True)
class BlobSource:
    """Where a blob's bytes are, located on the trio side, with what a request there needs."""

    url: str
    headers: tuple[tuple[str, str], ...]  # the token, for the registry's own origins only
    own: bool  # the registry's own data server: a 401/403 is a refusal, not an expired URL
    timeout: float


class RangeTransfer(Protocol):
    """Moves bytes of a blob range from a ``BlobSource`` to wherever its caller keeps them
    (``HttpRegistryClient.fetch_range`` locates, resumes and retries around it)."""

    delivered: int  # bytes of the whole range delivered so far; a retry resumes after them

    async def __call__(self, source: BlobSource, offset: int, length: int) -> None:
        """Deliver ``length`` bytes at ``offset``, adding each byte kept to ``delivered``;
        may raise ``Gone``, ``Refused``, ``Cut``, ``Unavailable``, ``ProtocolError``."""
        ...


class Gone(Exception):
    """The data URL answered 403/404/410: its location may have expired or moved."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Cut(Exception):
    """The connection ended mid-body after some bytes were delivered: resume after them."""


class Refused(Exception):
    """The registry's data server refused a blob request (401/403): its error body."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def refused(status: int, own: bool) -> bool:
    """A refusal by the registry itself. A 403 from a store (presigned) URL means it expired."""
    return own and status in (401, 403)


def check_range_status(
    status: int, content_range: str | None, url: str, offset: int, length: int, size: int
) -> None:
    end = offset + length - 1
    if status == 206:
        want = f"bytes {offset}-{end}/{size}"
        if content_range != want:
            raise ProtocolError(f"{url} answered range {content_range!r}, expected {want!r}")
    elif status == 200:
        if offset != 0 or length != size:
            raise ProtocolError(f"{url} ignored the Range request")
    elif status in (403, 404, 410):
        raise Gone(status)
    elif status >= 500:
        raise Unavailable(f"blob store answered HTTP {status} for {url}")
    else:
        raise ProtocolError(f"unexpected HTTP {status} from {url}")


def range_head(
    event: h11.Response, trailing: bytes, url: str, offset: int, length: int, size: int
) -> tuple[bytes, bool]:
    """The checks of a ranged answer's head, shared by the trio and the thread fetch paths:
    the status and ``Content-Range`` (``check_range_status``), a ``Content-Length`` of
    exactly ``length``, no more body already read than that. Returns the body bytes that
    came with the head and whether the connection may be reused. Pure."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
    check_range_status(event.status_code, headers.get("content-range"), url, offset, length, size)
    declared = headers.get("content-length")
    if declared is None or not declared.isdigit() or int(declared) != length:
        raise ProtocolError(f"{url} answered Content-Length {declared!r}, expected {length}")
    if len(trailing) > length:
        raise ProtocolError(f"{url} sent more than the {length} bytes asked for")
    keep = event.http_version == b"1.1" and "close" not in headers.get("connection", "").lower()
    return bytes(trailing), keep


class RawRangeFetcher:
    """Ranged GETs over plain HTTP on pooled trio sockets, the body read with ``recv_into``.

    httpx tops out near 1.4 GB/s on loopback here (64 KiB reads, re-chunking); this path
    reads straight into a 1 MiB buffer and reaches the socket's speed. h11 parses the
    status line and headers; bodies must carry Content-Length (the data server and
    S3-compatible stores always send it), anything else is a ProtocolError.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._idle: dict[tuple[str, int], list[trio.SocketStream]] = {}

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for streams in idle.values():
            for stream in streams:
                await stream.aclose()

    def _unavailable(self, url: str, what: str) -> Unavailable:
        return Unavailable(f"blob download from {url} failed: {what}")

    async def fetch(
        self,
        url: str,
        offset: int,
        length: int,
        size: int,
        sink: DataSink,
        headers: dict[str, str] | None = None,
        own: bool = False,
    ) -> None:
        """``headers``: extra request headers (the token, for the registry's own data server);
        ``own``: a 401/403 is the registry's refusal (``Refused``), not an expired URL."""
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ProtocolError(f"invalid blob URL {url!r}")
        host, port = parts.hostname, parts.port or 80
        target, request_head = range_request(parts, offset, length, (headers or {}).items())
        for attempt in range(2):
            stream, reused = await self._connect(url, host, port, pooled=attempt == 0)
            delivered = False

            def deliver(data: bytes) -> None:
                nonlocal delivered
                delivered = True
                sink(data)

            try:
                keep = await self._exchange(
                    stream, url, target, request_head, offset, length, size, deliver, own
                )
            except (
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                OSError,
                h11.ProtocolError,
                EarlyClose,
            ) as e:
                await stream.aclose()
                # A pooled connection the server had closed: once more on a fresh one. (A
                # ranged GET is idempotent; no body byte delivered means the sink saw nothing.)
                if may_resend(e, "GET", reused=reused, answered=delivered, attempt=attempt):
                    continue
                if delivered:
                    raise Cut(f"download from {url} cut: {type(e).__name__}: {e}") from None
                raise self._unavailable(url, f"{type(e).__name__}: {e}") from None
            except BaseException:
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                raise
            if keep:
                pool = self._idle.setdefault((host, port), [])
                if len(pool) < MAX_IDLE_PER_HOST:
                    pool.append(stream)
                    return
            await stream.aclose()
            return

    async def _connect(
        self, url: str, host: str, port: int, *, pooled: bool = True
    ) -> tuple[trio.SocketStream, bool]:
        """A pooled connection (and True) if there is one and ``pooled``, else a new one: a
        resend must not meet another connection the server closed (all of them, after a
        restart)."""
        pool = self._idle.get((host, port))
        if pool and pooled:
            return pool.pop(), True
        try:
            with trio.fail_after(self.timeout):
                return await trio.open_tcp_stream(host, port), False
        except trio.TooSlowError:
            raise self._unavailable(url, f"connecting took longer than {self.timeout}s") from None
        except OSError as e:
            raise self._unavailable(url, f"can't connect: {e.strerror or e}") from None

    async def _recv(
        self, stream: trio.SocketStream, url: str, view: memoryview | None = None
    ) -> bytes | int:
        try:
            with trio.fail_after(self.timeout):
                if view is None:
                    return await stream.receive_some(65536)
                return await stream.socket.recv_into(view, len(view))
        except trio.TooSlowError:
            raise self._unavailable(url, f"no data for {self.timeout}s") from None

    async def _exchange(
        self,
        stream: trio.SocketStream,
        url: str,
        target: str,
        request_head: list[tuple[str, str]],
        offset: int,
        length: int,
        size: int,
        sink: DataSink,
        own: bool = False,
    ) -> bool:
        """One request/response; returns whether the connection can be reused."""
        conn = h11.Connection(h11.CLIENT)
        data = conn.send(h11.Request(method="GET", target=target, headers=request_head))
        data += conn.send(h11.EndOfMessage())
        try:
            with trio.fail_after(self.timeout):
                await stream.send_all(data)
        except trio.TooSlowError:
            raise self._unavailable(
                url, f"sending the request took longer than {self.timeout}s"
            ) from None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                got = await self._recv(stream, url)
                assert isinstance(got, bytes)
                conn.receive_data(got)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                break
            raise EarlyClose("connection closed before a response")
        if refused(event.status_code, own):
            raise Refused(event.status_code, await self._small_body(stream, url, conn))
        # Error statuses raise here (small bodies: the connection is simply closed).
        body, keep = range_head(event, conn.trailing_data[0], url, offset, length, size)
        if body:
            sink(bytes(body))
        remaining = length - len(body)
        buf = memoryview(bytearray(min(RECV_BUFFER, remaining))) if remaining else None
        while remaining:
            assert buf is not None
            n = await self._recv(stream, url, buf[: min(len(buf), remaining)])
            assert isinstance(n, int)
            if n == 0:
                raise EarlyClose(f"connection closed with {remaining} of {length} bytes to go")
            remaining -= n
            sink(bytes(buf[:n]))
        return keep

    async def _small_body(self, stream: trio.SocketStream, url: str, conn: h11.Connection) -> bytes:
        """The body of an error answer (up to ``REFUSAL_BODY_MAX``; the connection is then
        closed by the caller)."""
        body = b""
        while len(body) <= REFUSAL_BODY_MAX:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                got = await self._recv(stream, url)
                assert isinstance(got, bytes)
                conn.receive_data(got)
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            else:
                break
        return body


class EarlyClose(PeerClosed):
    """The connection ended before the whole answer arrived."""


# --- blocking, for worker threads -----------------------------------------------------------


class Aborted(Exception):
    """The trio side gave up on a worker thread's transfer (its waiter was cancelled)."""


class Abort:
    """Stops a worker thread's transfer from another thread: sets a flag the worker checks
    between chunks and shuts down the socket it may be blocked on (connecting, sending or
    receiving), so the worker returns at once instead of at its next timeout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.aborted = False
        self._sock: socket.socket | None = None

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            if self._sock is not None:
                _shutdown(self._sock)

    def check(self) -> None:
        if self.aborted:
            raise Aborted

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            if self.aborted:
                raise Aborted
            self._sock = sock

    def detach(self) -> None:
        with self._lock:
            self._sock = None


def _shutdown(sock: socket.socket) -> None:
    try:
        # The plain socket's shutdown, also for TLS (SSLSocket.shutdown unwraps the object).
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


_tls_lock = threading.Lock()
_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """httpx's TLS settings (certifi, SSL_CERT_FILE/SSL_CERT_DIR), made once per process."""
    global _tls
    with _tls_lock:
        if _tls is None:
            _tls = httpx.create_ssl_context()
        return _tls


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


class RangeConnections:
    """One worker thread's keep-alive connections to blob sources (one per origin).

    Not thread-safe: each thread owns its own (``close`` when the thread ends).
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], socket.socket] = {}

    def close(self) -> None:
        idle, self._idle = self._idle, {}
        for sock in idle.values():
            _close(sock)

    def _keep(self, key: tuple[str, str, int], sock: socket.socket) -> None:
        old = self._idle.pop(key, None)
        if old is not None:
            _close(old)
        self._idle[key] = sock

    def get(
        self, source: BlobSource, offset: int, length: int, size: int, abort: Abort
    ) -> RangeBody:
        """Send a ranged GET of ``length`` bytes at ``offset`` and read the answer's head;
        the body is read with the returned ``RangeBody``. A pooled connection the server has
        closed meanwhile is replaced once, silently."""
        url = source.url
        parts = urlsplit(url)
        if parts.hostname is None or parts.scheme not in ("http", "https"):
            raise ProtocolError(f"invalid blob URL {url!r}")
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        key = (parts.scheme, parts.hostname, port)
        target, head = range_request(parts, offset, length, source.headers)
        for attempt in range(2):
            sock = self._idle.pop(key, None)
            reused = sock is not None
            if sock is None:
                sock = _connect(source, parts.hostname, port, https, abort)
            else:
                abort.attach(sock)
            conn = h11.Connection(h11.CLIENT)
            try:
                sock.sendall(
                    conn.send(h11.Request(method="GET", target=target, headers=head))
                    + conn.send(h11.EndOfMessage())
                )
                return self._answer(sock, conn, key, source, offset, length, size, abort)
            except (OSError, h11.ProtocolError, EarlyClose) as e:
                abort.detach()
                _close(sock)
                abort.check()
                if may_resend(e, "GET", reused=reused, answered=False, attempt=attempt):
                    continue  # a pooled connection the server had closed: once more, fresh
                if isinstance(e, TimeoutError):
                    raise Unavailable(
                        f"blob download from {url} failed: no answer for {source.timeout:g}s"
                    ) from None
                raise Unavailable(
                    f"blob download from {url} failed: {type(e).__name__}: {e}"
                ) from None
            except BaseException:
                abort.detach()
                _close(sock)
                raise
        raise AssertionError("unreachable")

    def _answer(
        self,
        sock: socket.socket,
        conn: h11.Connection,
        key: tuple[str, str, int],
        source: BlobSource,
        offset: int,
        length: int,
        size: int,
        abort: Abort,
    ) -> RangeBody:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                abort.check()
                conn.receive_data(sock.recv(65536))
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                break
            raise EarlyClose("connection closed before a response")
        url = source.url
        if refused(event.status_code, source.own):
            raise Refused(event.status_code, _small_body(sock, conn))
        first, keep = range_head(event, conn.trailing_data[0], url, offset, length, size)
        return RangeBody(self, key, sock, first, length, keep, url, source.timeout, abort)


def _connect(source: BlobSource, host: str, port: int, https: bool, abort: Abort) -> socket.socket:
    """A new connection (TLS for https), attached to ``abort`` from before it connects."""
    url = source.url
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise Unavailable(f"blob download from {url} failed: can't resolve {host}: {e}") from None
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(source.timeout)
            abort.attach(sock)
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if https:
                tls = _tls_context().wrap_socket(
                    sock, server_hostname=host, do_handshake_on_connect=False
                )
                abort.attach(tls)
                tls.do_handshake()
                return tls
            return sock
        except OSError as e:
            abort.detach()
            _close(sock)
            abort.check()
            error = e
        except BaseException:
            abort.detach()
            _close(sock)
            raise
    if isinstance(error, TimeoutError):
        raise Unavailable(
            f"blob download from {url} failed: connecting took longer than {source.timeout:g}s"
        )
    raise Unavailable(f"blob download from {url} failed: can't connect: {error}")


def _small_body(sock: socket.socket, conn: h11.Connection) -> bytes:
    """The body of an error answer, up to ``REFUSAL_BODY_MAX`` (the connection is closed)."""
    body = b""
    while len(body) <= REFUSAL_BODY_MAX:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        else:
            break
    return body


class RangeBody:
    """The body of a ranged answer, read into the caller's buffers (blocking)."""

    def __init__(
        self,
        owner: RangeConnections,
        key: tuple[str, str, int],
        sock: socket.socket,
        first: bytes,
        length: int,
        keep: bool,
        url: str,
        timeout: float,
        abort: Abort,
    ) -> None:
        self._owner = owner
        self._key = key
        self._sock: socket.socket | None = sock
        self._first = memoryview(first)  # body bytes that came with the head
        self.length = length
        self.remaining = length
        self._keep = keep
        self._url = url
        self._timeout = timeout
        self._abort = abort

    def readinto(self, view: memoryview) -> int:
        """Receive at least one and at most ``len(view)`` bytes of the body into ``view``; 0
        only once the body is complete. Raises ``Unavailable`` when nothing arrives for the
        timeout, ``Cut`` when the connection ends or fails mid-body, ``Aborted``."""
        want = min(len(view), self.remaining)
        if want <= 0:
            return 0
        if self._first:
            n = min(want, len(self._first))
            view[:n] = self._first[:n]
            self._first = self._first[n:]
        else:
            sock = self._sock
            if sock is None:
                raise Aborted
            try:
                n = sock.recv_into(view, want)
            except TimeoutError:
                self._abort.check()
                raise Unavailable(
                    f"blob download from {self._url} failed: no data for {self._timeout:g}s"
                ) from None
            except (OSError, ValueError) as e:  # (ValueError: a TLS socket shut down under us)
                self._abort.check()
                raise Cut(f"download from {self._url} cut: {type(e).__name__}: {e}") from None
            if n == 0:
                self._abort.check()
                raise Cut(
                    f"download from {self._url} cut: connection closed with "
                    f"{self.remaining} of {self.length} bytes to go"
                )
        self.remaining -= n
        return n

    def close(self) -> None:
        """Done with the body: the connection goes back to the thread's pool if the whole
        body was read and the server keeps it open, else it is closed."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._abort.detach()
        if self.remaining == 0 and self._keep and not self._abort.aborted:
            self._owner._keep(self._key, sock)
        else:
            _close(sock)
