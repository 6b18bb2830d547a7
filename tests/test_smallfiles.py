"""Many small files, cold: the cache's one-block fast path and batched locates (docs/design-smallfiles.md)."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import httpx
import pytest
import trio

from artfs.cache import BlobCache, CacheTuning
from artfs.client.http import HttpRegistryClient
from artfs.client.memory import FaultyClient, MemoryRegistryClient
from artfs.errors import IntegrityError, InvalidInput
from artfs.fs.inodes import ROOT_INODE
from artfs.fs.options import MountOptions
from artfs.fs.service import ArtfsFS
from artfs.hashing import BLOCK_SIZE

from .conftest_server import RunningServer
from .test_api import publish

TUNING = CacheTuning(timeout=5.0)


def blob(client: MemoryRegistryClient, size: int, seed: int) -> tuple[str, bytes]:
    data = random.Random(seed).randbytes(size)
    return client.add_blob(data), data


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


@pytest.mark.parametrize("size", [1, 4095, BLOCK_SIZE - 1, BLOCK_SIZE])
async def test_small_blob_exact_bytes_one_request_straight_to_complete(
    tmp_path: Path, size: int
) -> None:
    client = MemoryRegistryClient()
    sha, data = blob(client, size, size)
    async with BlobCache(tmp_path, client, tuning=TUNING) as cache:
        reader = await cache.open(sha, size)
        assert client.requests == 0  # opening fetches nothing: the first read does
        assert await reader.read(0, BLOCK_SIZE) == data
        assert await reader.read(size // 2, 10) == data[size // 2 : size // 2 + 10]
        await reader.aclose()
        assert client.requests == 1  # one ranged read, no block-digest request
        complete = cache.layout.complete(sha)
        assert complete.read_bytes() == data
        assert stat.S_IMODE(complete.stat().st_mode) == 0o444
        assert files_under(cache.layout.partial_dir) == []  # no partial data or map
        assert files_under(cache.layout.tmp_dir) == []
        assert cache.cached_bytes(sha, size) == size


async def test_empty_blob_fetch(tmp_path: Path) -> None:
    client = MemoryRegistryClient()
    sha, _ = blob(client, 0, 1)
    async with BlobCache(tmp_path, client, tuning=TUNING) as cache:
        path = await cache.fetch(sha, 0)
        assert path.read_bytes() == b""


async def test_concurrent_openers_share_one_fetch(tmp_path: Path) -> None:
    client = MemoryRegistryClient()
    sha, data = blob(client, 3000, 2)
    got: list[bytes] = []
    async with BlobCache(tmp_path, client, tuning=TUNING) as cache:

        async def reader_task() -> None:
            async with await cache.open(sha, len(data)) as reader:
                got.append(await reader.read(0, 4096))

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(reader_task)
        progress: list[int] = []
        await cache.fetch(sha, len(data), progress=progress.append)
    assert got == [data] * 8
    assert client.requests == 1


async def test_fetch_of_a_small_blob_reports_progress(tmp_path: Path) -> None:
    client = MemoryRegistryClient()
    sha, data = blob(client, 5000, 3)
    progress: list[int] = []
    async with BlobCache(tmp_path, client, tuning=TUNING) as cache:
        path = await cache.fetch(sha, len(data), progress=progress.append)
        assert path.read_bytes() == data
    assert sum(progress) == len(data)


async def test_corrupt_source_raises_and_caches_nothing(tmp_path: Path) -> None:
    inner = MemoryRegistryClient()
    sha, data = blob(inner, 2000, 4)
    faulty = FaultyClient(inner)
    faulty.corrupt = True
    async with BlobCache(tmp_path, faulty, tuning=TUNING) as cache:
        async with await cache.open(sha, len(data)) as reader:
            with pytest.raises(IntegrityError):
                await reader.read(0, 2000)
        # The bad copy was fetched once more before giving up, then reported (the registry
        # re-checked its stored blob, found it intact here: the damage was in transit).
        assert inner.requests == 3 and inner.reports == [sha]
        assert await inner.missing_blobs([sha]) == set()
        assert not cache.layout.complete(sha).exists()
        assert files_under(cache.layout.partial_dir) == []
        assert files_under(cache.layout.tmp_dir) == []
        assert cache.cached_bytes(sha, len(data)) == 0
        faulty.corrupt = False  # the source heals: the next read works
        async with await cache.open(sha, len(data)) as reader:
            assert await reader.read(0, 2000) == data


async def test_open_small_blob_is_pinned_against_eviction(tmp_path: Path) -> None:
    client = MemoryRegistryClient()
    (sha, data), (other, other_data) = blob(client, 4000, 5), blob(client, 4000, 6)
    async with BlobCache(tmp_path, client, tuning=TUNING) as cache:
        reader = await cache.open(sha, len(data))
        assert await reader.read(0, 4000) == data
        await cache.fetch(other, len(other_data))
        cache.prune(0)
        assert cache.cached_bytes(sha, len(data)) == len(data)  # open: kept
        assert cache.cached_bytes(other, len(other_data)) == 0  # closed: evicted
        assert await reader.read(0, 4000) == data
        await reader.aclose()
        cache.prune(0)
        assert cache.cached_bytes(sha, len(data)) == 0


async def test_small_blob_damaged_at_rest_is_refetched(tmp_path: Path) -> None:
    client = MemoryRegistryClient()
    sha, data = blob(client, 3000, 7)
    async with BlobCache(tmp_path, client, tuning=TUNING) as cache:
        path = await cache.fetch(sha, len(data))
    os.chmod(path, 0o644)
    damaged = bytearray(data)
    damaged[100] ^= 0xFF
    path.write_bytes(bytes(damaged))
    async with (
        BlobCache(tmp_path, client, tuning=TUNING) as cache,
        await cache.open(sha, len(data)) as reader,  # complete: opened at once
    ):
        assert await reader.read(0, 4096) == data  # checked on first read, refetched
    assert client.requests == 2


async def test_reader_closed_before_reading_fetches_nothing(tmp_path: Path) -> None:
    client = MemoryRegistryClient()
    sha, data = blob(client, 100, 8)
    async with BlobCache(tmp_path, client, tuning=TUNING) as cache:
        reader = await cache.open(sha, len(data))
        await reader.aclose()
        with pytest.raises(InvalidInput):
            await reader.read(0, 10)
    assert client.requests == 0


# --- batched locates through the mount's service ---------------------------------------------


async def _open_read_all(fs: ArtfsFS, dir_ino: int, names: list[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name in names:
        attr = await fs.lookup(dir_ino, name)
        opened = await fs.open(attr.ino, os.O_RDONLY)
        try:
            out[name] = await fs.read(opened.fh, 0, 1 << 20)
        finally:
            await fs.release(opened.fh)
    return out


async def test_listing_then_reading_small_files_costs_few_locates(
    registry_server: RunningServer, tmp_path: Path
) -> None:
    files = {f"d/f{i:03d}.bin": os.urandom(100 + i) for i in range(120)}
    project = f"small{os.getpid()}{random.randrange(1 << 30)}"
    client = HttpRegistryClient(registry_server.url, timeout=10.0)
    try:
        await publish(client, tmp_path, project, files)
        options = MountOptions(meta_root=tmp_path / "meta", source=registry_server.url)
        async with BlobCache(tmp_path / "cache", client, tuning=TUNING) as cache:
            fs = ArtfsFS(client, cache, options)
            ino = ROOT_INODE
            for part in (project, "data", "v0", "d"):
                ino = (await fs.lookup(ino, part)).ino
            fh = await fs.opendir(ino)  # `ls`: the files' blobs are hinted, nothing requested
            names = [name for name, _, _ in fs.readdir(fh, 0)]
            await fs.releasedir(fh)
            stats = registry_server.url + "/v1/stats"
            before = httpx.get(stats).json()["requests"]
            got = await _open_read_all(fs, ino, names)
            after = httpx.get(stats).json()["requests"]
            await fs.aclose()
    finally:
        await client.aclose()
    assert got == {path.split("/")[1]: data for path, data in files.items()}
    if registry_server.blob_port is None:  # presigned URLs: one locate covers the directory
        assert after - before <= 2
    else:  # a URL template: no locate at all
        assert after == before


async def test_hints_are_skipped_with_a_url_template_and_when_fresh(
    registry_server: RunningServer, tmp_path: Path
) -> None:
    client = HttpRegistryClient(registry_server.url, timeout=10.0)
    try:
        digest = await _upload(client, tmp_path, b"hinted once")
        await client.registry_id()
        client.hint_blobs([digest, "not a digest"])
        if registry_server.blob_port is not None:
            assert not client._hinted  # template: nothing to batch
            return
        assert list(client._hinted) == [digest]  # an invalid digest is dropped
        other = await _upload(client, tmp_path, b"asked for")
        await client.locate(other)  # carries the hint
        assert not client._hinted
        client.hint_blobs([digest])  # located and fresh: not hinted again
        assert not client._hinted
    finally:
        await client.aclose()


async def _upload(client: HttpRegistryClient, tmp_path: Path, data: bytes) -> str:
    from .test_api import upload

    return await upload(client, tmp_path, data)
