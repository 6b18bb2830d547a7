"""Directory read-ahead: opening a directory's files in name order prefetches the next ones."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import trio

from artfs.cache import BlobCache, CacheTuning
from artfs.client.memory import FaultyClient, MemoryRegistryClient
from artfs.errors import IntegrityError
from artfs.fs.options import MountOptions
from artfs.fs.service import ArtfsFS
from artfs.fs.siblings import SiblingReadAhead, SiblingTuning
from artfs.fs.testing import MemoryBlobCache
from artfs.hashing import BLOCK_SIZE

from .conftest_server import RunningServer
from .e2e import mounted, run_cli
from .test_fs_service import cat, walk

TUNING = CacheTuning(timeout=5.0)


def sha_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the pure walk state -------------------------------------------------------------------


def test_a_walk_from_the_first_file_grows_its_window() -> None:
    walk_state = SiblingReadAhead([10] * 100, SiblingTuning(initial=4, maximum=16))
    assert walk_state.on_open(0) == [1, 2, 3, 4]
    assert walk_state.on_open(1) == []  # 3 of 4 still ahead
    assert walk_state.on_open(2) == [5, 6, 7, 8, 9, 10]  # half used: window doubles to 8
    assert walk_state.on_open(3) == []
    got: list[int] = []
    for k in range(4, 100):
        got += walk_state.on_open(k)
    assert got == list(range(11, 100))  # every later file exactly once, none past the end
    assert walk_state.window == 16


def test_jumps_reset_and_a_later_walk_starts_again() -> None:
    walk_state = SiblingReadAhead([10] * 100, SiblingTuning(initial=4, maximum=64))
    assert walk_state.on_open(50) == []  # a first open in the middle: no guess yet
    assert walk_state.on_open(20) == []  # backwards: random
    assert walk_state.on_open(70) == []  # far forwards: random
    assert walk_state.on_open(71) == [72, 73, 74, 75]  # two in a row: a walk
    assert walk_state.on_open(74) == [76, 77, 78, 79, 80, 81, 82]  # skips of <= SLACK count
    assert walk_state.on_open(10) == []
    assert walk_state.window == 0


def test_large_files_cost_their_head_and_bytes_are_bounded() -> None:
    sizes = [0, 5, 100, 3, 0, 40, 40, 40, 40, 40]
    tuning = SiblingTuning(initial=8, maximum=8, max_bytes=100, file_max=50, head_bytes=10)
    walk_state = SiblingReadAhead(sizes, tuning)
    # empties skipped; 100 > file_max costs its head (10); at most 100 bytes per extension
    assert walk_state.on_open(0) == [1, 2, 3, 5, 6]
    assert walk_state.on_open(1) == []
    assert walk_state.on_open(3) == [7, 8]  # continues where the budget stopped it
    assert walk_state.on_open(5) == [9]


def test_zero_maximum_turns_it_off() -> None:
    walk_state = SiblingReadAhead([10] * 10, SiblingTuning(maximum=0))
    assert [walk_state.on_open(k) for k in range(5)] == [[]] * 5


# --- the mount's service over the real cache -------------------------------------------------


def small_files(n: int, prefix: str = "d") -> dict[str, bytes]:
    rng = random.Random(n)
    return {f"{prefix}/f{i:03d}.bin": rng.randbytes(rng.randrange(1, 5000)) for i in range(n)}


async def wait_cached(cache: BlobCache, blobs: list[tuple[str, int]], limit: float = 5.0) -> bool:
    with trio.move_on_after(limit):
        while not all(cache.cached_bytes(sha, size) == size for sha, size in blobs):
            await trio.sleep(0.01)
        return True
    return False


async def test_reading_in_name_order_prefetches_the_next_files(tmp_path: Path) -> None:
    registry = MemoryRegistryClient()
    files = small_files(40)
    files["d/zbig.bin"] = os.urandom(3 * BLOCK_SIZE + 7)  # several blocks: fetched whole too
    registry.publish("p", "a", files)
    options = MountOptions(meta_root=tmp_path / "meta", siblings=SiblingTuning(initial=4))
    async with BlobCache(tmp_path / "cache", registry, tuning=TUNING) as cache:
        fs = ArtfsFS(registry, cache, options)
        names = sorted(files)
        blobs = [(sha_of(files[n]), len(files[n])) for n in names]
        first = await walk(fs, "p/a/v0/" + names[0])
        assert await cat(fs, first.ino) == files[names[0]]
        assert await wait_cached(cache, blobs[1:5])  # the first window, without any open
        assert cache.cached_bytes(*blobs[8]) == 0  # and not more
        for name in names[1:]:  # the walk goes on: every file is there when it is opened
            attr = await walk(fs, "p/a/v0/" + name)
            assert await cat(fs, attr.ino, chunk=1 << 20) == files[name]
        assert await wait_cached(cache, blobs)
        before = registry.requests
        for name in names:  # all in the cache now: not a single request
            attr = await walk(fs, "p/a/v0/" + name)
            assert await cat(fs, attr.ino) == files[name]
        assert registry.requests == before
        await fs.aclose()


async def test_random_opens_prefetch_nothing(tmp_path: Path) -> None:
    registry = MemoryRegistryClient()
    files = small_files(60)
    registry.publish("p", "a", files)
    cache = MemoryBlobCache(registry, tmp_path / "cache")
    fs = ArtfsFS(registry, cache, MountOptions(meta_root=tmp_path / "meta"))
    names = sorted(files)
    for k in (30, 5, 44, 12, 59, 1):
        attr = await walk(fs, "p/a/v0/" + names[k])
        assert await cat(fs, attr.ino) == files[names[k]]
    assert cache.prefetched == []
    for k in (20, 21):  # two in a row: now it guesses, starting after the second
        await cat(fs, (await walk(fs, "p/a/v0/" + names[k])).ino)
    shas = {sha_of(files[n]): n for n in names}
    assert [shas[s] for s in cache.prefetched] == names[22 : 22 + SiblingTuning().initial]
    await fs.aclose()


async def test_a_bad_prefetch_harms_no_reader(tmp_path: Path) -> None:
    """A prefetch that fails (corrupt source) caches nothing; the file's own read then
    reports the error, and files after it still read right."""
    registry = MemoryRegistryClient()
    files = small_files(12)
    registry.publish("p", "a", files)
    client = FaultyClient(registry)
    options = MountOptions(meta_root=tmp_path / "meta", read_timeout=5.0)
    names = sorted(files)
    async with BlobCache(tmp_path / "cache", client, tuning=TUNING) as cache:
        fs = ArtfsFS(client, cache, options)
        client.corrupt = True  # the reads and every prefetch they start get bad bytes
        for name in names[:2]:
            with pytest.raises(IntegrityError):
                await cat(fs, (await walk(fs, "p/a/v0/" + name)).ino)
        await trio.sleep(0.2)
        blobs = [(sha_of(files[n]), len(files[n])) for n in names]
        assert all(cache.cached_bytes(*b) == 0 for b in blobs)
        client.corrupt = False
        for name in names:
            assert await cat(fs, (await walk(fs, "p/a/v0/" + name)).ino) == files[name]
        assert list(cache.layout.tmp_dir.iterdir()) == []
        await fs.aclose()


# --- through a real mount and a real server (both backends) ----------------------------------


def test_cat_of_a_directory_through_the_mount(
    registry_server: RunningServer, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = {f"shard-{i:04d}.bin": os.urandom(100 + 37 * i) for i in range(300)}
    for name, data in files.items():
        (src / "d").mkdir(parents=True, exist_ok=True)
        (src / "d" / name).write_bytes(data)
    project = f"walk{os.getpid()}{random.randrange(1 << 30)}"
    run_cli("put", str(src), f"{project}/shards", "--registry", registry_server.url)
    cache = tmp_path / "cache"
    with mounted(registry_server.url, tmp_path / "mnt", cache_dir=cache) as mnt:
        d = mnt / project / "shards" / "v0" / "d"
        stats = registry_server.url + "/v1/stats"
        sent_before = httpx.get(stats).json()
        out = subprocess.run(
            ["sh", "-c", 'cat "$0"/shard-000[0-2].bin | wc -c', str(d)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert int(out.stdout) == sum(len(files[f"shard-{i:04d}.bin"]) for i in range(3))
        # Three files read in order: later ones arrive without being opened.
        blobs = cache / "v1" / "blobs"
        for _ in range(200):
            held = sum(1 for p in blobs.rglob("*") if p.is_file())
            if held >= 8:
                break
            time.sleep(0.05)
        assert held >= 8
        got = subprocess.run(
            ["sh", "-c", 'for f in "$0"/*; do cat "$f"; done | sha256sum', str(d)],
            capture_output=True,
            text=True,
            check=True,
        )
        want = hashlib.sha256(b"".join(files[n] for n in sorted(files))).hexdigest()
        assert got.stdout.split()[0] == want
        after = httpx.get(stats).json()
        if registry_server.blob_port is not None:  # local store: blobs came from the data server
            assert after["blob_bytes_sent"] - sent_before["blob_bytes_sent"] == sum(
                len(v) for v in files.values()
            )


async def test_prefetch_stays_within_a_quarter_of_the_cache_limit(tmp_path: Path) -> None:
    registry = MemoryRegistryClient()
    blobs = []
    for k in range(10):
        data = random.Random(k).randbytes(300 << 10)
        blobs.append((registry.add_blob(data), len(data)))
    async with BlobCache(tmp_path, registry, max_bytes=4 << 20, tuning=TUNING) as cache:
        cache.prefetch_soon(blobs)  # queues what fits its budget, at this call
        assert await wait_cached(cache, blobs[:3])
        with trio.move_on_after(5):  # the budget is given back as each fetch ends
            while cache._soon_bytes:
                await trio.sleep(0.01)
        cached = [b for b in blobs if cache.cached_bytes(*b) == b[1]]
        assert cached == blobs[:3]  # 1 MiB of guesses under a 4 MiB limit
        cache.prefetch_soon(blobs)  # the budget is free again: the next ones
        assert await wait_cached(cache, blobs[3:6])


async def test_big_files_in_a_walk_get_their_head_prefetched(tmp_path: Path) -> None:
    registry = MemoryRegistryClient()
    files = {f"d/shard{i}.bin": random.Random(i).randbytes(3 << 20) for i in range(4)}
    registry.publish("p", "a", files)
    tuning = CacheTuning(timeout=5.0, prefetch_whole_max=1 << 20, readahead_initial=1 << 20)
    names = sorted(files)
    async with BlobCache(tmp_path / "cache", registry, tuning=tuning) as cache:
        fs = ArtfsFS(registry, cache, MountOptions(meta_root=tmp_path / "meta"))
        first = await walk(fs, "p/a/v0/" + names[0])
        opened = await fs.open(first.ino, os.O_RDONLY)
        assert await fs.read(opened.fh, 0, 4096) == files[names[0]][:4096]
        heads = [(sha_of(files[n]), len(files[n])) for n in names[1:]]

        def held(blob: tuple[str, int]) -> int:
            return cache.cached_bytes(*blob)

        with trio.move_on_after(5):
            while any(held(b) < 1 << 20 for b in heads):
                await trio.sleep(0.01)
        assert [held(b) for b in heads] == [1 << 20] * 3  # the head, not the whole file
        assert all(cache.layout.digests(sha).exists() for sha, _ in heads)
        await fs.release(opened.fh)
        before = registry.requests
        for name in names[1:]:
            attr = await walk(fs, "p/a/v0/" + name)
            handle = await fs.open(attr.ino, os.O_RDONLY)
            assert await fs.read(handle.fh, 0, 1 << 20) == files[name][: 1 << 20]
            await fs.release(handle.fh)
        assert registry.requests == before  # first reads answered from the heads
        assert await cat(fs, (await walk(fs, "p/a/v0/" + names[2])).ino, 1 << 20) == files[names[2]]
        await fs.aclose()
