"""The blob cache in one process, against the in-memory registry twin (which counts bytes served)."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from artfs.cache import BlobCache, CacheTuning
from artfs.cache.blockmap import block_bounds
from artfs.cache.layout import CacheLayout
from artfs.client.base import DataSink
from artfs.client.memory import FaultyClient, MemoryRegistryClient
from artfs.errors import IntegrityError, InvalidInput, Unavailable
from artfs.hashing import BLOCK_SIZE

from .e2e import small_tmpfs

MiB = 1 << 20


class TrackingClient(MemoryRegistryClient):
    """Records every range request, how many run at once, and can hold requests at a gate."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[tuple[int, int]] = []
        self.active = 0
        self.max_active = 0
        self.gate: trio.Event | None = None
        self.gate_after = 0  # bytes of each request delivered before waiting at the gate
        self.corrupt_requests = 0  # corrupt the first byte of this many upcoming requests
        self.blocks_requests = 0
        self.prepared: list[str] = []  # prepare_read calls, in order

    async def prepare_read(self, sha256: str) -> None:
        self.prepared.append(sha256)

    async def blob_blocks(self, sha256: str, size: int) -> list[bytes]:
        self.blocks_requests += 1
        return await super().blob_blocks(sha256, size)

    async def read_range(
        self, sha256: str, size: int, offset: int, length: int, sink: DataSink
    ) -> None:
        self.ranges.append((offset, length))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            corrupt = self.corrupt_requests > 0
            if corrupt:
                self.corrupt_requests -= 1
            first = True

            def maybe_bad(data: bytes) -> None:
                nonlocal first
                if corrupt and first and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                first = False
                sink(data)

            if self.gate is not None and self.gate_after < length:
                await super().read_range(sha256, size, offset, self.gate_after, maybe_bad)
                await self.gate.wait()
                offset, length = offset + self.gate_after, length - self.gate_after
            await super().read_range(sha256, size, offset, length, maybe_bad)
        finally:
            self.active -= 1


def make_blob(client: MemoryRegistryClient, size: int, seed: int = 0) -> tuple[str, bytes]:
    data = random.Random(seed).randbytes(size)
    return client.add_blob(data), data


async def read_all(reader: object, size: int, step: int = MiB) -> bytes:
    out = bytearray()
    offset = 0
    while offset < size:
        piece = await reader.read(offset, step)  # type: ignore[attr-defined]
        assert piece, "short read before end of blob"
        out += piece
        offset += len(piece)
    return bytes(out)


FAST = CacheTuning(timeout=2.0)


async def until_complete(cache: BlobCache, sha: str) -> None:
    """Background completion hashes in a thread, which wait_all_tasks_blocked cannot see."""
    with trio.fail_after(30):
        while not cache.layout.complete(sha).exists():
            await trio.sleep(0.01)


async def test_small_blob_needs_no_digest_request(tmp_path: Path) -> None:
    client = TrackingClient()
    sha, data = make_blob(client, 5000)
    async with BlobCache(tmp_path, client) as cache:
        async with await cache.open(sha, len(data)) as reader:
            assert await reader.read(100, 50) == data[100:150]
            assert await reader.read(4990, 100) == data[4990:]
            assert await reader.read(5000, 10) == b""
        assert client.blocks_requests == 0
        assert client.bytes_served == len(data)
        await until_complete(cache, sha)
        assert cache.layout.complete(sha).read_bytes() == data
        assert cache.cached_bytes(sha, len(data)) == len(data)


async def test_a_cold_open_prepares_the_read_before_it_comes(tmp_path: Path) -> None:
    """Opening a blob this cache has never seen asks the client to prepare its read (locate
    it) before the open returns; a blob partly or wholly cached, or of one block (fetched
    whole at its first read, where the location is asked for anyway), is not prepared."""
    client = TrackingClient()
    size = 3 * BLOCK_SIZE + 7
    sha, data = make_blob(client, size, 3)
    small, small_data = make_blob(client, 5000, 4)
    async with BlobCache(tmp_path, client) as cache:
        async with await cache.open(sha, size) as reader:
            await trio.testing.wait_all_tasks_blocked()
            assert client.prepared == [sha] and client.ranges == []  # before any read
            assert await reader.read(0, BLOCK_SIZE) == data[:BLOCK_SIZE]
        async with await cache.open(sha, size) as reader:  # partly cached now
            assert await reader.read(0, size) == data
        await until_complete(cache, sha)
        async with await cache.open(sha, size) as reader:  # complete
            assert await reader.read(size - 7, 7) == data[-7:]
        async with await cache.open(small, len(small_data)) as reader:
            assert await reader.read(0, 10) == small_data[:10]
        assert client.prepared == [sha]
    async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
        assert await reader.read(0, 10) == data[:10]  # (a new process finds it complete)
    assert client.prepared == [sha]


async def test_empty_blob(tmp_path: Path) -> None:
    client = TrackingClient()
    sha = client.add_blob(b"")
    async with BlobCache(tmp_path, client) as cache:
        path = await cache.fetch(sha, 0)
        assert path.read_bytes() == b""
        async with await cache.open(sha, 0) as reader:
            assert await reader.read(0, 10) == b""


async def test_random_reads_move_only_their_blocks(tmp_path: Path) -> None:
    client = TrackingClient()
    size = 64 * MiB + 12345
    sha, data = make_blob(client, size, 1)
    rng = random.Random(2)
    async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
        touched: set[int] = set()
        for _ in range(40):
            offset = rng.randrange(MiB, size - 4096)
            assert await reader.read(offset, 4096) == data[offset : offset + 4096]
            touched.update(range(offset // BLOCK_SIZE, (offset + 4095) // BLOCK_SIZE + 1))
            await trio.testing.wait_all_tasks_blocked()
        # exactly the blocks touched, nothing read ahead
        assert client.bytes_served == sum(
            block_bounds(k, size)[1] - block_bounds(k, size)[0] for k in touched
        )
        # a 1 MiB slice from the middle moves about 1 MiB
        before = client.bytes_served
        middle = 40 * MiB + 777
        assert await reader.read(middle, MiB) == data[middle : middle + MiB]
        await trio.testing.wait_all_tasks_blocked()
        assert client.bytes_served - before <= MiB + 2 * BLOCK_SIZE
        assert reader.cached_bytes() == cache.cached_bytes(sha, size) < size // 10


async def test_random_fill_fetches_the_rest_once_asked(tmp_path: Path) -> None:
    """With ``random_fill_after``, a reader that keeps missing at random gets the whole blob
    in the background: every byte fetched once, in request-sized pieces, the blob completed."""
    client = TrackingClient()
    size = 24 * MiB + 999
    sha, data = make_blob(client, size, 11)
    tuning = CacheTuning(timeout=5.0, random_fill_after=6, request_bytes=2 * MiB)
    rng = random.Random(12)
    async with BlobCache(tmp_path, client, tuning=tuning) as cache:
        async with await cache.open(sha, size) as reader:
            for _ in range(5):
                offset = rng.randrange(MiB, size - 4096)
                assert await reader.read(offset, 4096) == data[offset : offset + 4096]
                await trio.testing.wait_all_tasks_blocked()
            assert client.bytes_served <= 10 * BLOCK_SIZE  # five misses: their blocks only
            for _ in range(200):  # the sixth miss starts the fill; reads go on meanwhile
                offset = rng.randrange(0, size - 4096)
                assert await reader.read(offset, 4096) == data[offset : offset + 4096]
            await until_complete(cache, sha)
            # A fill span may carry blocks the reader fetched meanwhile (dropped, see below),
            # never more than once each.
            reads = sum(1 for _, length in client.ranges if length <= 2 * BLOCK_SIZE)
            assert size <= client.bytes_served <= size + reads * BLOCK_SIZE
            assert max(length for _, length in client.ranges) <= 2 * MiB
            assert client.max_active <= tuning.parallel_requests + 1  # + one foreground miss
        assert cache.layout.complete(sha).read_bytes() == data


async def test_serial_prefetch_spans_holes_with_one_request(tmp_path: Path) -> None:
    """Blocks a reader fetched inside a piece do not split the piece into one request per
    run: the piece is one request and those blocks are dropped, not hashed twice."""
    client = TrackingClient()
    size = 4 * MiB
    sha, data = make_blob(client, size, 17)
    async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
        for k in (3, 7, 12, 20):  # (no two adjacent: that would start a read-ahead)
            offset = k * BLOCK_SIZE + 100
            assert await reader.read(offset, 10) == data[offset : offset + 10]
        state = reader._state
        assert state is not None
        before = len(client.ranges)
        assert await state.prefetch(0, 24, serial=True)
        assert client.ranges[before:] == [(0, 24 * BLOCK_SIZE)]  # one request for 0-23
        assert await state.prefetch(24, 32, serial=True)
        assert await read_all(reader, size) == data
        assert len(client.ranges) == before + 2  # nothing fetched again


async def test_random_fill_is_off_by_default_and_bounded_by_the_cache(tmp_path: Path) -> None:
    client = TrackingClient()
    size = 16 * MiB
    sha, data = make_blob(client, size, 13)
    rng = random.Random(14)
    offsets = [rng.randrange(0, size - 4096) for _ in range(100)]
    for tuning, max_bytes in (
        (CacheTuning(timeout=5.0), None),  # off by default
        (CacheTuning(timeout=5.0, random_fill_after=4), 4 * size - 1),  # over a quarter
        (CacheTuning(timeout=5.0, random_fill_after=4, random_fill_max=size - 1), None),
    ):
        client.bytes_served = 0
        root = tmp_path / f"c{max_bytes}{tuning.random_fill_after}{tuning.random_fill_max}"
        async with BlobCache(root, client, tuning=tuning, max_bytes=max_bytes) as cache:
            async with await cache.open(sha, size) as reader:
                for offset in offsets:
                    assert await reader.read(offset, 4096) == data[offset : offset + 4096]
                await trio.testing.wait_all_tasks_blocked()
            assert client.bytes_served <= 2 * len(offsets) * BLOCK_SIZE
            assert not cache.layout.complete(sha).exists()


async def test_random_fills_together_stay_within_a_quarter_of_the_cache(tmp_path: Path) -> None:
    client = TrackingClient()
    size = 8 * MiB
    blobs = [make_blob(client, size, 30 + i) for i in range(3)]
    tuning = CacheTuning(timeout=5.0, random_fill_after=2, request_bytes=MiB)
    client.gate, client.gate_after = trio.Event(), 2 * BLOCK_SIZE  # fills stall
    async with BlobCache(tmp_path, client, tuning=tuning, max_bytes=48 * MiB) as cache:
        for sha, data in blobs:  # each fits a quarter (12 MiB) alone; two do not
            async with await cache.open(sha, size) as reader:
                for offset in (5 * MiB, MiB):
                    assert await reader.read(offset, 10) == data[offset : offset + 10]
        await trio.testing.wait_all_tasks_blocked()
        assert cache._filling == {blobs[0][0]}
        client.gate.set()
        await until_complete(cache, blobs[0][0])
        # misses go on counting: the next miss of another blob starts its fill now
        sha, data = blobs[1]
        async with await cache.open(sha, size) as reader:
            assert await reader.read(3 * MiB, 10) == data[3 * MiB : 3 * MiB + 10]
        await until_complete(cache, sha)


async def test_random_fill_counts_misses_over_opens_and_ends_with_the_cache(
    tmp_path: Path,
) -> None:
    """A loader that opens the file for each sample still triggers the fill; the fill
    outlives those opens (it pins the blob) and stops when the cache closes."""
    client = TrackingClient()
    size = 32 * MiB
    sha, data = make_blob(client, size, 15)
    tuning = CacheTuning(timeout=5.0, random_fill_after=3, request_bytes=MiB)
    with trio.fail_after(10):
        async with BlobCache(tmp_path, client, tuning=tuning) as cache:
            # Requests longer than a block (the fill's pieces) stall after two blocks.
            client.gate, client.gate_after = trio.Event(), 2 * BLOCK_SIZE
            for offset in (20 * MiB, 3 * MiB, 27 * MiB):
                async with await cache.open(sha, size) as reader:
                    assert await reader.read(offset, 4096) == data[offset : offset + 4096]
            await trio.testing.wait_all_tasks_blocked()
            assert client.active == tuning.parallel_requests  # filling, with no reader open
            assert cache.prune(0) < size  # and the blob is pinned meanwhile
        # leaving the cache cancelled the fill at once
    assert client.active == 0
    assert client.bytes_served < size // 4
    assert not CacheLayout(tmp_path).complete(sha).exists()


async def test_sequential_read_reads_ahead_in_parallel(tmp_path: Path) -> None:
    client = TrackingClient()
    size = 200 * MiB + 5
    sha, data = make_blob(client, size, 3)
    async with BlobCache(tmp_path, client) as cache:
        async with await cache.open(sha, size) as reader:
            for i in range(4):
                assert await reader.read(i * MiB, MiB) == data[i * MiB : (i + 1) * MiB]
            await trio.testing.wait_all_tasks_blocked()
            assert client.bytes_served > 8 * MiB  # well ahead of the 4 MiB asked
            assert await read_all(reader, size) == data
            await trio.testing.wait_all_tasks_blocked()
        assert client.bytes_served == size  # every byte once, none twice
        assert client.max_active >= 2  # read-ahead requests overlapped
        assert max(length for _, length in client.ranges) >= 4 * MiB  # large requests
        assert len(client.ranges) < size // MiB // 2
        await until_complete(cache, sha)  # completed and verified in the background
        assert cache.stats().complete_bytes == size


async def test_read_streams_before_the_request_ends(tmp_path: Path) -> None:
    """A read waiting for block k returns once block k is in, not when the 8 MiB request ends."""
    client = TrackingClient()
    size = 32 * MiB
    sha, data = make_blob(client, size, 4)
    client.gate = trio.Event()
    client.gate_after = 2 * BLOCK_SIZE
    tuning = CacheTuning(request_bytes=8 * MiB)  # more runs than requests at once
    async with BlobCache(tmp_path, client, tuning=tuning) as cache:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cache.fetch, sha, size)
            await trio.testing.wait_all_tasks_blocked()
            assert client.active >= 1  # the fetch's requests are held at the gate
            async with await cache.open(sha, size) as reader:
                with trio.fail_after(10):
                    got = await reader.read(BLOCK_SIZE + 10, 1000)
                assert got == data[BLOCK_SIZE + 10 : BLOCK_SIZE + 1010]
                assert not client.gate.is_set()
            client.gate.set()
        assert client.bytes_served == size
        assert cache.layout.complete(sha).read_bytes() == data


async def test_reader_is_not_queued_behind_a_whole_blob_fetch(tmp_path: Path) -> None:
    """fetch() claims a run only when it starts it, so a reader of a later region fetches it."""
    client = TrackingClient()
    size = 64 * MiB
    sha, data = make_blob(client, size, 16)
    client.gate = trio.Event()
    client.gate_after = 2 * BLOCK_SIZE
    tuning = CacheTuning(request_bytes=8 * MiB)  # more runs than requests at once
    async with BlobCache(tmp_path, client, tuning=tuning) as cache:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cache.fetch, sha, size)
            await trio.testing.wait_all_tasks_blocked()
            assert client.active == cache.tuning.parallel_requests
            async with await cache.open(sha, size) as reader:
                with trio.fail_after(10):
                    assert await reader.read(size - 100, 100) == data[-100:]
            client.gate.set()
        assert cache.layout.complete(sha).read_bytes() == data
        assert client.bytes_served == size


async def test_concurrent_readers_in_one_process_fetch_once(tmp_path: Path) -> None:
    client = TrackingClient()
    size = 24 * MiB + 999
    sha, data = make_blob(client, size, 5)
    results: list[bool] = []
    async with BlobCache(tmp_path, client) as cache:

        async def reader_task(seed: int) -> None:
            rng = random.Random(seed)
            async with await cache.open(sha, size) as reader:
                for _ in range(60):
                    off = rng.randrange(0, size)
                    n = rng.choice([1, 4096, 300_000, 2 * MiB])
                    if await reader.read(off, n) != data[off : off + n]:
                        results.append(False)
                        return
            results.append(True)

        async with trio.open_nursery() as nursery:
            for seed in range(6):
                nursery.start_soon(reader_task, seed)
            nursery.start_soon(cache.fetch, sha, size)
        assert results == [True] * 6
        assert client.bytes_served == size


async def test_wrong_bytes_from_source_are_retried_once(tmp_path: Path) -> None:
    client = TrackingClient()
    size = 3 * MiB
    sha, data = make_blob(client, size, 6)
    client.corrupt_requests = 1
    async with BlobCache(tmp_path, client) as cache:
        path = await cache.fetch(sha, size)
        assert path.read_bytes() == data


async def test_source_that_keeps_corrupting_raises_integrity_error(tmp_path: Path) -> None:
    inner = TrackingClient()
    size = 2 * MiB + 3
    sha, data = make_blob(inner, size, 7)
    faulty = FaultyClient(inner)
    faulty.corrupt = True
    async with BlobCache(tmp_path, faulty, tuning=FAST) as cache:
        async with await cache.open(sha, size) as reader:
            with pytest.raises(IntegrityError):
                await reader.read(MiB, 10)
            assert reader.cached_bytes() == 0  # nothing unverified was marked present
        with pytest.raises(IntegrityError):
            await cache.fetch(sha, size)
        faulty.corrupt = False
        assert (await cache.fetch(sha, size)).read_bytes() == data


async def test_small_blob_with_wrong_bytes_never_reaches_the_reader(tmp_path: Path) -> None:
    inner = TrackingClient()
    sha, _ = make_blob(inner, 1000, 8)
    faulty = FaultyClient(inner)
    faulty.corrupt = True
    async with BlobCache(tmp_path, faulty) as cache, await cache.open(sha, 1000) as reader:
        with pytest.raises(IntegrityError):
            await reader.read(0, 1000)


def _flip(path: Path, offset: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        byte = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([byte[0] ^ 0x55]), offset)
    finally:
        os.close(fd)


async def test_damage_at_rest_in_partial_blob_is_refetched(tmp_path: Path) -> None:
    client = TrackingClient()
    size = 16 * MiB
    sha, data = make_blob(client, size, 9)
    async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
        await reader.read(5 * MiB, MiB)
        await trio.testing.wait_all_tasks_blocked()
    assert not CacheLayout(tmp_path).complete(sha).exists()
    _flip(CacheLayout(tmp_path).partial_data(sha), 5 * MiB + 3 * BLOCK_SIZE + 17)
    before = client.bytes_served
    async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
        assert await reader.read(5 * MiB, MiB) == data[5 * MiB : 6 * MiB]
        assert client.bytes_served - before == BLOCK_SIZE  # just the damaged block


async def test_damage_at_rest_in_complete_blob_is_refetched(tmp_path: Path) -> None:
    client = TrackingClient()
    size = 10 * MiB + 1
    sha, data = make_blob(client, size, 10)
    async with BlobCache(tmp_path, client) as cache:
        path = await cache.fetch(sha, size)
    _flip(path, 7 * MiB + 5)
    before = client.bytes_served
    async with BlobCache(tmp_path, client) as cache:
        async with await cache.open(sha, size) as reader:
            assert await reader.read(7 * MiB, 100) == data[7 * MiB : 7 * MiB + 100]
            assert client.bytes_served - before == BLOCK_SIZE
            assert await read_all(reader, size) == data
        path = await cache.fetch(sha, size)
        assert path.read_bytes() == data
        assert client.bytes_served - before == BLOCK_SIZE


async def test_warm_reads_check_and_answer_in_one_read(tmp_path: Path) -> None:
    """A complete blob's first reads in a process check each block and answer from the same
    bytes: exact for aligned and unaligned ranges, a damaged block still refetched."""
    client = TrackingClient()
    size = 6 * MiB + 777
    sha, data = make_blob(client, size, 12)
    async with BlobCache(tmp_path, client) as cache:
        path = await cache.fetch(sha, size)
    _flip(path, 3 * MiB + BLOCK_SIZE + 9)  # inside the second block of the 4th MiB
    before = client.bytes_served
    async with BlobCache(tmp_path, client) as cache:
        async with await cache.open(sha, size) as reader:
            assert await reader.read(BLOCK_SIZE - 5, 10) == data[BLOCK_SIZE - 5 : BLOCK_SIZE + 5]
            assert client.bytes_served == before  # clean blocks: nothing fetched
            assert await read_all(reader, size) == data  # 1 MiB reads, one of them damaged
            assert client.bytes_served - before == BLOCK_SIZE
        assert (await cache.fetch(sha, size)).read_bytes() == data


async def test_fetch_detects_damage_in_complete_blob(tmp_path: Path) -> None:
    client = TrackingClient()
    size = 6 * MiB
    sha, _ = make_blob(client, size, 11)
    async with BlobCache(tmp_path, client) as cache:
        path = await cache.fetch(sha, size)
    _flip(path, 123)
    async with BlobCache(tmp_path, client) as cache:
        path = await cache.fetch(sha, size)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha


async def test_restart_offline_reads_what_was_cached(tmp_path: Path) -> None:
    inner = TrackingClient()
    full_sha, full = make_blob(inner, 9 * MiB, 12)
    part_sha, part = make_blob(inner, 9 * MiB, 13)
    async with BlobCache(tmp_path, inner) as cache:
        await cache.fetch(full_sha, len(full))
        async with await cache.open(part_sha, len(part)) as reader:
            await reader.read(3 * MiB + 5, 10)  # a random read: block 24 only
    faulty = FaultyClient(inner)
    faulty.down = True
    async with BlobCache(tmp_path, faulty, tuning=FAST) as cache:
        assert cache.cached_bytes(full_sha, len(full)) == len(full)
        assert cache.cached_bytes(part_sha, len(part)) == BLOCK_SIZE
        assert (await cache.fetch(full_sha, len(full))).read_bytes() == full
        async with await cache.open(full_sha, len(full)) as reader:
            assert await read_all(reader, len(full)) == full
        async with await cache.open(part_sha, len(part)) as reader:
            assert await reader.read(3 * MiB, 100) == part[3 * MiB : 3 * MiB + 100]
            with pytest.raises(Unavailable):
                await reader.read(0, 100)
        with pytest.raises(Unavailable):
            await cache.fetch(part_sha, len(part))


async def test_stalled_source_fails_within_the_timeout(tmp_path: Path) -> None:
    inner = TrackingClient()
    sha, _ = make_blob(inner, 4 * MiB, 14)
    faulty = FaultyClient(inner)
    faulty.stall = True
    async with BlobCache(tmp_path, faulty, tuning=CacheTuning(timeout=0.3)) as cache:
        async with await cache.open(sha, 4 * MiB) as reader:
            with trio.fail_after(20), pytest.raises(Unavailable):
                await reader.read(0, 10)
        small_sha, small = make_blob(inner, 100, 15)
        async with await cache.open(small_sha, len(small)) as reader:  # no digest request
            with trio.fail_after(20), pytest.raises(Unavailable):
                await reader.read(0, 10)


async def test_eviction_keeps_the_limit_and_lru_order(tmp_path: Path) -> None:
    client = TrackingClient()
    blobs = [make_blob(client, MiB, 100 + i) for i in range(8)]
    limit = 3 * MiB + MiB // 2
    async with BlobCache(tmp_path, client, max_bytes=limit) as cache:
        for sha, data in blobs[:3]:
            await cache.fetch(sha, len(data))
        # use blob 0 again: blob 1 is now the least recently used
        async with await cache.open(blobs[0][0], MiB) as reader:
            await reader.read(0, 10)
        await cache.fetch(blobs[3][0], MiB)
        stats = cache.stats()
        assert stats.complete_bytes + stats.partial_bytes <= limit
        assert cache.cached_bytes(blobs[1][0], MiB) == 0
        assert cache.cached_bytes(blobs[0][0], MiB) == MiB
        assert cache.cached_bytes(blobs[3][0], MiB) == MiB
        for sha, data in blobs[4:]:
            await cache.fetch(sha, len(data))
            stats = cache.stats()
            assert stats.complete_bytes + stats.partial_bytes <= limit
            assert stats.limit_bytes == limit


async def test_open_blobs_are_never_evicted(tmp_path: Path) -> None:
    client = TrackingClient()
    pinned_sha, pinned = make_blob(client, 2 * MiB, 200)
    others = [make_blob(client, MiB, 201 + i) for i in range(6)]
    async with BlobCache(tmp_path, client, max_bytes=3 * MiB) as cache:
        reader = await cache.open(pinned_sha, len(pinned))
        await reader.read(0, 10)  # partial: a couple of blocks
        for sha, data in others:
            await cache.fetch(sha, len(data))
        assert cache.cached_bytes(pinned_sha, len(pinned)) > 0
        assert cache.prune(0) > 0
        assert cache.cached_bytes(pinned_sha, len(pinned)) > 0
        assert await read_all(reader, len(pinned)) == pinned
        await reader.aclose()
        await until_complete(cache, pinned_sha)
        cache.prune(0)
        stats = cache.stats()
        assert stats.complete_blobs == stats.partial_blobs == 0


async def test_insert_file_adds_a_complete_blob(tmp_path: Path) -> None:
    client = TrackingClient()
    src = tmp_path / "src.bin"
    data = random.Random(300).randbytes(3 * MiB + 7)
    src.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    async with BlobCache(tmp_path / "cache", client) as cache:
        with pytest.raises(IntegrityError):
            await cache.insert_file("0" * 64, src)
        assert not any((tmp_path / "cache" / "v1" / "tmp").iterdir())
        path = await cache.insert_file(sha, src)
        assert path.read_bytes() == data
        async with await cache.open(sha, len(data)) as reader:
            assert await read_all(reader, len(data)) == data  # verified per block, offline
        assert client.requests == 0


async def test_bad_arguments(tmp_path: Path) -> None:
    client = TrackingClient()
    sha, _ = make_blob(client, 10, 400)
    async with BlobCache(tmp_path, client) as cache:
        with pytest.raises(InvalidInput):
            await cache.open("not-a-sha", 10)
        with pytest.raises(InvalidInput):
            await cache.open(sha, -1)
        with pytest.raises(InvalidInput):
            async with BlobCache(tmp_path, client):
                pass  # one BlobCache per root per process
        reader = await cache.open(sha, 10)
        await reader.read(0, 10)  # a small blob is fetched (and its size known) on first read
        with pytest.raises(InvalidInput):
            await cache.open(sha, 11)
        with pytest.raises(InvalidInput):
            await reader.read(-1, 5)
        await reader.aclose()
        with pytest.raises(InvalidInput):
            await reader.read(0, 5)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "tiny", "4m") as mnt:
        yield mnt


async def test_disk_full_raises_storage_full_and_marks_nothing_false(
    tiny_fs: Path,
) -> None:
    from artfs.errors import StorageFull

    client = TrackingClient()
    size = 8 * MiB
    sha, data = make_blob(client, size, 500)
    async with BlobCache(tiny_fs, client) as cache:
        with pytest.raises(StorageFull):
            await cache.fetch(sha, size)
        layout = cache.layout
        flags = layout.partial_map(sha).read_bytes()
        stored = layout.partial_data(sha).read_bytes()
        assert 0 < flags.count(1) < len(flags)
        for k, flag in enumerate(flags):
            if flag == 1:
                lo, hi = block_bounds(k, size)
                assert stored[lo:hi] == data[lo:hi]
        # a reader of the cached part still works; the rest keeps failing cleanly
        async with await cache.open(sha, size) as reader:
            k = flags.index(1)
            lo, hi = block_bounds(k, size)
            assert await reader.read(lo, hi - lo) == data[lo:hi]
        assert cache.prune(0) > 0  # freeing space makes the cache usable again
        small_sha, small = make_blob(client, MiB, 501)
        assert (await cache.fetch(small_sha, MiB)).read_bytes() == small
