"""The HTTP/JSON API of the registry (Starlette, served by Hypercorn's trio worker).

Routes and bodies are documented in docs/api.md. Every handler is thin: parse
the request, run the blocking ``Registry`` call in a worker thread
(``trio.to_thread``, so the event loop never stalls on SQLite or the disk),
and render the result. ``ArtfsError`` becomes ``{"error": {"code", "message"}}``
with the class's ``http_status`` in exactly one place, ``requestio.error_response``
(request parsing lives there too).

Blob *bytes* are not served here: ``/v1/blobs/locate`` hands out URLs on the
zero-copy data server (``blobserver.py``), or presigned store URLs (S3). With S3, large
uploads also bypass the server: ``/v1/blobs/uploads`` hands out presigned PUT URLs and
``/v1/blobs/uploads/complete`` verifies the object before it becomes a blob.

Every route but ``GET /v1`` is wrapped by ``guarded``: the request's token becomes a
``Principal`` (``server/auth.py``) and the route's ``Need`` is checked before the handler
runs (rights per route: docs/api.md, "Authentication").
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..auth import ADMIN, READ, WRITE, Principal
from ..errors import Forbidden, InvalidInput, NotFound, Unauthorized
from ..hashing import BLOCK_SIZE, sha256_hex
from ..lineage import parse_inputs, visible_lineage
from ..lineage_graph import hops
from ..manifest import Manifest
from ..manifest_stream import FORMAT, MEDIA_TYPE
from ..models import CommitResult
from ..registry import Registry
from ..registry.uploads import parse_etags
from .auth import Authenticator
from .limits import DEFAULT_LIMITS, ServerLimits, UploadSlots, paced_receive
from .meta_routes import is_admin, meta_routes
from .refs_routes import refs_routes
from .requestio import (
    OLD_CLIENT,
    exception_handlers,
    expect_field,
    has_refs,
    json_body,
    json_flag,
    json_object,
    number_param,
    query_flag,
    run,
    selector_param,
    single_error,
)
from .runs_api import run_routes
from .signing import DEFAULT_LIFETIME, UrlSigner
from .tags_api import tag_routes
from .ui import ui_routes

T = TypeVar("T")
log = logging.getLogger("artfs.server")

UPLOAD_FLUSH = 4 << 20
UPLOAD_QUEUE = 4
LOCATE_MAX = 10_000
REFUSED_DRAIN_MAX = 8 << 20  # a refused request's body is read (and dropped) up to this size
BlobBaseUrl = Callable[[Request], str]
"""Where the data server is, as seen by the client that sent this request."""


# --- the app ------------------------------------------------------------------------
class _CountRequests:
    """ASGI wrapper counting API requests (``/v1/stats`` itself excluded)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") != "/v1/stats":
            self.requests += 1
        await self.app(scope, receive, send)


Need = Callable[[Request, Principal], None]
"""What a route asks of the request's principal; raises Forbidden when it lacks it."""


def on_project(right: str) -> Need:
    """``right`` on the project named in the path."""

    def need(request: Request, who: Principal) -> None:
        who.require(right, request.path_params["project"])

    return need


def on_any_project(right: str, what: str) -> Need:
    """``right`` on at least one project: blob routes (blobs are shared by all projects)."""

    def need(request: Request, who: Principal) -> None:
        who.require_any(right, what)

    return need


def any_token(request: Request, who: Principal) -> None:
    """A valid token, whatever its rights (the handler filters or checks the body)."""


async def _drain(request: Request) -> None:
    """Read and drop a refused request's body (up to ``REFUSED_DRAIN_MAX``), so a client
    still sending it reads the error instead of a reset connection."""
    if request.method not in ("POST", "PUT"):
        return
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > REFUSED_DRAIN_MAX:
        return
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > REFUSED_DRAIN_MAX:
                return
    except ClientDisconnect:
        return


def create_app(
    registry: Registry,
    blob_base_url: BlobBaseUrl,
    extra_stats: Callable[[], dict[str, int]] = dict,
    authenticator: Authenticator | None = None,
    signer: UrlSigner | None = None,
    url_lifetime: float = DEFAULT_LIFETIME,
    *,
    limits: ServerLimits = DEFAULT_LIMITS,
    report_damage: Callable[[str, str], str] | None = None,
) -> _CountRequests:
    """The ASGI app. ``extra_stats`` adds counters of other parts (the data server) to
    ``GET /v1/stats``. ``authenticator``: who may do what (None: everyone everything).
    ``signer``: data-server URLs handed out by locate are signed (tokens required; then
    ``GET /v1`` has no ``blob_url`` template); ``url_lifetime``: seconds those URLs, and
    presigned store URLs, stay valid. ``limits``: concurrent uploads and the slowest
    accepted upload body (limits.py). ``report_damage(sha, detail)``: start a re-check of a
    blob a client found damaged (``server/integrity.py``), answering what happened; None:
    reports are only counted."""
    r = registry
    upload_slots = UploadSlots(limits.max_uploads, limits.upload_wait)
    uploaded = 0
    auth = authenticator or Authenticator(lambda key: None, enabled=False)

    def guarded(handler: Callable[[Request], Awaitable[Response]], need: Need) -> Any:
        """``handler`` behind the token check: 401 without a valid token, 403 when the
        token lacks what ``need`` asks; the principal is in ``request.state.principal``."""

        async def endpoint(request: Request) -> Response:
            try:
                who = await auth.principal(request.headers.get("authorization"))
                need(request, who)
            except (Unauthorized, Forbidden):
                await _drain(request)
                raise
            request.state.principal = who
            return await handler(request)

        return endpoint

    def principal(request: Request) -> Principal:
        who = request.state.principal
        assert isinstance(who, Principal)
        return who

    async def root(request: Request) -> Response:
        # When the data server serves every blob, clients build blob URLs from this template
        # and need no locate request per blob (presigned stores answer null: ask locate).
        data_url = None if r.blobs.presigns else f"{blob_base_url(request)}/blobs/{{sha256}}"
        # With tokens, reads need signed URLs from locate: no template (docs/api.md).
        template = data_url if signer is None else None
        # How to upload: PUT to the data server when it serves every blob ("put_url", the
        # fast path), presigned uploads from this size on ("presigned_min"), else (null)
        # PUT /v1/blobs/{sha}.
        presigned_min = r.presigned_upload_min()
        upload: dict[str, Any] | None = None
        if presigned_min is not None:
            upload = {"presigned_min": presigned_min}
        elif data_url is not None:
            upload = {"put_url": data_url}
        return JSONResponse(
            {
                "registry_id": r.registry_id(),
                "block_size": BLOCK_SIZE,
                "api": 1,
                "blob_url": template,
                "upload": upload,
            }
        )

    async def stats(request: Request) -> Response:
        extra = extra_stats()
        # Uploads arrive through this API and through the data server: count both.
        received = uploaded + extra.pop("blob_bytes_received", 0)
        counters = {"requests": counted.requests, "blob_bytes_received": received, **extra}
        return JSONResponse(counters, headers={"Cache-Control": "no-store"})

    async def list_projects(request: Request) -> Response:
        who = principal(request)
        projects = [p for p in await run(r.list_projects) if who.can(READ, p.name)]
        return JSONResponse({"projects": [p.to_json() for p in projects]})

    async def create_project(request: Request) -> Response:
        body = json_object(await json_body(request))
        name = body.get("name")
        if isinstance(name, str):  # (an invalid name is refused by the registry as such)
            principal(request).require(WRITE, name)
        elif not principal(request).unrestricted:
            raise InvalidInput(f"invalid project name {name!r}")
        project = await run(
            r.create_project,
            body.get("name"),
            exist_ok=json_flag(body.get("exist_ok", False), "exist_ok"),
        )
        return JSONResponse(project.to_json(), status_code=201)

    async def get_project(request: Request) -> Response:
        project = await run(r.get_project, request.path_params["project"])
        return JSONResponse(project.to_json())

    async def list_artifacts(request: Request) -> Response:
        arts = await run(r.list_artifacts, request.path_params["project"])
        return JSONResponse({"artifacts": [a.to_json() for a in arts]})

    async def create_artifact(request: Request) -> Response:
        body = json_object(await json_body(request))
        art = await run(
            r.create_artifact,
            request.path_params["project"],
            body.get("name"),
            type=body.get("type"),
            description=body.get("description", ""),
            exist_ok=json_flag(body.get("exist_ok", False), "exist_ok"),
        )
        return JSONResponse(art.to_json(), status_code=201)

    async def get_artifact(request: Request) -> Response:
        p = request.path_params
        art = await run(r.get_artifact, p["project"], p["artifact"])
        return JSONResponse(art.to_json(), headers={"Cache-Control": "no-cache"})

    async def commit(request: Request) -> Response:
        p = request.path_params
        body = json_object(await json_body(request))
        if "manifest" not in body:
            raise InvalidInput("commit body needs a 'manifest'")
        aliases = body.get("aliases", [])
        if not isinstance(aliases, list):
            raise InvalidInput("'aliases' must be a list of names")
        who = principal(request)
        refs = parse_inputs(body.get("inputs"))
        for ref in refs:  # naming a version as an input reveals it: needs read on its project
            who.require(READ, ref.project)
        inputs = [str(ref) for ref in refs]
        # observed by a mount: ones this token may not read are dropped, not refused
        can_read = readable(who)
        observed = [
            str(o) for o in parse_inputs(body.get("observed_inputs")) if can_read(o.project)
        ]

        def work() -> Any:
            manifest = Manifest.from_json(body["manifest"])
            # A blob only other projects reference needs its bytes first (an upload).
            r.require_possession(who, manifest.stored_blobs())
            return r.commit(
                p["project"],
                p["artifact"],
                manifest,
                metadata=body.get("metadata"),
                description=body.get("description", ""),
                aliases=aliases,
                parent=body.get("parent"),
                creator=body.get("creator", ""),
                inputs=inputs,
                observed_inputs=observed,
                tags=body.get("tags", []),
                ttl=body.get("ttl"),
                allow_duplicate=json_flag(body.get("allow_duplicate", False), "allow_duplicate"),
                admin=is_admin(request),
                create_type=body.get("create_type"),
            )

        result = await run(work)
        shown = CommitResult(visible_lineage(result.version, readable(who)), result.created)
        return JSONResponse(shown.to_json(), status_code=201 if result.created else 200)

    async def get_version(request: Request) -> Response:
        p = request.path_params
        selector = selector_param(p["selector"])
        info = await run(r.get_version, p["project"], p["artifact"], selector)
        info = visible_lineage(info, readable(principal(request)))
        # Aliases move, and description, metadata, tags and TTL are editable: never cached
        # without asking (the manifest route is the immutable one).
        return JSONResponse(info.to_json(), headers={"Cache-Control": "no-cache"})

    async def used_by(request: Request) -> Response:
        p = request.path_params
        number = number_param(p["selector"])
        who = principal(request)
        found = await run(r.used_by, p["project"], p["artifact"], number)
        visible = [v.to_json() for v in found if who.can(READ, v.project)]
        return JSONResponse({"used_by": visible})

    async def lineage(request: Request) -> Response:
        """The whole subgraph in one answer (docs/decisions.md, "Lineage graph"): isolation
        is applied inside the walk, which stops at what this token may not read."""
        p, q = request.path_params, request.query_params
        up, down = hops(q.get("up"), "up"), hops(q.get("down"), "down")
        number = number_param(p["selector"])
        who = readable(principal(request))
        graph = await run(
            r.lineage, p["project"], p["artifact"], number, up=up, down=down, can_read=who
        )
        return JSONResponse(graph.to_json())

    async def delete_version(request: Request) -> Response:
        p = request.path_params
        await run(
            r.delete_version,
            p["project"],
            p["artifact"],
            number_param(p["selector"]),
            force=query_flag(request, "force"),
            admin=is_admin(request),
        )
        return Response(status_code=204)

    async def get_manifest(request: Request) -> Response:
        p = request.path_params
        fmt = request.query_params.get("format", "json")
        if fmt not in ("json", FORMAT):
            raise InvalidInput(f"unknown manifest format {fmt!r}: 'json' or '{FORMAT}'")
        number = number_param(p["number"])
        if fmt == FORMAT:  # stored at commit (schema 11): no conversion per request
            digest, refs, data = await run(
                r.manifest_canonical_gz, p["project"], p["artifact"], number
            )
        else:
            digest, data = await run(r.manifest_gz, p["project"], p["artifact"], number)
            refs = await run(has_refs, data)
        if not query_flag(request, "refs") and refs:
            raise InvalidInput(OLD_CLIENT)  # it would read the ref's bytes from us: refuse
        headers = {
            "ETag": f'"{digest}"' if fmt == "json" else f'"{digest}-{fmt}"',
            "X-Artfs-Digest": digest,
            "Cache-Control": "public, max-age=31536000, immutable",
            "Vary": "Accept-Encoding",
        }
        gzipped = "gzip" in request.headers.get("accept-encoding", "").lower()
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        else:
            data = await run(gzip.decompress, data)
        media = MEDIA_TYPE if fmt == FORMAT else "application/json"
        return Response(data, media_type=media, headers=headers)

    async def set_alias(request: Request) -> Response:
        p = request.path_params
        body = json_object(await json_body(request))
        version = body.get("version")
        if isinstance(version, str):
            version = number_param(version)
        await run(
            r.set_alias,
            p["project"],
            p["artifact"],
            p["alias"],
            version,
            expect=expect_field(body),
            admin=is_admin(request),
        )
        return Response(status_code=204)

    async def delete_alias(request: Request) -> Response:
        p = request.path_params
        body = json_object(await json_body(request))
        expect = expect_field(body)
        if "expect" in request.query_params:
            q = request.query_params["expect"]
            expect = None if q in ("none", "null") else number_param(q)
        await run(
            r.delete_alias,
            p["project"],
            p["artifact"],
            p["alias"],
            expect=expect,
            admin=is_admin(request),
        )
        return Response(status_code=204)

    async def missing_blobs(request: Request) -> Response:
        digests = json_object(await json_body(request)).get("digests")
        if not isinstance(digests, list):
            raise InvalidInput("'digests' must be a list of sha256")
        who = principal(request)

        def work() -> set[str]:
            # A blob the token can't see is "missing" whether the store holds it or not: the
            # client uploads it, which proves it has the bytes (the store keeps one copy).
            wanted = {sha256_hex(d) for d in digests}
            return r.missing_blobs(wanted) | (wanted - r.visible_blobs(who, wanted))

        missing = await run(work)
        return JSONResponse({"missing": sorted(missing)})

    async def put_blob(request: Request) -> Response:
        sha = sha256_hex(request.path_params["sha"])
        declared = request.headers.get("content-length")
        size = int(declared) if declared is not None and declared.isdigit() else None
        slot = object()
        await upload_slots.acquire(slot)  # Unavailable (503) after limits.upload_wait
        try:
            return await receive_blob(request, sha, size)
        finally:
            upload_slots.release(slot)

    async def receive_blob(request: Request, sha: str, size: int | None) -> Response:
        nonlocal uploaded
        writer = await run(r.blob_writer, sha, size, principal(request))
        try:
            # Receive the next chunks while a worker thread hashes and writes the previous ones.
            send, receive = trio.open_memory_channel[bytearray](UPLOAD_QUEUE)

            async def consume() -> None:
                async with receive:
                    async for data in receive:
                        await run(writer.write, data)

            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(consume)
                    async with send:
                        buf = bytearray()
                        async for chunk in paced_receive(request.receive, limits.pacer()):
                            uploaded += len(chunk)
                            buf += chunk
                            if len(buf) >= UPLOAD_FLUSH:
                                await send.send(buf)
                                buf = bytearray()
                        if buf:
                            await send.send(buf)
            except BaseExceptionGroup as group:
                raise single_error(group) from None
            created = await run(writer.finish)
        except BaseException:
            writer.abort()
            raise
        created = await run(r.record_upload, principal(request), sha, created)
        size = await run(r.blob_size, sha)
        return JSONResponse(
            {"sha256": sha, "size": size, "created": created}, status_code=201 if created else 200
        )

    async def begin_upload(request: Request) -> Response:
        body = json_object(await json_body(request))
        plan = await run(r.begin_upload, body.get("sha256"), body.get("size"), principal(request))
        return JSONResponse(plan.to_json(), status_code=201)

    async def complete_upload(request: Request) -> Response:
        body = json_object(await json_body(request))
        sha = sha256_hex(str(body.get("sha256", "")))
        created = await run(
            r.complete_upload,
            sha,
            body.get("size"),
            body.get("key"),
            body.get("multipart_id"),
            parse_etags(body.get("parts")),
            principal(request),
        )
        created = await run(r.record_upload, principal(request), sha, created)
        size = await run(r.blob_size, sha)
        return JSONResponse(
            {"sha256": sha, "size": size, "created": created}, status_code=201 if created else 200
        )

    async def blob_blocks(request: Request) -> Response:
        sha = sha256_hex(request.path_params["sha"])
        raw = await run(_visible_blocks, principal(request), sha)
        return Response(
            raw,
            media_type="application/octet-stream",
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    def _visible_blocks(who: Principal, sha: str) -> bytes:
        if sha not in r.visible_blobs(who, [sha]):
            raise NotFound(f"blob {sha} not found")  # as if absent: says nothing of others
        return r.blob_blocks(sha)

    async def damage(request: Request) -> Response:
        sha = sha256_hex(request.path_params["sha"])
        body = json_object(await json_body(request))  # an empty body is {}
        detail = body.get("detail", "")
        if not isinstance(detail, str):
            raise InvalidInput("'detail' must be a string")
        detail = "".join(ch for ch in detail[:500] if ch.isprintable())
        if sha not in await run(r.visible_blobs, principal(request), [sha]):
            # a blob no readable project references: no check (a token must not make the
            # server re-hash others' blobs) and an answer that says nothing of it
            return JSONResponse({"sha256": sha, "check": "limited"}, status_code=202)
        answer = report_damage(sha, detail) if report_damage is not None else "limited"
        return JSONResponse({"sha256": sha, "check": answer}, status_code=202)

    def _locations(
        request: Request, digests: list[str], who: Principal
    ) -> tuple[dict[str, Any], list[str]]:
        """Where each blob ``who`` may see is (blobs it may not see are "missing", as if the
        store did not hold them): signed data-server URLs, presigned store URLs, or (auth
        off) plain data-server URLs."""
        base = blob_base_url(request)
        found: dict[str, Any] = {}
        visible = r.visible_blobs(who, digests)
        for sha, size in r.blobs.sizes([d for d in digests if d in visible]).items():
            presigned = r.blobs.presign(sha, int(url_lifetime))
            if presigned is not None:
                found[sha] = {"url": presigned[0], "size": size, "expires": presigned[1]}
            elif signer is not None:
                query, expires = signer.sign(sha)
                found[sha] = {
                    "url": f"{base}/blobs/{sha}?{query}",
                    "size": size,
                    "expires": expires,
                }
            else:
                found[sha] = {"url": f"{base}/blobs/{sha}", "size": size, "expires": None}
        return found, sorted(set(digests) - set(found))

    async def locate_blobs(request: Request) -> Response:
        digests = json_object(await json_body(request)).get("digests")
        if not isinstance(digests, list) or len(digests) > LOCATE_MAX:
            raise InvalidInput(f"'digests' must be a list of at most {LOCATE_MAX} sha256")
        wanted = [sha256_hex(d) for d in digests]
        found, missing = await run(_locations, request, wanted, principal(request))
        return JSONResponse({"blobs": found, "missing": missing})

    async def get_blob(request: Request) -> Response:
        sha = sha256_hex(request.path_params["sha"])
        found, _ = await run(_locations, request, [sha], principal(request))
        if sha not in found:
            raise NotFound(f"blob {sha} not found")
        return RedirectResponse(found[sha]["url"], status_code=307)

    def readable(who: Principal) -> Callable[[str], bool]:
        return lambda project: who.can(READ, project)

    art = "/v1/projects/{project}/artifacts/{artifact}"
    read, write = on_project(READ), on_project(WRITE)
    blob_read = on_any_project(READ, "reading blobs")
    blob_write = on_any_project(WRITE, "uploading blobs")
    routes = [
        Route("/v1", root, methods=["GET"]),  # discovery: the only route without a token
        Route("/v1/stats", guarded(stats, any_token), methods=["GET"]),
        Route("/v1/projects", guarded(list_projects, any_token), methods=["GET"]),
        Route("/v1/projects", guarded(create_project, any_token), methods=["POST"]),
        Route("/v1/projects/{project}", guarded(get_project, read), methods=["GET"]),
        Route("/v1/projects/{project}/artifacts", guarded(list_artifacts, read), methods=["GET"]),
        Route(
            "/v1/projects/{project}/artifacts",
            guarded(create_artifact, write),
            methods=["POST"],
        ),
        Route(art, guarded(get_artifact, read), methods=["GET"]),
        Route(f"{art}/versions", guarded(commit, write), methods=["POST"]),
        Route(f"{art}/versions/{{selector}}", guarded(get_version, read), methods=["GET"]),
        Route(f"{art}/versions/{{selector}}", guarded(delete_version, write), methods=["DELETE"]),
        Route(f"{art}/versions/{{selector}}/used-by", guarded(used_by, read), methods=["GET"]),
        Route(f"{art}/versions/{{selector}}/lineage", guarded(lineage, read), methods=["GET"]),
        Route(f"{art}/versions/{{number}}/manifest", guarded(get_manifest, read), methods=["GET"]),
        Route(f"{art}/aliases/{{alias}}", guarded(set_alias, write), methods=["PUT"]),
        Route(f"{art}/aliases/{{alias}}", guarded(delete_alias, write), methods=["DELETE"]),
        *meta_routes(r, guarded, read, write, on_project(ADMIN)),
        *refs_routes(r, art, guarded, read),
        Route("/v1/blobs/missing", guarded(missing_blobs, blob_write), methods=["POST"]),
        Route("/v1/blobs/locate", guarded(locate_blobs, blob_read), methods=["POST"]),
        Route("/v1/blobs/uploads", guarded(begin_upload, blob_write), methods=["POST"]),
        Route("/v1/blobs/uploads/complete", guarded(complete_upload, blob_write), methods=["POST"]),
        Route("/v1/blobs/{sha}", guarded(put_blob, blob_write), methods=["PUT"]),
        Route("/v1/blobs/{sha}", guarded(get_blob, blob_read), methods=["GET"]),
        Route("/v1/blobs/{sha}/blocks", guarded(blob_blocks, blob_read), methods=["GET"]),
        Route("/v1/blobs/{sha}/damage", guarded(damage, blob_read), methods=["POST"]),
        *ui_routes(r, auth, _locations),  # the read-only web page (server/ui/)
        *run_routes(r, guarded),  # runs_api.py
        *tag_routes(r, guarded, read),  # tags_api.py
    ]
    counted = _CountRequests(Starlette(routes=routes, exception_handlers=exception_handlers()))
    return counted
