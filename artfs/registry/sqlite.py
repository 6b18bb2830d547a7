"""The embedded ``MetaStore``: one SQLite file in WAL mode.

Concurrency: a small pool of connections, one per transaction in flight; every write is a ``BEGIN IMMEDIATE``
transaction, which takes the database's single write lock up front (waiting up
to ``busy_timeout``), so the "read the next number, insert the version" step of
a commit can't interleave with another commit, whether it comes from another
thread or another process using the same file. Multi-statement reads run in a
deferred transaction, so they see one consistent snapshot; under WAL readers
never wait for writers. ``synchronous=FULL``: an acknowledged commit survives a
power cut.

Manifests are stored as one gzip-compressed JSON blob per version (the exact
bytes the HTTP API serves with ``Content-Encoding: gzip``), so committing or
loading a 100,000-file manifest is one row, not 100,000.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..client.base import UNSET, Expect
from ..errors import AlreadyExists, Conflict, InvalidInput, NotFound, PreconditionFailed
from ..models import ArtifactInfo, ProjectInfo, VersionInfo, VersionSummary
from ..names import LATEST
from .meta import NewVersion

SCHEMA_VERSION = 1
MAX_IDLE = 8  # pooled connections kept open

_SCHEMA = """
CREATE TABLE IF NOT EXISTS registry (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    id          INTEGER PRIMARY KEY,
    project_id  INTEGER NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL,
    type        TEXT NOT NULL,
    description TEXT NOT NULL,
    created     REAL NOT NULL,
    next_number INTEGER NOT NULL DEFAULT 0,
    UNIQUE (project_id, name)
);
CREATE TABLE IF NOT EXISTS versions (
    artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
    number      INTEGER NOT NULL,
    digest      TEXT NOT NULL,
    created     REAL NOT NULL,
    creator     TEXT NOT NULL,
    description TEXT NOT NULL,
    metadata    TEXT NOT NULL,
    parent      INTEGER,
    file_count  INTEGER NOT NULL,
    total_size  INTEGER NOT NULL,
    deleted     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (artifact_id, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS manifests (
    artifact_id INTEGER NOT NULL,
    number      INTEGER NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (artifact_id, number),
    FOREIGN KEY (artifact_id, number) REFERENCES versions(artifact_id, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS aliases (
    artifact_id INTEGER NOT NULL,
    name        TEXT NOT NULL,
    number      INTEGER NOT NULL,
    PRIMARY KEY (artifact_id, name),
    FOREIGN KEY (artifact_id, number) REFERENCES versions(artifact_id, number)
) WITHOUT ROWID;
"""

_VERSION_COLS = (
    "number, digest, created, creator, description, metadata, parent, file_count, total_size"
)


class SqliteMetaStore:
    def __init__(self, path: str | Path, *, busy_timeout: float = 60.0) -> None:
        self.path = str(path)
        self._busy_timeout = busy_timeout
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._set_wal()
        self._init_schema()

    # --- connections and transactions -------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        """A connection for one transaction, from a small pool. Worker threads come and go
        (trio retires idle ones), so connections are pooled, not kept per thread."""
        with self._lock:
            if self._closed:
                raise ValueError(f"registry database {self.path} is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            with self._lock:
                keep = not self._closed and not conn.in_transaction and len(self._idle) < MAX_IDLE
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._conn() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _set_wal(self) -> None:
        # Switching a fresh file to WAL needs a moment of exclusive access; several processes
        # opening the same new registry at once may briefly see "locked".
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                with self._conn() as c:
                    mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if str(mode).lower() != "wal":
            raise InvalidInput(
                f"registry database {self.path} can't use WAL journaling (got {mode!r})"
            )

    def _init_schema(self) -> None:
        with self._write() as c:
            (version,) = c.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise InvalidInput(
                    f"registry database {self.path} has schema {version}, newer than this artfs "
                    f"({SCHEMA_VERSION}): upgrade artfs"
                )
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute(
                "INSERT OR IGNORE INTO registry (key, value) VALUES ('id', ?)", (str(uuid.uuid4()),)
            )
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._registry_id = c.execute("SELECT value FROM registry WHERE key='id'").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # --- lookups (inside a transaction) -------------------------------------
    @staticmethod
    def _project_id(c: sqlite3.Connection, project: str) -> int:
        row = c.execute("SELECT id FROM projects WHERE name=?", (project,)).fetchone()
        if row is None:
            raise NotFound(f"project {project} not found")
        return int(row[0])

    @classmethod
    def _artifact_row(cls, c: sqlite3.Connection, project: str, artifact: str) -> tuple[Any, ...]:
        row = c.execute(
            "SELECT a.id, a.type, a.description, a.created, a.next_number FROM artifacts a "
            "JOIN projects p ON p.id = a.project_id WHERE p.name=? AND a.name=?",
            (project, artifact),
        ).fetchone()
        if row is None:
            cls._project_id(c, project)  # a missing project says so
            raise NotFound(f"artifact {project}/{artifact} not found")
        return tuple(row)

    @staticmethod
    def _aliases_of(c: sqlite3.Connection, artifact_id: int) -> dict[str, int]:
        rows = c.execute(
            "SELECT name, number FROM aliases WHERE artifact_id=? ORDER BY name", (artifact_id,)
        )
        return {name: number for name, number in rows}

    @staticmethod
    def _live_number(c: sqlite3.Connection, artifact_id: int, number: int, label: str) -> None:
        row = c.execute(
            "SELECT 1 FROM versions WHERE artifact_id=? AND number=? AND deleted=0",
            (artifact_id, number),
        ).fetchone()
        if row is None:
            raise NotFound(f"version {label}:v{number} not found")

    def _version(
        self, c: sqlite3.Connection, project: str, artifact: str, number: int
    ) -> VersionInfo:
        aid, atype, *_ = self._artifact_row(c, project, artifact)
        row = c.execute(
            f"SELECT {_VERSION_COLS} FROM versions WHERE artifact_id=? AND number=? AND deleted=0",
            (aid, number),
        ).fetchone()
        if row is None:
            raise NotFound(f"version {project}/{artifact}:v{number} not found")
        aliases = tuple(
            r[0]
            for r in c.execute(
                "SELECT name FROM aliases WHERE artifact_id=? AND number=? ORDER BY name",
                (aid, number),
            )
        )
        num, digest, created, creator, description, metadata, parent, count, size = row
        return VersionInfo(
            project,
            artifact,
            num,
            digest,
            created,
            creator,
            description,
            json.loads(metadata),
            parent,
            count,
            size,
            aliases,
            atype,
        )

    def _artifact_infos(
        self, c: sqlite3.Connection, project: str, name: str | None
    ) -> list[ArtifactInfo]:
        pid = self._project_id(c, project)
        query = "SELECT id, name, type, description, created FROM artifacts WHERE project_id=?"
        args: tuple[Any, ...] = (pid,)
        if name is not None:
            query += " AND name=?"
            args += (name,)
        arts = c.execute(query + " ORDER BY name", args).fetchall()
        if name is not None and not arts:
            raise NotFound(f"artifact {project}/{name} not found")
        ids = {row[0] for row in arts}
        versions: dict[int, list[VersionSummary]] = {i: [] for i in ids}
        aliases: dict[int, dict[str, int]] = {i: {} for i in ids}
        where, wargs = ("a.id=?", (arts[0][0],)) if name is not None else ("a.project_id=?", (pid,))
        for aid, number, digest, created, count, size in c.execute(
            "SELECT v.artifact_id, v.number, v.digest, v.created, v.file_count, v.total_size "
            "FROM versions v JOIN artifacts a ON a.id = v.artifact_id "
            f"WHERE {where} AND v.deleted=0 "
            "ORDER BY v.artifact_id, v.number",
            wargs,
        ):
            versions[aid].append(VersionSummary(number, digest, created, count, size))
        for aid, alias, number in c.execute(
            "SELECT l.artifact_id, l.name, l.number "
            "FROM aliases l JOIN artifacts a ON a.id = l.artifact_id "
            f"WHERE {where} ORDER BY l.name",
            wargs,
        ):
            aliases[aid][alias] = number
        return [
            ArtifactInfo(project, aname, atype, desc, created, tuple(versions[aid]), aliases[aid])
            for aid, aname, atype, desc, created in arts
        ]

    # --- MetaStore ------------------------------------------------------------
    def registry_id(self) -> str:
        return str(self._registry_id)

    def create_project(self, name: str, created: float, *, exist_ok: bool) -> ProjectInfo:
        with self._write() as c:
            row = c.execute("SELECT name, created FROM projects WHERE name=?", (name,)).fetchone()
            if row is not None:
                if exist_ok:
                    return ProjectInfo(row[0], row[1])
                raise AlreadyExists(f"project {name} already exists")
            c.execute("INSERT INTO projects (name, created) VALUES (?, ?)", (name, created))
        return ProjectInfo(name, created)

    def get_project(self, name: str) -> ProjectInfo:
        with self._read() as c:
            row = c.execute("SELECT name, created FROM projects WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"project {name} not found")
        return ProjectInfo(row[0], row[1])

    def list_projects(self) -> list[ProjectInfo]:
        with self._read() as c:
            rows = c.execute("SELECT name, created FROM projects ORDER BY name").fetchall()
        return [ProjectInfo(name, created) for name, created in rows]

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
            row = c.execute(
                "SELECT type FROM artifacts WHERE project_id=? AND name=?", (pid, name)
            ).fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO artifacts (project_id, name, type, description, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (pid, name, type, description, created),
                )
                return ArtifactInfo(project, name, type, description, created)
            if not exist_ok:
                raise AlreadyExists(f"artifact {project}/{name} already exists")
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
                "SELECT number FROM aliases WHERE artifact_id=? AND name=?", (aid, alias)
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
                "WHERE v.artifact_id=? AND v.number=? AND v.deleted=0",
                (aid, number),
            ).fetchone()
            if row is None:
                raise NotFound(f"version {project}/{artifact}:v{number} not found")
            return str(row[0]), bytes(row[1])

    def commit(
        self, project: str, artifact: str, new: NewVersion, aliases: list[str]
    ) -> tuple[VersionInfo, bool]:
        with self._write() as c:
            aid, _, _, _, next_number = self._artifact_row(c, project, artifact)
            latest = c.execute(
                "SELECT v.number, v.digest FROM aliases l JOIN versions v "
                "ON v.artifact_id = l.artifact_id AND v.number = l.number "
                "WHERE l.artifact_id=? AND l.name=?",
                (aid, LATEST),
            ).fetchone()
            if latest is not None and latest[1] == new.digest:
                number, created = int(latest[0]), False
            else:
                if (
                    new.parent is not None
                    and not c.execute(
                        "SELECT 1 FROM versions WHERE artifact_id=? AND number=?", (aid, new.parent)
                    ).fetchone()
                ):
                    raise InvalidInput(
                        f"parent version v{new.parent} of {project}/{artifact} does not exist"
                    )
                number, created = next_number, True
                c.execute(
                    f"INSERT INTO versions (artifact_id, {_VERSION_COLS}) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?)",
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
                    "INSERT INTO manifests (artifact_id, number, data) VALUES (?, ?, ?)",
                    (aid, number, new.manifest_gz),
                )
                c.execute("UPDATE artifacts SET next_number=? WHERE id=?", (number + 1, aid))
            for alias in {LATEST, *aliases}:
                c.execute(
                    "INSERT INTO aliases (artifact_id, name, number) VALUES (?, ?, ?) "
                    "ON CONFLICT (artifact_id, name) DO UPDATE SET number=excluded.number",
                    (aid, alias, number),
                )
            return self._version(c, project, artifact, number), created

    def _check_expect(
        self, c: sqlite3.Connection, aid: int, label: str, alias: str, expect: Expect
    ) -> int | None:
        row = c.execute(
            "SELECT number FROM aliases WHERE artifact_id=? AND name=?", (aid, alias)
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
            aid = self._artifact_row(c, project, artifact)[0]
            self._live_number(c, aid, number, label)
            self._check_expect(c, aid, label, alias, expect)
            c.execute(
                "INSERT INTO aliases (artifact_id, name, number) VALUES (?, ?, ?) "
                "ON CONFLICT (artifact_id, name) DO UPDATE SET number=excluded.number",
                (aid, alias, number),
            )

    def delete_alias(self, project: str, artifact: str, alias: str, expect: Expect) -> None:
        label = f"{project}/{artifact}"
        with self._write() as c:
            aid = self._artifact_row(c, project, artifact)[0]
            current = self._check_expect(c, aid, label, alias, expect)
            if current is None:
                raise NotFound(f"alias {label}:{alias} not found")
            c.execute("DELETE FROM aliases WHERE artifact_id=? AND name=?", (aid, alias))

    def delete_version(self, project: str, artifact: str, number: int, *, force: bool) -> None:
        label = f"{project}/{artifact}"
        with self._write() as c:
            aid = self._artifact_row(c, project, artifact)[0]
            self._live_number(c, aid, number, label)
            held = [
                r[0]
                for r in c.execute(
                    "SELECT name FROM aliases "
                    "WHERE artifact_id=? AND number=? AND name<>? ORDER BY name",
                    (aid, number, LATEST),
                )
            ]
            if held and not force:
                raise Conflict(
                    f"version {label}:v{number} holds aliases {', '.join(held)}: "
                    "move them first or use --force"
                )
            c.execute("DELETE FROM aliases WHERE artifact_id=? AND number=?", (aid, number))
            c.execute("DELETE FROM manifests WHERE artifact_id=? AND number=?", (aid, number))
            c.execute(
                "UPDATE versions SET deleted=1 WHERE artifact_id=? AND number=?", (aid, number)
            )
            if not c.execute(
                "SELECT 1 FROM aliases WHERE artifact_id=? AND name=?", (aid, LATEST)
            ).fetchone():
                row = c.execute(
                    "SELECT max(number) FROM versions WHERE artifact_id=? AND deleted=0", (aid,)
                ).fetchone()
                if row[0] is not None:
                    c.execute(
                        "INSERT INTO aliases (artifact_id, name, number) VALUES (?, ?, ?)",
                        (aid, LATEST, row[0]),
                    )
