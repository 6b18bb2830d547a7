"""The metadata side of blob integrity (schema 6, ``integrity.py``): which blobs are known
damaged or missing, and which live versions they break.

A mixin of ``SqlMetaStore`` (its ``_q``/``_read``/``_write``), kept apart so the query
module stays readable. Two tables: ``damaged_blobs`` (one row per blob: state, when found,
why) and ``damaged_versions`` (the live versions referencing it when it was recorded), so
showing a version as damaged is one indexed count, never a manifest scan.

Recording damage bumps the gc epoch, like a collection's deletions: every server then drops
the blob sizes it cached, so none answers "already present" for a quarantined blob.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from .meta import DamagedBlob, VersionKey

# Schema 6: damaged / missing blobs and the versions they break. Idempotent DDL, like 3-5.
DAMAGE_SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS damaged_blobs (
    sha256 TEXT PRIMARY KEY,
    state  TEXT NOT NULL,
    found  {real} NOT NULL,
    detail TEXT NOT NULL
){without_rowid};
CREATE TABLE IF NOT EXISTS damaged_versions (
    artifact_id {int} NOT NULL,
    number      {int} NOT NULL,
    sha256      TEXT NOT NULL,
    PRIMARY KEY (artifact_id, number, sha256)
){without_rowid};
CREATE INDEX IF NOT EXISTS damaged_versions_by_blob ON damaged_versions (sha256);
"""

C = TypeVar("C")

_BUMP_EPOCH = (
    "INSERT INTO registry (key, value) VALUES ('gc_epoch', '1') "
    "ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(registry.value AS BIGINT) + 1 AS TEXT)"
)


class DamageQueries(Generic[C]):
    """Integrity records over a SQL store (mixed into ``SqlMetaStore``)."""

    def _read(self) -> AbstractContextManager[C]:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[C]:
        raise NotImplementedError

    def _q(self, c: C, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    def record_damage(
        self, sha256: str, state: str, found: float, detail: str, versions: Sequence[VersionKey]
    ) -> None:
        """Record (or update) a damaged / missing blob and the live versions that use it."""
        with self._write() as c:
            self._q(
                c,
                "INSERT INTO damaged_blobs (sha256, state, found, detail) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (sha256) DO UPDATE SET state = excluded.state, "
                "found = excluded.found, detail = excluded.detail",
                sha256,
                state,
                found,
                detail,
            )
            for aid, number in versions:
                self._q(
                    c,
                    "INSERT INTO damaged_versions (artifact_id, number, sha256) VALUES (?, ?, ?) "
                    "ON CONFLICT (artifact_id, number, sha256) DO NOTHING",
                    aid,
                    number,
                    sha256,
                )
            self._q(c, _BUMP_EPOCH)

    def clear_damage(self, digests: Collection[str]) -> list[str]:
        """Forget these blobs' damage (they were healed); returns those that had a record.
        A read first: the usual upload finds no record and writes nothing."""
        wanted = sorted(digests)
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        with self._read() as c:
            found = [
                str(r[0])
                for r in self._q(
                    c, f"SELECT sha256 FROM damaged_blobs WHERE sha256 IN ({marks})", *wanted
                )
            ]
        if found:
            marks = ",".join("?" * len(found))
            with self._write() as c:
                self._q(c, f"DELETE FROM damaged_versions WHERE sha256 IN ({marks})", *found)
                self._q(c, f"DELETE FROM damaged_blobs WHERE sha256 IN ({marks})", *found)
        return found

    def damage_records(self) -> list[DamagedBlob]:
        """Every damaged / missing blob, with the live versions it breaks."""
        with self._read() as c:
            rows = self._q(
                c, "SELECT sha256, state, found, detail FROM damaged_blobs ORDER BY sha256"
            ).fetchall()
            users: dict[str, list[str]] = {}
            for sha, project, artifact, number in self._q(
                c,
                "SELECT d.sha256, p.name, a.name, d.number FROM damaged_versions d "
                "JOIN versions v ON v.artifact_id = d.artifact_id AND v.number = d.number "
                "JOIN artifacts a ON a.id = d.artifact_id "
                "JOIN projects p ON p.id = a.project_id "
                "WHERE NOT v.deleted ORDER BY p.name, a.name, d.number",
            ):
                users.setdefault(str(sha), []).append(f"{project}/{artifact}:v{number}")
        return [
            DamagedBlob(str(s), str(st), float(f), str(d), tuple(users.get(str(s), [])))
            for s, st, f, d in rows
        ]

    def version_labels(self, keys: Collection[VersionKey]) -> dict[VersionKey, str]:
        """ "project/artifact:vN" of each version key (for reports)."""
        wanted = set(keys)
        if not wanted:
            return {}
        with self._read() as c:
            names = {
                int(aid): f"{p}/{a}"
                for aid, p, a in self._q(
                    c,
                    "SELECT a.id, p.name, a.name FROM artifacts a "
                    "JOIN projects p ON p.id = a.project_id",
                )
            }
        return {(aid, n): f"{names.get(aid, '?')}:v{n}" for aid, n in wanted}

    def _damaged_count(self, c: C, artifact_id: int, number: int) -> int:
        row = self._q(
            c,
            "SELECT count(*) FROM damaged_versions WHERE artifact_id=? AND number=?",
            artifact_id,
            number,
        ).fetchone()
        return int(row[0])

    def _damaged_counts(self, c: C, where: str, arg: int) -> dict[tuple[int, int], int]:
        """Damaged blobs per version of the artifacts an ``_artifact_infos`` query selects
        (``where`` over ``artifacts a``)."""
        return {
            (int(aid), int(n)): int(k)
            for aid, n, k in self._q(
                c,
                "SELECT d.artifact_id, d.number, count(*) FROM damaged_versions d "
                f"JOIN artifacts a ON a.id = d.artifact_id WHERE {where} "
                "GROUP BY d.artifact_id, d.number",
                arg,
            )
        }
