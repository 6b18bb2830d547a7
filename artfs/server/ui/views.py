"""What the registry pages show, computed from registry records (pure, no I/O).

A manifest is handled as the stored wire form, a list of ``[path, size, sha256]`` sorted
by path, not as a ``Manifest``: building 100,000 ``FileEntry`` objects costs more than
the page's whole time budget (docs/decisions.md, "Registry web page"). Listing one
directory is a ``bisect`` to the range of paths under it and one pass over that range;
comparing two versions sorts every file into added, removed, changed or the same once
(``Classified``: made from the stored canonical forms by ``canonical.py``, or from rows by
``classify``), and a page shows one slice of one kind, so no page grows with the
manifests.
"""

from __future__ import annotations

import json
import shlex
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ...errors import InvalidInput, NotFound
from ...models import ArtifactInfo, VersionInfo

FileRow = Sequence[Any]  # [path, size, sha256], as stored
PAGE_VERSIONS = 50
PAGE_FILES = 500
PAGE_DIFF = 500
META_VALUE_CHARS = 300  # a metadata value longer than this is cut in tables (full in JSON)
META_KEYS = 200  # metadata keys shown side by side at most


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # (unreachable)


def page_param(value: str | None) -> int:
    """``?page=N`` (1-based); absent is 1."""
    if value is None or value == "":
        return 1
    if not value.isdigit() or not 1 <= int(value) <= 10**9:
        raise InvalidInput(f"'page' must be a page number >= 1, not {value[:20]!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class Pager:
    page: int
    size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def start(self) -> int:
        return (self.page - 1) * self.size

    @property
    def stop(self) -> int:
        return min(self.total, self.start + self.size)

    def check(self) -> Pager:
        if self.page > self.pages:
            raise NotFound(f"page {self.page} of {self.pages}")
        return self


def meta_text(value: Any, limit: int = META_VALUE_CHARS) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def latest_number(art: ArtifactInfo) -> int | None:
    return max((v.number for v in art.versions), default=None)


def aliases_by_number(aliases: Mapping[str, int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for name, number in sorted(aliases.items()):
        out.setdefault(number, []).append(name)
    return out


def version_page(art: ArtifactInfo, page: int) -> tuple[Pager, list[int]]:
    """The version numbers on ``page``, newest first."""
    numbers = sorted((v.number for v in art.versions), reverse=True)
    pager = Pager(page, PAGE_VERSIONS, len(numbers)).check()
    return pager, numbers[pager.start : pager.stop]


def tags_of(info: VersionInfo) -> list[str]:
    """Tags when the version record has them (a registry without tags: none)."""
    tags = getattr(info, "tags", None)
    if not tags:
        return []
    return sorted(str(t) for t in tags)


@dataclass(frozen=True, slots=True)
class Commands:
    get: str
    mount: str
    python: str


def commands(registry_url: str, info: VersionInfo) -> Commands:
    ref = info.ref
    url = shlex.quote(registry_url)
    return Commands(
        get=f"ARTFS_REGISTRY={url} artfs get {shlex.quote(ref)} ./{shlex.quote(info.artifact)}",
        mount=(
            f"ARTFS_REGISTRY={url} artfs mount /mnt/artfs && "
            f"ls /mnt/artfs/{shlex.quote(f'{info.project}/{info.artifact}/v{info.number}')}/"
        ),
        python=f"import artfs; v = artfs.Registry({registry_url!r}).version({ref!r})",
    )


# --- the file tree -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DirEntry:
    name: str
    path: str
    is_dir: bool
    size: int  # a directory: the total of the files under it
    sha256: str = ""
    files: int = 1  # a directory: the files under it
    url: str = ""  # a file that is an external ref: where its bytes stay


@dataclass(frozen=True, slots=True)
class DirListing:
    directory: str
    entries: list[DirEntry]
    pager: Pager
    files: int  # under this directory, at any depth
    size: int


def _path(row: FileRow) -> str:
    return str(row[0])


def _range(files: Sequence[FileRow], directory: str) -> tuple[int, int]:
    if not directory:
        return 0, len(files)
    prefix = directory + "/"
    lo = bisect_left(files, prefix, key=_path)
    hi = bisect_left(files, directory + "0", key=_path)  # "0" is the code point after "/"
    return lo, hi


@dataclass(frozen=True, slots=True)
class DirScan:
    """One directory of a manifest, scanned: what any page of it needs."""

    directory: str
    dirs: list[tuple[str, int, int]]  # (name, files, bytes) of each subdirectory, by name
    plain: list[FileRow]  # its own files, by name
    files: int  # under it, at any depth
    size: int


def scan_dir(files: Sequence[FileRow], directory: str) -> DirScan:
    """The subdirectories and files directly in ``directory`` (one pass over its range)."""
    directory = directory.strip("/")
    lo, hi = _range(files, directory)
    if directory and lo == hi:
        raise NotFound(f"no directory {directory!r} in this version")
    cut = len(directory) + 1 if directory else 0
    dirs: dict[str, list[int]] = {}
    plain: list[FileRow] = []
    total = 0
    for i in range(lo, hi):
        row = files[i]
        rest = str(row[0])[cut:]
        size = int(row[1])
        total += size
        slash = rest.find("/")
        if slash < 0:
            plain.append(row)
        else:
            agg = dirs.get(rest[:slash])
            if agg is None:
                dirs[rest[:slash]] = [1, size]
            else:
                agg[0] += 1
                agg[1] += size
    subdirs = [(name, dirs[name][0], dirs[name][1]) for name in sorted(dirs)]
    return DirScan(directory, subdirs, plain, hi - lo, total)


@dataclass(frozen=True, slots=True)
class RefMarks:
    """A version's external refs as its page marks them: sha256 -> URL, and how many of
    its files are refs."""

    urls: dict[str, str]
    files: int


NO_REFS = RefMarks({}, 0)


def ref_marks(refs: Mapping[str, Any], files: Sequence[FileRow]) -> RefMarks:
    """From a stored manifest's ``refs`` (sha256 -> ``{"url": ...}``) and file rows."""
    urls = {str(sha): str(ref["url"]) for sha, ref in refs.items()}
    return RefMarks(urls, sum(1 for row in files if row[2] in urls)) if urls else NO_REFS


def page_dir(scan: DirScan, page: int, refs: RefMarks = NO_REFS) -> DirListing:
    """One page of a scanned directory: subdirectories first, then files, by name."""
    names, plain = scan.dirs, scan.plain
    pager = Pager(page, PAGE_FILES, len(names) + len(plain)).check()
    base = scan.directory + "/" if scan.directory else ""
    cut = len(base)
    entries: list[DirEntry] = []
    for i in range(pager.start, pager.stop):
        if i < len(names):
            name, count, size = names[i]
            entries.append(DirEntry(name, base + name, True, size, "", count))
        else:
            row = plain[i - len(names)]
            path = str(row[0])
            sha = str(row[2])
            url = refs.urls.get(sha, "")
            entries.append(DirEntry(path[cut:], path, False, int(row[1]), sha, url=url))
    return DirListing(scan.directory, entries, pager, scan.files, scan.size)


def list_dir(files: Sequence[FileRow], directory: str, page: int) -> DirListing:
    return page_dir(scan_dir(files, directory), page)


def breadcrumbs(directory: str) -> list[tuple[str, str]]:
    """(name, path) of each directory from the top down to ``directory``."""
    out, parts = [], [p for p in directory.split("/") if p]
    for i, name in enumerate(parts):
        out.append((name, "/".join(parts[: i + 1])))
    return out


# --- comparing two versions ----------------------------------------------------------
KINDS = ("changed", "added", "removed")


@dataclass(frozen=True, slots=True)
class DiffRow:
    path: str
    size_a: int | None
    size_b: int | None
    sha_a: str
    sha_b: str
    url_a: str = ""  # where a side is an external ref: its source URL
    url_b: str = ""


@dataclass(frozen=True, slots=True)
class Classified:
    """Every file of two versions sorted into its kind (paths in order); the part of a
    comparison that depends only on the two manifests, so a page can keep it."""

    removed: Sequence[FileRow]
    added: Sequence[FileRow]
    changed: Sequence[tuple[FileRow, FileRow]]
    same: int
    sizes: Mapping[str, int] | None = None  # of each kind, where known when made
    # external refs, sha256 -> URL, of each version (a blob may be a ref in one, stored in the other)
    refs_a: Mapping[str, str] = field(default_factory=dict)
    refs_b: Mapping[str, str] = field(default_factory=dict)

    def count(self, kind: str) -> int:
        if kind == "changed":
            return len(self.changed)
        return len(self.removed if kind == "removed" else self.added)

    def size(self, kind: str) -> int:
        """Bytes removed (in a), added (in b), changed (in b)."""
        if self.sizes is not None:
            return self.sizes[kind]
        if kind == "changed":
            return sum(int(new[1]) for _, new in self.changed)
        return sum(int(r[1]) for r in (self.removed if kind == "removed" else self.added))


def classify(a: Sequence[FileRow], b: Sequence[FileRow]) -> Classified:
    """Files of ``b`` against ``a`` by path and digest. Dict lookups, not a merge of the two
    sorted lists: a Python-level merge of 2 x 100,000 rows took 170 ms, this 50 ms."""
    in_a = {row[0]: row for row in a}
    in_b = {row[0]: row for row in b}
    removed: list[FileRow] = []
    changed: list[tuple[FileRow, FileRow]] = []
    same = 0
    for row in a:
        other = in_b.get(row[0])
        if other is None:
            removed.append(row)
        elif other[2] != row[2]:
            changed.append((row, other))
        else:
            same += 1
    added = [row for row in b if row[0] not in in_a]
    return Classified(removed, added, changed, same)


@dataclass(frozen=True, slots=True)
class Diff:
    counts: dict[str, int]
    sizes: dict[str, int]  # bytes removed (in a), added (in b), changed (in b)
    same: int
    kind: str
    rows: list[DiffRow]
    pager: Pager


def compare(c: Classified, kind: str, page: int) -> Diff:
    """One page of the rows of one ``kind``, with every kind's count and size."""
    if kind not in KINDS:
        raise InvalidInput(f"'show' must be one of {', '.join(KINDS)}")
    pager = Pager(page, PAGE_DIFF, c.count(kind)).check()
    rows: list[DiffRow] = []
    url_a, url_b = c.refs_a.get, c.refs_b.get
    if kind == "changed":
        for old, new in c.changed[pager.start : pager.stop]:
            a, b = str(old[2]), str(new[2])
            rows.append(
                DiffRow(str(old[0]), int(old[1]), int(new[1]), a, b, url_a(a, ""), url_b(b, ""))
            )
    elif kind == "added":
        for r in c.added[pager.start : pager.stop]:
            rows.append(
                DiffRow(str(r[0]), None, int(r[1]), "", str(r[2]), url_b=url_b(str(r[2]), ""))
            )
    else:
        for r in c.removed[pager.start : pager.stop]:
            rows.append(
                DiffRow(str(r[0]), int(r[1]), None, str(r[2]), "", url_a=url_a(str(r[2]), ""))
            )
    counts = {k: c.count(k) for k in KINDS}
    sizes = {k: c.size(k) for k in KINDS}
    return Diff(counts, sizes, c.same, kind, rows, pager)


@dataclass(frozen=True, slots=True)
class MetaRow:
    key: str
    a: str | None
    b: str | None

    @property
    def differs(self) -> bool:
        return self.a != self.b


def metadata_side_by_side(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[list[MetaRow], int]:
    """Top-level keys of both (at most ``META_KEYS``) and how many more there were."""
    keys = sorted(set(a) | set(b))
    rows = [
        MetaRow(k, meta_text(a[k]) if k in a else None, meta_text(b[k]) if k in b else None)
        for k in keys[:META_KEYS]
    ]
    return rows, max(0, len(keys) - META_KEYS)
