"""Stored canonical manifests (schema 11): each version's manifest in canonical form
(``manifest_stream.py``), gzip, beside the JSON form in ``manifests``.

A mixin of ``SqlMetaStore`` (its ``_q``/``_read``/``_write``). The canonical bytes are what a
mount fetches (``GET .../manifest?format=canonical``) and what the web page compares two
versions over (``server/ui/canonical.py``); converting the stored JSON on every request cost
86 ms per 100,000 files and seconds per 1,000,000 (docs/decisions.md, "Manifests stored
in canonical form"). A commit writes both forms in one transaction; a version committed
before schema 11 has no row here until its first canonical read converts it and stores the
result (``put_canonical_gz``), so old registries upgrade lazily, one version at a time.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..errors import NotFound

# Schema 11: the canonical form of each live version's manifest. Idempotent DDL.
CANONICAL_SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS canonical_manifests (
    artifact_id {int} NOT NULL,
    number      {int} NOT NULL,
    has_refs    {bool} NOT NULL,
    data        {blob} NOT NULL,
    PRIMARY KEY (artifact_id, number),
    FOREIGN KEY (artifact_id, number) REFERENCES versions(artifact_id, number)
){without_rowid};
"""

C = TypeVar("C")


class CanonicalQueries(Generic[C]):
    """Mixed into ``SqlMetaStore``, which provides what is declared here."""

    if TYPE_CHECKING:  # no stubs at runtime: they would shadow the other mixins' methods

        def _read(self) -> AbstractContextManager[C]: ...
        def _write(self) -> AbstractContextManager[C]: ...
        def _q(self, c: C, sql: str, *args: Any) -> Any: ...
        def _artifact_row(
            self, c: C, project: str, artifact: str, *, lock: bool = False
        ) -> tuple[Any, ...]: ...

    def get_canonical_gz(
        self, project: str, artifact: str, number: int
    ) -> tuple[str, bool, bytes] | str:
        """(digest, has refs, gzip canonical bytes) of a live version's manifest, or only
        its digest where none is stored yet (a version committed before schema 11)."""
        with self._read() as c:
            aid = self._artifact_row(c, project, artifact)[0]
            row = self._q(
                c,
                "SELECT v.digest, cm.has_refs, cm.data FROM versions v "
                "LEFT JOIN canonical_manifests cm "
                "ON cm.artifact_id = v.artifact_id AND cm.number = v.number "
                "WHERE v.artifact_id=? AND v.number=? AND NOT v.deleted",
                aid,
                number,
            ).fetchone()
        if row is None:
            raise NotFound(f"version {project}/{artifact}:v{number} not found")
        if row[2] is None:
            return str(row[0])
        return str(row[0]), bool(row[1]), bytes(row[2])

    def put_canonical_gz(
        self, project: str, artifact: str, number: int, digest: str, has_refs: bool, data: bytes
    ) -> None:
        """Store the canonical form converted from an older version's JSON (a no-op if the
        version is gone, holds other content, or a concurrent reader stored it first)."""
        with self._write() as c:
            aid = self._artifact_row(c, project, artifact)[0]
            self._q(
                c,
                "INSERT INTO canonical_manifests (artifact_id, number, has_refs, data) "
                "SELECT artifact_id, number, ?, ? FROM versions "
                "WHERE artifact_id=? AND number=? AND digest=? AND NOT deleted "
                "ON CONFLICT (artifact_id, number) DO NOTHING",
                has_refs,
                data,
                aid,
                number,
                digest,
            )

    def manifest_forms_after(
        self, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[tuple[int, int], str, bytes, bytes | None]]:
        where, args = (
            ("", ()) if after is None else (" AND (v.artifact_id, v.number) > (?, ?)", after)
        )
        with self._read() as c:
            rows = self._q(
                c,
                "SELECT v.artifact_id, v.number, v.digest, m.data, cm.data FROM versions v "
                "JOIN manifests m ON m.artifact_id = v.artifact_id AND m.number = v.number "
                "LEFT JOIN canonical_manifests cm "
                "ON cm.artifact_id = v.artifact_id AND cm.number = v.number "
                f"WHERE NOT v.deleted{where} ORDER BY v.artifact_id, v.number LIMIT ?",
                *args,
                limit,
            ).fetchall()
        return [
            ((int(a), int(n)), str(d), bytes(j), None if cm is None else bytes(cm))
            for a, n, d, j, cm in rows
        ]

    def replace_canonical_gz(
        self, key: tuple[int, int], digest: str, has_refs: bool, data: bytes
    ) -> bool:
        aid, number = key
        with self._write() as c:
            live = self._q(
                c,
                "SELECT 1 FROM versions WHERE artifact_id=? AND number=? AND digest=? "
                "AND NOT deleted",
                aid,
                number,
                digest,
            ).fetchone()
            if live is None:
                return False
            self._delete_canonical(c, aid, number)
            self._insert_canonical(c, aid, number, has_refs, data)
        return True

    def _insert_canonical(self, c: C, aid: int, number: int, has_refs: bool, data: bytes) -> None:
        self._q(
            c,
            "INSERT INTO canonical_manifests (artifact_id, number, has_refs, data) "
            "VALUES (?, ?, ?, ?)",
            aid,
            number,
            has_refs,
            data,
        )

    def _delete_canonical(self, c: C, aid: int, number: int) -> None:
        self._q(c, "DELETE FROM canonical_manifests WHERE artifact_id=? AND number=?", aid, number)
