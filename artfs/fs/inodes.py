"""The inode table: one node per path of the mount, with stable inode numbers.

Pure and synchronous: nothing here talks to the registry. The service feeds it
listings (``sync_*``) and manifests (``build_version``) and asks it questions.

Numbers are handed out once and never reused while the mount lives, so the
kernel can keep what it caches about an inode for as long as it likes. A name
that stays in a listing keeps its node (and number) across refreshes; a version
whose digest changed under the same ``vN`` (an artifact deleted and re-created)
gets a fresh subtree, so cached pages can never show the old bytes.

A version's tree is packed (``packed.py``: flat arrays, ~60 bytes per file plus its name)
and its nodes are views made on demand (``find``), not kept: the table holds one object
per project, artifact, version and alias, none per file. The tree is dropped from memory
once the kernel has forgotten every entry it was given from it and nothing in it is open
(``remember``/``forget``/``hold``): a mount that walks many large versions over days
keeps only the versions in use. Rebuilding it (from the manifest kept on disk) hands out
the very same numbers: the first build reserves a range, and the build is deterministic.
"""

from __future__ import annotations

import enum
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar, overload

from ..errors import IntegrityError, NotFound
from ..models import ArtifactInfo, ProjectInfo, VersionInfo, VersionSummary
from ..names import version_label
from .packed import ROOT, PackedTree

ROOT_INODE = 1
L = TypeVar("L", bound="Node")


class Kind(enum.Enum):
    ROOT = "root"
    PROJECT = "project"
    ARTIFACT = "artifact"
    VERSION = "version"
    DIR = "dir"  # a directory inside a version
    FILE = "file"  # a file inside a version
    ALIAS = "alias"  # a symlink ``best -> v5`` in an artifact directory
    DRAFT = "draft"  # a draft directory, or a file or directory inside one (``drafts_fs.py``)


@dataclass(frozen=True, slots=True)
class VersionKey:
    project: str
    artifact: str
    number: int

    @property
    def ref(self) -> str:
        return f"{self.project}/{self.artifact}:{version_label(self.number)}"


class Node:
    __slots__ = ("ino", "name", "parent")
    kind: Kind

    def __init__(self, ino: int, parent: int, name: str) -> None:
        self.ino = ino
        self.parent = parent
        self.name = name

    @property
    def is_dir(self) -> bool:
        return isinstance(self, DirNode)


class LocalNode(Node):
    """A node no registry listing owns (drafts, artifacts not committed yet): a sync of its
    directory keeps it unless the registry now lists something under the same name."""

    __slots__ = ()


class DirNode(Node):
    __slots__ = ("_entries", "children", "mtime")

    def __init__(self, ino: int, parent: int, name: str, mtime: float) -> None:
        super().__init__(ino, parent, name)
        self.children: dict[str, Node] = {}
        self.mtime = mtime
        self._entries: tuple[tuple[str, Node], ...] | None = None

    def entries(self) -> tuple[tuple[str, Node], ...]:
        """A snapshot of the children, for one readdir cycle (stable offsets)."""
        if self._entries is None:
            self._entries = tuple(self.children.items())
        return self._entries

    def _changed(self) -> None:
        self._entries = None


class ListedDir(DirNode):
    """A directory whose children come from a registry listing that goes stale."""

    __slots__ = ("listed_at",)

    def __init__(self, ino: int, parent: int, name: str, mtime: float) -> None:
        super().__init__(ino, parent, name, mtime)
        self.listed_at: float | None = None  # monotonic time of the last refresh attempt


class RootNode(ListedDir):
    __slots__ = ()
    kind = Kind.ROOT


class ProjectNode(ListedDir):
    __slots__ = ("project",)
    kind = Kind.PROJECT

    def __init__(self, ino: int, parent: int, info: ProjectInfo) -> None:
        super().__init__(ino, parent, info.name, info.created)
        self.project = info.name


class ArtifactNode(ListedDir):
    __slots__ = ("aliases", "artifact", "artifact_type", "description", "project")
    kind = Kind.ARTIFACT

    def __init__(self, ino: int, parent: int, info: ArtifactInfo) -> None:
        super().__init__(ino, parent, info.name, info.created)
        self.project = info.project
        self.artifact = info.name
        self.artifact_type = info.type
        self.description = info.description
        self.aliases: dict[str, int] = {}


class VersionNode(DirNode):
    """A version directory; its entries live in ``tree`` (``children`` stays empty)."""

    __slots__ = ("holds", "info", "info_at", "ino_base", "key", "live", "span", "summary", "tree")
    kind = Kind.VERSION

    def __init__(self, ino: int, parent: int, key: VersionKey, summary: VersionSummary) -> None:
        super().__init__(ino, parent, version_label(key.number), summary.created)
        self.key = key
        self.summary = summary
        self.tree: PackedTree | None = None  # built from the manifest, dropped when unused
        self.info: VersionInfo | None = None  # fetched on demand (xattrs)
        self.info_at = -float("inf")  # when: its editable fields are trusted for the listing TTL
        self.ino_base = 0  # first inode number of its tree, fixed by the first build
        self.span = 0  # inode numbers reserved for its tree (its entry count)
        self.live = 0  # entries of its tree given to the kernel and not yet forgotten
        self.holds = 0  # open files and directory handles in it

    @property
    def built(self) -> bool:
        return self.tree is not None

    def ino_of(self, index: int) -> int:
        """The inode number of entry ``index`` of its tree (the root is the version)."""
        return self.ino if index == ROOT else self.ino_base + index - 1


class TreeDirNode(DirNode):
    """A view of a directory inside a version, made on demand (``InodeTable.find``)."""

    __slots__ = ("index", "tree", "version")
    kind = Kind.DIR

    def __init__(
        self, ino: int, parent: int, name: str, version: VersionNode, tree: PackedTree, index: int
    ) -> None:
        Node.__init__(self, ino, parent, name)  # no children dict: the tree has them
        self.mtime = version.mtime
        self.version = version
        self.tree = tree
        self.index = index


class FileNode(Node):
    """A view of a file inside a version, made on demand (``InodeTable.find``)."""

    __slots__ = ("index", "size", "tree", "version")
    kind = Kind.FILE

    def __init__(
        self, ino: int, parent: int, name: str, version: VersionNode, tree: PackedTree, index: int
    ) -> None:
        super().__init__(ino, parent, name)
        self.size = tree.size(index)
        self.version = version
        self.tree = tree
        self.index = index

    @property
    def sha256(self) -> str:
        return self.tree.sha256(self.index)  # made when asked: readdir never needs it


class TreeLinkNode(FileNode):
    """A symlink inside a version (relative, never leaving it: ``manifest_extras.py``).
    A ``FileNode`` for everything that asks "is it in a version?"; never opened (the
    kernel follows a link), its attributes and ``readlink`` say what it is."""

    __slots__ = ()

    @property
    def target(self) -> str:
        return self.tree.link_target(self.index)


def tree_node(version: VersionNode, tree: PackedTree, index: int) -> Node:
    """The node (a view) of entry ``index`` of ``version``'s tree."""
    if index == ROOT:
        return version
    base = version.ino_base - 1
    parent = tree.parent(index)
    parent_ino = version.ino if parent == ROOT else base + parent
    if tree.is_dir(index):
        return TreeDirNode(base + index, parent_ino, tree.name(index), version, tree, index)
    if tree.has_links and tree.is_link(index):
        return TreeLinkNode(base + index, parent_ino, tree.name(index), version, tree, index)
    return FileNode(base + index, parent_ino, tree.name(index), version, tree, index)


class TreeEntries(Sequence[tuple[str, Node]]):
    """A directory's entries inside a version, as readdir wants them, made one at a time
    (a directory of a million files must not become a million objects for an ``ls``)."""

    __slots__ = ("_kids", "_tree", "_version")

    def __init__(self, version: VersionNode, tree: PackedTree, index: int) -> None:
        self._version = version
        self._tree = tree
        self._kids = tree.children(index)

    def __len__(self) -> int:
        return len(self._kids)

    @overload
    def __getitem__(self, k: int) -> tuple[str, Node]: ...
    @overload
    def __getitem__(self, k: slice) -> Sequence[tuple[str, Node]]: ...
    def __getitem__(self, k: int | slice) -> tuple[str, Node] | Sequence[tuple[str, Node]]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        node = tree_node(self._version, self._tree, self._kids[k])
        return node.name, node


class AliasNode(Node):
    __slots__ = ("artifact", "number")
    kind = Kind.ALIAS

    def __init__(self, ino: int, parent: int, name: str, number: int, artifact: ArtifactNode):
        super().__init__(ino, parent, name)
        self.number = number
        self.artifact = artifact

    @property
    def target(self) -> str:
        return version_label(self.number)


class InodeTable:
    """All nodes the mount knows, by inode number."""

    def __init__(self, mount_time: float) -> None:
        self._next = ROOT_INODE + 1
        self.root = RootNode(ROOT_INODE, ROOT_INODE, "", mount_time)
        self._nodes: dict[int, Node] = {ROOT_INODE: self.root}
        # the versions whose trees have inode ranges, by first number (ascending)
        self._bases: list[int] = []
        self._ranged: list[VersionNode] = []
        self._tree_entries = 0  # entries of the trees built now (for ``len``)
        # told when a version's tree is dropped, so caches holding its nodes drop them too
        self.on_unbuild: Callable[[VersionNode], None] | None = None

    def __len__(self) -> int:
        """Nodes known now: listed ones and the entries of the version trees in memory."""
        return len(self._nodes) + self._tree_entries

    def find(self, ino: int) -> Node | None:
        node = self._nodes.get(ino)
        if node is not None:
            return node
        version = self._version_owning(ino)
        if version is None or version.tree is None:
            return None
        return tree_node(version, version.tree, ino - version.ino_base + 1)

    def _version_owning(self, ino: int) -> VersionNode | None:
        """The version whose tree's range holds ``ino`` (built now or not)."""
        k = bisect_right(self._bases, ino) - 1
        if k < 0:
            return None
        version = self._ranged[k]
        return version if ino < version.ino_base + version.span else None

    def get(self, ino: int) -> Node:
        node = self.find(ino)
        if node is None:
            raise NotFound(f"inode {ino} is gone (its object was deleted)")
        return node

    # --- children, whichever kind of directory -----------------------------------------------
    def child(self, parent: DirNode, name: str) -> Node | None:
        """``parent``'s entry ``name`` (a version's tree must be built: ``build_version``)."""
        if isinstance(parent, VersionNode | TreeDirNode):
            version = parent.version if isinstance(parent, TreeDirNode) else parent
            tree = version.tree
            if tree is None:
                return None
            index = tree.lookup(parent.index if isinstance(parent, TreeDirNode) else ROOT, name)
            return None if index is None else tree_node(version, tree, index)
        return parent.children.get(name)

    def entries(self, parent: DirNode) -> Sequence[tuple[str, Node]]:
        """A snapshot of ``parent``'s entries for one readdir cycle (stable offsets)."""
        if isinstance(parent, TreeDirNode):
            return TreeEntries(parent.version, parent.tree, parent.index)
        if isinstance(parent, VersionNode):
            return () if parent.tree is None else TreeEntries(parent, parent.tree, ROOT)
        return parent.entries()

    def _ino(self) -> int:
        ino = self._next
        self._next += 1
        return ino

    # --- registry level ----------------------------------------------------------
    def sync_projects(self, projects: Iterable[ProjectInfo]) -> None:
        root = self.root
        wanted: dict[str, Node] = {}
        for info in projects:
            node = root.children.get(info.name)
            if not isinstance(node, ProjectNode):
                node = ProjectNode(self._ino(), root.ino, info)
                self._nodes[node.ino] = node
            wanted[info.name] = node
        self._replace_children(root, wanted)

    def sync_artifacts(
        self, project: ProjectNode, artifacts: Iterable[ArtifactInfo], listed_at: float | None
    ) -> None:
        """Apply a project listing; each artifact's versions and aliases come with it."""
        wanted: dict[str, Node] = {}
        for info in artifacts:
            node = project.children.get(info.name)
            if not isinstance(node, ArtifactNode):
                node = ArtifactNode(self._ino(), project.ino, info)
                self._nodes[node.ino] = node
            self.sync_artifact(node, info)
            node.listed_at = listed_at
            wanted[info.name] = node
        self._replace_children(project, wanted)

    def sync_artifact(self, node: ArtifactNode, info: ArtifactInfo) -> None:
        node.artifact_type = info.type
        node.description = info.description
        node.mtime = info.created
        wanted: dict[str, Node] = {}
        for summary in info.versions:
            label = version_label(summary.number)
            old = node.children.get(label)
            if isinstance(old, VersionNode) and old.summary.digest == summary.digest:
                wanted[label] = old
                continue
            key = VersionKey(node.project, node.artifact, summary.number)
            version = VersionNode(self._ino(), node.ino, key, summary)
            self._nodes[version.ino] = version
            wanted[label] = version
        for alias, number in sorted(info.aliases.items()):
            old = node.children.get(alias)
            if isinstance(old, AliasNode):
                old.number = number
                wanted[alias] = old
            else:
                link = AliasNode(self._ino(), node.ino, alias, number, node)
                self._nodes[link.ino] = link
                wanted[alias] = link
        node.aliases = dict(info.aliases)
        self._replace_children(node, wanted)

    def new_local(self, make: Callable[[int], L]) -> L:
        """Register a node made outside the registry's listings (``make(ino)`` builds it)."""
        node = make(self._ino())
        self._nodes[node.ino] = node
        return node

    def replace(self, node: Node) -> None:
        """Put ``node`` in the place of the node with its number (same inode, new object)."""
        self._nodes[node.ino] = node

    def drop(self, node: Node) -> None:
        """Forget one node (and what is below it) whose object is gone."""
        self._forget_subtree(node)

    def detach(self, node: Node) -> None:
        """Drop a node that the registry says no longer exists, with everything below it."""
        parent = self._nodes.get(node.parent)
        if isinstance(parent, DirNode) and parent.children.get(node.name) is node:
            del parent.children[node.name]
            parent._changed()
        self._forget_subtree(node)

    def _replace_children(self, parent: DirNode, wanted: dict[str, Node]) -> None:
        for name, old in parent.children.items():
            if isinstance(old, LocalNode) and name not in wanted:
                wanted[name] = old
            if wanted.get(name) is not old:
                self._forget_subtree(old)
        parent.children = wanted
        parent._changed()

    def _forget_subtree(self, node: Node) -> None:
        stack = [node]
        while stack:
            current = stack.pop()
            self._nodes.pop(current.ino, None)
            if isinstance(current, VersionNode):
                self._drop_range(current)
            if isinstance(current, DirNode):
                stack.extend(current.children.values())

    def _drop_range(self, version: VersionNode) -> None:
        """A version left its listing: its numbers resolve no more (open handles keep
        their nodes, which hold the tree)."""
        if version.ino_base:
            k = bisect_right(self._bases, version.ino_base) - 1
            if k >= 0 and self._ranged[k] is version:
                del self._bases[k], self._ranged[k]
        self._unbuild(version)

    # --- kernel references to nodes inside versions ----------------------------------
    def remember(self, node: Node) -> None:
        """The kernel got an entry for ``node`` (a lookup reply or a readdirplus entry).

        Counted per version, not per inode: the kernel returns every lookup it was given
        in FORGETs, so the version's count reaches 0 exactly when it holds none of its
        entries, and no record per file is needed."""
        if isinstance(node, FileNode | TreeDirNode):
            node.version.live += 1

    def remember_ino(self, ino: int) -> None:
        """``remember`` by number, with no node made (readdirplus: one call per entry)."""
        if ino in self._nodes:
            return  # not inside a version: nothing counted
        version = self._version_owning(ino)
        if version is not None and version.tree is not None:
            version.live += 1

    def forget(self, ino: int, nlookup: int) -> None:
        """The kernel dropped ``nlookup`` references to ``ino`` (FUSE FORGET)."""
        version = self._version_owning(ino)
        if version is None or version.tree is None:
            return
        version.live = max(0, version.live - nlookup)
        self._maybe_unbuild(version)

    def hold(self, version: VersionNode) -> None:
        """Something in ``version`` is open: keep its tree."""
        version.holds += 1

    def unhold(self, version: VersionNode) -> None:
        version.holds -= 1
        self._maybe_unbuild(version)

    def _maybe_unbuild(self, version: VersionNode) -> None:
        if version.live <= 0 and version.holds <= 0 and self._nodes.get(version.ino) is version:
            self._unbuild(version)

    def _unbuild(self, version: VersionNode) -> None:
        if version.tree is None:
            return
        self._tree_entries -= len(version.tree)
        version.tree = None
        version.live = 0
        if self.on_unbuild is not None:
            self.on_unbuild(version)

    # --- inside a version ----------------------------------------------------------
    def build_version(self, version: VersionNode, tree: PackedTree) -> None:
        """Install a version's tree (packed from its manifest, ``packed.py``), once.

        The first build reserves ``len(tree)`` inode numbers; a rebuild of the same
        (immutable, digest-checked) manifest gets the same ones."""
        if version.tree is not None:
            return
        listed = self._nodes.get(version.ino) is version  # (not if dropped while fetching)
        if not version.ino_base:
            version.ino_base, version.span = self._next, len(tree)
            self._next += len(tree)
            if listed:
                self._bases.append(version.ino_base)  # numbers only grow: stays sorted
                self._ranged.append(version)
        elif len(tree) != version.span:
            raise IntegrityError(f"the tree of {version.key.ref} changed size between builds")
        version.tree = tree
        if listed:
            self._tree_entries += len(tree)

    def path_in_version(self, node: FileNode | TreeDirNode) -> str:
        """The node's path relative to its version directory."""
        return node.tree.path(node.index)
