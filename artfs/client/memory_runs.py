"""The run methods of ``MemoryRegistryClient`` (a mixin): the same rules as the SQL
store's (``registry/runapi.py`` validates, ``registry/rundb.py`` records), over dicts.

``_with_runs`` adds runs to the twin's lineage walk (``MemoryRegistryClient.lineage``) as
``rundb`` adds them to the store's: a walk key ``("run", id)`` is a run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

from ..errors import Conflict, InvalidInput, NotFound
from ..lineage import parse_inputs
from ..lineage_graph import LineageNode, run_node, version_node
from ..models import VersionInput
from ..names import Ref, project_name
from ..runs import (
    DECLARED,
    DEFAULT_LEASE,
    MAX_LIST_RUNS,
    MAX_RUN_INPUTS,
    RUNNING,
    RunInfo,
    RunInput,
    VersionRuns,
    config_json,
    effective_status,
    end_status,
    exit_code,
    host_or_user,
    input_kind,
    job_type,
    lease,
    new_run_id,
    run_id,
    run_name,
)

Neighbours = dict[Any, list[tuple[Any, LineageNode]]]


class MemoryRuns:
    """Mixed into ``MemoryRegistryClient`` (its ``projects``, ``versions``, ``_resolve``)."""

    projects: dict[str, Any]
    versions: dict[tuple[str, str, int], tuple[Any, Any]]
    requests: int

    def _resolve(self, ref: Ref) -> VersionInput:
        raise NotImplementedError

    def _runs(self) -> dict[str, RunInfo]:
        """The run records, made on first use (``MemoryRegistryClient.__init__`` is left
        alone: the mixin brings its own state)."""
        found: dict[str, RunInfo] | None = getattr(self, "_run_records", None)
        if found is None:
            found = {}
            self._run_records = found
        return found

    def _shown(self, run: RunInfo, *, full: bool) -> RunInfo:
        status = effective_status(run.status, run.heartbeat, run.lease, time.time())
        shown = dataclasses.replace(
            run, status=status, input_count=len(run.inputs), output_count=len(run.outputs)
        )
        return shown if full else dataclasses.replace(shown, inputs=(), outputs=())

    def _open(self, rid: str) -> RunInfo:
        run = self._runs().get(run_id(rid))
        if run is None:
            raise NotFound(f"run {rid} not found")
        if run.ended is not None:
            raise Conflict(f"run {rid} has already ended ({run.status}): it can't change now")
        return run

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
        self.requests += 1
        if project_name(project) not in self.projects:
            raise NotFound(f"project {project} not found")
        now = time.time()
        run = RunInfo(
            new_run_id(),
            project,
            run_name(name),
            _job_type(job_type),
            host_or_user(host, "host"),
            host_or_user(user, "user"),
            now,
            None,
            now,
            _lease(lease),
            RUNNING,
            None,
            json.loads(config_json(config)),
        )
        self._runs()[run.id] = run
        return self._shown(run, full=True)

    async def get_run(self, run_id_: str) -> RunInfo:
        self.requests += 1
        run = self._runs().get(run_id(run_id_))
        if run is None:
            raise NotFound(f"run {run_id_} not found")
        return self._shown(run, full=True)

    async def list_runs(self, project: str, *, limit: int = 100) -> list[RunInfo]:
        self.requests += 1
        if not 1 <= limit <= MAX_LIST_RUNS:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIST_RUNS}")
        if project_name(project) not in self.projects:
            raise NotFound(f"project {project} not found")
        mine = [r for r in self._runs().values() if r.project == project]
        mine.sort(key=lambda r: r.started, reverse=True)
        return [self._shown(r, full=False) for r in mine[:limit]]

    async def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        exit_code: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> RunInfo:
        self.requests += 1
        run = self._open(run_id)
        now = time.time()
        changes: dict[str, Any] = {"heartbeat": now}
        if config is not None:
            changes["config"] = json.loads(config_json({**run.config, **config}))
        if status is not None:
            changes.update(status=end_status(status), exit_code=_exit_code(exit_code), ended=now)
        run = dataclasses.replace(run, **changes)
        self._runs()[run.id] = run
        return self._shown(run, full=False)

    async def add_run_inputs(
        self, run_id: str, refs: Sequence[str], *, kind: str = DECLARED
    ) -> RunInfo:
        self.requests += 1
        run = self._open(run_id)
        kind = input_kind(kind)
        inputs = list(run.inputs)
        for ref in parse_inputs(list(refs)):
            version = self._resolve(ref)
            same = [i for i, x in enumerate(inputs) if x.version == version]
            if same:
                if kind == DECLARED:
                    inputs[same[0]] = RunInput(version, DECLARED)
                continue
            if len(inputs) >= MAX_RUN_INPUTS:
                raise InvalidInput(f"run {run_id} has {MAX_RUN_INPUTS} inputs, the most")
            inputs.append(RunInput(version, kind))
        run = dataclasses.replace(run, inputs=tuple(inputs))
        self._runs()[run.id] = run
        return self._shown(run, full=False)

    async def add_run_outputs(self, run_id: str, refs: Sequence[str]) -> RunInfo:
        self.requests += 1
        run = self._open(run_id)
        outputs = list(run.outputs)
        for ref in parse_inputs(list(refs)):
            version = self._resolve(ref)
            if version not in outputs:
                outputs.append(version)
        run = dataclasses.replace(run, outputs=tuple(outputs))
        self._runs()[run.id] = run
        return self._shown(run, full=False)

    def _with_runs(self, keys: Sequence[Any], found: Any, *, up: bool) -> Any:
        """``found`` (one hop level of the version walk) with the runs linked to its keys."""
        out: Neighbours = {k: list(v) for k, v in found.items()}
        runs = sorted(self._runs().values(), key=lambda r: r.started)
        for key in keys:
            if len(key) == 2:  # ("run", id); a version key is (project, artifact, number)
                run = self._shown(self._runs()[key[1]], full=True)
                versions = [i.version for i in run.inputs] if up else list(run.outputs)
                for v in versions:
                    vkey = (v.project, v.artifact, v.number)
                    gone = vkey not in self.versions
                    if gone and not up:
                        continue  # a deleted output leaves the graph, as a deleted consumer does
                    node = version_node(v.project, v.artifact, v.number, v.digest, gone)
                    out.setdefault(key, []).append((vkey, node))
                continue
            for run in runs:
                linked = (
                    [(o.project, o.artifact, o.number) for o in run.outputs]
                    if up
                    else [
                        (i.version.project, i.version.artifact, i.version.number)
                        for i in run.inputs
                    ]
                )
                if key in linked:
                    node = run_node(self._shown(run, full=False))
                    out.setdefault(key, []).append((("run", run.id), node))
        return out

    async def version_runs(self, project: str, artifact: str, number: int) -> VersionRuns:
        self.requests += 1
        if (project, artifact, number) not in self.versions:
            raise NotFound(f"version {project}/{artifact}:v{number} not found")

        def names(v: VersionInput) -> tuple[str, str, int]:
            return (v.project, v.artifact, v.number)

        key = (project, artifact, number)
        runs = sorted(self._runs().values(), key=lambda r: r.started)
        return VersionRuns(
            tuple(self._shown(r, full=False) for r in runs if key in map(names, r.outputs)),
            tuple(
                self._shown(r, full=False)
                for r in runs
                if key in (names(i.version) for i in r.inputs)
            ),
        )


_job_type, _lease, _exit_code = job_type, lease, exit_code  # (names shadowed by parameters)
