"""The embedded ``MetaStore``: one SQLite file in WAL mode.

The queries are shared with the PostgreSQL store (``sqlbase.py``); this module supplies
the connections, transactions and schema.

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

import fcntl
import logging
import os
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from ..errors import Conflict, InvalidInput, StorageFull
from .blobrefs import BLOB_REFS_SCHEMA
from .reserve import RESERVE_BYTES, free_bytes, is_disk_full, keep_reserve, release_reserve
from .sqlbase import SCHEMA_VERSION, Rows, SqlMetaStore, schema_ddl

MAX_IDLE = 8  # pooled connections kept open
log = logging.getLogger("artfs.registry")

_SCHEMA = schema_ddl(
    id="INTEGER PRIMARY KEY",
    int="INTEGER",
    real="REAL",
    bool="INTEGER",
    false="0",
    blob="BLOB",
    without_rowid=" WITHOUT ROWID",
)


def _make_private(path: str) -> None:
    """Create the database file readable by its owner only (it holds the token hashes), or
    tighten an existing one, with its WAL and shared-memory files, to 0600. SQLite creates
    ``-wal``/``-shm`` with the database file's permissions."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _tighten(path, fd)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        try:
            fd = os.open(path + suffix, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            _tighten(path + suffix, fd)
        finally:
            os.close(fd)


def _tighten(path: str, fd: int) -> None:
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & 0o077:
        try:
            os.fchmod(fd, mode & 0o700)
        except PermissionError:  # not the owner: leave it, and say so
            log.warning("%s is readable by others (mode %o) and can't be changed here", path, mode)


class SqliteMetaStore(SqlMetaStore[sqlite3.Connection]):
    # BEGIN IMMEDIATE already serialises every write: no row lock to take.
    _LOCK_ARTIFACT = ""
    _COLLATE = ""  # SQLite's default BINARY collation is bytewise

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 60.0, spend_reserve: bool = False
    ) -> None:
        """``spend_reserve``: give the space kept in reserve (reserve.py) back to the
        filesystem when the disk is nearly full, so this process can write (``artfs gc``)."""
        self.path = str(path)
        self._busy_timeout = busy_timeout
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        _make_private(self.path)
        try:
            self._open()
        except sqlite3.OperationalError as e:
            if not is_disk_full(e, self.path):
                raise
            if not release_reserve(self.path):
                raise self._full(e) from None
            self._open()  # with the reserve's room: the -shm index fits now
        if spend_reserve and free_bytes(self.path) < RESERVE_BYTES:
            release_reserve(self.path)
        else:
            keep_reserve(self.path)

    def _open(self) -> None:
        """Check the journal mode and schema; writes only when they must change (a new or
        older registry), so an up-to-date one opens on a full disk."""
        self._set_wal()
        self._init_schema()

    def _full(self, e: Exception) -> StorageFull:
        return StorageFull(
            f"registry database {self.path}: the disk is full ({e}): nothing was changed; "
            "free space (artfs gc, docs/deploy.md) and retry"
        )

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
        """One write transaction; on a full disk it is rolled back whole (a COMMIT that
        fails leaves the connection in its transaction: it is closed, not pooled, which
        rolls back) and ``StorageFull`` raised."""
        try:
            with self._conn() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            if is_disk_full(e, self.path):
                raise self._full(e) from None
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._conn() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _execute(self, c: sqlite3.Connection, sql: str, args: Sequence[Any]) -> Rows:
        return c.execute(sql, args)

    def _set_wal(self) -> None:
        # Switching a fresh file to WAL needs a moment of exclusive access; several processes
        # opening the same new registry at once may briefly see "locked".
        with self._conn() as c:
            if str(c.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return  # (asking writes nothing; setting it would, on a new file)
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
        with self._read() as c:
            (version,) = c.execute("PRAGMA user_version").fetchone()
            row = None
            if version == SCHEMA_VERSION:
                row = c.execute("SELECT value FROM registry WHERE key='id'").fetchone()
        if row is not None:  # up to date: nothing to write
            self._registry_id = str(row[0])
            return
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
            if version < BLOB_REFS_SCHEMA:
                self._backfill_refs(c)
            c.execute(
                "INSERT OR IGNORE INTO registry (key, value) VALUES ('id', ?)", (str(uuid.uuid4()),)
            )
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._registry_id = str(
                c.execute("SELECT value FROM registry WHERE key='id'").fetchone()[0]
            )

    def gc_run_lock(self) -> AbstractContextManager[None]:
        return self._gc_run_lock()

    @contextmanager
    def _gc_run_lock(self) -> Iterator[None]:
        # A lock file beside the database: the collector runs on the host that holds it.
        path = self.path + ".gc-lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Conflict(
                    f"another artfs gc is running on {self.path}: wait for it to finish"
                ) from None
            yield
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
