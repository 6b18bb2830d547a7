"""Uploads of blob bytes for ``HttpRegistryClient``: by ``sendfile`` to the registry's data
server (``put_file``) or straight to the object store through presigned URLs
(``upload_presigned``, several parts at once, then a completion request the server answers
only once it has verified the bytes). ``http.py`` picks the way (``upload_blob``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11
import httpx
import trio

from ..errors import InvalidInput, ProtocolError, Unavailable

if TYPE_CHECKING:
    from .http import HttpRegistryClient

UPLOAD_MIN_RATE = (
    20 << 20
)  # bytes/s the server must at least sustain before a stalled upload is given up
UPLOAD_PARALLEL_PARTS = 4  # presigned multipart uploads: parts in flight at once
PART_ATTEMPTS = 3
EXPECT_CONTINUE_OVER = 1 << 20  # uploads from this size ask first (Expect: 100-continue)


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside (nested) groups, so callers see e.g. Unavailable itself."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    return leaf


async def upload_presigned(client: HttpRegistryClient, sha256: str, path: Path, size: int) -> None:
    """Upload straight to the object store: ask for presigned URLs, PUT the parts (several
    at once), then ask the server to verify and complete (docs/api.md, "Blobs")."""
    plan = await client._json(
        "POST", "/v1/blobs/uploads", json_body={"sha256": sha256, "size": size}
    )
    try:
        parts = [
            (int(p["number"]), int(p["offset"]), int(p["length"]), str(p["url"]))
            for p in plan["parts"]
        ]
        key, multipart_id = str(plan["key"]), plan["multipart_id"]
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"malformed upload plan: {e}") from None
    if sum(length for _, _, length, _ in parts) != size:
        raise ProtocolError(f"upload plan for {sha256} does not cover its {size} bytes")
    etags: dict[int, str] = {}
    limiter = trio.Semaphore(UPLOAD_PARALLEL_PARTS)
    f = await trio.to_thread.run_sync(open, path, "rb")

    async def read_part(offset: int, length: int) -> bytes:
        return await trio.to_thread.run_sync(os.pread, f.fileno(), length, offset)

    async def put_part(number: int, offset: int, length: int, url: str) -> None:
        async with limiter:
            data = await read_part(offset, length)
            if len(data) != length:
                raise InvalidInput(f"{path} changed while being uploaded")
            timeout = httpx.Timeout(client.timeout, read=client.timeout + length / UPLOAD_MIN_RATE)
            for attempt in range(PART_ATTEMPTS):
                try:
                    resp = await client._http.put(
                        url,
                        content=data,
                        headers={"Content-Length": str(length)},
                        timeout=timeout,
                    )
                except httpx.TransportError as e:
                    if attempt + 1 < PART_ATTEMPTS:
                        continue
                    raise client._unavailable(url.split("?", 1)[0], e) from None
                if resp.status_code >= 500 and attempt + 1 < PART_ATTEMPTS:
                    continue
                break
            if resp.status_code != 200:
                raise Unavailable(
                    f"object store refused part {number} of blob {sha256}: "
                    f"HTTP {resp.status_code} {resp.text[:200]!r}"
                )
            etag = resp.headers.get("etag")
            if multipart_id is not None and not etag:
                raise ProtocolError(f"object store sent no ETag for part {number}")
            etags[number] = etag or ""

    try:
        async with trio.open_nursery() as nursery:
            for part in parts:
                nursery.start_soon(put_part, *part)
    except BaseExceptionGroup as group:
        raise single_exception(group) from None
    finally:
        await trio.to_thread.run_sync(f.close)
    # The server reads the object once to verify it: allow for that before its answer.
    timeout = httpx.Timeout(client.timeout, read=client.timeout + 2 * size / UPLOAD_MIN_RATE)
    await client._request(
        "POST",
        "/v1/blobs/uploads/complete",
        json_body={
            "sha256": sha256,
            "size": size,
            "key": key,
            "multipart_id": multipart_id,
            "parts": [{"number": n, "etag": etags[n]} for n in sorted(etags)],
        },
        timeout=timeout,
    )


class FileBody:
    """A body h11 only counts (``send_with_data_passthrough``); the bytes go by sendfile."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


SENDFILE_STEP = 8 << 20  # bytes per sendfile call (in a worker thread: cold files block)


async def await_continue(
    stream: trio.SocketStream, conn: h11.Connection, url: str
) -> tuple[int, bytes] | None:
    """After a request with ``Expect: 100-continue``: None once the server says go on
    (100), or (status, body) of its final answer when it refuses before the body."""
    status = 0
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data and status == 0:
                raise Unavailable(f"upload to {url}: connection closed before an answer")
            conn.receive_data(data)
        elif isinstance(event, h11.InformationalResponse):
            if event.status_code == 100:
                return None
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        else:  # EndOfMessage, ConnectionClosed
            return status, bytes(body)


async def put_file(
    url: str,
    fd: int,
    size: int,
    timeout: float,
    extra_wait: float,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """PUT ``size`` bytes of ``fd`` to ``url`` over a fresh connection; (status, body).

    Each ``sendfile`` runs in a worker thread (reading a file not in the page cache
    blocks) on the non-blocking socket; a full socket is awaited in trio. Every wait is
    bounded by ``timeout``; the answer may take ``extra_wait`` longer (server-side fsync).
    From ``EXPECT_CONTINUE_OVER`` bytes the body waits for ``100 Continue``, so a refused
    upload (a bad token, a full store) is answered before it is sent."""
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ProtocolError(f"invalid upload URL {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(parts.hostname, parts.port or 80)
    except (trio.TooSlowError, OSError) as e:
        raise Unavailable(f"upload to {url} failed: can't connect: {e}") from None
    conn = h11.Connection(h11.CLIENT)
    head = [
        ("Host", parts.netloc.rsplit("@", 1)[-1]),
        ("Content-Length", str(size)),
        ("Content-Type", "application/octet-stream"),
        ("User-Agent", "artfs"),
        ("Connection", "close"),
        *(headers or {}).items(),
    ]
    ask_first = size >= EXPECT_CONTINUE_OVER
    if ask_first:
        head.append(("Expect", "100-continue"))
    try:
        with trio.CancelScope() as scope:
            scope.deadline = trio.current_time() + timeout
            await stream.send_all(conn.send(h11.Request(method="PUT", target=target, headers=head)))
            early: tuple[int, bytes] | None = None
            if ask_first:
                early = await await_continue(stream, conn, url)
            if early is not None:
                return early
            for _ in conn.send_with_data_passthrough(h11.Data(data=FileBody(size))) or []:  # type: ignore[arg-type]
                pass
            sock = stream.socket
            offset = 0
            while offset < size:
                step = min(SENDFILE_STEP, size - offset)
                try:
                    n = await trio.to_thread.run_sync(os.sendfile, sock.fileno(), fd, offset, step)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                    scope.deadline = trio.current_time() + timeout
                    continue
                if n == 0:
                    raise InvalidInput(f"file being uploaded to {url} shrank at offset {offset}")
                offset += n
                scope.deadline = trio.current_time() + timeout
            await stream.send_all(conn.send(h11.EndOfMessage()))
            scope.deadline = trio.current_time() + timeout + extra_wait
            status, body = 0, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        if scope.cancelled_caught:
            raise Unavailable(f"upload to {url} stalled for {timeout:g} s")
        if status == 0:
            raise Unavailable(f"upload to {url}: connection closed before an answer")
        return status, bytes(body)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, h11.ProtocolError) as e:
        raise Unavailable(f"upload to {url} failed: {type(e).__name__}: {e}") from None
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()
