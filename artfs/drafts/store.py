"""``DraftStore``: durable drafts on local disk, and every file operation inside them.

Synchronous and FUSE-agnostic: the mount calls it with node ids and plain
values; it raises only ``artfs.errors``. Layout of the state directory::

    drafts.db                 SQLite (WAL): drafts, their trees, artifact types
    data/<draft>/<node>       the bytes of each file that is local to the draft

A file is either *local* (its bytes in ``data/``) or *inherited* from the
draft's base version: then it is only ``(size, sha256)`` and is read through
the blob cache. The first change to an inherited file needs its bytes: the
caller runs ``cow.ensure_local`` (async, through the cache) before writing or
truncating it, except truncation to zero, which needs nothing.

Durability (see docs/design-drafts.md): namespace changes are SQLite
transactions committed before the call returns; file bytes go straight to the
data file with ``pwrite``. Both survive a SIGKILL of the daemon at any point;
``fsync`` on a handle also makes them survive a power cut. Order rules keep
crashes harmless: a data file is created after its row and removed after it,
a known sha256 is cleared on disk *before* the bytes change, and a
materialised copy is renamed into place before its row says "local" — so
whatever a crash leaves, the tree and its bytes agree (orphans are removed on
the next start).

Thread safety: one re-entrant lock around the mirror; ``pread`` takes none.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sqlite3
import stat
import threading
import time
from pathlib import Path

from ..errors import (
    AlreadyExists,
    ArtfsError,
    Conflict,
    CrossDevice,
    InvalidInput,
    IsADirectory,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
)
from ..manifest import Manifest
from .bghash import HashWorker
from .commitview import CommitView
from .db import (
    DEFAULT_DIR_MODE,
    DEFAULT_FILE_MODE,
    DRAFT_COLUMNS,
    NODE_COLUMNS,
    DraftDB,
    tree_rows,
)
from .fileio import FileBytes
from .links import DraftLinks, drop_links
from .model import Draft, DraftKey, NodeStat, PendingCommit, entry_name
from .nodes import DraftHandle, StoreNode, data_stamp
from .oserrors import disk_error

log = logging.getLogger(__name__)

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_ACCMODE = os.O_ACCMODE


class DraftStore(FileBytes, CommitView, DraftLinks):
    """Drafts of every registry and artifact of one mount, under one state directory."""

    def __init__(
        self,
        state_dir: Path,
        *,
        fsync_on_close: bool = False,
        hash_while_writing: bool = True,
        owner: bool = True,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.data_dir = self.state_dir / "data"
        self.fsync_on_close = fsync_on_close
        self.hash_while_writing = hash_while_writing
        self._hash_worker = HashWorker()  # off the FUSE thread (bghash.py)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise disk_error(e, f"creating the draft state directory {state_dir}") from None
        self._owner_fd = self._lock_owner() if owner else None
        self._db = DraftDB(
            self.state_dir / "drafts.db", self.state_dir / "reserve" if owner else None
        )
        self._lock = threading.RLock()
        self._drafts: dict[int, Draft] = {}
        self._by_key: dict[DraftKey, Draft] = {}
        self._nodes: dict[int, StoreNode] = {}
        with self._lock:
            self._load_new()
            if owner:
                self._collect_orphans()

    def _lock_owner(self) -> int:
        """One owner (mount daemon) per state directory; other processes only add drafts."""
        path = self.state_dir / "owner.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise disk_error(e, f"opening {path}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Conflict(
                f"the draft state directory {self.state_dir} is in use by another mount; "
                "give each mount its own --state-dir"
            ) from None
        return fd

    # --- loading ------------------------------------------------------------------------
    def refresh(self) -> list[Draft]:
        """Pick up drafts another process (``artfs draft``) added; returns the new ones."""
        with self._lock:
            return self._load_new()

    def _load_new(self) -> list[Draft]:
        known = max(self._drafts, default=0)
        rows = self._db.query(
            f"SELECT {DRAFT_COLUMNS} FROM drafts WHERE id > ? AND root IS NOT NULL ORDER BY id",
            (known,),
        )
        new: list[Draft] = []
        for did, reg, proj, art, name, base, typ, created, root, pending in rows:
            assert isinstance(did, int) and isinstance(root, int)
            key = DraftKey(str(reg), str(proj), str(art), str(name))
            draft = Draft(
                did,
                key,
                base if isinstance(base, int) else None,
                typ if isinstance(typ, str) else None,
                float(created),  # type: ignore[arg-type]
                root,
                PendingCommit.from_text(pending if isinstance(pending, str) else None),
            )
            self._load_nodes(draft)
            self._drafts[did] = draft
            self._by_key[key] = draft
            new.append(draft)
        return new

    def _load_nodes(self, draft: Draft) -> None:
        rows = self._db.query(
            f"SELECT {NODE_COLUMNS} FROM nodes WHERE draft=? ORDER BY id", (draft.id,)
        )
        nodes: dict[int, StoreNode] = {}
        for nid, _d, parent, name, is_dir, mode, mtime_ns, size, sha, stamp, local in rows:
            assert isinstance(nid, int)
            node = StoreNode(
                nid,
                draft.id,
                parent if isinstance(parent, int) else None,
                str(name),
                bool(is_dir),
                int(mode),  # type: ignore[call-overload]
                int(mtime_ns),  # type: ignore[call-overload]
            )
            node.size = int(size)  # type: ignore[call-overload]
            node.local = bool(local)
            node.sha256 = sha if isinstance(sha, str) else None
            if node.local:
                self._load_local(node, stamp if isinstance(stamp, str) else None)
            nodes[nid] = node
        self._load_links(draft.id, nodes)
        for node in nodes.values():
            if node.parent is not None:
                parent_node = nodes.get(node.parent)
                if parent_node is None:
                    log.warning(
                        "draft %s: dropping %s, its directory is gone", draft.key, node.name
                    )
                    continue
                self._attach(parent_node, node)
        self._nodes.update(nodes)

    def _load_local(self, node: StoreNode, stamp: str | None) -> None:
        path = self.data_path(node)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            # Created (row) but the crash came before the data file: an empty file.
            # Only the owner repairs; another process may be looking mid-create.
            node.size = 0
            if self._owner_fd is None:
                return
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
                st = os.stat(path)
            except OSError as e:
                raise disk_error(e, f"restoring {path}") from None
        node.size = st.st_size
        if node.sha256 is not None and stamp != data_stamp(st):
            node.sha256 = None

    def _collect_orphans(self) -> None:
        """Remove data files that no row claims (left by a crash between two steps)."""
        try:
            entries = list(os.scandir(self.data_dir))
        except OSError as e:
            log.warning("cannot list %s: %s", self.data_dir, e)
            return
        for entry in entries:
            did = int(entry.name) if entry.name.isdigit() else None
            if did is None or did not in self._drafts:
                if did is not None and self._db.query("SELECT 1 FROM drafts WHERE id=?", (did,)):
                    continue  # being created by another process right now
                shutil.rmtree(entry.path, ignore_errors=True)
                continue
            for data in os.scandir(entry.path):
                nid = int(data.name) if data.name.isdigit() else None
                node = self._nodes.get(nid) if nid is not None else None
                if node is None or not node.local:
                    try:
                        os.unlink(data.path)
                    except OSError:
                        pass

    # --- drafts -------------------------------------------------------------------------
    def drafts(
        self, registry: str | None = None, project: str | None = None, artifact: str | None = None
    ) -> list[Draft]:
        with self._lock:
            return [
                d
                for d in self._drafts.values()
                if (registry is None or d.key.registry == registry)
                and (project is None or d.key.project == project)
                and (artifact is None or d.key.artifact == artifact)
            ]

    def find_draft(self, key: DraftKey) -> Draft | None:
        with self._lock:
            return self._by_key.get(key)

    def get_draft(self, draft_id: int) -> Draft:
        with self._lock:
            try:
                return self._drafts[draft_id]
            except KeyError:
                raise NotFound(f"draft {draft_id} is gone") from None

    def create_draft(
        self,
        key: DraftKey,
        *,
        base: int | None = None,
        manifest: Manifest | None = None,
        type: str | None = None,
        mode: int = DEFAULT_DIR_MODE,
    ) -> Draft:
        """A new draft, empty or holding ``manifest``'s files by reference (no bytes copied)."""
        key.validate()
        now = time.time()
        now_ns = int(now * 1e9)
        with self._lock:
            self._load_new()
            if key in self._by_key:
                raise AlreadyExists(f"draft {key} already exists")
            with self._db.tx(f"creating draft {key}") as c:
                if c.execute(
                    "SELECT 1 FROM drafts WHERE registry=? AND project=? AND artifact=? AND name=?",
                    (key.registry, key.project, key.artifact, key.name),
                ).fetchone():
                    raise AlreadyExists(f"draft {key} already exists")
                cur = c.execute(
                    "INSERT INTO drafts (registry, project, artifact, name, base, type, created) "
                    "VALUES (?,?,?,?,?,?,?)",
                    (key.registry, key.project, key.artifact, key.name, base, type, now),
                )
                did = cur.lastrowid
                assert did is not None
                rows, links = tree_rows(c, did, manifest, mode & 0o7777, now_ns)
                c.executemany(
                    f"INSERT INTO nodes ({NODE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows
                )
                c.executemany("INSERT INTO links (node, target) VALUES (?,?)", links)
                c.execute("UPDATE drafts SET root=? WHERE id=?", (rows[0][0], did))
            loaded = self._load_new()
            assert loaded and loaded[-1].key == key
            return loaded[-1]

    def set_draft_type(self, draft_id: int, type: str | None) -> None:
        with self._lock:
            draft = self.get_draft(draft_id)
            with self._db.tx("recording the artifact type") as c:
                c.execute("UPDATE drafts SET type=? WHERE id=?", (type, draft_id))
            draft.type = type

    def discard_draft(self, draft_id: int, *, require_empty: bool = True) -> None:
        """``rmdir`` of a draft (it must be empty: ``rm -rf`` empties it first)."""
        with self._lock:
            draft = self.get_draft(draft_id)
            self._check_mutable(draft)
            if require_empty and self._nodes[draft.root].children:
                raise NotEmpty(f"draft {draft.key} is not empty")
            self._drop_draft(draft)

    def _drop_draft(self, draft: Draft) -> None:
        def drop(c: sqlite3.Connection) -> None:
            drop_links(c, draft=draft.id)
            c.execute("DELETE FROM nodes WHERE draft=?", (draft.id,))
            c.execute("DELETE FROM drafts WHERE id=?", (draft.id,))

        self._db.tx_freeing(f"discarding draft {draft.key}", drop)
        del self._drafts[draft.id]
        del self._by_key[draft.key]
        for node in [n for n in self._nodes.values() if n.draft == draft.id]:
            node.attached = False
            del self._nodes[node.id]
            if node.opens == 0:
                self._close_fd(node)
        shutil.rmtree(self.data_dir / str(draft.id), ignore_errors=True)

    # --- artifact types set before the artifact exists (setfattr user.artfs.type) -----------
    def set_artifact_type(self, registry: str, project: str, artifact: str, type: str) -> None:
        with self._lock, self._db.tx("recording the artifact type") as c:
            c.execute(
                "INSERT INTO artifact_types VALUES (?,?,?,?) ON CONFLICT "
                "(registry, project, artifact) DO UPDATE SET type=excluded.type",
                (registry, project, artifact, type),
            )

    def artifact_type(self, registry: str, project: str, artifact: str) -> str | None:
        with self._lock:
            rows = self._db.query(
                "SELECT type FROM artifact_types WHERE registry=? AND project=? AND artifact=?",
                (registry, project, artifact),
            )
        return str(rows[0][0]) if rows else None

    # --- the tree -----------------------------------------------------------------------
    def _node(self, node_id: int) -> StoreNode:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise NotFound(f"draft entry {node_id} is gone") from None

    def _dir(self, node_id: int) -> StoreNode:
        node = self._node(node_id)
        if not node.is_dir:
            raise NotADirectory(f"{node.name} is not a directory")
        return node

    def _check_mutable(self, draft: Draft) -> None:
        if draft.committing:
            raise Conflict(f"draft {draft.key} is being committed; try again when it is done")

    def _mutable_dir(self, node_id: int) -> StoreNode:
        node = self._dir(node_id)
        self._check_mutable(self._drafts[node.draft])
        return node

    def draft_of(self, node_id: int) -> Draft:
        with self._lock:
            return self._drafts[self._node(node_id).draft]

    def lookup(self, parent: int, name: str) -> int | None:
        with self._lock:
            child = self._dir(parent).children.get(name)
            return None if child is None else child.id

    def stat(self, node_id: int) -> NodeStat:
        with self._lock:
            return self._stat(self._node(node_id))

    def _stat(self, node: StoreNode) -> NodeStat:
        if node.kernel_writers:
            self._look_at_disk(node)
        if node.is_dir:
            mode, nlink = stat.S_IFDIR | node.mode, 2 + node.subdirs
        elif node.target is not None:
            mode, nlink = stat.S_IFLNK | 0o777, 1 if node.attached else 0
        else:
            mode, nlink = stat.S_IFREG | node.mode, 1 if node.attached else 0
        return NodeStat(node.id, node.draft, mode, node.size, node.mtime_ns, nlink)

    def listdir(self, node_id: int) -> list[tuple[str, int]]:
        with self._lock:
            return [(name, child.id) for name, child in self._dir(node_id).children.items()]

    def path_of(self, node_id: int) -> str:
        """The path of an entry inside its draft ('' for the draft's root)."""
        with self._lock:
            parts: list[str] = []
            node = self._node(node_id)
            while node.parent is not None:
                parts.append(node.name)
                node = self._nodes[node.parent]
            return "/".join(reversed(parts))

    def resolve(self, draft_id: int, path: str) -> int:
        """The entry at ``path`` inside a draft ('' is the root)."""
        with self._lock:
            node = self._nodes[self.get_draft(draft_id).root]
            for part in [p for p in path.split("/") if p]:
                if not node.is_dir:
                    raise NotADirectory(f"{path}: {node.name} is not a directory")
                child = node.children.get(part)
                if child is None:
                    raise NotFound(f"{path}: no such file or directory in the draft")
                node = child
            return node.id

    def _attach(self, parent: StoreNode, node: StoreNode) -> None:
        parent.children[node.name] = node
        node.parent = parent.id
        node.attached = True
        if node.is_dir:
            parent.subdirs += 1

    def _detach(self, node: StoreNode) -> None:
        parent = self._nodes[node.parent] if node.parent is not None else None
        if parent is not None and parent.children.get(node.name) is node:
            del parent.children[node.name]
            if node.is_dir:
                parent.subdirs -= 1

    def _forget(self, node: StoreNode) -> None:
        """A node that left the tree for good: its data file goes; open fds keep the bytes."""
        node.attached = False
        self._nodes.pop(node.id, None)
        if node.local and not node.is_dir:
            try:
                os.unlink(self.data_path(node))
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("could not remove %s: %s", self.data_path(node), e)
        if node.opens == 0:
            self._close_fd(node)

    def data_path(self, node: StoreNode | int) -> Path:
        if isinstance(node, int):
            node = self._node(node)
        return self.data_dir / str(node.draft) / str(node.id)

    # --- creating ----------------------------------------------------------------------
    def _insert(
        self, parent: StoreNode, name: str, is_dir: bool, mode: int, local: bool
    ) -> StoreNode:
        now_ns = time.time_ns()
        with self._db.tx(f"creating {name}") as c:
            cur = c.execute(
                "INSERT INTO nodes (draft, parent, name, is_dir, mode, mtime_ns, size, local) "
                "VALUES (?,?,?,?,?,?,0,?)",
                (parent.draft, parent.id, name, int(is_dir), mode & 0o7777, now_ns, int(local)),
            )
            nid = cur.lastrowid
            assert nid is not None
            c.execute("UPDATE nodes SET mtime_ns=? WHERE id=?", (now_ns, parent.id))
        node = StoreNode(nid, parent.draft, parent.id, name, is_dir, mode & 0o7777, now_ns)
        node.local = local
        self._nodes[nid] = node
        self._attach(parent, node)
        parent.mtime_ns = now_ns
        return node

    def mkdir(self, parent: int, name: str, mode: int = DEFAULT_DIR_MODE) -> NodeStat:
        entry_name(name)
        with self._lock:
            dir_node = self._mutable_dir(parent)
            if name in dir_node.children:
                raise AlreadyExists(f"{name} already exists")
            return self._stat(self._insert(dir_node, name, True, mode, False))

    def create(
        self, parent: int, name: str, mode: int = DEFAULT_FILE_MODE, flags: int = os.O_RDWR
    ) -> tuple[DraftHandle, NodeStat]:
        """``open(O_CREAT)``: a new empty local file, or the existing one (EEXIST with O_EXCL)."""
        entry_name(name)
        with self._lock:
            dir_node = self._mutable_dir(parent)
            existing = dir_node.children.get(name)
            if existing is not None:
                if flags & os.O_EXCL:
                    raise AlreadyExists(f"{name} already exists")
                handle = self.open(existing.id, flags)
                return handle, self._stat(existing)
            node = self._insert(dir_node, name, False, mode, True)
            self._new_data_file(node)
            node.hasher = self._hash_worker.hasher() if self.hash_while_writing else None
            node.hashed = 0
            handle = self._open(node, flags)
            return handle, self._stat(node)

    def mknod(self, parent: int, name: str, mode: int) -> NodeStat:
        """Regular files only: a version cannot hold devices, FIFOs or sockets."""
        if not stat.S_ISREG(mode) and stat.S_IFMT(mode) != 0:
            raise NotPermitted(
                f"{name}: a draft holds only regular files, directories and symbolic links"
            )
        handle, st = self.create(parent, name, stat.S_IMODE(mode), os.O_WRONLY | os.O_EXCL)
        handle.release()
        return st

    @staticmethod
    def refuse_special(what: str) -> NotPermitted:
        """The error for hard link/device creation inside a draft."""
        return NotPermitted(
            f"{what}: a draft holds only regular files, directories and symbolic links"
        )

    def _new_data_file(self, node: StoreNode) -> None:
        path = self.data_path(node)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as e:
            self._rollback_insert(node)
            raise disk_error(e, f"creating {node.name}") from None
        self._close_fd(node)
        node.fd = fd
        node.size = 0

    def _rollback_insert(self, node: StoreNode) -> None:
        try:
            self._db.tx_freeing(
                f"undoing {node.name}",
                lambda c: c.execute("DELETE FROM nodes WHERE id=?", (node.id,)),
            )
        except ArtfsError as e:
            log.warning("could not undo the creation of %s: %s", node.name, e)
        self._detach(node)
        self._nodes.pop(node.id, None)

    # --- removing and renaming ------------------------------------------------------------------
    def unlink(self, parent: int, name: str) -> None:
        with self._lock:
            dir_node = self._mutable_dir(parent)
            node = dir_node.children.get(name)
            if node is None:
                raise NotFound(f"{name}: no such file")
            if node.is_dir:
                raise IsADirectory(f"{name} is a directory (use rmdir)")
            self._remove(dir_node, node)

    def rmdir(self, parent: int, name: str) -> None:
        with self._lock:
            dir_node = self._mutable_dir(parent)
            node = dir_node.children.get(name)
            if node is None:
                raise NotFound(f"{name}: no such directory")
            if not node.is_dir:
                raise NotADirectory(f"{name} is not a directory")
            if node.children:
                raise NotEmpty(f"{name}: directory not empty")
            self._remove(dir_node, node)

    def _remove(self, dir_node: StoreNode, node: StoreNode) -> None:
        now_ns = time.time_ns()

        def remove(c: sqlite3.Connection) -> None:
            drop_links(c, node=node.id)
            c.execute("DELETE FROM nodes WHERE id=?", (node.id,))
            c.execute("UPDATE nodes SET mtime_ns=? WHERE id=?", (now_ns, dir_node.id))

        self._db.tx_freeing(f"removing {node.name}", remove)
        self._detach(node)
        dir_node.mtime_ns = now_ns
        self._forget(node)
        self._db.ensure_reserve()  # the bytes just freed make room for it again

    def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        """rename(2) inside one draft: over files, over empty directories, or exchanging two."""
        entry_name(new_name)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise InvalidInput(f"rename flags {flags:#x} are not supported")
        with self._lock:
            src_dir = self._mutable_dir(old_parent)
            dst_dir = self._dir(new_parent)
            if src_dir.draft != dst_dir.draft:
                raise CrossDevice(f"{old_name}: cannot rename between two drafts")
            src = src_dir.children.get(old_name)
            if src is None:
                raise NotFound(f"{old_name}: no such file or directory")
            dst = dst_dir.children.get(new_name)
            if flags & RENAME_EXCHANGE:
                if dst is None:
                    raise NotFound(f"{new_name}: no such file or directory")
                self._exchange(src_dir, src, dst_dir, dst)
                return
            if dst is not None and flags & RENAME_NOREPLACE:
                raise AlreadyExists(f"{new_name} already exists")
            if dst is src:
                return
            if src.is_dir:
                self._check_not_inside(src, dst_dir)
            if dst is not None and dst.is_dir and self._is_ancestor(dst, src_dir):
                raise NotEmpty(f"{new_name}: directory not empty (it holds {old_name})")
            if dst is not None:
                if dst.is_dir and not src.is_dir:
                    raise IsADirectory(f"{new_name} is a directory")
                if src.is_dir and not dst.is_dir:
                    raise NotADirectory(f"{new_name} is not a directory")
                if dst.children:
                    raise NotEmpty(f"{new_name}: directory not empty")
            now_ns = time.time_ns()

            def move(c: sqlite3.Connection) -> None:
                if dst is not None:
                    c.execute("DELETE FROM nodes WHERE id=?", (dst.id,))
                c.execute(
                    "UPDATE nodes SET parent=?, name=? WHERE id=?", (dst_dir.id, new_name, src.id)
                )
                c.execute(
                    "UPDATE nodes SET mtime_ns=? WHERE id IN (?, ?)",
                    (now_ns, src_dir.id, dst_dir.id),
                )

            self._db.tx_freeing(f"renaming {old_name}", move)
            if dst is not None:
                self._detach(dst)
            self._detach(src)
            src.name = new_name
            self._attach(dst_dir, src)
            src_dir.mtime_ns = dst_dir.mtime_ns = now_ns
            if dst is not None:
                self._forget(dst)

    def _is_ancestor(self, ancestor: StoreNode, node: StoreNode) -> bool:
        """Whether ``ancestor`` is ``node`` or one of its parents."""
        current: StoreNode | None = node
        while current is not None:
            if current is ancestor:
                return True
            current = self._nodes.get(current.parent) if current.parent is not None else None
        return False

    def _check_not_inside(self, moving: StoreNode, target_dir: StoreNode) -> None:
        if self._is_ancestor(moving, target_dir):
            raise InvalidInput(f"cannot move {moving.name} inside itself")

    def _exchange(self, a_dir: StoreNode, a: StoreNode, b_dir: StoreNode, b: StoreNode) -> None:
        if a is b:
            return
        if a.is_dir:
            self._check_not_inside(a, b_dir)
        if b.is_dir:
            self._check_not_inside(b, a_dir)
        a_name, b_name = a.name, b.name
        with self._db.tx(f"exchanging {a_name} and {b_name}") as c:
            c.execute("UPDATE nodes SET parent=?, name=? WHERE id=?", (b_dir.id, b_name, a.id))
            c.execute("UPDATE nodes SET parent=?, name=? WHERE id=?", (a_dir.id, a_name, b.id))
        self._detach(a)
        self._detach(b)
        a.name, b.name = b_name, a_name
        self._attach(b_dir, a)
        self._attach(a_dir, b)

    def close(self) -> None:
        self._hash_worker.close()
        with self._lock:
            for node in self._nodes.values():
                self._close_fd(node)
            self._db.close()
            if self._owner_fd is not None:
                os.close(self._owner_fd)
                self._owner_fd = None
