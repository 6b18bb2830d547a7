"""The metadata side of blob garbage collection (schema 3, ``gc.py``): the doomed set, the
gc epoch, manifests paged for the collector, marking and unmarking blobs.

A mixin of ``SqlMetaStore`` (its ``_q``/``_read``/``_write``/``_lock_gc``), kept apart so the
query module stays readable; the protocol and the concurrency argument are in gc.py and
docs/decisions.md ("Blob garbage collection").
"""

from __future__ import annotations

from collections.abc import Collection, Container
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from .meta import BlobsOf, VersionKey

DOOM_ROWS = 400  # rows per multi-row INSERT (SQLite allows 999 variables on old builds)
IN_CHUNK = 500  # digests per IN (...) lookup

C = TypeVar("C")


class GcQueries(Generic[C]):
    """Garbage-collection records over a SQL store (mixed into ``SqlMetaStore``)."""

    def _read(self) -> AbstractContextManager[C]:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[C]:
        raise NotImplementedError

    def _q(self, c: C, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    def _lock_gc(self, c: C, *, exclusive: bool) -> None:
        raise NotImplementedError

    def _gc_epoch(self, c: C) -> int:
        row = self._q(c, "SELECT value FROM registry WHERE key='gc_epoch'").fetchone()
        return 0 if row is None else int(row[0])

    def _doomed_among(self, c: C, digests: Collection[str]) -> set[str]:
        if not digests:
            return set()
        (count,) = self._q(c, "SELECT count(*) FROM doomed_blobs").fetchone()
        if not count:
            return set()  # the usual case: no collection in progress
        if int(count) <= max(len(digests), 1000):
            wanted = set(digests)
            return {str(r[0]) for r in self._q(c, "SELECT sha256 FROM doomed_blobs")} & wanted
        found: set[str] = set()
        listed = sorted(digests)
        for i in range(0, len(listed), IN_CHUNK):
            chunk = listed[i : i + IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                str(r[0])
                for r in self._q(
                    c, f"SELECT sha256 FROM doomed_blobs WHERE sha256 IN ({marks})", *chunk
                )
            )
        return found

    def gc_epoch(self) -> int:
        with self._read() as c:
            return self._gc_epoch(c)

    def doomed_among(self, digests: Collection[str]) -> tuple[set[str], int]:
        with self._read() as c:
            doomed = self._doomed_among(c, digests)
            return doomed, self._gc_epoch(c)

    def doomed_blobs(self) -> list[str]:
        with self._read() as c:
            return sorted(
                str(r[0]) for r in self._q(c, "SELECT sha256 FROM doomed_blobs ORDER BY sha256")
            )

    def manifests_after(
        self, after: VersionKey | None, limit: int
    ) -> list[tuple[VersionKey, bytes]]:
        # Keyset pagination over the manifests table, which holds exactly the live versions.
        where, args = (
            ("", ()) if after is None else (" WHERE (artifact_id, number) > (?, ?)", after)
        )
        with self._read() as c:
            rows = self._q(
                c,
                f"SELECT artifact_id, number, data FROM manifests{where} "
                "ORDER BY artifact_id, number LIMIT ?",
                *args,
                limit,
            ).fetchall()
        return [((int(a), int(n)), bytes(data)) for a, n, data in rows]

    def mark_doomed(
        self,
        candidates: Collection[str],
        seen: Container[VersionKey],
        blobs_of: BlobsOf,
        marked: float,
        *,
        dry_run: bool,
    ) -> list[str]:
        with self._read() if dry_run else self._write() as c:
            if not dry_run:
                self._lock_gc(c, exclusive=True)
            remaining = set(candidates)
            keys = [
                (int(a), int(n))
                for a, n in self._q(
                    c, "SELECT artifact_id, number FROM versions WHERE NOT deleted"
                ).fetchall()
            ]
            for key in keys:
                if key in seen or not remaining:
                    continue
                row = self._q(
                    c, "SELECT data FROM manifests WHERE artifact_id=? AND number=?", *key
                ).fetchone()
                if row is not None:
                    remaining.difference_update(blobs_of(bytes(row[0])))
            doomed = sorted(remaining)
            if not dry_run:
                for i in range(0, len(doomed), DOOM_ROWS):
                    chunk = doomed[i : i + DOOM_ROWS]
                    self._q(
                        c,
                        "INSERT INTO doomed_blobs (sha256, marked) VALUES "
                        + ",".join("(?, ?)" for _ in chunk)
                        + " ON CONFLICT (sha256) DO NOTHING",
                        *(v for sha in chunk for v in (sha, marked)),
                    )
        return doomed

    def undoom(self, digests: Collection[str]) -> None:
        listed = sorted(digests)
        with self._write() as c:
            self._lock_gc(c, exclusive=True)
            for i in range(0, len(listed), IN_CHUNK):
                chunk = listed[i : i + IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                self._q(c, f"DELETE FROM doomed_blobs WHERE sha256 IN ({marks})", *chunk)
            self._q(
                c,
                "INSERT INTO registry (key, value) VALUES ('gc_epoch', '1') "
                "ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(registry.value AS BIGINT) + 1 "
                "AS TEXT)",
            )
