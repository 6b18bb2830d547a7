"""``HttpRegistryClient``: the registry over its HTTP/JSON API (docs/api.md).

One shared ``httpx.AsyncClient`` (trio) carries every call. Each call is bounded
by ``timeout``: connecting, each write and each wait for bytes; a stall longer
than that raises ``Unavailable`` naming the URL, as does a 5xx that isn't one of
our JSON errors (a dead proxy). Error bodies from the server are rebuilt into
the ``ArtfsError`` subclass they came from. Everything received is validated
(names, manifests, records) before it is handed on.

Blob bytes: ``read_range`` gets a URL per blob (from the ``blob_url`` template of
``GET /v1`` when the server's sendfile data port serves every blob, else from
``/v1/blobs/locate``: presigned store URLs, located in batches and cached until
they expire) and streams ranged GETs from there in large chunks. A 403/404/410
from the data URL refreshes the location; a connection cut mid-body is reopened;
either way the read resumes at the first byte not yet delivered. ``fetch_range`` does
the same around a transfer its caller supplies: the blob cache's fetch threads, which
receive, verify and store the bytes off the trio thread (``cache/fetchpool.py``).

A request that meets a pooled keep-alive connection the peer had closed (an idle timeout
firing as it is sent) is sent again once, on a new connection, if it is idempotent; a
commit or an upload is not (``resend.py``, the one rule for every path).

Modules: this one keeps the metadata calls; ``blobreads.py`` the blob reads and their resume
loop; ``locations.py`` where
blobs live (locate requests, their cache, directory hints); ``ranges.py`` the ranged GETs
themselves (on trio sockets, and blocking for worker threads); ``uploads.py`` uploads.

Uploads: when the server's data port takes them (``upload.put_url`` in ``GET /v1``),
one ``PUT`` there whose body goes from the file to the socket with ``os.sendfile``
(no byte through Python); when the server says so (``upload.presigned_min``),
presigned PUTs straight to the object store (multipart, several parts at once)
followed by a completion request the server answers only once it has verified
the bytes; otherwise ``PUT /v1/blobs/{sha}`` through the API.

Tokens: ``Authorization: Bearer <token>`` goes with every request to the registry's own
origins (its API and its data server, as ``GET /v1`` names it) and never anywhere else:
presigned store URLs carry their own signature, and a token must not leak to another host.
A 401/403 from an own origin is the registry's refusal (``Unauthorized``/``Forbidden``);
a 403 from a store URL means the URL expired and is located again.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit
from urllib.request import getproxies

import httpx
import trio

from ..auth import client_secret
from ..errors import (
    Forbidden,
    IntegrityError,
    InvalidInput,
    ProtocolError,
    Unauthorized,
    Unavailable,
    from_code,
)
from ..hashing import sha256_hex, split_block_digests
from ..lineage_graph import LineageGraph
from ..manifest import Manifest
from ..manifest_stream import FORMAT, MEDIA_TYPE, canonical_chunks
from ..models import ArtifactInfo, ProjectInfo, VersionInfo, VersionInput
from ..names import alias_name, artifact_name, parse_version, project_name
from .base import UNSET, DataSink, Expect
from .blobreads import BlobReads
from .http_meta import HttpMetaCalls
from .http_refs import RefsHttp
from .http_runs import RunsHttp
from .locations import BlobLocations
from .ranges import (
    RawRangeFetcher,
)
from .resend import RESENDS, ConnectionTrace
from .tags_search import HttpTagSearch
from .uploads import UPLOAD_MIN_RATE, put_file, upload_presigned

HTTPX_CHUNK = 1 << 20  # measured: larger aiter_raw chunks are slower (joins)
UPLOAD_CHUNK = 4 << 20
COMPRESS_OVER = 64 << 10


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL, the unit tokens are sent to."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if parts.hostname is None:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


def _q(segment: str) -> str:
    return quote(segment, safe="")


class HttpRegistryClient(
    RunsHttp, BlobLocations, HttpMetaCalls, RefsHttp, BlobReads, HttpTagSearch
):
    def __init__(self, base_url: str, *, timeout: float = 10.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        token = client_secret(token)
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._own = {o for o in [_origin(self.base_url)] if o is not None}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            follow_redirects=False,
        )
        self._fresh: httpx.AsyncClient | None = None  # no pool: for resends (resend.py)
        self._raw = RawRangeFetcher(timeout)
        self._info: dict[str, Any] | None = None
        self._init_locations()
        # httpx (the trio side) honours proxy settings; worker threads connect directly, so
        # they take https URLs only when no proxy is configured for them (http:// blob URLs
        # have always been fetched directly).
        proxies = getproxies()
        self._thread_schemes = {"http"} | (set() if {"https", "all"} & set(proxies) else {"https"})

    # --- plumbing -----------------------------------------------------------
    def _unavailable(self, url: str, e: Exception) -> Unavailable:
        kind = type(e).__name__
        detail = str(e) or kind
        return Unavailable(f"registry at {self.base_url} unreachable ({url}): {kind}: {detail}")

    def _raise_for(self, resp: httpx.Response, body: bytes) -> NoReturn:
        self._raise_status(resp.status_code, str(resp.request.url), body)

    def _raise_status(self, status: int, url: str, body: bytes) -> NoReturn:
        try:
            err = json.loads(body)["error"]
            code, message = str(err["code"]), str(err["message"])
        except (ValueError, KeyError, TypeError):
            if status in (401, 403):
                raise (Unauthorized if status == 401 else Forbidden)(
                    f"the registry at {self.base_url} refused the request (HTTP {status} "
                    f"for {url}): check ARTFS_TOKEN"
                ) from None
            if status >= 500:
                raise Unavailable(
                    f"registry at {self.base_url} answered HTTP {status} for {url} "
                    f"(not an artfs response: is a proxy in the way, or the server down?)"
                ) from None
            raise ProtocolError(f"unexpected HTTP {status} from {url}: {body[:200]!r}") from None
        if code in (Unauthorized.code, Forbidden.code):
            message = f"the registry at {self.base_url} refused the request: {message}"
        raise from_code(code, message)

    def _client_for(self, attempt: int) -> httpx.AsyncClient:
        """The shared pool for a first attempt; a resend goes on a new connection (a client
        that keeps none), so that it cannot meet another connection the peer closed."""
        if attempt == 0:
            return self._http
        if self._fresh is None:
            self._fresh = httpx.AsyncClient(
                timeout=self._http.timeout,
                limits=httpx.Limits(max_keepalive_connections=0),
                follow_redirects=False,
            )
        return self._fresh

    def _is_own(self, url: str) -> bool:
        """Whether ``url`` is on the registry's own API or data server (where tokens go)."""
        return _origin(url) in self._own

    def _headers_for(self, url: str) -> dict[str, str]:
        """The token, for URLs on the registry's own API or data server only."""
        return dict(self._auth) if self._auth and self._is_own(url) else {}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
        timeout: httpx.Timeout | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """``idempotent``: declares a POST read-only (resent after a closed pooled
        connection like a GET, ``resend.py``)."""
        url = self.base_url + path
        headers = dict(self._auth)
        content: bytes | None = None
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
            if len(content) > COMPRESS_OVER:
                content = await trio.to_thread.run_sync(gzip.compress, content, 1)
                headers["Content-Encoding"] = "gzip"
        for attempt in range(RESENDS + 1):
            seen = ConnectionTrace(attempt)
            try:
                resp = await self._client_for(attempt).request(
                    method,
                    url,
                    content=content,
                    params=params,
                    headers=headers,
                    timeout=timeout if timeout is not None else self._http.timeout,
                    extensions={"trace": seen},
                )
                break
            except httpx.TransportError as e:
                if not seen.resend(e, method, idempotent):
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
            upload = data.get("upload")
            put_url = upload.get("put_url") if isinstance(upload, dict) else None
            # The data server is the registry's too: tokens go there (and nowhere else).
            for url in (template, put_url):
                origin = _origin(url) if isinstance(url, str) else None
                if origin is not None:
                    self._own.add(origin)
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
            "GET", f"{self._art_path(project, artifact)}/versions/{int(number)}/manifest?refs=1"
        )
        raw = resp.content
        expected = resp.headers.get("x-artfs-digest")

        def parse() -> Manifest:
            try:
                data = json.loads(raw)
            except ValueError as e:
                raise ProtocolError(f"invalid manifest JSON from {resp.request.url}: {e}") from None
            try:
                manifest = Manifest.from_json(data, limits=False)
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

    async def fetch_manifest(
        self, project: str, artifact: str, number: int, sink: DataSink
    ) -> None:
        """The canonical form, streamed (``?format=canonical``); a registry that predates it
        answers JSON, which is parsed whole and handed on in canonical form."""
        path = f"{self._art_path(project, artifact)}/versions/{int(number)}/manifest"
        url = self.base_url + path
        try:
            async with self._http.stream(
                "GET", url, params={"format": FORMAT, "refs": "1"}, headers=dict(self._auth)
            ) as resp:
                if resp.status_code != 200:
                    self._raise_for(resp, await resp.aread())
                if resp.headers.get("content-type", "").split(";")[0].strip() != MEDIA_TYPE:
                    await resp.aread()
                    manifest = await self.get_manifest(project, artifact, number)
                    for chunk in canonical_chunks(manifest):
                        sink(chunk)
                    return
                async for chunk in resp.aiter_bytes(HTTPX_CHUNK):
                    sink(chunk)
        except httpx.TransportError as e:
            raise self._unavailable(url, e) from None

    async def missing_blobs(self, digests: Iterable[str]) -> set[str]:
        wanted = sorted({sha256_hex(d) for d in digests})
        if not wanted:
            return set()
        data = await self._json(
            "POST", "/v1/blobs/missing", json_body={"digests": wanted}, idempotent=True
        )
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
        upload = (await self._registry_info()).get("upload")
        presigned_min = upload.get("presigned_min") if isinstance(upload, dict) else None
        put_url = upload.get("put_url") if isinstance(upload, dict) else None
        if isinstance(presigned_min, int) and size >= presigned_min:
            await upload_presigned(self, sha256, path, size)
            return
        if isinstance(put_url, str) and "{sha256}" in put_url:
            await self._upload_sendfile(put_url.replace("{sha256}", sha256), path, size)
            return

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

    async def _upload_sendfile(self, url: str, path: Path, size: int) -> None:
        """One PUT to the data server; the body is ``os.sendfile``d from the file."""
        try:
            fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise InvalidInput(f"can't read {path}: {e.strerror}") from None
        try:
            # The server hashes as it receives and fsyncs at the end: allow for that.
            status, body = await put_file(
                url, fd, size, self.timeout, size / UPLOAD_MIN_RATE, self._headers_for(url)
            )
        finally:
            os.close(fd)
        if status not in (200, 201):
            self._raise_status(status, url, body)

    async def used_by(self, project: str, artifact: str, number: int) -> list[VersionInput]:
        path = f"{self._art_path(project, artifact)}/versions/{int(number)}/used-by"
        data = await self._json("GET", path)
        try:
            return [VersionInput.from_json(item) for item in data["used_by"]]
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"malformed used-by answer: {e}") from None

    async def lineage(
        self, project: str, artifact: str, number: int, *, up: int | None, down: int | None
    ) -> LineageGraph:
        path = f"{self._art_path(project, artifact)}/versions/{int(number)}/lineage"
        query = {k: "all" if v is None else str(v) for k, v in (("up", up), ("down", down))}
        return LineageGraph.from_json(await self._json("GET", path, params=query))

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

    async def report_damage(self, sha256: str, detail: str = "") -> str:
        data = await self._json(
            "POST",
            f"/v1/blobs/{sha256_hex(sha256)}/damage",
            json_body={"detail": detail[:500]},
            ok=(202,),  # accepted: the check runs on the server after the answer
            idempotent=True,  # a repeated report is one check (the server's gate)
        )
        return str(data.get("check", "")) if isinstance(data, dict) else ""

    async def blob_blocks(self, sha256: str, size: int) -> list[bytes]:
        resp = await self._request("GET", f"/v1/blobs/{sha256_hex(sha256)}/blocks")
        try:
            return split_block_digests(resp.content, size)
        except InvalidInput as e:
            raise ProtocolError(f"block digests of {sha256}: {e}") from None

    async def aclose(self) -> None:
        await self._raw.aclose()
        if self._fresh is not None:
            await self._fresh.aclose()
        await self._http.aclose()

    async def __aenter__(self) -> HttpRegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
