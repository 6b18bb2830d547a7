"""A page of versions in one read transaction (``SqlMetaStore`` mixin): the web page's
version list (server/ui). ``get_version`` per row is six queries and a transaction each;
a page of 50 rows on PostgreSQL paid that 50 times (231-301 ms, docs/decisions.md,
"Registry web page"). Here each kind of fact is one query over the page's numbers."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..errors import InvalidInput
from ..models import VersionInfo, VersionInput
from .observeddb import KIND_JOIN, input_kind

C = TypeVar("C")

VERSION_COLS = (
    "number, digest, created, creator, description, metadata, parent, file_count, total_size"
)
MAX_PAGE = 500  # versions asked for at once (one IN list each)


class VersionPageQueries(Generic[C]):
    """Mixed into ``SqlMetaStore``, which provides what is declared here."""

    _COLLATE: str

    if TYPE_CHECKING:  # no stubs at runtime: they would shadow the other mixins' methods

        def _read(self) -> AbstractContextManager[C]: ...
        def _q(self, c: C, sql: str, *args: Any) -> Any: ...
        def _artifact_row(
            self, c: C, project: str, artifact: str, *, lock: bool = False
        ) -> tuple[Any, ...]: ...

    def get_versions(
        self, project: str, artifact: str, numbers: Sequence[int]
    ) -> list[VersionInfo]:
        """The live versions among ``numbers``, in that order (deleted or unknown ones are
        left out), each as ``get_version`` gives it."""
        wanted = list(dict.fromkeys(numbers))
        if len(wanted) > MAX_PAGE:
            raise InvalidInput(f"at most {MAX_PAGE} versions at once")
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        with self._read() as c:
            aid, atype, *_ = self._artifact_row(c, project, artifact)

            def rows(sql: str) -> Any:
                return self._q(c, sql, aid, *wanted)

            found = {
                int(r[0]): r
                for r in rows(
                    f"SELECT {VERSION_COLS} FROM versions "
                    f"WHERE artifact_id=? AND number IN ({marks}) AND NOT deleted"
                )
            }
            aliases: dict[int, list[str]] = defaultdict(list)
            for n, name in rows(
                f"SELECT number, name FROM aliases WHERE artifact_id=? AND number IN ({marks}) "
                f"ORDER BY name{self._COLLATE}"
            ):
                aliases[int(n)].append(str(name))
            inputs: dict[int, list[VersionInput]] = defaultdict(list)
            for n, p, a, number, digest, observed in rows(
                "SELECT i.number, p.name, a.name, i.input_number, i.input_digest, o.position "
                f"FROM version_inputs i {KIND_JOIN}"
                "JOIN artifacts a ON a.id = i.input_artifact_id "
                "JOIN projects p ON p.id = a.project_id "
                f"WHERE i.artifact_id=? AND i.number IN ({marks}) ORDER BY i.number, i.position"
            ):
                inputs[int(n)].append(
                    VersionInput(
                        str(p), str(a), int(number), str(digest), kind=input_kind(observed)
                    )
                )
            damaged = {
                int(n): int(k)
                for n, k in rows(
                    "SELECT number, count(*) FROM damaged_versions "
                    f"WHERE artifact_id=? AND number IN ({marks}) GROUP BY number"
                )
            }
            tags: dict[int, list[str]] = defaultdict(list)
            for n, tag in rows(
                f"SELECT number, tag FROM version_tags WHERE artifact_id=? AND number IN ({marks}) "
                f"ORDER BY tag{self._COLLATE}"
            ):
                tags[int(n)].append(str(tag))
            expiry = {
                int(n): float(e)
                for n, e in rows(
                    "SELECT number, expires FROM version_expiry "
                    f"WHERE artifact_id=? AND number IN ({marks})"
                )
            }
        out: list[VersionInfo] = []
        for n in wanted:
            if n not in found:
                continue
            num, digest, created, creator, description, metadata, parent, count, size = found[n]
            out.append(
                VersionInfo(
                    project,
                    artifact,
                    int(num),
                    digest,
                    float(created),
                    creator,
                    description,
                    json.loads(metadata),
                    None if parent is None else int(parent),
                    int(count),
                    int(size),
                    tuple(aliases[n]),
                    atype,
                    tuple(inputs[n]),
                    damaged.get(n, 0),
                    tuple(tags[n]),
                    expiry.get(n),
                )
            )
        return out
