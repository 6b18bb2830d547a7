"""Open files of versions: their blob readers, their kernel I/O mode, read-ahead across files.

An open of a version file pins its blob (a ``BlobReader``) until RELEASE, so eviction
never pulls a file from under an open handle, whichever mode the handle is in:

* passthrough, when the blob is complete and verified in the cache (and the inode is
  not open in caching mode, ``passthrough.IoModes``): the kernel reads the cache file
  itself, the daemon sees no READ at all. A blob of at most ``small_whole_max`` bytes is
  fetched whole before the open returns, so that a tree of small files read once (image
  shards, token files) is read in passthrough from the first open;
* caching (``keep_cache``), otherwise: every READ the page cache cannot answer comes here
  and is served by the reader (fetched, verified, read-ahead).

Opening files of one directory in name order also prefetches the next ones
(``siblings.py``); the walk state per directory lives here.
"""

from __future__ import annotations

import logging
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ..cache.protocol import BlobReader, FileSlice
from ..errors import InvalidInput, Unavailable
from .attrs import Opened
from .inodes import FileNode, VersionNode
from .packed import PackedTree
from .siblings import SiblingReadAhead

if TYPE_CHECKING:
    from .service import ArtfsFS

log = logging.getLogger(__name__)

_WALKS_KEPT = 1_000  # directories whose walk state is kept (dropped all at once beyond)
# A read of a blob whose fetch just failed as unavailable *after waiting out a deadline* fails
# again at once for this long: after a failed read-ahead the kernel retries the page at once,
# which would wait out a hung registry's deadline a second time (10 s instead of 5 with
# --timeout 5, measured). A failure that came fast (a refused connection) is not held: its
# retry costs nothing, and the next read must see a registry that is back at once.
FAILED_READ_HOLD = 1.0
FAILED_READ_SLOW = 1.0  # seconds a failed read must have taken to be held


@dataclass(frozen=True, slots=True)
class _Walk:
    """A directory's files in name order and the read-ahead state across them.

    ``files`` are entries of ``tree``: in name order, they are also in ascending index
    order (a directory's files are numbered as its sorted paths come), so an open finds
    its place by bisection, with no per-file object or dict."""

    files: array[int]
    state: SiblingReadAhead
    tree: PackedTree
    version: VersionNode


@dataclass(slots=True)
class _OpenFile:
    node: FileNode
    reader: BlobReader | None  # None for empty files: nothing to fetch
    passthrough: bool


class VersionFiles:
    """The open files of version trees, for one ``ArtfsFS``."""

    def __init__(self, fs: ArtfsFS) -> None:
        self.fs = fs
        self._files: dict[int, _OpenFile] = {}
        self._failed: dict[str, tuple[float, Unavailable]] = {}  # sha256 -> (when, error)
        self._walks: dict[int, _Walk] = {}  # directory inode -> its read-ahead across files

    def owns(self, fh: int) -> bool:
        return fh in self._files

    def __len__(self) -> int:
        return len(self._files)

    async def open(self, node: FileNode) -> Opened:
        fs = self.fs
        timeout = fs.options.read_timeout
        reader = None
        backing_id = 0
        if node.size:
            with trio.move_on_after(timeout):
                reader = await fs.cache.open(node.sha256, node.size)
            if reader is None:
                raise Unavailable(f"opening {node.name} took over {timeout:g} s")
            try:
                backing_id = await self._passthrough(node, reader, timeout)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await reader.aclose()
                raise
        fh = fs._fh()
        self._files[fh] = _OpenFile(node, reader, backing_id > 0)
        fs.table.hold(node.version)
        if reader is not None:
            self._walk_on(node)
        return Opened(fh, keep_cache=not backing_id, backing_id=backing_id)

    async def _passthrough(self, node: FileNode, reader: BlobReader, timeout: float) -> int:
        """The backing id to answer this open with, or 0 for caching mode (recorded)."""
        modes = self.fs.io_modes
        if modes is None or not modes.may_passthrough(node.ino):
            if modes is not None:
                modes.open_cached(node.ino)
            return 0
        fetch_max = self.fs.options.small_whole_max
        fd: int | None = None
        with trio.move_on_after(timeout) as scope:
            fd = await reader.complete_fd(fetch_max)
        if scope.cancelled_caught:
            raise Unavailable(f"opening {node.name} took over {timeout:g} s")
        if fd is None or not modes.may_passthrough(node.ino):  # (a caching open meanwhile)
            if modes.in_passthrough(node.ino) and fd is None:
                # Cannot happen while the blob stays pinned and verified; never answer EIO.
                raise Unavailable(f"{node.name}: its cached copy changed while open")
            modes.open_cached(node.ino)
            return 0
        try:
            return modes.open_passthrough(node.ino, lambda: fd)
        except OSError as e:
            if modes.in_passthrough(node.ino):
                raise Unavailable(f"{node.name}: the kernel refused its cache file: {e}") from None
            log.info("passthrough refused for %s (%s); serving it from the daemon", node.name, e)
            modes.open_cached(node.ino)
            return 0

    async def read(self, fh: int, offset: int, size: int, slices: bool) -> bytes | FileSlice:
        """Verified bytes, or with ``slices`` maybe where they lie in the cache (a reply
        made from the file: splicing.py)."""
        try:
            handle = self._files[fh]
        except KeyError:
            raise InvalidInput(f"unknown file handle {fh}") from None
        length = min(size, handle.node.size - offset)
        if length <= 0 or handle.reader is None:
            return b""
        sha, now = handle.node.sha256, trio.current_time()
        if (failed := self._failed.get(sha)) is not None:
            if now - failed[0] < FAILED_READ_HOLD:
                raise failed[1]
            del self._failed[sha]
        timeout = self.fs.options.read_timeout
        started = now
        try:
            with trio.move_on_after(timeout):
                if slices:
                    return await handle.reader.read_reply(offset, length)
                return await handle.reader.read(offset, length)
            raise Unavailable(
                f"reading {handle.node.name} took over {timeout:g} s; is the registry reachable?"
            )
        except Unavailable as e:
            if trio.current_time() - started >= FAILED_READ_SLOW:
                if len(self._failed) >= _WALKS_KEPT:  # (bounded: failures on many blobs)
                    self._failed.clear()
                self._failed[sha] = (trio.current_time(), e)
            raise

    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        if handle is None:
            return
        self._closed(handle)
        if handle.reader is not None:
            with trio.CancelScope(shield=True):
                await handle.reader.aclose()

    def _closed(self, handle: _OpenFile) -> None:
        self.fs.table.unhold(handle.node.version)
        if self.fs.io_modes is not None:
            self.fs.io_modes.release(handle.node.ino, handle.passthrough)

    async def aclose(self) -> None:
        """Close every reader (the kernel sends no RELEASE after unmount)."""
        handles, self._files = list(self._files.values()), {}
        with trio.CancelScope(shield=True):
            for handle in handles:
                if self.fs.io_modes is not None:
                    self.fs.io_modes.release(handle.node.ino, handle.passthrough)
                if handle.reader is not None:
                    await handle.reader.aclose()

    # --- directory read-ahead ---------------------------------------------------------------
    def drop_walks(self, version: VersionNode) -> None:
        """A version's tree was freed: so are the walk states holding its file nodes."""
        for ino in [ino for ino, walk in self._walks.items() if walk.version is version]:
            del self._walks[ino]

    def _walk_on(self, node: FileNode) -> None:
        """Directory read-ahead (``siblings.py``): an open that continues a walk through
        a directory's files in name order prefetches the next files in the background."""
        fs = self.fs
        tree = node.tree
        walk = self._walks.get(node.parent)
        if walk is not None and walk.tree is not tree:
            walk = None  # the version's tree was dropped and rebuilt since
        if walk is None:
            files = tree.files_of(tree.parent(node.index))
            if len(self._walks) >= _WALKS_KEPT:
                self._walks.clear()
            walk = self._walks[node.parent] = _Walk(
                files,
                SiblingReadAhead(array("Q", map(tree.size, files)), fs.options.siblings),
                tree,
                node.version,
            )
        index = bisect_left(walk.files, node.index)
        if index >= len(walk.files) or walk.files[index] != node.index:
            return
        picked = walk.state.on_open(index)
        if picked:
            fs.cache.prefetch_soon(
                [(tree.sha256(walk.files[k]), tree.size(walk.files[k])) for k in picked]
            )
