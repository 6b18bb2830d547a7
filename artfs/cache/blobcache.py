"""The host-wide blob cache service: opens blobs for reading, fetches whole blobs, evicts.

Usage (the cache owns a nursery for read-ahead and background completion, so it is an
async context manager; readers must be closed before it exits)::

    async with BlobCache(Path("~/.cache/artfs").expanduser(), client, max_bytes=50 << 30) as cache:
        reader = await cache.open(sha, size)
        try:
            data = await reader.read(offset, length)
        finally:
            await reader.aclose()
        path = await cache.fetch(sha, size)   # whole blob, verified, parallel ranged requests

One ``BlobCache`` per cache root per process (POSIX range locks cannot tell two of them
apart); any number of processes may share a root.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType

import trio
from cachetools import LRUCache

from ..client.base import RegistryClient
from ..errors import ArtfsError, IntegrityError, InvalidInput, NotFound, Unavailable
from ..hashing import BLOCK_SIZE, sha256_hex
from . import eviction, locks
from .blobstate import BlobState, StateEnv
from .blockmap import BLOCK_SHIFT, held_bytes, normalize, span
from .fetcher import BadBlock, fetch_blocks, missing_blob, report_damage
from .fetchpool import FetchPool, ThreadedFetchClient
from .ingest import LocalIngest
from .layout import CacheLayout, storage_error
from .protocol import CacheStats
from .reader import CachedBlobReader
from .settings import CacheTuning

log = logging.getLogger("artfs.cache")

_OPEN_ROOTS: set[str] = set()


def forget_open_roots_after_fork() -> None:
    """In a child made by ``fork``: the parent's open caches are not open here (its POSIX
    range locks are not inherited, its loop thread does not exist), so the child may open
    them again (the Python API does, artfs/api/sync.py)."""
    _OPEN_ROOTS.clear()


_RESCAN_INTERVAL = 2.0  # seconds between disk scans for the size limit


class BlobCache(LocalIngest):
    """Implements ``BlobCacheAPI`` (see ``protocol.py``) over the layout in ``layout.py``.

    ``max_bytes=None`` means unbounded. The limit is enforced when new data is about to be
    fetched or inserted: least-recently-used blobs not open in any process are evicted down
    to ``evict_low_water`` of the limit. Blobs that are open are never evicted, so open
    data larger than the limit can make the cache exceed it until they are closed.
    """

    def __init__(
        self,
        root: Path,
        client: RegistryClient,
        *,
        max_bytes: int | None = None,
        tuning: CacheTuning | None = None,
    ) -> None:
        self.root = root
        self.client = client
        self.max_bytes = max_bytes
        self.tuning = tuning or CacheTuning()
        self.layout = CacheLayout(root)
        self._states: dict[str, BlobState] = {}
        self._opening = trio.Lock()
        self._small: dict[str, trio.Event] = {}  # one-block blobs being fetched whole, by sha
        self._reserve_lock = trio.Lock()
        self._used_estimate: int | None = None
        self._scanned_at = -1e9
        self._limiter = trio.CapacityLimiter(self.tuning.parallel_requests)
        self._env = StateEnv(self.layout, client, self.tuning, self._reserve)
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._pool: FetchPool | None = None  # fetch threads, from __aenter__ to __aexit__
        self._key = ""
        self._completing = 0  # background completions running (finished before exit)
        self._completions_done = trio.Event()
        self._soon: deque[tuple[str, int]] = deque()  # blobs queued by prefetch_soon
        self._soon_known: set[str] = set()  # queued or being fetched, by sha
        self._soon_bytes = 0  # bytes of the blobs queued or being fetched
        self._soon_workers = 0
        self._misses: LRUCache[str, int] = LRUCache(4096)  # random misses per blob (random fill)
        self._filling: set[str] = set()  # blobs being filled because they are read at random
        self._filling_bytes = 0  # their sizes, at most random_fill_max and a quarter of the limit

    # --- lifetime -------------------------------------------------------------------
    async def __aenter__(self) -> BlobCache:
        try:
            self.layout.create()
        except OSError as e:
            raise storage_error(e, f"creating the cache at {self.root}") from None
        self._key = os.path.realpath(self.root)
        if self._key in _OPEN_ROOTS:
            raise InvalidInput(f"cache {self.root} is already open in this process")
        _OPEN_ROOTS.add(self._key)
        self.layout.remove_stale_tmp(self.tuning.tmp_max_age)
        if self.tuning.fetch_threads > 0 and isinstance(self.client, ThreadedFetchClient):
            self._pool = FetchPool(self.client, self.tuning.fetch_threads)
            self._pool.start()
            self._env = dataclasses.replace(self._env, pool=self._pool)
        stack = AsyncExitStack()
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None and self._nursery is not None
        # Let blobs whose last block just arrived be published (a bounded local hash),
        # else a short-lived process (``artfs get``) would leave every blob partial.
        with trio.move_on_after(self.tuning.timeout):
            while self._completing:
                await self._completions_done.wait()
        self._nursery.cancel_scope.cancel()
        try:
            await self._stack.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The body ran inside our nursery; let its own exception through unwrapped.
            if exc is None or list(group.exceptions) != [exc]:
                raise
        finally:
            if self._pool is not None:  # (every fetch has ended: its threads are idle)
                await self._pool.aclose()
                self._pool = None
                self._env = dataclasses.replace(self._env, pool=None)
            for state in list(self._states.values()):
                state.close()
            self._states.clear()
            _OPEN_ROOTS.discard(self._key)
            self._nursery = self._stack = None

    # --- opening ------------------------------------------------------------------------
    async def open(self, sha256: str, size: int) -> CachedBlobReader:
        self._check(sha256, size)
        known = sha256 in self._states
        if not known and os.path.exists(self.layout.complete(sha256)):
            return CachedBlobReader(self, sha256, size, await self._acquire(sha256, size))
        if size <= BLOCK_SIZE and not known:
            return CachedBlobReader(self, sha256, size, None)  # fetched on first read
        cold = not known and not os.path.exists(self.layout.partial_map(sha256))
        if cold:  # its first read needs a location: asked for while the state's files are made
            assert self._nursery is not None
            self._nursery.start_soon(self.client.prepare_read, sha256)  # (never fails)
            await trio.lowlevel.checkpoint()  # (the request leaves before that sync work)
        return CachedBlobReader(self, sha256, size, await self._acquire(sha256, size))

    def _check(self, sha: str, size: int) -> None:
        sha256_hex(sha)
        if size < 0:
            raise InvalidInput(f"invalid blob size {size}")
        if self._nursery is None:
            raise InvalidInput("BlobCache used outside its 'async with' block")

    async def _acquire(
        self, sha: str, size: int, progress: Callable[[int], None] | None = None
    ) -> BlobState:
        self._check(sha, size)
        if size > BLOCK_SIZE:
            return await self._attach_state(sha, size, None)
        # One block: the fast path (``_small_blob``), one task of this process at a time.
        while (busy := self._small.get(sha)) is not None:
            await busy.wait()
        if sha in self._states:
            return await self._attach_state(sha, size, None)
        done = self._small[sha] = trio.Event()
        try:
            pin_fd, fetched = await self._small_blob(sha, size, progress)
            return await self._attach_state(sha, size, pin_fd, fresh=fetched)
        finally:
            del self._small[sha]
            done.set()

    async def _attach_state(
        self, sha: str, size: int, pin_fd: int | None, *, fresh: bool = False
    ) -> BlobState:
        """This process's state of the blob, opened if needed (taking over ``pin_fd``)."""
        try:
            async with self._opening:
                state = self._states.get(sha)
                if state is None:
                    pin, pin_fd = pin_fd, None
                    state = await BlobState.open(self._env, sha, size, pin_fd=pin, fresh=fresh)
                    self._states[sha] = state
                    self._check_complete_soon(state)  # full but unpublished (its fetcher died)
                elif state.size != size:
                    raise InvalidInput(f"blob {sha[:12]} opened with size {size}, not {state.size}")
                else:
                    state.refs += 1
            return state
        finally:
            if pin_fd is not None:
                os.close(pin_fd)

    async def _small_blob(
        self, sha: str, size: int, progress: Callable[[int], None] | None
    ) -> tuple[int, bool]:
        """Pin a blob of one block and, unless cached, fetch it straight to ``blobs/``.

        One ranged GET into memory, checked against the sha256 (the block's only digest;
        a bad copy is fetched once more, then ``IntegrityError``), written to a temp file and
        renamed into place: no partial data, map, range locks or completion hash. Returns
        the pin fd, held since before the fetch so the new blob cannot be evicted before
        it is opened, and whether this call fetched it. Leaves blobs with a partial map (another process may be fetching it
        the long way) to the normal path. Two processes may fetch the same small blob at
        once; both copies are verified and the second rename replaces the first.
        """
        layout = self.layout
        pin_fd = await locks.pin_shared(layout.pin(sha), self.tuning.timeout)
        try:
            if os.path.exists(layout.complete(sha)) or os.path.exists(layout.partial_map(sha)):
                return pin_fd, False
            await self._reserve(size)
            data = await self._download_small(sha, size)
            self._publish_small(sha, data)
            if progress is not None:
                progress(size)
        except BaseException:
            os.close(pin_fd)
            raise
        return pin_fd, True

    async def _download_small(self, sha: str, size: int) -> bytes:
        digests = [bytes.fromhex(sha)]
        got: list[bytes] = []

        def keep(index: int, block: memoryview) -> None:
            got.append(bytes(block))

        for attempt in (1, 2):
            try:
                await fetch_blocks(self.client, sha, size, 0, 1, digests, keep, self.tuning.timeout)
                return got[0]
            except NotFound as e:
                raise await missing_blob(self.client, sha, e) from None
            except BadBlock:
                if attempt == 2:
                    message = (
                        f"blob {sha[:12]} from the registry does not match its sha256 "
                        "(after a retry)"
                    )
                    await report_damage(self.client, sha, message)
                    raise IntegrityError(message) from None
                log.warning("blob %s: bad copy from the registry; retrying", sha[:12])
        raise AssertionError("unreachable")

    def _publish_small(self, sha: str, data: bytes) -> None:
        """Write verified bytes to a temp file and rename it to the blob's complete path."""
        tmp = self.layout.tmp_path(sha)
        target = self.layout.complete(sha)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            try:
                os.rename(tmp, target)
            except FileNotFoundError:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise storage_error(e, f"storing blob {sha[:12]}") from None

    def _release(self, state: BlobState) -> None:
        state.refs -= 1
        if state.refs == 0 and self._states.get(state.sha) is state:
            del self._states[state.sha]
            state.close()

    # --- background work ----------------------------------------------------------------------
    def _start_readahead(
        self, reader: CachedBlobReader, state: BlobState, ahead: tuple[int, int]
    ) -> None:
        """Queue request-sized pieces of ``ahead`` and spawn a task for each.

        The tasks share the cache's limiter; each takes the *first* queued piece once it
        holds a slot, so pieces start in blob order whatever order trio runs tasks in.
        """
        assert self._nursery is not None
        first, stop = span(*ahead)
        step = max(1, self.tuning.request_bytes >> BLOCK_SHIFT)
        for start in range(first, stop, step):
            reader._queue.append((start, min(stop, start + step)))
            state.refs += 1
            scope = trio.CancelScope()
            if not reader._background:
                reader._idle = trio.Event()
            reader._background.add(scope)
            self._nursery.start_soon(self._readahead_task, reader, state, scope)

    async def _readahead_task(
        self,
        reader: CachedBlobReader,
        state: BlobState,
        scope: trio.CancelScope,
    ) -> None:
        started = False
        try:
            with scope:
                async with self._limiter:
                    if reader._queue:
                        first, stop = reader._queue.popleft()
                        started = True
                        await state.prefetch(first, stop)
        except ArtfsError as e:
            # The reader will ask for these blocks itself and see the error then.
            log.debug("read-ahead of blob %s failed: %s", state.sha[:12], e)
        except Exception:
            log.exception("read-ahead of blob %s crashed", state.sha[:12])
        finally:
            reader._background.discard(scope)
            if not reader._background:
                reader._idle.set()
            # Completion outlives the reader: it is not in the reader's scope. Checked even
            # when the reader closed as the last blocks came in (its read-ahead cancelled).
            if started:
                self._check_complete_soon(state)
            self._release(state)

    def _random_miss(self, state: BlobState) -> None:
        """Count a read at a random offset that waits for the network; past
        ``random_fill_after`` of them (over all opens of the blob, as a loader that opens
        the file per sample also counts), fetch the rest of the blob in the background."""
        if state.complete or state.sha in self._filling:
            return
        misses = self._misses.get(state.sha, 0) + 1
        self._misses[state.sha] = misses
        if misses < self.tuning.random_fill_after:
            return
        budget = self.tuning.random_fill_max
        if self.max_bytes is not None:
            budget = min(budget, self.max_bytes // 4)
        if self._filling_bytes + state.size > budget:
            return  # (all fills together: they pin what they fill)
        assert self._nursery is not None
        log.debug("blob %s: read at random; fetching the rest in the background", state.sha[:12])
        self._filling.add(state.sha)
        self._filling_bytes += state.size
        state.refs += 1  # pinned while it fills; the fill ends when the cache closes at the latest
        self._nursery.start_soon(self._fill_task, state)

    async def _fill_task(self, state: BlobState) -> None:
        """Fetch every missing piece of ``state``'s blob, ``parallel_requests`` at a time.

        Pieces are claimed only as they start, in blob order, through the read-ahead's
        limiter, and each piece is one request (blocks a reader fetched meanwhile are
        bridged over: ``BlobState.prefetch(serial=True)``), so the fill never has more than
        ``parallel_requests`` requests out. A foreground miss fetches its own block
        at once, outside the limiter, and waits only for a block already in flight.
        """
        piece = max(1, self.tuning.request_bytes >> BLOCK_SHIFT)
        pieces = iter(range(0, state.nblocks, piece))
        fetched = False

        async def worker() -> None:
            nonlocal fetched
            for first in pieces:
                async with self._limiter:
                    if await state.prefetch(first, min(first + piece, state.nblocks), serial=True):
                        fetched = True

        try:
            async with trio.open_nursery() as nursery:
                for _ in range(int(self._limiter.total_tokens)):
                    nursery.start_soon(worker)
        except* ArtfsError as group:  # a reader meets the same error when it gets there
            log.debug("filling blob %s failed: %s", state.sha[:12], group.exceptions[0])
        except* Exception:
            log.exception("filling blob %s crashed", state.sha[:12])
        finally:
            self._filling.discard(state.sha)
            self._filling_bytes -= state.size
            self._misses.pop(state.sha, None)
            if fetched:
                self._check_complete_soon(state)
            self._release(state)

    def _check_complete_soon(self, state: BlobState) -> None:
        """After a fetch (or on open): publish the blob in the background once it is full."""
        if state.complete or state.present_flags(0, state.nblocks).find(b"\x00") >= 0:
            return
        assert self._nursery is not None
        state.refs += 1
        self._completing += 1
        self._nursery.start_soon(self._complete_task, state)

    async def _complete_task(self, state: BlobState) -> None:
        try:
            await self._complete_if_full(state)
        finally:
            self._completing -= 1
            if not self._completing:
                self._completions_done.set()
                self._completions_done = trio.Event()
            self._release(state)

    async def _complete_if_full(self, state: BlobState) -> None:
        try:
            await state.maybe_complete()
        except ArtfsError as e:
            log.warning("completing blob %s failed: %s", state.sha[:12], e)
        except Exception:
            log.exception("completing blob %s crashed", state.sha[:12])

    # --- prefetching whole blobs in the background ---------------------------------------------
    def prefetch_soon(self, blobs: Sequence[tuple[str, int]]) -> None:
        """Fetch these whole blobs in the background, ``prefetch_parallel`` at a time.

        Never blocks and never fails: the caller (the mount's directory read-ahead) only
        guesses that the blobs will be read soon. A blob larger than ``prefetch_whole_max``
        gets only its head: its block digests and first ``readahead_initial`` bytes, what
        its first read would wait for. Blobs already cached, queued or being
        fetched are skipped; errors are logged and left for a real reader to meet. A reader
        that opens a blob while it is being prefetched waits for that fetch rather than
        starting its own. Cancelled when the cache closes. At most ``prefetch_bytes`` (and a
        quarter of the cache's limit) is queued or in flight at once: a guess must not evict
        what is being read.
        """
        if self._nursery is None:
            return
        budget = self.tuning.prefetch_bytes
        if self.max_bytes is not None:
            budget = min(budget, self.max_bytes // 4)
        for sha, size in blobs:
            if sha in self._soon_known or len(self._soon) >= self.tuning.prefetch_queue:
                continue
            if os.path.exists(self.layout.complete(sha)):
                continue  # (a stat, to keep cached blobs out of the budget)
            cost = self._prefetch_cost(size)
            if self._soon_bytes + cost > budget:
                break
            self._soon_known.add(sha)
            self._soon_bytes += cost
            self._soon.append((sha, size))
        while self._soon and self._soon_workers < self.tuning.prefetch_parallel:
            self._soon_workers += 1
            self._nursery.start_soon(self._prefetch_worker)

    async def _prefetch_worker(self) -> None:
        try:
            while self._soon:
                sha, size = self._soon.popleft()
                try:
                    await self._prefetch_one(sha, size)
                except ArtfsError as e:
                    log.debug("prefetch of blob %s failed: %s", sha[:12], e)
                except Exception:
                    log.exception("prefetch of blob %s crashed", sha[:12])
                finally:
                    self._soon_known.discard(sha)
                    self._soon_bytes -= self._prefetch_cost(size)
        finally:
            self._soon_workers -= 1

    def _prefetch_cost(self, size: int) -> int:
        if size <= self.tuning.prefetch_whole_max:
            return size
        return min(size, self.tuning.readahead_initial)

    async def _prefetch_one(self, sha: str, size: int) -> None:
        self._check(sha, size)
        if size == 0 or os.path.exists(self.layout.complete(sha)):
            return
        if size > self.tuning.prefetch_whole_max:
            await self._prefetch_head(sha, size)
            return
        if size > BLOCK_SIZE:
            await self.fetch(sha, size)
            return
        while (busy := self._small.get(sha)) is not None:
            await busy.wait()
        if sha in self._states:
            return  # open here: its reader fetches it
        done = self._small[sha] = trio.Event()
        try:
            pin_fd, _ = await self._small_blob(sha, size, None)
            os.close(pin_fd)
        finally:
            del self._small[sha]
            done.set()

    async def _prefetch_head(self, sha: str, size: int) -> None:
        """A large blob's block digests and first blocks (what its first read waits for)."""
        state = await self._attach_state(sha, size, None)
        try:
            if not state.complete:
                await state.need_digests()
                first, stop = span(0, min(size, self.tuning.readahead_initial))
                await state.prefetch(first, stop)
        finally:
            self._release(state)

    # --- whole blobs --------------------------------------------------------------------------
    async def fetch(
        self, sha256: str, size: int, *, progress: Callable[[int], None] | None = None
    ) -> Path:
        """Make the blob complete and verified; return the path of the complete file.

        Uses up to ``parallel_requests`` ranged requests at once and cooperates with other
        tasks and processes fetching the same blob. ``progress(n)`` is called for every
        ``n`` bytes this call fetched. A complete blob is checked (once per process)
        against its block digests without any registry request. The returned path stays
        valid until the blob is evicted; keep a reader open to prevent that.
        """
        state = await self._acquire(sha256, size, progress)
        if progress is not None:
            state.progress.add(progress)
        try:
            await self._make_complete(state, trio.CapacityLimiter(self.tuning.parallel_requests))
            return self.layout.complete(sha256)
        finally:
            if progress is not None:
                state.progress.discard(progress)
            self._release(state)

    async def _make_complete(self, state: BlobState, limiter: trio.CapacityLimiter | None) -> None:
        """Fetch what ``state``'s blob lacks and publish it complete (or see another process
        do so). ``limiter``: several requests at once, else one per missing run."""
        deadline = trio.current_time() + self.tuning.timeout
        while True:
            await state.ensure(0, state.nblocks, limiter=limiter)
            if state.complete:
                return
            if await state.maybe_complete() or state.adopt_peer_completion():
                return
            # Another process holds the map while it completes (or repairs) the blob.
            if trio.current_time() >= deadline:
                raise Unavailable(f"blob {state.sha[:12]}: completion by another process stalled")
            await trio.sleep(self.tuning.poll_max)

    # --- accounting ------------------------------------------------------------------------
    def cached_bytes(self, sha256: str, size: int) -> int:
        state = self._states.get(sha256)
        if state is not None:
            return state.held()
        try:
            if os.stat(self.layout.complete(sha256)).st_size == size:
                return size
        except FileNotFoundError:
            pass
        try:
            with open(self.layout.partial_map(sha256), "rb") as f:
                return held_bytes(normalize(f.read()), size)
        except FileNotFoundError:
            return 0

    def stats(self) -> CacheStats:
        entries = eviction.scan(self.layout)
        complete = [e for e in entries if e.complete]
        partial = [e for e in entries if not e.complete]
        return CacheStats(
            complete_blobs=len(complete),
            complete_bytes=sum(e.held for e in complete),
            partial_blobs=len(partial),
            partial_bytes=sum(e.held for e in partial),
            limit_bytes=self.max_bytes,
        )

    def prune(self, to_bytes: int) -> int:
        freed, held = eviction.evict_to(self.layout, max(0, to_bytes))
        self._used_estimate = held
        return freed

    async def _reserve(self, nbytes: int) -> None:
        """Before adding ``nbytes`` of data: evict LRU blobs if the limit would be passed.

        Keeps an estimate of the bytes held, refreshed from disk (which counts every
        process's additions) when the estimate says the limit is near, and at most
        ``_RESCAN_INTERVAL`` seconds apart otherwise, so that other processes' additions
        are noticed even while this one adds little.
        """
        if self.max_bytes is None:
            return
        async with self._reserve_lock:
            limit = self.max_bytes
            now = trio.current_time()
            if (
                self._used_estimate is None
                or self._used_estimate + nbytes > limit
                or now - self._scanned_at > _RESCAN_INTERVAL
            ):
                self._scanned_at = now
                target = max(0, int(limit * self.tuning.evict_low_water) - nbytes)

                def work() -> int:
                    held = sum(e.held for e in eviction.scan(self.layout))
                    if held + nbytes > limit:
                        held = eviction.evict_to(self.layout, target)[1]
                    return held

                self._used_estimate = await trio.to_thread.run_sync(work)
            self._used_estimate += nbytes
