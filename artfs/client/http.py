"""``HttpRegistryClient``: the registry over its HTTP/JSON API (docs/api.md).

One shared ``httpx.AsyncClient`` (trio) carries every call. Each call is bounded
by ``timeout``: connecting, each write and each wait for bytes; a stall longer
than that raises ``Unavailable`` naming the URL, as does a 5xx that isn't one of
our JSON errors (a dead proxy). Error bodies from the server are rebuilt into
the ``ArtfsError`` subclass they came from. Everything received is validated
(names, manifests, records) before it is handed on.

Blob bytes: ``read_range`` asks ``/v1/blobs/locate`` for a URL per blob (the
server's sendfile data port, or a presigned store URL), caches it until it
expires, and streams ranged GETs from there in large chunks. A 403/404/410 from
the data URL refreshes the location and retries once.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

import h11
import httpx
import trio
from cachetools import LRUCache

from ..errors import (
    IntegrityError,
    InvalidInput,
    NotFound,
    ProtocolError,
    Unavailable,
    from_code,
)
from ..hashing import sha256_hex, split_block_digests
from ..manifest import Manifest
from ..models import ArtifactInfo, CommitResult, ProjectInfo, VersionInfo
from ..names import alias_name, artifact_name, parse_version, project_name
from .base import UNSET, DataSink, Expect

HTTPX_CHUNK = 1 << 20  # measured: larger aiter_raw chunks are slower (joins)
RECV_BUFFER = 1 << 20
MAX_IDLE_PER_HOST = 8
UPLOAD_CHUNK = 4 << 20
COMPRESS_OVER = 64 << 10
LOCATE_BATCH = 10_000
LOCATIONS_KEPT = 100_000
LOCATE_SLACK = 30.0  # refresh a presigned URL this long before it expires
UPLOAD_MIN_RATE = (
    20 << 20
)  # bytes/s the server must at least sustain before a stalled upload is given up


def _q(segment: str) -> str:
    return quote(segment, safe="")


class HttpRegistryClient:
    def __init__(self, base_url: str, *, timeout: float = 10.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            follow_redirects=False,
        )
        self._raw = _RawRangeFetcher(timeout)
        self._locations: LRUCache[str, tuple[str, float | None]] = LRUCache(LOCATIONS_KEPT)
        self._info: dict[str, Any] | None = None

    # --- plumbing -----------------------------------------------------------
    def _unavailable(self, url: str, e: Exception) -> Unavailable:
        kind = type(e).__name__
        detail = str(e) or kind
        return Unavailable(f"registry at {self.base_url} unreachable ({url}): {kind}: {detail}")

    def _raise_for(self, resp: httpx.Response, body: bytes) -> NoReturn:
        url = str(resp.request.url)
        try:
            err = json.loads(body)["error"]
            code, message = str(err["code"]), str(err["message"])
        except (ValueError, KeyError, TypeError):
            if resp.status_code >= 500:
                raise Unavailable(
                    f"registry at {self.base_url} answered HTTP {resp.status_code} for {url} "
                    f"(not an artfs response: is a proxy in the way, or the server down?)"
                ) from None
            raise ProtocolError(
                f"unexpected HTTP {resp.status_code} from {url}: {body[:200]!r}"
            ) from None
        raise from_code(code, message)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> httpx.Response:
        url = self.base_url + path
        headers = dict(self._auth)
        content: bytes | None = None
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
            if len(content) > COMPRESS_OVER:
                content = await trio.to_thread.run_sync(gzip.compress, content, 1)
                headers["Content-Encoding"] = "gzip"
        try:
            resp = await self._http.request(
                method, url, content=content, params=params, headers=headers
            )
        except httpx.TransportError as e:
            raise self._unavailable(url, e) from None
        if resp.status_code not in ok:
            self._raise_for(resp, resp.content)
        return resp

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = await self._request(method, path, **kw)
        try:
            return resp.json()
        except ValueError as e:
            raise ProtocolError(f"invalid JSON from {resp.request.url}: {e}") from None

    @staticmethod
    def _art_path(project: str, artifact: str) -> str:
        return f"/v1/projects/{_q(project_name(project))}/artifacts/{_q(artifact_name(artifact))}"

    # --- RegistryClient -----------------------------------------------------
    async def _registry_info(self) -> dict[str, Any]:
        if self._info is None:
            data = await self._json("GET", "/v1")
            if not isinstance(data, dict) or not isinstance(data.get("registry_id"), str):
                raise ProtocolError(f"{self.base_url} did not answer like an artfs registry")
            template = data.get("blob_url")
            if template is not None and (
                not isinstance(template, str) or "{sha256}" not in template
            ):
                raise ProtocolError(
                    f"{self.base_url} sent an invalid blob URL template {template!r}"
                )
            self._info = data
        return self._info

    async def registry_id(self) -> str:
        return str((await self._registry_info())["registry_id"])

    async def list_projects(self) -> list[ProjectInfo]:
        data = await self._json("GET", "/v1/projects")
        try:
            return [ProjectInfo.from_json(p) for p in data["projects"]]
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"malformed project list: {e}") from None

    async def create_project(self, name: str, *, exist_ok: bool = False) -> ProjectInfo:
        data = await self._json(
            "POST", "/v1/projects", json_body={"name": project_name(name), "exist_ok": exist_ok}
        )
        return ProjectInfo.from_json(data)

    async def list_artifacts(self, project: str) -> list[ArtifactInfo]:
        data = await self._json("GET", f"/v1/projects/{_q(project_name(project))}/artifacts")
        try:
            return [ArtifactInfo.from_json(a) for a in data["artifacts"]]
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"malformed artifact list: {e}") from None

    async def get_artifact(self, project: str, artifact: str) -> ArtifactInfo:
        return ArtifactInfo.from_json(await self._json("GET", self._art_path(project, artifact)))

    async def create_artifact(
        self,
        project: str,
        artifact: str,
        *,
        type: str,
        description: str = "",
        exist_ok: bool = False,
    ) -> ArtifactInfo:
        body = {
            "name": artifact_name(artifact),
            "type": type,
            "description": description,
            "exist_ok": exist_ok,
        }
        data = await self._json(
            "POST", f"/v1/projects/{_q(project_name(project))}/artifacts", json_body=body
        )
        return ArtifactInfo.from_json(data)

    async def get_version(self, project: str, artifact: str, selector: str) -> VersionInfo:
        if parse_version(selector) is None:
            alias_name(selector, allow_latest=True)
        data = await self._json(
            "GET", f"{self._art_path(project, artifact)}/versions/{_q(selector)}"
        )
        return VersionInfo.from_json(data)

    async def get_manifest(self, project: str, artifact: str, number: int) -> Manifest:
        resp = await self._request(
            "GET", f"{self._art_path(project, artifact)}/versions/{int(number)}/manifest"
        )
        raw = resp.content
        expected = resp.headers.get("x-artfs-digest")

        def parse() -> Manifest:
            try:
                data = json.loads(raw)
            except ValueError as e:
                raise ProtocolError(f"invalid manifest JSON from {resp.request.url}: {e}") from None
            try:
                manifest = Manifest.from_json(data)
            except InvalidInput as e:
                raise ProtocolError(
                    f"registry sent an invalid manifest for {project}/{artifact}:v{number}: {e}"
                ) from None
            if expected is not None and manifest.digest != expected:
                raise IntegrityError(
                    f"manifest of {project}/{artifact}:v{number} does not match "
                    f"its digest {expected}"
                )
            return manifest

        return parse() if len(raw) < (1 << 16) else await trio.to_thread.run_sync(parse)

    async def missing_blobs(self, digests: Iterable[str]) -> set[str]:
        wanted = sorted({sha256_hex(d) for d in digests})
        if not wanted:
            return set()
        data = await self._json("POST", "/v1/blobs/missing", json_body={"digests": wanted})
        try:
            missing = {sha256_hex(d) for d in data["missing"]}
        except (KeyError, TypeError, InvalidInput) as e:
            raise ProtocolError(f"malformed missing-blobs answer: {e}") from None
        return missing & set(wanted)

    async def upload_blob(self, sha256: str, path: Path) -> None:
        sha256_hex(sha256)
        url = f"{self.base_url}/v1/blobs/{sha256}"
        try:
            size = os.stat(path).st_size
        except OSError as e:
            raise InvalidInput(f"can't read {path}: {e.strerror}") from None

        async def body() -> AsyncIterator[bytes]:
            f = await trio.to_thread.run_sync(open, path, "rb")
            try:
                while chunk := await trio.to_thread.run_sync(f.read, UPLOAD_CHUNK):
                    yield chunk
            finally:
                await trio.to_thread.run_sync(f.close)

        # The server hashes as it receives and fsyncs at the end: allow for that before its answer.
        timeout = httpx.Timeout(self.timeout, read=self.timeout + size / UPLOAD_MIN_RATE)
        headers = {
            **self._auth,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        }
        try:
            resp = await self._http.put(url, content=body(), headers=headers, timeout=timeout)
        except httpx.TransportError as e:
            raise self._unavailable(url, e) from None
        except OSError as e:
            raise InvalidInput(f"can't read {path}: {e.strerror}") from None
        if resp.status_code not in (200, 201):
            self._raise_for(resp, resp.content)

    async def commit(
        self,
        project: str,
        artifact: str,
        manifest: Manifest,
        *,
        metadata: dict[str, Any] | None = None,
        description: str = "",
        aliases: Iterable[str] = (),
        parent: int | None = None,
        creator: str = "",
    ) -> CommitResult:
        body = {
            "manifest": manifest.to_json(),
            "metadata": metadata or {},
            "description": description,
            "aliases": [alias_name(a, allow_latest=True) for a in aliases],
            "parent": parent,
            "creator": creator,
        }
        data = await self._json(
            "POST", f"{self._art_path(project, artifact)}/versions", json_body=body
        )
        return CommitResult.from_json(data)

    async def set_alias(
        self, project: str, artifact: str, alias: str, number: int, *, expect: Expect = UNSET
    ) -> None:
        body: dict[str, Any] = {"version": int(number)}
        if expect is not UNSET:
            body["expect"] = expect
        await self._request(
            "PUT",
            f"{self._art_path(project, artifact)}/aliases/{_q(self._alias(alias))}",
            json_body=body,
        )

    async def delete_alias(
        self, project: str, artifact: str, alias: str, *, expect: Expect = UNSET
    ) -> None:
        body: dict[str, Any] = {} if expect is UNSET else {"expect": expect}
        await self._request(
            "DELETE",
            f"{self._art_path(project, artifact)}/aliases/{_q(self._alias(alias))}",
            json_body=body,
        )

    @staticmethod
    def _alias(alias: str) -> str:
        # 'latest' goes to the server, which refuses it with NotPermitted like any direct caller.
        return alias_name(alias, allow_latest=True)

    async def delete_version(
        self, project: str, artifact: str, number: int, *, force: bool = False
    ) -> None:
        await self._request(
            "DELETE",
            f"{self._art_path(project, artifact)}/versions/{int(number)}",
            params={"force": "true" if force else "false"},
        )

    async def blob_blocks(self, sha256: str, size: int) -> list[bytes]:
        resp = await self._request("GET", f"/v1/blobs/{sha256_hex(sha256)}/blocks")
        try:
            return split_block_digests(resp.content, size)
        except InvalidInput as e:
            raise ProtocolError(f"block digests of {sha256}: {e}") from None

    async def locate(self, sha256: str, *, refresh: bool = False) -> str:
        """The URL where this blob's bytes can be fetched.

        From the registry's URL template when it has one (no request per blob), else from
        ``/v1/blobs/locate``, cached until the URL expires. ``refresh`` always asks."""
        sha256_hex(sha256)
        if not refresh:
            cached = self._locations.get(sha256)
            if cached is not None:
                url, expires = cached
                if expires is None or expires - LOCATE_SLACK > time.time():
                    return url
            template = (await self._registry_info()).get("blob_url")
            if template:
                return str(template).replace("{sha256}", sha256)
        await self.locate_many([sha256])
        return self._locations[sha256][0]

    async def locate_many(self, digests: Iterable[str]) -> None:
        """Ask where many blobs are in one request (up to 10,000) and cache the answers;
        NotFound if any of them is not in the registry."""
        wanted = sorted({sha256_hex(d) for d in digests})
        for i in range(0, len(wanted), LOCATE_BATCH):
            batch = wanted[i : i + LOCATE_BATCH]
            data = await self._json("POST", "/v1/blobs/locate", json_body={"digests": batch})
            try:
                blobs = data["blobs"]
                for sha in batch:
                    entry = blobs.get(sha)
                    if entry is None:
                        raise NotFound(f"blob {sha} not found in the registry")
                    expires = entry.get("expires")
                    self._locations[sha] = (
                        str(entry["url"]),
                        None if expires is None else float(expires),
                    )
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise ProtocolError(f"malformed blob location: {e}") from None

    async def read_range(
        self, sha256: str, size: int, offset: int, length: int, sink: DataSink
    ) -> None:
        sha256_hex(sha256)
        if offset < 0 or length < 0 or offset + length > size:
            raise InvalidInput(f"range {offset}+{length} outside blob {sha256} of {size} bytes")
        if length == 0:
            return
        for attempt in range(2):
            url = await self.locate(sha256, refresh=attempt > 0)
            try:
                if url.startswith("http://"):
                    await self._raw.fetch(url, offset, length, size, sink)
                else:
                    await self._fetch_httpx(url, offset, length, size, sink)
                return
            except _Gone:
                if attempt:
                    raise NotFound(f"blob {sha256} not found at {url}") from None
        raise AssertionError("unreachable")

    async def _fetch_httpx(
        self, url: str, offset: int, length: int, size: int, sink: DataSink
    ) -> None:
        end = offset + length - 1
        try:
            async with self._http.stream(
                "GET", url, headers={"Range": f"bytes={offset}-{end}"}
            ) as resp:
                _check_range_status(
                    resp.status_code, resp.headers.get("content-range"), url, offset, length, size
                )
                got = 0
                async for chunk in resp.aiter_raw(HTTPX_CHUNK):
                    if got + len(chunk) > length:
                        raise ProtocolError(f"{url} sent more than the {length} bytes asked for")
                    got += len(chunk)
                    sink(chunk)
                if got != length:
                    raise Unavailable(f"download from {url} ended after {got} of {length} bytes")
        except httpx.TransportError as e:
            raise self._unavailable(url, e) from None

    async def aclose(self) -> None:
        await self._raw.aclose()
        await self._http.aclose()

    async def __aenter__(self) -> HttpRegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _Gone(Exception):
    """The data URL answered 403/404/410: its location may have expired or moved."""


def _check_range_status(
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
        raise _Gone(status)
    elif status >= 500:
        raise Unavailable(f"blob store answered HTTP {status} for {url}")
    else:
        raise ProtocolError(f"unexpected HTTP {status} from {url}")


class _RawRangeFetcher:
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

    async def fetch(self, url: str, offset: int, length: int, size: int, sink: DataSink) -> None:
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ProtocolError(f"invalid blob URL {url!r}")
        host, port = parts.hostname, parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        request_head = [
            ("Host", hostport),
            ("Range", f"bytes={offset}-{offset + length - 1}"),
            ("Accept-Encoding", "identity"),
            ("User-Agent", "artfs"),
        ]
        for attempt in range(2):
            stream, reused = await self._connect(url, host, port)
            delivered = False

            def deliver(data: bytes) -> None:
                nonlocal delivered
                delivered = True
                sink(data)

            try:
                keep = await self._exchange(
                    stream, url, target, request_head, offset, length, size, deliver
                )
            except (
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                OSError,
                h11.ProtocolError,
                _EarlyClose,
            ) as e:
                await stream.aclose()
                if reused and not delivered and attempt == 0:
                    continue  # a pooled connection the server had closed: retry on a fresh one
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

    async def _connect(self, url: str, host: str, port: int) -> tuple[trio.SocketStream, bool]:
        pool = self._idle.get((host, port))
        if pool:
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
            raise _EarlyClose("connection closed before a response")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        # Error statuses raise here (small bodies: the connection is simply closed).
        _check_range_status(
            event.status_code, headers.get("content-range"), url, offset, length, size
        )
        declared = headers.get("content-length")
        if declared is None or not declared.isdigit() or int(declared) != length:
            raise ProtocolError(f"{url} answered Content-Length {declared!r}, expected {length}")
        body, _ = conn.trailing_data
        if len(body) > length:
            raise ProtocolError(f"{url} sent more than the {length} bytes asked for")
        if body:
            sink(bytes(body))
        remaining = length - len(body)
        buf = memoryview(bytearray(min(RECV_BUFFER, remaining))) if remaining else None
        while remaining:
            assert buf is not None
            n = await self._recv(stream, url, buf[: min(len(buf), remaining)])
            assert isinstance(n, int)
            if n == 0:
                raise _EarlyClose(f"connection closed with {remaining} of {length} bytes to go")
            remaining -= n
            sink(bytes(buf[:n]))
        return event.http_version == b"1.1" and "close" not in headers.get("connection", "").lower()


class _EarlyClose(Exception):
    pass
