"""Pure parts of the cache: block arithmetic, read-ahead policy, the streaming block assembler."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import trio

from artfs.cache.blockmap import (
    ABSENT,
    PRESENT,
    block_bounds,
    held_bytes,
    normalize,
    runs_of,
    span,
)
from artfs.cache.fetcher import BadBlock, fetch_blocks
from artfs.cache.filehash import READ_CHUNK, hash_file_range
from artfs.cache.readahead import ReadAhead
from artfs.errors import ProtocolError, Unavailable
from artfs.hashing import BLOCK_SIZE, BlobHasher, split_block_digests

MiB = 1 << 20


def test_span_and_bounds() -> None:
    assert span(0, 1) == (0, 1)
    assert span(0, BLOCK_SIZE) == (0, 1)
    assert span(0, BLOCK_SIZE + 1) == (0, 2)
    assert span(BLOCK_SIZE - 1, BLOCK_SIZE + 1) == (0, 2)
    assert span(5 * BLOCK_SIZE, 6 * BLOCK_SIZE) == (5, 6)
    size = 3 * BLOCK_SIZE + 10
    assert block_bounds(3, size) == (3 * BLOCK_SIZE, size)
    assert block_bounds(1, size) == (BLOCK_SIZE, 2 * BLOCK_SIZE)


def test_runs_of_splits_and_offsets() -> None:
    flags = bytes([0, 0, 1, 0, 0, 0, 0, 1, 1, 0])
    assert runs_of(flags, 10, ABSENT, 100) == [(10, 12), (13, 17), (19, 20)]
    assert runs_of(flags, 10, PRESENT, 100) == [(12, 13), (17, 19)]
    assert runs_of(flags, 0, ABSENT, 2) == [(0, 2), (3, 5), (5, 7), (9, 10)]
    assert runs_of(b"", 0, ABSENT, 4) == []


def test_runs_of_matches_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(300):
        flags = bytes(rng.choice([0, 1]) for _ in range(rng.randint(0, 40)))
        max_len = rng.randint(1, 6)
        for value in (ABSENT, PRESENT):
            covered = [b for s, e in runs_of(flags, 0, value, max_len) for b in range(s, e)]
            assert covered == [i for i, f in enumerate(flags) if f == value]
            assert all(0 < e - s <= max_len for s, e in runs_of(flags, 0, value, max_len))


def test_normalize_treats_garbage_as_absent() -> None:
    assert normalize(bytes([0, 1, 2, 255, 1])) == bytes([0, 1, 0, 0, 1])


def test_held_bytes_counts_short_last_block() -> None:
    size = 2 * BLOCK_SIZE + 100
    assert held_bytes(bytes([1, 0, 1]), size) == BLOCK_SIZE + 100
    assert held_bytes(bytes([1, 1, 0]), size) == 2 * BLOCK_SIZE
    assert held_bytes(bytes([1, 1, 1]), size) == size
    assert held_bytes(bytes([0, 0, 0]), size) == 0


def test_readahead_grows_to_max_and_stays_ahead() -> None:
    size = 1 << 40
    ra = ReadAhead(size, MiB, 64 * MiB)
    requested: list[tuple[int, int]] = []
    offset = 0
    while offset < 512 * MiB:
        got = ra.on_read(offset, offset + MiB)
        if got:
            requested.append(got)
        offset += MiB
        # the reader never catches up with what was requested
        assert requested and requested[-1][1] > offset
    # contiguous, no overlap, no gap
    for (_, e1), (s2, _) in itertools.pairwise(requested):
        assert e1 == s2
    assert requested[0] == (MiB, 2 * MiB)
    assert ra.window == 64 * MiB
    # few large requests, not one per read
    assert len(requested) < 512 // 16


def test_readahead_random_reads_prefetch_nothing() -> None:
    ra = ReadAhead(1 << 34, MiB, 64 * MiB)
    rng = random.Random(1)
    for _ in range(200):
        off = rng.randrange(MiB, 1 << 34, 4096)
        assert ra.on_read(off, off + 4096) is None


def test_readahead_restarts_at_zero_and_stops_at_eof() -> None:
    ra = ReadAhead(3 * MiB, MiB, 64 * MiB)
    assert ra.on_read(0, MiB) == (MiB, 2 * MiB)
    assert ra.on_read(MiB, 2 * MiB) == (2 * MiB, 3 * MiB)
    assert ra.on_read(2 * MiB, 3 * MiB) is None
    assert ra.on_read(0, MiB) == (MiB, 2 * MiB)  # second pass starts over


def test_readahead_tolerates_slightly_reordered_reads() -> None:
    ra = ReadAhead(1 << 30, MiB, 64 * MiB)
    ra.on_read(0, MiB)
    assert ra.on_read(MiB + 4096, 2 * MiB) is not None  # small gap: still sequential
    far = ReadAhead(1 << 30, MiB, 64 * MiB)
    far.on_read(0, MiB)
    assert far.on_read(5 * MiB, 6 * MiB) is None  # a real jump resets the window
    assert far.window == 0


def _blob(size: int, seed: int = 0) -> tuple[bytes, list[bytes]]:
    data = random.Random(seed).randbytes(size)
    h = BlobHasher()
    h.update(data)
    return data, split_block_digests(h.block_digests(), size)


class ChunkedSource:
    """A registry stand-in whose ``read_range`` sends ``payload`` in ``chunk``-byte pieces."""

    def __init__(self, payload: bytes, chunk: int) -> None:
        self.payload = payload
        self.chunk = chunk

    async def read_range(
        self, sha: str, size: int, offset: int, length: int, sink: Callable[[bytes], None]
    ) -> None:
        for i in range(0, len(self.payload), self.chunk):
            sink(self.payload[i : i + self.chunk])
            await trio.sleep(0)


class Stored:
    """Records what ``fetch_blocks`` writes (any thread) and marks (trio thread)."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.written: set[int] = set()
        self.marked: list[tuple[int, int]] = []

    def write(self, first: int, count: int, pieces: Sequence[memoryview]) -> None:
        joined = b"".join(pieces)
        start = first * BLOCK_SIZE
        self.data[start : start + len(joined)] = joined
        self.written.update(range(first, first + count))

    def mark(self, first: int, stop: int) -> None:
        assert set(range(first, stop)) <= self.written  # data before map
        self.marked.append((first, stop))

    def marked_blocks(self) -> list[int]:
        return [k for first, stop in self.marked for k in range(first, stop)]


async def _fetch(
    payload: bytes,
    chunk: int,
    size: int,
    first: int,
    stop: int,
    digests: list[bytes],
    stored: Stored,
    batch: int = 4 * BLOCK_SIZE,
) -> None:
    source = ChunkedSource(payload, chunk)
    await fetch_blocks(
        source,  # type: ignore[arg-type]
        "0" * 64,
        size,
        first,
        stop,
        digests,
        stored.write,
        stored.mark,
        5.0,
        batch,
    )


@pytest.mark.parametrize(
    "chunk", [1000, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 7, 3 * BLOCK_SIZE, 1 << 20]
)
async def test_fetch_blocks_any_chunking(chunk: int) -> None:
    size = 5 * BLOCK_SIZE + 321
    data, digests = _blob(size)
    stored = Stored(size)
    await _fetch(data[BLOCK_SIZE:], chunk, size, 1, 6, digests, stored, batch=2 * BLOCK_SIZE)
    assert stored.marked_blocks() == [1, 2, 3, 4, 5]  # in order, each once
    assert all(stop - first <= 2 for first, stop in stored.marked)  # batches stay bounded
    assert bytes(stored.data[BLOCK_SIZE:]) == data[BLOCK_SIZE:]


async def test_fetch_blocks_rejects_a_bad_block_and_writes_nothing_of_it() -> None:
    size = 6 * BLOCK_SIZE
    data, digests = _blob(size, 1)
    bad = bytearray(data)
    bad[3 * BLOCK_SIZE + 5] ^= 1
    stored = Stored(size)
    with pytest.raises(BadBlock) as exc:
        await _fetch(bytes(bad), BLOCK_SIZE // 2, size, 0, 6, digests, stored)
    assert exc.value.index == 3
    assert stored.marked_blocks() == [0, 1, 2]
    assert stored.written == {0, 1, 2}  # the bad block (and what follows) never written


async def test_fetch_blocks_rejects_extra_bytes() -> None:
    size = 2 * BLOCK_SIZE
    data, digests = _blob(size, 2)
    with pytest.raises(ProtocolError):
        await _fetch(data + b"x", BLOCK_SIZE, size, 0, 2, digests, Stored(size))


async def test_fetch_blocks_short_stream_stores_whole_blocks_then_fails() -> None:
    size = 4 * BLOCK_SIZE
    data, digests = _blob(size, 3)
    stored = Stored(size)
    with pytest.raises(Unavailable):
        await _fetch(data[: 2 * BLOCK_SIZE + 100], 4096, size, 0, 4, digests, stored)
    assert stored.marked_blocks() == [0, 1]


async def test_fetch_blocks_empty_blob() -> None:
    stored = Stored(0)
    await _fetch(b"", 1, 0, 0, 1, [hashlib.sha256(b"").digest()], stored)
    assert stored.marked == [(0, 1)]
    with pytest.raises(BadBlock):
        await _fetch(b"", 1, 0, 0, 1, [hashlib.sha256(b"x").digest()], Stored(0))


def test_hash_file_range_matches_hashlib(tmp_path: Path) -> None:
    data = random.Random(4).randbytes(3 * READ_CHUNK + 12345)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for start, end in [(0, len(data)), (7, READ_CHUNK + 9), (len(data), len(data))]:
            h = hashlib.sha256()
            assert hash_file_range(h, fd, start, end)
            assert h.digest() == hashlib.sha256(data[start:end]).digest()
        assert not hash_file_range(hashlib.sha256(), fd, 0, len(data) + 1)  # file too short
    finally:
        os.close(fd)
