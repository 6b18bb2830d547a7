"""The mount's registry calls and listings: deadlines, back-off, stale-while-revalidate.

Root, project and artifact listings (and the alias links in them) may change; the mount
keeps each for ``listing_ttl`` and then asks again. How a stale listing is refreshed
depends on what the mount knows and on the registry's health (``health.py``):

* known listing, registry up: the refresh runs as a task of this object's nursery and the
  caller waits for it at most ``stale_after`` (1 s): a registry that answers in time gives
  a fresh listing as before; one that does not is marked down and the caller gets the last
  known listing at once, while the refresh carries on in the background (up to
  ``meta_timeout``) and applies its answer when it comes;
* known listing, registry down: served as it is, at once; the probe task asks the registry
  in the background with a growing back-off and puts it up at its first answer;
* unknown listing (never fetched by this mount): restored from disk (an earlier mount's
  copy) while the registry is down, else fetched while the caller waits (at most
  ``meta_timeout``); with neither, ``Unavailable`` (EIO) at once while the registry is
  down, after ``meta_timeout`` at most otherwise. A project or artifact made in this
  mount and not committed to (``local_projects.py``) has nothing at the registry to
  miss: while the registry is down it lists what the mount has (its drafts).

Every other metadata read of the mount (manifests, version records, the registry id) goes
through ``call``: under the deadline, recorded in the health, and refused at once while the
registry is down unless it is a mutation the user asked for (``force``). Without a running
nursery (the service driven directly by tests, before ``running``) refreshes run in the
caller and a probe is made by the first call after its back-off, so the rules hold there too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import trio

from ..errors import ArtfsError, NotFound, Unavailable
from .health import RegistryHealth
from .inodes import ArtifactNode, ListedDir, ProjectNode, RootNode

if TYPE_CHECKING:
    from .service import ArtfsFS

log = logging.getLogger(__name__)
T = TypeVar("T")

KNOWN_FROM_DISK = float("-inf")  # ``listed_at`` of a listing restored from disk: known, stale
MIN_PROBE_GAP = 0.05  # seconds between probes at least (a clock that stands still in tests)
# A registry with at most this many projects has each listed as the mount starts too
# (``WARM_PARALLEL`` requests at a time); a bigger one only its root (no guess which).
WARM_PROJECTS = 32
WARM_PARALLEL = 4


class KeyedLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits for it.

    Used so that concurrent lookups that all find a listing stale, or a version
    unbuilt, make one registry request between them.
    """

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[trio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (trio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass(slots=True)
class _Refresh:
    """A background refresh of one listing; waiters see its end and its error, if any."""

    done: trio.Event = field(default_factory=trio.Event)
    error: ArtfsError | None = None


class Listings:
    """The registry as the mount sees it: calls, health, listings; lives as long as the mount
    (``running`` owns the nursery of the background refreshes and of the probe)."""

    def __init__(self, fs: ArtfsFS) -> None:
        self.fs = fs
        self.health = RegistryHealth(fs._clock)
        self.locks = KeyedLocks()
        self._nursery: trio.Nursery | None = None
        self._jobs: dict[int, _Refresh] = {}
        self._probing = False
        self.warmed = trio.Event()  # the warm-up at mount has ended (answered or not)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Background refreshes and probes run inside this block and end with it."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._warm_up)
            try:
                yield
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``fn(*args)`` in the background nursery (a request ahead of need, which must
        not fail); nothing without a running nursery (the service driven directly)."""
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    async def _warm_up(self) -> None:
        """Learn the registry's id and list the root as the mount starts, while the kernel
        finishes INIT: the first path a job opens then waits for neither a new connection nor
        those two round trips (measured: 18 of the 26 ms to a cold first byte were lookups).
        The projects too, when there are few: every path crosses one (7 of the 35 ms to the
        first byte on SeaweedFS were its listing). A registry that does not answer is found
        here as it would be by the first lookup."""
        try:
            await self._warm_up_listings()
        finally:
            self.warmed.set()

    async def _warm_up_listings(self) -> None:
        root = self.fs.table.root
        try:
            await self.fs.meta_store()
            await self.fresh(root)
        except ArtfsError as e:
            log.debug("warm-up at mount: %s", e)
            return
        projects = [node for _, node in root.entries() if isinstance(node, ProjectNode)]
        if len(projects) > WARM_PROJECTS:
            return
        limiter = trio.CapacityLimiter(WARM_PARALLEL)

        async def list_project(node: ProjectNode) -> None:
            async with limiter:
                try:
                    await self.fresh(node)
                except ArtfsError as e:
                    log.debug("warm-up at mount, project %s: %s", node.project, e)

        async with trio.open_nursery() as nursery:
            for node in projects:
                nursery.start_soon(list_project, node)

    # --- calls --------------------------------------------------------------------------------
    def _waits(self) -> bool:
        """May a caller wait on the registry now? While it is down only a due probe may (and
        only without the background prober)."""
        return self.health.up or (self._nursery is None and self.health.probe_in() == 0)

    async def call(
        self, what: str, fn: Callable[..., Awaitable[T]], *args: object, force: bool = False
    ) -> T:
        """A registry call under the metadata deadline, recorded in the registry's health.
        While the registry is down it fails at once, unless ``force`` (a mutation)."""
        if not force and not self._waits():
            self._probe_soon()
            raise Unavailable(f"{what}: {self.health.describe()}")
        timeout = self.fs.options.meta_timeout
        started = self.fs._clock()
        try:
            with trio.move_on_after(timeout):
                result = await fn(*args)
                self.health.answered()
                return result
        except Unavailable:
            self._down(started)
            raise
        except ArtfsError:
            self.health.answered()
            raise
        self._down(started)
        raise Unavailable(f"the registry did not answer ({what}) within {timeout:g} s")

    def _down(self, started: float | None = None) -> None:
        self.health.failed(started)
        self._probe_soon()

    def _probe_soon(self) -> None:
        if self._nursery is not None and not self._probing and not self.health.up:
            self._probing = True
            self._nursery.start_soon(self._probe)

    async def _probe(self) -> None:
        """While the registry is down: refresh the root listing after each back-off, until
        it answers (anything: only a failure to answer keeps it down)."""
        root = self.fs.table.root
        try:
            while not self.health.up:
                await trio.sleep(max(self.health.probe_in(), MIN_PROBE_GAP))
                if self.health.up:
                    break
                started = self.fs._clock()
                try:
                    await self._refresh(root, started, force=True)
                    root.listed_at = started
                except ArtfsError as e:
                    log.debug("registry probe: %s", e)
            log.warning("the registry answers again")
        finally:
            self._probing = False

    # --- listings -------------------------------------------------------------------------------
    def _stale(self, node: ListedDir) -> bool:
        if node.listed_at is None:
            return True
        return self.fs._clock() - node.listed_at >= self.fs.options.listing_ttl

    async def fresh(self, node: ListedDir) -> None:
        """Make ``node``'s children at most one TTL old, or as fresh as the registry's health
        allows (see the module's docstring)."""
        if not self._stale(node):
            return
        if not self._waits():
            if node.listed_at is None and not await self._restore(node):
                self._probe_soon()
                raise Unavailable(f"listing {node.name or '/'}: {self.health.describe()}")
            node.listed_at = node.listed_at if node.listed_at is not None else KNOWN_FROM_DISK
            self._probe_soon()
            return
        if node.listed_at is not None and self._nursery is not None:
            await self._revalidate(node, self._nursery)
            return
        await self._refresh_waiting(node)

    async def _revalidate(self, node: ListedDir, nursery: trio.Nursery) -> None:
        """A known listing: refreshed in the background, waited for ``stale_after`` at most."""
        job = self._jobs.get(node.ino)
        if job is None:
            job = self._jobs[node.ino] = _Refresh()
            nursery.start_soon(self._refresh_job, node, job)
        with trio.move_on_after(min(self.fs.options.stale_after, self.fs.options.meta_timeout)):
            await job.done.wait()
        if not job.done.is_set():
            if self.health.up:
                log.warning(
                    "the registry is slow to answer; serving the last known listings meanwhile"
                )
                self._down()
            return
        if job.error is not None:
            raise job.error

    async def _refresh_job(self, node: ListedDir, job: _Refresh) -> None:
        try:
            async with self.locks.hold(("listing", node.ino)):
                started = self.fs._clock()
                await self._refresh(node, started, force=True)
                node.listed_at = started
        except NotFound as e:
            self.fs.table.detach(node)
            job.error = e
        except Unavailable as e:
            log.warning("registry unreachable, serving the last known listing: %s", e)
        except ArtfsError as e:
            job.error = e
        except Exception:  # never take the mount down from a background task
            log.exception("refreshing %s failed", node.name or "/")
        finally:
            del self._jobs[node.ino]
            job.done.set()

    async def _refresh_waiting(self, node: ListedDir) -> None:
        async with self.locks.hold(("listing", node.ino)):
            if not self._stale(node):
                return
            started = self.fs._clock()
            try:
                await self._refresh(node, started)
            except NotFound:
                self.fs.table.detach(node)
                raise
            except Unavailable as e:
                if node.listed_at is None:
                    if not await self._restore(node):
                        raise
                    node.listed_at = KNOWN_FROM_DISK
                log.warning("registry unreachable, serving the last known listing: %s", e)
                return
            node.listed_at = started

    async def _refresh(self, node: ListedDir, now: float, *, force: bool = False) -> None:
        fs, client = self.fs, self.fs.client
        if isinstance(node, RootNode):
            projects = await self.call("list projects", client.list_projects, force=force)
            fs.table.sync_projects(projects)
            (await fs.meta_store()).save_projects(projects)
        elif isinstance(node, ProjectNode):
            try:
                arts = await self.call(
                    f"list {node.project}", client.list_artifacts, node.project, force=force
                )
            except NotFound:
                kept = fs.drafts.local_project_artifacts(node) if fs.drafts else None
                if kept is None:
                    raise
                fs.table.sync_artifacts(node, kept, now)  # made here, not committed to yet
                return
            fs.table.sync_artifacts(node, arts, now)
            (await fs.meta_store()).save_artifacts(node.project, arts)
        elif isinstance(node, ArtifactNode):
            try:
                info = await self.call(
                    f"get {node.project}/{node.artifact}",
                    client.get_artifact,
                    node.project,
                    node.artifact,
                    force=force,
                )
            except NotFound:
                local = fs.drafts.local_artifact_info(node) if fs.drafts else None
                if local is None:
                    raise
                fs.table.sync_artifact(node, local)  # made here, not committed yet
                return
            fs.table.sync_artifact(node, info)
            (await fs.meta_store()).save_artifact(info)

    async def _restore(self, node: ListedDir) -> bool:
        """Apply the listing saved on disk by an earlier mount; False if there is none."""
        fs = self.fs
        try:
            store = await fs.meta_store()
        except Unavailable:
            return False
        if isinstance(node, RootNode):
            projects = store.load_projects()
            if projects is None:
                return False
            fs.table.sync_projects(projects)
        elif isinstance(node, ProjectNode):
            arts = store.load_artifacts(node.project)
            if arts is None:  # a project made here (mkdir, drafts) lists what it has here
                arts = fs.drafts.local_project_artifacts(node) if fs.drafts else None
                if arts is None:
                    return False
            # an artifact's own record may be newer than the project listing
            arts = [store.load_artifact(node.project, a.name) or a for a in arts]
            fs.table.sync_artifacts(node, arts, fs._clock())
        elif isinstance(node, ArtifactNode):
            info = store.load_artifact(node.project, node.artifact)
            if info is None:
                info = fs.drafts.local_artifact_info(node) if fs.drafts else None
                if info is None:
                    return False
            fs.table.sync_artifact(node, info)
        return True
