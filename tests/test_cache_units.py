"""Pure parts of the cache: block arithmetic, read-ahead policy, the streaming block assembler."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
from pathlib import Path

import pytest

from artfs.cache.blockmap import (
    ABSENT,
    PRESENT,
    block_bounds,
    bridge,
    held_bytes,
    normalize,
    runs_of,
    span,
)
from artfs.cache.fetcher import BadBlock, RunAssembler
from artfs.cache.filehash import READ_CHUNK, hash_file_range
from artfs.cache.readahead import ReadAhead
from artfs.errors import ProtocolError
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


def test_bridge_joins_runs_split_by_small_gaps() -> None:
    assert bridge([], 8) == []
    assert bridge([(0, 4)], 8) == [(0, 4, frozenset())]
    assert bridge([(0, 3), (4, 7), (9, 12)], 2) == [(0, 12, frozenset({3, 7, 8}))]
    assert bridge([(0, 3), (6, 7), (20, 30)], 3) == [
        (0, 7, frozenset({3, 4, 5})),
        (20, 30, frozenset()),
    ]
    assert bridge([(0, 1), (2, 3)], 0) == [(0, 1, frozenset()), (2, 3, frozenset())]


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


@pytest.mark.parametrize(
    "chunk", [1, 1000, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 7, 3 * BLOCK_SIZE]
)
def test_assembler_any_chunking(chunk: int) -> None:
    size = 5 * BLOCK_SIZE + 321
    data, digests = _blob(size)
    stored: dict[int, bytes] = {}
    asm = RunAssembler(1, 6, size, digests, lambda k, b: stored.__setitem__(k, bytes(b)))
    payload = data[BLOCK_SIZE:]
    for i in range(0, len(payload), chunk):
        asm.feed(payload[i : i + chunk])
    asm.finish()
    assert asm.done
    assert sorted(stored) == [1, 2, 3, 4, 5]
    for k, block in stored.items():
        lo, hi = block_bounds(k, size)
        assert block == data[lo:hi]


def test_assembler_rejects_bad_block_before_storing_it() -> None:
    size = 3 * BLOCK_SIZE
    data, digests = _blob(size, 1)
    bad = bytearray(data)
    bad[BLOCK_SIZE + 5] ^= 1
    stored: list[int] = []
    asm = RunAssembler(0, 3, size, digests, lambda k, b: stored.append(k))
    with pytest.raises(BadBlock) as exc:
        asm.feed(bytes(bad))
    assert exc.value.index == 1
    assert stored == [0]
    assert isinstance(asm.error, BadBlock)


def test_assembler_rejects_extra_bytes() -> None:
    size = BLOCK_SIZE
    data, digests = _blob(size, 2)
    asm = RunAssembler(0, 1, size, digests, lambda k, b: None)
    with pytest.raises(ProtocolError):
        asm.feed(data + b"x")


def test_assembler_empty_blob() -> None:
    digest = hashlib.sha256(b"").digest()
    stored: list[int] = []
    asm = RunAssembler(0, 1, 0, [digest], lambda k, b: stored.append(len(b)))
    asm.finish()
    assert asm.done and stored == [0]


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
