"""The metadata side of the lineage graph (``lineage_graph.py``): batched, one-hop queries
over ``version_inputs`` that the pure walk calls once per hop level.

A mixin of ``SqlMetaStore`` (its ``_q``/``_read``/``_artifact_row``/``_live_number``). The
whole walk runs inside one read transaction, so the graph is one consistent snapshot.
Each level is fetched in chunks of ``KEY_CHUNK`` versions, grouped by artifact
(``artifact_id=? AND number IN (...)`` OR-ed), which both SQLite and PostgreSQL answer
from the ``version_inputs`` primary key (up) or its ``by_input`` index (down); no
recursive SQL, so a depth the user asks for never becomes a query the planner must bound.

Runs (``rundb.py``) join each level: a version's inputs include the runs that logged it,
its consumers the runs that used it; a run's inputs and consumers are its input and
output versions. A level with runs costs two more queries (links, then the run rows).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from ..lineage_graph import (
    MAX_LINEAGE_NODES,
    LineageGraph,
    LineageNode,
    version_node,
    walk,
)

C = TypeVar("C")
Key = tuple[int, int]  # (artifact id, number)

KEY_CHUNK = 400  # versions per query (<= 800 bound variables: old SQLite allows 999)


def _where(column_aid: str, column_number: str, keys: Sequence[Key]) -> tuple[str, list[int]]:
    """``(aid=? AND number IN (?,..)) OR ...`` for ``keys``, grouped by artifact."""
    by_artifact: dict[int, list[int]] = defaultdict(list)
    for aid, number in keys:
        by_artifact[aid].append(number)
    terms, args = [], []
    for aid, numbers in by_artifact.items():
        terms.append(f"({column_aid}=? AND {column_number} IN ({','.join('?' * len(numbers))}))")
        args += [aid, *numbers]
    return " OR ".join(terms), args


class LineageQueries(Generic[C]):
    """Lineage-graph reads over a SQL store (mixed into ``SqlMetaStore``)."""

    _COLLATE: str

    def _read(self) -> AbstractContextManager[C]:
        raise NotImplementedError

    def _q(self, c: C, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    def _artifact_row(
        self, c: C, project: str, artifact: str, *, lock: bool = False
    ) -> tuple[Any, ...]:
        raise NotImplementedError

    def _live_number(self, c: C, artifact_id: int, number: int, label: str) -> None:
        raise NotImplementedError

    def _runs_linked(
        self, c: C, table: str, acol: str, ncol: str, keys: Sequence[Key], now: float
    ) -> dict[Key, list[tuple[Key, LineageNode]]]:
        raise NotImplementedError

    def _run_versions(
        self, c: C, rowids: Sequence[int], *, inputs: bool
    ) -> dict[Key, list[tuple[Key, LineageNode]]]:
        raise NotImplementedError

    def lineage(
        self,
        project: str,
        artifact: str,
        number: int,
        *,
        up: int | None,
        down: int | None,
        can_read: Callable[[str], bool],
        max_nodes: int = MAX_LINEAGE_NODES,
        now: float | None = None,
    ) -> LineageGraph:
        """``now``: the time a running run's liveness is judged at (``runs.py``)."""
        at = time.time() if now is None else now
        with self._read() as c:
            aid = int(self._artifact_row(c, project, artifact)[0])
            self._live_number(c, aid, number, f"{project}/{artifact}")
            (digest,) = self._q(
                c, "SELECT digest FROM versions WHERE artifact_id=? AND number=?", aid, number
            ).fetchone()
            return walk(
                (aid, number),
                version_node(project, artifact, number, str(digest)),
                up=up,
                down=down,
                inputs_of=lambda keys: self._neighbours(c, keys, at, up=True),
                consumers_of=lambda keys: self._neighbours(c, keys, at, up=False),
                can_read=can_read,
                max_nodes=max_nodes,
            )

    def _neighbours(
        self, c: C, keys: Sequence[Key], now: float, *, up: bool
    ) -> dict[Key, list[tuple[Key, LineageNode]]]:
        """One hop level: versions' version neighbours first, then their runs; runs'
        versions. (A run key is ``(RUN_KEY, row id)``: artifact ids are positive.)"""
        from .rundb import RUN_KEY

        versions = [k for k in keys if k[0] != RUN_KEY]
        runs = [k[1] for k in keys if k[0] == RUN_KEY]
        out: dict[Key, list[tuple[Key, LineageNode]]] = defaultdict(list)
        if versions:
            near = self._inputs_of(c, versions) if up else self._consumers_of(c, versions)
            if up:
                linked = self._runs_linked(c, "run_outputs", "artifact_id", "number", versions, now)
            else:
                linked = self._runs_linked(
                    c, "run_inputs", "input_artifact_id", "input_number", versions, now
                )
            for part in (near, linked):
                for k, found in part.items():
                    out[k] += found
        if runs:
            out.update(self._run_versions(c, runs, inputs=up))
        return out

    def _inputs_of(self, c: C, keys: Sequence[Key]) -> dict[Key, list[tuple[Key, LineageNode]]]:
        """Each version's inputs in commit order, deleted ones included (flagged): the
        lineage outlives the versions it names."""
        out: dict[Key, list[tuple[Key, LineageNode]]] = defaultdict(list)
        for i in range(0, len(keys), KEY_CHUNK):
            where, args = _where("i.artifact_id", "i.number", keys[i : i + KEY_CHUNK])
            rows = self._q(
                c,
                "SELECT i.artifact_id, i.number, i.input_artifact_id, i.input_number, "
                "i.input_digest, p.name, a.name, v.deleted FROM version_inputs i "
                "JOIN artifacts a ON a.id = i.input_artifact_id "
                "JOIN projects p ON p.id = a.project_id "
                "LEFT JOIN versions v ON v.artifact_id = i.input_artifact_id "
                "AND v.number = i.input_number "
                f"WHERE {where} ORDER BY i.artifact_id, i.number, i.position",
                *args,
            )
            for aid, num, in_aid, in_num, in_digest, pname, aname, deleted in rows:
                node = version_node(
                    str(pname), str(aname), int(in_num), str(in_digest), bool(deleted)
                )
                out[(int(aid), int(num))].append(((int(in_aid), int(in_num)), node))
        return out

    def _consumers_of(self, c: C, keys: Sequence[Key]) -> dict[Key, list[tuple[Key, LineageNode]]]:
        """Each version's live consumers, by project, artifact and number (as ``used_by``)."""
        out: dict[Key, list[tuple[Key, LineageNode]]] = defaultdict(list)
        for i in range(0, len(keys), KEY_CHUNK):
            where, args = _where("i.input_artifact_id", "i.input_number", keys[i : i + KEY_CHUNK])
            rows = self._q(
                c,
                "SELECT i.input_artifact_id, i.input_number, v.artifact_id, v.number, v.digest, "
                "p.name, a.name FROM version_inputs i "
                "JOIN versions v ON v.artifact_id = i.artifact_id AND v.number = i.number "
                "JOIN artifacts a ON a.id = v.artifact_id JOIN projects p ON p.id = a.project_id "
                f"WHERE ({where}) AND NOT v.deleted "
                f"ORDER BY p.name{self._COLLATE}, a.name{self._COLLATE}, v.number",
                *args,
            )
            for in_aid, in_num, aid, num, digest, pname, aname in rows:
                node = version_node(str(pname), str(aname), int(num), str(digest))
                out[(int(in_aid), int(in_num))].append(((int(aid), int(num)), node))
        return out
