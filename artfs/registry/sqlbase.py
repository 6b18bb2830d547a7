"""The query logic shared by the SQL ``MetaStore`` implementations (``sqlite.py``, ``postgres.py``).

Every query is written once, with ``?`` placeholders; a subclass supplies what differs
between databases:

- ``_write()`` / ``_read()``: one write / one consistent read-only transaction on a
  connection, with the database's errors translated;
- ``_execute()``: running one statement (converting the placeholders if needed);
- ``_LOCK_ARTIFACT``: the clause appended to the artifact lookup that starts every
  write to an existing artifact (``FOR UPDATE`` on PostgreSQL; nothing on SQLite,
  whose ``BEGIN IMMEDIATE`` already holds the database's single write lock);
- ``_COLLATE``: the collation that makes ``ORDER BY`` of names bytewise;
- ``_lock_gc()``: what excludes the garbage collector's marking from commits (nothing on
  SQLite, where every write is already serialised; an advisory lock on PostgreSQL);
- ``gc_run_lock()``: one collection at a time;
- the schema DDL (built from ``SCHEMA_TEMPLATE``) and its initialisation.

Versions are never physically removed: ``deleted`` marks them, so numbers are never reused.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

from ..errors import (
    AlreadyExists,
    BeingCollected,
    Conflict,
    InvalidInput,
    NotFound,
)
from ..lineage import unique_in_order
from ..models import ArtifactInfo, ProjectInfo, VersionInfo, VersionInput, VersionSummary
from ..names import LATEST, Ref
from .aliasdb import AliasQueries
from .blobrefs import BLOB_REFS_SCHEMA_TEMPLATE, BlobRefsSql
from .canonicaldb import CANONICAL_SCHEMA_TEMPLATE, CanonicalQueries
from .damagedb import DAMAGE_SCHEMA_TEMPLATE, DamageQueries
from .deletedb import DeleteQueries
from .editsdb import EDITS_SCHEMA_TEMPLATE, LIVE_ARTIFACT, EditQueries
from .gcdb import GcQueries
from .lineagedb import LineageQueries
from .meta import NewVersion
from .observeddb import (
    KIND_JOIN,
    OBSERVED_INPUTS_SCHEMA_TEMPLATE,
    ObservedInputQueries,
    input_kind,
)
from .rundb import RUNS_SCHEMA_TEMPLATE, RunQueries
from .tagsearchdb import TagSearchQueries
from .tokendb import TokenQueries
from .versionsdb import VERSION_COLS, VersionPageQueries

# Tables shared by both databases; the column types that differ are filled in per database.
SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS registry (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    id      {id},
    name    TEXT NOT NULL UNIQUE,
    created {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    id          {id},
    project_id  {int} NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL,
    type        TEXT NOT NULL,
    description TEXT NOT NULL,
    created     {real} NOT NULL,
    next_number {int} NOT NULL DEFAULT 0,
    UNIQUE (project_id, name)
);
CREATE TABLE IF NOT EXISTS versions (
    artifact_id {int} NOT NULL REFERENCES artifacts(id),
    number      {int} NOT NULL,
    digest      TEXT NOT NULL,
    created     {real} NOT NULL,
    creator     TEXT NOT NULL,
    description TEXT NOT NULL,
    metadata    TEXT NOT NULL,
    parent      {int},
    file_count  {int} NOT NULL,
    total_size  {int} NOT NULL,
    deleted     {bool} NOT NULL DEFAULT {false},
    PRIMARY KEY (artifact_id, number)
){without_rowid};
CREATE TABLE IF NOT EXISTS manifests (
    artifact_id {int} NOT NULL,
    number      {int} NOT NULL,
    data        {blob} NOT NULL,
    PRIMARY KEY (artifact_id, number),
    FOREIGN KEY (artifact_id, number) REFERENCES versions(artifact_id, number)
){without_rowid};
CREATE TABLE IF NOT EXISTS aliases (
    artifact_id {int} NOT NULL,
    name        TEXT NOT NULL,
    number      {int} NOT NULL,
    PRIMARY KEY (artifact_id, name),
    FOREIGN KEY (artifact_id, number) REFERENCES versions(artifact_id, number)
){without_rowid};
"""

# Schema 2 adds access tokens (artfs/auth.py). Created by the same idempotent DDL, so a
# schema-1 registry is upgraded in place when a newer server opens it. Only the sha256 of a
# token's secret is stored. A revoked token keeps its row (and its name shows in
# ``artfs token list``); names are unique among live tokens only, so a name can be reused
# after a revoke (rotation).
TOKENS_SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS tokens (
    id            {id},
    name          TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created       {real} NOT NULL,
    revoked       {real}
);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_live_name ON tokens (name) WHERE revoked IS NULL;
CREATE TABLE IF NOT EXISTS token_grants (
    token_id {int} NOT NULL REFERENCES tokens(id),
    project  TEXT NOT NULL,
    rights   TEXT NOT NULL,
    PRIMARY KEY (token_id, project)
){without_rowid};
"""

# Schema 3 adds garbage collection (gc.py): a blob no live version references is doomed here
# before it is deleted from the blob store, and un-doomed after. Same idempotent upgrade.
GC_SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS doomed_blobs (
    sha256 TEXT PRIMARY KEY,
    marked {real} NOT NULL
){without_rowid};
"""

# Schema 4 adds lineage: the versions each version was made from, resolved at commit time
# (the input's digest is kept, so the lineage survives the input's deletion). Same upgrade.
LINEAGE_SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS version_inputs (
    artifact_id       {int} NOT NULL,
    number            {int} NOT NULL,
    position          {int} NOT NULL,
    input_artifact_id {int} NOT NULL REFERENCES artifacts(id),
    input_number      {int} NOT NULL,
    input_digest      TEXT NOT NULL,
    PRIMARY KEY (artifact_id, number, position)
){without_rowid};
CREATE INDEX IF NOT EXISTS version_inputs_by_input
    ON version_inputs (input_artifact_id, input_number);
"""

# Schema 5 lets a token expire: a token with a row here is refused from ``expires`` (epoch
# seconds) on. A table of its own, not a column, so the upgrade stays idempotent DDL.
TOKEN_EXPIRY_SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS token_expiry (
    token_id {int} PRIMARY KEY REFERENCES tokens(id),
    expires  {real} NOT NULL
){without_rowid};
"""

# 1: registry; 2: + tokens; 3: + doomed_blobs; 4: + version_inputs; 5: + token_expiry;
# 6: + project_blobs, blob_uploads (blobrefs.py: project isolation; filled on upgrade);
# 7: + damaged_blobs, damaged_versions (damagedb.py: blob integrity);
# 8: + runs, run_inputs, run_outputs (rundb.py: runs);
# 9: + observed_inputs (observeddb.py: lineage a mount observed);
# 10: + version_tags, version_expiry, meta_edits, protected_aliases, deleted_artifacts
# (editsdb.py: what changes after a commit);
# 11: + canonical_manifests (canonicaldb.py: manifests stored in canonical form too)
SCHEMA_VERSION = 11


def schema_ddl(**types: str) -> str:
    """Every table of the current schema, in one database's column types (idempotent DDL:
    creates a new registry or upgrades an older one in place)."""
    templates = (
        SCHEMA_TEMPLATE,
        TOKENS_SCHEMA_TEMPLATE,
        GC_SCHEMA_TEMPLATE,
        LINEAGE_SCHEMA_TEMPLATE,
        TOKEN_EXPIRY_SCHEMA_TEMPLATE,
        BLOB_REFS_SCHEMA_TEMPLATE,
        DAMAGE_SCHEMA_TEMPLATE,
        RUNS_SCHEMA_TEMPLATE,
        OBSERVED_INPUTS_SCHEMA_TEMPLATE,
        EDITS_SCHEMA_TEMPLATE,
        CANONICAL_SCHEMA_TEMPLATE,
    )
    return "".join(templates).format(**types)


MAX_USED_BY = 10_000  # consumers listed by used_by, at most


class Rows(Protocol):
    """What a statement returns: a DB-API cursor."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


C = TypeVar("C")


class SqlMetaStore(
    VersionPageQueries[C],  # no runtime stubs, like AliasQueries
    AliasQueries[C],  # first: other mixins' runtime stubs (e.g. _upsert_alias) must not shadow it
    GcQueries[C],
    TokenQueries[C],
    BlobRefsSql[C],
    DamageQueries[C],
    CanonicalQueries[C],
    RunQueries[C],  # before LineageQueries: its run-hop stubs are RunQueries' methods
    LineageQueries[C],
    ObservedInputQueries[C],
    EditQueries[C],
    DeleteQueries[C],
    TagSearchQueries[C],
    ABC,
    Generic[C],
):
    """A ``MetaStore`` over a SQL connection of type ``C``: each public method is one
    transaction; writes to an existing artifact first look its row up with
    ``_LOCK_ARTIFACT``, so they are serialised per artifact."""

    _LOCK_ARTIFACT = ""
    _COLLATE = ""
    _registry_id: str

    # --- supplied by a database ---------------------------------------------------------
    @abstractmethod
    def _write(self) -> AbstractContextManager[C]:
        """A write transaction: committed on success, rolled back on error."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[C]:
        """A read-only transaction seeing one consistent snapshot."""

    @abstractmethod
    def _execute(self, c: C, sql: str, args: Sequence[Any]) -> Rows:
        """Run ``sql``, written with ``?`` placeholders."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def gc_run_lock(self) -> AbstractContextManager[None]:
        """Held for a whole collection; Conflict at once if another one holds it."""

    def _lock_gc(self, c: C, *, exclusive: bool) -> None:
        """Exclude commits (shared) from the collector's marking (exclusive) until the
        transaction ends. Nothing by default: the database serialises every write."""

    def _q(self, c: C, sql: str, *args: Any) -> Rows:
        return self._execute(c, sql, args)

    # --- lookups (inside a transaction) ---------------------------------------------------
    def _project_id(self, c: C, project: str) -> int:
        row = self._q(c, "SELECT id FROM projects WHERE name=?", project).fetchone()
        if row is None:
            raise NotFound(f"project {project} not found")
        return int(row[0])

    def _artifact_row(
        self, c: C, project: str, artifact: str, *, lock: bool = False
    ) -> tuple[Any, ...]:
        """(id, type, description, created, next_number); ``lock`` (every write to the
        artifact) holds the row until the transaction ends where the database needs it: the
        serialisation point of all writes to one artifact."""
        row = self._q(
            c,
            "SELECT a.id, a.type, a.description, a.created, a.next_number FROM artifacts a "
            f"JOIN projects p ON p.id = a.project_id WHERE p.name=? AND a.name=? AND {LIVE_ARTIFACT}"
            + (self._LOCK_ARTIFACT if lock else ""),
            project,
            artifact,
        ).fetchone()
        if row is None:
            self._project_id(c, project)  # a missing project says so
            raise NotFound(f"artifact {project}/{artifact} not found")
        return tuple(row)

    def _live_number(self, c: C, artifact_id: int, number: int, label: str) -> None:
        row = self._q(
            c,
            "SELECT 1 FROM versions WHERE artifact_id=? AND number=? AND NOT deleted",
            artifact_id,
            number,
        ).fetchone()
        if row is None:
            raise NotFound(f"version {label}:v{number} not found")

    def _version(self, c: C, project: str, artifact: str, number: int) -> VersionInfo:
        aid, atype, *_ = self._artifact_row(c, project, artifact)
        row = self._q(
            c,
            f"SELECT {VERSION_COLS} FROM versions WHERE artifact_id=? AND number=? AND NOT deleted",
            aid,
            number,
        ).fetchone()
        if row is None:
            raise NotFound(f"version {project}/{artifact}:v{number} not found")
        aliases = tuple(
            r[0]
            for r in self._q(
                c,
                f"SELECT name FROM aliases WHERE artifact_id=? AND number=? "
                f"ORDER BY name{self._COLLATE}",
                aid,
                number,
            )
        )
        num, digest, created, creator, description, metadata, parent, count, size = row
        inputs = tuple(
            VersionInput(str(r[0]), str(r[1]), int(r[2]), str(r[3]), kind=input_kind(r[4]))
            for r in self._q(
                c,
                "SELECT p.name, a.name, i.input_number, i.input_digest, o.position "
                f"FROM version_inputs i {KIND_JOIN}"
                "JOIN artifacts a ON a.id = i.input_artifact_id "
                "JOIN projects p ON p.id = a.project_id "
                "WHERE i.artifact_id=? AND i.number=? ORDER BY i.position",
                aid,
                number,
            )
        )
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
            inputs,
            self._damaged_count(c, aid, number),
            self._tags_of(c, aid, number),
            self._expiry_of(c, aid, number),
        )

    def _resolve_input(self, c: C, ref: Ref) -> tuple[int, int, str]:
        """(artifact id, number, digest) of a lineage input, as it is now."""
        try:
            aid = self._artifact_row(c, ref.project, ref.artifact)[0]
        except NotFound as e:
            raise NotFound(f"lineage input {ref}: {e}") from None
        number = ref.version
        if number is None:
            row = self._q(
                c, "SELECT number FROM aliases WHERE artifact_id=? AND name=?", aid, ref.selector
            ).fetchone()
            if row is None:
                raise NotFound(f"lineage input {ref} not found")
            number = int(row[0])
        row = self._q(
            c,
            "SELECT digest FROM versions WHERE artifact_id=? AND number=? AND NOT deleted",
            aid,
            number,
        ).fetchone()
        if row is None:
            raise NotFound(f"lineage input {ref} not found")
        return int(aid), number, str(row[0])

    def used_by(self, project: str, artifact: str, number: int) -> list[VersionInput]:
        with self._read() as c:
            aid = self._artifact_row(c, project, artifact)[0]
            self._live_number(c, aid, number, f"{project}/{artifact}")
            rows = self._q(
                c,
                "SELECT p.name, a.name, v.number, v.digest FROM version_inputs i "
                "JOIN versions v ON v.artifact_id = i.artifact_id AND v.number = i.number "
                "JOIN artifacts a ON a.id = v.artifact_id JOIN projects p ON p.id = a.project_id "
                f"WHERE i.input_artifact_id=? AND i.input_number=? AND NOT v.deleted "
                f"ORDER BY p.name{self._COLLATE}, a.name{self._COLLATE}, v.number "
                f"LIMIT {MAX_USED_BY}",
                aid,
                number,
            ).fetchall()
        return [VersionInput(str(r[0]), str(r[1]), int(r[2]), str(r[3])) for r in rows]

    def _artifact_infos(self, c: C, project: str, name: str | None) -> list[ArtifactInfo]:
        pid = self._project_id(c, project)
        query = (
            "SELECT a.id, a.name, a.type, a.description, a.created FROM artifacts a "
            f"WHERE a.project_id=? AND {LIVE_ARTIFACT}"
        )
        args: tuple[Any, ...] = (pid,)
        if name is not None:
            query += " AND a.name=?"
            args += (name,)
        arts = self._q(c, f"{query} ORDER BY a.name{self._COLLATE}", *args).fetchall()
        if name is not None and not arts:
            raise NotFound(f"artifact {project}/{name} not found")
        ids = {row[0] for row in arts}
        versions: dict[int, list[VersionSummary]] = {i: [] for i in ids}
        aliases: dict[int, dict[str, int]] = {i: {} for i in ids}
        where, wid = ("a.id=?", arts[0][0]) if name is not None else ("a.project_id=?", pid)
        damaged = self._damaged_counts(c, where, wid)
        tags, expiry, protected = self._listing_extras(c, where, wid)
        for aid, number, digest, created, count, size in self._q(
            c,
            "SELECT v.artifact_id, v.number, v.digest, v.created, v.file_count, v.total_size "
            "FROM versions v JOIN artifacts a ON a.id = v.artifact_id "
            f"WHERE {where} AND NOT v.deleted ORDER BY v.artifact_id, v.number",
            wid,
        ):
            versions[aid].append(
                VersionSummary(
                    int(number),
                    digest,
                    float(created),
                    int(count),
                    int(size),
                    damaged.get((aid, int(number)), 0),
                    tuple(tags.get((aid, int(number)), ())),
                    expiry.get((aid, int(number))),
                )
            )
        for aid, alias, number in self._q(
            c,
            "SELECT l.artifact_id, l.name, l.number "
            "FROM aliases l JOIN artifacts a ON a.id = l.artifact_id "
            f"WHERE {where} ORDER BY l.name{self._COLLATE}",
            wid,
        ):
            aliases[aid][alias] = int(number)
        return [
            ArtifactInfo(
                project,
                aname,
                atype,
                desc,
                float(created),
                tuple(versions[aid]),
                aliases[aid],
                tuple(protected.get(aid, ())),
            )
            for aid, aname, atype, desc, created in arts
        ]

    # --- MetaStore ----------------------------------------------------------------------------
    def registry_id(self) -> str:
        return self._registry_id

    def create_project(self, name: str, created: float, *, exist_ok: bool) -> ProjectInfo:
        with self._write() as c:
            inserted = self._q(
                c,
                "INSERT INTO projects (name, created) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                name,
                created,
            ).rowcount
            if inserted:
                return ProjectInfo(name, created)
            if not exist_ok:
                raise AlreadyExists(f"project {name} already exists")
            row = self._q(c, "SELECT name, created FROM projects WHERE name=?", name).fetchone()
            assert row is not None  # projects are never deleted
            return ProjectInfo(row[0], float(row[1]))

    def get_project(self, name: str) -> ProjectInfo:
        with self._read() as c:
            row = self._q(c, "SELECT name, created FROM projects WHERE name=?", name).fetchone()
        if row is None:
            raise NotFound(f"project {name} not found")
        return ProjectInfo(row[0], float(row[1]))

    def list_projects(self) -> list[ProjectInfo]:
        with self._read() as c:
            rows = self._q(c, f"SELECT name, created FROM projects ORDER BY name{self._COLLATE}")
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
            inserted = self._q(
                c,
                "INSERT INTO artifacts (project_id, name, type, description, created) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (project_id, name) DO NOTHING",
                pid,
                name,
                type,
                description,
                created,
            ).rowcount
            if inserted:
                return ArtifactInfo(project, name, type, description, created)
            row = self._q(
                c, "SELECT id, type FROM artifacts WHERE project_id=? AND name=?", pid, name
            ).fetchone()
            assert row is not None  # artifact rows are never removed
            if self._revive_artifact(c, int(row[0]), type, description, created):
                return self._artifact_infos(c, project, name)[0]
            row = row[1:]
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
            row = self._q(
                c, "SELECT number FROM aliases WHERE artifact_id=? AND name=?", aid, alias
            ).fetchone()
        if row is None:
            if alias == LATEST:
                raise NotFound(f"artifact {project}/{artifact} has no versions yet")
            raise NotFound(f"alias {project}/{artifact}:{alias} not found")
        return int(row[0])

    def get_manifest_gz(self, project: str, artifact: str, number: int) -> tuple[str, bytes]:
        with self._read() as c:
            aid = self._artifact_row(c, project, artifact)[0]
            row = self._q(
                c,
                "SELECT v.digest, m.data FROM versions v JOIN manifests m "
                "ON m.artifact_id = v.artifact_id AND m.number = v.number "
                "WHERE v.artifact_id=? AND v.number=? AND NOT v.deleted",
                aid,
                number,
            ).fetchone()
        if row is None:
            raise NotFound(f"version {project}/{artifact}:v{number} not found")
        return str(row[0]), bytes(row[1])

    def commit(
        self,
        project: str,
        artifact: str,
        new: NewVersion,
        aliases: list[str],
        verify: Callable[[int], None],
    ) -> tuple[VersionInfo, bool]:
        with self._write() as c:
            self._lock_gc(c, exclusive=False)
            if new.create_type is not None:
                self._create_for_commit(c, project, artifact, new)
            aid, _, _, _, next_number = self._artifact_row(c, project, artifact, lock=True)
            # Doomed rows first, the epoch second: undoom removes rows and bumps the epoch in one
            # transaction, so whichever side of it this commit reads, it sees one of the two.
            doomed = sorted(self._doomed_among(c, new.blobs))
            if doomed:
                more = f" and {len(doomed) - 1} more" if len(doomed) > 1 else ""
                raise BeingCollected(
                    f"blob {doomed[0][:16]}...{more} of the manifest is being garbage-collected; "
                    "upload it again and retry the commit"
                )
            verify(self._gc_epoch(c))
            inputs = unique_in_order([self._resolve_input(c, ref) for ref in new.inputs])
            declared = len(inputs)
            inputs += self._resolve_observed(c, new.observed, inputs)
            label = f"{project}/{artifact}"
            self._guard_protected(c, aid, label, aliases, new.admin, "move")
            same = None if new.allow_duplicate else self._duplicate_of(c, aid, new.digest)
            if same is not None:
                # Identical content to a live version: no new version. Its aliases and tags
                # are applied to it; a TTL is not (it would shorten the life of a version
                # that existed before, maybe one somebody relies on).
                number, created = same, False
                self._add_tags(c, aid, number, new.tags)
            else:
                if (
                    new.parent is not None
                    and self._q(
                        c,
                        "SELECT 1 FROM versions WHERE artifact_id=? AND number=?",
                        aid,
                        new.parent,
                    ).fetchone()
                    is None
                ):
                    raise InvalidInput(
                        f"parent version v{new.parent} of {project}/{artifact} does not exist"
                    )
                number, created = int(next_number), True
                self._q(
                    c,
                    f"INSERT INTO versions (artifact_id, {VERSION_COLS}) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?)",
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
                )
                self._q(
                    c,
                    "INSERT INTO manifests (artifact_id, number, data) VALUES (?, ?, ?)",
                    aid,
                    number,
                    new.manifest_gz,
                )
                if new.canonical_gz is not None:
                    self._insert_canonical(c, aid, number, new.has_refs, new.canonical_gz)
                for position, (input_aid, input_number, input_digest) in enumerate(inputs):
                    self._q(
                        c,
                        "INSERT INTO version_inputs (artifact_id, number, position, "
                        "input_artifact_id, input_number, input_digest) VALUES (?,?,?,?,?,?)",
                        aid,
                        number,
                        position,
                        input_aid,
                        input_number,
                        input_digest,
                    )
                self._mark_observed(c, aid, number, declared, len(inputs))
                self._q(c, "UPDATE artifacts SET next_number=? WHERE id=?", number + 1, aid)
                self._record_refs(c, self._project_id(c, project), new.blobs)
                self._add_tags(c, aid, number, new.tags)
                if new.expires is not None:
                    self._set_expiry(c, aid, number, new.expires)
            for alias in sorted({*aliases, *([LATEST] if created else [])}):
                self._upsert_alias(c, aid, alias, number)
            return self._version(c, project, artifact, number), created

    def _create_for_commit(self, c: C, project: str, artifact: str, new: NewVersion) -> None:
        """A first commit's project and artifact, rolled back with it if it fails; a
        concurrent creator's rows win (PostgreSQL waits for it on the unique index)."""
        sql = "INSERT INTO projects (name, created) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
        self._q(c, sql, project, new.created)
        pid = self._project_id(c, project)
        inserted = self._q(
            c,
            "INSERT INTO artifacts (project_id, name, type, description, created) "
            "VALUES (?, ?, ?, '', ?) ON CONFLICT (project_id, name) DO NOTHING",
            pid,
            artifact,
            new.create_type,
            new.created,
        ).rowcount
        if not inserted:  # one deleted whole (editsdb.py) is created again, numbering kept
            row = self._q(
                c, "SELECT id FROM artifacts WHERE project_id=? AND name=?", pid, artifact
            ).fetchone()
            assert new.create_type is not None
            self._revive_artifact(c, int(row[0]), new.create_type, "", new.created)
