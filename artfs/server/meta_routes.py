"""Routes for what changes after a commit (issue 12; docs/api.md, "Editing versions"):
edits and their history, tags, time to live, protected aliases, deleting an artifact.

Handlers are thin like api.py's: parse, run the blocking ``Registry`` call in a worker
thread, render. Errors travel as everywhere (``requestio.error_response``); a protected
alias moved without an admin token is ``ProtectedAlias`` (403, code ``protected``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..auth import ADMIN, Principal
from ..errors import InvalidInput
from ..registry import Registry
from ..versionmeta import MERGE
from .requestio import json_body, json_object, number_param, query_flag, run

Guard = Callable[[Callable[[Request], Awaitable[Response]], Any], Any]
Need = Callable[[Request, Principal], None]


def _principal(request: Request) -> Principal:
    who = request.state.principal
    assert isinstance(who, Principal)
    return who


def is_admin(request: Request) -> bool:
    """Whether the request's token may move protected aliases of the path's project."""
    return _principal(request).can(ADMIN, request.path_params["project"])


def _editor(request: Request, body: dict[str, Any]) -> str:
    """Who edits: the token's name; with auth off, what the client says (like a creator)."""
    name = _principal(request).name
    if name is not None:
        return name
    editor = body.get("editor", "")
    if not isinstance(editor, str):
        raise InvalidInput("'editor' must be a string")
    return editor


def _names(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list):
        raise InvalidInput(f"{key!r} must be a list of tags")
    return value


def meta_routes(r: Registry, guarded: Guard, read: Need, write: Need, admin: Need) -> list[Route]:
    """The routes, each behind ``guarded`` with the right it needs."""

    async def edit_version(request: Request) -> Response:
        p = request.path_params
        body = json_object(await json_body(request))
        info = await run(
            r.edit_version,
            p["project"],
            p["artifact"],
            number_param(p["selector"]),
            description=body.get("description"),
            metadata=body.get("metadata"),
            mode=body.get("mode", MERGE),
            editor=_editor(request, body),
        )
        return JSONResponse(info.to_json())

    async def version_history(request: Request) -> Response:
        p = request.path_params
        edits = await run(r.edit_history, p["project"], p["artifact"], number_param(p["selector"]))
        return JSONResponse({"edits": [e.to_json() for e in edits]})

    async def edit_artifact(request: Request) -> Response:
        p = request.path_params
        body = json_object(await json_body(request))
        art = await run(
            r.edit_artifact,
            p["project"],
            p["artifact"],
            description=body.get("description"),
            type=body.get("type"),
            editor=_editor(request, body),
        )
        return JSONResponse(art.to_json())

    async def artifact_history(request: Request) -> Response:
        p = request.path_params
        edits = await run(r.edit_history, p["project"], p["artifact"], None)
        return JSONResponse({"edits": [e.to_json() for e in edits]})

    async def delete_artifact(request: Request) -> Response:
        p = request.path_params
        count = await run(
            r.delete_artifact,
            p["project"],
            p["artifact"],
            force=query_flag(request, "force"),
            admin=is_admin(request),
        )
        return JSONResponse({"deleted": count})

    async def change_tags(request: Request) -> Response:
        p = request.path_params
        body = json_object(await json_body(request))
        tags = await run(
            r.change_tags,
            p["project"],
            p["artifact"],
            number_param(p["selector"]),
            add=_names(body, "add"),
            remove=_names(body, "remove"),
        )
        return JSONResponse({"tags": list(tags)})

    async def set_ttl(request: Request) -> Response:
        p = request.path_params
        body = json_object(await json_body(request))
        if "ttl" not in body:
            raise InvalidInput("body needs 'ttl': seconds, a duration like '30d', or null")
        ttl = body["ttl"]
        expires = await run(
            r.set_ttl, p["project"], p["artifact"], number_param(p["selector"]), ttl
        )
        return JSONResponse({"expires": expires})

    def protection(protect: bool) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            p = request.path_params
            who = _principal(request).name or ""
            await run(
                r.protect_alias, p["project"], p["artifact"], p["alias"], protect=protect, who=who
            )
            return Response(status_code=204)

        return handler

    art = "/v1/projects/{project}/artifacts/{artifact}"
    version = f"{art}/versions/{{selector}}"
    protected = f"{art}/aliases/{{alias}}/protection"
    return [
        Route(art, guarded(edit_artifact, write), methods=["PATCH"]),
        Route(art, guarded(delete_artifact, write), methods=["DELETE"]),
        Route(f"{art}/history", guarded(artifact_history, read), methods=["GET"]),
        Route(version, guarded(edit_version, write), methods=["PATCH"]),
        Route(f"{version}/history", guarded(version_history, read), methods=["GET"]),
        Route(f"{version}/tags", guarded(change_tags, write), methods=["POST"]),
        Route(f"{version}/ttl", guarded(set_ttl, write), methods=["PUT"]),
        Route(protected, guarded(protection(True), admin), methods=["PUT"]),
        Route(protected, guarded(protection(False), admin), methods=["DELETE"]),
    ]
