"""The inode table: one node per path of the mount, with stable inode numbers.

Pure and synchronous: nothing here talks to the registry. The service feeds it
listings (``sync_*``) and manifests (``build_version``) and asks it questions.

Numbers are handed out once and never reused while the mount lives, so the
kernel can keep what it caches about an inode for as long as it likes. A name
that stays in a listing keeps its node (and number) across refreshes; a version
whose digest changed under the same ``vN`` (an artifact deleted and re-created)
gets a fresh subtree, so cached pages can never show the old bytes.

A version's tree is dropped from memory once the kernel has forgotten every node in
it and nothing in it is open (``remember``/``forget``/``hold``): a mount that walks
many large versions over days would otherwise keep ~300 bytes per file it ever saw.
Rebuilding it (from the manifest kept on disk) hands out the very same numbers: the
first build reserves a range, and the build is deterministic.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import NotFound
from ..manifest import Manifest
from ..models import ArtifactInfo, ProjectInfo, VersionInfo, VersionSummary
from ..names import version_label

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
    __slots__ = ("built", "holds", "info", "ino_base", "key", "live", "summary")
    kind = Kind.VERSION

    def __init__(self, ino: int, parent: int, key: VersionKey, summary: VersionSummary) -> None:
        super().__init__(ino, parent, version_label(key.number), summary.created)
        self.key = key
        self.summary = summary
        self.built = False  # children filled from the manifest (dropped again when unused)
        self.info: VersionInfo | None = None  # fetched on demand (xattrs), immutable
        self.ino_base = 0  # first inode number of its tree, fixed by the first build
        self.live = 0  # nodes of its tree the kernel holds (lookup count > 0)
        self.holds = 0  # open files and directory handles in it


class TreeDirNode(DirNode):
    __slots__ = ("version",)
    kind = Kind.DIR

    def __init__(self, ino: int, parent: int, name: str, version: VersionNode) -> None:
        super().__init__(ino, parent, name, version.mtime)
        self.version = version


class FileNode(Node):
    __slots__ = ("sha256", "size", "version")
    kind = Kind.FILE

    def __init__(
        self, ino: int, parent: int, name: str, size: int, sha256: str, version: VersionNode
    ) -> None:
        super().__init__(ino, parent, name)
        self.size = size
        self.sha256 = sha256
        self.version = version


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
        self._refs: dict[int, int] = {}  # kernel lookup counts of nodes inside versions
        # told when a version's tree is dropped, so caches holding its nodes drop them too
        self.on_unbuild: Callable[[VersionNode], None] | None = None

    def __len__(self) -> int:
        return len(self._nodes)

    def find(self, ino: int) -> Node | None:
        return self._nodes.get(ino)

    def get(self, ino: int) -> Node:
        try:
            return self._nodes[ino]
        except KeyError:
            raise NotFound(f"inode {ino} is gone (its object was deleted)") from None

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
            self._refs.pop(current.ino, None)
            if isinstance(current, DirNode):
                stack.extend(current.children.values())

    # --- kernel references to nodes inside versions ----------------------------------
    def remember(self, node: Node) -> None:
        """The kernel got an entry for ``node`` (a lookup reply or a readdirplus entry)."""
        if isinstance(node, FileNode | TreeDirNode):
            count = self._refs.get(node.ino, 0)
            if count == 0:
                node.version.live += 1
            self._refs[node.ino] = count + 1

    def forget(self, ino: int, nlookup: int) -> None:
        """The kernel dropped ``nlookup`` references to ``ino`` (FUSE FORGET)."""
        count = self._refs.get(ino)
        if count is None:
            return
        if count > nlookup:
            self._refs[ino] = count - nlookup
            return
        del self._refs[ino]
        node = self._nodes.get(ino)
        if isinstance(node, FileNode | TreeDirNode):
            node.version.live -= 1
            self._maybe_unbuild(node.version)

    def hold(self, version: VersionNode) -> None:
        """Something in ``version`` is open: keep its tree."""
        version.holds += 1

    def unhold(self, version: VersionNode) -> None:
        version.holds -= 1
        self._maybe_unbuild(version)

    def _maybe_unbuild(self, version: VersionNode) -> None:
        if (
            version.built
            and version.live <= 0
            and version.holds <= 0
            and self._nodes.get(version.ino) is version
        ):
            for child in version.children.values():
                self._forget_subtree(child)
            version.children = {}
            version.built = False
            version.live = 0
            version._changed()
            if self.on_unbuild is not None:
                self.on_unbuild(version)

    # --- inside a version ----------------------------------------------------------
    def build_version(self, version: VersionNode, manifest: Manifest) -> None:
        """Create the directories and files of a version from its manifest, once.

        One pass over the sorted paths; a dict of directory paths avoids walking
        from the version root for every file, so 100,000 files take well under a second.
        """
        if version.built:
            return
        resume = self._next
        if version.ino_base:  # a rebuild: the same numbers as the first time
            self._next = version.ino_base
        else:
            version.ino_base = self._next
        try:
            self._build(version, manifest)
        except BaseException:  # never half a tree, never a range that could overlap others
            for child in version.children.values():
                self._forget_subtree(child)
            version.children = {}
            if resume == version.ino_base:
                version.ino_base = 0
            self._next = resume
            raise
        if resume > version.ino_base:
            self._next = resume
        version.built = True
        version._changed()

    def _build(self, version: VersionNode, manifest: Manifest) -> None:
        dirs: dict[str, DirNode] = {"": version}
        nodes = self._nodes
        for path in manifest:
            entry = manifest[path]
            dir_path, _, name = path.rpartition("/")
            parent = dirs.get(dir_path)
            if parent is None:
                parent = self._make_dirs(dirs, dir_path, version)
            file = FileNode(self._ino(), parent.ino, name, entry.size, entry.sha256, version)
            nodes[file.ino] = file
            parent.children[name] = file

    def _make_dirs(self, dirs: dict[str, DirNode], dir_path: str, version: VersionNode) -> DirNode:
        """Create ``dir_path`` and its missing parents, without recursion: a stored version
        may be deeper than the interpreter's stack (committed before ``MAX_DEPTH``)."""
        missing: list[str] = []
        parent_path = dir_path
        while parent_path not in dirs:
            missing.append(parent_path)
            parent_path = parent_path.rpartition("/")[0]
        parent = dirs[parent_path]
        for path in reversed(missing):  # outermost first, the order inode numbers had
            node = TreeDirNode(self._ino(), parent.ino, path.rpartition("/")[2], version)
            self._nodes[node.ino] = node
            parent.children[node.name] = node
            dirs[path] = node
            parent = node
        return parent

    def path_in_version(self, node: FileNode | TreeDirNode) -> str:
        """The node's path relative to its version directory."""
        parts: list[str] = []
        current: Node = node
        while not isinstance(current, VersionNode):
            parts.append(current.name)
            current = self.get(current.parent)
        return "/".join(reversed(parts))
