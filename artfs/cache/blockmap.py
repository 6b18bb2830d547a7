"""Pure arithmetic over blocks and presence maps (no I/O, so it is easy to test exhaustively).

A presence map has one byte per ``BLOCK_SIZE`` block: ``1`` present, anything else
absent (a torn or damaged map byte therefore means "fetch again", never "trust").
"""

from __future__ import annotations

from collections.abc import Sequence

from ..hashing import BLOCK_SIZE

BLOCK_SHIFT = BLOCK_SIZE.bit_length() - 1
assert 1 << BLOCK_SHIFT == BLOCK_SIZE

PRESENT = 1
ABSENT = 0
_NORMALIZE = bytes(PRESENT if i == PRESENT else ABSENT for i in range(256))


def normalize(flags: bytes) -> bytes:
    """Map every byte that is not exactly PRESENT to ABSENT."""
    return flags.translate(_NORMALIZE)


def span(offset: int, end: int) -> tuple[int, int]:
    """Blocks ``[first, stop)`` covering bytes ``[offset, end)``; ``end > offset``."""
    return offset >> BLOCK_SHIFT, ((end - 1) >> BLOCK_SHIFT) + 1


def block_bounds(index: int, size: int) -> tuple[int, int]:
    start = index << BLOCK_SHIFT
    return start, min(start + BLOCK_SIZE, size)


def runs_of(flags: bytes, base: int, value: int, max_len: int) -> list[tuple[int, int]]:
    """Maximal runs ``[start, stop)`` (absolute block numbers) where normalized ``flags == value``,
    split so that none is longer than ``max_len`` blocks. ``flags[0]`` is block ``base``."""
    other = bytes([ABSENT if value == PRESENT else PRESENT])
    want = bytes([value])
    runs: list[tuple[int, int]] = []
    i, n = 0, len(flags)
    while i < n:
        i = flags.find(want, i)
        if i < 0:
            break
        j = flags.find(other, i)
        if j < 0:
            j = n
        for s in range(i, j, max_len):
            runs.append((base + s, base + min(j, s + max_len)))
        i = j
    return runs


def bridge(runs: Sequence[tuple[int, int]], max_gap: int) -> list[tuple[int, int, frozenset[int]]]:
    """Sorted, disjoint runs grouped into spans ``(start, stop, gaps)`` where the blocks
    between neighbouring runs (``gaps``) number at most ``max_gap`` per gap: one request
    can then fetch the span and drop the gap blocks, instead of one request per run."""
    spans: list[tuple[int, int, frozenset[int]]] = []
    start = stop = -1
    gaps: set[int] = set()
    for a, b in runs:
        if start >= 0 and a - stop <= max_gap:
            gaps.update(range(stop, a))
            stop = b
            continue
        if start >= 0:
            spans.append((start, stop, frozenset(gaps)))
        start, stop, gaps = a, b, set()
    if start >= 0:
        spans.append((start, stop, frozenset(gaps)))
    return spans


def held_bytes(flags: bytes, size: int) -> int:
    """Bytes of the blob held, given its whole normalized presence map."""
    count = flags.count(PRESENT)
    if count and flags[-1] == PRESENT:
        last_len = size - ((len(flags) - 1) << BLOCK_SHIFT)
        return (count - 1) * BLOCK_SIZE + last_len
    return count * BLOCK_SIZE
