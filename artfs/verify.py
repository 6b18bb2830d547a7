"""Comparing a local directory with a version (``artfs verify DIR REF``, ``Version.verify``).

Synchronous; reads the local tree and hashes every file whose size matches. The report
lists what the version has that the directory lacks (missing), what the directory has
that the version does not (extra) and what differs (changed: bytes, size, executable
bit, a symlink's target, a file where the version has a link or directory). The
executable bit compared is the owner's: what ``put`` records and ``get`` recreates.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .download import Selection
from .errors import NotFound
from .hashing import hash_file
from .names import manifest_path


@dataclass(slots=True)
class VerifyReport:
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # "path: what differs"
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    def problems(self) -> list[str]:
        return (
            [f"missing {p}" for p in self.missing]
            + [f"extra {p}" for p in self.extra]
            + [f"changed {c}" for c in self.changed]
        )


def _local(root: Path) -> tuple[dict[str, os.stat_result], set[str]]:
    """Every non-directory under ``root`` (lstat), and every directory, by relative path."""
    found: dict[str, os.stat_result] = {}
    dirs: set[str] = set()
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as it:
            for entry in it:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    dirs.add(rel)
                    stack.append((Path(entry.path), rel + "/"))
                else:
                    found[rel] = entry.stat(follow_symlinks=False)
    return found, dirs


def compare(root: Path, chosen: Selection) -> VerifyReport:
    """How ``root`` differs from ``chosen`` (a version, or the part of it a path names)."""
    if not root.is_dir():
        raise NotFound(f"{root}: not a directory")
    local, local_dirs = _local(root)
    occupied: set[str] = set()  # local directories with something in them
    for path in [*local, *local_dirs]:
        parent = path.rpartition("/")[0]
        while parent and parent not in occupied:
            occupied.add(parent)
            parent = parent.rpartition("/")[0]
    report = VerifyReport()
    wanted_dirs: set[str] = set(chosen.dirs)
    for path, entry in chosen.files:
        report.checked += 1
        st = local.pop(path, None)
        if st is None:
            (report.changed if path in local_dirs else report.missing).append(
                f"{path}: a directory, expected a file" if path in local_dirs else path
            )
            continue
        if not stat.S_ISREG(st.st_mode):
            report.changed.append(f"{path}: not a regular file")
        elif st.st_size != entry.size:
            report.changed.append(f"{path}: {st.st_size} bytes, expected {entry.size}")
        elif hash_file(root.joinpath(*manifest_path(path, limits=False))).hexdigest() != (
            entry.sha256
        ):
            report.changed.append(f"{path}: contents differ")
        elif bool(st.st_mode & stat.S_IXUSR) != (path in chosen.executable):
            expected = "executable" if path in chosen.executable else "not executable"
            report.changed.append(f"{path}: expected {expected}")
    for path, target in chosen.symlinks:
        report.checked += 1
        st = local.pop(path, None)
        if st is None:
            report.missing.append(path)
        elif (
            not stat.S_ISLNK(st.st_mode)
            or os.readlink(root.joinpath(*manifest_path(path, limits=False))) != target
        ):
            report.changed.append(f"{path}: expected a symlink to {target}")
    for path in chosen.dirs:
        report.checked += 1
        if path not in local_dirs:
            report.missing.append(path + "/")
    # a local directory is extra only if empty and not wanted: a non-empty one shows its
    # contents as extra, and the parents of wanted entries are implied
    parents: set[str] = set()
    for path in [*(p for p, _ in chosen.files), *(p for p, _ in chosen.symlinks), *wanted_dirs]:
        parent = path.rpartition("/")[0]
        while parent and parent not in parents:
            parents.add(parent)
            parent = parent.rpartition("/")[0]
    files = {p for p, _ in chosen.files}
    report.extra = sorted(local)
    report.extra += sorted(d + "/" for d in local_dirs - wanted_dirs - parents - occupied - files)
    report.missing.sort()
    report.changed.sort()
    return report
