"""A ``MetaStore`` on PostgreSQL, shared by any number of stateless server processes.

Same tables and behaviour as ``sqlite.py``; what differs is how concurrency is
made safe:

- Every write transaction (READ COMMITTED) first locks the artifact's row with
  ``SELECT ... FOR UPDATE``. Commits, alias moves and deletes of one artifact are
  therefore serialised across all servers, while different artifacts proceed in
  parallel: "read ``next_number``, insert the version, bump it" can't interleave,
  so concurrent commits get distinct consecutive numbers, and a conditional alias
  move compares and sets under the same lock.
- Multi-statement reads run in ``REPEATABLE READ READ ONLY`` transactions, so an
  artifact's versions and aliases come from one snapshot.
- Connections come from a ``psycopg_pool.ConnectionPool`` (bounded; waiting for a
  free connection has a deadline). Every statement has a ``statement_timeout`` and
  lock waits a ``lock_timeout``; an unreachable or failing database is ``Unavailable``.
- Schema creation takes a transaction-level advisory lock, so several servers
  starting at once on an empty database don't race on ``CREATE TABLE``.

``schema`` puts the tables in their own PostgreSQL schema (created if needed): several
registries (or test runs) can share one database.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool

from ..client.base import UNSET, Expect
from ..errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    Unavailable,
)
from ..models import ArtifactInfo, ProjectInfo, VersionInfo, VersionSummary
from ..names import LATEST
from .meta import NewVersion
from .stores import redact

SCHEMA_VERSION = 1
POOL_MIN = 1
POOL_MAX = 16
POOL_TIMEOUT = 30.0  # seconds to wait for a free pooled connection
STATEMENT_TIMEOUT_MS = 120_000
LOCK_TIMEOUT_MS = 60_000
CONNECT_TIMEOUT = 10
_SCHEMA_LOCK = 0x61727466  # advisory lock key ("artf") held while creating tables
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS registry (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id  BIGINT NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL,
    type        TEXT NOT NULL,
    description TEXT NOT NULL,
    created     DOUBLE PRECISION NOT NULL,
    next_number BIGINT NOT NULL DEFAULT 0,
    UNIQUE (project_id, name)
);
CREATE TABLE IF NOT EXISTS versions (
    artifact_id BIGINT NOT NULL REFERENCES artifacts(id),
    number      BIGINT NOT NULL,
    digest      TEXT NOT NULL,
    created     DOUBLE PRECISION NOT NULL,
    creator     TEXT NOT NULL,
    description TEXT NOT NULL,
    metadata    TEXT NOT NULL,
    parent      BIGINT,
    file_count  BIGINT NOT NULL,
    total_size  BIGINT NOT NULL,
    deleted     BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (artifact_id, number)
);
CREATE TABLE IF NOT EXISTS manifests (
    artifact_id BIGINT NOT NULL,
    number      BIGINT NOT NULL,
    data        BYTEA NOT NULL,
    PRIMARY KEY (artifact_id, number),
    FOREIGN KEY (artifact_id, number) REFERENCES versions(artifact_id, number)
);
CREATE TABLE IF NOT EXISTS aliases (
    artifact_id BIGINT NOT NULL,
    name        TEXT NOT NULL,
    number      BIGINT NOT NULL,
    PRIMARY KEY (artifact_id, name),
    FOREIGN KEY (artifact_id, number) REFERENCES versions(artifact_id, number)
);
"""

_VERSION_COLS = (
    "number, digest, created, creator, description, metadata, parent, file_count, total_size"
)

Conn = psycopg.Connection[tuple[Any, ...]]


class PostgresMetaStore:
    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        pool_min: int = POOL_MIN,
        pool_max: int = POOL_MAX,
        pool_timeout: float = POOL_TIMEOUT,
    ) -> None:
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise InvalidInput(f"invalid PostgreSQL schema name {schema!r}")
        self.dsn = dsn
        self.schema = schema
        self._where = redact(dsn) + (f" (schema {schema})" if schema else "")
        self._pool: psycopg_pool.ConnectionPool[Conn] = psycopg_pool.ConnectionPool(
            dsn,
            min_size=min(pool_min, pool_max),
            max_size=pool_max,
            timeout=pool_timeout,
            kwargs={"connect_timeout": CONNECT_TIMEOUT, "application_name": "artfs"},
            configure=self._configure,
            open=False,
            name="artfs-meta",
        )
        try:
            if schema is not None:
                self._create_schema()
            self._pool.open(wait=True, timeout=pool_timeout)
            self._registry_id = self._init_schema()
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            raise Unavailable(f"registry database {self._where} unreachable") from None
        except BaseException:
            self._pool.close()
            raise

    # --- connections and transactions -------------------------------------------------
    def _create_schema(self) -> None:
        # Concurrent CREATE SCHEMA IF NOT EXISTS can still collide: serialise on the lock.
        try:
            with psycopg.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT) as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        except psycopg.OperationalError as e:
            raise Unavailable(f"registry database {self._where} unreachable: {e}") from None

    def _configure(self, conn: Conn) -> None:
        if self.schema is not None:
            conn.execute(f'SET search_path TO "{self.schema}"')
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
        conn.commit()

    @contextmanager
    def _tx(self, *, read_only: bool) -> Iterator[Conn]:
        """One transaction on a pooled connection: committed on success, rolled back on error."""
        try:
            with self._pool.connection() as conn:
                if read_only:
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield conn
        except psycopg_pool.PoolTimeout:
            raise Unavailable(
                f"registry database {self._where}: no free connection (pool of "
                f"{self._pool.max_size} busy, or the database unreachable)"
            ) from None
        except psycopg.errors.QueryCanceled as e:
            raise Unavailable(f"registry database {self._where} timed out: {e}") from None
        except psycopg.errors.LockNotAvailable as e:
            raise Unavailable(
                f"registry database {self._where}: lock wait timed out: {e}"
            ) from None
        except psycopg.OperationalError as e:
            raise Unavailable(f"registry database {self._where} failed: {e}") from None

    def _write(self) -> Any:
        return self._tx(read_only=False)

    def _read(self) -> Any:
        return self._tx(read_only=True)

    def _init_schema(self) -> str:
        with self._write() as c:
            c.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute(
                "INSERT INTO registry (key, value) VALUES ('id', %s), ('schema', %s) "
                "ON CONFLICT (key) DO NOTHING",
                (str(uuid.uuid4()), str(SCHEMA_VERSION)),
            )
            rows = dict(c.execute("SELECT key, value FROM registry").fetchall())
        if int(rows["schema"]) > SCHEMA_VERSION:
            raise InvalidInput(
                f"registry database {self._where} has schema {rows['schema']}, newer than this "
                f"artfs ({SCHEMA_VERSION}): upgrade artfs"
            )
        return str(rows["id"])

    def close(self) -> None:
        self._pool.close()

    # --- lookups (inside a transaction) ---------------------------------------------------
    @staticmethod
    def _project_id(c: Conn, project: str) -> int:
        row = c.execute("SELECT id FROM projects WHERE name=%s", (project,)).fetchone()
        if row is None:
            raise NotFound(f"project {project} not found")
        return int(row[0])

    @classmethod
    def _artifact_row(
        cls, c: Conn, project: str, artifact: str, *, lock: bool = False
    ) -> tuple[Any, ...]:
        """(id, type, description, created, next_number); ``lock`` holds the row until the
        transaction ends: the serialisation point of all writes to one artifact."""
        row = c.execute(
            "SELECT a.id, a.type, a.description, a.created, a.next_number FROM artifacts a "
            "JOIN projects p ON p.id = a.project_id WHERE p.name=%s AND a.name=%s"
            + (" FOR UPDATE OF a" if lock else ""),
            (project, artifact),
        ).fetchone()
        if row is None:
            cls._project_id(c, project)  # a missing project says so
            raise NotFound(f"artifact {project}/{artifact} not found")
        return tuple(row)

    @staticmethod
    def _live_number(c: Conn, artifact_id: int, number: int, label: str) -> None:
        row = c.execute(
            "SELECT 1 FROM versions WHERE artifact_id=%s AND number=%s AND NOT deleted",
            (artifact_id, number),
        ).fetchone()
        if row is None:
            raise NotFound(f"version {label}:v{number} not found")

    def _version(self, c: Conn, project: str, artifact: str, number: int) -> VersionInfo:
        aid, atype, *_ = self._artifact_row(c, project, artifact)
        row = c.execute(
            f"SELECT {_VERSION_COLS} FROM versions "
            "WHERE artifact_id=%s AND number=%s AND NOT deleted",
            (aid, number),
        ).fetchone()
        if row is None:
            raise NotFound(f"version {project}/{artifact}:v{number} not found")
        aliases = tuple(
            r[0]
            for r in c.execute(
                'SELECT name FROM aliases WHERE artifact_id=%s AND number=%s ORDER BY name COLLATE "C"',
                (aid, number),
            )
        )
        num, digest, created, creator, description, metadata, parent, count, size = row
        return VersionInfo(
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
            aliases,
            atype,
        )

    def _artifact_infos(self, c: Conn, project: str, name: str | None) -> list[ArtifactInfo]:
        pid = self._project_id(c, project)
        query = "SELECT id, name, type, description, created FROM artifacts WHERE project_id=%s"
        args: tuple[Any, ...] = (pid,)
        if name is not None:
            query += " AND name=%s"
            args += (name,)
        arts = c.execute(query + ' ORDER BY name COLLATE "C"', args).fetchall()
        if name is not None and not arts:
            raise NotFound(f"artifact {project}/{name} not found")
        ids = {row[0] for row in arts}
        versions: dict[int, list[VersionSummary]] = {i: [] for i in ids}
        aliases: dict[int, dict[str, int]] = {i: {} for i in ids}
        where, wargs = (
            ("a.id=%s", (arts[0][0],)) if name is not None else ("a.project_id=%s", (pid,))
        )
        for aid, number, digest, created, count, size in c.execute(
            "SELECT v.artifact_id, v.number, v.digest, v.created, v.file_count, v.total_size "
            "FROM versions v JOIN artifacts a ON a.id = v.artifact_id "
            f"WHERE {where} AND NOT v.deleted ORDER BY v.artifact_id, v.number",
            wargs,
        ):
            versions[aid].append(
                VersionSummary(int(number), digest, float(created), int(count), int(size))
            )
        for aid, alias, number in c.execute(
            "SELECT l.artifact_id, l.name, l.number "
            "FROM aliases l JOIN artifacts a ON a.id = l.artifact_id "
            f'WHERE {where} ORDER BY l.name COLLATE "C"',
            wargs,
        ):
            aliases[aid][alias] = int(number)
        return [
            ArtifactInfo(
                project, aname, atype, desc, float(created), tuple(versions[aid]), aliases[aid]
            )
            for aid, aname, atype, desc, created in arts
        ]

    # --- MetaStore ----------------------------------------------------------------------------
    def registry_id(self) -> str:
        return self._registry_id

    def create_project(self, name: str, created: float, *, exist_ok: bool) -> ProjectInfo:
        with self._write() as c:
            inserted = c.execute(
                "INSERT INTO projects (name, created) VALUES (%s, %s) "
                "ON CONFLICT (name) DO NOTHING RETURNING name",
                (name, created),
            ).fetchone()
            if inserted is not None:
                return ProjectInfo(name, created)
            if not exist_ok:
                raise AlreadyExists(f"project {name} already exists")
            row = c.execute("SELECT name, created FROM projects WHERE name=%s", (name,)).fetchone()
            assert row is not None  # projects are never deleted
            return ProjectInfo(row[0], float(row[1]))

    def get_project(self, name: str) -> ProjectInfo:
        with self._read() as c:
            row = c.execute("SELECT name, created FROM projects WHERE name=%s", (name,)).fetchone()
        if row is None:
            raise NotFound(f"project {name} not found")
        return ProjectInfo(row[0], float(row[1]))

    def list_projects(self) -> list[ProjectInfo]:
        with self._read() as c:
            rows = c.execute('SELECT name, created FROM projects ORDER BY name COLLATE "C"')
            return [ProjectInfo(name, float(created)) for name, created in rows]

    def create_artifact(
        self,
        project: str,
        name: str,
        type: str,
        description: str,
        created: float,
        *,
        exist_ok: bool,
    ) -> ArtifactInfo:
        with self._write() as c:
            pid = self._project_id(c, project)
            inserted = c.execute(
                "INSERT INTO artifacts (project_id, name, type, description, created) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (project_id, name) DO NOTHING "
                "RETURNING id",
                (pid, name, type, description, created),
            ).fetchone()
            if inserted is not None:
                return ArtifactInfo(project, name, type, description, created)
            if not exist_ok:
                raise AlreadyExists(f"artifact {project}/{name} already exists")
            row = c.execute(
                "SELECT type FROM artifacts WHERE project_id=%s AND name=%s", (pid, name)
            ).fetchone()
            assert row is not None
            if row[0] != type:
                raise Conflict(
                    f"artifact {project}/{name} exists with type {row[0]!r}, not {type!r}"
                )
            return self._artifact_infos(c, project, name)[0]

    def get_artifact(self, project: str, name: str) -> ArtifactInfo:
        with self._read() as c:
            return self._artifact_infos(c, project, name)[0]

    def list_artifacts(self, project: str) -> list[ArtifactInfo]:
        with self._read() as c:
            return self._artifact_infos(c, project, None)

    def get_version(self, project: str, artifact: str, number: int) -> VersionInfo:
        with self._read() as c:
            return self._version(c, project, artifact, number)

    def resolve_alias(self, project: str, artifact: str, alias: str) -> int:
        with self._read() as c:
            aid = self._artifact_row(c, project, artifact)[0]
            row = c.execute(
                "SELECT number FROM aliases WHERE artifact_id=%s AND name=%s", (aid, alias)
            ).fetchone()
        if row is None:
            if alias == LATEST:
                raise NotFound(f"artifact {project}/{artifact} has no versions yet")
            raise NotFound(f"alias {project}/{artifact}:{alias} not found")
        return int(row[0])

    def get_manifest_gz(self, project: str, artifact: str, number: int) -> tuple[str, bytes]:
        with self._read() as c:
            aid = self._artifact_row(c, project, artifact)[0]
            row = c.execute(
                "SELECT v.digest, m.data FROM versions v JOIN manifests m "
                "ON m.artifact_id = v.artifact_id AND m.number = v.number "
                "WHERE v.artifact_id=%s AND v.number=%s AND NOT v.deleted",
                (aid, number),
            ).fetchone()
        if row is None:
            raise NotFound(f"version {project}/{artifact}:v{number} not found")
        return str(row[0]), bytes(row[1])

    def commit(
        self, project: str, artifact: str, new: NewVersion, aliases: list[str]
    ) -> tuple[VersionInfo, bool]:
        with self._write() as c:
            aid, _, _, _, next_number = self._artifact_row(c, project, artifact, lock=True)
            latest = c.execute(
                "SELECT v.number, v.digest FROM aliases l JOIN versions v "
                "ON v.artifact_id = l.artifact_id AND v.number = l.number "
                "WHERE l.artifact_id=%s AND l.name=%s",
                (aid, LATEST),
            ).fetchone()
            if latest is not None and latest[1] == new.digest:
                number, created = int(latest[0]), False
            else:
                if (
                    new.parent is not None
                    and c.execute(
                        "SELECT 1 FROM versions WHERE artifact_id=%s AND number=%s",
                        (aid, new.parent),
                    ).fetchone()
                    is None
                ):
                    raise InvalidInput(
                        f"parent version v{new.parent} of {project}/{artifact} does not exist"
                    )
                number, created = int(next_number), True
                c.execute(
                    f"INSERT INTO versions (artifact_id, {_VERSION_COLS}) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (
                        aid,
                        number,
                        new.digest,
                        new.created,
                        new.creator,
                        new.description,
                        new.metadata_json,
                        new.parent,
                        new.file_count,
                        new.total_size,
                    ),
                )
                c.execute(
                    "INSERT INTO manifests (artifact_id, number, data) VALUES (%s, %s, %s)",
                    (aid, number, new.manifest_gz),
                )
                c.execute("UPDATE artifacts SET next_number=%s WHERE id=%s", (number + 1, aid))
            for alias in sorted({LATEST, *aliases}):
                self._upsert_alias(c, aid, alias, number)
            return self._version(c, project, artifact, number), created

    @staticmethod
    def _upsert_alias(c: Conn, aid: int, alias: str, number: int) -> None:
        c.execute(
            "INSERT INTO aliases (artifact_id, name, number) VALUES (%s, %s, %s) "
            "ON CONFLICT (artifact_id, name) DO UPDATE SET number=excluded.number",
            (aid, alias, number),
        )

    @staticmethod
    def _check_expect(c: Conn, aid: int, label: str, alias: str, expect: Expect) -> int | None:
        row = c.execute(
            "SELECT number FROM aliases WHERE artifact_id=%s AND name=%s", (aid, alias)
        ).fetchone()
        current = None if row is None else int(row[0])
        if expect is not UNSET and current != expect:
            want = "not to exist" if expect is None else f"to point at v{expect}"
            have = "does not exist" if current is None else f"points at v{current}"
            raise PreconditionFailed(f"alias {label}:{alias} {have}; expected it {want}")
        return current

    def set_alias(
        self, project: str, artifact: str, alias: str, number: int, expect: Expect
    ) -> None:
        label = f"{project}/{artifact}"
        with self._write() as c:
            aid = self._artifact_row(c, project, artifact, lock=True)[0]
            self._live_number(c, aid, number, label)
            self._check_expect(c, aid, label, alias, expect)
            self._upsert_alias(c, aid, alias, number)

    def delete_alias(self, project: str, artifact: str, alias: str, expect: Expect) -> None:
        label = f"{project}/{artifact}"
        with self._write() as c:
            aid = self._artifact_row(c, project, artifact, lock=True)[0]
            current = self._check_expect(c, aid, label, alias, expect)
            if current is None:
                raise NotFound(f"alias {label}:{alias} not found")
            c.execute("DELETE FROM aliases WHERE artifact_id=%s AND name=%s", (aid, alias))

    def delete_version(self, project: str, artifact: str, number: int, *, force: bool) -> None:
        label = f"{project}/{artifact}"
        with self._write() as c:
            aid = self._artifact_row(c, project, artifact, lock=True)[0]
            self._live_number(c, aid, number, label)
            held = [
                r[0]
                for r in c.execute(
                    "SELECT name FROM aliases WHERE artifact_id=%s AND number=%s AND name<>%s "
                    'ORDER BY name COLLATE "C"',
                    (aid, number, LATEST),
                )
            ]
            if held and not force:
                raise Conflict(
                    f"version {label}:v{number} holds aliases {', '.join(held)}: "
                    "move them first or use --force"
                )
            c.execute("DELETE FROM aliases WHERE artifact_id=%s AND number=%s", (aid, number))
            c.execute("DELETE FROM manifests WHERE artifact_id=%s AND number=%s", (aid, number))
            c.execute(
                "UPDATE versions SET deleted=TRUE WHERE artifact_id=%s AND number=%s",
                (aid, number),
            )
            if (
                c.execute(
                    "SELECT 1 FROM aliases WHERE artifact_id=%s AND name=%s", (aid, LATEST)
                ).fetchone()
                is None
            ):
                row = c.execute(
                    "SELECT max(number) FROM versions WHERE artifact_id=%s AND NOT deleted",
                    (aid,),
                ).fetchone()
                if row is not None and row[0] is not None:
                    self._upsert_alias(c, aid, LATEST, int(row[0]))
