"""Which blobs a token may know about (project isolation, schema 6): the SQL half.

Blobs are content-addressed and stored once for every project, but knowing that a blob
exists, its size or its bytes is a right of the projects that reference it. Two tables
answer "may this token see blob X":

- ``project_blobs`` (project, sha256): every blob a version of the project has ever
  referenced, written in the commit's own transaction. Rows stay after the version is
  deleted: the project's readers could read those bytes then, and the row says nothing
  about other projects (docs/decisions.md, "Project isolation").
- ``blob_uploads`` (token, sha256, time): proof that this token sent the blob's bytes
  (an upload, verified against its sha256, even of a blob the store already held). It lets
  a token commit a blob that only other projects reference, and read back its own
  uploads before they are committed; proofs expire after ``UPLOAD_PROOF_SECONDS``.

Both live in the metadata store, so every server process on it answers alike. The same
store keeps the secret that signs data-server URLs (``url_secret``).

``BlobRefsSql`` is a mixin of ``SqlMetaStore``: it only needs ``_q``, ``_read`` and
``_write``.
"""

from __future__ import annotations

import gzip
import json
import secrets
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

C = TypeVar("C")

BLOB_REFS_SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS project_blobs (
    sha256     TEXT NOT NULL,
    project_id {int} NOT NULL REFERENCES projects(id),
    PRIMARY KEY (sha256, project_id)
){without_rowid};
CREATE TABLE IF NOT EXISTS blob_uploads (
    token    TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    uploaded {real} NOT NULL,
    PRIMARY KEY (token, sha256)
){without_rowid};
"""

BLOB_REFS_SCHEMA = 6  # the schema version that added these tables (see sqlbase.SCHEMA_VERSION)
REF_IN_CHUNK = 500  # names per IN (...) lookup
DIGEST_LIST_CHUNK = 100_000  # digests per lookup, passed as ONE parameter (see _DIGEST_LIST)
UPLOAD_PROOF_SECONDS = 24 * 3600.0  # how long an upload lets its token commit/read the blob


class BlobRefsSql(Generic[C]):
    """Queries over ``project_blobs``, ``blob_uploads`` and the URL-signing secret."""

    # A table of digests from one parameter (``_digest_list``'s value): SQLite's json_each,
    # PostgreSQL's unnest of a split string. One query per 100,000 digests instead of one per
    # 500 in an IN list: a 1M-digest check went from 2,000 queries (PostgreSQL: 28 s for
    # 200,000 when not scoped to projects) to 10 (docs/decisions.md).
    _DIGEST_LIST = "(SELECT value AS sha FROM json_each(?)) AS d"

    def _digest_list(self, digests: Sequence[str]) -> Any:
        return json.dumps(list(digests))

    def _q(self, c: C, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[C]:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[C]:
        raise NotImplementedError

    # --- writes inside other transactions -------------------------------------------
    def _record_refs(self, c: C, project_id: int, digests: Collection[str]) -> None:
        """Note that ``project_id`` references these blobs (in the commit's transaction)."""
        listed = sorted(digests)
        sql = (
            f"INSERT INTO project_blobs (sha256, project_id) SELECT d.sha, ? FROM {self._DIGEST_LIST} "
            "WHERE true ON CONFLICT DO NOTHING"  # (SQLite: WHERE before an upsert's ON CONFLICT)
        )
        for i in range(0, len(listed), DIGEST_LIST_CHUNK):
            self._q(c, sql, project_id, self._digest_list(listed[i : i + DIGEST_LIST_CHUNK]))

    def _backfill_refs(self, c: C) -> None:
        """Fill ``project_blobs`` from every stored manifest: run once, when a registry made
        before schema 6 is upgraded (afterwards commits keep it up to date)."""
        rows = self._q(
            c,
            "SELECT a.project_id, m.data FROM manifests m JOIN artifacts a ON a.id = m.artifact_id",
        ).fetchall()
        for project_id, data in rows:
            files = json.loads(gzip.decompress(bytes(data)))["files"]
            self._record_refs(c, int(project_id), {str(f[2]) for f in files})

    # --- public (one transaction each) ------------------------------------------------
    def visible_blobs(
        self,
        digests: Collection[str],
        projects: Sequence[str] | None,
        token: str | None,
        since: float,
    ) -> set[str]:
        """The digests among ``digests`` that a version of one of ``projects`` references
        (None: of any project), or that ``token`` uploaded at ``since`` or later."""
        found: set[str] = set()
        if not digests:
            return found
        listed = sorted(set(digests))
        with self._read() as c:
            ids: list[int] | None = None
            if projects is not None:  # names -> ids once: the lookups below use the primary key
                ids = []
                for i in range(0, len(projects), REF_IN_CHUNK):
                    names = list(projects[i : i + REF_IN_CHUNK])
                    marks = ",".join("?" * len(names))
                    sql = f"SELECT id FROM projects WHERE name IN ({marks})"
                    ids.extend(int(r[0]) for r in self._q(c, sql, *names))
            pmarks = ",".join("?" * len(ids or ()))
            scope = f" AND pb.project_id IN ({pmarks})" if ids else ""
            for i in range(0, len(listed), DIGEST_LIST_CHUNK):
                chunk = listed[i : i + DIGEST_LIST_CHUNK]
                if ids is None or ids:
                    sql = (
                        f"SELECT d.sha FROM {self._DIGEST_LIST} WHERE EXISTS "
                        f"(SELECT 1 FROM project_blobs pb WHERE pb.sha256 = d.sha{scope})"
                    )
                    found.update(
                        str(r[0]) for r in self._q(c, sql, self._digest_list(chunk), *(ids or ()))
                    )
                if token is not None:
                    rest = [sha for sha in chunk if sha not in found]
                    if rest:
                        sql = (
                            f"SELECT d.sha FROM {self._DIGEST_LIST} JOIN blob_uploads u "
                            "ON u.token = ? AND u.sha256 = d.sha WHERE u.uploaded >= ?"
                        )
                        rows = self._q(c, sql, self._digest_list(rest), token, since)
                        found.update(str(r[0]) for r in rows)
        return found

    def record_upload(self, token: str, sha256: str, now: float, expired_before: float) -> None:
        """Remember that ``token`` uploaded ``sha256`` (its proof of possession); drops the
        token's proofs older than ``expired_before`` on the way."""
        with self._write() as c:
            self._q(
                c, "DELETE FROM blob_uploads WHERE token=? AND uploaded < ?", token, expired_before
            )
            self._q(
                c,
                "INSERT INTO blob_uploads (token, sha256, uploaded) VALUES (?, ?, ?) "
                "ON CONFLICT (token, sha256) DO UPDATE SET uploaded = excluded.uploaded",
                token,
                sha256,
                now,
            )

    def drop_upload_proofs(self, before: float) -> int:
        """Forget every upload proof older than ``before``: a token that stops uploading
        would otherwise keep its rows for good (its own uploads only clear its own)."""
        with self._write() as c:
            return int(self._q(c, "DELETE FROM blob_uploads WHERE uploaded < ?", before).rowcount)

    def url_secret(self) -> str:
        """The secret that signs data-server URLs: made by the first server that asks, then
        the same for every server on this store (so any of them checks any one's URLs)."""
        query = "SELECT value FROM registry WHERE key='url_secret'"
        with self._read() as c:  # the usual case writes nothing (a server starts on a full disk)
            row = self._q(c, query).fetchone()
        if row is None:
            with self._write() as c:
                self._q(
                    c,
                    "INSERT INTO registry (key, value) VALUES ('url_secret', ?) "
                    "ON CONFLICT DO NOTHING",
                    secrets.token_hex(32),
                )
                row = self._q(c, query).fetchone()
        return str(row[0])
