"""Which lineage inputs a mount observed rather than the committer declared (schema 9).

Observed inputs (``fs/observe.py``) are stored in ``version_inputs`` like declared ones,
after them, so every lineage query (``used_by``, the graph) sees both with no change;
``observed_inputs`` marks their positions. A table of its own rather than a column, so
the upgrade stays idempotent DDL; a row's absence means declared, which is what every
input committed before schema 9 was.

Observed inputs are best effort, declared ones strict: an observed reference whose
version is gone by the commit is skipped (a declared one fails the commit), and one that
is also declared is stored once, as declared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from ..errors import NotFound
from ..lineage import MAX_INPUTS
from ..models import DECLARED, OBSERVED
from ..names import Ref

# Schema 9: positions in version_inputs that a mount observed. Idempotent DDL, like 3-7.
OBSERVED_INPUTS_SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS observed_inputs (
    artifact_id {int} NOT NULL,
    number      {int} NOT NULL,
    position    {int} NOT NULL,
    PRIMARY KEY (artifact_id, number, position)
){without_rowid};
"""

# The kind column of a version's inputs: join this to ``version_inputs i``.
KIND_JOIN = (
    "LEFT JOIN observed_inputs o ON o.artifact_id = i.artifact_id "
    "AND o.number = i.number AND o.position = i.position "
)

C = TypeVar("C")


def input_kind(observed_position: object) -> str:
    """The kind of an input from ``KIND_JOIN``'s ``o.position`` (NULL: declared)."""
    return DECLARED if observed_position is None else OBSERVED


Resolved = tuple[int, int, str]  # (artifact id, number, digest)


class ObservedInputQueries(Generic[C]):
    """Resolving and marking observed inputs (mixed into ``SqlMetaStore``)."""

    def _q(self, c: C, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    def _resolve_input(self, c: C, ref: Ref) -> Resolved:
        raise NotImplementedError

    def _resolve_observed(
        self, c: C, refs: Sequence[Ref], declared: Sequence[Resolved]
    ) -> list[Resolved]:
        """The observed inputs still there, not declared, each once, within ``MAX_INPUTS``."""
        seen = set(declared)
        out: list[Resolved] = []
        for ref in refs:
            if len(declared) + len(out) >= MAX_INPUTS:
                break
            try:
                resolved = self._resolve_input(c, ref)
            except NotFound:
                continue  # deleted since it was read: the observation is dropped
            if resolved not in seen:
                seen.add(resolved)
                out.append(resolved)
        return out

    def _mark_observed(self, c: C, aid: int, number: int, first: int, end: int) -> None:
        """Positions ``first`` to ``end - 1`` of the version's inputs were observed."""
        for position in range(first, end):
            self._q(
                c,
                "INSERT INTO observed_inputs (artifact_id, number, position) VALUES (?,?,?)",
                aid,
                number,
                position,
            )
