"""Checked once per boot: trust stamps on complete blobs (artfs/cache/trust.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from artfs.cache import BlobCache, trust
from artfs.cache.blobcache import CachedBlobReader
from artfs.cache.layout import CacheLayout
from artfs.cache.trust import Stamp
from artfs.hashing import BLOCK_SIZE

from .test_cache import MiB, TrackingClient, _flip, make_blob, read_all


def test_stamp_round_trip_and_garbage() -> None:
    st = os.stat(__file__)
    stamp = Stamp.of(st)
    assert Stamp.decode(stamp.encode()) == stamp
    assert stamp.boot == trust.boot_id() != ""
    for raw in (b"", b"a b c", b"boot 1 2 3 4 x", "é 1 2 3 4 5".encode()):
        assert Stamp.decode(raw) is None or Stamp.decode(raw) != stamp


def verified_on_open(reader: CachedBlobReader) -> bool:
    """Whether the blob came up as already checked (no block left to verify)."""
    state = reader._state
    assert state is not None
    return state.verified.find(0) < 0


async def test_a_fetched_blob_is_trusted_by_the_next_process(tmp_path: Path) -> None:
    client = TrackingClient()
    size = 5 * MiB + 3
    sha, data = make_blob(client, size, 1)
    async with BlobCache(tmp_path, client) as cache:
        await cache.fetch(sha, size)
    assert CacheLayout(tmp_path).verified(sha).exists()
    for _ in range(3):  # opening and closing (touching) keeps the stamp valid
        async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
            assert verified_on_open(reader)
            assert await read_all(reader, size) == data


async def test_a_blob_checked_at_rest_is_stamped(tmp_path: Path) -> None:
    client = TrackingClient()
    size = 3 * MiB
    sha, data = make_blob(client, size, 2)
    layout = CacheLayout(tmp_path)
    async with BlobCache(tmp_path, client) as cache:
        await cache.fetch(sha, size)
    layout.verified(sha).unlink()  # as if fetched by an older artfs
    async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
        assert not verified_on_open(reader)
        assert await reader.read(0, MiB) == data[:MiB]
        assert not layout.verified(sha).exists()  # not every block checked yet
        assert await read_all(reader, size) == data
        assert layout.verified(sha).exists()
    async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
        assert verified_on_open(reader)


async def test_a_changed_file_is_checked_again_and_repaired(tmp_path: Path) -> None:
    client = TrackingClient()
    size = 4 * MiB
    sha, data = make_blob(client, size, 3)
    async with BlobCache(tmp_path, client) as cache:
        path = await cache.fetch(sha, size)
    _flip(path, 2 * MiB + 11)  # a write moves ctime: the stamp no longer matches
    before = client.bytes_served
    async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
        assert not verified_on_open(reader)
        assert await read_all(reader, size) == data
    assert client.bytes_served - before == BLOCK_SIZE  # the damaged block, refetched
    # repaired and checked: stamped again
    async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
        assert verified_on_open(reader)
        assert await read_all(reader, size) == data


async def test_chmod_or_a_replaced_file_is_not_trusted(tmp_path: Path) -> None:
    client = TrackingClient()
    size = 2 * MiB
    sha, data = make_blob(client, size, 4)
    async with BlobCache(tmp_path, client) as cache:
        path = await cache.fetch(sha, size)
    os.chmod(path, 0o444)  # same mode, but ctime moves
    async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
        assert not verified_on_open(reader)
        assert await read_all(reader, size) == data
    copy = path.with_name("copy")
    copy.write_bytes(path.read_bytes())
    os.replace(copy, path)  # another inode with the same bytes
    async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
        assert not verified_on_open(reader)


async def test_another_boot_or_a_garbled_stamp_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = TrackingClient()
    size = 2 * MiB
    sha, _ = make_blob(client, size, 5)
    async with BlobCache(tmp_path, client) as cache:
        await cache.fetch(sha, size)
    stamp_path = CacheLayout(tmp_path).verified(sha)
    good = stamp_path.read_bytes()
    with monkeypatch.context() as m:
        m.setattr(trust, "boot_id", lambda: "another-boot")
        async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
            assert not verified_on_open(reader)
    stamp_path.write_bytes(good.replace(b" ", b"  x", 1))
    async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
        assert not verified_on_open(reader)
    with monkeypatch.context() as m:  # boot id unknown: never trusted, never stamped
        m.setattr(trust, "boot_id", lambda: "")
        stamp_path.unlink()
        async with BlobCache(tmp_path, client) as cache, await cache.open(sha, size) as reader:
            await read_all(reader, size)
        assert not stamp_path.exists()


async def test_eviction_follows_use_and_removes_the_stamp(tmp_path: Path) -> None:
    client = TrackingClient()
    blobs = [make_blob(client, 2 * MiB, 10 + k) for k in range(3)]
    layout = CacheLayout(tmp_path)
    async with BlobCache(tmp_path, client) as cache:
        for sha, data in blobs:
            await cache.fetch(sha, len(data))
        os.utime(layout.pin(blobs[0][0]), (1, 1))  # blob 0 oldest by its pin...
        os.utime(layout.pin(blobs[1][0]), (2, 2))
        for sha, _ in blobs:  # ... whatever its data file says
            os.utime(layout.complete(sha), None)
        async with await cache.open(blobs[0][0], 2 * MiB):  # opening touches the pin
            pass
        freed = cache.prune(4 * MiB)
    assert freed == 2 * MiB
    assert not layout.complete(blobs[1][0]).exists()  # the least recently used
    assert not layout.verified(blobs[1][0]).exists()
    assert layout.complete(blobs[0][0]).exists() and layout.complete(blobs[2][0]).exists()
