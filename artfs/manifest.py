"""Manifests: the file list of a version (path -> size, sha256).

Pure and synchronous. A ``Manifest`` is only ever built through ``Manifest.build``,
which enforces every SPEC path rule, so holding one means it is valid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import manifest_extras
from .errors import InvalidInput
from .hashing import sha256_hex
from .manifest_extras import EMPTY, Extras
from .names import manifest_path

# Files in one version. 1,000,000-file manifests are measured to commit, list and mount
# (docs/decisions.md); twice that leaves room without letting one request hold the server.
MAX_FILES = 2_000_000


def check_paths(paths: Iterable[str]) -> int:
    """Refuse, before any byte is hashed or uploaded, a file list that no commit would
    accept (a path's rules and limits, the file count); returns the count."""
    count = 0
    for path in paths:
        manifest_path(path)
        count += 1
        if count > MAX_FILES:
            raise InvalidInput(f"too many files: more than the limit of {MAX_FILES} per version")
    return count


@dataclass(frozen=True, slots=True)
class FileEntry:
    size: int
    sha256: str


class Manifest(Mapping[str, FileEntry]):
    """An immutable, validated mapping of relative path -> FileEntry, sorted by path."""

    __slots__ = ("_digest", "_extras", "_files", "within_limits")

    def __init__(
        self,
        files: dict[str, FileEntry],
        digest: str,
        *,
        within_limits: bool = False,
        extras: Extras = EMPTY,
    ) -> None:
        self._files = files
        self._digest = digest
        self._extras = extras  # executable bits, symlinks, empty dirs (manifest_extras.py)
        # True when built with the commit limits checked; a commit re-checks one that isn't
        self.within_limits = within_limits

    @classmethod
    def build(
        cls,
        entries: Iterable[tuple[str, int, str]],
        *,
        limits: bool = True,
        executable: Iterable[str] = (),
        symlinks: Iterable[tuple[str, str]] = (),
        dirs: Iterable[str] = (),
    ) -> Manifest:
        """Validate and sort. ``limits``: also the path length, depth and file count limits
        (every commit); readers of stored versions pass False (``names.manifest_path``).
        ``executable``/``symlinks``/``dirs``: the optional facts of ``manifest_extras``."""
        files: dict[str, FileEntry] = {}
        for item in entries:
            try:
                path, size, sha = item
            except (TypeError, ValueError):
                raise InvalidInput(
                    f"invalid manifest entry {item!r}: expected [path, size, sha256]"
                ) from None
            manifest_path(path, limits=limits)
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidInput(
                    f"invalid size {size!r} for {path!r}: must be a non-negative integer"
                )
            sha256_hex(sha)
            if path in files:
                raise InvalidInput(f"duplicate path {path!r} in manifest")
            files[path] = FileEntry(size, sha)
            if limits and len(files) > MAX_FILES:
                raise InvalidInput(
                    f"too many files: more than the limit of {MAX_FILES} per version"
                )
        ordered = dict(sorted(files.items()))
        _check_file_dir_conflicts(ordered)
        extras = manifest_extras.check(ordered, executable, symlinks, dirs, limits=limits)
        if limits and len(files) + len(extras) > MAX_FILES:
            raise InvalidInput(f"too many files: more than the limit of {MAX_FILES} per version")
        return cls(ordered, _digest(ordered, extras), within_limits=limits, extras=extras)

    @classmethod
    def from_json(cls, data: Any, *, limits: bool = True) -> Manifest:
        """Accept ``{"files": [[path, size, sha], ...]}`` (with the optional keys of
        ``manifest_extras``) or ``{path: {"size", "sha256"}}``.
        ``limits``: as in ``build`` (False for a manifest the registry already stored)."""
        executable: list[str] = []
        symlinks: list[tuple[str, str]] = []
        dirs: list[str] = []
        if isinstance(data, dict) and "files" in data:
            executable, symlinks, dirs = manifest_extras.from_json(data)
            data = data["files"]
        entries: Iterable[Any]
        if isinstance(data, dict):
            try:
                entries = [(p, e["size"], e["sha256"]) for p, e in data.items()]
            except (TypeError, KeyError):
                raise InvalidInput("invalid manifest: entries need 'size' and 'sha256'") from None
        elif isinstance(data, list):
            entries = (tuple(e) if isinstance(e, list) else e for e in data)
        else:
            raise InvalidInput("invalid manifest: expected a list of [path, size, sha256]")
        return cls.build(
            entries, limits=limits, executable=executable, symlinks=symlinks, dirs=dirs
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"files": [[p, e.size, e.sha256] for p, e in self._files.items()]}
        out.update(self._extras.to_json())
        return out

    @property
    def extras(self) -> Extras:
        return self._extras

    @property
    def executable(self) -> frozenset[str]:
        """Files whose executable bit is kept (shown 0555, recreated 0755)."""
        return self._extras.executable

    @property
    def symlinks(self) -> Mapping[str, str]:
        """Symlinks inside the version: path -> relative target (never leaving the version)."""
        return self._extras.symlinks

    @property
    def dirs(self) -> tuple[str, ...]:
        """Empty directories."""
        return self._extras.dirs

    @property
    def digest(self) -> str:
        return self._digest

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self._files.values())

    def blobs(self) -> dict[str, int]:
        """Distinct sha256 -> size."""
        return {e.sha256: e.size for e in self._files.values()}

    def __getitem__(self, path: str) -> FileEntry:
        return self._files[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifest) and other._digest == self._digest

    def __hash__(self) -> int:
        return hash(self._digest)


def _digest(files: dict[str, FileEntry], extras: Extras = EMPTY) -> str:
    """sha256 over the canonical form: ``path NUL size NUL sha256 LF`` per file, sorted by
    path, with the extra records of ``manifest_extras`` merged in (none: the form as it was)."""
    h = hashlib.sha256()
    if not extras:
        for path, e in files.items():
            h.update(f"{path}\x00{e.size}\x00{e.sha256}\n".encode())
        return h.hexdigest()
    rows = ((p, e.size, e.sha256) for p, e in files.items())
    for line in manifest_extras.canonical_lines(rows, extras):
        h.update(line.encode())
    return h.hexdigest()


def _check_file_dir_conflicts(files: dict[str, FileEntry]) -> None:
    """No path may be both a file and a directory. Each path's parents are walked only up
    to the first one already seen, so the cost is the total length of distinct directory
    paths, not depth x length per file."""
    dirs: set[str] = set()
    for path in files:
        parent = path.rpartition("/")[0]
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = parent.rpartition("/")[0]
    clash = dirs & files.keys()
    if clash:
        prefix = min(clash)
        inside = next(p for p in files if p.startswith(prefix + "/"))
        raise InvalidInput(
            f"path conflict: {prefix!r} is a file and also a directory of {inside!r}"
        )
