"""Manifests: the file list of a version (path -> size, sha256).

Pure and synchronous. A ``Manifest`` is only ever built through ``Manifest.build``,
which enforces every SPEC path rule, so holding one means it is valid.
"""

from __future__ import annotations

import hashlib
from collections.abc import ItemsView, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import manifest_extras
from .errors import InvalidInput
from .hashing import sha256_hex
from .manifest_extras import EMPTY, Extras
from .names import manifest_path
from .refs.model import BlobRef, blocks_size, check_ref, refs_from_json

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

    __slots__ = ("_digest", "_extras", "_files", "_refs", "within_limits")

    def __init__(
        self,
        files: dict[str, FileEntry],
        digest: str,
        *,
        within_limits: bool = False,
        refs: dict[str, BlobRef] | None = None,
        extras: Extras = EMPTY,
    ) -> None:
        self._files = files
        self._digest = digest
        self._refs = refs or {}  # sha256 -> where its bytes stay (refs/model.py)
        self._extras = extras  # executable bits, symlinks, empty dirs (manifest_extras.py)
        # True when built with the commit limits checked; a commit re-checks one that isn't
        self.within_limits = within_limits

    @classmethod
    def build(
        cls,
        entries: Iterable[tuple[str, int, str]],
        *,
        limits: bool = True,
        refs: Mapping[str, BlobRef] | None = None,
        executable: Iterable[str] = (),
        symlinks: Iterable[tuple[str, str]] = (),
        dirs: Iterable[str] = (),
    ) -> Manifest:
        """Validate and sort. ``limits``: also the path length, depth and file count limits
        (every commit); readers of stored versions pass False (``names.manifest_path``).
        ``refs``: blobs whose bytes stay at a URL (each must be a blob of an entry).
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
        kept = _checked_refs(ordered, refs or {})
        extras = manifest_extras.check(ordered, executable, symlinks, dirs, limits=limits)
        if limits and len(files) + len(extras) > MAX_FILES:
            raise InvalidInput(f"too many files: more than the limit of {MAX_FILES} per version")
        digest = _digest(ordered, extras, kept)
        return cls(ordered, digest, within_limits=limits, refs=kept, extras=extras)

    @classmethod
    def from_json(cls, data: Any, *, limits: bool = True) -> Manifest:
        """Accept ``{"files": [[path, size, sha], ...]}`` (with the optional keys of
        ``manifest_extras``) or ``{path: {"size", "sha256"}}``.
        ``limits``: as in ``build`` (False for a manifest the registry already stored)."""
        refs = None
        executable: list[str] = []
        symlinks: list[tuple[str, str]] = []
        dirs: list[str] = []
        if isinstance(data, dict) and "files" in data:
            refs = refs_from_json(data["refs"]) if "refs" in data else None
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
            entries,
            limits=limits,
            refs=refs,
            executable=executable,
            symlinks=symlinks,
            dirs=dirs,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self._refs:  # no "refs" key at all without refs: older readers see what they saw
            # refs first: the server tells a stored manifest with refs by its first bytes
            # (server/requestio.has_refs), without inflating a million file entries
            out["refs"] = {sha: ref.to_json() for sha, ref in self._refs.items()}
        out["files"] = [[p, e.size, e.sha256] for p, e in self._files.items()]
        out.update(self._extras.to_json())
        return out

    @property
    def refs(self) -> Mapping[str, BlobRef]:
        """sha256 -> ``BlobRef`` of the blobs whose bytes stay at a URL (sorted by sha256)."""
        return self._refs

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
        """Distinct sha256 -> size (of every file, refs included: what a reader reads)."""
        return {e.sha256: e.size for e in self._files.values()}

    def stored_blobs(self) -> dict[str, int]:
        """sha256 -> size of the blobs the registry must hold for this version: every file's
        blob that is not a ref, and each ref's block-digest list (a ref's own bytes stay at
        its URL: the registry never serves them, so committing one proves nothing)."""
        every = self.blobs()
        out = {sha: size for sha, size in every.items() if sha not in self._refs}
        for sha, ref in self._refs.items():
            if ref.blocks is not None:
                out[ref.blocks] = blocks_size(every[sha])
        return out

    def file_items(self) -> ItemsView[str, FileEntry]:
        """(path, entry) in path order at dict speed: ``Mapping.items()`` goes through
        ``__getitem__`` per path (2x slower over 100,000 files, ``encode_canonical``)."""
        return self._files.items()

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


def _digest(
    files: dict[str, FileEntry],
    extras: Extras = EMPTY,
    refs: Mapping[str, BlobRef] | None = None,
) -> str:
    """sha256 over the canonical form: ``path NUL size NUL sha256 LF`` per file, sorted by
    path, with the extra records of ``manifest_extras`` merged in, then one record per ref
    (``BlobRef.record``, sorted by sha256). Without extras or refs: the form as it always
    was, so older versions keep their digests."""
    h = hashlib.sha256()
    if not extras:
        for path, e in files.items():
            h.update(f"{path}\x00{e.size}\x00{e.sha256}\n".encode())
    else:
        rows = ((p, e.size, e.sha256) for p, e in files.items())
        for line in manifest_extras.canonical_lines(rows, extras):
            h.update(line.encode())
    for sha, ref in (refs or {}).items():
        h.update(ref.record(sha).encode())
    return h.hexdigest()


def _checked_refs(files: dict[str, FileEntry], refs: Mapping[str, BlobRef]) -> dict[str, BlobRef]:
    """``refs`` sorted by sha256, each the blob of some entry and valid for its size."""
    if not refs:
        return {}
    sizes = {e.sha256: e.size for e in files.values()}
    for sha, ref in refs.items():
        if sha not in sizes:
            raise InvalidInput(f"ref of blob {sha[:12]} names no file of the manifest")
        check_ref(sha, sizes[sha], ref)
    return dict(sorted(refs.items()))


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
