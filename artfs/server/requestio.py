"""How the API reads requests and answers errors: JSON bodies (size-bounded, gzip allowed,
depth-bounded), typed fields and path parameters, and the one place where an exception
becomes an HTTP answer (``error_response``, ``exception_handlers``).

Split from api.py (the routes) along that seam: nothing here knows a route.
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import zlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import trio
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..client.base import UNSET, Expect
from ..errors import ArtfsError, Forbidden, InvalidInput, StorageFull, Unauthorized
from ..manifest_stream import canonical_from_json
from ..names import parse_version, version_label
from ..refs.listing import stored_has_refs

T = TypeVar("T")
log = logging.getLogger("artfs.server")

MAX_JSON_BODY = 512 << 20  # a 2,000,000-file manifest is ~250 MB of JSON


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await trio.to_thread.run_sync(partial(fn, *args, **kwargs))


# --- error translation (the only place) ------------------------------------------
def auth_headers(exc: ArtfsError) -> dict[str, str]:
    """``WWW-Authenticate`` for a refused request (RFC 6750), shared with the data server."""
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="artfs"'}
    if isinstance(exc, Forbidden):
        return {"WWW-Authenticate": 'Bearer realm="artfs", error="insufficient_scope"'}
    return {}


def error_response(exc: ArtfsError) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": exc.code, "message": exc.message}},
        status_code=exc.http_status,
        headers=auth_headers(exc),
    )


async def artfs_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ArtfsError)
    return error_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "invalid", 413: "invalid"}.get(exc.status_code, "error")
    err = ArtfsError(f"{request.method} {request.url.path}: {exc.detail}")
    return JSONResponse(
        {"error": {"code": code, "message": err.message}}, status_code=exc.status_code
    )


async def client_gone_handler(request: Request, exc: Exception) -> Response:
    # Nobody will read this; answering (rather than raising) keeps the log quiet.
    return error_response(InvalidInput("the client disconnected before sending the whole request"))


async def os_error_handler(request: Request, exc: Exception) -> Response:
    """An ``OSError`` no layer translated: a full disk is 507, anything else 500."""
    assert isinstance(exc, OSError)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return error_response(StorageFull(f"the server's disk is full: {exc}"))
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(ArtfsError(f"internal server error: {type(exc).__name__}: {exc}"))


async def unexpected_handler(request: Request, exc: Exception) -> Response:
    # Starlette re-raises after answering; Hypercorn logs the traceback ("Error in ASGI Framework").
    return error_response(ArtfsError(f"internal server error: {type(exc).__name__}: {exc}"))


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside (nested) groups, so handlers see e.g. ClientDisconnect itself."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    return leaf


# --- request helpers -------------------------------------------------------------
async def json_body(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_JSON_BODY:
        raise InvalidInput(f"request body over {MAX_JSON_BODY} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_JSON_BODY:
            raise InvalidInput(f"request body over {MAX_JSON_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()

    def parse() -> Any:
        data = raw
        if encoding == "gzip":
            d = zlib.decompressobj(wbits=31)
            try:
                data = d.decompress(raw, MAX_JSON_BODY)
            except zlib.error as e:
                raise InvalidInput(f"request body is not valid gzip: {e}") from None
            if d.unconsumed_tail:
                raise InvalidInput(f"request body inflates to over {MAX_JSON_BODY} bytes")
        elif encoding != "identity":
            raise InvalidInput(f"unsupported Content-Encoding {encoding!r}")
        if not data:
            return {}
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidInput(f"request body is not valid JSON: {e}") from None
        except RecursionError:  # the parser recurses per nesting level: refuse, never a 500
            raise InvalidInput("request body is JSON nested too deeply") from None

    return parse() if len(raw) < (1 << 16) else await run(parse)


def json_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body


def json_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name!r} must be true or false")
    return value


def expect_field(body: dict[str, Any]) -> Expect:
    if "expect" not in body:
        return UNSET
    value = body["expect"]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput("'expect' must be a version number or null")
    return value


def version_number(text: str) -> int | None:
    """``vN`` or a bare ``N`` (docs/api.md) -> N; anything else (an alias?) -> None."""
    return parse_version(text if text.startswith("v") else f"v{text}")


def number_param(text: str) -> int:
    number = version_number(text)
    if number is None:
        raise InvalidInput(f"invalid version {text!r}: expected vN or N")
    return number


def selector_param(text: str) -> str:
    """A ``versions/{selector}`` segment as the registry takes it. A bare ``N`` is version N
    here as on every route (aliases can't be all digits), so ``versions/0`` and
    ``versions/0/manifest`` name the same version."""
    number = version_number(text)
    return version_label(number) if number is not None else text


def canonical_manifest(data_gz: bytes, gzipped: bool) -> bytes:
    """A stored manifest (gzip JSON, validated and sorted at commit) in canonical form: the
    bytes its digest is over (the client checks that digest)."""
    raw = canonical_from_json(json.loads(gzip.decompress(data_gz)))
    return gzip.compress(raw, 1) if gzipped else raw


OLD_CLIENT = (
    "this version has external references (artfs refs); this client predates them and "
    "would not find their bytes: upgrade artfs to read it"
)


def has_refs(data_gz: bytes) -> bool:
    """Whether a stored manifest has external refs. Clients that read them ask with
    ``?refs=1``; one that does not predates them and is refused (docs/api.md). A manifest
    with refs is stored with them first (``Manifest.to_json``), so its first 9 bytes tell:
    inflating a whole 1,000,000-file manifest to look took 1.3 s, this takes microseconds."""
    return stored_has_refs(data_gz)


def query_flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise InvalidInput(f"invalid value for {name!r}: {value!r}")


def exception_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """Every exception a handler lets out, answered once: artfs errors with their status and
    one-line JSON body, anything unexpected as a 500 without a traceback to the client."""
    return {
        ArtfsError: artfs_error_handler,
        OSError: os_error_handler,
        HTTPException: http_error_handler,
        ClientDisconnect: client_gone_handler,
        Exception: unexpected_handler,
    }
