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
either way the read resumes at the first byte not yet delivered.

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
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

import h11
import httpx
import trio
from cachetools import LRUCache

from ..auth import client_secret
from ..errors import (
    ArtfsError,
    Forbidden,
    IntegrityError,
    InvalidInput,
    NotFound,
    ProtocolError,
    Unauthorized,
    Unavailable,
    from_code,
)
from ..hashing import sha256_hex, split_block_digests
from ..lineage import parse_inputs
from ..manifest import Manifest
from ..models import ArtifactInfo, CommitResult, ProjectInfo, VersionInfo, VersionInput
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
HINTS_PER_LOCATE = 1_000  # hinted digests added to one locate request
HINTS_KEPT = 20_000  # hinted digests remembered until a locate request takes them
UPLOAD_MIN_RATE = (
    20 << 20
)  # bytes/s the server must at least sustain before a stalled upload is given up
UPLOAD_PARALLEL_PARTS = 4  # presigned multipart uploads: parts in flight at once
PART_ATTEMPTS = 3
RESUMES = 3  # a range read interrupted this many times without progress gives up
EXPECT_CONTINUE_OVER = 1 << 20  # uploads from this size ask first (Expect: 100-continue)
REFUSAL_BODY_MAX = 64 << 10  # the error body of a refused blob request read at most


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


class HttpRegistryClient:
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
        self._raw = _RawRangeFetcher(timeout)
        self._locations: LRUCache[str, tuple[str, float | None]] = LRUCache(LOCATIONS_KEPT)
        self._info: dict[str, Any] | None = None
        self._pending: set[str] = set()  # digests waiting for the next locate request
        self._hinted: OrderedDict[str, None] = OrderedDict()  # likely reads, oldest first
        self._flight: _LocateFlight | None = None

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

    def _headers_for(self, url: str) -> dict[str, str]:
        """The token, for URLs on the registry's own API or data server only."""
        return dict(self._auth) if self._auth and _origin(url) in self._own else {}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
        timeout: httpx.Timeout | None = None,
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
                method,
                url,
                content=content,
                params=params,
                headers=headers,
                timeout=timeout if timeout is not None else self._http.timeout,
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
        upload = (await self._registry_info()).get("upload")
        presigned_min = upload.get("presigned_min") if isinstance(upload, dict) else None
        put_url = upload.get("put_url") if isinstance(upload, dict) else None
        if isinstance(presigned_min, int) and size >= presigned_min:
            await self._upload_presigned(sha256, path, size)
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
            status, body = await _put_file(
                url, fd, size, self.timeout, size / UPLOAD_MIN_RATE, self._headers_for(url)
            )
        finally:
            os.close(fd)
        if status not in (200, 201):
            self._raise_status(status, url, body)

    async def _upload_presigned(self, sha256: str, path: Path, size: int) -> None:
        """Upload straight to the object store: ask for presigned URLs, PUT the parts (several
        at once), then ask the server to verify and complete (docs/api.md, "Blobs")."""
        plan = await self._json(
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
                timeout = httpx.Timeout(self.timeout, read=self.timeout + length / UPLOAD_MIN_RATE)
                for attempt in range(PART_ATTEMPTS):
                    try:
                        resp = await self._http.put(
                            url,
                            content=data,
                            headers={"Content-Length": str(length)},
                            timeout=timeout,
                        )
                    except httpx.TransportError as e:
                        if attempt + 1 < PART_ATTEMPTS:
                            continue
                        raise self._unavailable(url.split("?", 1)[0], e) from None
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
            raise _single(group) from None
        finally:
            await trio.to_thread.run_sync(f.close)
        # The server reads the object once to verify it: allow for that before its answer.
        timeout = httpx.Timeout(self.timeout, read=self.timeout + 2 * size / UPLOAD_MIN_RATE)
        await self._request(
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
        inputs: Iterable[str] = (),
    ) -> CommitResult:
        body = {
            "manifest": manifest.to_json(),
            "metadata": metadata or {},
            "description": description,
            "aliases": [alias_name(a, allow_latest=True) for a in aliases],
            "parent": parent,
            "creator": creator,
            "inputs": [str(ref) for ref in parse_inputs(list(inputs))],
        }
        data = await self._json(
            "POST", f"{self._art_path(project, artifact)}/versions", json_body=body
        )
        return CommitResult.from_json(data)

    async def used_by(self, project: str, artifact: str, number: int) -> list[VersionInput]:
        path = f"{self._art_path(project, artifact)}/versions/{int(number)}/used-by"
        data = await self._json("GET", path)
        try:
            return [VersionInput.from_json(item) for item in data["used_by"]]
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"malformed used-by answer: {e}") from None

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
        ``/v1/blobs/locate``, cached until the URL expires. Concurrent callers share one
        request: while a locate request is in flight, digests asked for meanwhile are
        collected and sent together in the next one. ``refresh`` always asks."""
        sha256_hex(sha256)
        if not refresh:
            cached = self._fresh_location(sha256)
            if cached is not None:
                return cached
            template = (await self._registry_info()).get("blob_url")
            if template:
                return str(template).replace("{sha256}", sha256)
        asked = False
        stale = self._locations.get(sha256, ("", None))[0] if refresh else None
        while True:
            cached = self._fresh_location(sha256) if asked else None
            if cached is not None and cached != stale:
                return cached  # answered by a request that left after we asked
            flight = self._flight
            if flight is not None and sha256 in flight.digests:
                await flight.done.wait()
                if flight.completed:
                    return flight.result(sha256)
                continue  # its leader was cancelled: ask again
            self._pending.add(sha256)
            asked = True
            if flight is not None:
                await flight.done.wait()
                if sha256 not in self._pending:  # taken by a flight that has since finished
                    continue
                if self._flight is not None:
                    continue
            # Lead a request for everything pending (this digest included) and hinted.
            batch = sorted(self._pending)[:LOCATE_BATCH]
            if sha256 not in batch:
                batch[-1] = sha256
            self._pending.difference_update(batch)
            batch.extend(self._take_hints(batch))
            flight = self._flight = _LocateFlight(batch)
            try:
                flight.found, flight.missing = await self._locate_batch(batch)
                flight.completed = True
            except ArtfsError as e:
                flight.error = e
                flight.completed = True
            finally:
                self._flight = None
                flight.done.set()
            return flight.result(sha256)

    def hint_blobs(self, digests: Sequence[str]) -> None:
        """Remember blobs likely to be read soon; the next locate request carries them.

        Costs no request of its own: a listing that is never read locates nothing, and the
        first read of a directory's small files locates up to ``HINTS_PER_LOCATE`` of them
        in the request it needs anyway (the server presigns locally, a few µs per URL).
        Digests with a fresh location are skipped; with a URL template this does nothing.
        """
        if self._info is not None and self._info.get("blob_url"):
            return
        hinted = self._hinted
        for sha in digests:
            if sha not in hinted and self._fresh_location(sha) is None:
                try:
                    hinted[sha256_hex(sha)] = None  # a bad digest would fail a whole request
                except InvalidInput:
                    continue
        while len(hinted) > HINTS_KEPT:
            hinted.popitem(last=False)

    def _take_hints(self, batch: list[str]) -> list[str]:
        """Hinted digests (oldest first) to add to a locate request for ``batch``."""
        for sha in batch:
            self._hinted.pop(sha, None)
        room = min(HINTS_PER_LOCATE, LOCATE_BATCH - len(batch))
        taken: list[str] = []
        while self._hinted and len(taken) < room:
            sha = self._hinted.popitem(last=False)[0]
            if sha not in self._pending and self._fresh_location(sha) is None:
                taken.append(sha)
        return taken

    def _fresh_location(self, sha256: str) -> str | None:
        cached = self._locations.get(sha256)
        if cached is not None:
            url, expires = cached
            if expires is None or expires - LOCATE_SLACK > time.time():
                return url
        return None

    async def _locate_batch(self, batch: list[str]) -> tuple[dict[str, str], set[str]]:
        """One ``/v1/blobs/locate`` request; caches and returns the URLs found and the
        digests the registry doesn't hold."""
        data = await self._json("POST", "/v1/blobs/locate", json_body={"digests": batch})
        found: dict[str, str] = {}
        try:
            blobs = data["blobs"]
            for sha in batch:
                entry = blobs.get(sha)
                if entry is None:
                    continue
                expires = entry.get("expires")
                url = str(entry["url"])
                self._locations[sha] = (url, None if expires is None else float(expires))
                found[sha] = url
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProtocolError(f"malformed blob location: {e}") from None
        return found, set(batch) - set(found)

    async def locate_many(self, digests: Iterable[str]) -> None:
        """Ask where many blobs are in one request (up to 10,000) and cache the answers;
        NotFound if any of them is not in the registry."""
        wanted = sorted({sha256_hex(d) for d in digests})
        for i in range(0, len(wanted), LOCATE_BATCH):
            _, missing = await self._locate_batch(wanted[i : i + LOCATE_BATCH])
            if missing:
                raise NotFound(f"blob {min(missing)} not found in the registry")

    async def read_range(
        self, sha256: str, size: int, offset: int, length: int, sink: DataSink
    ) -> None:
        """Stream ``length`` bytes at ``offset`` into ``sink``.

        A URL that stops working (expired presigned URL: 403; moved: 404/410) is located
        again, and a connection cut mid-body is reopened; either way the read resumes at the
        first byte not yet delivered, so ``sink`` sees every byte exactly once."""
        sha256_hex(sha256)
        if offset < 0 or length < 0 or offset + length > size:
            raise InvalidInput(f"range {offset}+{length} outside blob {sha256} of {size} bytes")
        done = 0

        def counted(data: bytes) -> None:
            nonlocal done
            sink(data)
            done += len(data)

        refresh = False
        stuck = 0
        await self._registry_info()  # knows the data server's origin (where tokens go)
        while done < length:
            url = await self.locate(sha256, refresh=refresh)
            before = done
            headers = self._headers_for(url)
            own = _origin(url) in self._own
            try:
                if url.startswith("http://"):
                    await self._raw.fetch(
                        url, offset + done, length - done, size, counted, headers, own
                    )
                else:
                    await self._fetch_httpx(
                        url, offset + done, length - done, size, counted, headers, own
                    )
                return
            except _Refused as e:
                self._raise_status(e.status, url.split("?", 1)[0], e.body)
            except _Gone as e:
                what = f"blob {sha256} not found at {url.split('?', 1)[0]} (HTTP {e.status})"
                refresh = True
            except _Cut as e:
                what = str(e)
                refresh = self._locations.get(sha256, ("", None))[1] is not None
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
        end = offset + length - 1
        got = 0
        try:
            async with self._http.stream(
                "GET", url, headers={**(headers or {}), "Range": f"bytes={offset}-{end}"}
            ) as resp:
                if _refused(resp.status_code, own):
                    body = b""
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > REFUSAL_BODY_MAX:
                            break
                    raise _Refused(resp.status_code, body)
                _check_range_status(
                    resp.status_code, resp.headers.get("content-range"), url, offset, length, size
                )
                async for chunk in resp.aiter_raw(HTTPX_CHUNK):
                    if got + len(chunk) > length:
                        raise ProtocolError(f"{url} sent more than the {length} bytes asked for")
                    got += len(chunk)
                    sink(chunk)
                if got != length:
                    raise _Cut(f"download from {url} ended after {got} of {length} bytes")
        except httpx.TimeoutException as e:
            raise self._unavailable(url, e) from None
        except httpx.TransportError as e:
            if got:
                raise _Cut(f"download from {url} cut after {got} of {length} bytes: {e}") from None
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

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Cut(Exception):
    """The connection ended mid-body after some bytes were delivered: resume after them."""


class _Refused(Exception):
    """The registry's data server refused a blob request (401/403): its error body."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _refused(status: int, own: bool) -> bool:
    """A refusal by the registry itself. A 403 from a store (presigned) URL means it expired."""
    return own and status in (401, 403)


class _LocateFlight:
    """One ``/v1/blobs/locate`` request in flight and the digests it carries."""

    def __init__(self, digests: list[str]) -> None:
        self.digests = set(digests)
        self.done = trio.Event()
        self.completed = False
        self.found: dict[str, str] = {}
        self.missing: set[str] = set()
        self.error: ArtfsError | None = None

    def result(self, sha256: str) -> str:
        if self.error is not None:
            raise self.error
        if sha256 in self.found:
            return self.found[sha256]
        raise NotFound(f"blob {sha256} not found in the registry")


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside (nested) groups, so callers see e.g. Unavailable itself."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    return leaf


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
        ``own``: a 401/403 is the registry's refusal (``_Refused``), not an expired URL."""
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ProtocolError(f"invalid blob URL {url!r}")
        host, port = parts.hostname, parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request_head = [
            # As written in the URL: presigned URLs sign the Host header, port included or not.
            ("Host", parts.netloc.rsplit("@", 1)[-1]),
            ("Range", f"bytes={offset}-{offset + length - 1}"),
            ("Accept-Encoding", "identity"),
            ("User-Agent", "artfs"),
            *(headers or {}).items(),
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
                    stream, url, target, request_head, offset, length, size, deliver, own
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
                if delivered:
                    raise _Cut(f"download from {url} cut: {type(e).__name__}: {e}") from None
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
            raise _EarlyClose("connection closed before a response")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        if _refused(event.status_code, own):
            raise _Refused(event.status_code, await self._small_body(stream, url, conn))
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


class _EarlyClose(Exception):
    pass


class _FileBody:
    """A body h11 only counts (``send_with_data_passthrough``); the bytes go by sendfile."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


SENDFILE_STEP = 8 << 20  # bytes per sendfile call (in a worker thread: cold files block)


async def _await_continue(
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


async def _put_file(
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
                early = await _await_continue(stream, conn, url)
            if early is not None:
                return early
            for _ in conn.send_with_data_passthrough(h11.Data(data=_FileBody(size))) or []:  # type: ignore[arg-type]
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
