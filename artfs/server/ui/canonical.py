"""Comparing two versions over their stored canonical form (pure, no I/O).

The canonical form (``manifest_stream.py``) is ``path NUL size NUL sha256 LF`` per file,
sorted by path, and a commit stores it (schema 11, ``registry/canonicaldb.py``). Two
versions of one artifact share most of their records byte for byte, so the comparison
splits each form into records and walks the two sorted lists with the equal stretches
compared in C (``classify_canonical``); only records that differ are touched in Python,
and only those a page shows are parsed into rows. Decoding both JSON manifests into
100,000 lists each and matching them with dicts (``views.classify``) made the first
comparison of two 100,000-file versions 231-265 ms (docs/decisions.md, "Manifests stored
in canonical form").

Splitting at LF is only right when every record is a plain file record without a LF in
its path: then each record holds exactly two NULs and one LF, and no record starts with a
NUL (extra records and refs do). Where those counts do not hold, the form is parsed record
by record (``CanonicalParser``) and compared as rows: slower, never wrong.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from itertools import compress, count, islice
from operator import ne
from typing import overload

from ...manifest_extras import EXTRA
from ...manifest_stream import CanonicalParser
from .views import Classified, FileRow, classify

Row = tuple[str, int, str]


def plain_records(raw: bytes) -> list[bytes] | None:
    """Each record of ``raw`` (without its LF) when all are plain file records whose paths
    hold no LF; None otherwise."""
    if not raw:
        return []
    if raw[-1] != 0x0A:
        return None  # (not a whole canonical form)
    lines = raw.split(b"\n")
    lines.pop()  # (after the last LF)
    first = min(lines)  # an extra record or a ref starts with NUL, so sorts first
    if not first or first[0] == 0:
        return None
    if raw.count(b"\x00") != 2 * len(lines):
        return None  # a path with a LF in it split a record (its pieces hold its 2 NULs)
    return lines


def parsed_rows(raw: bytes) -> list[Row]:
    """The file rows of any canonical form, record by record (extras and refs left out:
    the comparison is of files, as ``views.classify`` is)."""
    return parsed(raw)[0]


def parsed(raw: bytes) -> tuple[list[Row], dict[str, str]]:
    """The file rows of any canonical form, and the URLs of its external refs by sha256
    (a ref's record follows the files: ``refs/model.py``)."""
    parser = CanonicalParser()
    rows = [r for r in parser.feed(raw) if r[1] != EXTRA]
    parser.finish()
    return rows, {sha: ref.url for sha, ref in parser.refs.items()}


END = b"\xff"  # after every record: UTF-8 never holds this byte
MIN_BATCH, MAX_BATCH = 8, 4096  # differing pairs checked at once (fewer after a shift)


class Records(Sequence[FileRow]):
    """Plain records kept whole, parsed into ``(path, size, sha256)`` only when read: a
    page shows 500 of them, and parsing all 21,000 that differ between the benchmark's two
    versions took 20-60 ms (docs/decisions.md)."""

    def __init__(self, records: list[bytes]) -> None:
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> FileRow: ...
    @overload
    def __getitem__(self, index: slice) -> list[FileRow]: ...
    def __getitem__(self, index: int | slice) -> FileRow | list[FileRow]:
        if isinstance(index, slice):
            return [_row(r) for r in self._records[index]]
        return _row(self._records[index])

    def size(self) -> int:
        return sum(int(r.split(b"\x00")[1]) for r in self._records)


class Pairs(Sequence[tuple[FileRow, FileRow]]):
    """(old, new) rows of the changed files, parsed when read, like ``Records``."""

    def __init__(self, old: Records, new: Records) -> None:
        self._old, self._new = old, new

    def __len__(self) -> int:
        return len(self._old)

    @overload
    def __getitem__(self, index: int) -> tuple[FileRow, FileRow]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[FileRow, FileRow]]: ...
    def __getitem__(
        self, index: int | slice
    ) -> tuple[FileRow, FileRow] | list[tuple[FileRow, FileRow]]:
        if isinstance(index, slice):
            return list(zip(self._old[index], self._new[index], strict=True))
        return self._old[index], self._new[index]


def _row(record: bytes) -> Row:
    path, size, sha = record.split(b"\x00")
    return path.decode(), int(size), sha.decode()


def _same_path_changes(
    xs: list[bytes], ys: list[bytes], old: list[bytes], new: list[bytes]
) -> None:
    """Of pairs known to share their paths, the ones whose digests differ (a size change
    without a digest change is the same file, as in ``views.classify``)."""
    differ = list(map(ne, [x[-64:] for x in xs], [y[-64:] for y in ys]))
    old += compress(xs, differ)
    new += compress(ys, differ)


def _from(records: list[bytes], start: int) -> Iterator[bytes]:
    """An iterator over ``records[start:]`` without copying them or stepping to ``start``."""
    it = iter(records)
    it.__setstate__(start)  # type: ignore[attr-defined]  # (list iterators resume in O(1))
    return it


def _path(record: bytes) -> bytes:
    return record.partition(b"\x00")[0]


def classify_canonical(a: bytes, b: bytes) -> Classified:
    """What ``views.classify`` makes of the two manifests' rows, from their canonical forms
    (rows of bytes on the fast path).

    A merge walk of the two sorted record lists that runs in C wherever it can: records
    are compared pairwise in place (``map(ne, ...)`` under ``compress``), a batch of the
    pairs that differ is checked in bulk to share their paths (a changed file), and Python
    steps record by record only where one version has a path the other has not, until the
    two are aligned again. The records that differ are kept whole and parsed in one pass
    at the end. Both lists end with the same sentinel, so the walk ends with both there."""
    la, lb = plain_records(a), plain_records(b)
    if la is None or lb is None:  # (a version with refs is always here: its form has them)
        (rows_a, refs_a), (rows_b, refs_b) = parsed(a), parsed(b)
        return replace(classify(rows_a, rows_b), refs_a=refs_a, refs_b=refs_b)
    files = len(la)
    la.append(END)
    lb.append(END)
    removed: list[bytes] = []
    added: list[bytes] = []
    old: list[bytes] = []
    new: list[bytes] = []
    i = j = 0  # where the aligned walk resumes in each list
    batch = MIN_BATCH
    while True:
        pairs = map(ne, _from(la, i), _from(lb, j))
        ks = list(islice(compress(count(), pairs), batch))
        if not ks:
            break  # (the rest is equal, down to both sentinels)
        xs = [la[i + k] for k in ks]
        ys = [lb[j + k] for k in ks]
        aligned = next(compress(count(), map(ne, map(_path, xs), map(_path, ys))), len(ks))
        _same_path_changes(xs[:aligned], ys[:aligned], old, new)
        if aligned == len(ks):
            i += ks[-1] + 1
            j += ks[-1] + 1
            batch = min(batch * 2, MAX_BATCH)
            continue
        i += ks[aligned]  # a path of one version only: step until aligned again
        j += ks[aligned]
        x, y = la[i], lb[j]
        while x != y:
            px, py = _path(x), _path(y)
            if px == py:
                _same_path_changes([x], [y], old, new)
                i += 1
                j += 1
                break
            if px < py:
                removed.append(x)
                i += 1
                x = la[i]
            else:
                added.append(y)
                j += 1
                y = lb[j]
        batch = MIN_BATCH
    gone, more, before, after = Records(removed), Records(added), Records(old), Records(new)
    sizes = {"changed": after.size(), "added": more.size(), "removed": gone.size()}
    same = files - len(removed) - len(old)
    return Classified(gone, more, Pairs(before, after), same, sizes)
