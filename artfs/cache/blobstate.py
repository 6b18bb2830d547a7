"""One process's handle on one cached blob: fds, blocks it has verified, in-flight fetches.

One ``BlobState`` exists per blob per process, shared by every reader of that blob in the
process (POSIX range locks are per process, so there must be exactly one map fd). It moves
between two modes:

* partial: ``data_fd`` is the sparse data file (read-write), ``map_fd`` the presence map;
* complete: ``data_fd`` is the read-only complete file.

Coordination, in one sentence per level: a block is fetched by whoever first claims it —
in-process by putting a trio Event in ``inflight`` (no await between check and claim),
across processes by holding the lockf byte of that block in the map — and a claimer
re-reads the map after locking, because another process may have just finished it.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Awaitable, Callable, Container, Sequence
from dataclasses import dataclass

import trio

from ..client.base import RegistryClient
from ..errors import (
    ArtfsError,
    IntegrityError,
    InvalidInput,
    NotFound,
    ProtocolError,
    Unavailable,
)
from ..hashing import BLOCK_SIZE, DIGEST_LEN, block_count, split_block_digests
from . import locks, trust
from .atrest import AtRest
from .blockmap import (
    ABSENT,
    BLOCK_SHIFT,
    PRESENT,
    block_bounds,
    bridge,
    held_bytes,
    normalize,
    runs_of,
)
from .fetcher import BadBlock, DigestSlot, fetch_blocks, missing_blob, report_damage
from .fetchpool import FetchPool, ThreadedRun
from .layout import CacheLayout, storage_error
from .settings import CacheTuning
from .trust import Stamp

log = logging.getLogger("artfs.cache")

BRIDGE_BLOCKS = 8  # a serial fetch joins runs split by at most this many others' blocks

TOUCH_SLACK = 10.0  # seconds: closing a blob touched this recently does not touch it again


@dataclass(frozen=True, slots=True)
class StateEnv:
    """What a BlobState needs from its cache."""

    layout: CacheLayout
    client: RegistryClient
    tuning: CacheTuning
    reserve: Callable[[int], Awaitable[None]]  # make room for this many new bytes (may evict)
    pool: FetchPool | None = None  # fetch threads (HTTP clients), else fetches run in trio


def _first_artfs_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_artfs_error(exc)
            if isinstance(found, ArtfsError):
                return found
        elif isinstance(exc, ArtfsError):
            return exc
    return group


class BlobState(AtRest):
    def __init__(self, env: StateEnv, sha: str, size: int, pin_fd: int) -> None:
        self.env = env
        self.sha = sha
        self.size = size
        self.nblocks = block_count(size)
        self.pin_fd = pin_fd
        self.data_fd = -1
        self.map_fd: int | None = None
        self.complete = False
        self.verified = bytearray(self.nblocks)  # blocks this process has checked (or fetched)
        self.inflight: dict[int, trio.Event] = {}  # blocks being fetched by a task of this process
        self.digests: list[bytes] | None = None
        self.refs = 1
        self.progress: set[Callable[[int], None]] = set()
        self._run_blocks = max(1, env.tuning.request_bytes // BLOCK_SIZE)
        self._retired: list[int] = []  # fds replaced while a thread may still read them
        self._mtime = 0.0  # when this process last touched the blob (wall clock)
        self._seen: Stamp | None = None  # the complete file as it was when attached
        self._stamped = False  # a trust stamp for the complete file exists (trust.py)
        self._digest_lock = trio.Lock()
        self._transition = trio.Lock()

    # --- lifetime ------------------------------------------------------------------
    @classmethod
    async def open(
        cls, env: StateEnv, sha: str, size: int, *, pin_fd: int | None = None, fresh: bool = False
    ) -> BlobState:
        """Pin the blob (or take over ``pin_fd``, a pin the caller holds) and open its files.

        ``fresh``: the caller has just written the complete file, whose mtime is therefore
        already the newest; it is not touched again."""
        if pin_fd is None:
            pin_fd = await locks.pin_shared(env.layout.pin(sha), env.tuning.timeout)
        state = cls(env, sha, size, pin_fd)
        try:
            if not state._attach_complete():
                async with locks.exclusive_file_lock(env.layout.state_lock, env.tuning.timeout):
                    state._attach()
            state._load_local_digests()
        except BaseException:
            state.close()
            raise
        if fresh:  # its pin was just made: as recent as a touch; its bytes were just checked
            state._mtime = time.time()
            if state.complete:
                state.verified[:] = bytes([1]) * state.nblocks
        else:
            state.touch()
        return state

    def close(self) -> None:
        """Close every fd (dropping this process's range locks, then the pin)."""
        self.touch(TOUCH_SLACK)
        for fd in (self.data_fd, self.map_fd, *self._retired):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.data_fd, self.map_fd, self._retired = -1, None, []
        os.close(self.pin_fd)

    def touch(self, min_age: float = 0.0) -> None:
        """Mark the blob recently used, host-wide (the evictor orders blobs by pin mtime).

        Opening always touches; closing (``min_age=TOUCH_SLACK``) only when this process
        last touched the blob longer ago, so a file opened, read and closed at once costs
        one ``utime``, not two, and LRU order is unchanged beyond those few seconds. The
        pin, not the data file, is touched: a complete file's ctime must stay as it was
        checked (trust.py).
        """
        now = time.time()
        if self.pin_fd >= 0 and now - self._mtime >= min_age:
            try:
                os.utime(self.pin_fd)
                self._mtime = now
            except OSError:
                pass

    def _set_fds(self, data_fd: int, map_fd: int | None) -> None:
        for old in (self.data_fd, self.map_fd):
            if old is not None and old >= 0:
                self._retired.append(old)
        self.data_fd, self.map_fd = data_fd, map_fd

    def _attach_complete(self) -> bool:
        """Open the complete file if it is there with the right size; no state lock needed.

        Racing with a demotion (the file renamed back to ``partial/``) at worst leaves us
        holding the partial data file as if complete: its first read is verified like any
        other, finds the damage and re-attaches under the lock (``_demote``). Anything
        unusual (absent, wrong size) is left to ``_attach`` under the lock.
        """
        try:
            fd = os.open(self.env.layout.complete(self.sha), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        if st.st_size != self.size:
            os.close(fd)
            return False
        self._set_fds(fd, None)
        self._became_complete(st)
        return True

    def _became_complete(self, st: os.stat_result) -> None:
        """``data_fd`` is now the complete file, as ``st``; trust a valid stamp on it."""
        self.complete = True
        self._seen = Stamp.of(st)
        if self.nblocks > 1 and trust.is_trusted(self.env.layout, self.sha, self._seen):
            self.verified[:] = bytes([1]) * self.nblocks
            self._stamped = True

    def _stamp_if_checked(self) -> None:
        """Leave a trust stamp once every block of the complete file has been checked here."""
        if self.complete and not self._stamped and self.nblocks > 1 and self.verified.find(0) < 0:
            self._stamped = True
            trust.stamp(self.env.layout, self.sha, self.data_fd, self._seen)

    def _attach(self) -> None:
        """(Under the state lock.) Open the complete file if there is one, else the partials."""
        complete = self.env.layout.complete(self.sha)
        try:
            fd = os.open(complete, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = -1
        if fd >= 0:
            st = os.fstat(fd)
            if st.st_size == self.size:
                self._set_fds(fd, None)
                self._became_complete(st)
                return
            os.close(fd)
            log.warning("cached blob %s has the wrong size; discarding it", self.sha[:12])
            os.unlink(complete)
        self._open_partial()

    def _open_partial(self) -> None:
        layout = self.env.layout
        data_path, map_path = layout.partial_data(self.sha), layout.partial_map(self.sha)
        try:
            data_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(data_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                if os.fstat(fd).st_size != self.size:
                    os.ftruncate(fd, self.size)  # sparse: allocates nothing
                if not map_path.exists():
                    layout.write_file(map_path, bytes(self.nblocks), replace=False)
                mfd = os.open(map_path, os.O_RDWR | os.O_CLOEXEC)
                if os.fstat(mfd).st_size != self.nblocks:
                    os.ftruncate(mfd, self.nblocks)
            except BaseException:
                os.close(fd)
                raise
        except OSError as e:
            raise storage_error(e, f"opening the cache files of blob {self.sha[:12]}") from None
        self._set_fds(fd, mfd)
        self.complete = False

    # --- digests ---------------------------------------------------------------------
    def _load_local_digests(self) -> None:
        if self.size <= BLOCK_SIZE:
            self.digests = [bytes.fromhex(self.sha)]  # one block: its digest is the blob's
            return
        path = self.env.layout.digests(self.sha)
        try:
            self.digests = split_block_digests(path.read_bytes(), self.size)
        except FileNotFoundError:
            pass
        except InvalidInput:
            log.warning("damaged block-digest file for blob %s; will refetch it", self.sha[:12])
            path.unlink(missing_ok=True)

    async def need_digests(self, slot: DigestSlot | None = None) -> list[bytes]:
        """The blob's block digests, asked for once; ``slot`` is given them as soon as they
        are here (before they are written to the cache, which other waiters wait for)."""
        if self.digests is not None:
            return self.digests
        if self.nblocks == 1:  # a one-block blob's only block digest is its sha256: no request
            self.digests = [bytes.fromhex(self.sha)]
            return self.digests
        async with self._digest_lock:
            if self.digests is None:
                timeout = self.env.tuning.timeout
                with trio.move_on_after(timeout) as scope:
                    try:
                        digests = await self.env.client.blob_blocks(self.sha, self.size)
                    except NotFound as e:
                        raise await missing_blob(self.env.client, self.sha, e) from None
                if scope.cancelled_caught:
                    raise Unavailable(
                        f"blob {self.sha[:12]}: no block digests from the registry in {timeout:g}s"
                    )
                if len(digests) != self.nblocks or any(len(d) != DIGEST_LEN for d in digests):
                    raise ProtocolError(f"blob {self.sha[:12]}: malformed block digest list")
                layout, raw = self.env.layout, b"".join(digests)
                path = layout.digests(self.sha)
                if slot is None:
                    layout.write_file(path, raw, replace=True)
                else:  # a reader waits for its first block: it goes on now, the file is written aside
                    slot.set(digests)
                    await trio.to_thread.run_sync(
                        lambda: layout.write_file(path, raw, replace=True)
                    )
                self.digests = list(digests)
        return self.digests

    # --- presence --------------------------------------------------------------------
    def present_flags(self, first: int, stop: int) -> bytes:
        if self.complete or self.map_fd is None:
            return bytes([PRESENT]) * (stop - first)
        raw = os.pread(self.map_fd, stop - first, first)
        return normalize(raw.ljust(stop - first, bytes([ABSENT])))

    def held(self) -> int:
        if self.complete:
            return self.size
        return held_bytes(self.present_flags(0, self.nblocks), self.size)

    # --- making blocks available -------------------------------------------------------
    async def ensure(
        self, first: int, stop: int, *, limiter: trio.CapacityLimiter | None = None
    ) -> bool:
        """Make blocks ``[first, stop)`` present and verified; True if this call fetched any.

        Verifies present blocks this process has not checked yet (refetching damaged ones),
        fetches missing blocks nobody is fetching, and waits for the rest — woken per block
        for fetches of this process, polling for fetches of other processes. Gives up with
        ``Unavailable`` after ``timeout`` seconds without progress.
        """
        tuning = self.env.tuning
        fetched = False
        deadline = trio.current_time() + tuning.timeout
        delay = tuning.poll_min
        last_present = -1
        while self.verified.find(0, first, stop) >= 0:
            flags = self.present_flags(first, stop)
            checked = self.verified[first:stop]
            todo = bytes(p & (v ^ 1) for p, v in zip(flags, checked, strict=True))
            if self.inflight:  # a fetch thread writes blocks before it tells us: not ours to check
                todo = bytes(t and int(first + i not in self.inflight) for i, t in enumerate(todo))
            to_verify = runs_of(todo, first, PRESENT, 1 << 30)
            if to_verify:
                bad = await self._verify(to_verify)
                if bad:
                    await self._handle_damage(bad)
                continue
            missing = runs_of(flags, first, ABSENT, self._run_blocks)
            if limiter is not None:
                # A whole-blob fetch: its digests first (a reader's fetch asks for them beside
                # its data, ``_fetch_claimed``: its first byte then takes one round trip).
                await self.need_digests()
            if limiter is None:
                claimed = self._claim(missing)
                if claimed:
                    await self._fetch_runs(claimed)
            else:
                claimed = await self._fetch_limited(missing, limiter)
            if claimed:
                fetched = True
                deadline = trio.current_time() + tuning.timeout
                delay = tuning.poll_min
                continue
            present = flags.count(PRESENT)
            if present != last_present:
                last_present, deadline = present, trio.current_time() + tuning.timeout
            if trio.current_time() >= deadline:
                raise Unavailable(
                    f"blob {self.sha[:12]}: another fetch of it made no progress in "
                    f"{tuning.timeout:g}s"
                )
            event = self._inflight_event([(first, stop)])
            if event is not None:
                with trio.move_on_at(deadline):
                    await event.wait()
            else:
                await trio.sleep(delay)
                delay = min(delay * 2, tuning.poll_max)
        return fetched

    async def prefetch(self, first: int, stop: int, *, serial: bool = False) -> bool:
        """Fetch whatever in ``[first, stop)`` nobody has or fetches; never waits for others.

        ``serial``: one request at a time, for a caller holding one slot of a limiter; runs
        split by at most ``BRIDGE_BLOCKS`` blocks that others have or fetch are joined into
        one request, those blocks received and dropped.
        """
        if self.complete:
            return False
        missing = runs_of(self.present_flags(first, stop), first, ABSENT, self._run_blocks)
        if not missing:
            return False
        # Background fetches wait for the digests (a reader's own fetch of a cold blob goes
        # beside them, and must not share the link and the cores with read-ahead meanwhile).
        await self.need_digests()
        claimed = self._claim(missing)
        if not claimed:
            return False
        await self._fetch_runs(claimed, serial=serial)
        return True

    async def _fetch_limited(
        self, missing: Sequence[tuple[int, int]], limiter: trio.CapacityLimiter
    ) -> list[tuple[int, int]]:
        """Fetch runs in order, several at once, each claimed only when it starts.

        Claiming late matters: a run claimed while queued would make other readers of
        its blocks wait for the whole queue ahead of it. Workers share one iterator, so
        runs start in blob order (trio does not start tasks in spawn order).
        """
        claimed: list[tuple[int, int]] = []
        pending = iter(missing)

        async def worker() -> None:
            for run in pending:
                async with limiter:
                    runs = self._claim([run])
                    claimed.extend(runs)
                    if runs:
                        await self._fetch_runs(runs)

        try:
            async with trio.open_nursery() as nursery:
                for _ in range(min(len(missing), int(limiter.total_tokens))):
                    nursery.start_soon(worker)
        except BaseExceptionGroup as group:
            raise _first_artfs_error(group) from None
        return claimed

    def _inflight_event(self, runs: Sequence[tuple[int, int]]) -> trio.Event | None:
        for start, stop in runs:
            for k in range(start, stop):
                event = self.inflight.get(k)
                if event is not None:
                    return event
        return None

    def _claim(self, missing: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """Claim every block of ``missing`` that no task or process is fetching; return runs."""
        mfd = self.map_fd
        assert mfd is not None
        claimed: list[tuple[int, int]] = []
        for start, stop in missing:
            run_start = -1
            whole = not any(k in self.inflight for k in range(start, stop))
            if whole and locks.try_lock_range(mfd, start, stop - start):
                # The usual case, in two syscalls: nobody holds any of them.
                flags = os.pread(mfd, stop - start, start)
                for k in range(start, stop):
                    if k - start < len(flags) and flags[k - start] == PRESENT:
                        locks.unlock_range(mfd, k)  # finished by another process meanwhile
                        if run_start >= 0:
                            claimed.append((run_start, k))
                            run_start = -1
                        continue
                    self.inflight[k] = trio.Event()
                    if run_start < 0:
                        run_start = k
                if run_start >= 0:
                    claimed.append((run_start, stop))
                continue
            for k in range(start, stop):
                ok = k not in self.inflight and locks.try_lock_range(mfd, k)
                if ok and os.pread(mfd, 1, k) == bytes([PRESENT]):
                    locks.unlock_range(mfd, k)  # finished by another process meanwhile
                    ok = False
                if ok:
                    self.inflight[k] = trio.Event()
                    if run_start < 0:
                        run_start = k
                elif run_start >= 0:
                    claimed.append((run_start, k))
                    run_start = -1
            if run_start >= 0:
                claimed.append((run_start, stop))
        return claimed

    def _release(self, start: int, stop: int) -> None:
        """Give up claims on blocks of ``[start, stop)`` not stored (a failed or cancelled run)."""
        mfd = self.map_fd
        for k in range(start, stop):
            event = self.inflight.pop(k, None)
            if event is not None:
                event.set()
                if mfd is not None:
                    locks.unlock_range(mfd, k)

    async def _fetch_runs(self, runs: Sequence[tuple[int, int]], *, serial: bool = False) -> None:
        try:
            nbytes = sum(
                block_bounds(stop - 1, self.size)[1] - (start << BLOCK_SHIFT)
                for start, stop in runs
            )
            await self.env.reserve(nbytes)
        except BaseException:
            for start, stop in runs:
                self._release(start, stop)
            raise
        if len(runs) == 1:
            await self._fetch_run(runs[0][0], runs[0][1])
            return
        if serial:
            # One request per span: runs split by a few blocks others fetch are joined and
            # those blocks dropped (a fill meeting a random reader's blocks).
            pending = list(runs)
            try:
                for start, stop, gaps in bridge(runs, BRIDGE_BLOCKS):
                    mine = [r for r in pending if start <= r[0] < stop]
                    pending = [r for r in pending if not start <= r[0] < stop]
                    try:
                        await self._fetch_claimed(start, stop, gaps)
                    finally:
                        for run_start, run_stop in mine:
                            self._release(run_start, run_stop)
            finally:
                for run_start, run_stop in pending:  # spans never started
                    self._release(run_start, run_stop)
            return
        try:
            async with trio.open_nursery() as nursery:
                for start, stop in runs:
                    nursery.start_soon(self._fetch_run, start, stop)
        except BaseExceptionGroup as group:
            raise _first_artfs_error(group) from None

    async def _fetch_run(self, start: int, stop: int) -> None:
        try:
            await self._fetch_claimed(start, stop)
        finally:
            self._release(start, stop)

    async def _fetch_claimed(
        self, start: int, stop: int, skip: frozenset[int] = frozenset()
    ) -> None:
        slot = DigestSlot(self.digests)
        if slot.value is not None:
            await self._fetch_checked(start, stop, skip, slot)
            return
        # A cold blob's first fetch: its block digests are asked for beside the data (one
        # round trip, not two); blocks that arrive before them wait for them.
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._digests_into, slot)
                await trio.lowlevel.checkpoint()  # (lets the digest request start first)
                await self._fetch_checked(start, stop, skip, slot)
        except BaseExceptionGroup as group:
            raise _first_artfs_error(group) from None

    async def _digests_into(self, slot: DigestSlot) -> None:
        digests = await self.need_digests(slot)
        if slot.value is None:
            slot.set(digests)

    async def _fetch_checked(
        self, start: int, stop: int, skip: frozenset[int], digests: DigestSlot
    ) -> None:
        """Fetch claimed blocks; a bad block is fetched once more (from it on), then
        ``IntegrityError``."""
        failures: dict[int, int] = {}
        while start < stop:
            try:
                await self._fetch_once(start, stop, skip, digests)
                return
            except NotFound as e:
                raise await missing_blob(self.env.client, self.sha, e) from None
            except BadBlock as bad:
                failures[bad.index] = failures.get(bad.index, 0) + 1
                if failures[bad.index] >= 2:
                    message = (
                        f"blob {self.sha[:12]}: block {bad.index} from the registry does not "
                        "match its published digest (after a retry)"
                    )
                    await report_damage(self.env.client, self.sha, message)
                    raise IntegrityError(message) from None
                log.warning(
                    "blob %s: bad block %d from the registry; retrying", self.sha[:12], bad.index
                )
                start = bad.index

    async def _fetch_once(
        self, start: int, stop: int, skip: frozenset[int], digests: DigestSlot
    ) -> None:
        """One ranged request for blocks ``[start, stop)``: in a fetch thread when the
        client allows it and one is idle, else on the trio thread."""
        tuning, pool = self.env.tuning, self.env.pool
        lo, hi = start << BLOCK_SHIFT, block_bounds(stop - 1, self.size)[1]
        mfd = self.map_fd
        if (
            pool is not None
            and mfd is not None
            and hi > lo
            and hi - lo >= tuning.thread_min_bytes
            and pool.try_acquire()
        ):
            try:
                run = ThreadedRun(
                    pool,
                    self.sha,
                    self.size,
                    start,
                    stop,
                    skip,
                    digests,
                    (self.data_fd, mfd),
                    self._mark_stored_run,
                    tuning.timeout,
                )
                if await pool.client.fetch_range(self.sha, self.size, lo, hi - lo, run):
                    return
            finally:
                pool.release()
        await fetch_blocks(
            self.env.client,
            self.sha,
            self.size,
            start,
            stop,
            digests,
            self._store,
            tuning.timeout,
            skip,
        )

    def _store(self, index: int, block: memoryview) -> None:
        """Write a verified block, then mark it present (data before map: a crash in between
        leaves the block absent), then wake whoever waits for it."""
        mfd = self.map_fd
        assert mfd is not None
        try:
            if os.pwrite(self.data_fd, block, index << BLOCK_SHIFT) != len(block):
                raise OSError(errno.ENOSPC, "short write")
            os.pwrite(mfd, bytes([PRESENT]), index)
        except OSError as e:
            raise storage_error(e, f"storing blob {self.sha[:12]}") from None
        self._mark_stored(index, len(block))

    def _mark_stored(self, index: int, nbytes: int) -> None:
        """(Trio thread.) Block ``index`` is written and marked present: it is verified, its
        waiters wake, its claim ends, progress is reported."""
        self.verified[index] = 1
        event = self.inflight.pop(index, None)
        if event is not None:
            event.set()
        if self.map_fd is not None:
            locks.unlock_range(self.map_fd, index)
        for callback in self.progress:
            callback(nbytes)

    def _mark_stored_run(self, first: int, stop: int, skip: Container[int]) -> None:
        """(Trio thread.) ``_mark_stored`` for blocks ``[first, stop)`` but those in ``skip``
        (received and dropped), which a fetch thread has written: one unlock per run."""
        mfd = self.map_fd
        start = first
        for k in range(first, stop + 1):
            if k < stop and k not in skip:
                self.verified[k] = 1
                event = self.inflight.pop(k, None)
                if event is not None:
                    event.set()
                if self.progress:
                    lo, hi = block_bounds(k, self.size)
                    for callback in self.progress:
                        callback(hi - lo)
                continue
            if mfd is not None and k > start:
                locks.unlock_range(mfd, start, k - start)
            start = k + 1
