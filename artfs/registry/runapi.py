"""Runs in the registry core: validation of everything a caller sends about a run, then one
store call each (a mixin of ``Registry``; the rules are in ``artfs/runs.py``).

Rights are not checked here (the server checks them per route: write on the run's
project to change it, read on every project a named version is in); isolation of what a
reader sees of a run is ``runs.visible_run``, applied by the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ..errors import Conflict, InvalidInput
from ..lineage import parse_inputs
from ..names import artifact_name, project_name
from ..runs import (
    DECLARED,
    DEFAULT_LEASE,
    MAX_LIST_RUNS,
    MAX_RUN_REFS_PER_CALL,
    RunInfo,
    VersionRuns,
    config_json,
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
from .meta import MetaStore
from .rundb import NewRun


def _refs(refs: Any, what: str) -> list[Any]:
    if not isinstance(refs, list | tuple):
        raise InvalidInput(f"run {what} must be a list of references like project/artifact:v3")
    if len(refs) > MAX_RUN_REFS_PER_CALL:
        raise InvalidInput(f"too many run {what} in one call (at most {MAX_RUN_REFS_PER_CALL})")
    return parse_inputs(list(refs))


class RunRegistry:
    """The run methods of ``Registry`` (its ``meta`` and ``clock``)."""

    meta: MetaStore
    clock: Callable[[], float]

    def create_run(
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
        new = NewRun(
            new_run_id(),
            run_name(name),
            _job_type(job_type),
            host_or_user(host, "host"),
            host_or_user(user, "user"),
            self.clock(),
            _lease(lease),
            config_json(config),
        )
        for _ in range(3):
            try:
                return self.meta.create_run(project_name(project), new)
            except Conflict:  # an id drawn twice (2^-64): draw again
                new = replace(new, run_id=new_run_id())
        raise Conflict("could not draw a free run id")  # pragma: no cover

    def run_project(self, rid: str) -> str:
        return self.meta.run_project(run_id(rid))

    def get_run(self, rid: str) -> RunInfo:
        return self.meta.get_run(run_id(rid), self.clock())

    def list_runs(self, project: str, *, limit: int = 100) -> list[RunInfo]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_RUNS:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIST_RUNS}")
        return self.meta.list_runs(project_name(project), limit, self.clock())

    def update_run(
        self,
        rid: str,
        *,
        status: str | None = None,
        exit_code: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> RunInfo:
        """A heartbeat, and optionally: ``config`` keys merged into the run's config (a
        key's new value replaces its old one), an end (``status`` finished, failed or
        crashed, with the process's ``exit_code``)."""
        end = None if status is None else (end_status(status), _exit_code(exit_code))
        if status is None and exit_code is not None:
            raise InvalidInput("an exit code is given with the status that ends the run")
        merge: Callable[[dict[str, Any]], str] | None = None
        if config is not None:
            update = json.loads(config_json(config))  # valid alone before merged

            def merge(old: dict[str, Any]) -> str:
                return config_json({**old, **update})

        return self.meta.update_run(run_id(rid), self.clock(), end=end, config=merge)

    def add_run_inputs(self, rid: str, refs: Sequence[str], *, kind: str = DECLARED) -> RunInfo:
        return self.meta.add_run_inputs(
            run_id(rid), _refs(refs, "inputs"), input_kind(kind), self.clock()
        )

    def add_run_outputs(self, rid: str, refs: Sequence[str]) -> RunInfo:
        return self.meta.add_run_outputs(run_id(rid), _refs(refs, "outputs"), self.clock())

    def version_runs(self, project: str, artifact: str, number: int) -> VersionRuns:
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise InvalidInput(f"invalid version number {number!r}")
        return self.meta.version_runs(
            project_name(project), artifact_name(artifact), number, self.clock()
        )


_job_type, _lease, _exit_code = job_type, lease, exit_code  # (names shadowed by parameters)
