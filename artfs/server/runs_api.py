"""The run routes of the HTTP API (docs/api.md, "Runs"); added to ``api.py``'s route list.

Rights: creating or listing runs names the project in the path (write / read on it). A
route naming only a run id looks the run's project up first: a token that may not read it
gets 404, as if the run did not exist (its id tells nothing then); one that may read but
not write gets 403 for a change. Naming a version as a run's input or output reveals it,
so it needs read on that version's project, as a commit's lineage inputs do; what a
reader sees of a run's inputs and outputs in other projects is hidden entries
(``runs.visible_run``), of a version's runs only those of projects it may read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..auth import READ, WRITE, Principal
from ..errors import InvalidInput, NotFound
from ..lineage import parse_inputs
from ..registry import Registry
from ..runs import DECLARED, DEFAULT_LEASE, MAX_LIST_RUNS, visible_run
from .requestio import json_body, json_object, number_param, run

Handler = Callable[[Request], Awaitable[Response]]
Need = Callable[[Request, Principal], None]
Guard = Callable[[Handler, Need], Any]


def _on_project(right: str) -> Need:
    def need(request: Request, who: Principal) -> None:
        who.require(right, request.path_params["project"])

    return need


def _any_token(request: Request, who: Principal) -> None:
    """The handler checks rights on the run's project once it knows it."""


def run_routes(r: Registry, guarded: Guard) -> list[Route]:
    def who(request: Request) -> Principal:
        principal = request.state.principal
        assert isinstance(principal, Principal)
        return principal

    async def run_of(request: Request, right: str) -> str:
        """The path's run id, once the principal may ``right`` its project."""
        rid = request.path_params["run_id"]
        project = await run(r.run_project, rid)
        if not who(request).can(READ, project):
            raise NotFound(f"run {rid} not found")
        who(request).require(right, project)
        return str(rid)

    def refs_body(body: dict[str, Any], request: Request) -> list[str]:
        refs = parse_inputs(body.get("refs"))
        for ref in refs:  # naming a version reveals it: read on its project
            who(request).require(READ, ref.project)
        return [str(ref) for ref in refs]

    def readable(request: Request) -> Callable[[str], bool]:
        principal = who(request)
        return lambda project: principal.can(READ, project)

    async def create_run(request: Request) -> Response:
        body = json_object(await json_body(request))
        info = await run(
            r.create_run,
            request.path_params["project"],
            name=body.get("name"),
            job_type=body.get("job_type", ""),
            host=body.get("host", ""),
            user=body.get("user", ""),
            config=body.get("config"),
            lease=body.get("lease", DEFAULT_LEASE),
        )
        return JSONResponse(info.to_json(), status_code=201)

    async def list_runs(request: Request) -> Response:
        text = request.query_params.get("limit", "100")
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIST_RUNS:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIST_RUNS}")
        runs = await run(r.list_runs, request.path_params["project"], limit=int(text))
        return JSONResponse({"runs": [x.to_json() for x in runs]})

    async def get_run(request: Request) -> Response:
        info = await run(r.get_run, await run_of(request, READ))
        return JSONResponse(visible_run(info, readable(request)).to_json())

    async def update_run(request: Request) -> Response:
        rid = await run_of(request, WRITE)
        body = json_object(await json_body(request))
        info = await run(
            r.update_run,
            rid,
            status=body.get("status"),
            exit_code=body.get("exit_code"),
            config=body.get("config"),
        )
        return JSONResponse(info.to_json())

    async def add_inputs(request: Request) -> Response:
        rid = await run_of(request, WRITE)
        body = json_object(await json_body(request))
        refs = refs_body(body, request)
        info = await run(r.add_run_inputs, rid, refs, kind=body.get("kind", DECLARED))
        return JSONResponse(info.to_json())

    async def add_outputs(request: Request) -> Response:
        rid = await run_of(request, WRITE)
        refs = refs_body(json_object(await json_body(request)), request)
        info = await run(r.add_run_outputs, rid, refs)
        return JSONResponse(info.to_json())

    async def version_runs(request: Request) -> Response:
        p = request.path_params
        found = await run(r.version_runs, p["project"], p["artifact"], number_param(p["selector"]))
        can = readable(request)
        return JSONResponse(
            {
                "produced_by": [x.to_json() for x in found.produced_by if can(x.project)],
                "used_by": [x.to_json() for x in found.used_by if can(x.project)],
            }
        )

    runs = "/v1/projects/{project}/runs"
    one = "/v1/runs/{run_id}"
    art = "/v1/projects/{project}/artifacts/{artifact}"
    return [
        Route(runs, guarded(create_run, _on_project(WRITE)), methods=["POST"]),
        Route(runs, guarded(list_runs, _on_project(READ)), methods=["GET"]),
        Route(one, guarded(get_run, _any_token), methods=["GET"]),
        Route(one, guarded(update_run, _any_token), methods=["PATCH"]),
        Route(f"{one}/inputs", guarded(add_inputs, _any_token), methods=["POST"]),
        Route(f"{one}/outputs", guarded(add_outputs, _any_token), methods=["POST"]),
        Route(
            f"{art}/versions/{{selector}}/runs",
            guarded(version_runs, _on_project(READ)),
            methods=["GET"],
        ),
    ]
