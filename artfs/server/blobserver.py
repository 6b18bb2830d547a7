"""A small zero-copy HTTP/1.1 server for blob bytes: ``GET``/``HEAD``/``PUT /blobs/<sha256>``.

Blob bytes don't go through ASGI: Starlette's FileResponse under Hypercorn-trio
moves 0.13-0.19 GB/s here, a sendfile server 0.7-1.1 GB/s. This server parses
requests with h11 and sends bodies with ``os.sendfile`` straight from the blob
file to the non-blocking socket, waiting with ``trio.lowlevel.wait_writable``
when the socket buffer is full, so no byte is copied through Python.

Supported: one ``Range`` per request (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``)
answered 206, or 416 when unsatisfiable; anything else in ``Range`` (several
ranges, another unit) is ignored and the whole blob sent (RFC 9110 allows it).
Keep-alive (the connection is closed after a request with ``Connection: close`` or of
HTTP/1.0), ``Content-Length`` always, ``ETag`` = the sha256 (blobs never change), idle and
stalled connections closed after a timeout, client disconnects handled quietly. It runs in
the same trio loop as the API server.

Uploads (``PUT`` with ``Content-Length``, when given a ``writer``) skip ASGI too:
Hypercorn's h11 path delivers 64 KiB messages and tops out near 0.3 GB/s here. The
body is read with ``recv_into`` into buffers that a worker thread hashes and writes
(``upload_body.py``; ``BlobWriter``: verified, fsynced and renamed into place only when the
sha256 matches, exactly like ``PUT /v1/blobs/{sha}``) while the next one fills. Bytes that
follow the body and can't start a next request (or follow a request that said it was the
last) mean the body was longer than its ``Content-Length``: 400, nothing stored.

Limits (``limits.py``): over ``max_connections`` open connections a new one is answered
503 at once; over ``max_uploads`` an upload waits for a slot, then gets 503; a body slower
than the ``BodyPacer`` allows gets 408 and the connection is closed. Reads come first
(``accept.py``): uploads start, are refused and take their bytes at most ``TURNS`` per
scheduler pass, so a crowd of them doesn't queue a GET behind it.

Access (given by the server when ``--auth on``): GET/HEAD need a URL signed by the API
(``read_gate``, signing.py; without one, a read right on some project), PUT a write right
(``authorize``), and a stored upload is reported (``stored``: the token's proof of
possession); refusals are 401/403 with the API's JSON error body.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Literal

import h11
import trio

from ..auth import READ, WRITE
from ..errors import ArtfsError, Forbidden, InvalidInput, NotFound, Unauthorized
from ..registry.blobs import BlobWriter
from .accept import Admission
from .limits import DEFAULT_LIMITS, ServerLimits, UploadSlots, busy_body
from .signing import ReadGate
from .upload_body import receive_body

log = logging.getLogger("artfs.server.blobs")

_PATH_RE = re.compile(rb"/blobs/([0-9a-f]{64})(?:\?(.*))?")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]"  # RFC 9110 tchar: a method
_REQUEST_LINE = re.compile(rb"%s+ [\x21-\x7e]+ HTTP/[0-9]\.[0-9]\r?" % _TOKEN)
_REQUEST_LINE_START = re.compile(rb"%s*(?: [\x21-\x7e]*(?: [HTP/0-9.]{0,8})?)?" % _TOKEN)
IDLE_TIMEOUT = 60.0
SEND_TIMEOUT = 60.0
YIELD_EVERY = 8 << 20  # let other tasks run at least this often on a fast socket
BUSY_SECONDS = 1.0  # how long a connection over the cap gets to read its 503
REFUSED_DRAIN_MAX = 8 << 20  # a refused upload's body is read and dropped up to this size
PENDING_MAX = 64 << 10  # bytes past an upload's body looked at before it is stored
OVERLONG_DRAIN_SECONDS = 1.0  # how long the rest of a too-long upload body is read and dropped
TURNS = 4  # upload steps (a start, a refusal, a slow byte) per scheduler pass, at most

Resolver = Callable[[str], Path]
"""sha256 -> the blob's file; raises (any exception) when the blob is not held."""
WriterFactory = Callable[[str | None, str, int], Awaitable[BlobWriter]]
"""(Authorization header or None, sha256, size) -> a writer that verifies and stores an
upload (``Registry.blob_writer``, which answers for the sender: see ``_refuse_doomed``)."""
Authorize = Callable[[str | None, str], Awaitable[None]]
"""(Authorization header or None, "read"/"write") -> None, or raise Unauthorized/Forbidden."""
Stored = Callable[[str | None, str, bool], Awaitable[bool]]
"""(Authorization header, sha256, created) after an upload was verified and stored (its
proof of possession: ``Registry.record_upload``) -> the ``created`` to answer."""


async def _allow_all(authorization: str | None, right: str) -> None:
    return None


async def _nothing(authorization: str | None, sha256: str, created: bool) -> bool:
    return created


def _auth_headers(e: ArtfsError) -> list[tuple[str, str]]:
    if isinstance(e, Unauthorized):
        return [("WWW-Authenticate", 'Bearer realm="artfs"')]
    if isinstance(e, Forbidden):
        return [("WWW-Authenticate", 'Bearer realm="artfs", error="insufficient_scope"')]
    return []


def _authorization(req: h11.Request) -> str | None:
    for name, value in req.headers:
        if name == b"authorization":
            return value.decode("latin-1")
    return None


def _wants_close(req: h11.Request) -> bool:
    """Whether the client ends the connection after this request (``Connection: close``, or
    HTTP/1.0, whose keep-alive h11 doesn't do): no further request may follow it."""
    if req.http_version < b"1.1":
        return True
    return any(
        name == b"connection" and b"close" in (t.strip().lower() for t in value.split(b","))
        for name, value in req.headers
    )


def _could_be_request(data: bytes) -> bool:
    """Whether bytes that arrived right after an upload's body (past any empty lines) can
    begin the next (pipelined) request. If not, the body was longer than its
    ``Content-Length``."""
    line, newline, _ = data.partition(b"\n")
    if newline:
        return _REQUEST_LINE.fullmatch(line) is not None
    return _REQUEST_LINE_START.fullmatch(line) is not None


def _pending(stream: trio.SocketStream) -> bytes:
    """What has already arrived on the (non-blocking) socket, without waiting for more."""
    try:
        return os.read(stream.socket.fileno(), PENDING_MAX)
    except OSError:  # nothing yet (EAGAIN), or a reset the next read reports
        return b""


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class _FileSpan:
    """A body h11 passes through untouched (``send_with_data_passthrough``); we sendfile it."""

    __slots__ = ("fd", "length", "offset")

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self.fd = fd
        self.offset = offset
        self.length = length

    def __len__(self) -> int:
        return self.length


def parse_range(header: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """(start, end_inclusive) for a satisfiable single range; None to send the whole blob;
    False when the range can't be satisfied (416)."""
    if header is None:
        return None
    m = _RANGE_RE.fullmatch(header.strip())
    if m is None:
        return None
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:
        n = int(last)
        if n == 0 or size == 0:
            return False
        return max(0, size - n), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # syntactically invalid: ignored
    if start >= size:
        return False
    return start, min(int(last), size - 1) if last else size - 1


class BlobDataServer:
    def __init__(
        self,
        resolve: Resolver,
        *,
        writer: WriterFactory | None = None,
        authorize: Authorize = _allow_all,
        read_gate: ReadGate | None = None,
        stored: Stored = _nothing,
        idle_timeout: float = IDLE_TIMEOUT,
        send_timeout: float = SEND_TIMEOUT,
        limits: ServerLimits = DEFAULT_LIMITS,
    ) -> None:
        self.resolve = resolve
        self.writer = writer
        self.authorize = authorize
        self.read_gate = read_gate  # GET/HEAD: a signed URL (signing.py) instead of a token
        self.stored = stored
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        self.limits = limits
        self.uploads = UploadSlots(limits.max_uploads, limits.upload_wait)
        # Upload work comes in crowds (400 connect together, their waits for a slot end
        # together); taking turns spreads it over scheduler passes so a GET's steps run
        # between (docs/decisions.md, "GETs behind a crowd of uploads"). GETs take no turn.
        self.turns = trio.CapacityLimiter(TURNS)
        self.admission = Admission(self.handle, self._busy, limits.max_connections, TURNS)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.requests = 0
        self.refused_busy = 0  # connections answered 503 for being over the cap

    @property
    def connections(self) -> int:
        """Open now (uploads waiting to start included)."""
        return self.admission.open

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        task_status.started(bound)
        await self.admission.serve(listeners)

    async def _busy(self, stream: trio.SocketStream, first: bytes = b"") -> None:
        """Answer 503 to a connection over ``max_connections`` without reading the request,
        let the client finish sending a little so it reads the answer rather than a reset,
        and close: all within ``BUSY_SECONDS``."""
        self.refused_busy += 1
        body = busy_body(f"the data server has {self.limits.max_connections} connections open")
        head = (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        with trio.move_on_after(BUSY_SECONDS):
            try:
                await stream.send_all(head + body)
                await stream.send_eof()
                while await stream.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        with trio.CancelScope(shield=True):
            await stream.aclose()

    async def handle(self, stream: trio.SocketStream, first: bytes = b"") -> None:
        """Serve one connection; ``first``: what it sent before it was accepted."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        if first:  # (empty data would mean end of stream to h11)
            conn.receive_data(first)
        try:
            while True:
                event = await self._next_event(conn, stream)
                if not isinstance(event, h11.Request):
                    return
                if event.method == b"PUT" and self.writer is not None:
                    leftover = await self._upload(conn, stream, event)
                    if leftover is None:
                        return
                    # The body bypassed h11: carry on with a fresh parser.
                    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
                    if leftover:  # (empty data would mean end of stream to h11)
                        conn.receive_data(leftover)
                    continue
                # Read (and drop) any request body so the connection can be reused.
                while not isinstance(ev := await self._next_event(conn, stream), h11.EndOfMessage):
                    if not isinstance(ev, h11.Data):
                        return
                await self._respond(conn, stream, event)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except h11.RemoteProtocolError as e:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                try:
                    await self._simple(conn, stream, e.error_status_hint, f"bad request: {e}\n")
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            ConnectionError,
            trio.TooSlowError,
        ):
            pass  # the client went away or stalled
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                log.warning("blob data connection failed: %s", e)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _next_event(self, conn: h11.Connection, stream: trio.SocketStream) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            with trio.move_on_after(self.idle_timeout) as scope:
                data = await stream.receive_some(65536)
            if scope.cancelled_caught:
                return h11.ConnectionClosed()
            conn.receive_data(data)

    async def _simple(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        status: int,
        text: str,
        headers: list[tuple[str, str]] | None = None,
        *,
        head: bool = False,
    ) -> None:
        body = text.encode()
        all_headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *(headers or []),
        ]
        await stream.send_all(
            conn.send(h11.Response(status_code=status, headers=all_headers, reason=_reason(status)))
        )
        if not head:
            await stream.send_all(conn.send(h11.Data(data=body)))
        await stream.send_all(conn.send(h11.EndOfMessage()))

    async def _respond(
        self, conn: h11.Connection, stream: trio.SocketStream, req: h11.Request
    ) -> None:
        self.requests += 1
        head = req.method == b"HEAD"
        if req.method not in (b"GET", b"HEAD"):
            allow = "GET, HEAD, PUT" if self.writer is not None else "GET, HEAD"
            await self._simple(conn, stream, 405, f"only {allow}\n", [("Allow", allow)])
            return
        m = _PATH_RE.fullmatch(req.target)
        if m is None:
            await self._simple(conn, stream, 404, "not found\n", head=head)
            return
        sha = m.group(1).decode()
        try:
            if self.read_gate is not None:
                await self.read_gate(sha, (m.group(2) or b"").decode("latin-1"))
            else:
                await self.authorize(_authorization(req), READ)
        except (Unauthorized, Forbidden) as e:
            await self._json(
                conn, stream, e.http_status, _error_body(e), _auth_headers(e), head=head
            )
            return
        try:
            path = self.resolve(sha)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except Exception as e:  # a quarantined blob says so (registry/integrity.py)
            text = e.message if isinstance(e, NotFound) else f"blob {sha} not found"
            await self._simple(conn, stream, 404, f"{text}\n", head=head)
            return
        try:
            size = os.fstat(fd).st_size
            range_header = None
            for name, value in req.headers:
                if name == b"range":
                    range_header = value.decode("latin-1")
            span = parse_range(range_header, size)
            headers = [
                ("Content-Type", "application/octet-stream"),
                ("Accept-Ranges", "bytes"),
                ("ETag", f'"{sha}"'),
                ("Cache-Control", "public, max-age=31536000, immutable"),
            ]
            if span is False:
                await self._simple(
                    conn,
                    stream,
                    416,
                    "range not satisfiable\n",
                    [*headers[1:3], ("Content-Range", f"bytes */{size}")],
                    head=head,
                )
                return
            if span is None:
                status, start, length = 200, 0, size
            else:
                start, end = span
                status, length = 206, end - start + 1
                headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
            headers.append(("Content-Length", str(length)))
            await stream.send_all(
                conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
            )
            if not head and length:
                body = h11.Data(data=_FileSpan(fd, start, length))  # type: ignore[arg-type]
                for part in conn.send_with_data_passthrough(body) or []:
                    if isinstance(part, _FileSpan):
                        await self._sendfile(stream, part)
                    else:
                        await stream.send_all(part)
            tail = conn.send(h11.EndOfMessage())
            if tail:
                await stream.send_all(tail)
        finally:
            os.close(fd)

    async def _sendfile(self, stream: trio.SocketStream, span: _FileSpan) -> None:
        sock = stream.socket
        out = sock.fileno()
        offset, remaining = span.offset, span.length
        since_yield = 0
        while remaining:
            try:
                n = os.sendfile(out, span.fd, offset, remaining)
            except BlockingIOError:
                with trio.fail_after(self.send_timeout):
                    await trio.lowlevel.wait_writable(sock)
                since_yield = 0
                continue
            if n == 0:  # the file shrank under us: can't honour Content-Length
                raise trio.BrokenResourceError(f"blob file ended early at offset {offset}")
            offset += n
            remaining -= n
            self.bytes_sent += n
            since_yield += n
            if since_yield >= YIELD_EVERY:
                since_yield = 0
                await trio.lowlevel.checkpoint()

    # --- uploads ----------------------------------------------------------------------
    async def _upload(
        self, conn: h11.Connection, stream: trio.SocketStream, req: h11.Request
    ) -> bytes | None:
        """Store the request body as a blob and answer like ``PUT /v1/blobs/{sha}``.

        Returns the bytes received past this body (the next pipelined request), or None
        when the connection must close (after an error, or when the client asked to close:
        ``Connection: close``, HTTP/1.0)."""
        assert self.writer is not None
        self.requests += 1
        m = _PATH_RE.fullmatch(req.target)
        declared = next((v for k, v in req.headers if k == b"content-length"), None)
        if m is None:
            await self._json(conn, stream, 404, _error_body(InvalidInput("not found")))
            return None
        if declared is None or any(k == b"transfer-encoding" for k, _ in req.headers):
            err = InvalidInput("a blob upload needs Content-Length (no chunked encoding)")
            await self._json(conn, stream, 411, _error_body(err))
            return None
        sha, length = m.group(1).decode(), int(declared)
        try:
            async with self.turns:
                await self.authorize(_authorization(req), WRITE)
        except (Unauthorized, Forbidden) as e:
            await self._refuse_upload(conn, stream, e, length)
            return None
        slot = object()
        try:
            await self.uploads.acquire(slot)
        except ArtfsError as e:  # over max_uploads for upload_wait seconds: 503
            await self._refuse_upload(conn, stream, e, length)
            return None
        try:
            return await self._upload_in_slot(conn, stream, req, sha, length)
        finally:
            self.uploads.release(slot)

    async def _upload_in_slot(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        req: h11.Request,
        sha: str,
        length: int,
    ) -> bytes | None:
        assert self.writer is not None
        try:
            async with self.turns:
                writer = await self.writer(_authorization(req), sha, length)
        except ArtfsError as e:  # e.g. the blob is being garbage-collected: 409
            await self._refuse_upload(conn, stream, e, length)
            return None
        if conn.they_are_waiting_for_100_continue:
            await stream.send_all(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        head, _ = conn.trailing_data
        first, leftover = bytes(head[:length]), bytes(head[length:])
        overlong = False
        try:
            try:
                await receive_body(
                    stream.socket,
                    writer,
                    first,
                    length,
                    self.limits.pacer(),
                    self._count,
                    self.turns,
                )
            except BaseExceptionGroup as group:
                raise _single(group) from None
            # Bytes past Content-Length are the next request, unless no request may follow
            # or they can't be one: then the body was longer than declared. Refuse it before
            # anything is stored (what arrives later than this is answered on its own).
            if len(leftover) < PENDING_MAX:
                leftover += _pending(stream)
            after = leftover.lstrip(b"\r\n")  # (empty lines before a request are allowed)
            overlong = bool(after) and (_wants_close(req) or not _could_be_request(after))
            if overlong:
                raise InvalidInput(
                    f"the upload of blob {sha} is longer than its Content-Length "
                    f"({length} bytes): nothing stored"
                )
            created = await trio.to_thread.run_sync(writer.finish)
            created = await self.stored(_authorization(req), sha, created)
        except ArtfsError as e:
            async with self.turns:  # (64 slow bodies time out together)
                writer.abort()
                await self._json(conn, stream, e.http_status, _error_body(e))
            if overlong:  # let the client finish sending, so it reads this, not a reset
                await self._drain(stream, REFUSED_DRAIN_MAX, OVERLONG_DRAIN_SECONDS)
            return None
        except BaseException:
            writer.abort()
            raise
        body = {"sha256": sha, "size": length, "created": created}
        await self._json(conn, stream, 201 if created else 200, body)
        if conn.our_state is h11.MUST_CLOSE:  # Connection: close, or HTTP/1.0
            return None
        return leftover

    async def _refuse_upload(
        self, conn: h11.Connection, stream: trio.SocketStream, e: ArtfsError, length: int
    ) -> None:
        """Answer a refused upload, then let the client finish sending a small body so it
        reads the answer rather than a reset connection. (A client that asked
        ``Expect: 100-continue`` sends nothing more; large uploads should ask.)"""
        async with self.turns:  # (the uploads waiting for a slot give up together)
            await self._json(conn, stream, e.http_status, _error_body(e), _auth_headers(e))
        if conn.they_are_waiting_for_100_continue or length > REFUSED_DRAIN_MAX:
            return
        head, _ = conn.trailing_data
        await self._drain(stream, length - len(head), self.idle_timeout)

    async def _drain(self, stream: trio.SocketStream, limit: int, seconds: float) -> None:
        """Read and drop up to ``limit`` bytes for at most ``seconds``, or until EOF."""
        remaining = limit
        with trio.move_on_after(seconds):
            while remaining > 0:
                data = await stream.receive_some(min(remaining, 1 << 20))
                if not data:
                    return
                remaining -= len(data)

    def _count(self, n: int) -> None:
        self.bytes_received += n

    async def _json(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        status: int,
        body: object,
        extra_headers: list[tuple[str, str]] | None = None,
        *,
        head: bool = False,
    ) -> None:
        data = json.dumps(body).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            *(extra_headers or []),
        ]
        await stream.send_all(
            conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
        )
        tail = b"" if head else conn.send(h11.Data(data=data))
        await stream.send_all(tail + conn.send(h11.EndOfMessage()))


def _error_body(e: ArtfsError) -> dict[str, object]:
    return {"error": {"code": e.code, "message": e.message}}


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    return leaf
