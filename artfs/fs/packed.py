"""A version's tree packed into a few flat arrays: what the mount keeps per file it shows.

Pure and synchronous. A version is immutable, so its tree is built once (from the
manifest's entries, sorted by path) and never changed. One Python object per file
(the previous design: a node with six slots, a dict entry in the inode table, one in
its parent's children, one for its kernel lookup count) cost ~550 bytes per file and
made a walk of 1,000,000 files take the daemon past 600 MB. Here a file costs its name's
bytes plus 60 (docs/decisions.md, "Packed version trees"):

* ``names`` + ``name_off``: every entry's name (UTF-8), concatenated, and where each starts;
* ``parent``: the index of each entry's directory (0: the version root);
* ``size`` and ``digests``: each entry's size and raw 32-byte sha256 (zeros for directories);
* ``dirs``: the indices of the directories, ascending; per directory (in that order)
  ``first``/``count`` locate its children in ``children``, sorted by name: readdir is a
  slice;
* ``exec``: the indices of the executable files, ascending; ``links``: symlink index ->
  target (a symlink is a non-directory entry whose size is its target's length). Both
  are rare, so a sorted array and a dict cost nothing for versions that have none
  (``manifest_extras.py``);
* ``slots``: an open-addressing hash table of every entry by (parent, name), at most half
  full: lookup is one hash and a probe or two (a binary search over a directory's sorted
  names, in Python, cost 3-4 times as much per lookup; docs/decisions.md).

Entry ``i`` (1-based; 0 is the version root itself) has inode number ``base + i - 1``,
where the inode table reserves ``base`` when the version is first built. Entries are
numbered in the order the sorted manifest first names them (a directory before its first
file), so a rebuild from the same manifest gives every path the same number again.

Nothing here recurses: a path's depth only sizes the builder's stack of open directories.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from ..errors import IntegrityError, InvalidInput
from ..manifest_extras import DIR, EXEC, LINK
from ..manifest_stream import EXTRA, CanonicalParser
from ..names import MAX_COMPONENT_BYTES, manifest_path
from ..refs.model import BlobRef

ROOT = 0  # the index of the version directory itself
_DIGEST = 32


class PackedTree:
    """The immutable tree of one version (see the module docstring for the layout)."""

    __slots__ = (
        "_children",
        "_count",
        "_digests",
        "_dirs",
        "_exec",
        "_first",
        "_links",
        "_name_off",
        "_names",
        "_parent",
        "_size",
        "_slots",
        "refs",
    )

    def __init__(
        self,
        names: bytearray,
        name_off: array[int],
        parent: array[int],
        size: array[int],
        digests: bytearray,
        dirs: array[int],
        first: array[int],
        count: array[int],
        children: array[int],
        slots: array[int],
        exec_: array[int] | None = None,
        links: dict[int, str] | None = None,
    ) -> None:
        self._exec = exec_ if exec_ is not None else array("I")
        self._links = links if links is not None else {}
        self._names = names
        self._name_off = name_off
        # sha256 -> BlobRef: blobs read from their URL (refs/model.py); the mount hands them
        # to its client (refs/client.py) when the tree is built
        self.refs: dict[str, BlobRef] = {}
        self._parent = parent
        self._size = size
        self._digests = digests
        self._dirs = dirs
        self._first = first
        self._count = count
        self._children = children
        self._slots = slots

    def __len__(self) -> int:
        """Entries below the root (files and directories): the inode numbers it needs."""
        return len(self._parent) - 1

    @property
    def files(self) -> int:
        return len(self._parent) - len(self._dirs)

    def nbytes(self) -> int:
        """What the arrays hold, in bytes (for the memory figures)."""
        arrays = (self._name_off, self._parent, self._size, self._dirs, self._first)
        total = sum(a.itemsize * len(a) for a in arrays)
        total += self._count.itemsize * len(self._count)
        total += self._children.itemsize * len(self._children)
        total += self._slots.itemsize * len(self._slots)
        total += self._exec.itemsize * len(self._exec)
        total += sum(len(t) + 100 for t in self._links.values())
        return total + len(self._names) + len(self._digests)

    # --- one entry ---------------------------------------------------------------------
    def _dir_number(self, index: int) -> int:
        """The directory number of entry ``index``, or -1 for a file."""
        dirs = self._dirs
        k = bisect_left(dirs, index)
        return k if k < len(dirs) and dirs[k] == index else -1

    def is_dir(self, index: int) -> bool:
        return self._dir_number(index) >= 0

    def is_link(self, index: int) -> bool:
        return index in self._links

    def link_target(self, index: int) -> str:
        return self._links[index]

    def is_exec(self, index: int) -> bool:
        ex = self._exec
        k = bisect_left(ex, index)
        return k < len(ex) and ex[k] == index

    @property
    def has_links(self) -> bool:
        return bool(self._links)

    def name_bytes(self, index: int) -> bytes:
        off = self._name_off
        return bytes(self._names[off[index] : off[index + 1]])

    def name(self, index: int) -> str:
        off = self._name_off
        return self._names[off[index] : off[index + 1]].decode("utf-8")

    def parent(self, index: int) -> int:
        return self._parent[index]

    def size(self, index: int) -> int:
        return self._size[index]

    def sha256(self, index: int) -> str:
        return self._digests[index * _DIGEST : (index + 1) * _DIGEST].hex()

    def path(self, index: int) -> str:
        """The entry's path relative to the version root (a loop: depth is unbounded)."""
        parts: list[str] = []
        while index != ROOT:
            parts.append(self.name(index))
            index = self._parent[index]
        return "/".join(reversed(parts))

    # --- directories -------------------------------------------------------------------
    def children(self, index: int) -> Sequence[int]:
        """The entries of directory ``index``, sorted by name (empty for a file)."""
        d = self._dir_number(index)
        if d < 0:
            return ()
        start = self._first[d]
        return memoryview(self._children)[start : start + self._count[d]]

    def lookup(self, index: int, name: str) -> int | None:
        """The child of directory ``index`` called ``name`` (None if absent, or if ``index``
        is a file: no entry has a file for its parent)."""
        try:
            key = name.encode("utf-8")
        except UnicodeEncodeError:  # a name the kernel passed that is not UTF-8
            return None
        slots, parent, off, names = self._slots, self._parent, self._name_off, self._names
        mask = len(slots) - 1
        slot = hash((index, key)) & mask
        while child := slots[slot]:
            if parent[child] == index and names[off[child] : off[child + 1]] == key:
                return child
            slot = (slot + 1) & mask
        return None

    def file_digests(self, index: int, limit: int) -> list[str]:
        """The distinct sha256 of directory ``index``'s non-empty files, at most ``limit``."""
        return [sha for sha, _ in self.file_blobs(index, limit)]

    def file_blobs(self, index: int, limit: int) -> list[tuple[str, int]]:
        """(sha256, size) of directory ``index``'s non-empty files, distinct, at most
        ``limit``, in name order."""
        seen: dict[bytes, int] = {}
        digests, size = self._digests, self._size
        links = self._links
        for child in self.children(index):
            if size[child] and self._dir_number(child) < 0 and child not in links:
                seen[bytes(digests[child * _DIGEST : (child + 1) * _DIGEST])] = size[child]
                if len(seen) >= limit:
                    break
        return [(d.hex(), n) for d, n in seen.items()]

    def files_of(self, index: int) -> array[int]:
        """The files (not directories or symlinks) of directory ``index``, in name order."""
        links = self._links
        return array(
            "I", (c for c in self.children(index) if self._dir_number(c) < 0 and c not in links)
        )


def _component(name: str, path: str) -> bytes:
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"invalid path {path!r}: not valid UTF-8") from None
    if len(encoded) > MAX_COMPONENT_BYTES:
        raise InvalidInput(f"invalid path {path[:80]!r}…: a component is over 255 bytes")
    return encoded


class _OpenDir:
    """A directory the builder is still filling: files arrive in name order, sub-directories
    in the order their first paths come (not name order: ``b.txt/`` sorts before ``b/``)."""

    __slots__ = ("files", "index", "name", "number", "subdirs")

    def __init__(self, index: int, number: int, name: str) -> None:
        self.index = index
        self.number = number
        self.name = name
        self.files = array("I")
        self.subdirs = array("I")


class PackedBuilder:
    """Builds a ``PackedTree`` from entries in path order, with no object per file kept.

    Paths sharing a directory prefix are contiguous in sorted order, so only the chain of
    directories above the current path is open; a directory's children are sorted and
    appended to ``children`` when the walk leaves it.
    """

    def __init__(self, *, validate: bool = True) -> None:
        self._validate = validate
        self._names = bytearray()
        self._name_off = array("I", [0, 0])  # the root's name is empty
        self._parent = array("I", [0])
        self._size = array("Q", [0])
        self._digests = bytearray(_DIGEST)
        self._dirs = array("I", [ROOT])
        self._first = array("I", [0])
        self._count = array("I", [0])
        self._children = array("I")
        self._open: list[_OpenDir] = [_OpenDir(ROOT, 0, "")]
        self._last: str | None = None
        self._last_file = -1  # the index of the file just added (what an x record marks)
        self._exec = array("I")
        self._links: dict[int, str] = {}
        self._done = False

    def _entry(self, name: bytes, parent: int, size: int, digest: bytes) -> int:
        index = len(self._parent)
        self._names += name
        self._name_off.append(len(self._names))
        self._parent.append(parent)
        self._size.append(size)
        self._digests += digest
        return index

    def add(self, path: str, size: int, sha256: str) -> None:
        """One file; paths must come strictly increasing (a manifest's order). An extra
        record (``size == EXTRA``, see ``manifest_stream``) adds a symlink or an empty
        directory, or marks the file just added executable."""
        if size == EXTRA:
            self._extra(path, sha256[:1], sha256[1:])
            return
        self._order(path)
        parts = path.split("/")
        if self._validate:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidInput(f"invalid size {size!r} for {path!r}")
            self._check(path, parts)
        try:
            digest = bytes.fromhex(sha256)
        except ValueError:
            digest = b""
        if len(digest) != _DIGEST or sha256 != sha256.lower():
            raise InvalidInput(f"invalid sha256 {sha256!r} for {path!r}")
        top = self._open_parents(path, parts)
        self._last_file = self._entry(_component(parts[-1], path), top.index, size, digest)
        top.files.append(self._last_file)

    def _extra(self, path: str, kind: str, arg: str) -> None:
        if kind == EXEC:
            if path != self._last or self._last_file < 0:
                raise InvalidInput(f"manifest: executable mark for {path!r} is not after its file")
            self._exec.append(self._last_file)
            return
        self._order(path)
        parts = path.split("/")
        if self._validate:
            self._check(path, parts)
        top = self._open_parents(path, parts)
        if kind == LINK:
            name = _component(parts[-1], path)
            index = self._entry(name, top.index, len(arg.encode()), bytes(_DIGEST))
            self._links[index] = arg
            top.files.append(index)
        elif kind == DIR:
            self._open_dir(top, parts[-1], path)
        else:
            raise InvalidInput(f"manifest: unknown extra record {kind!r} for {path!r}")

    def _order(self, path: str) -> None:
        if self._last is not None and path <= self._last:
            raise InvalidInput(f"manifest paths out of order or repeated at {path!r}")
        self._last = path
        self._last_file = -1

    @staticmethod
    def _check(path: str, parts: list[str]) -> None:
        if "\x00" in path or "" in parts or "." in parts or ".." in parts:
            manifest_path(path)  # raises, saying what is wrong

    def _open_parents(self, path: str, parts: list[str]) -> _OpenDir:
        """Close the directories ``path`` is not in, open (make) those it is: its parent."""
        opened = self._open
        depth = 1  # opened[0] is the root; opened[k] is the directory parts[k - 1]
        while depth < len(opened) and depth <= len(parts) - 1:
            if opened[depth].name != parts[depth - 1]:
                break
            depth += 1
        while len(opened) > depth:
            self._close(opened.pop())
        for name in parts[len(opened) - 1 : -1]:
            self._open_dir(opened[-1], name, path)
        return opened[-1]

    def _open_dir(self, top: _OpenDir, name: str, path: str) -> None:
        index = self._entry(_component(name, path), top.index, 0, bytes(_DIGEST))
        number = len(self._dirs)
        self._dirs.append(index)
        self._first.append(0)
        self._count.append(0)
        top.subdirs.append(index)
        self._open.append(_OpenDir(index, number, name))

    def _close(self, node: _OpenDir) -> None:
        """Sort the directory's children by name into ``children`` (a merge: files are
        already sorted; its sub-directories are few and sorted here)."""
        first = len(self._children)
        if not node.subdirs:
            self._children.extend(node.files)
        else:
            name = self._name
            subdirs = sorted(node.subdirs, key=name)
            files = node.files
            i = j = 0
            while i < len(files) and j < len(subdirs):
                a, b = name(files[i]), name(subdirs[j])
                if a == b:
                    raise InvalidInput(
                        f"path conflict: {self._path(node.index, a)!r} is a file and a directory"
                    )
                if a < b:
                    self._children.append(files[i])
                    i += 1
                else:
                    self._children.append(subdirs[j])
                    j += 1
            self._children.extend(files[i:])
            self._children.extend(subdirs[j:])
        self._first[node.number] = first
        self._count[node.number] = len(self._children) - first

    def _name(self, index: int) -> bytes:
        off = self._name_off
        return bytes(self._names[off[index] : off[index + 1]])

    def _path(self, index: int, name: bytes) -> str:
        parts = [name]
        while index != ROOT:
            parts.append(self._name(index))
            index = self._parent[index]
        return b"/".join(reversed(parts)).decode("utf-8", "replace")

    def finish(self) -> PackedTree:
        if self._done:
            raise RuntimeError("PackedBuilder.finish called twice")
        self._done = True
        while self._open:
            self._close(self._open.pop())
        return PackedTree(
            self._names,
            self._name_off,
            self._parent,
            self._size,
            self._digests,
            self._dirs,
            self._first,
            self._count,
            self._children,
            self._hash_index(),
            self._exec,
            self._links,
        )

    def _hash_index(self) -> array[int]:
        """Every entry (never the root: 0 marks a free slot) by hash of (parent, name)."""
        count = len(self._parent)
        slots = array("I", [0]) * (1 << max(3, (2 * count - 1).bit_length()))
        mask = len(slots) - 1
        parent, off, names = self._parent, self._name_off, self._names
        for index in range(1, count):
            slot = hash((parent[index], bytes(names[off[index] : off[index + 1]]))) & mask
            while slots[slot]:
                slot = (slot + 1) & mask
            slots[slot] = index
        return slots


def pack(entries: Iterable[tuple[str, int, str]], *, validate: bool = True) -> PackedTree:
    """The packed tree of ``(path, size, sha256)`` entries in path order."""
    builder = PackedBuilder(validate=validate)
    for path, size, sha in entries:
        builder.add(path, size, sha)
    return builder.finish()


def pack_canonical(chunks: Iterable[bytes], digest: str, what: str) -> PackedTree:
    """The packed tree of a manifest in canonical form (``manifest_stream.py``), read one
    chunk at a time; ``IntegrityError`` unless the bytes hash to ``digest``."""
    parser = CanonicalParser()
    builder = PackedBuilder()
    for chunk in chunks:
        for path, size, sha in parser.feed(chunk):
            builder.add(path, size, sha)
    if parser.finish() != digest:
        raise IntegrityError(f"the manifest of {what} does not match its digest {digest[:12]}…")
    tree = builder.finish()
    tree.refs = parser.refs
    return tree


def walk(tree: PackedTree) -> Iterator[int]:
    """Every entry, directories before their contents (an explicit stack, no recursion)."""
    stack = [ROOT]
    while stack:
        index = stack.pop()
        if index != ROOT:
            yield index
        stack.extend(reversed(tree.children(index)))
