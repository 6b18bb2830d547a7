"""Symlinks inside a draft (``ln -s``, what ``tar xf`` and ``rsync -a`` make).

A mixin of ``DraftStore`` (``store.py``), run under the store's lock. A link is a node
row like a file's (``is_dir`` 0, never ``local``: it has no data file) whose target is a
row of the ``links`` table, keyed by the node id (``db.py``). Any target is accepted
while drafting, as on any filesystem; the commit records the links and refuses one that
is absolute or leaves the version, naming it (``manifest_extras.py``), so the draft stays
as it is to be fixed.
"""

from __future__ import annotations

import sqlite3
import threading

from ..errors import AlreadyExists, InvalidInput
from .db import DraftDB
from .model import Draft, NodeStat, entry_name
from .nodes import StoreNode

MAX_TARGET_BYTES = 4095


class DraftLinks:
    """The symlink side of ``DraftStore`` (see the module docstring)."""

    # Provided by DraftStore.
    _db: DraftDB
    _lock: threading.RLock
    _drafts: dict[int, Draft]
    _nodes: dict[int, StoreNode]

    def _mutable_dir(self, node_id: int) -> StoreNode:
        raise NotImplementedError

    def _node(self, node_id: int) -> StoreNode:
        raise NotImplementedError

    def _stat(self, node: StoreNode) -> NodeStat:
        raise NotImplementedError

    def _insert(
        self, parent: StoreNode, name: str, is_dir: bool, mode: int, local: bool
    ) -> StoreNode:
        raise NotImplementedError

    def symlink(self, parent: int, name: str, target: str) -> NodeStat:
        entry_name(name)
        if not target or "\x00" in target:
            raise InvalidInput(f"{name}: a symlink needs a target without NUL")
        if len(target.encode("utf-8", "surrogatepass")) > MAX_TARGET_BYTES:
            raise InvalidInput(f"{name}: a symlink target is at most {MAX_TARGET_BYTES} bytes")
        with self._lock:
            dir_node = self._mutable_dir(parent)
            if name in dir_node.children:
                raise AlreadyExists(f"{name} already exists")
            node = self._insert(dir_node, name, False, 0o777, False)
            try:
                with self._db.tx(f"creating the link {name}") as c:
                    c.execute("INSERT INTO links (node, target) VALUES (?,?)", (node.id, target))
            except BaseException:
                self._rollback_insert(node)
                raise
            node.target = target
            node.size = len(target.encode("utf-8", "surrogatepass"))
            return self._stat(node)

    def _rollback_insert(self, node: StoreNode) -> None:
        raise NotImplementedError

    def readlink(self, node_id: int) -> str:
        with self._lock:
            node = self._node(node_id)
            if node.target is None:
                raise InvalidInput(f"{node.name} is not a symbolic link")
            return node.target

    def _load_links(self, draft_id: int, nodes: dict[int, StoreNode]) -> None:
        rows = self._db.query(
            "SELECT node, target FROM links WHERE node IN (SELECT id FROM nodes WHERE draft=?)",
            (draft_id,),
        )
        for nid, target in rows:
            node = nodes.get(int(nid))  # type: ignore[call-overload]
            if node is not None and not node.is_dir:
                node.target = str(target)
                node.size = len(node.target.encode("utf-8", "surrogatepass"))


def drop_links(c: sqlite3.Connection, *, node: int | None = None, draft: int | None = None) -> None:
    """Delete the link rows of one node or of every node of a draft (before their nodes)."""
    if node is not None:
        c.execute("DELETE FROM links WHERE node=?", (node,))
    if draft is not None:
        c.execute("DELETE FROM links WHERE node IN (SELECT id FROM nodes WHERE draft=?)", (draft,))
