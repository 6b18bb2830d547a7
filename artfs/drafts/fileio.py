"""The bytes of draft files: open, read, write, truncate, copy-on-write, fsync, release.

A mixin of ``DraftStore`` (``store.py`` keeps the drafts and their tree): the methods here
run under the store's lock and keep its durability rules (see ``store.py``'s docstring):
a known sha256 is cleared on disk before the bytes change, a materialised copy is renamed
into place before its row says "local". A file handed to the kernel (FUSE passthrough,
``DraftHandle.hand_to_kernel``) is written without us: its size and mtime are then read
from the file.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path

from ..errors import ArtfsError, InvalidInput, IsADirectory
from ..manifest import FileEntry
from .bghash import HashWorker
from .db import DraftDB
from .model import Draft, NodeStat
from .nodes import DraftHandle, StoreNode, data_stamp
from .oserrors import disk_error

log = logging.getLogger(__name__)

_ACCMODE = os.O_ACCMODE


class FileBytes:
    """What ``DraftStore`` does with the bytes of its files (see the module docstring)."""

    # Provided by DraftStore.
    data_dir: Path
    fsync_on_close: bool
    hash_while_writing: bool
    _hash_worker: HashWorker
    _db: DraftDB
    _lock: threading.RLock
    _drafts: dict[int, Draft]
    _nodes: dict[int, StoreNode]

    def _node(self, node_id: int) -> StoreNode:
        raise NotImplementedError

    def _check_mutable(self, draft: Draft) -> None:
        raise NotImplementedError

    def _stat(self, node: StoreNode) -> NodeStat:
        raise NotImplementedError

    def data_path(self, node: StoreNode | int) -> Path:
        raise NotImplementedError

    # --- opening, reading, writing ------------------------------------------------------------
    def open(self, node_id: int, flags: int) -> DraftHandle:
        with self._lock:
            return self._open(self._node(node_id), flags)

    def _open(self, node: StoreNode, flags: int) -> DraftHandle:
        if node.is_dir:
            raise IsADirectory(f"{node.name} is a directory")
        writable = flags & _ACCMODE in (os.O_WRONLY, os.O_RDWR)
        if writable:
            self._check_mutable(self._drafts[node.draft])
            if flags & os.O_TRUNC:
                self._truncate(node, 0)
        if node.local and node.fd is None:
            try:
                node.fd = os.open(self.data_path(node), os.O_RDWR | os.O_CLOEXEC)
            except OSError as e:
                raise disk_error(e, f"opening {node.name}") from None
        node.opens += 1
        if writable:
            node.writers += 1
        return DraftHandle(self, node, writable, bool(flags & os.O_APPEND))

    def needs_data(self, node_id: int) -> FileEntry | None:
        """The inherited blob whose bytes must be made local before this file changes."""
        with self._lock:
            node = self._node(node_id)
            if node.is_dir or node.local or node.sha256 is None:
                return None
            return FileEntry(node.size, node.sha256)

    def _forget_hash(self, node: StoreNode) -> None:
        """Before bytes change: the recorded digest goes first, so a crash cannot keep it."""
        if node.sha256 is not None:
            self._db.tx_freeing(
                f"updating {node.name}",
                lambda c: c.execute(
                    "UPDATE nodes SET sha256=NULL, stamp=NULL WHERE id=?", (node.id,)
                ),
            )
            node.sha256 = None

    def _hand_to_kernel(self, handle: DraftHandle) -> None:
        with self._lock:
            node = handle.node
            if handle.closed or not node.local or node.fd is None:
                raise InvalidInput(f"{node.name}: no local bytes to hand to the kernel")
            handle.kernel_io = True
            if handle.writable:
                self._forget_hash(node)
                node.hasher = None  # writes we never see: the commit hashes the file
                if not node.kernel_writers:
                    st = os.fstat(node.fd)
                    node.on_disk = (st.st_size, st.st_mtime_ns)
                node.kernel_writers += 1

    def _look_at_disk(self, node: StoreNode) -> None:
        """Size and mtime of a file the kernel writes: what the file says, when it changed."""
        if node.fd is None:
            return
        try:
            st = os.fstat(node.fd)
        except OSError as e:
            raise disk_error(e, f"reading the size of {node.name}") from None
        seen = (st.st_size, st.st_mtime_ns)
        if seen != node.on_disk:
            node.on_disk = seen
            node.size = st.st_size
            node.mtime_ns = st.st_mtime_ns
            node.mtime_dirty = True

    def _pwrite(self, handle: DraftHandle, offset: int, data: bytes | memoryview) -> int:
        with self._lock:
            node = handle.node
            if handle.closed or not handle.writable:
                raise InvalidInput(f"{node.name}: not open for writing")
            if not node.local or node.fd is None:
                raise InvalidInput(f"{node.name}: inherited bytes not local yet (ensure_local)")
            self._forget_hash(node)
            if handle.append:
                offset = node.size
            view = memoryview(data)
            written = 0
            try:
                while written < len(view):
                    written += os.pwrite(node.fd, view[written:], offset + written)
            except OSError as e:
                node.size = max(node.size, offset + written)
                node.hasher = None
                raise disk_error(e, f"writing {node.name}") from None
            finally:
                node.mtime_ns = time.time_ns()
                node.mtime_dirty = True
            if node.hasher is not None:
                if offset == node.hashed == node.size:
                    node.hasher.update(view)
                    node.hashed += written
                else:
                    node.hasher = None
            node.size = max(node.size, offset + written)
            return written

    def setattr(
        self,
        node_id: int,
        *,
        mode: int | None = None,
        size: int | None = None,
        mtime_ns: int | None = None,
    ) -> NodeStat:
        """chmod, truncate, utimens. Truncating an inherited file needs ``ensure_local`` first
        unless the new size is 0 or unchanged."""
        with self._lock:
            node = self._node(node_id)
            self._check_mutable(self._drafts[node.draft])
            if size is not None:
                if node.is_dir:
                    raise IsADirectory(f"{node.name} is a directory")
                if size < 0:
                    raise InvalidInput(f"invalid size {size}")
                self._truncate(node, size)
                if node.opens == 0:
                    self._close_fd(node)
            if mode is not None or mtime_ns is not None:
                new_mode = node.mode if mode is None else stat.S_IMODE(mode)
                new_mtime = node.mtime_ns if mtime_ns is None else mtime_ns
                with self._db.tx(f"changing {node.name}") as c:
                    c.execute(
                        "UPDATE nodes SET mode=?, mtime_ns=? WHERE id=?",
                        (new_mode, new_mtime, node.id),
                    )
                node.mode, node.mtime_ns, node.mtime_dirty = new_mode, new_mtime, False
            return self._stat(node)

    def _truncate(self, node: StoreNode, size: int) -> None:
        if not node.local:
            if size == node.size:
                return
            if size != 0:
                raise InvalidInput(f"{node.name}: inherited bytes not local yet (ensure_local)")
            self._make_empty_local(node)
            return
        if size == node.size:
            if size == 0 and node.hasher is None and self.hash_while_writing:
                node.hasher, node.hashed = self._hash_worker.hasher(), 0
            return
        self._forget_hash(node)
        try:
            if node.fd is not None:
                os.ftruncate(node.fd, size)
            else:
                os.truncate(self.data_path(node), size)
        except OSError as e:
            raise disk_error(e, f"truncating {node.name}") from None
        node.size = size
        node.mtime_ns = time.time_ns()
        node.mtime_dirty = True
        if size == 0:
            node.hasher = self._hash_worker.hasher() if self.hash_while_writing else None
            node.hashed = 0
        elif node.hasher is not None and node.hashed != size:
            node.hasher = None

    def _make_empty_local(self, node: StoreNode) -> None:
        """An inherited file truncated to 0: new empty local bytes, nothing fetched."""
        path = self.data_path(node)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise disk_error(e, f"truncating {node.name}") from None
        now_ns = time.time_ns()
        try:
            with self._db.tx(f"truncating {node.name}") as c:
                c.execute(
                    "UPDATE nodes SET local=1, size=0, sha256=NULL, stamp=NULL, mtime_ns=? "
                    "WHERE id=?",
                    (now_ns, node.id),
                )
        except ArtfsError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._close_fd(node)
        node.fd = fd
        node.local, node.size, node.sha256, node.mtime_ns = True, 0, None, now_ns
        node.hasher = self._hash_worker.hasher() if self.hash_while_writing else None
        node.hashed = 0

    # --- copy-on-write of inherited files (driven by cow.ensure_local) ------------------------
    def materialize_target(self, node_id: int) -> tuple[FileEntry, Path] | None:
        """Where to copy an inherited file's complete bytes; None if already local."""
        with self._lock:
            node = self._node(node_id)
            if node.is_dir or node.local or node.sha256 is None:
                return None
            path = self.data_path(node).with_suffix(".cow")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise disk_error(e, f"preparing {node.name}") from None
            return FileEntry(node.size, node.sha256), path

    def adopt_materialized(self, node_id: int, tmp: Path, entry: FileEntry) -> None:
        """Make the copy at ``tmp`` the file's local bytes (unless the file changed meanwhile)."""
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None or node.local or node.sha256 != entry.sha256 or not node.attached:
                tmp.unlink(missing_ok=True)
                return
            final = self.data_path(node)
            try:
                st = os.stat(tmp)
                if st.st_size != entry.size:
                    raise InvalidInput(f"{node.name}: copied {st.st_size} bytes of {entry.size}")
                os.rename(tmp, final)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise disk_error(e, f"copying {node.name}") from None
            with self._db.tx(f"updating {node.name}") as c:
                c.execute("UPDATE nodes SET local=1, stamp=? WHERE id=?", (data_stamp(st), node.id))
            node.local = True
            node.hasher = None
            if node.opens:
                try:
                    node.fd = os.open(final, os.O_RDWR | os.O_CLOEXEC)
                except OSError as e:
                    raise disk_error(e, f"opening {node.name}") from None

    # --- fsync, flush, release ------------------------------------------------------------------
    def _persist_mtime(self, node: StoreNode) -> None:
        if node.mtime_dirty and node.attached:
            with self._db.tx(f"updating {node.name}") as c:
                c.execute("UPDATE nodes SET mtime_ns=? WHERE id=?", (node.mtime_ns, node.id))
            node.mtime_dirty = False

    def _fsync(self, handle: DraftHandle, datasync: bool) -> None:
        with self._lock:
            node = handle.node
            if node.kernel_writers:
                self._look_at_disk(node)
            self._persist_mtime(node)
            try:
                if node.fd is not None:
                    (os.fdatasync if datasync else os.fsync)(node.fd)
                self._fsync_dir(self.data_dir / str(node.draft))
            except OSError as e:
                raise disk_error(e, f"syncing {node.name}") from None
            self._db.sync()

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _flush(self, handle: DraftHandle) -> None:
        with self._lock:
            if handle.writable and not handle.closed:
                if handle.node.kernel_writers:
                    self._look_at_disk(handle.node)
                self._persist_mtime(handle.node)

    def _release(self, handle: DraftHandle) -> None:
        with self._lock:
            if handle.closed:
                return
            handle.closed = True
            node = handle.node
            node.opens -= 1
            if handle.writable and handle.kernel_io:
                self._look_at_disk(node)
                node.kernel_writers -= 1
            if handle.writable:
                node.writers -= 1
                if node.writers == 0 and node.attached and node.local:
                    try:
                        self._settle(node)
                    except ArtfsError as e:  # release cannot fail; the next commit rehashes
                        log.warning("after closing %s: %s", node.name, e)
            if node.opens == 0:
                self._close_fd(node)

    def _settle(self, node: StoreNode) -> None:
        """Last writer closed: record the mtime and, if writes were sequential, the sha256."""
        sha: str | None = None
        stamp: str | None = None
        if node.hasher is not None and node.hashed == node.size and node.fd is not None:
            sha = node.hasher.hexdigest()
            stamp = data_stamp(os.fstat(node.fd))
        if self.fsync_on_close and node.fd is not None:
            try:
                os.fsync(node.fd)
            except OSError as e:
                raise disk_error(e, f"syncing {node.name}") from None
        if sha is not None:
            with self._db.tx(f"updating {node.name}") as c:
                c.execute(
                    "UPDATE nodes SET mtime_ns=?, sha256=?, stamp=? WHERE id=?",
                    (node.mtime_ns, sha, stamp, node.id),
                )
            node.sha256 = sha
            node.mtime_dirty = False
        else:
            self._persist_mtime(node)
        if self.fsync_on_close:
            self._db.sync()

    @staticmethod
    def _close_fd(node: StoreNode) -> None:
        if node.fd is not None:
            fd, node.fd = node.fd, None
            try:
                os.close(fd)
            except OSError:
                pass
