"""Walking a local tree for ``artfs put``: its files, executable bits, symlinks, empty dirs.

Pure apart from reading the directory tree. What a version keeps besides bytes is in
``manifest_extras.py``; here is how a local tree maps onto it, by ``--symlinks``:

* ``keep`` (the default): a symlink is recorded as a symlink, with its target as written.
  A link that is absolute or climbs out of the tree is refused when the manifest is built
  (``manifest_extras.check``), naming the link: a version never points outside itself.
* ``follow``: a link is replaced by what it points at (a file's bytes, a directory's tree),
  as ``cp -L`` does; a dangling link or a directory loop is refused.
* ``skip``: links are left out (and counted, so the CLI can say how many).

``None`` refuses every link (what the Python API's ``scan_tree`` callers expect).
The walk keeps its own stack (``os.walk`` recurses per level in Python 3.11) and goes no
deeper than a version may.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import InvalidInput, NotFound
from .manifest import MAX_FILES, check_paths
from .names import MAX_DEPTH, manifest_path

SymlinkPolicy = Literal["keep", "follow", "skip"]
SYMLINK_POLICIES: tuple[SymlinkPolicy, ...] = ("keep", "follow", "skip")


@dataclass(frozen=True, slots=True)
class LocalFile:
    path: str  # relative, '/'-separated
    source: Path
    size: int


@dataclass(slots=True)
class ScannedTree:
    files: list[LocalFile] = field(default_factory=list)
    executable: list[str] = field(default_factory=list)
    symlinks: list[tuple[str, str]] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)  # every directory; build keeps empty ones
    skipped_links: int = 0


def _is_exec(mode: int) -> bool:
    return bool(mode & stat.S_IXUSR)


def scan(root: Path, symlinks: SymlinkPolicy | None = "keep") -> ScannedTree:
    """The tree under ``root`` (or ``root`` itself if it is a file). Anything but regular
    files, directories and (per ``symlinks``) links is refused, and so is a tree no commit
    would accept (names.MAX_PATH_BYTES, MAX_DEPTH, manifest.MAX_FILES): the error comes
    before any byte is hashed or uploaded."""
    if symlinks is not None and symlinks not in SYMLINK_POLICIES:
        raise InvalidInput(f"--symlinks takes keep, follow or skip, not {symlinks!r}")
    try:
        st = root.stat()
    except FileNotFoundError:
        raise NotFound(f"{root}: no such file or directory") from None
    out = ScannedTree()
    if stat.S_ISREG(st.st_mode):
        out.files.append(LocalFile(root.name, root, st.st_size))
        if _is_exec(st.st_mode):
            out.executable.append(root.name)
        check_paths(f.path for f in out.files)
        return out
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInput(f"{root}: not a regular file or directory")
    # directory, its path, its depth, the (dev, ino) of it and its parents (loops, follow)
    stack: list[tuple[Path, str, int, frozenset[tuple[int, int]]]] = [
        (root, "", 0, frozenset({(st.st_dev, st.st_ino)}))
    ]
    while stack:
        directory, prefix, depth, above = stack.pop()
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            full = Path(entry.path)
            rel = prefix + entry.name
            link = entry.is_symlink()
            if link and symlinks != "follow":
                if symlinks is None:
                    raise InvalidInput(
                        f"{full}: is a symbolic link; a version holds only regular files"
                    )
                if symlinks == "skip":
                    out.skipped_links += 1
                else:
                    manifest_path(rel)
                    out.symlinks.append((rel, os.readlink(full)))
                continue
            try:
                lst = entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                raise InvalidInput(
                    f"{full}: a symbolic link to nothing (--symlinks=follow needs a target)"
                ) from None
            if stat.S_ISDIR(lst.st_mode):
                if depth + 1 >= MAX_DEPTH:
                    raise InvalidInput(
                        f"{full}: directories nest deeper than a version's limit of "
                        f"{MAX_DEPTH} levels"
                    )
                ident = (lst.st_dev, lst.st_ino)
                if ident in above:
                    raise InvalidInput(f"{full}: a symbolic link loop (it contains itself)")
                manifest_path(rel)
                out.dirs.append(rel)
                stack.append((full, rel + "/", depth + 1, above | {ident}))
                continue
            if not stat.S_ISREG(lst.st_mode):
                raise InvalidInput(
                    f"{full}: not a regular file; a version holds only regular files"
                )
            manifest_path(rel)
            out.files.append(LocalFile(rel, full, lst.st_size))
            if _is_exec(lst.st_mode):
                out.executable.append(rel)
            if len(out.files) + len(out.symlinks) > MAX_FILES:
                raise InvalidInput(
                    f"{root}: too many files: more than the limit of {MAX_FILES} per version"
                )
    out.files.sort(key=lambda f: f.path)
    return out
