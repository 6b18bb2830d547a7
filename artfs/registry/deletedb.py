"""Deleting versions and whole artifacts, and the retention that deletes versions whose time to
live has passed (schema 10; ``artfs delete``, ``artfs gc``). A mixin of ``SqlMetaStore``.

Versions are never physically removed: ``deleted`` marks them, so numbers are never reused
(a mount caches a version's manifest forever under its number). A deleted artifact keeps its
row too (``deleted_artifacts``, editsdb.py): lineage still names it and its numbering goes on
if it is created again. Every path that removes aliases checks protected ones in the same
transaction (``_guard_protected``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from ..errors import Conflict
from ..names import LATEST

C = TypeVar("C")

MAX_EXPIRED_PER_GC = 10_000  # versions one collection deletes for their TTL, at most


class DeleteQueries(Generic[C]):
    """Version and artifact deletion, and expiry (mixed into ``SqlMetaStore``)."""

    _COLLATE: str
    _LOCK_ARTIFACT: str

    def _write(self) -> AbstractContextManager[C]:
        raise NotImplementedError

    def _q(self, c: C, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    def _artifact_row(
        self, c: C, project: str, artifact: str, *, lock: bool = False
    ) -> tuple[Any, ...]:
        raise NotImplementedError

    def _live_number(self, c: C, artifact_id: int, number: int, label: str) -> None:
        raise NotImplementedError

    def _upsert_alias(self, c: C, aid: int, alias: str, number: int) -> None:
        raise NotImplementedError

    def _aliases_at(self, c: C, aid: int, number: int | None) -> list[str]:
        raise NotImplementedError

    def _guard_protected(
        self, c: C, aid: int, label: str, names: Any, admin: bool, what: str
    ) -> None:
        raise NotImplementedError

    def delete_version(
        self, project: str, artifact: str, number: int, *, force: bool, admin: bool = True
    ) -> None:
        label = f"{project}/{artifact}"
        with self._write() as c:
            aid = self._artifact_row(c, project, artifact, lock=True)[0]
            self._live_number(c, aid, number, label)
            held = [
                r[0]
                for r in self._q(
                    c,
                    "SELECT name FROM aliases WHERE artifact_id=? AND number=? AND name<>? "
                    f"ORDER BY name{self._COLLATE}",
                    aid,
                    number,
                    LATEST,
                )
            ]
            if held and not force:
                raise Conflict(
                    f"version {label}:v{number} holds aliases {', '.join(held)}: "
                    "move them first or use --force"
                )
            self._guard_protected(c, aid, label, held, admin, "remove")
            self._delete_version_rows(c, aid, number)

    def _delete_version_rows(self, c: C, aid: int, number: int) -> None:
        """Delete a live version inside a transaction holding its artifact: its aliases go,
        ``latest`` moves to the newest remaining version."""
        self._q(
            c,
            "DELETE FROM protected_aliases WHERE artifact_id=? AND name IN "
            "(SELECT name FROM aliases WHERE artifact_id=? AND number=?)",
            aid,
            aid,
            number,
        )
        self._q(c, "DELETE FROM version_expiry WHERE artifact_id=? AND number=?", aid, number)
        self._q(c, "DELETE FROM aliases WHERE artifact_id=? AND number=?", aid, number)
        self._q(c, "DELETE FROM canonical_manifests WHERE artifact_id=? AND number=?", aid, number)
        self._q(c, "DELETE FROM manifests WHERE artifact_id=? AND number=?", aid, number)
        self._q(c, "UPDATE versions SET deleted=TRUE WHERE artifact_id=? AND number=?", aid, number)
        if (
            self._q(
                c, "SELECT 1 FROM aliases WHERE artifact_id=? AND name=?", aid, LATEST
            ).fetchone()
            is None
        ):
            row = self._q(
                c, "SELECT max(number) FROM versions WHERE artifact_id=? AND NOT deleted", aid
            ).fetchone()
            if row is not None and row[0] is not None:
                self._upsert_alias(c, aid, LATEST, int(row[0]))

    def delete_artifact(
        self, project: str, artifact: str, *, force: bool, admin: bool, when: float
    ) -> int:
        """Delete every version and alias; how many versions. Conflict while aliases other
        than ``latest`` exist unless ``force``; protected ones need ``admin`` too."""
        label = f"{project}/{artifact}"
        with self._write() as c:
            aid = int(self._artifact_row(c, project, artifact, lock=True)[0])
            held = self._aliases_at(c, aid, None)
            if held and not force:
                raise Conflict(
                    f"artifact {label} has aliases {', '.join(held)}: remove them first or "
                    "use --force"
                )
            self._guard_protected(c, aid, label, held, admin, "remove")
            numbers = [
                int(r[0])
                for r in self._q(
                    c, "SELECT number FROM versions WHERE artifact_id=? AND NOT deleted", aid
                )
            ]
            for number in numbers:
                self._delete_version_rows(c, aid, number)
            self._q(c, "DELETE FROM aliases WHERE artifact_id=?", aid)
            self._q(c, "DELETE FROM protected_aliases WHERE artifact_id=?", aid)
            self._q(
                c, "INSERT INTO deleted_artifacts (artifact_id, deleted) VALUES (?, ?)", aid, when
            )
            return len(numbers)

    def delete_expired(self, now: float, *, dry_run: bool) -> list[str]:
        """Delete (``dry_run``: only list) the live versions whose time to live has passed and
        that no alias but ``latest`` holds, in one transaction; their refs, sorted."""
        with self._write() as c:
            rows = self._q(
                c,
                "SELECT e.artifact_id, e.number, p.name, a.name FROM version_expiry e "
                "JOIN versions v ON v.artifact_id = e.artifact_id AND v.number = e.number "
                "JOIN artifacts a ON a.id = e.artifact_id JOIN projects p ON p.id = a.project_id "
                "WHERE e.expires <= ? AND NOT v.deleted AND NOT EXISTS (SELECT 1 FROM aliases l "
                "WHERE l.artifact_id = e.artifact_id AND l.number = e.number AND l.name <> ?) "
                f"ORDER BY e.expires LIMIT {MAX_EXPIRED_PER_GC}",
                now,
                LATEST,
            ).fetchall()
            gone = []
            for aid, number, project, artifact in rows:
                if not dry_run:
                    # Hold the artifact as every alias move does, then look again: an alias
                    # set since the query above (PostgreSQL reads committed) keeps it.
                    self._q(
                        c, "SELECT a.id FROM artifacts a WHERE a.id=?" + self._LOCK_ARTIFACT, aid
                    )
                    held = self._aliases_at(c, int(aid), int(number))
                    live = self._q(
                        c,
                        "SELECT 1 FROM versions WHERE artifact_id=? AND number=? AND NOT deleted",
                        aid,
                        number,
                    ).fetchone()
                    if held or live is None:
                        continue
                    self._delete_version_rows(c, int(aid), int(number))
                gone.append(f"{project}/{artifact}:v{number}")
            return sorted(gone)
