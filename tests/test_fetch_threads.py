"""The cache's fetch threads (``cache/fetchpool.py``) against a small HTTP registry whose faults
the tests choose: bytes, retries, stalls, cuts, cancellation, and the block digests asked for
beside a reader's first data (one round trip)."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio

from artfs.cache import BlobCache, CacheTuning, fetchpool
from artfs.cache.fetcher import BadBlock, DigestSlot, RunAssembler
from artfs.cache.settings import default_fetch_threads
from artfs.client.http import HttpRegistryClient
from artfs.client.memory import FaultyClient, MemoryRegistryClient
from artfs.errors import IntegrityError, InvalidInput, StorageFull, Unavailable
from artfs.hashing import BLOCK_SIZE, BlobHasher

from .e2e import small_tmpfs

MiB = 1 << 20


class FakeRegistry:
    """``GET /v1``, ``GET /v1/blobs/{sha}/blocks`` and ranged ``GET /blobs/{sha}`` over
    HTTP/1.1 keep-alive, in threads, with faults to switch on."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.corrupt: dict[int, int] = {}  # block index -> bad copies still to send
        self.stall_after: int | None = None  # body bytes sent before a request hangs
        self.cut_after: int | None = None  # body bytes sent before one connection is cut
        self.gone_once = False  # answer the next data request 410
        self.blocks_delay = 0.0
        self.release = threading.Event()  # ends stalls
        self.events: list[tuple[float, str]] = []
        self.data_requests = 0
        self.connections: set[int] = set()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                registry.connections.add(id(self.connection))
                if self.path == "/v1":
                    template = f"http://127.0.0.1:{registry.port}/blobs/{{sha256}}"
                    self._send(200, json.dumps({"registry_id": "fake", "blob_url": template}))
                elif self.path.startswith("/v1/blobs/") and self.path.endswith("/blocks"):
                    registry._event("blocks start")
                    time.sleep(registry.blocks_delay)
                    sha = self.path.split("/")[3]
                    hasher = BlobHasher()
                    hasher.update(registry.blobs[sha])
                    self._send(200, hasher.block_digests(), "application/octet-stream")
                    registry._event("blocks end")
                elif self.path.startswith("/blobs/"):
                    self._range(self.path.split("/")[2])
                else:
                    self._send(404, json.dumps({"error": {"code": "not_found", "message": "?"}}))

            def do_POST(self) -> None:  # /v1/blobs/locate (a refresh asks, template or not)
                asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                blobs = {
                    sha: {"url": f"http://127.0.0.1:{registry.port}/blobs/{sha}"}
                    for sha in asked["digests"]
                    if sha in registry.blobs
                }
                self._send(200, json.dumps({"blobs": blobs}))

            def _send(self, status: int, body: str | bytes, kind: str = "application/json") -> None:
                raw = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _range(self, sha: str) -> None:
                registry.data_requests += 1
                registry._event("data start")
                if registry.gone_once:
                    registry.gone_once = False
                    self._send(410, b"gone", "text/plain")
                    return
                data = registry.blobs[sha]
                lo, hi = (int(x) for x in self.headers["Range"].split("=")[1].split("-"))
                body = bytearray(data[lo : hi + 1])
                for k in range(lo // BLOCK_SIZE, hi // BLOCK_SIZE + 1):
                    if registry.corrupt.get(k, 0) > 0:
                        registry.corrupt[k] -= 1
                        body[k * BLOCK_SIZE - lo + 7] ^= 0xFF
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {lo}-{hi}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                limit = len(body)
                stall, cut = registry.stall_after, registry.cut_after
                if cut is not None:
                    registry.cut_after = None
                    limit = min(limit, cut)
                if stall is not None:
                    limit = min(limit, stall)
                self.wfile.write(body[:limit])
                self.wfile.flush()
                if stall is not None and limit < len(body):
                    registry.release.wait(30)
                if limit < len(body):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._t0 = time.perf_counter()

    def _event(self, what: str) -> None:
        self.events.append((time.perf_counter() - self._t0, what))

    def add(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.blobs[sha] = data
        return sha

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    registry = FakeRegistry()
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


def threaded(**kw: Any) -> CacheTuning:
    return CacheTuning(
        **{"timeout": 5.0, "fetch_threads": 2, "thread_min_bytes": 0, "request_bytes": MiB, **kw}
    )


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads that ran fetch jobs."""
    names: list[str] = []
    run = fetchpool._Job.run

    def counted(self: Any, *args: Any) -> None:
        names.append(threading.current_thread().name)
        run(self, *args)

    monkeypatch.setattr(fetchpool._Job, "run", counted)
    return names


async def read_all(reader: Any, size: int, step: int = MiB) -> bytes:
    out = bytearray()
    while len(out) < size:
        piece = await reader.read(len(out), step)
        assert piece
        out += piece
    return bytes(out)


async def test_threads_fetch_verify_and_store(
    tmp_path: Path, fake: FakeRegistry, jobs: list[str]
) -> None:
    size = 9 * MiB + 1234
    data = random.Random(1).randbytes(size)
    sha = fake.add(data)
    async with (
        HttpRegistryClient(fake.url, timeout=2.0) as client,
        BlobCache(tmp_path, client, tuning=threaded()) as cache,
        await cache.open(sha, size) as reader,
    ):
        assert await read_all(reader, size) == data
        assert (await cache.fetch(sha, size)).read_bytes() == data
    assert jobs and all(name.startswith("artfs-fetch-") for name in jobs)


async def test_fetch_reports_progress_and_completes(
    tmp_path: Path, fake: FakeRegistry, jobs: list[str]
) -> None:
    size = 6 * MiB
    data = random.Random(2).randbytes(size)
    sha = fake.add(data)
    seen: list[int] = []
    async with (
        HttpRegistryClient(fake.url, timeout=2.0) as client,
        BlobCache(tmp_path, client, tuning=threaded()) as cache,
    ):
        path = await cache.fetch(sha, size, progress=seen.append)
        assert path.read_bytes() == data
    assert sum(seen) == size
    assert jobs


async def test_small_requests_stay_on_the_trio_thread(
    tmp_path: Path, fake: FakeRegistry, jobs: list[str]
) -> None:
    size = 8 * MiB
    data = random.Random(3).randbytes(size)
    sha = fake.add(data)
    async with HttpRegistryClient(fake.url, timeout=2.0) as client:
        tuning = threaded(thread_min_bytes=2 * MiB)
        async with (
            BlobCache(tmp_path, client, tuning=tuning) as cache,
            await cache.open(sha, size) as reader,
        ):
            for offset in (5 * MiB + 3, 77, 3 * MiB):
                assert await reader.read(offset, 100) == data[offset : offset + 100]
    assert jobs == []


async def test_bad_block_is_fetched_again_once(
    tmp_path: Path, fake: FakeRegistry, jobs: list[str]
) -> None:
    size = 4 * MiB
    data = random.Random(4).randbytes(size)
    sha = fake.add(data)
    fake.corrupt[13] = 1
    async with (
        HttpRegistryClient(fake.url, timeout=2.0) as client,
        BlobCache(tmp_path, client, tuning=threaded()) as cache,
    ):
        assert (await cache.fetch(sha, size)).read_bytes() == data
    assert fake.data_requests == size // MiB + 1
    assert jobs


async def test_bad_block_twice_is_an_integrity_error(
    tmp_path: Path, fake: FakeRegistry, jobs: list[str]
) -> None:
    size = 4 * MiB
    data = random.Random(5).randbytes(size)
    sha = fake.add(data)
    fake.corrupt[10] = 100  # always bad
    async with (
        HttpRegistryClient(fake.url, timeout=2.0) as client,
        BlobCache(tmp_path, client, tuning=threaded()) as cache,
        await cache.open(sha, size) as reader,
    ):
        with pytest.raises(IntegrityError, match="block 10"):
            await reader.read(0, 2 * MiB)
        # the blocks before it were stored; the bad one is not present
        assert await reader.read(0, 10 * BLOCK_SIZE) == data[: 10 * BLOCK_SIZE]
        assert reader.cached_bytes() < size
        with pytest.raises(IntegrityError):
            await cache.fetch(sha, size)
    assert jobs


async def test_a_stalled_source_is_unavailable_and_frees_the_thread(
    tmp_path: Path, fake: FakeRegistry, jobs: list[str]
) -> None:
    size = 4 * MiB
    data = random.Random(6).randbytes(size)
    sha = fake.add(data)
    fake.stall_after = 300_000
    async with (
        HttpRegistryClient(fake.url, timeout=0.5) as client,
        BlobCache(tmp_path, client, tuning=threaded(timeout=0.5)) as cache,
        await cache.open(sha, size) as reader,
    ):
        started = trio.current_time()
        with pytest.raises(Unavailable, match="no data"):
            await reader.read(0, 4 * MiB)
        assert trio.current_time() - started < 3
        assert cache._pool is not None and cache._pool._busy == 0
        fake.stall_after = None
        fake.release.set()
        assert await read_all(reader, size) == data  # the first blocks were kept
    assert jobs


async def test_a_cancelled_reader_stops_its_thread_at_once(
    tmp_path: Path, fake: FakeRegistry, jobs: list[str]
) -> None:
    size = 4 * MiB
    data = random.Random(7).randbytes(size)
    sha = fake.add(data)
    fake.stall_after = 200_000
    async with (
        HttpRegistryClient(fake.url, timeout=10.0) as client,
        BlobCache(tmp_path, client, tuning=threaded(timeout=10.0)) as cache,
        await cache.open(sha, size) as reader,
    ):
        started = time.perf_counter()
        with trio.move_on_after(0.3):
            await reader.read(0, 4 * MiB)
        assert time.perf_counter() - started < 2  # not the 10 s socket timeout
        assert cache._pool is not None and cache._pool._busy == 0
        assert not cache._states[sha].inflight  # claims given up
        fake.stall_after = None
        fake.release.set()
        assert await read_all(reader, size) == data
        closed = time.perf_counter()
    assert time.perf_counter() - closed < 2
    assert jobs


async def test_a_cut_connection_resumes(
    tmp_path: Path, fake: FakeRegistry, jobs: list[str]
) -> None:
    size = 4 * MiB
    data = random.Random(8).randbytes(size)
    sha = fake.add(data)
    fake.cut_after = 3 * BLOCK_SIZE + 1000
    async with (
        HttpRegistryClient(fake.url, timeout=2.0) as client,
        BlobCache(tmp_path, client, tuning=threaded(request_bytes=4 * MiB)) as cache,
    ):
        assert (await cache.fetch(sha, size)).read_bytes() == data
    assert fake.data_requests == 2  # the second from block 3 on
    assert len(jobs) == 2


async def test_a_gone_location_is_located_again(
    tmp_path: Path, fake: FakeRegistry, jobs: list[str]
) -> None:
    size = 3 * MiB
    data = random.Random(9).randbytes(size)
    sha = fake.add(data)
    fake.gone_once = True
    async with (
        HttpRegistryClient(fake.url, timeout=2.0) as client,
        BlobCache(tmp_path, client, tuning=threaded(request_bytes=4 * MiB)) as cache,
    ):
        assert (await cache.fetch(sha, size)).read_bytes() == data
    assert fake.data_requests == 2


async def test_first_read_asks_for_digests_beside_its_data(
    tmp_path: Path, fake: FakeRegistry
) -> None:
    """A reader's first fetch of a cold blob does not wait for the digest list before its
    data request: one round trip, the data held until the digests come."""
    size = 16 * MiB
    data = random.Random(10).randbytes(size)
    sha = fake.add(data)
    fake.blocks_delay = 0.3
    for threads, min_bytes in ((0, 0), (2, 0), (2, 2 * MiB)):
        fake.events.clear()
        cache_dir = tmp_path / f"c{threads}-{min_bytes}"
        tuning = threaded(fetch_threads=threads, thread_min_bytes=min_bytes)
        async with (
            HttpRegistryClient(fake.url, timeout=2.0) as client,
            BlobCache(cache_dir, client, tuning=tuning) as cache,
            await cache.open(sha, size) as reader,
        ):
            assert await reader.read(0, MiB) == data[:MiB]
        names = [what for _, what in fake.events]
        assert names.index("data start") < names.index("blocks end"), (threads, names)
        assert names.count("blocks start") == 1


async def test_fetch_waits_for_digests_before_its_requests(
    tmp_path: Path, fake: FakeRegistry
) -> None:
    """A whole-blob fetch (and read-ahead) asks for the digests first, as before."""
    size = 4 * MiB
    sha = fake.add(random.Random(11).randbytes(size))
    async with (
        HttpRegistryClient(fake.url, timeout=2.0) as client,
        BlobCache(tmp_path, client, tuning=threaded()) as cache,
    ):
        await cache.fetch(sha, size)
    names = [what for _, what in fake.events]
    assert names.index("blocks end") < names.index("data start")


async def test_disk_full_in_a_thread_is_storage_full(
    tmp_path: Path, fake: FakeRegistry, jobs: list[str]
) -> None:
    size = 8 * MiB
    sha = fake.add(random.Random(12).randbytes(size))
    with small_tmpfs(tmp_path / "small", "2m") as where:
        async with (
            HttpRegistryClient(fake.url, timeout=2.0) as client,
            BlobCache(where, client, tuning=threaded(request_bytes=4 * MiB)) as cache,
        ):
            with pytest.raises(StorageFull):
                await cache.fetch(sha, size)
    assert jobs


async def test_clients_without_urls_use_the_trio_path(tmp_path: Path) -> None:
    memory = MemoryRegistryClient()
    data = random.Random(13).randbytes(3 * MiB)
    sha = memory.add_blob(data)
    for client in (memory, FaultyClient(memory)):
        async with BlobCache(tmp_path / str(id(client)), client, tuning=threaded()) as cache:
            assert (await cache.fetch(sha, len(data))).read_bytes() == data
            if client is memory:
                assert cache._pool is None


async def test_faulty_http_client_keeps_its_faults(tmp_path: Path, fake: FakeRegistry) -> None:
    """FaultyClient over HTTP never hands blobs to threads, so corruption stays injected."""
    size = 3 * MiB
    sha = fake.add(random.Random(14).randbytes(size))
    async with HttpRegistryClient(fake.url, timeout=2.0) as http:
        faulty = FaultyClient(http)
        faulty.corrupt = True
        async with BlobCache(tmp_path, faulty, tuning=threaded()) as cache:
            with pytest.raises(IntegrityError):
                await cache.fetch(sha, size)


def test_fetch_threads_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARTFS_FETCH_THREADS", "0")
    assert CacheTuning().fetch_threads == 0
    monkeypatch.setenv("ARTFS_FETCH_THREADS", "3")
    assert CacheTuning().fetch_threads == 3
    assert CacheTuning(fetch_threads=5).fetch_threads == 5
    monkeypatch.setenv("ARTFS_FETCH_THREADS", "lots")
    with pytest.raises(InvalidInput):
        default_fetch_threads()
    monkeypatch.delenv("ARTFS_FETCH_THREADS")
    assert 1 <= CacheTuning().fetch_threads <= 8


def test_blocks_held_until_their_digests_come() -> None:
    data = random.Random(15).randbytes(3 * BLOCK_SIZE + 5)
    hasher = BlobHasher()
    hasher.update(data)
    digests = [hasher.block_digests()[i : i + 32] for i in range(0, 4 * 32, 32)]
    stored: dict[int, bytes] = {}
    asm = RunAssembler(0, 4, len(data), None, lambda k, b: stored.__setitem__(k, bytes(b)))
    asm.feed(data[:200_000])
    asm.feed(data[200_000:])
    asm.finish()
    assert stored == {} and not asm.done
    asm.provide(digests)
    assert asm.done and b"".join(stored[k] for k in range(4)) == data

    bad = bytearray(data)
    bad[BLOCK_SIZE + 1] ^= 1
    stored.clear()
    asm = RunAssembler(0, 4, len(data), None, lambda k, b: stored.__setitem__(k, bytes(b)))
    asm.feed(bytes(bad))
    with pytest.raises(BadBlock) as caught:
        asm.provide(digests)
    assert caught.value.index == 1 and list(stored) == [0]


async def test_digest_slot_wakes_trio_and_threads() -> None:
    slot = DigestSlot()
    got: list[object] = []

    def waiter() -> None:
        got.append(slot.wait_blocking(5.0, lambda: False))

    thread = threading.Thread(target=waiter)
    thread.start()
    async with trio.open_nursery() as nursery:

        async def trio_waiter() -> None:
            got.append(await slot.wait())

        nursery.start_soon(trio_waiter)
        await trio.sleep(0.05)
        slot.set([b"x" * 32])
    await trio.to_thread.run_sync(thread.join)
    assert got == [[b"x" * 32], [b"x" * 32]]
    aborted = DigestSlot()
    assert aborted.wait_blocking(5.0, lambda: True) is None


async def test_a_thread_drops_the_blocks_a_span_bridges(
    tmp_path: Path, fake: FakeRegistry, jobs: list[str]
) -> None:
    """A serial prefetch across blocks a reader already fetched is one threaded request whose
    bridged blocks are received and dropped, never stored twice."""
    size = 4 * MiB
    data = random.Random(16).randbytes(size)
    sha = fake.add(data)
    async with (
        HttpRegistryClient(fake.url, timeout=2.0) as client,
        BlobCache(tmp_path, client, tuning=threaded(thread_min_bytes=MiB)) as cache,
        await cache.open(sha, size) as reader,
    ):
        for k in (3, 7, 12, 20):  # (no two adjacent: that would start a read-ahead)
            offset = k * BLOCK_SIZE + 100
            assert await reader.read(offset, 10) == data[offset : offset + 10]
        assert jobs == []  # (one block each: on the trio thread)
        state = reader._state
        assert state is not None
        before = fake.data_requests
        assert await state.prefetch(0, 24, serial=True)
        assert fake.data_requests == before + 1 and len(jobs) == 1
        assert await read_all(reader, size) == data
