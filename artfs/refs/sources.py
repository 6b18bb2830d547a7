"""Where a ref's bytes come from: one small protocol, a kind per URL scheme.

Each source delivers ``length`` bytes at ``offset`` of the object a URL names to a sink,
in order, and checks on the way that the object is still ``size`` bytes long: a source
that shrank, grew or vanished is an ``IntegrityError`` here (a changed source is never
read as if it were the committed one; a same-size change is caught by the cache's block
digests). Every call has a deadline (``timeout``: the longest wait for a byte).

Bytes are not verified here: the cache verifies every block before anyone sees it.

``file://`` refs read the *reading* machine's path, so they are opt-in on the reading
side: only under the directories in ``$ARTFS_REF_FILE_ROOTS`` (colon-separated), none by
default (docs/design.md, "External references": a version naming ``file:///etc/shadow``
would otherwise make every reader open its own copy; the hash check keeps the bytes from
anyone, but whether the open worked would still leak).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

import httpx
import trio

from ..errors import ArtfsError, IntegrityError, NotFound, NotPermitted, Unavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DataSink = Callable[[bytes], None]
CHUNK = 1 << 20
FILE_ROOTS_ENV = "ARTFS_REF_FILE_ROOTS"


class RefSource(Protocol):
    async def read(self, url: str, size: int, offset: int, length: int, sink: DataSink) -> None:
        """Deliver bytes ``[offset, offset+length)`` of ``url`` (an object of ``size`` bytes)."""
        ...

    async def size(self, url: str) -> int:
        """The object's size now (a commit reads the whole object once, from 0 to this)."""
        ...

    async def aclose(self) -> None: ...


def changed(url: str, what: str) -> IntegrityError:
    return IntegrityError(f"external ref {url} changed since it was committed: {what}")


# --------------------------------------------------------------------------- file://


def file_roots(env: str | None = None) -> tuple[str, ...] | None:
    """The directories ``file://`` refs may be read under (``$ARTFS_REF_FILE_ROOTS``)."""
    text = os.environ.get(FILE_ROOTS_ENV, "") if env is None else env
    return tuple(os.path.realpath(p) for p in text.split(":") if p)


class FileSource:
    """``file:///path``: ``os.pread`` in a worker thread. ``roots``: directories refs may
    name (None: any, for the committer's own command line)."""

    def __init__(self, roots: Sequence[str] | None) -> None:
        self.roots = None if roots is None else tuple(roots)

    def path_of(self, url: str) -> str:
        path = os.path.realpath(unquote(urlsplit(url).path))
        if self.roots is not None and not any(
            path == r or path.startswith(r.rstrip("/") + "/") for r in self.roots
        ):
            raise NotPermitted(
                f"file ref {url}: reading local files for a version is off outside "
                f"${FILE_ROOTS_ENV} (set it to the directories you trust, e.g. /data)"
            )
        return path

    async def read(self, url: str, size: int, offset: int, length: int, sink: DataSink) -> None:
        path = self.path_of(url)

        def work(deliver: Callable[[bytes], None]) -> None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise changed(url, "the file is gone") from None
            except OSError as e:
                raise IntegrityError(f"external ref {url}: cannot open: {e.strerror}") from None
            try:
                if os.fstat(fd).st_size != size:
                    raise changed(url, f"{os.fstat(fd).st_size} bytes, not {size}")
                pos, end = offset, offset + length
                while pos < end:
                    data = os.pread(fd, min(CHUNK, end - pos), pos)
                    if not data:
                        raise changed(url, "it ended early")
                    deliver(data)
                    pos += len(data)
            finally:
                os.close(fd)

        await _threaded(work, sink)

    async def size(self, url: str) -> int:
        try:
            return os.stat(self.path_of(url)).st_size
        except OSError as e:
            raise NotFound(f"external ref {url}: {e.strerror}") from None

    async def aclose(self) -> None:
        return None


class _Abandoned(Exception):
    """Raised in a worker thread whose reader gave up on it."""


async def _threaded(work: Callable[[Callable[[bytes], None]], None], sink: DataSink) -> None:
    """Run blocking ``work`` in a thread; its chunks reach ``sink`` on the trio thread, in order.
    Cancelling (the cache's progress deadline) abandons the thread, which stops at its
    next chunk."""
    token = trio.lowlevel.current_trio_token()
    stop = threading.Event()

    def deliver(data: bytes) -> None:
        if stop.is_set():
            raise _Abandoned  # ends the abandoned thread's loop
        trio.from_thread.run_sync(sink, data, trio_token=token)

    try:
        await trio.to_thread.run_sync(work, deliver, abandon_on_cancel=True)
    finally:
        stop.set()


# --------------------------------------------------------------------------- http(s)://


class HttpSource:
    """``http(s)://``: ranged GETs through httpx (proxies and CA settings from the env)."""

    def __init__(self, timeout: float) -> None:
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=True)

    async def read(self, url: str, size: int, offset: int, length: int, sink: DataSink) -> None:
        if length == 0:
            return
        headers = {"Range": f"bytes={offset}-{offset + length - 1}", "Accept-Encoding": "identity"}
        try:
            async with self._http.stream("GET", url, headers=headers) as resp:
                if resp.status_code in (404, 410):
                    raise changed(url, f"HTTP {resp.status_code}, the object is gone")
                if resp.status_code == 416:
                    raise changed(url, "it is shorter (HTTP 416)")
                if resp.status_code == 206:
                    total = resp.headers.get("content-range", "").rpartition("/")[2]
                    if total != str(size):
                        raise changed(url, f"{total or '?'} bytes, not {size}")
                    skip = 0
                elif resp.status_code == 200:  # a server without ranges: skip to offset
                    if resp.headers.get("content-length") not in (None, str(size)):
                        raise changed(url, f"{resp.headers['content-length']} bytes, not {size}")
                    skip = offset
                else:
                    raise Unavailable(f"external ref {url}: HTTP {resp.status_code}")
                left = length
                async for chunk in resp.aiter_bytes(CHUNK):
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    if chunk and left:
                        sink(chunk[:left])
                        left -= min(left, len(chunk))
                    if not left:
                        break
        except httpx.TimeoutException:
            raise Unavailable(f"external ref {url}: no answer in time") from None
        except httpx.HTTPError as e:
            raise Unavailable(f"external ref {url}: {type(e).__name__}: {e}") from None

    async def size(self, url: str) -> int:
        try:
            resp = await self._http.head(url, headers={"Accept-Encoding": "identity"})
        except httpx.HTTPError as e:
            raise Unavailable(f"external ref {url}: {type(e).__name__}: {e}") from None
        if resp.status_code in (404, 410):
            raise NotFound(f"external ref {url}: HTTP {resp.status_code}")
        length = resp.headers.get("content-length")
        if resp.status_code != 200 or length is None or not length.isdigit():
            raise Unavailable(f"external ref {url}: HEAD gave HTTP {resp.status_code}, no size")
        return int(length)

    async def aclose(self) -> None:
        await self._http.aclose()


# --------------------------------------------------------------------------- s3://


class S3Source:
    """``s3://bucket/key``: ranged GetObject via boto3, configured the standard AWS way
    (credentials, region, ``AWS_ENDPOINT_URL[_S3]``, profiles), in a worker thread."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._client: S3Client | None = None
        self._lock = threading.Lock()

    def _s3(self) -> S3Client:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                cfg = Config(
                    connect_timeout=self.timeout,
                    read_timeout=self.timeout,
                    retries={"max_attempts": 2, "mode": "standard"},
                )
                self._client = boto3.client("s3", config=cfg)
            return self._client

    async def read(self, url: str, size: int, offset: int, length: int, sink: DataSink) -> None:
        if length == 0:
            return
        parts = urlsplit(url)
        bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))

        def work(deliver: Callable[[bytes], None]) -> None:
            import botocore.exceptions

            try:
                obj: Any = self._s3().get_object(
                    Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}"
                )
                total = str(obj.get("ContentRange", "")).rpartition("/")[2]
                if total != str(size):
                    raise changed(url, f"{total or '?'} bytes, not {size}")
                body = obj["Body"]
                left = length
                while left:
                    data = body.read(min(CHUNK, left))
                    if not data:
                        raise changed(url, "it ended early")
                    deliver(data)
                    left -= len(data)
            except botocore.exceptions.ClientError as e:
                code = str(e.response.get("Error", {}).get("Code", ""))
                if code in ("404", "NoSuchKey", "NotFound"):
                    raise changed(url, "the object is gone") from None
                if code in ("InvalidRange", "416"):
                    raise changed(url, "it is shorter") from None
                raise Unavailable(f"external ref {url}: S3 {code}: {e}") from None
            except botocore.exceptions.BotoCoreError as e:
                raise Unavailable(f"external ref {url}: {e}") from None

        await _threaded(work, sink)

    async def size(self, url: str) -> int:
        parts = urlsplit(url)

        def head() -> int:
            import botocore.exceptions

            try:
                meta = self._s3().head_object(
                    Bucket=parts.netloc, Key=unquote(parts.path.lstrip("/"))
                )
            except botocore.exceptions.ClientError as e:
                code = str(e.response.get("Error", {}).get("Code", ""))
                if code in ("404", "NoSuchKey", "NotFound"):
                    raise NotFound(f"external ref {url}: no such object") from None
                raise Unavailable(f"external ref {url}: S3 {code}: {e}") from None
            except botocore.exceptions.BotoCoreError as e:
                raise Unavailable(f"external ref {url}: {e}") from None
            return int(meta["ContentLength"])

        return await trio.to_thread.run_sync(head, abandon_on_cancel=True)

    async def aclose(self) -> None:
        return None


class Sources:
    """One source per scheme, made when first needed; ``read`` dispatches by URL."""

    def __init__(self, *, timeout: float = 30.0, file_roots: Sequence[str] | None = ()) -> None:
        self.timeout = timeout
        self._roots = file_roots
        self._made: dict[str, RefSource] = {}
        self.overrides: dict[str, RefSource] = {}  # tests: a scheme's in-memory twin

    def source(self, url: str) -> RefSource:
        scheme = urlsplit(url).scheme
        scheme = "http" if scheme == "https" else scheme
        if scheme in self.overrides:
            return self.overrides[scheme]
        if scheme not in self._made:
            if scheme == "file":
                self._made[scheme] = FileSource(self._roots)
            elif scheme == "http":
                self._made[scheme] = HttpSource(self.timeout)
            elif scheme == "s3":
                self._made[scheme] = S3Source(self.timeout)
            else:
                raise ArtfsError(f"external ref {url}: no source for {scheme}://")
        return self._made[scheme]

    async def read(self, url: str, size: int, offset: int, length: int, sink: DataSink) -> None:
        await self.source(url).read(url, size, offset, length, sink)

    async def size(self, url: str) -> int:
        with trio.move_on_after(self.timeout * 2):  # S3 retries once; HEAD has its own
            return await self.source(url).size(url)
        raise Unavailable(f"external ref {url}: no size within {self.timeout * 2:g} s")

    async def aclose(self) -> None:
        for source in self._made.values():
            await source.aclose()
