"""The mount's write side: projects, artifacts, drafts, alias links and commits (SPEC §2 Publishing).

FUSE-agnostic like ``service.py``, which dispatches here: ``ArtfsFS`` keeps the
read side (versions, listings) and hands every mutation outside a version, and
every operation on a draft node, to ``DraftsFS``. The draft data itself lives
in ``artfs.drafts.DraftStore``; this module maps its node ids to inodes and
calls it as docs/design-drafts.md ("Operations the mount calls") prescribes.

* ``mkdir MOUNT/p`` makes a *local* project, created at the registry by the first
  commit into it (``local_projects.py``). ``mkdir MOUNT/p/a``
  makes a *local* artifact: an empty directory in this mount only, created at
  the registry by the first commit, so that ``setfattr user.artfs.type`` can
  still choose its type (a type is fixed at creation). ``mkdir MOUNT/p/a/NAME``
  makes an empty draft.
* Inside a draft every regular file and directory operation goes to the
  store; inherited files are read through the blob cache and copied locally
  (``cow.Materializer``) before their first change. Draft nodes get short
  kernel timeouts and no ``keep_cache``: they change.
* Inside a draft a symlink is a plain link, kept by the commit if it stays inside the
  version (``drafts/links.py``); xattrs and ACLs on draft nodes answer EOPNOTSUPP.
* Alias links in an artifact directory (``ln -s``, ``ln -sfn``, ``rm``): the
  ``AliasLinks`` mixin of ``alias_links.py``.
* ``setxattr user.artfs.commit`` on a draft runs the commit here, in the
  daemon; afterwards the draft's nodes are dropped, the artifact is re-listed
  and the kernel told to forget the names that changed. That notification is
  asynchronous (``invalidate`` must not block: the kernel holds the directory
  for the very request being answered).
"""

from __future__ import annotations

import logging
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import trio

from .. import config
from ..cache.protocol import BlobReader
from ..drafts.commit import CommitCache
from ..drafts.cow import Materializer
from ..drafts.model import DraftKey
from ..drafts.nodes import DraftHandle
from ..drafts.requests import COMMIT_XATTR, TYPE_XATTR
from ..drafts.serve import handle_commit_request
from ..drafts.store import DraftStore
from ..errors import (
    AlreadyExists,
    ArtfsError,
    InvalidInput,
    IsADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    Unavailable,
)
from ..models import ArtifactInfo
from ..names import LATEST, alias_name, artifact_name, version_label
from ..registry.core import artifact_type as check_artifact_type
from .alias_links import AliasLinks
from .attrs import Attr, Opened
from .inodes import (
    AliasNode,
    ArtifactNode,
    Kind,
    ListedDir,
    LocalNode,
    Node,
    ProjectNode,
    RootNode,
    VersionNode,
)
from .local_projects import LocalProjects
from .metastore import recall_registry_id

if TYPE_CHECKING:
    from .service import ArtfsFS

log = logging.getLogger(__name__)

DRAFT_TIMEOUT = 1.0
"""Kernel entry/attr timeout of draft nodes: they change, but only through this mount."""


class DraftNode(LocalNode):
    """A draft directory, or a file or directory inside one: a view of a ``DraftStore`` node."""

    __slots__ = ("draft_id", "store_id")
    kind = Kind.DRAFT

    def __init__(self, ino: int, parent: int, name: str, draft_id: int, store_id: int) -> None:
        super().__init__(ino, parent, name)
        self.draft_id = draft_id
        self.store_id = store_id


class LocalArtifactNode(ArtifactNode, LocalNode):
    """An artifact made with ``mkdir`` (or holding drafts) that the registry does not have yet."""

    __slots__ = ()


@dataclass(slots=True)
class _DraftFile:
    handle: DraftHandle
    ino: int
    passthrough: bool = False  # answered with a backing id: the kernel reads and writes
    reader: BlobReader | None = None  # for an inherited file, while its bytes are not local
    reader_sha: str | None = None


class DraftsFS(AliasLinks, LocalProjects):
    """Every mutation the mount accepts, and the draft nodes' attributes, reads and writes."""

    def __init__(
        self,
        fs: ArtfsFS,
        store: DraftStore,
        invalidate: Callable[[int, str], None] | None = None,
    ) -> None:
        """``invalidate(parent_ino, name)`` asks the kernel to forget a name; it must not
        block (the FUSE adapter queues it to a thread)."""
        self.fs = fs
        self.store = store
        self.invalidate = invalidate
        self.materializer = Materializer(store, fs.cache)
        # the blob cache when it can take a committed file's bytes (the real one can)
        self.commit_cache = cast(CommitCache, fs.cache) if hasattr(fs.cache, "stage_file") else None
        self._nodes: dict[int, DraftNode] = {}  # store node id -> node
        self._files: dict[int, _DraftFile] = {}  # file handle -> open draft file
        self._local: dict[tuple[str, str], float] = {}  # artifacts made by mkdir: created
        self._local_projects: dict[str, float] = {}  # projects made by mkdir: created
        self._registry_id: str | None = None

    # --- plumbing ------------------------------------------------------------------------
    async def registry_id(self) -> str:
        if self._registry_id is None:
            try:
                self._registry_id = await self.fs._call("registry id", self.fs.client.registry_id)
            except Unavailable:
                recalled = recall_registry_id(self.fs.meta_root, self.fs.options.source)
                if recalled is None:
                    raise
                self._registry_id = recalled
        return self._registry_id

    def _node(self, store_id: int, parent_ino: int, name: str, draft_id: int) -> DraftNode:
        node = self._nodes.get(store_id)
        if node is None:
            node = self.fs.table.new_local(
                lambda ino: DraftNode(ino, parent_ino, name, draft_id, store_id)
            )
            self._nodes[store_id] = node
        else:
            node.parent, node.name = parent_ino, name
        return node

    def _forget_draft(self, artifact: ArtifactNode, draft_id: int, name: str) -> None:
        """The draft is gone (committed or discarded): drop its nodes, name and writers."""
        if self.fs.observer is not None:
            self.fs.observer.forget_draft(draft_id)
        for store_id, node in list(self._nodes.items()):
            if node.draft_id == draft_id:
                del self._nodes[store_id]
                self.fs.table.drop(node)
        child = artifact.children.get(name)
        if isinstance(child, DraftNode) and child.draft_id == draft_id:
            del artifact.children[name]
            artifact._changed()

    def _notify(self, parent: int, name: str) -> None:
        if self.invalidate is not None:
            self.invalidate(parent, name)

    def owns(self, fh: int) -> bool:
        return fh in self._files

    # --- local children of listed directories ------------------------------------------------
    async def sync_local(self, node: ListedDir) -> None:
        """Add what this mount has and the registry does not list: drafts, local artifacts
        and projects."""
        if isinstance(node, RootNode):
            await self._sync_local_projects(node)
        elif isinstance(node, ArtifactNode):
            await self._sync_drafts(node)
            await self._publish_stale_links(node)
        elif isinstance(node, ProjectNode):
            await self._sync_local_artifacts(node)

    async def _sync_drafts(self, artifact: ArtifactNode) -> None:
        self.store.refresh()  # drafts made by `artfs draft` in another process
        registry = await self.registry_id()
        drafts = self.store.drafts(registry, artifact.project, artifact.artifact)
        changed = False
        live = {d.id for d in drafts}
        for name, child in list(artifact.children.items()):
            if isinstance(child, DraftNode) and child.draft_id not in live:
                del artifact.children[name]
                changed = True
        for draft in drafts:
            if draft.key.name not in artifact.children:
                root = self._node(draft.root, artifact.ino, draft.key.name, draft.id)
                artifact.children[draft.key.name] = root
                changed = True
        if changed:
            artifact._changed()

    async def _sync_local_artifacts(self, project: ProjectNode) -> None:
        registry = await self.registry_id()
        names = {a: t for (p, a), t in self._local.items() if p == project.project}
        for draft in self.store.drafts(registry, project.project):
            names.setdefault(draft.key.artifact, draft.created)
        changed = False
        for name, created in names.items():
            if name not in project.children:
                self._add_local_artifact(project, name, created, registry)
                changed = True
        if changed:
            project._changed()

    def _add_local_artifact(
        self, project: ProjectNode, name: str, created: float, registry: str
    ) -> LocalArtifactNode:
        kind = self.store.artifact_type(registry, project.project, name) or "dataset"
        info = ArtifactInfo(project.project, name, kind, "", created)
        node = self.fs.table.new_local(lambda ino: LocalArtifactNode(ino, project.ino, info))
        node.listed_at = self.fs._clock()
        project.children[name] = node
        return node

    def local_artifact_info(self, node: ArtifactNode) -> ArtifactInfo | None:
        """What a local artifact lists (no versions, no aliases); None if it is not local."""
        if not isinstance(node, LocalArtifactNode):
            return None
        key = (node.project, node.artifact)
        if key not in self._local and not self.store.drafts(None, *key):
            return None
        return ArtifactInfo(node.project, node.artifact, node.artifact_type, "", node.mtime)

    # --- attributes, lookups, listings of draft nodes ----------------------------------------------
    def attr(self, node: DraftNode) -> Attr:
        try:
            st = self.store.stat(node.store_id)
            mode, nlink, size, mtime_ns = st.mode, st.nlink, st.size, st.mtime_ns
        except NotFound:
            # unlinked while open: fstat still answers, from the open handle
            for f in self._files.values():
                if f.handle.node_id == node.store_id:
                    gone = f.handle.node
                    mode, nlink, size = stat.S_IFREG | gone.mode, 0, gone.size
                    mtime_ns = gone.mtime_ns
                    break
            else:
                raise
        o = self.fs.options
        return Attr(
            ino=node.ino,
            mode=mode,
            nlink=nlink,
            size=size,
            mtime_ns=mtime_ns,
            uid=o.uid,
            gid=o.gid,
            entry_timeout=DRAFT_TIMEOUT,
            attr_timeout=DRAFT_TIMEOUT,
        )

    def lookup(self, parent: DraftNode, name: str) -> Attr:
        if name == ".":
            return self.attr(parent)
        if name == "..":
            return self.fs.attr(self.fs.table.get(parent.parent))
        store_id = self.store.lookup(parent.store_id, name)
        if store_id is None:
            return Attr.negative(DRAFT_TIMEOUT)
        return self.attr(self._node(store_id, parent.ino, name, parent.draft_id))

    def entries(self, node: DraftNode) -> tuple[tuple[str, Node], ...]:
        return tuple(
            (name, self._node(sid, node.ino, name, node.draft_id))
            for name, sid in self.store.listdir(node.store_id)
        )

    # --- files -------------------------------------------------------------------------------
    def _opened(self, ino: int, handle: DraftHandle) -> Opened:
        """Answer an open: in passthrough when the file's bytes are local (drafts are local
        files already: the kernel then writes them at local-disk speed), else through us."""
        fh = self.fs._fh()
        f = self._files[fh] = _DraftFile(handle, ino)
        modes = self.fs.io_modes
        if modes is None:
            return Opened(fh, keep_cache=False)
        fd = handle.local_fd()
        if fd is not None and modes.may_passthrough(ino):
            try:
                backing_id = modes.open_passthrough(ino, lambda: fd)
            except OSError as e:
                if modes.in_passthrough(ino):
                    del self._files[fh]
                    handle.release()
                    raise Unavailable(f"{handle.node.name}: the kernel refused it: {e}") from None
                log.info("passthrough refused for %s (%s)", handle.node.name, e)
            else:
                handle.hand_to_kernel()
                f.passthrough = True
                return Opened(fh, keep_cache=False, backing_id=backing_id)
        elif modes.in_passthrough(ino):  # cannot happen: passthrough needs local bytes, kept
            del self._files[fh]
            handle.release()
            raise Unavailable(f"{handle.node.name} is open in passthrough elsewhere")
        modes.open_cached(ino)
        return Opened(fh, keep_cache=False)

    def open(self, node: DraftNode, flags: int) -> Opened:
        return self._opened(node.ino, self.store.open(node.store_id, flags))

    def create(self, parent: Node, name: str, mode: int, flags: int) -> tuple[Opened, Attr]:
        if not isinstance(parent, DraftNode):
            raise NotPermitted(f"create {name}: files go inside a draft (mkdir p/a/DRAFT first)")
        handle, st = self.store.create(parent.store_id, name, stat.S_IMODE(mode), flags)
        node = self._node(st.id, parent.ino, name, parent.draft_id)
        return self._opened(node.ino, handle), self.attr(node)

    def _file(self, fh: int) -> _DraftFile:
        try:
            return self._files[fh]
        except KeyError:
            raise InvalidInput(f"unknown file handle {fh}") from None

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        f = self._file(fh)
        blob = f.handle.blob  # turns None once any handle made the file local
        if blob is None:
            if f.reader is not None:
                await self._close_reader(f)
            return f.handle.pread(offset, size)
        length = min(size, blob.size - offset)
        if length <= 0:
            return b""
        timeout = self.fs.options.read_timeout
        with trio.move_on_after(timeout):
            if f.reader is None or f.reader_sha != blob.sha256:
                await self._close_reader(f)
                f.reader = await self.fs.cache.open(blob.sha256, blob.size)
                f.reader_sha = blob.sha256
            return await f.reader.read(offset, length)
        raise Unavailable(f"reading {f.handle.node.name} took over {timeout:g} s")

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        f = self._file(fh)
        if self.store.needs_data(f.handle.node_id) is not None:
            await self.materializer.ensure_local(f.handle.node_id)
        return f.handle.pwrite(offset, data)

    def flush(self, fh: int) -> None:
        self._file(fh).handle.flush()

    def fsync(self, fh: int, datasync: bool) -> None:
        self._file(fh).handle.fsync(datasync)

    async def release(self, fh: int) -> None:
        f = self._files.pop(fh, None)
        if f is None:
            return
        f.handle.release()
        if self.fs.io_modes is not None:
            self.fs.io_modes.release(f.ino, f.passthrough)
        await self._close_reader(f)

    @staticmethod
    async def _close_reader(f: _DraftFile) -> None:
        reader, f.reader, f.reader_sha = f.reader, None, None
        if reader is not None:
            with trio.CancelScope(shield=True):
                await reader.aclose()

    async def setattr(
        self,
        node: DraftNode,
        *,
        mode: int | None,
        size: int | None,
        mtime_ns: int | None,
    ) -> Attr:
        if size is not None and size != 0 and self.store.needs_data(node.store_id) is not None:
            await self.materializer.ensure_local(node.store_id)
        self.store.setattr(node.store_id, mode=mode, size=size, mtime_ns=mtime_ns)
        return self.attr(node)

    # --- creating ------------------------------------------------------------------------------
    async def mkdir(self, parent: Node, name: str, mode: int) -> Attr:
        if isinstance(parent, DraftNode):
            st = self.store.mkdir(parent.store_id, name, stat.S_IMODE(mode))
            return self.attr(self._node(st.id, parent.ino, name, parent.draft_id))
        if isinstance(parent, RootNode):
            return await self._mkdir_project(parent, name)
        if isinstance(parent, ProjectNode):
            return await self._mkdir_artifact(parent, name)
        if isinstance(parent, ArtifactNode):
            return await self._mkdir_draft(parent, name, mode)
        raise NotPermitted(f"mkdir {name}: not possible here")

    async def _existing(self, parent: ListedDir, name: str) -> None:
        if name in await self.fs._children(parent):
            raise AlreadyExists(f"{name} already exists")

    async def _mkdir_artifact(self, project: ProjectNode, name: str) -> Attr:
        await self._existing(project, name)
        artifact_name(name)
        self._local[(project.project, name)] = time.time()
        node = self._add_local_artifact(
            project, name, self._local[(project.project, name)], await self.registry_id()
        )
        project._changed()
        return self.fs.attr(node)

    async def _mkdir_draft(self, artifact: ArtifactNode, name: str, mode: int) -> Attr:
        await self._existing(artifact, name)
        alias_name(name)
        key = DraftKey(await self.registry_id(), artifact.project, artifact.artifact, name)
        draft = self.store.create_draft(key, mode=stat.S_IMODE(mode) or 0o755)
        root = self._node(draft.root, artifact.ino, name, draft.id)
        artifact.children[name] = root
        artifact._changed()
        return self.attr(root)

    async def _relist(self, parent: ListedDir, name: str) -> Node:
        """Re-read a listing this mount just changed at the registry; the child ``name``."""
        parent.listed_at = None
        children = await self.fs._children(parent)
        child = children.get(name)
        if child is None:
            raise Unavailable(f"{name} was made but the registry does not list it yet")
        return child

    def mknod(self, parent: Node, name: str, mode: int) -> Attr:
        if not isinstance(parent, DraftNode):
            raise NotPermitted(f"mknod {name}: files go inside a draft")
        st = self.store.mknod(parent.store_id, name, mode)
        return self.attr(self._node(st.id, parent.ino, name, parent.draft_id))

    def link(self, new_parent: Node, name: str) -> Attr:
        raise self.store.refuse_special(f"hard link {name}")

    # --- symlinks: alias links in an artifact directory, plain links inside a draft ----------
    async def symlink(self, parent: Node, name: str, target: str) -> Attr:
        if isinstance(parent, DraftNode):
            st = self.store.symlink(parent.store_id, name, target)
            return self.attr(self._node(st.id, parent.ino, name, parent.draft_id))
        return await self.symlink_alias(parent, name, target)

    def readlink(self, node: DraftNode) -> str:
        return self.store.readlink(node.store_id)

    # --- removing and renaming ---------------------------------------------------------------------
    async def unlink(self, parent: Node, name: str) -> None:
        if isinstance(parent, DraftNode):
            self.store.unlink(parent.store_id, name)
            return
        if isinstance(parent, ArtifactNode):
            child = (await self.fs._children(parent)).get(name)
            if child is None:
                raise NotFound(f"{name}: no such alias")
            if isinstance(child, AliasNode):
                await self._unlink_alias(parent, child)
                return
            if isinstance(child, DraftNode | VersionNode):
                raise IsADirectory(f"{name} is a directory")
        self.fs._refuse(self.fs._target(parent.ino, name), f"unlink {name}")

    async def rmdir(self, parent: Node, name: str) -> None:
        if isinstance(parent, DraftNode):
            self.store.rmdir(parent.store_id, name)
            return
        if isinstance(parent, ArtifactNode):
            child = (await self.fs._children(parent)).get(name)
            if isinstance(child, DraftNode):
                self.store.discard_draft(child.draft_id)
                self._forget_draft(parent, child.draft_id, name)
                return
            if child is None:
                raise NotFound(f"{name}: no such draft")
        if isinstance(parent, ProjectNode):
            child = (await self.fs._children(parent)).get(name)
            if isinstance(child, LocalArtifactNode):
                await self._rmdir_local_artifact(parent, child)
                return
            if isinstance(child, ArtifactNode) and not child.children:
                raise NotPermitted(
                    f"rmdir {name}: {parent.project}/{name} exists at the registry (with no "
                    "versions); it is not deleted from a mount"
                )
        if isinstance(parent, RootNode):
            child = (await self.fs._children(parent)).get(name)
            if isinstance(child, ProjectNode):
                await self._rmdir_project(parent, child)
                return
        self.fs._refuse(self.fs._target(parent.ino, name), f"rmdir {name}")

    async def _rmdir_local_artifact(self, project: ProjectNode, node: LocalArtifactNode) -> None:
        """An artifact made by mkdir and never committed: it was only ever in this mount."""
        key = (project.project, node.artifact)
        if self.store.drafts(await self.registry_id(), *key):
            raise NotEmpty(f"{node.artifact}: it holds drafts (rmdir them first)")
        self._local.pop(key, None)
        del project.children[node.artifact]
        self.fs.table.drop(node)
        project._changed()

    async def rename(
        self, old_parent: Node, old: str, new_parent: Node, new: str, flags: int
    ) -> None:
        if isinstance(old_parent, DraftNode) and isinstance(new_parent, DraftNode):
            self.store.rename(old_parent.store_id, old, new_parent.store_id, new, flags)
            for where, name in ((new_parent, new), (old_parent, old)):
                sid = self.store.lookup(where.store_id, name)
                if sid is not None and sid in self._nodes:
                    self._node(sid, where.ino, name, where.draft_id)
            return
        if (
            isinstance(old_parent, ArtifactNode)
            and old_parent is new_parent
            and not isinstance(old_parent.children.get(old), DraftNode)
        ):
            await self._rename_alias(old_parent, old, new, flags)
            return
        for parent, name in ((old_parent, old), (new_parent, new)):
            if not isinstance(parent, DraftNode):
                target = self.fs._target(parent.ino, name)
                if not isinstance(target, DraftNode):
                    self.fs._refuse(target, f"rename {old}")
        raise NotPermitted(f"rename {old}: drafts cannot be renamed or moved out of")

    # --- extended attributes: commit and type ------------------------------------------------------
    async def setxattr(self, node: Node, name: str, value: bytes) -> bool:
        """Handle ``user.artfs.commit``/``user.artfs.type``; False if not ours to handle."""
        if name == TYPE_XATTR and isinstance(node, DraftNode | ArtifactNode):
            await self._set_type(node, value)
            return True
        if name == COMMIT_XATTR and isinstance(node, DraftNode):
            draft = self.store.get_draft(node.draft_id)
            if draft.root != node.store_id:
                raise NotPermitted(f"{name}: set it on the draft directory itself")
            await self._commit(node, value)
            return True
        return False

    async def _set_type(self, node: DraftNode | ArtifactNode, value: bytes) -> None:
        try:
            kind = check_artifact_type(value.decode("utf-8").strip())
        except UnicodeDecodeError:
            raise InvalidInput("the artifact type must be UTF-8 text") from None
        if isinstance(node, DraftNode):
            self.store.set_draft_type(node.draft_id, kind)
            return
        if not isinstance(node, LocalArtifactNode) and node.artifact_type != kind:
            raise InvalidInput(
                f"{node.project}/{node.artifact} exists with type {node.artifact_type!r}; "
                "a type is fixed when the artifact is created"
            )
        self.store.set_artifact_type(await self.registry_id(), node.project, node.artifact, kind)
        node.artifact_type = kind

    async def _commit(self, root: DraftNode, value: bytes) -> None:
        draft = self.store.get_draft(root.draft_id)
        artifact = self.fs.table.get(root.parent)
        outcome = await handle_commit_request(
            value,
            client=self.fs.client,
            cache=self.commit_cache,
            store=self.store,
            draft_id=draft.id,
            creator=config.creator(),
            observed=self.fs.observed_inputs(draft),
        )
        key = draft.key
        log.info("committed %s as %s", key, outcome.ref)
        # The registry answered (the commit talks to it directly): a mount that had it down
        # reads the new version now, not after its next probe
        self.fs.listings.health.answered()
        self._local.pop((key.project, key.artifact), None)
        self._committed_to(key.project)
        if not isinstance(artifact, ArtifactNode):
            return
        self._forget_draft(artifact, draft.id, key.name)
        names = {key.name, version_label(outcome.result.version.number), LATEST}
        names.update(outcome.result.version.aliases)
        artifact.listed_at = None
        try:
            await self.fs._children(artifact)
        except ArtfsError as e:  # committed all the same; the listing catches up later
            log.warning("after committing %s: %s", outcome.ref, e)
        for name in sorted(names):
            self._notify(artifact.ino, name)

    # --- lifetime ------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close every open draft file (the kernel sends no RELEASE after unmount)."""
        for fh in list(self._files):
            try:
                await self.release(fh)
            except ArtfsError as e:
                log.warning("closing a draft file at unmount: %s", e)
