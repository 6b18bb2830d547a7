"""The server's integrity work: re-checks of blobs clients report damaged, and the scrub.

``IntegrityService.run`` is started in the server's nursery and owns a nursery of its own,
so every check and the scrub end with the server. The re-hashing itself runs in worker
threads (``Registry.check_blob``) paced by ``integrity.paced``; on shutdown a flag makes the
pacing callback stop a check within one chunk, so the server never waits out a long hash.

Reports are admitted by a ``CheckGate`` (one check per blob at a time, none for a blob found
intact minutes ago, a few per second overall), so a client flooding reports costs the
server a bounded re-hash rate. The scrub walks the whole store at ``--scrub-rate`` bytes/s
(off by default: several servers on one store would each scrub it; run it on one), then
pauses and starts over. See docs/decisions.md, "Blob integrity".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any

import trio

from ..config import parse_size
from ..errors import ArtfsError
from ..registry import Registry
from ..registry.integrity import Admission, CheckGate, Pacer, Verdict

log = logging.getLogger("artfs.server.integrity")

REPORT_CHECK_RATE = 256 << 20  # bytes/s each report-triggered re-hash may read, at most
REPORT_CHECKS = 2  # report-triggered re-hashes running at once, at most
SCRUB_PAUSE = 3600.0  # seconds between two scrub passes over the whole store
LIST_BATCH = 1000  # blobs listed per worker-thread call while scrubbing


@dataclass(frozen=True, slots=True)
class IntegrityOptions:
    """``artfs serve --scrub-rate``: bytes/s the background scrub re-hashes (0: no scrub)."""

    scrub_rate: float = 0.0
    scrub_pause: float = SCRUB_PAUSE


def add_integrity_arguments(parser: Any) -> None:
    parser.add_argument(
        "--scrub-rate",
        default="0",
        metavar="BYTES/S",
        help="re-hash every stored blob in the background at this rate (e.g. 50M) and "
        "quarantine damaged ones; 0 (default): no scrub (run it on one server per store)",
    )


def integrity_options(args: Any) -> IntegrityOptions:
    return IntegrityOptions(float(parse_size(str(getattr(args, "scrub_rate", "0")))))


class _Stopped(Exception):
    """The server is stopping: a running re-hash gives up (the blob stays as it was)."""


class IntegrityService:
    def __init__(
        self,
        registry: Registry,
        options: IntegrityOptions = IntegrityOptions(),
        *,
        gate: CheckGate | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.options = options
        self.gate = gate or CheckGate()
        self.clock = clock
        self._nursery: trio.Nursery | None = None
        self._stop = threading.Event()
        self._checks = trio.CapacityLimiter(REPORT_CHECKS)
        self.checks = 0  # re-checks done (reports)
        self.found = 0  # blobs found damaged and quarantined (reports and scrub)
        self.scrubbed_blobs = 0
        self.scrubbed_bytes = 0
        self.scrub_passes = 0

    def stats(self) -> dict[str, int]:
        return {
            "integrity_checks": self.checks,
            "integrity_found": self.found,
            "scrub_blobs": self.scrubbed_blobs,
            "scrub_bytes": self.scrubbed_bytes,
            "scrub_passes": self.scrub_passes,
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Until cancelled (the server stopping): take reports, and scrub if asked to."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.options.scrub_rate > 0:
                nursery.start_soon(self._scrub)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._stop.set()  # running hashes give up within one chunk
                self._nursery = None

    def report(self, sha256: str, detail: str) -> Admission:
        """A client says this blob's bytes were wrong: re-check it now if the gate allows."""
        if self._nursery is None:
            return Admission.LIMITED
        admission = self.gate.admit(sha256, self.clock())
        if admission is Admission.STARTED:
            log.warning("blob %s reported damaged (%s): re-checking", sha256, detail or "-")
            self._nursery.start_soon(self._check, sha256, detail)
        return admission

    def _pace(self, rate: float) -> Callable[[int], None]:
        pacer = Pacer(rate, now=time.monotonic())
        stop = self._stop

        def pace(nbytes: int) -> None:
            if stop.is_set():
                raise _Stopped
            wait = pacer.delay(nbytes, time.monotonic())
            if wait > 0 and stop.wait(wait):
                raise _Stopped

        return pace

    async def _run_check(self, sha256: str, detail: str, rate: float) -> Verdict | None:
        fn = partial(self.registry.check_blob, sha256, detail=detail, pace=self._pace(rate))
        try:
            verdict = Verdict(await trio.to_thread.run_sync(fn))
        except _Stopped:
            return None
        except ArtfsError as e:
            log.error("checking blob %s failed: %s", sha256, e)
            return None
        if verdict is Verdict.DAMAGED:
            self.found += 1  # quarantined now
        return verdict

    async def _check(self, sha256: str, detail: str) -> None:
        verdict: Verdict | None = None
        try:
            async with self._checks:
                rate = max(self.options.scrub_rate, REPORT_CHECK_RATE)
                verdict = await self._run_check(sha256, detail, rate)
                self.checks += 1
                log.warning("blob %s re-checked: %s", sha256, verdict.value if verdict else "-")
        finally:
            self.gate.done(sha256, verdict, self.clock())

    async def _scrub(self) -> None:
        while True:
            await self._scrub_pass()
            self.scrub_passes += 1
            await trio.sleep(self.options.scrub_pause)

    async def _scrub_pass(self) -> None:
        """Re-hash every stored blob once, all paced by one budget of ``scrub_rate``."""
        listing: Iterator[tuple[str, int, float]] = self.registry.blobs.list_blobs()
        pacer_budget = self._pace(self.options.scrub_rate)
        while batch := await trio.to_thread.run_sync(lambda: list(islice(listing, LIST_BATCH))):
            for sha, size, _ in batch:
                if sha in self.gate.running:
                    continue
                fn = partial(self.registry.check_blob, sha, detail="scrub", pace=pacer_budget)
                try:
                    verdict = Verdict(await trio.to_thread.run_sync(fn))
                except _Stopped:
                    return
                except ArtfsError as e:
                    log.error("scrub: checking blob %s failed: %s", sha, e)
                    continue
                self.scrubbed_blobs += 1
                self.scrubbed_bytes += size
                if verdict is Verdict.DAMAGED:
                    self.found += 1
