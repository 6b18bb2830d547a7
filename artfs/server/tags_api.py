"""The route of tag search (``artfs/tagsearch.py``; docs/api.md, "Versions with a tag"):
``GET /v1/projects/{project}/versions?tag=x[&after=CURSOR][&limit=N]``, a page of the
project's live versions with the tag, behind the project's read right (every version of a
project is readable by whoever may read the project: no row is filtered per caller).

Thin like api.py's handlers: parse, run the blocking ``Registry`` call in a worker thread,
render."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..auth import Principal
from ..errors import InvalidInput
from ..registry import Registry
from ..tagsearch import DEFAULT_PAGE
from .requestio import run

Guard = Callable[[Callable[[Request], Awaitable[Response]], Any], Any]
Need = Callable[[Request, Principal], None]


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"invalid page size {text!r}: a number") from None


def tag_routes(r: Registry, guarded: Guard, read: Need) -> list[Route]:
    async def tagged_versions(request: Request) -> Response:
        q = request.query_params
        tag = q.get("tag")
        if tag is None:
            raise InvalidInput("the 'tag' query parameter is required (versions with a tag)")
        page = await run(
            r.tagged_versions,
            request.path_params["project"],
            tag,
            after=q.get("after"),
            limit=_limit(q.get("limit")),
        )
        # tags change after a commit: never cached
        return JSONResponse(page.to_json(), headers={"Cache-Control": "no-store"})

    return [
        Route("/v1/projects/{project}/versions", guarded(tagged_versions, read), methods=["GET"])
    ]
