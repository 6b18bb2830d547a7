"""The filesystem as a service that knows nothing of FUSE (cf. mountpoint-s3's fs.rs).

``ArtfsFS`` answers lookup/getattr/readdir/read/... in terms of inode numbers
and plain values (``attrs.Attr``), raising only ``artfs.errors`` exceptions;
``fuse_ops.py`` is a thin translation onto pyfuse3. Tests drive this class
directly, with no kernel involved.

Consistency rules (SPEC §2, notes/fuse-performance.md):

* Everything inside a version is immutable: stable inodes, day-long kernel
  timeouts, ``keep_cache`` on open, and manifests/version records kept on disk
  for good (``metastore.py``). A version's tree is built from its manifest on the
  first lookup or listing *inside* it, once; one manifest request serves a whole
  ``ls -lR``.
* Root, project and artifact listings and alias links are refreshed from the
  registry when older than ``listing_ttl`` (also their kernel timeouts), waiting
  ``stale_after`` (1 s) at most for the answer. A registry that does not answer
  is backed off (``health.py``): the last known listing (in memory, else on disk)
  is served at once, refreshes and probes run in the background (``listings.py``),
  and metadata never fetched fails at once with ``Unavailable`` (EIO).
* Every registry call has a deadline (``meta_timeout``), every read one
  (``read_timeout``); passing it raises ``Unavailable`` (EIO) and the mount stays up.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import NoReturn, TypeVar

import trio

from ..cache.protocol import BlobCacheAPI, FileSlice
from ..client.base import RegistryClient
from ..drafts.model import Draft
from ..drafts.requests import RequestFiles
from ..drafts.store import DraftStore
from ..errors import (
    IntegrityError,
    InvalidInput,
    NotFound,
    NotKept,
    NotPermitted,
    ReadOnly,
    Unavailable,
)
from ..models import VersionInfo
from ..mountinfo import write_refusal
from ..names import LATEST
from ..observed import OBSERVED_XATTR
from ..refs.client import add_refs
from . import xattrs
from .attrs import BLKSIZE, DIR_MODE, EXEC_MODE, FILE_MODE, LINK_MODE, Attr, FsStats, Opened
from .drafts_fs import DraftNode, DraftsFS
from .inodes import (
    AliasNode,
    DirNode,
    FileNode,
    InodeTable,
    ListedDir,
    Node,
    TreeDirNode,
    TreeLinkNode,
    VersionNode,
)
from .listings import Listings
from .metastore import MetaStore, recall_registry_id, registry_dir_name, remember_registry_id
from .observe import Observer
from .openfiles import VersionFiles
from .options import MountOptions
from .packed import ROOT, PackedTree
from .passthrough import Backing, IoModes, PassthroughState
from .procs import ProcTable
from .splicing import ReplyState
from .xattr_answers import XattrAnswers

log = logging.getLogger(__name__)
T = TypeVar("T")

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
_HINT_FILES = 10_000  # files of one directory hinted to the client (see _hint_files)
_HINT_EVERY = 60.0  # seconds before a directory is hinted again (locations expire)
_HINTED_DIRS_KEPT = 10_000
# A directory of at most this many blobs, some not cached, has them located when it is first
# looked into: one request, made while the lookup is answered and the file opened.
_LOCATE_AHEAD = 16


def _version_of(node: Node) -> VersionNode | None:
    if isinstance(node, VersionNode):
        return node
    if isinstance(node, TreeDirNode | FileNode):
        return node.version
    return None


def _in_version(node: Node) -> bool:
    return isinstance(node, VersionNode | TreeDirNode | FileNode)


class ArtfsFS:
    """The mount's read side over a registry client and the blob cache."""

    def __init__(
        self,
        client: RegistryClient,
        cache: BlobCacheAPI,
        options: MountOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        drafts: DraftStore | None = None,
        invalidate: Callable[[int, str], None] | None = None,
    ) -> None:
        """``drafts`` enables the write side (``drafts_fs.py``): without it every mutation
        outside a version is refused with EPERM. ``invalidate(parent_ino, name)`` tells the
        kernel to forget a name the mount changed (it must not block)."""
        self.client = client
        self.cache = cache
        self.options = options or MountOptions()
        self.meta_root: Path = self.options.meta_root or cache.root / "v1" / "meta"
        self.table = InodeTable(time.time())
        self._clock = clock
        self.listings = Listings(self)
        self._store: MetaStore | None = None
        self._dirs: dict[int, Sequence[tuple[str, Node]]] = {}
        self._hinted: dict[int, float] = {}  # directory inode -> when its files were hinted
        self.files = VersionFiles(self)
        self.xattrs = XattrAnswers(self)
        self.table.on_unbuild = self.files.drop_walks
        # Set by the mount once the kernel has shown it accepts backing files (passthrough.py).
        self.io_modes: IoModes | None = None
        self.passthrough = PassthroughState(False, "not probed yet")
        self.replies = ReplyState(False, "not probed yet")
        self._dir_versions: dict[int, VersionNode] = {}  # open directory handle -> its version
        self._next_fh = 1
        self.drafts = DraftsFS(self, drafts, invalidate) if drafts is not None else None
        # which versions each process read, who wrote each draft (observe.py)
        self.observer = Observer(ProcTable(clock)) if self.options.observe_inputs else None

    # --- plumbing -------------------------------------------------------------------
    def refused(self, op: str, message: str) -> None:
        """Keep the reason of an EINVAL answer where ``artfs info MOUNT`` finds it (the
        state directory), since the errno cannot carry it."""
        if self.drafts is not None:
            write_refusal(self.drafts.store.state_dir, op, message)

    async def _call(self, what: str, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        """A registry call the user asked for (a mutation of the write side): under the
        metadata deadline, tried even while the registry is backed off (``listings.py``)."""
        return await self.listings.call(what, fn, *args, force=True)

    async def _fresh(self, node: ListedDir) -> None:
        await self.listings.fresh(node)

    def running(self) -> AbstractAsyncContextManager[None]:
        """The service's background work (listing refreshes, registry probes) runs inside
        this block; without it every refresh runs in its caller."""
        return self.listings.running()

    async def meta_store(self) -> MetaStore:
        """The on-disk metadata of this registry; its id is remembered for offline starts."""
        if self._store is not None:
            return self._store
        async with self.listings.locks.hold("registry-id"):
            if self._store is None:
                source = self.options.source
                try:
                    registry_id = await self.listings.call("registry id", self.client.registry_id)
                except Unavailable:
                    recalled = recall_registry_id(self.meta_root, source)
                    if recalled is None:
                        raise
                    registry_id = recalled
                else:
                    try:
                        remember_registry_id(self.meta_root, source, registry_id)
                    except OSError as e:
                        log.warning("could not record the registry id: %s", e)
                self._store = MetaStore(self.meta_root / registry_dir_name(registry_id))
            return self._store

    def _fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    # --- versions (immutable) --------------------------------------------------------------
    async def _built(self, version: VersionNode) -> None:
        if version.built:
            return
        async with self.listings.locks.hold(("build", version.ino)):
            if not version.built:
                tree = await self._packed(version)
                add_refs(self.client, tree.refs)  # its external refs: read from their URLs
                self.table.build_version(version, tree)

    async def _packed(self, version: VersionNode) -> PackedTree:
        """The version's packed tree, from the manifest on disk, else fetched there first
        (streamed in canonical form and digest-checked: ``manifest_stream.py``)."""
        key, digest = version.key, version.summary.digest
        store = await self.meta_store()
        tree = await trio.to_thread.run_sync(store.load_tree, key, digest)
        if tree is not None:
            return tree
        fetch = partial(self.client.fetch_manifest, key.project, key.artifact, key.number)
        writer = store.manifest_writer(key, digest)
        try:
            await self.listings.call(f"manifest of {key.ref}", fetch, writer.write)
            return await trio.to_thread.run_sync(writer.finish)
        finally:
            writer.close()

    async def version_info(self, version: VersionNode) -> VersionInfo:
        """A version's info. Its description, metadata and tags are editable (``artfs edit``,
        ``artfs tag``): trusted for the listing TTL like an alias, then asked again; while
        the registry is unreachable the last one known (memory, else disk) is answered."""
        now = self._clock()
        if version.info is not None and now - version.info_at < self.options.listing_ttl:
            return version.info
        key, digest = version.key, version.summary.digest
        store = await self.meta_store()
        try:
            info = await self.listings.call(
                f"get {key.ref}", self.client.get_version, key.project, key.artifact, version.name
            )
        except Unavailable:
            known = version.info or store.load_version_info(key, digest)
            if known is None:
                raise
            return known
        if info.digest != digest:
            raise IntegrityError(f"{key.ref} changed digest under the mount; remount")
        if info != version.info:
            store.save_version_info(info)
        version.info, version.info_at = info, now
        return info

    # --- attributes ------------------------------------------------------------------------
    def attr(self, node: Node) -> Attr:
        """Attributes and kernel timeouts of a node (no I/O)."""
        if isinstance(node, DraftNode):
            assert self.drafts is not None
            return self.drafts.attr(node)
        o = self.options
        ttl, forever = o.listing_ttl, o.immutable_timeout
        if isinstance(node, TreeLinkNode):
            mtime, size, mode, nlink = node.version.mtime, node.size, LINK_MODE, 1
            entry, attr = forever, forever
        elif isinstance(node, FileNode):
            mode = EXEC_MODE if node.tree.is_exec(node.index) else FILE_MODE
            mtime, size, nlink = node.version.mtime, node.size, 1
            entry, attr = forever, forever
        elif isinstance(node, AliasNode):
            mtime, size, mode, nlink = node.artifact.mtime, len(node.target), LINK_MODE, 1
            entry, attr = ttl, ttl
        elif isinstance(node, DirNode):
            mtime, size, mode, nlink = node.mtime, 0, DIR_MODE, 2
            if isinstance(node, ListedDir):
                entry, attr = ttl, ttl
            elif isinstance(node, VersionNode):
                entry, attr = ttl, forever  # the name lives in a listing; the tree never changes
            else:
                entry, attr = forever, forever
        else:  # pragma: no cover - every node kind is handled above
            raise InvalidInput(f"unknown node {node!r}")
        return Attr(
            ino=node.ino,
            mode=mode,
            nlink=nlink,
            size=size,
            mtime_ns=int(mtime * 1e9),
            uid=o.uid,
            gid=o.gid,
            entry_timeout=entry,
            attr_timeout=attr,
        )

    def _negative_timeout(self, parent: DirNode) -> float:
        if isinstance(parent, ListedDir):
            return self.options.listing_ttl
        return self.options.immutable_timeout

    async def _ready(self, node: DirNode) -> None:
        """Make ``node``'s entries current: a listing refreshed, a version's tree built."""
        if isinstance(node, ListedDir):
            await self._fresh(node)
            if self.drafts is not None:
                await self.drafts.sync_local(node)
        elif isinstance(node, VersionNode):
            await self._built(node)
            self._hint_files(node)
        elif isinstance(node, TreeDirNode):
            self._hint_files(node)

    async def _children(self, node: ListedDir) -> dict[str, Node]:
        """A listed directory's children, refreshed (the write side's view of them)."""
        await self._ready(node)
        return node.children

    def _hint_files(self, node: DirNode) -> None:
        """Tell the client which blobs a directory's files need, once a minute at most.

        Listing or looking up in a directory inside a version usually precedes reading its
        files (``cat dir/*``, a data loader); a client that must locate blobs one request
        at a time (presigned URLs) then locates them in batches. Costs no request here.
        """
        now = self._clock()
        last = self._hinted.get(node.ino)
        if last is not None and now - last < _HINT_EVERY:
            return
        if len(self._hinted) >= _HINTED_DIRS_KEPT:
            self._hinted.clear()
        self._hinted[node.ino] = now
        version = _version_of(node)
        tree = version.tree if version is not None else None
        if tree is None:
            return
        index = node.index if isinstance(node, TreeDirNode) else ROOT
        blobs = tree.file_blobs(index, _HINT_FILES)
        if not blobs:
            return
        self.client.hint_blobs([sha for sha, _ in blobs])
        if len(blobs) <= _LOCATE_AHEAD:  # (a checkpoint's files, a config directory)
            cold = [sha for sha, size in blobs if self.cache.cached_bytes(sha, size) < size]
            if cold:  # the first one's locate request carries the others (hinted above)
                self.listings.spawn(self.client.prepare_read, cold[0])

    # --- the read operations -----------------------------------------------------------------
    async def lookup(self, parent_ino: int, name: str) -> Attr:
        """The entry ``name`` in a directory; a negative entry (``ino == 0``) if absent."""
        parent = self.table.get(parent_ino)
        if isinstance(parent, DraftNode):
            assert self.drafts is not None
            return self.drafts.lookup(parent, name)
        if not isinstance(parent, DirNode):
            raise NotFound(f"not a directory: inode {parent_ino}")
        if name == ".":
            child: Node | None = parent
        elif name == "..":
            child = self.table.get(parent.parent)
        else:
            await self._ready(parent)
            child = self.table.child(parent, name)
        if child is None:
            return Attr.negative(self._negative_timeout(parent))
        self.table.remember(child)  # the kernel holds it until it sends FORGET
        return self.attr(child)

    def entry_sent(self, ino: int) -> None:
        """A readdirplus entry for ``ino`` reached the kernel (it counts as a lookup)."""
        self.table.remember_ino(ino)

    def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        """The kernel dropped references (FUSE FORGET): unused version trees are freed."""
        for ino, nlookup in inode_list:
            self.table.forget(ino, nlookup)

    async def getattr(self, ino: int) -> Attr:
        node = self.table.get(ino)
        if isinstance(node, AliasNode):
            node = await self._current_alias(node)
        return self.attr(node)

    async def _current_alias(self, link: AliasNode) -> AliasNode:
        await self._fresh(link.artifact)
        if link.artifact.children.get(link.name) is not link:
            raise NotFound(f"alias {link.name} was removed")
        return link

    async def readlink(self, ino: int) -> str:
        node = self.table.get(ino)
        if isinstance(node, TreeLinkNode):
            return node.target
        if isinstance(node, DraftNode):
            assert self.drafts is not None
            return self.drafts.readlink(node)
        if not isinstance(node, AliasNode):
            raise InvalidInput(f"inode {ino} is not a symbolic link")
        return (await self._current_alias(node)).target

    async def opendir(self, ino: int) -> int:
        """Snapshot a directory's entries for one readdir cycle (stable offsets)."""
        node = self.table.get(ino)
        if isinstance(node, DraftNode):
            assert self.drafts is not None
            fh = self._fh()
            self._dirs[fh] = self.drafts.entries(node)
            return fh
        if not isinstance(node, DirNode):
            raise InvalidInput(f"inode {ino} is not a directory")
        await self._ready(node)
        fh = self._fh()
        self._dirs[fh] = self.table.entries(node)
        version = _version_of(node)
        if version is not None:
            self.table.hold(version)  # its entries must outlive a FORGET of the tree
            self._dir_versions[fh] = version
        return fh

    def readdir(self, fh: int, start: int) -> Iterator[tuple[str, Attr, int]]:
        """Entries from offset ``start``: (name, attributes, offset of the next entry)."""
        try:
            entries = self._dirs[fh]
        except KeyError:
            raise InvalidInput(f"unknown directory handle {fh}") from None
        for index in range(start, len(entries)):
            name, node = entries[index]
            yield name, self.attr(node), index + 1

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)
        version = self._dir_versions.pop(fh, None)
        if version is not None:
            self.table.unhold(version)

    async def open(self, ino: int, flags: int, pid: int = 0) -> Opened:
        """``pid``: the sender's thread id, for observed lineage (0: unknown)."""
        node = self.table.get(ino)
        if isinstance(node, DraftNode):
            assert self.drafts is not None
            if flags & _WRITE_FLAGS:
                self._wrote(node, pid)
            return self.drafts.open(node, flags)
        if flags & _WRITE_FLAGS:
            self._refuse(node, "open for writing")
        if not isinstance(node, FileNode) or isinstance(node, TreeLinkNode):
            raise InvalidInput(f"inode {ino} is not a regular file")
        opened = await self.files.open(node)
        if self.observer is not None:  # at open: passthrough READs never reach us
            key = node.version.key
            self.observer.read(pid, (key.project, key.artifact, key.number))
        return opened

    def _wrote(self, node: Node, pid: int) -> None:
        """A change inside a draft, by thread ``pid``: its process is one of its writers."""
        if self.observer is not None and isinstance(node, DraftNode):
            self.observer.wrote(pid, node.draft_id)

    def observed_inputs(self, draft: Draft) -> tuple[str, ...]:
        """The versions read by processes related to the draft's writers (its base version
        excluded: it is the version's ``parent`` already)."""
        if self.observer is None:
            return ()
        key = draft.key
        base = None if draft.base is None else (key.project, key.artifact, draft.base)
        return tuple(self.observer.inputs_for(draft.id, base))

    def use_passthrough(self, backing: Backing | None, state: PassthroughState) -> None:
        """Answer opens from now on with passthrough where possible (``backing``), or not."""
        self.passthrough = state
        self.io_modes = IoModes(backing) if backing is not None and state.on else None

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        if self.drafts is not None and self.drafts.owns(fh):
            return await self.drafts.read(fh, offset, size)
        data = await self.files.read(fh, offset, size, False)
        assert isinstance(data, bytes)
        return data

    async def read_reply(self, fh: int, offset: int, size: int) -> bytes | FileSlice:
        """``read`` for the kernel: a version file's cached bytes may come as a slice of the
        cache file, which the reply is made from (``use_replies``)."""
        if self.drafts is not None and self.drafts.owns(fh):
            return await self.drafts.read(fh, offset, size)
        return await self.files.read(fh, offset, size, self.replies.spliced)

    def use_replies(self, state: ReplyState) -> None:
        """Whether READ replies may come from the cache file (decided after INIT)."""
        self.replies = state

    async def flush(self, fh: int) -> None:
        """Nothing to write back from a read-only file; a draft file records its mtime."""
        if self.drafts is not None and self.drafts.owns(fh):
            self.drafts.flush(fh)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        if self.drafts is None or not self.drafts.owns(fh):
            raise ReadOnly("not open for writing")
        return await self.drafts.write(fh, offset, data)

    async def fsync(self, fh: int, datasync: bool) -> None:
        if self.drafts is not None and self.drafts.owns(fh):
            self.drafts.fsync(fh, datasync)

    async def release(self, fh: int) -> None:
        if self.drafts is not None and self.drafts.owns(fh):
            await self.drafts.release(fh)
            return
        await self.files.release(fh)

    async def statfs(self) -> FsStats:
        stats = self.cache.stats()
        used = stats.complete_bytes + stats.partial_bytes
        total = max(stats.limit_bytes or used, used)
        return FsStats(
            block_size=BLKSIZE,
            blocks=-(-total // BLKSIZE),
            blocks_free=(total - used) // BLKSIZE,
            files=len(self.table),
        )

    # --- extended attributes -------------------------------------------------------------------
    async def listxattr(self, ino: int) -> list[str]:
        return list(self.xattrs.names(self.table.get(ino)))

    async def getxattr(self, ino: int, name: str) -> bytes:
        return await self.xattrs.get(self.table.get(ino), name)

    # --- mutations: refused here (drafts, alias links and commits come with the write side) ---
    def _refuse(self, node: Node, what: str) -> NoReturn:
        if _in_version(node):
            raise ReadOnly(f"{what}: versions are read-only")
        if isinstance(node, AliasNode) and node.name == LATEST:
            raise NotPermitted(f"{what}: 'latest' is maintained by the registry")
        raise NotPermitted(f"{what}: not supported here")

    def _target(self, parent_ino: int, name: str) -> Node:
        """What a mutation touches: the named child when it exists, else its directory."""
        parent = self.table.get(parent_ino)
        if isinstance(parent, DirNode) and not _in_version(parent):
            return parent.children.get(name, parent)
        return parent

    def _writable(self, node: Node) -> DraftsFS | None:
        """The write side, if it handles a mutation of ``node`` (never inside a version)."""
        return None if _in_version(node) else self.drafts

    async def mkdir(self, parent_ino: int, name: str, mode: int, pid: int = 0) -> Attr:
        parent = self.table.get(parent_ino)
        self._wrote(parent, pid)  # (not the draft's own mkdir: that writes nothing yet)
        if drafts := self._writable(parent):
            return await drafts.mkdir(parent, name, mode)
        self._refuse(parent, f"mkdir {name}")

    async def create(
        self, parent_ino: int, name: str, mode: int, flags: int, pid: int = 0
    ) -> tuple[Opened, Attr]:
        parent = self.table.get(parent_ino)
        self._wrote(parent, pid)
        if drafts := self._writable(parent):
            return drafts.create(parent, name, mode, flags)
        self._refuse(parent, f"create {name}")

    async def mknod(self, parent_ino: int, name: str, mode: int, pid: int = 0) -> Attr:
        parent = self.table.get(parent_ino)
        self._wrote(parent, pid)
        if drafts := self._writable(parent):
            return drafts.mknod(parent, name, mode)
        self._refuse(parent, f"mknod {name}")

    async def symlink(self, parent_ino: int, name: str, target: str) -> Attr:
        parent = self.table.get(parent_ino)
        if drafts := self._writable(parent):
            return await drafts.symlink(parent, name, target)
        self._refuse(parent, f"symlink {name}")

    async def link(self, ino: int, new_parent_ino: int, name: str) -> Attr:
        parent = self.table.get(new_parent_ino)
        if isinstance(parent, DraftNode) and (drafts := self._writable(parent)):
            return drafts.link(parent, name)
        self._refuse(parent, f"link {name}")

    async def unlink(self, parent_ino: int, name: str, pid: int = 0) -> None:
        parent = self.table.get(parent_ino)
        self._wrote(parent, pid)
        if drafts := self._writable(parent):
            return await drafts.unlink(parent, name)
        self._refuse(self._target(parent_ino, name), f"unlink {name}")

    async def rmdir(self, parent_ino: int, name: str, pid: int = 0) -> None:
        parent = self.table.get(parent_ino)
        self._wrote(parent, pid)
        if drafts := self._writable(parent):
            return await drafts.rmdir(parent, name)
        self._refuse(self._target(parent_ino, name), f"rmdir {name}")

    async def rename(
        self,
        old_parent_ino: int,
        old_name: str,
        new_parent_ino: int,
        new_name: str,
        flags: int,
        pid: int = 0,
    ) -> None:
        old_parent, new_parent = self.table.get(old_parent_ino), self.table.get(new_parent_ino)
        self._wrote(new_parent, pid)
        drafts = self._writable(old_parent) and self._writable(new_parent)
        if drafts:
            await drafts.rename(old_parent, old_name, new_parent, new_name, flags)
            return
        for node in (
            self._target(old_parent_ino, old_name),
            self._target(new_parent_ino, new_name),
        ):
            if _in_version(node):
                self._refuse(node, f"rename {old_name}")
        self._refuse(self._target(old_parent_ino, old_name), f"rename {old_name}")

    async def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        size: int | None = None,
        mtime_ns: int | None = None,
        owner: tuple[int | None, int | None] = (None, None),
        pid: int = 0,
    ) -> Attr:
        """chmod, truncate, utimens: inside drafts only (chown only to the mount's owner)."""
        node = self.table.get(ino)
        if size is not None:
            self._wrote(node, pid)
        if isinstance(node, DraftNode) and self.drafts is not None:
            uid, gid = owner
            if uid not in (None, self.options.uid) or gid not in (None, self.options.gid):
                raise NotPermitted("chown: files of a draft belong to the mounting user")
            return await self.drafts.setattr(node, mode=mode, size=size, mtime_ns=mtime_ns)
        self._refuse(node, "change attributes")

    async def setxattr(self, ino: int, name: str, value: bytes) -> None:
        node = self.table.get(ino)
        if node is self.table.root and name == OBSERVED_XATTR:
            return self._answer_observed(value)
        if (drafts := self._writable(node)) and await drafts.setxattr(node, name, value):
            return
        if name in xattrs.SETTABLE_NAMES and _in_version(node):
            raise NotPermitted(f"{name} applies to drafts; a version is already committed")
        if isinstance(node, DraftNode):
            # ENOTSUP, not EPERM: what cp -a, tar and rsync take as "this filesystem keeps
            # no ACLs/xattrs" and go on (with EPERM, cp -a exits 1 after copying everything)
            raise NotKept(f"set {name}: a draft keeps no extended attributes or ACLs")
        self._refuse(node, f"set {name}")

    def _answer_observed(self, value: bytes) -> None:
        """A query of ``artfs/observed.py``, answered in the state directory's request files
        (a setxattr, not a getxattr: without ``--xattrs`` the kernel stops sending those)."""
        if self.observer is None:
            raise NotPermitted("observed inputs are off for this mount (--no-observed-inputs)")
        if self.drafts is None:
            raise NotPermitted("this mount has no state directory to answer in")
        request, body = self.observer.answer(value)
        RequestFiles(self.drafts.store.state_dir).write_body(request, body)

    async def removexattr(self, ino: int, name: str) -> None:
        node = self.table.get(ino)
        if isinstance(node, DraftNode):
            raise NotKept(f"remove {name}: a draft keeps no extended attributes or ACLs")
        self._refuse(node, f"remove {name}")

    # --- lifetime ---------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close every open blob reader (the kernel sends no RELEASE after unmount)."""
        self._dirs.clear()
        if self.drafts is not None:
            await self.drafts.aclose()
        await self.files.aclose()
        if self.io_modes is not None:
            self.io_modes.close_all()
