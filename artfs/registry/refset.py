"""The blobs live versions reference, kept on disk: what ``artfs gc`` checks the store against.

A large registry's live versions reference tens of millions of blobs. Held as a Python set
of hex strings that costs ~200 bytes per digest (a 50-million-blob registry: ~10 GB of
memory). A temporary SQLite file (the stdlib's ``sqlite3``; no journal, deleted on close)
keeps the collector's memory flat whatever the registry's size: 32-byte keys in one
WITHOUT ROWID B-tree, about 50 bytes of disk per distinct digest, under ``TMPDIR``.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterable, Sequence
from types import TracebackType

from ..errors import ArtfsError, StorageFull
from ..hashing import sha256_hex

LOOKUP_CHUNK = 500  # digests per IN (...) query (SQLite allows 999 variables on old builds)


def _error(message: str) -> ArtfsError:
    full = "full" in message or "No space" in message
    return (StorageFull if full else ArtfsError)(message)


class ReferenceSet:
    """A set of blob digests in a temporary file; use as a context manager."""

    def __init__(self, directory: str | None = None) -> None:
        try:
            fd, self.path = tempfile.mkstemp(prefix="artfs-gc-", suffix=".db", dir=directory)
        except OSError as e:
            where = directory or tempfile.gettempdir()
            raise _error(f"can't make the collector's work file in {where} (TMPDIR): {e}") from None
        os.close(fd)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-65536"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("CREATE TABLE refs (sha BLOB PRIMARY KEY) WITHOUT ROWID")

    def add(self, digests: Iterable[str]) -> None:
        """Add hex digests (duplicates are fine); all of them or, on an error, none."""
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO refs VALUES (?)",
                ((bytes.fromhex(sha256_hex(d)),) for d in digests),
            )
            self._db.execute("COMMIT")
        except BaseException as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError):  # a full disk under TMPDIR, typically
                raise _error(f"the collector's work file {self.path} (TMPDIR): {e}") from None
            raise

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM refs").fetchone()[0])

    def referenced(self, digests: Sequence[str]) -> set[str]:
        """Those of ``digests`` (hex) that are in the set."""
        found: set[str] = set()
        for i in range(0, len(digests), LOOKUP_CHUNK):
            chunk = [bytes.fromhex(d) for d in digests[i : i + LOOKUP_CHUNK]]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT sha FROM refs WHERE sha IN ({marks})", chunk)
            found.update(bytes(row[0]).hex() for row in rows)
        return found

    def close(self) -> None:
        self._db.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> ReferenceSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
