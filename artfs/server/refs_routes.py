"""``GET .../versions/{number}/refs``: which files of a version are external refs, and their
URLs (docs/api.md, "External references"). What ``artfs info`` shows, without a client
fetching the whole manifest to find out (``refs/listing.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..auth import Principal
from ..refs.listing import from_stored, parse_limit
from ..registry import Registry
from .requestio import number_param, run

Guard = Callable[[Callable[[Request], Awaitable[Response]], Any], Any]
Need = Callable[[Request, Principal], None]


def refs_routes(r: Registry, art: str, guarded: Guard, read: Need) -> list[Route]:
    async def version_refs(request: Request) -> Response:
        p = request.path_params
        limit = parse_limit(request.query_params.get("limit"))
        number = number_param(p["number"])
        _, data = await run(r.manifest_gz, p["project"], p["artifact"], number)
        return JSONResponse(await run(from_stored, data, limit))

    return [Route(f"{art}/versions/{{number}}/refs", guarded(version_refs, read), methods=["GET"])]
