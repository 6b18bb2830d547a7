"""The run methods of ``HttpRegistryClient`` (a mixin, so http.py does not grow): the
routes of docs/api.md, "Runs"; each answer is validated into ``artfs.runs`` records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from ..errors import ProtocolError
from ..lineage import parse_inputs
from ..names import project_name
from ..runs import DECLARED, DEFAULT_LEASE, RunInfo, VersionRuns, config_json, run_id


def _run_path(rid: str) -> str:
    return f"/v1/runs/{run_id(rid)}"


class RunsHttp:
    """Mixed into ``HttpRegistryClient`` (its ``_json`` and ``_art_path``)."""

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def _art_path(project: str, artifact: str) -> str:
        raise NotImplementedError

    async def create_run(
        self,
        project: str,
        *,
        name: str,
        job_type: str = "",
        host: str = "",
        user: str = "",
        config: dict[str, Any] | None = None,
        lease: float = DEFAULT_LEASE,
    ) -> RunInfo:
        config_json(config)  # a clear error here, not a serialisation failure below
        body = {
            "name": name,
            "job_type": job_type,
            "host": host,
            "user": user,
            "config": config or {},
            "lease": lease,
        }
        path = f"/v1/projects/{quote(project_name(project), safe='')}/runs"
        return RunInfo.from_json(await self._json("POST", path, json_body=body))

    async def get_run(self, run_id: str) -> RunInfo:
        return RunInfo.from_json(await self._json("GET", _run_path(run_id)))

    async def list_runs(self, project: str, *, limit: int = 100) -> list[RunInfo]:
        path = f"/v1/projects/{quote(project_name(project), safe='')}/runs"
        data = await self._json("GET", path, params={"limit": str(int(limit))})
        try:
            return [RunInfo.from_json(r) for r in data["runs"]]
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"malformed run listing: {e}") from None

    async def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        exit_code: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> RunInfo:
        body: dict[str, Any] = {}
        if status is not None:
            body["status"] = status
            body["exit_code"] = exit_code
        if config is not None:
            config_json(config)
            body["config"] = config
        # A heartbeat or a config merge done twice is done once: resent after a closed
        # pooled connection (resend.py). An end is not (twice: the second is a conflict).
        path = _run_path(run_id)
        data = await self._json("PATCH", path, json_body=body, idempotent=status is None)
        return RunInfo.from_json(data)

    async def add_run_inputs(
        self, run_id: str, refs: Sequence[str], *, kind: str = DECLARED
    ) -> RunInfo:
        body = {"refs": [str(r) for r in parse_inputs(list(refs))], "kind": kind}
        path = f"{_run_path(run_id)}/inputs"  # recorded once however often sent: idempotent
        return RunInfo.from_json(await self._json("POST", path, json_body=body, idempotent=True))

    async def add_run_outputs(self, run_id: str, refs: Sequence[str]) -> RunInfo:
        body = {"refs": [str(r) for r in parse_inputs(list(refs))]}
        path = f"{_run_path(run_id)}/outputs"
        return RunInfo.from_json(await self._json("POST", path, json_body=body, idempotent=True))

    async def version_runs(self, project: str, artifact: str, number: int) -> VersionRuns:
        path = f"{self._art_path(project, artifact)}/versions/{int(number)}/runs"
        return VersionRuns.from_json(await self._json("GET", path))
