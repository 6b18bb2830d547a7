"""Versions of a project with a tag, a page per read transaction (``SqlMetaStore`` mixin;
``artfs/tagsearch.py`` says what a page is).

One query finds the page: the project's live artifacts in name order (the ``UNIQUE
(project_id, name)`` index), each probed in ``version_tags_by_tag`` (artifact_id, tag),
joined to its live versions, keyset-paged after the cursor and stopped at ``limit + 1``
rows (the extra row says there is a next page). Two more fetch all tags and damage counts
of the page's versions, over the page's artifacts only. No table or index of its own: the
index of schema 10 already answers "which versions of this artifact carry tag x".
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..models import VersionSummary
from ..tagsearch import TaggedPage, TaggedVersion, cursor
from .editsdb import LIVE_ARTIFACT

C = TypeVar("C")


class TagSearchQueries(Generic[C]):
    """Mixed into ``SqlMetaStore``, which provides what is declared here."""

    _COLLATE: str

    if TYPE_CHECKING:  # no stubs at runtime: they would shadow the other mixins' methods

        def _read(self) -> AbstractContextManager[C]: ...
        def _q(self, c: C, sql: str, *args: Any) -> Any: ...
        def _project_id(self, c: C, project: str) -> int: ...

    def tagged_versions(
        self, project: str, tag: str, after: tuple[str, int] | None, limit: int
    ) -> TaggedPage:
        """The live versions of ``project`` with ``tag`` after (artifact, number) ``after``,
        by artifact name (bytewise) then number, ``limit`` at most."""
        name = f"a.name{self._COLLATE}"
        query = (
            "SELECT a.id, a.name, v.number, v.digest, v.created, v.file_count, v.total_size "
            "FROM artifacts a "
            "JOIN version_tags t ON t.artifact_id = a.id AND t.tag = ? "
            "JOIN versions v ON v.artifact_id = t.artifact_id AND v.number = t.number "
            f"WHERE a.project_id = ? AND NOT v.deleted AND {LIVE_ARTIFACT}"
        )
        with self._read() as c:
            args: list[Any] = [tag, self._project_id(c, project)]
            if after is not None:
                query += f" AND ({name} > ? OR ({name} = ? AND v.number > ?))"
                args += [after[0], after[0], after[1]]
            query += f" ORDER BY {name}, v.number LIMIT ?"
            rows = self._q(c, query, *args, limit + 1).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            tags, damaged = self._page_facts(c, {int(r[0]) for r in rows})
        versions = [
            TaggedVersion(
                project,
                str(art),
                VersionSummary(
                    int(number),
                    str(digest),
                    float(created),
                    int(count),
                    int(size),
                    damaged.get((int(aid), int(number)), 0),
                    tuple(tags.get((int(aid), int(number)), ())),
                ),
            )
            for aid, art, number, digest, created, count, size in rows
        ]
        last = versions[-1] if more else None
        return TaggedPage(
            versions, None if last is None else cursor(last.artifact, last.summary.number)
        )

    def _page_facts(
        self, c: C, ids: set[int]
    ) -> tuple[dict[tuple[int, int], list[str]], dict[tuple[int, int], int]]:
        """Every tag and the damaged-blob count of the versions of artifacts ``ids``."""
        tags: dict[tuple[int, int], list[str]] = defaultdict(list)
        damaged: dict[tuple[int, int], int] = {}
        if not ids:
            return tags, damaged
        marks = ",".join("?" * len(ids))
        for aid, number, tag in self._q(
            c,
            f"SELECT artifact_id, number, tag FROM version_tags WHERE artifact_id IN ({marks}) "
            f"ORDER BY tag{self._COLLATE}",
            *sorted(ids),
        ):
            tags[(int(aid), int(number))].append(str(tag))
        for aid, number, count in self._q(
            c,
            "SELECT artifact_id, number, count(*) FROM damaged_versions "
            f"WHERE artifact_id IN ({marks}) GROUP BY artifact_id, number",
            *sorted(ids),
        ):
            damaged[(int(aid), int(number))] = int(count)
        return tags, damaged
