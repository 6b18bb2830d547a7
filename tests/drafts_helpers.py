"""Path-level helpers over ``DraftStore`` for the draft tests (the mount works with node ids)."""

from __future__ import annotations

import os

from artfs.drafts.model import Draft
from artfs.drafts.store import DraftStore
from artfs.errors import NotADirectory


class PathDraft:
    """Drive one draft by paths, like a program would through the mount."""

    def __init__(self, store: DraftStore, draft: Draft) -> None:
        self.store = store
        self.draft = draft

    def node(self, path: str) -> int:
        return self.store.resolve(self.draft.id, path)

    def split(self, path: str) -> tuple[int, str]:
        """Like the kernel's path walk: the parent must resolve to a directory."""
        parent, _, name = path.rpartition("/")
        node = self.node(parent)
        if not self.store.stat(node).is_dir:
            raise NotADirectory(f"{parent} is not a directory")
        return node, name

    def write(self, path: str, data: bytes, offset: int = 0, *, create: bool = True) -> None:
        parent, name = self.split(path)
        existing = self.store.lookup(parent, name)
        if existing is None:
            if not create:
                raise FileNotFoundError(path)
            handle, _ = self.store.create(parent, name, 0o644, os.O_WRONLY)
        else:
            handle = self.store.open(existing, os.O_WRONLY)
        try:
            handle.pwrite(offset, data)
        finally:
            handle.release()

    def read(self, path: str) -> bytes:
        handle = self.store.open(self.node(path), os.O_RDONLY)
        try:
            return handle.pread(0, handle.size + 1)
        finally:
            handle.release()

    def mkdir(self, path: str) -> None:
        parent, name = self.split(path)
        self.store.mkdir(parent, name, 0o755)

    def unlink(self, path: str) -> None:
        parent, name = self.split(path)
        self.store.unlink(parent, name)

    def rmdir(self, path: str) -> None:
        parent, name = self.split(path)
        self.store.rmdir(parent, name)

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        op, on = self.split(old)
        np, nn = self.split(new)
        self.store.rename(op, on, np, nn, flags)

    def truncate(self, path: str, size: int) -> None:
        self.store.setattr(self.node(path), size=size)

    def tree(self) -> dict[str, bytes | None]:
        """path -> bytes for files, None for directories (the root excluded)."""
        out: dict[str, bytes | None] = {}

        def walk(node: int, prefix: str) -> None:
            for name, child in self.store.listdir(node):
                path = prefix + name
                if self.store.stat(child).is_dir:
                    out[path] = None
                    walk(child, path + "/")
                else:
                    out[path] = self.read(path)

        walk(self.draft.root, "")
        return out


def local_tree(root: str) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel + "/"
        for d in dirnames:
            out[prefix + d] = None
        for f in filenames:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out[prefix + f] = fh.read()
    return out
