"""The metadata side of runs (schema 8, ``artfs/runs.py``): a mixin of ``SqlMetaStore``.

Three tables of their own (never an ALTER of another feature's): ``runs`` (one row per
run, keyed by an internal row id; the public id is unique), ``run_inputs`` and
``run_outputs`` (versions, resolved when recorded, by artifact row id and number; an
input keeps its digest, as ``version_inputs`` does, so it says which bytes were used
after a deletion). Both link tables are indexed by version, so "which runs used or made
this version" and the lineage walk's run hops are index lookups.

A running run's liveness is not rewritten by anybody: its effective status is computed at
read time from the last heartbeat and its lease (``runs.effective_status``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from ..errors import Conflict, InvalidInput, NotFound
from ..lineage import unique_in_order
from ..lineage_graph import LineageNode, run_node, version_node
from ..models import VersionInput
from ..names import Ref
from ..runs import (
    DECLARED,
    MAX_RUN_INPUTS,
    OBSERVED,
    RUNNING,
    RunInfo,
    RunInput,
    VersionRuns,
    effective_status,
)

# Schema 8: runs, the versions they used and the versions they logged. Idempotent DDL.
RUNS_SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS runs (
    id         {id},
    run_id     TEXT NOT NULL UNIQUE,
    project_id {int} NOT NULL REFERENCES projects(id),
    name       TEXT NOT NULL,
    job_type   TEXT NOT NULL,
    host       TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    started    {real} NOT NULL,
    ended      {real},
    heartbeat  {real} NOT NULL,
    lease      {real} NOT NULL,
    status     TEXT NOT NULL,
    exit_code  {int},
    config     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_project ON runs (project_id, started);
CREATE TABLE IF NOT EXISTS run_inputs (
    run               {int} NOT NULL REFERENCES runs(id),
    position          {int} NOT NULL,
    kind              TEXT NOT NULL,
    input_artifact_id {int} NOT NULL REFERENCES artifacts(id),
    input_number      {int} NOT NULL,
    input_digest      TEXT NOT NULL,
    PRIMARY KEY (run, position),
    UNIQUE (run, input_artifact_id, input_number)
){without_rowid};
CREATE INDEX IF NOT EXISTS run_inputs_by_input ON run_inputs (input_artifact_id, input_number);
CREATE TABLE IF NOT EXISTS run_outputs (
    run         {int} NOT NULL REFERENCES runs(id),
    position    {int} NOT NULL,
    artifact_id {int} NOT NULL REFERENCES artifacts(id),
    number      {int} NOT NULL,
    PRIMARY KEY (run, position),
    UNIQUE (run, artifact_id, number)
){without_rowid};
CREATE INDEX IF NOT EXISTS run_outputs_by_version ON run_outputs (artifact_id, number);
"""

C = TypeVar("C")
Key = tuple[int, int]
RUN_KEY = -1
"""A lineage-walk key ``(RUN_KEY, row id)`` is a run; ``(artifact id, number)`` a version
(artifact row ids are positive)."""

MAX_VERSION_RUNS = 1_000  # runs listed per side by version_runs, at most

_RUN_COLS = (
    "r.id, r.run_id, p.name, r.name, r.job_type, r.host, r.user_name, r.started, r.ended, "
    "r.heartbeat, r.lease, r.status, r.exit_code, r.config, "
    "(SELECT COUNT(*) FROM run_inputs i WHERE i.run = r.id), "
    "(SELECT COUNT(*) FROM run_outputs o WHERE o.run = r.id)"
)
_RUN_FROM = "FROM runs r JOIN projects p ON p.id = r.project_id"


@dataclass(frozen=True, slots=True)
class NewRun:
    run_id: str
    name: str
    job_type: str
    host: str
    user: str
    started: float
    lease: float
    config_json: str


def _run_info(row: Any, now: float) -> RunInfo:
    _, rid, project, name, jtype, host, user, started, ended, beat, lease_s, status = row[:12]
    code, config, n_in, n_out = row[12:16]
    return RunInfo(
        str(rid),
        str(project),
        str(name),
        str(jtype),
        str(host),
        str(user),
        float(started),
        None if ended is None else float(ended),
        float(beat),
        float(lease_s),
        effective_status(str(status), float(beat), float(lease_s), now),
        None if code is None else int(code),
        json.loads(config),
        int(n_in),
        int(n_out),
    )


class RunQueries(Generic[C]):
    """Run records over a SQL store (mixed into ``SqlMetaStore``)."""

    _COLLATE: str
    _LOCK_ARTIFACT: str

    def _read(self) -> AbstractContextManager[C]:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[C]:
        raise NotImplementedError

    def _q(self, c: C, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    def _project_id(self, c: C, project: str) -> int:
        raise NotImplementedError

    def _artifact_row(
        self, c: C, project: str, artifact: str, *, lock: bool = False
    ) -> tuple[Any, ...]:
        raise NotImplementedError

    def _live_number(self, c: C, artifact_id: int, number: int, label: str) -> None:
        raise NotImplementedError

    def _resolve_input(self, c: C, ref: Ref) -> tuple[int, int, str]:
        raise NotImplementedError

    # --- lookups -------------------------------------------------------------------------
    def _run_row(self, c: C, run_id: str, *, lock: bool = False) -> Any:
        """The run's row (``_RUN_COLS``); ``lock``: held until the transaction ends where the
        database needs it (PostgreSQL; SQLite's write transaction already excludes others)."""
        if lock and self._LOCK_ARTIFACT:
            self._q(c, "SELECT id FROM runs WHERE run_id=? FOR UPDATE", run_id)
        row = self._q(c, f"SELECT {_RUN_COLS} {_RUN_FROM} WHERE r.run_id=?", run_id).fetchone()
        if row is None:
            raise NotFound(f"run {run_id} not found")
        return row

    def _full_run(self, c: C, row: Any, now: float) -> RunInfo:
        rowid = int(row[0])
        inputs = tuple(
            RunInput(VersionInput(str(r[0]), str(r[1]), int(r[2]), str(r[3])), str(r[4]))
            for r in self._q(
                c,
                "SELECT p.name, a.name, i.input_number, i.input_digest, i.kind FROM run_inputs i "
                "JOIN artifacts a ON a.id = i.input_artifact_id "
                "JOIN projects p ON p.id = a.project_id WHERE i.run=? ORDER BY i.position",
                rowid,
            )
        )
        outputs = tuple(
            VersionInput(str(r[0]), str(r[1]), int(r[2]), str(r[3]))
            for r in self._q(
                c,
                "SELECT p.name, a.name, o.number, v.digest FROM run_outputs o "
                "JOIN artifacts a ON a.id = o.artifact_id JOIN projects p ON p.id = a.project_id "
                "JOIN versions v ON v.artifact_id = o.artifact_id AND v.number = o.number "
                "WHERE o.run=? ORDER BY o.position",
                rowid,
            )
        )
        return replace(_run_info(row, now), inputs=inputs, outputs=outputs)

    def run_project(self, run_id: str) -> str:
        """The project a run belongs to (the server checks rights on it first)."""
        with self._read() as c:
            return str(self._run_row(c, run_id)[2])

    def get_run(self, run_id: str, now: float) -> RunInfo:
        with self._read() as c:
            return self._full_run(c, self._run_row(c, run_id), now)

    def list_runs(self, project: str, limit: int, now: float) -> list[RunInfo]:
        """Newest first."""
        with self._read() as c:
            pid = self._project_id(c, project)
            rows = self._q(
                c,
                f"SELECT {_RUN_COLS} {_RUN_FROM} WHERE r.project_id=? "
                f"ORDER BY r.started DESC, r.id DESC LIMIT {int(limit)}",
                pid,
            ).fetchall()
        return [_run_info(r, now) for r in rows]

    # --- writes --------------------------------------------------------------------------
    def create_run(self, project: str, new: NewRun) -> RunInfo:
        with self._write() as c:
            pid = self._project_id(c, project)
            if self._q(c, "SELECT 1 FROM runs WHERE run_id=?", new.run_id).fetchone():
                raise Conflict(f"run id {new.run_id} is taken")  # 2^-64: a retry is enough
            self._q(
                c,
                "INSERT INTO runs (run_id, project_id, name, job_type, host, user_name, started, "
                "ended, heartbeat, lease, status, exit_code, config) "
                "VALUES (?,?,?,?,?,?,?,NULL,?,?,?,NULL,?)",
                new.run_id,
                pid,
                new.name,
                new.job_type,
                new.host,
                new.user,
                new.started,
                new.started,
                new.lease,
                RUNNING,
                new.config_json,
            )
            return self._full_run(c, self._run_row(c, new.run_id), new.started)

    def _open_run(self, c: C, run_id: str, now: float) -> Any:
        """The run's row, for a change: refused once the run has ended."""
        row = self._run_row(c, run_id, lock=True)
        if row[8] is not None:
            raise Conflict(f"run {run_id} has already ended ({row[11]}): it can't change now")
        return row

    def update_run(
        self,
        run_id: str,
        now: float,
        *,
        end: tuple[str, int | None] | None,
        config: Callable[[dict[str, Any]], str] | None,
    ) -> RunInfo:
        """A heartbeat (always), a config update (``config(old) -> new JSON``), an end."""
        with self._write() as c:
            row = self._open_run(c, run_id, now)
            rowid = int(row[0])
            self._q(c, "UPDATE runs SET heartbeat=? WHERE id=?", now, rowid)
            if config is not None:
                self._q(
                    c, "UPDATE runs SET config=? WHERE id=?", config(json.loads(row[13])), rowid
                )
            if end is not None:
                status, code = end
                self._q(
                    c,
                    "UPDATE runs SET status=?, exit_code=?, ended=? WHERE id=?",
                    status,
                    code,
                    now,
                    rowid,
                )
            return _run_info(self._run_row(c, run_id), now)

    def add_run_inputs(self, run_id: str, refs: Sequence[Ref], kind: str, now: float) -> RunInfo:
        """Inputs resolved now; one already recorded is kept once (``declared`` wins over
        ``observed``: a version read and also declared was declared)."""
        with self._write() as c:
            row = self._open_run(c, run_id, now)
            rowid, count = int(row[0]), int(row[14])
            resolved = unique_in_order([self._resolve_input(c, ref) for ref in refs])
            for aid, number, digest in resolved:
                had = self._q(
                    c,
                    "SELECT kind FROM run_inputs WHERE run=? AND input_artifact_id=? "
                    "AND input_number=?",
                    rowid,
                    aid,
                    number,
                ).fetchone()
                if had is not None:
                    if kind == DECLARED and had[0] == OBSERVED:
                        self._q(
                            c,
                            "UPDATE run_inputs SET kind=? WHERE run=? AND input_artifact_id=? "
                            "AND input_number=?",
                            DECLARED,
                            rowid,
                            aid,
                            number,
                        )
                    continue
                if count >= MAX_RUN_INPUTS:
                    raise InvalidInput(f"run {run_id} has {MAX_RUN_INPUTS} inputs, the most")
                self._q(
                    c,
                    "INSERT INTO run_inputs (run, position, kind, input_artifact_id, "
                    "input_number, input_digest) VALUES (?,?,?,?,?,?)",
                    rowid,
                    count,
                    kind,
                    aid,
                    number,
                    digest,
                )
                count += 1
            return _run_info(self._run_row(c, run_id), now)

    def add_run_outputs(self, run_id: str, refs: Sequence[Ref], now: float) -> RunInfo:
        with self._write() as c:
            row = self._open_run(c, run_id, now)
            rowid, count = int(row[0]), int(row[15])
            resolved = unique_in_order([self._resolve_input(c, ref) for ref in refs])
            for aid, number, _ in resolved:
                if self._q(
                    c,
                    "SELECT 1 FROM run_outputs WHERE run=? AND artifact_id=? AND number=?",
                    rowid,
                    aid,
                    number,
                ).fetchone():
                    continue
                if count >= MAX_RUN_INPUTS:
                    raise InvalidInput(f"run {run_id} has {MAX_RUN_INPUTS} outputs, the most")
                self._q(
                    c,
                    "INSERT INTO run_outputs (run, position, artifact_id, number) VALUES (?,?,?,?)",
                    rowid,
                    count,
                    aid,
                    number,
                )
                count += 1
            return _run_info(self._run_row(c, run_id), now)

    def version_runs(self, project: str, artifact: str, number: int, now: float) -> VersionRuns:
        with self._read() as c:
            aid = int(self._artifact_row(c, project, artifact)[0])
            self._live_number(c, aid, number, f"{project}/{artifact}")
            sides = []
            for table, acol, ncol in (
                ("run_outputs", "artifact_id", "number"),
                ("run_inputs", "input_artifact_id", "input_number"),
            ):
                rows = self._q(
                    c,
                    f"SELECT {_RUN_COLS} {_RUN_FROM} WHERE r.id IN (SELECT l.run FROM {table} l "
                    f"WHERE l.{acol}=? AND l.{ncol}=?) ORDER BY r.started, r.id "
                    f"LIMIT {MAX_VERSION_RUNS}",
                    aid,
                    number,
                ).fetchall()
                sides.append(tuple(_run_info(r, now) for r in rows))
            return VersionRuns(sides[0], sides[1])

    # --- the lineage walk's run hops (lineagedb.py) -------------------------------------------
    def _run_nodes(self, c: C, rowids: Sequence[int], now: float) -> dict[int, LineageNode]:
        out: dict[int, LineageNode] = {}
        for i in range(0, len(rowids), 400):
            chunk = rowids[i : i + 400]
            rows = self._q(
                c,
                f"SELECT {_RUN_COLS} {_RUN_FROM} WHERE r.id IN ({','.join('?' * len(chunk))})",
                *chunk,
            )
            for row in rows:
                out[int(row[0])] = run_node(_run_info(row, now))
        return out

    def _runs_linked(
        self, c: C, table: str, acol: str, ncol: str, keys: Sequence[Key], now: float
    ) -> dict[Key, list[tuple[Key, LineageNode]]]:
        """For each version key, the runs ``table`` links to it (by run start)."""
        from .lineagedb import KEY_CHUNK, _where

        links: list[tuple[Key, int]] = []
        for i in range(0, len(keys), KEY_CHUNK):
            where, args = _where(f"l.{acol}", f"l.{ncol}", keys[i : i + KEY_CHUNK])
            rows = self._q(
                c,
                f"SELECT l.{acol}, l.{ncol}, l.run FROM {table} l JOIN runs r ON r.id = l.run "
                f"WHERE {where} ORDER BY r.started, r.id",
                *args,
            )
            links += [((int(a), int(n)), int(run)) for a, n, run in rows]
        nodes = self._run_nodes(c, sorted({run for _, run in links}), now)
        out: dict[Key, list[tuple[Key, LineageNode]]] = defaultdict(list)
        for key, run in links:
            out[key].append(((RUN_KEY, run), nodes[run]))
        return out

    def _run_versions(
        self, c: C, rowids: Sequence[int], *, inputs: bool
    ) -> dict[Key, list[tuple[Key, LineageNode]]]:
        """For each run key, its inputs (``inputs``) or its outputs, as version nodes."""
        out: dict[Key, list[tuple[Key, LineageNode]]] = defaultdict(list)
        for i in range(0, len(rowids), 400):
            chunk = rowids[i : i + 400]
            marks = ",".join("?" * len(chunk))
            if inputs:
                sql = (
                    "SELECT l.run, l.input_artifact_id, l.input_number, l.input_digest, p.name, "
                    "a.name, v.deleted FROM run_inputs l "
                    "JOIN artifacts a ON a.id = l.input_artifact_id "
                    "JOIN projects p ON p.id = a.project_id "
                    "LEFT JOIN versions v ON v.artifact_id = l.input_artifact_id "
                    f"AND v.number = l.input_number WHERE l.run IN ({marks}) "
                    "ORDER BY l.run, l.position"
                )
            else:
                sql = (
                    "SELECT l.run, l.artifact_id, l.number, v.digest, p.name, a.name, v.deleted "
                    "FROM run_outputs l JOIN versions v ON v.artifact_id = l.artifact_id "
                    "AND v.number = l.number JOIN artifacts a ON a.id = l.artifact_id "
                    "JOIN projects p ON p.id = a.project_id "
                    f"WHERE l.run IN ({marks}) AND NOT v.deleted ORDER BY l.run, l.position"
                )
            for run, aid, num, digest, pname, aname, deleted in self._q(c, sql, *chunk):
                node = version_node(str(pname), str(aname), int(num), str(digest), bool(deleted))
                out[(RUN_KEY, int(run))].append(((int(aid), int(num)), node))
        return out
