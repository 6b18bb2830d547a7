"""Blob storage: content-addressed bytes, verified on the way in.

``BlobStore`` is what the registry core and the server need; ``LocalBlobStore``
keeps blobs in a directory::

    blobs/ab/<sha256>          the bytes
    blobs/ab/<sha256>.blocks   the concatenated block digests (only when > 1 block)
    blobs/.tmp/                uploads in progress
    blobs/.quarantine/         damaged blobs moved aside (``integrity.py``), never served

The directory is mode 0700 and its files 0400 (0600 while written): the server's user's
alone.

An upload is hashed while it streams in (whole sha256 and block digests in the
same pass), written to a temp file, fsynced, and renamed into place only when its
sha256 matches; the block sidecar is renamed first, so a blob that exists always
has its sidecar. A blob already present is kept and the upload dropped.

An S3 store implements the same protocol: ``writer`` buffers to a multipart
upload under a temporary key, ``presign`` returns a short-lived GET URL (clients
then fetch bytes straight from the store) and ``local_path`` returns None.

Blobs are removed only by the garbage collector (``gc.py``), through ``list_blobs`` and
``delete``, and only after the metadata store has marked them doomed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

from ..errors import IntegrityError, InvalidInput, NotFound, StorageFull
from ..hashing import BlobHasher, block_count, hash_file, sha256_hex

log = logging.getLogger("artfs.registry")
COPY_CHUNK = 4 << 20
STALE_TMP_SECONDS = 24 * 3600
_BLOB_NAME = re.compile(r"[0-9a-f]{64}")


class BlobWriter(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def finish(self) -> bool:
        """Verify and store; True if the blob is new, False if it was already there.
        Raises IntegrityError (and stores nothing) when the bytes don't match."""
        ...

    def abort(self) -> None: ...


class BlobStore(Protocol):
    presigns: bool
    """True when ``presign`` hands out per-blob URLs; False when the server's data port
    serves every blob (then clients may build blob URLs from one template)."""

    def sizes(self, digests: Iterable[str]) -> dict[str, int]:
        """Size of each of these blobs that the store holds (absent ones are left out)."""
        ...

    def size(self, sha256: str) -> int:
        """Size of a held blob; NotFound otherwise."""
        ...

    def writer(self, sha256: str, size: int | None = None) -> BlobWriter:
        """Start an upload claimed to hash to ``sha256`` (and to be ``size`` bytes, if given)."""
        ...

    def block_digests(self, sha256: str) -> bytes:
        """Concatenated 32-byte block digests (see ``artfs.hashing``)."""
        ...

    def local_path(self, sha256: str) -> Path | None:
        """The file holding the blob if this store is a local directory, else None.
        NotFound if the blob is not held."""
        ...

    def presign(self, sha256: str, expires_in: float) -> tuple[str, float] | None:
        """(URL, expiry time) for fetching the blob directly, or None when the store has no URLs
        of its own (the server's data port serves it)."""
        ...

    def list_blobs(self) -> Iterator[tuple[str, int, float]]:
        """(sha256, size, last-modified time) of every complete blob held; uploads in progress
        and sidecars are not blobs. For the garbage collector."""
        ...

    def delete(self, sha256: str) -> None:
        """Remove a blob and its block-digest sidecar (absent ones are fine). Only the garbage
        collector calls this, for blobs it has marked doomed."""
        ...

    def forget_sizes(self) -> None:
        """Drop every blob size this process has cached: blobs may have been deleted since
        (the registry calls this when the metadata store's gc epoch moves)."""
        ...

    def remove_stale_uploads(self, idle_since: float, *, dry_run: bool = False) -> tuple[int, int]:
        """Remove what uploads that never finished left in the store (a crashed server, a
        vanished client) and that nothing has written since ``idle_since`` (a time); a running
        upload's data is never removed. (count, bytes) removed, or that would be with
        ``dry_run``. For the garbage collector."""
        ...

    # Integrity (integrity.py): re-hash, and move damaged blobs aside.
    def rehash(
        self, sha256: str, pace: Callable[[int], None] | None = None
    ) -> tuple[BlobHasher | None, object]:
        """Hash the stored bytes (``pace(n)`` after each chunk read: a rate limit); (None, None)
        if not stored. The second value identifies the stored object for ``quarantine``."""
        ...

    def read_sidecar(self, sha256: str) -> bytes | None:
        """The stored block digests as they are (None if absent); never recomputed."""
        ...

    def write_sidecar(self, sha256: str, raw: bytes) -> None:
        """Replace the block digests of a blob whose bytes were just verified."""
        ...

    def quarantine(self, sha256: str, token: object) -> bool:
        """Move a damaged blob (the object ``rehash`` returned ``token`` for) and its sidecar
        out of the store: no longer held, never served, kept for inspection. False if the
        blob was replaced meanwhile (a verified upload healed it)."""
        ...


def store_file(store: BlobStore, sha256: str, source: str | Path) -> bool:
    """Store a local file's bytes in any blob store, verified like any upload; True if new.
    A file that can't be read is InvalidInput."""
    try:
        f = open(source, "rb", buffering=0)  # noqa: SIM115 - closed below
    except OSError as e:
        raise InvalidInput(f"can't read {source}: {e.strerror}") from None
    with f:
        w = store.writer(sha256, os.fstat(f.fileno()).st_size)
        try:
            buf = bytearray(COPY_CHUNK)
            view = memoryview(buf)
            while n := f.readinto(buf):
                w.write(view[:n])
            return w.finish()
        except BaseException:
            w.abort()
            raise


def store_bytes(store: BlobStore, data: bytes) -> str:
    """Store bytes whose sha256 is computed here; returns it (tests and tools)."""
    h = BlobHasher()
    h.update(data)
    w = store.writer(h.hexdigest(), len(data))
    w.write(data)
    w.finish()
    return h.hexdigest()


def check_writer_args(sha256: str, size: int | None) -> None:
    """What every store's ``writer`` accepts: a sha256 and an optional non-negative size."""
    sha256_hex(sha256)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise InvalidInput(f"invalid blob size {size!r}")


def _storage_error(e: OSError, what: str) -> Exception:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"blob store full while {what}: {e.strerror}")
    return e


def _make_private(directory: Path) -> None:
    """The blob directory is its owner's alone (0700); an existing one is tightened."""
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o077:
        try:
            os.chmod(directory, mode & 0o700)
        except PermissionError:  # not the owner: leave it, and say so
            log.warning("%s is open to others (mode %o) and can't be changed here", directory, mode)


def _create_locked(path: Path) -> int:
    """A new temporary file (0600), locked for as long as its writer has it open."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: never waits
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return fd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class LocalBlobStore:
    presigns = False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / ".tmp"
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _make_private(self.root)
        self.tmp.mkdir(mode=0o700, exist_ok=True)
        # Several server processes may share the directory: only what is clearly abandoned.
        self.remove_stale_uploads(time.time() - STALE_TMP_SECONDS)

    def remove_stale_uploads(self, idle_since: float, *, dry_run: bool = False) -> tuple[int, int]:
        """Remove the temporary files of uploads that ended without finishing (a crash, a
        client that vanished): files in ``.tmp`` not written since ``idle_since`` and not
        held by a writer. Every writer holds an ``flock`` on its file until the file has left
        ``.tmp``, so a running upload is never touched however long it idles; the lock
        vanishes with a crashed process. (count, bytes) removed, or that would be."""
        removed = removed_bytes = 0
        for entry in os.scandir(self.tmp):
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= idle_since:
                    continue
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue  # finished or removed meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                st = os.fstat(fd)
                if st.st_mtime >= idle_since or not stat.S_ISREG(st.st_mode):
                    continue
                if not dry_run:
                    os.unlink(entry.path)
                removed += 1
                removed_bytes += st.st_size
            except OSError:
                continue  # locked by a live writer (or gone meanwhile)
            finally:
                os.close(fd)
        return removed, removed_bytes

    # --- integrity (integrity.py) ---------------------------------------------------------
    def rehash(
        self, sha256: str, pace: Callable[[int], None] | None = None
    ) -> tuple[BlobHasher | None, object]:
        try:
            f = open(self.path(sha256), "rb", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return None, None
        with f:
            hasher = BlobHasher()
            buf = bytearray(COPY_CHUNK)
            view = memoryview(buf)
            while n := f.readinto(buf):
                hasher.update(view[:n])
                if pace is not None:
                    pace(n)
            st = os.fstat(f.fileno())
        return hasher, (st.st_dev, st.st_ino)

    def read_sidecar(self, sha256: str) -> bytes | None:
        try:
            return self._sidecar(sha256).read_bytes()
        except FileNotFoundError:
            return None

    def write_sidecar(self, sha256: str, raw: bytes) -> None:
        self._write_sidecar(sha256, raw)

    def quarantine(self, sha256: str, token: object) -> bool:
        path = self.path(sha256)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return True  # gone already: nothing left to serve
        if (st.st_dev, st.st_ino) != token:
            return False
        aside = self.root / ".quarantine"
        aside.mkdir(mode=0o700, exist_ok=True)
        name = f"{sha256}.{int(time.time())}"
        try:
            os.replace(path, aside / name)
            sidecar = self._sidecar(sha256)
            if sidecar.exists():
                os.replace(sidecar, aside / f"{name}.blocks")
            _fsync_dir(path.parent)
        except OSError as e:
            raise _storage_error(e, f"quarantining blob {sha256}") from e
        return True

    def quarantined(self, sha256: str) -> bool:
        """Whether a damaged copy of this blob was moved aside (for clearer errors)."""
        aside = self.root / ".quarantine"
        try:
            return any(e.name.startswith(sha256) for e in os.scandir(aside))
        except FileNotFoundError:
            return False

    def path(self, sha256: str) -> Path:
        sha256_hex(sha256)
        return self.root / sha256[:2] / sha256

    def _sidecar(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.blocks"

    def sizes(self, digests: Iterable[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for sha in digests:
            try:
                found[sha] = os.stat(self.path(sha)).st_size
            except FileNotFoundError:
                pass
        return found

    def size(self, sha256: str) -> int:
        try:
            return os.stat(self.path(sha256)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} not found") from None

    def local_path(self, sha256: str) -> Path:
        path = self.path(sha256)
        if not path.exists():
            if self.quarantined(sha256):
                raise NotFound(
                    f"blob {sha256} is damaged on the server and quarantined; "
                    "re-upload it (artfs put of a version holding it) to heal"
                )
            raise NotFound(f"blob {sha256} not found")
        return path

    def presign(self, sha256: str, expires_in: float) -> None:
        return None

    def writer(self, sha256: str, size: int | None = None) -> _LocalWriter:
        check_writer_args(sha256, size)
        return _LocalWriter(self, sha256, size)

    def put_file(self, sha256: str, source: str | Path) -> bool:
        return store_file(self, sha256, source)

    def list_blobs(self) -> Iterator[tuple[str, int, float]]:
        for shard in sorted(os.scandir(self.root), key=lambda e: e.name):
            if len(shard.name) != 2 or not shard.is_dir(follow_symlinks=False):
                continue  # .tmp and anything else that is not a shard
            for entry in os.scandir(shard.path):
                if not _BLOB_NAME.fullmatch(entry.name) or entry.name[:2] != shard.name:
                    continue  # sidecars (<sha>.blocks) and strays
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted meanwhile
                yield entry.name, st.st_size, st.st_mtime

    def delete(self, sha256: str) -> None:
        # The blob first, its sidecar second: a blob that exists always has its sidecar.
        path = self.path(sha256)
        path.unlink(missing_ok=True)
        self._sidecar(sha256).unlink(missing_ok=True)

    def forget_sizes(self) -> None:
        return None  # sizes are never cached: every lookup is a stat

    def block_digests(self, sha256: str) -> bytes:
        size = self.size(sha256)
        if block_count(size) == 1:
            return bytes.fromhex(sha256)
        try:
            return self._sidecar(sha256).read_bytes()
        except FileNotFoundError:
            # Not written by this store (e.g. copied in by hand): compute and keep it.
            raw = hash_file(self.path(sha256)).block_digests()
            self._write_sidecar(sha256, raw)
            return raw

    def _write_sidecar(self, sha256: str, raw: bytes) -> None:
        final = self._sidecar(sha256)
        final.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = self.tmp / f"{sha256}.blocks.{secrets.token_hex(6)}"
        fd = _create_locked(tmp)
        try:
            _write_all(fd, raw)
            os.fsync(fd)
            os.fchmod(fd, 0o400)
            os.replace(tmp, final)
        except OSError as e:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise _storage_error(e, f"writing block digests of {sha256}") from e
        os.close(fd)


class _LocalWriter:
    def __init__(self, store: LocalBlobStore, sha256: str, size: int | None) -> None:
        self.store = store
        self.sha256 = sha256
        self.expected_size = size
        self.hasher = BlobHasher()
        self.tmp_path = store.tmp / f"{sha256}.{secrets.token_hex(6)}"
        self.fd: int | None = _create_locked(self.tmp_path)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.fd is None:
            raise ValueError("blob writer is closed")
        self.hasher.update(memoryview(data))
        if self.expected_size is not None and self.hasher.size > self.expected_size:
            self.abort()
            raise IntegrityError(
                f"upload of blob {self.sha256} is longer than "
                f"its declared {self.expected_size} bytes"
            )
        try:
            _write_all(self.fd, data)
        except OSError as e:
            self.abort()
            raise _storage_error(e, f"storing blob {self.sha256}") from e

    def finish(self) -> bool:
        if self.fd is None:
            raise ValueError("blob writer is closed")
        got = self.hasher.hexdigest()
        if got != self.sha256 or (
            self.expected_size is not None and self.hasher.size != self.expected_size
        ):
            size = self.hasher.size
            self.abort()
            raise IntegrityError(
                f"upload does not match blob {self.sha256}: got {size} bytes hashing to {got}"
            )
        final = self.store.path(self.sha256)
        try:
            if final.exists():
                self.abort()
                return False
            os.fsync(self.fd)
            final.parent.mkdir(mode=0o700, exist_ok=True)
            raw = self.hasher.block_digests()
            if block_count(self.hasher.size) > 1:
                self.store._write_sidecar(self.sha256, raw)
            os.fchmod(self.fd, 0o400)
            os.replace(self.tmp_path, final)
            # Closed (its lock released) only once out of .tmp: see remove_stale_uploads.
            os.close(self.fd)
            self.fd = None
            _fsync_dir(final.parent)
        except OSError as e:
            self.abort()
            raise _storage_error(e, f"storing blob {self.sha256}") from e
        return True

    def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.tmp_path.unlink(missing_ok=True)

    def __del__(self) -> None:
        if self.fd is not None:
            self.abort()
