"""Blob reads for ``HttpRegistryClient`` (a mixin): ranged GETs of blob bytes, resumed.

``read_range`` streams a range into a sink; ``fetch_range`` runs a transfer its caller
supplies (the blob cache's fetch threads). Both locate the blob (``locations.py``), send the
ranged GET (``ranges.py`` on trio sockets for http URLs, httpx for https) and, after a cut
or a stale location, resume at the first byte not yet delivered. Split from ``http.py``,
which keeps the metadata calls: the two halves share only the plumbing declared below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import httpx

from ..errors import InvalidInput, NotFound, ProtocolError, Unavailable
from ..hashing import sha256_hex
from .base import DataSink
from .ranges import (
    REFUSAL_BODY_MAX,
    BlobSource,
    Cut,
    Gone,
    RangeTransfer,
    RawRangeFetcher,
    Refused,
    check_range_status,
    refused,
)
from .resend import RESENDS, ConnectionTrace

HTTPX_CHUNK = 1 << 20  # measured: larger aiter_raw chunks are slower (joins)
RESUMES = 3  # a range read interrupted this many times without progress gives up


class BlobReads:
    """The reading half of ``HttpRegistryClient``, which provides what is declared here."""

    timeout: float
    _raw: RawRangeFetcher
    _thread_schemes: set[str]  # URL schemes worker threads may fetch directly

    if TYPE_CHECKING:  # provided by HttpRegistryClient and BlobLocations; no stubs at runtime

        def _client_for(self, attempt: int) -> httpx.AsyncClient: ...
        def _headers_for(self, url: str) -> dict[str, str]: ...
        def _is_own(self, url: str) -> bool: ...
        def _unavailable(self, url: str, e: Exception) -> Unavailable: ...
        def _raise_status(self, status: int, url: str, body: bytes) -> NoReturn: ...
        async def _registry_info(self) -> dict[str, Any]: ...
        async def locate(self, sha256: str, *, refresh: bool = False) -> str: ...
        def _expires(self, sha256: str) -> bool: ...

    async def read_range(
        self, sha256: str, size: int, offset: int, length: int, sink: DataSink
    ) -> None:
        """Stream ``length`` bytes at ``offset`` into ``sink``.

        A URL that stops working (expired presigned URL: 403; moved: 404/410) is located
        again, and a connection cut mid-body is reopened; either way the read resumes at the
        first byte not yet delivered, so ``sink`` sees every byte exactly once."""
        self._check_range(sha256, size, offset, length)
        await self._resumed(sha256, offset, length, _SinkTransfer(self, size, sink))

    async def fetch_range(
        self, sha256: str, size: int, offset: int, length: int, transfer: RangeTransfer
    ) -> bool:
        """Deliver ``length`` bytes at ``offset`` through ``transfer`` (which moves the bytes,
        e.g. in a worker thread with ``ranges.RangeConnections``), locating the blob on this
        (trio) side and resuming like ``read_range``: after a cut or a stale location the
        next attempt starts at ``offset + transfer.delivered``.

        False, with nothing done, when the blob's location is not one a thread may fetch
        directly (an https URL while a proxy is configured: httpx's job, ``read_range``)."""
        self._check_range(sha256, size, offset, length)
        await self._registry_info()
        if urlsplit(await self.locate(sha256)).scheme not in self._thread_schemes:
            return False
        await self._resumed(sha256, offset, length, transfer)
        return True

    @staticmethod
    def _check_range(sha256: str, size: int, offset: int, length: int) -> None:
        sha256_hex(sha256)
        if offset < 0 or length < 0 or offset + length > size:
            raise InvalidInput(f"range {offset}+{length} outside blob {sha256} of {size} bytes")

    def _source(self, url: str) -> BlobSource:
        headers = tuple(self._headers_for(url).items())
        return BlobSource(url, headers, self._is_own(url), self.timeout)

    async def _resumed(
        self, sha256: str, offset: int, length: int, transfer: RangeTransfer
    ) -> None:
        """Run ``transfer`` until it has delivered the range: a refusal by the registry is
        raised as its error, a stale location is located again, a cut resumes after the
        bytes delivered; ``RESUMES`` attempts in a row without progress give up."""
        refresh = False
        stuck = 0
        await self._registry_info()  # knows the data server's origin (where tokens go)
        while transfer.delivered < length:
            url = await self.locate(sha256, refresh=refresh)
            before = transfer.delivered
            try:
                await transfer(self._source(url), offset + before, length - before)
                return
            except Refused as e:
                # A signed data-server URL that ran out (or a secret rotated) answers 403:
                # locate it once more before taking the refusal as final.
                if e.status != 403 or refresh or not self._expires(sha256):
                    self._raise_status(e.status, url.split("?", 1)[0], e.body)
                refresh = True
                continue
            except Gone as e:
                what = f"blob {sha256} not found at {url.split('?', 1)[0]} (HTTP {e.status})"
                refresh = True
            except Cut as e:
                what = str(e)
                refresh = self._expires(sha256)
            done = transfer.delivered
            stuck = 0 if done > before else stuck + 1
            if stuck >= RESUMES or (refresh and stuck >= 2 and done == before):
                if "not found" in what:
                    raise NotFound(what)
                raise Unavailable(what)

    async def _fetch_httpx(
        self,
        url: str,
        offset: int,
        length: int,
        size: int,
        sink: DataSink,
        headers: dict[str, str] | None = None,
        own: bool = False,
    ) -> None:
        for attempt in range(RESENDS + 1):
            try:
                await self._stream_httpx(
                    url, offset, length, size, sink, headers, own, ConnectionTrace(attempt)
                )
                return
            except _Resend:
                continue

    async def _stream_httpx(
        self,
        url: str,
        offset: int,
        length: int,
        size: int,
        sink: DataSink,
        headers: dict[str, str] | None,
        own: bool,
        seen: ConnectionTrace,
    ) -> None:
        """One ranged GET through httpx; ``_Resend`` when it met a closed pooled connection
        (``resend.py``) and ``_fetch_httpx`` should send it again."""
        end = offset + length - 1
        got = 0
        try:
            async with self._client_for(seen.attempt).stream(
                "GET",
                url,
                headers={**(headers or {}), "Range": f"bytes={offset}-{end}"},
                extensions={"trace": seen},
            ) as resp:
                if refused(resp.status_code, own):
                    body = b""
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > REFUSAL_BODY_MAX:
                            break
                    raise Refused(resp.status_code, body)
                check_range_status(
                    resp.status_code, resp.headers.get("content-range"), url, offset, length, size
                )
                async for chunk in resp.aiter_raw(HTTPX_CHUNK):
                    if got + len(chunk) > length:
                        raise ProtocolError(f"{url} sent more than the {length} bytes asked for")
                    got += len(chunk)
                    sink(chunk)
                if got != length:
                    raise Cut(f"download from {url} ended after {got} of {length} bytes")
        except httpx.TimeoutException as e:
            raise self._unavailable(url, e) from None
        except httpx.TransportError as e:
            if got:
                raise Cut(f"download from {url} cut after {got} of {length} bytes: {e}") from None
            if seen.resend(e, "GET"):
                raise _Resend from None
            raise self._unavailable(url, e) from None


class _Resend(Exception):
    """A request met a pooled connection the peer had closed: send it again, fresh."""


class _SinkTransfer:
    """``read_range``'s transfer: the raw trio fetcher for http URLs, httpx for https; every
    byte goes to the sink, counted."""

    def __init__(self, client: BlobReads, size: int, sink: DataSink) -> None:
        self.delivered = 0
        self._client = client
        self._size = size
        self._sink = sink

    def _counted(self, data: bytes) -> None:
        self._sink(data)
        self.delivered += len(data)

    async def __call__(self, source: BlobSource, offset: int, length: int) -> None:
        client, headers = self._client, dict(source.headers)
        if source.url.startswith("http://"):
            await client._raw.fetch(
                source.url, offset, length, self._size, self._counted, headers, source.own
            )
        else:
            await client._fetch_httpx(
                source.url, offset, length, self._size, self._counted, headers, source.own
            )
