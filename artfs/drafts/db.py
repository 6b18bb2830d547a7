"""The draft namespace on disk: one SQLite database in the state directory.

WAL mode with ``synchronous=NORMAL``: every transaction is in the WAL file
(written with ``write()``) before its statement returns, so an acknowledged
namespace change survives a SIGKILL of the daemon; ``sync()`` (called on
fsync) checkpoints, which fsyncs the WAL and the database, so it also
survives a power cut. Explicit ``BEGIN IMMEDIATE`` transactions make the
daemon and a CLI process (``artfs draft``) safe to write the file together.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StorageFull
from ..manifest import Manifest
from .oserrors import disk_error

DEFAULT_DIR_MODE = 0o755
DEFAULT_FILE_MODE = 0o644

SCHEMA = """
CREATE TABLE IF NOT EXISTS drafts (
    id INTEGER PRIMARY KEY,
    registry TEXT NOT NULL,
    project TEXT NOT NULL,
    artifact TEXT NOT NULL,
    name TEXT NOT NULL,
    base INTEGER,
    type TEXT,
    created REAL NOT NULL,
    root INTEGER,
    pending TEXT,
    UNIQUE (registry, project, artifact, name)
);
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY,
    draft INTEGER NOT NULL,
    parent INTEGER,
    name TEXT NOT NULL,
    is_dir INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    stamp TEXT,
    local INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS nodes_by_draft ON nodes (draft);
CREATE TABLE IF NOT EXISTS links (
    node INTEGER PRIMARY KEY,
    target TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS artifact_types (
    registry TEXT NOT NULL,
    project TEXT NOT NULL,
    artifact TEXT NOT NULL,
    type TEXT NOT NULL,
    PRIMARY KEY (registry, project, artifact)
);
"""

NODE_COLUMNS = "id, draft, parent, name, is_dir, mode, mtime_ns, size, sha256, stamp, local"
DRAFT_COLUMNS = "id, registry, project, artifact, name, base, type, created, root, pending"


RESERVE_BYTES = 256 * 1024


class DraftDB:
    """A thin wrapper: one connection, transactions that raise only ``artfs.errors``.

    ``reserve`` is a file of ``RESERVE_BYTES`` kept beside the database: when the
    state directory is full, a transaction that frees space (unlink, rmdir, rename
    over a file, discarding a draft) may itself need a few pages for the WAL, so
    ``tx_freeing`` gives the reserve up and retries once. Without it a full state
    directory could not even be cleaned up through the mount.
    """

    def __init__(self, path: Path, reserve: Path | None = None) -> None:
        self.path = path
        self.reserve = reserve
        self.ensure_reserve()
        try:
            self.conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise disk_error(e, f"opening the draft database {path}") from None

    @contextmanager
    def tx(self, what: str) -> Iterator[sqlite3.Connection]:
        """One atomic change; rolled back (and translated) if anything in it fails."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise disk_error(e, what) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if isinstance(exc, sqlite3.Error):
                raise disk_error(exc, what) from None
            raise

    def tx_freeing(self, what: str, fn: Callable[[sqlite3.Connection], object]) -> None:
        """A transaction that frees space: if the disk is full, use the reserve and retry."""
        try:
            with self.tx(what) as c:
                fn(c)
        except StorageFull:
            if self.reserve is None or not self.reserve.exists():
                raise
            self.reserve.unlink(missing_ok=True)
            with self.tx(what) as c:
                fn(c)
        self.ensure_reserve()

    def ensure_reserve(self) -> None:
        """(Re)create the reserve when there is room; never fails."""
        if self.reserve is None or self.reserve.exists():
            return
        tmp = self.reserve.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
            os.rename(tmp, self.reserve)
        except OSError:
            tmp.unlink(missing_ok=True)

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        try:
            return list(self.conn.execute(sql, args))
        except sqlite3.Error as e:
            raise disk_error(e, "reading the draft database") from None

    def sync(self) -> None:
        """Make every committed transaction survive a power cut (fsync WAL + database)."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as e:
            raise disk_error(e, "syncing the draft database") from None

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass


def tree_rows(
    c: Any, draft_id: int, manifest: Manifest | None, mode: int, now_ns: int
) -> tuple[list[tuple[object, ...]], list[tuple[int, str]]]:
    """Node rows for a new draft: its root, then the directories and files of ``manifest``
    (executables 0755), its empty directories and its symlinks; and the ``links`` rows."""
    (top,) = c.execute("SELECT coalesce(max(id), 0) FROM nodes").fetchone()
    next_id = int(top) + 1
    root = next_id
    rows: list[tuple[object, ...]] = [(root, draft_id, None, "", 1, mode, now_ns, 0, None, None, 0)]
    next_id += 1
    dirs: dict[str, int] = {"": root}

    def dir_id(path: str) -> int:
        """The directory's node id, its missing parents made first; iterative, since a base
        version stored before ``MAX_DEPTH`` may be deeper than the interpreter's stack."""
        nonlocal next_id
        missing: list[str] = []
        while path not in dirs:
            missing.append(path)
            path = path.rpartition("/")[0]
        parent = dirs[path]
        for made in reversed(missing):
            nid = next_id
            next_id += 1
            name = made.rpartition("/")[2]
            rows.append(
                (nid, draft_id, parent, name, 1, DEFAULT_DIR_MODE, now_ns, 0, None, None, 0)
            )
            dirs[made] = parent = nid
        return parent

    links: list[tuple[int, str]] = []
    if manifest is None:
        return rows, links
    executable = manifest.executable
    for path, entry in manifest.items():
        parent_path, _, name = path.rpartition("/")
        parent = dir_id(parent_path)
        file_mode = 0o755 if path in executable else DEFAULT_FILE_MODE
        rows.append(
            (
                next_id,
                draft_id,
                parent,
                name,
                0,
                file_mode,
                now_ns,
                entry.size,
                entry.sha256,
                None,
                0,
            )
        )
        next_id += 1
    for path in manifest.dirs:
        dir_id(path)
    for path, target in manifest.symlinks.items():
        parent_path, _, name = path.rpartition("/")
        parent = dir_id(parent_path)
        rows.append((next_id, draft_id, parent, name, 0, 0o777, now_ns, 0, None, None, 0))
        links.append((next_id, target))
        next_id += 1
    return rows, links
