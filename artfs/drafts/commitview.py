"""What a commit reads from and records in the store: writers, the frozen snapshot, the
pending commit, hashes learnt while uploading.

A mixin of ``DraftStore`` (``store.py``), run under the store's lock.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .db import DraftDB
from .model import Draft, PendingCommit, SnapshotFile
from .nodes import StoreNode, data_stamp
from .oserrors import disk_error


@dataclass(slots=True)
class DraftShape:
    executable: list[str] = field(default_factory=list)
    symlinks: list[tuple[str, str]] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)


class CommitView:
    """The commit's side of ``DraftStore`` (see the module docstring)."""

    # Provided by DraftStore.
    _db: DraftDB
    _lock: threading.RLock
    _drafts: dict[int, Draft]
    _nodes: dict[int, StoreNode]

    def get_draft(self, draft_id: int) -> Draft:
        raise NotImplementedError

    def path_of(self, node_id: int) -> str:
        raise NotImplementedError

    def _check_mutable(self, draft: Draft) -> None:
        raise NotImplementedError

    def _drop_draft(self, draft: Draft) -> None:
        raise NotImplementedError

    def data_path(self, node: StoreNode | int) -> Path:
        raise NotImplementedError

    # --- commit support -------------------------------------------------------------------------
    def writers(self, draft_id: int) -> list[str]:
        """Paths of the draft's files that are open for writing right now."""
        with self._lock:
            return sorted(
                self.path_of(n.id)
                for n in self._nodes.values()
                if n.draft == draft_id and n.writers > 0 and n.attached
            )

    def begin_commit(self, draft_id: int) -> Draft:
        """Freeze a draft: every change is refused (EBUSY) until ``end_commit``/``finish_commit``."""
        with self._lock:
            draft = self.get_draft(draft_id)
            self._check_mutable(draft)
            draft.committing = True
            return draft

    def end_commit(self, draft_id: int) -> None:
        """The commit failed: the draft is writable again, exactly as it was."""
        with self._lock:
            draft = self._drafts.get(draft_id)
            if draft is not None:
                draft.committing = False

    def finish_commit(self, draft_id: int) -> None:
        """The commit landed: the draft disappears with its data."""
        with self._lock:
            draft = self.get_draft(draft_id)
            self._drop_draft(draft)

    def set_pending(self, draft_id: int, pending: PendingCommit | None) -> None:
        with self._lock:
            draft = self.get_draft(draft_id)
            with self._db.tx("recording the commit in progress") as c:
                c.execute(
                    "UPDATE drafts SET pending=? WHERE id=?",
                    (None if pending is None else pending.to_text(), draft_id),
                )
            self._db.sync()
            draft.pending = pending

    def snapshot(self, draft_id: int) -> list[SnapshotFile]:
        """Every file of the draft with what is known of its content, sorted by path."""
        with self._lock:
            root = self._nodes[self.get_draft(draft_id).root]
            return sorted(self._walk(root, ""), key=lambda f: f.path)

    def _walk(self, root: StoreNode, root_prefix: str) -> Iterator[SnapshotFile]:
        """Every file under ``root``; a stack, not recursion (a draft made from a version
        stored before ``MAX_DEPTH`` may be deeper than the interpreter's stack)."""
        stack = [(root, root_prefix)]
        while stack:
            node, prefix = stack.pop()
            for name, child in node.children.items():
                path = f"{prefix}{name}"
                if child.is_dir:
                    stack.append((child, path + "/"))
                elif child.target is None:
                    yield self._snapshot_file(child, path)

    def shape(self, draft_id: int) -> DraftShape:
        """What the commit records besides files' bytes: executable files (the owner's
        x bit), symlinks and empty directories (``manifest_extras.py``)."""
        with self._lock:
            out = DraftShape()
            stack = [(self._nodes[self.get_draft(draft_id).root], "")]
            while stack:
                node, prefix = stack.pop()
                for name, child in node.children.items():
                    path = f"{prefix}{name}"
                    if child.is_dir:
                        if not child.children:
                            out.dirs.append(path)
                        stack.append((child, path + "/"))
                    elif child.target is not None:
                        out.symlinks.append((path, child.target))
                    elif child.mode & stat.S_IXUSR:
                        out.executable.append(path)
            return out

    def _snapshot_file(self, child: StoreNode, path: str) -> SnapshotFile:
        if not child.local:
            return SnapshotFile(path, child.id, child.size, child.sha256, None)
        return SnapshotFile(
            path, child.id, child.size, self._known_sha(child), self.data_path(child)
        )

    def _known_sha(self, node: StoreNode) -> str | None:
        if node.writers == 0 and node.hasher is not None and node.hashed == node.size:
            return str(node.hasher.hexdigest())
        if node.sha256 is None:
            return None
        rows = self._db.query("SELECT stamp FROM nodes WHERE id=?", (node.id,))
        try:
            st = os.stat(self.data_path(node))
        except OSError:
            return None
        return node.sha256 if rows and rows[0][0] == data_stamp(st) else None

    def remember_hash(self, node_id: int, sha256: str, stamp: str) -> None:
        """Record a digest computed by a commit, valid while the data file keeps ``stamp``."""
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None or not node.local:
                return
            with self._db.tx(f"recording the digest of {node.name}") as c:
                c.execute("UPDATE nodes SET sha256=?, stamp=? WHERE id=?", (sha256, stamp, node_id))
            node.sha256 = sha256

    @staticmethod
    def stamp_of(path: Path) -> str:
        try:
            return data_stamp(os.stat(path))
        except OSError as e:
            raise disk_error(e, f"reading {path}") from None
