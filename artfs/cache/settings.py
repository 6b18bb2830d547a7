"""Tuning knobs of the blob cache, in one immutable place so tests and benchmarks can vary them."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import InvalidInput

FETCH_THREADS_ENV = "ARTFS_FETCH_THREADS"


def default_fetch_threads() -> int:
    """``ARTFS_FETCH_THREADS`` when set (0 turns the threads off), else derived from the
    machine's cores: see ``CacheTuning.fetch_threads``."""
    raw = os.environ.get(FETCH_THREADS_ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0:
            raise InvalidInput(f"{FETCH_THREADS_ENV} must be 0 (off) or a number of threads")
        return value
    return min(os.cpu_count() or 1, 8)


@dataclass(frozen=True, slots=True)
class CacheTuning:
    """Numbers that trade memory, parallelism and latency; the defaults suit a LAN registry.

    ``timeout`` bounds every wait that could otherwise hang: a source that stops sending
    for that long, the block-digest request, and waiting for another process's fetch that
    makes no progress. Each surfaces as ``Unavailable``.
    """

    timeout: float = 30.0
    readahead_initial: int = 1 << 20
    readahead_max: int = 64 << 20
    request_bytes: int = 32 << 20
    parallel_requests: int = 4
    prefetch_parallel: int = 8  # whole small blobs fetched at once by prefetch_soon
    prefetch_queue: int = 4096  # blobs waiting for prefetch_soon's workers, at most
    prefetch_bytes: int = 64 << 20  # bytes queued or in flight for prefetch_soon, at most
    prefetch_whole_max: int = 8 << 20  # prefetch_soon fetches blobs up to this whole, else the head
    # Opt-in: a reader that keeps missing at random offsets of one blob gets the rest of
    # the blob fetched in the background (a memory-mapped dataset sampled at random will
    # touch all of it), after this many misses that waited for the network (0 = never:
    # random reads then move only their own blocks). The blobs being filled at once add up
    # to at most ``random_fill_max`` and a quarter of the cache's limit (a fill pins its
    # blob); in ``request_bytes`` pieces sharing the read-ahead's ``parallel_requests``.
    random_fill_after: int = 0
    random_fill_max: int = 16 << 30
    inline_verify_bytes: int = 4 << 20  # verify more than this at once in a worker thread
    # Fetch threads (clients that can hand a thread a blob's URL: HTTP registries). Each
    # receives one ranged request at a time into its own buffer, checks every block and
    # writes it to the cache; the trio thread only marks blocks verified and answers
    # readers. -1: ``default_fetch_threads()`` (ARTFS_FETCH_THREADS, else from the cores);
    # 0: everything on the trio thread. Requests beyond the threads busy run there too.
    fetch_threads: int = -1
    # Shorter requests stay on the trio thread (a reader's own small fetch, a random read's
    # block): handing them to a thread and back costs more than checking a few blocks inline.
    thread_min_bytes: int = 2 << 20
    # A complete blob not yet checked by this process (after a reboot) is checked whole before
    # a passthrough open up to this size; a larger one is read through the daemon, checked
    # block by block, and passed through from the open after its last block was checked.
    passthrough_verify_max: int = 64 << 20
    poll_min: float = 0.001
    poll_max: float = 0.02
    evict_low_water: float = 0.9  # when evicting, go down to this fraction of the limit
    tmp_max_age: float = 3600.0  # stale temp files older than this are removed at start

    def __post_init__(self) -> None:
        if self.random_fill_after < 0:
            raise InvalidInput("the random-fill threshold must be 0 (never) or a number of misses")
        if self.fetch_threads < 0:
            object.__setattr__(self, "fetch_threads", default_fetch_threads())
