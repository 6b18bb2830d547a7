"""Comparing two versions over their stored canonical form (pure, no I/O).

The canonical form (``manifest_stream.py``) is ``path NUL size NUL sha256 LF`` per file,
sorted by path, and a commit stores it (schema 11, ``registry/canonicaldb.py``). Two
versions of one artifact share most of their records byte for byte, so the comparison
splits each form into records and takes the two set differences in C; only the records
that differ are parsed into rows. Decoding both JSON manifests into 100,000 lists each and
matching them with dicts (``views.classify``) made the first comparison of two 100,000-file
versions 231-265 ms; this is the part that makes it fast (docs/decisions.md, "Comparing
versions over the canonical form").

Splitting at LF is only right when every record is a plain file record without a LF in
its path: then each record holds exactly two NULs and one LF, and no record starts with a
NUL (extra records and refs do). Where those counts do not hold, the form is parsed record
by record (``CanonicalParser``) and compared as rows: slower, never wrong.
"""

from __future__ import annotations

from itertools import compress, count
from operator import ne

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
    parser = CanonicalParser()
    rows = [r for r in parser.feed(raw) if r[1] != EXTRA]
    parser.finish()
    return rows


END = b"\xff"  # after every record: UTF-8 never holds this byte


def _row(record: bytes) -> Row:
    path, size, sha = record.split(b"\x00")
    return path.decode(), int(size), sha.decode()


def classify_canonical(a: bytes, b: bytes) -> Classified:
    """What ``views.classify`` makes of the two manifests' rows, from their canonical forms.

    A merge walk of the two sorted record lists in which equal records are skipped in C
    (``map(ne, ...)`` under ``compress``): Python runs only where the versions differ,
    and parses only those records. Both lists end with the same sentinel, so the walk ends
    with both at their end."""
    la, lb = plain_records(a), plain_records(b)
    if la is None or lb is None:
        return classify(parsed_rows(a), parsed_rows(b))
    files = len(la)
    la.append(END)
    lb.append(END)
    ita, itb = iter(la), iter(lb)
    removed: list[FileRow] = []
    added: list[FileRow] = []
    changed: list[tuple[FileRow, FileRow]] = []
    ea = eb = 0  # records each side advanced beyond the pairs ``map`` took
    for k in compress(count(), map(ne, ita, itb)):
        x, y = la[k + ea], lb[k + eb]
        while x != y:
            px, py = x.partition(b"\x00")[0], y.partition(b"\x00")[0]
            if px == py:
                old, new = _row(x), _row(y)
                if old[2] != new[2]:
                    changed.append((old, new))
                break  # (a size without a digest change is the same file, as in classify)
            if px < py:
                removed.append(_row(x))
                x = next(ita)
                ea += 1
            else:
                added.append(_row(y))
                y = next(itb)
                eb += 1
    same = files - len(removed) - len(changed)
    return Classified(removed, added, changed, same)
