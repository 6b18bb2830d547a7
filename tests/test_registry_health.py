"""The mount's view of a hung registry (issue 10, item 7): the back-off state, and the service
serving what it knows at once while refreshes and probes run in its nursery.

Driven directly (no kernel) over the in-memory registry twin behind the fault injector; the
end-to-end test with a SIGSTOPped server is tests/test_hung_registry.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from artfs.client.memory import FaultyClient, MemoryRegistryClient
from artfs.errors import Unavailable
from artfs.fs.health import RegistryHealth
from artfs.fs.inodes import ROOT_INODE
from artfs.fs.service import ArtfsFS
from artfs.fs.testing import MemoryBlobCache
from tests.test_fs_service import TTL, Clock, cat, listdir, options, walk

STALE_AFTER = 0.3
META_TIMEOUT = 1.0


# --- the pure state ---------------------------------------------------------------------------
def test_backoff_grows_to_its_cap_and_an_answer_resets_it() -> None:
    clock = Clock(100.0)
    health = RegistryHealth(clock, first_backoff=1.0, max_backoff=10.0)
    assert health.up and health.backoff() == 0.0
    waits = []
    for _ in range(6):
        health.failed()
        waits.append(health.probe_in())
    assert not health.up
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    clock.now += 4.0
    assert health.probe_in() == 6.0
    assert "has not answered for 4 s" in health.describe()
    clock.now += 7.0
    assert health.probe_in() == 0.0  # due
    health.answered()
    assert health.up and health.failures == 0 and health.backoff() == 0.0
    health.failed()
    assert health.probe_in() == 1.0  # starts over
    assert "has not answered for 0 s" in health.describe()
    health.answered()
    health.failed(started=clock.now - 1)  # sent before the last answer: says nothing new
    assert health.up
    health.failed(started=clock.now)
    assert not health.up


def test_backoff_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        RegistryHealth(Clock(), first_backoff=0.0)
    with pytest.raises(ValueError):
        RegistryHealth(Clock(), first_backoff=5.0, max_backoff=1.0)


# --- the service ------------------------------------------------------------------------------
class CountingClient(FaultyClient):
    """The fault injector, counting the calls that reached it."""

    def __init__(self, inner: MemoryRegistryClient) -> None:
        super().__init__(inner)
        self.calls = 0
        self.hold: trio.Event | None = None  # calls wait for it (a registry that answers late)

    async def _gate(self) -> None:
        self.calls += 1
        if self.hold is not None:
            await self.hold.wait()
        await super()._gate()


@dataclass
class Env:
    fs: ArtfsFS
    registry: MemoryRegistryClient
    client: CountingClient
    clock: Clock


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    registry = MemoryRegistryClient()
    client = CountingClient(registry)
    clock = Clock()
    cache = MemoryBlobCache(client, tmp_path / "cache")
    opts = options(tmp_path, stale_after=STALE_AFTER, meta_timeout=META_TIMEOUT)
    yield Env(ArtfsFS(client, cache, opts, clock=clock), registry, client, clock)


async def timed(fn: object) -> float:
    start = trio.current_time()
    await fn  # type: ignore[misc]
    return trio.current_time() - start


async def test_a_hung_registry_is_waited_for_once_then_known_data_is_served_at_once(
    env: Env,
) -> None:
    env.registry.publish("p", "a", {"f": b"cached"})
    env.registry.publish("p", "b", {"g": b"never opened"})
    fs = env.fs
    assert await cat(fs, (await walk(fs, "p/a/v0/f")).ino) == b"cached"
    await walk(fs, "p/b")  # listed, its version never opened

    async with fs.running():
        env.client.stall = True
        env.clock.now += TTL * 2  # every listing is stale
        # the first stale listing waits STALE_AFTER for its refresh, then the registry is down
        took = await timed(listdir(fs, ROOT_INODE))
        assert STALE_AFTER * 0.9 <= took < STALE_AFTER + 0.5
        assert not fs.listings.health.up
        calls = env.client.calls
        for _ in range(3):
            env.clock.now += TTL * 2
            took = await timed(cat(fs, (await walk(fs, "p/a/latest/f")).ino))
            assert took < STALE_AFTER * 0.8  # no wait on the registry
            assert set(await listdir(fs, (await walk(fs, "p/a")).ino)) == {"v0", "latest"}
            assert await fs.readlink((await walk(fs, "p/a/latest")).ino) == "v0"
        # metadata never fetched fails at once, cleanly
        with trio.fail_after(0.5), pytest.raises(Unavailable, match="has not answered"):
            await walk(fs, "p/b/v0/g")
        assert env.client.calls <= calls + 1  # at most the probe: nobody waits on the registry

        # the registry answers again: the probe notices, new versions show up
        env.registry.publish("p", "a", {"f": b"new"})
        env.client.stall = False
        env.clock.now += 20  # the probe's back-off has passed
        with trio.fail_after(15):
            while not fs.listings.health.up:
                await trio.sleep(0.05)
        await trio.sleep(META_TIMEOUT)  # the refreshes sent while it hung have timed out
        assert fs.listings.health.up  # (and did not put it down again)
        env.clock.now += TTL * 2
        assert set(await listdir(fs, (await walk(fs, "p/a")).ino)) == {"v0", "v1", "latest"}
        assert await cat(fs, (await walk(fs, "p/a/latest/f")).ino) == b"new"
        assert await cat(fs, (await walk(fs, "p/b/v0/g")).ino) == b"never opened"


async def test_a_refresh_that_answers_late_still_applies(env: Env) -> None:
    """Stale-while-revalidate: the caller got the old listing, the refresh lands later."""
    env.registry.publish("p", "a", {"f": b"x"})
    fs = env.fs
    assert set(await listdir(fs, ROOT_INODE)) == {"p"}
    env.registry.publish("q", "b", {"g": b"y"})
    async with fs.running():
        await fs.listings.warmed.wait()  # (its listings are fresh: the test's clock stands still)
        env.client.hold = trio.Event()
        env.clock.now += TTL * 2
        took = await timed(listdir(fs, ROOT_INODE))
        assert set(await listdir(fs, ROOT_INODE)) == {"p"}  # served stale, at once
        assert took < STALE_AFTER + 0.5
        calls = env.client.calls
        env.client.hold.set()  # the registry answers the refresh already sent
        with trio.fail_after(5):
            while not fs.listings.health.up:
                await trio.sleep(0.01)
        assert set(await listdir(fs, ROOT_INODE)) == {"p", "q"}  # applied
        assert env.client.calls == calls  # by the refresh sent before, no new call


async def test_without_a_nursery_the_back_off_still_holds(env: Env) -> None:
    """Driven without ``running`` (no background tasks): a failure backs off all the same, and
    the first call after the back-off is the probe."""
    env.registry.publish("p", "a", {"f": b"x"})
    fs = env.fs
    await walk(fs, "p/a/v0/f")
    env.client.down = True
    env.clock.now += TTL * 2
    assert set(await listdir(fs, ROOT_INODE)) == {"p"}  # one failed call, then known data
    calls = env.client.calls
    for _ in range(3):
        assert set(await listdir(fs, (await walk(fs, "p/a")).ino)) == {"v0", "latest"}
        env.clock.now += 0.2  # within the first back-off (1 s)
    assert env.client.calls == calls  # nobody asked the registry meanwhile
    env.client.down = False
    env.registry.publish("p", "a", {"f": b"y"})
    env.clock.now += 1.0
    assert set(await listdir(fs, (await walk(fs, "p/a")).ino)) == {"v0", "v1", "latest"}
    assert fs.listings.health.up


async def test_the_mount_lists_a_few_projects_as_it_starts(env: Env) -> None:
    """Warm-up (issue 9, first byte): the root and, with at most ``WARM_PROJECTS`` projects,
    each project's listing are fetched as the mount starts, so the first path a job opens
    waits for neither; with more projects only the root (no guess which)."""
    for project in ("p", "q"):
        env.registry.publish(project, "a", {"f": b"x"})
    fs = env.fs
    async with fs.running():
        await fs.listings.warmed.wait()
        calls = env.client.calls
        assert set(await listdir(fs, (await walk(fs, "q/a")).ino)) == {"v0", "latest"}
        assert env.client.calls == calls


async def test_the_warm_up_lists_no_project_of_a_bigger_registry(tmp_path: Path) -> None:
    from artfs.fs.listings import WARM_PROJECTS

    registry = MemoryRegistryClient()
    for i in range(WARM_PROJECTS + 1):
        registry.publish(f"p{i:02d}", "a", {"f": b"x"})
    client = CountingClient(registry)
    fs = ArtfsFS(client, MemoryBlobCache(client, tmp_path / "cache"), options(tmp_path))
    async with fs.running():
        await fs.listings.warmed.wait()
        calls = client.calls
        assert len(await listdir(fs, ROOT_INODE)) == WARM_PROJECTS + 1  # the root: listed
        assert client.calls == calls
        await walk(fs, "p00/a")
        assert client.calls == calls + 1  # its project: listed now


class Preparing(MemoryRegistryClient):
    """Records ``prepare_read`` calls (a presigned client's locate ahead of reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.prepared: list[str] = []

    async def prepare_read(self, sha256: str) -> None:
        self.prepared.append(sha256)


async def test_a_small_directory_looked_into_has_its_cold_blobs_located_once(
    tmp_path: Path,
) -> None:
    """A directory of a few files (a checkpoint) that some lookup enters has its blobs'
    locations asked for in one request, while the lookup is answered and the file opened;
    a big directory only hints them (the next locate carries them), a cached one asks
    nothing, and the same directory asks again only after a minute."""
    from artfs.fs.service import _LOCATE_AHEAD

    registry = Preparing()
    registry.publish("p", "ckpt", {"model.bin": b"m" * 5000, "cfg.json": b"{}", "tok.txt": b"t"})
    registry.publish("p", "data", {f"f{i:03d}": bytes([i]) * 10 for i in range(_LOCATE_AHEAD + 1)})
    clock = Clock()
    cache = MemoryBlobCache(registry, tmp_path / "cache")
    fs = ArtfsFS(registry, cache, options(tmp_path), clock=clock)
    async with fs.running():
        await fs.listings.warmed.wait()
        await walk(fs, "p/ckpt/v0/model.bin")
        await trio.testing.wait_all_tasks_blocked()
        assert len(registry.prepared) == 1  # one request, carrying the others as hints
        assert await cat(fs, (await walk(fs, "p/ckpt/v0/cfg.json")).ino) == b"{}"
        await walk(fs, "p/data/v0/f000")
        await trio.testing.wait_all_tasks_blocked()
        assert len(registry.prepared) == 1  # 17 files: hinted only
        for name in ("model.bin", "tok.txt"):
            await cat(fs, (await walk(fs, f"p/ckpt/v0/{name}")).ino)
        clock.now += 61  # the directory is hinted (and located) again a minute later...
        await walk(fs, "p/ckpt/v0/model.bin")
        await trio.testing.wait_all_tasks_blocked()
        assert len(registry.prepared) == 1  # ... but all its blobs are cached now
