"""The store's in-memory mirror of one draft entry (``StoreNode``) and an open file (``DraftHandle``).

Split from ``store.py`` (which owns the tree and the drafts) and ``fileio.py`` (which owns
the bytes): both work on these.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput
from ..manifest import FileEntry
from .oserrors import disk_error

if TYPE_CHECKING:
    from .fileio import FileBytes


def data_stamp(st: os.stat_result) -> str:
    """What a data file looked like when its sha256 was recorded."""
    return f"{st.st_size}:{st.st_mtime_ns}"


class StoreNode:
    __slots__ = (
        "attached",
        "children",
        "draft",
        "fd",
        "hashed",
        "hasher",
        "id",
        "is_dir",
        "kernel_writers",
        "local",
        "mode",
        "mtime_dirty",
        "mtime_ns",
        "name",
        "on_disk",
        "opens",
        "parent",
        "sha256",
        "size",
        "subdirs",
        "target",
        "writers",
    )

    def __init__(
        self,
        id: int,
        draft: int,
        parent: int | None,
        name: str,
        is_dir: bool,
        mode: int,
        mtime_ns: int,
    ) -> None:
        self.id = id
        self.draft = draft
        self.parent = parent
        self.name = name
        self.is_dir = is_dir
        self.mode = mode
        self.mtime_ns = mtime_ns
        self.size = 0
        self.sha256: str | None = None  # known content digest (inherited, or hashed)
        self.local = False  # bytes in data/<draft>/<id>; else inherited blob (files only)
        self.children: dict[str, StoreNode] = {}
        self.subdirs = 0
        self.attached = True
        self.fd: int | None = None  # shared by every handle of a local file
        self.opens = 0
        self.writers = 0
        self.hasher: Any = None  # BackgroundSha256 while writes are strictly sequential
        self.hashed = 0
        self.mtime_dirty = False
        self.kernel_writers = 0  # handles whose writes the kernel makes itself (passthrough)
        self.on_disk: tuple[int, int] = (0, 0)  # (size, mtime_ns) of the bytes when last looked
        self.target: str | None = None  # a symlink's target (links.py); None: not a link


class DraftHandle:
    """An open file inside a draft. ``pread``/``pwrite`` are plain os calls on a kept fd."""

    __slots__ = ("_store", "append", "closed", "kernel_io", "node", "writable")

    def __init__(self, store: FileBytes, node: StoreNode, writable: bool, append: bool) -> None:
        self._store = store
        self.node = node
        self.writable = writable
        self.append = append
        self.closed = False
        self.kernel_io = False  # reads and writes go to the local file without us (passthrough)

    @property
    def node_id(self) -> int:
        return self.node.id

    @property
    def blob(self) -> FileEntry | None:
        """The inherited blob to read through the cache, or None when the bytes are local."""
        node = self.node
        if node.local or node.sha256 is None:
            return None
        return FileEntry(node.size, node.sha256)

    @property
    def size(self) -> int:
        return self.node.size

    def pread(self, offset: int, length: int) -> bytes:
        fd = self.node.fd
        if fd is None:
            raise InvalidInput(f"{self.node.name}: inherited file, read it through the cache")
        try:
            return os.pread(fd, length, offset)
        except OSError as e:
            raise disk_error(e, f"reading {self.node.name}") from None

    def pwrite(self, offset: int, data: bytes | memoryview) -> int:
        return self._store._pwrite(self, offset, data)

    def local_fd(self) -> int | None:
        """The fd of the file's local bytes (None while they are an inherited blob's)."""
        node = self.node
        return node.fd if node.local and not self.closed else None

    def hand_to_kernel(self) -> None:
        """From now on the kernel reads and writes the local file itself (FUSE passthrough):
        the store forgets the file's digest now, and learns sizes and mtimes from the file."""
        self._store._hand_to_kernel(self)

    def fsync(self, datasync: bool = False) -> None:
        self._store._fsync(self, datasync)

    def flush(self) -> None:
        """Called on every close(2) of a descriptor: records the mtime."""
        self._store._flush(self)

    def release(self) -> None:
        self._store._release(self)
