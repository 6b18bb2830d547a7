"""A ``MetaStore`` on PostgreSQL, shared by any number of stateless server processes.

Same tables, queries and behaviour as ``sqlite.py`` (the queries are shared, in
``sqlbase.py``); what differs is how concurrency is made safe:

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
- Garbage collection: every commit takes the registry's gc advisory lock in shared mode
  (``pg_advisory_xact_lock_shared``) before anything else; the collector's marking (and
  un-marking) transaction takes it exclusively, so a commit runs entirely before or after
  a marking. One collection at a time: a session-level ``pg_try_advisory_lock`` held for
  the whole run on a connection of its own.

``schema`` puts the tables in their own PostgreSQL schema (created if needed): several
registries (or test runs) can share one database.
"""

from __future__ import annotations

import re
import uuid
import zlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
import psycopg_pool

from ..errors import Conflict, InvalidInput, StorageFull, Unavailable
from .blobrefs import BLOB_REFS_SCHEMA
from .sqlbase import SCHEMA_VERSION, Rows, SqlMetaStore, schema_ddl
from .stores import redact

POOL_MIN = 1
POOL_MAX = 16
POOL_TIMEOUT = 30.0  # seconds to wait for a free pooled connection
STATEMENT_TIMEOUT_MS = 120_000
LOCK_TIMEOUT_MS = 60_000
CONNECT_TIMEOUT = 10
_SCHEMA_LOCK = 0x61727466  # advisory lock key ("artf") held while creating tables
# Garbage collection's advisory locks: high 32 bits a constant, low 32 bits the schema's crc32,
# so registries in different schemas of one database don't block each other.
_GC_LOCK = 0x61726763  # "argc": commits shared, the collector's marking exclusive
_GC_RUN_LOCK = 0x61726772  # "argr": one collection at a time (session level)
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_SCHEMA = schema_ddl(
    id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    int="BIGINT",
    real="DOUBLE PRECISION",
    bool="BOOLEAN",
    false="FALSE",
    blob="BYTEA",
    without_rowid="",
)

Conn = psycopg.Connection[tuple[Any, ...]]


def disk_full(where: str, e: Exception) -> StorageFull:
    """PostgreSQL's disk is full (SQLSTATE 53100, "could not extend file"): the transaction
    was rolled back whole; the server answers 507."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return StorageFull(
        f"registry database {where}: its disk is full ({first}): nothing was changed; "
        "free space on the database host and retry"
    )


class PostgresMetaStore(SqlMetaStore[Conn]):
    # Every write to an artifact locks its row first: the per-artifact serialisation point.
    _LOCK_ARTIFACT = " FOR UPDATE OF a"
    _COLLATE = ' COLLATE "C"'  # bytewise, as in SQLite, whatever the database's locale
    # blobrefs.BlobRefsSql: many digests, one parameter. One comma-joined string, split by
    # the server: psycopg adapting a list of 100,000 strings to a text[] took 0.35 s of
    # every such query (a 1,000,000-file check 7 s, 3.5 s of it adapting; docs/decisions.md)
    _DIGEST_LIST = "unnest(string_to_array(?, ',')) AS d(sha)"

    def _digest_list(self, digests: Sequence[str]) -> Any:
        joined = ",".join(digests)
        if digests and joined.count(",") != len(digests) - 1:  # (hex digests: never, but...)
            raise InvalidInput("a blob digest holds a comma")
        return joined

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
        low = zlib.crc32((schema or "").encode())
        self._gc_key = (_GC_LOCK << 32) | low
        self._gc_run_key = (_GC_RUN_LOCK << 32) | low
        self._pool: psycopg_pool.ConnectionPool[Conn] = psycopg_pool.ConnectionPool(
            dsn,
            min_size=min(pool_min, pool_max),
            max_size=pool_max,
            timeout=pool_timeout,
            kwargs={"connect_timeout": CONNECT_TIMEOUT, "application_name": "artfs"},
            configure=self._configure,
            open=False,
            name="artfs-meta",
            # A pooled connection is checked (one empty round trip) before each use: after a
            # database restart every idle connection is dead, and without the check each
            # would fail one request before the pool noticed (docs/decisions.md).
            check=psycopg_pool.ConnectionPool.check_connection,
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
        except psycopg.errors.DiskFull as e:  # "could not extend file ...": rolled back
            raise disk_full(self._where, e) from None
        except psycopg.OperationalError as e:
            raise Unavailable(f"registry database {self._where} failed: {e}") from None

    def _write(self) -> AbstractContextManager[Conn]:
        return self._tx(read_only=False)

    def _read(self) -> AbstractContextManager[Conn]:
        return self._tx(read_only=True)

    def _execute(self, c: Conn, sql: str, args: Sequence[Any]) -> Rows:
        return c.execute(sql.replace("?", "%s"), args or None)

    def _init_schema(self) -> str:
        with self._write() as c:
            c.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            c.execute(
                "CREATE TABLE IF NOT EXISTS registry (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = c.execute("SELECT value FROM registry WHERE key='schema'").fetchone()
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise InvalidInput(
                    f"registry database {self._where} has schema {row[0]}, newer than this "
                    f"artfs ({SCHEMA_VERSION}): upgrade artfs"
                )
            # Idempotent DDL: creates a new registry, or upgrades an older schema in place.
            # Skipped when the schema is current: CREATE INDEX IF NOT EXISTS takes a SHARE lock
            # on its table even when the index exists, which deadlocked against commits
            # running on other servers (test_concurrent_commits_from_threads).
            current = row is not None and int(row[0]) == SCHEMA_VERSION
            for stmt in [] if current else _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            if row is None or int(row[0]) < BLOB_REFS_SCHEMA:
                self._backfill_refs(c)
            c.execute(
                "INSERT INTO registry (key, value) VALUES ('id', %s), ('schema', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value "
                "WHERE registry.key = 'schema'",
                (str(uuid.uuid4()), str(SCHEMA_VERSION)),
            )
            rows: dict[str, str] = dict(c.execute("SELECT key, value FROM registry").fetchall())
        return str(rows["id"])

    def _lock_gc(self, c: Conn, *, exclusive: bool) -> None:
        if exclusive:
            c.execute("SELECT pg_advisory_xact_lock(%s)", (self._gc_key,))
        else:
            c.execute("SELECT pg_advisory_xact_lock_shared(%s)", (self._gc_key,))

    def gc_run_lock(self) -> AbstractContextManager[None]:
        return self._gc_run_lock()

    @contextmanager
    def _gc_run_lock(self) -> Iterator[None]:
        # A connection of its own, outside the pool: the lock lives as long as the session,
        # so a collector that dies releases it with its connection.
        try:
            conn = psycopg.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT, autocommit=True)
        except psycopg.OperationalError as e:
            raise Unavailable(f"registry database {self._where} unreachable: {e}") from None
        with conn:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._gc_run_key,)).fetchone()
            if row is None or not row[0]:
                raise Conflict(
                    f"another artfs gc is running on {self._where}: wait for it to finish"
                )
            try:
                yield
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (self._gc_run_key,))
                except psycopg.Error:
                    pass  # closing the connection releases it anyway

    def close(self) -> None:
        self._pool.close()
