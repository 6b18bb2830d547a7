"""Blob integrity on the server: the pure rules, and one check of one blob.

A stored blob can rot (a bad disk, a hand-edited file, an S3 object overwritten) or vanish.
Clients verify every block they read, so they never return wrong bytes, but only the server
can repair its store. Three things find damage:

- a client that got bytes not matching the published digests *reports* the blob
  (``POST /v1/blobs/{sha}/damage``); the server re-checks that blob at once
  (``server/integrity.py``), admitted by a ``CheckGate``;
- ``artfs fsck`` re-hashes the whole store (``fsck.py``);
- a server's background scrub re-hashes it continuously at ``--scrub-rate`` bytes/s.

A check re-hashes the stored bytes (paced by a ``Pacer``) and judges them (``judge``). A
damaged blob is *quarantined*: moved out of the store's namespace (local:
``blobs/.quarantine/``; S3: ``PREFIX/quarantine/``), so nothing serves it, every "which blobs
are missing" answer lists it, and the next upload of the right bytes is stored as new
rather than answered "already present". The metadata store records it (``damaged_blobs``,
with the versions that reference it in ``damaged_versions``), versions show it
(``VersionInfo.damaged``), and an upload of the right bytes clears the record (healing).

The gate, the pacer and the verdict are pure (clock passed in) and unit-tested; the store
and database I/O is in ``check_blob`` and the stores' primitives.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..hashing import BlobHasher, block_count
from .core import manifest_blobs
from .meta import DamagedBlob, VersionKey

if TYPE_CHECKING:
    from .core import Registry

__all__ = ["DamagedBlob", "Verdict", "check_blob", "judge"]

log = logging.getLogger("artfs.registry")

RECHECK_AFTER = 300.0  # seconds: a blob judged is not re-checked on reports before this
CHECKS_PER_SECOND = 0.2  # sustained report-triggered checks (a hostile client can't do more)
CHECK_BURST = 5  # report-triggered checks that may start back to back
REMEMBERED = 10_000  # recently checked blobs remembered by the gate


class Verdict(enum.Enum):
    OK = "ok"
    DAMAGED = "damaged"  # the bytes don't hash to the blob's name: quarantined
    MISSING = "missing"  # the store does not hold it
    SIDECAR = "sidecar"  # bytes intact, stored block digests wrong or absent: rewritten


def judge(sha256: str, hasher: BlobHasher | None, sidecar: bytes | None) -> Verdict:
    """What a re-hash says: ``hasher`` over the stored bytes (None: not stored) and the
    stored block-digest sidecar (None: none)."""
    if hasher is None:
        return Verdict.MISSING
    if hasher.hexdigest() != sha256:
        return Verdict.DAMAGED
    if block_count(hasher.size) > 1 and sidecar != hasher.block_digests():
        return Verdict.SIDECAR
    return Verdict.OK


class Pacer:
    """A bytes/s budget: ``delay(n)`` is how long to wait before using ``n`` more bytes so the
    average stays at ``rate`` (bursts up to one second's worth). ``rate`` <= 0: no limit."""

    def __init__(self, rate: float, *, now: float = 0.0) -> None:
        self.rate = rate
        self._free_at = now  # virtual time at which the budget used so far is paid off

    def delay(self, nbytes: int, now: float) -> float:
        if self.rate <= 0:
            return 0.0
        self._free_at = max(self._free_at, now - 1.0) + nbytes / self.rate
        return max(0.0, self._free_at - now)


def paced(rate: float, clock: Callable[[], float] = time.monotonic) -> Callable[[int], None]:
    """A callback that sleeps (this thread) to keep the bytes it is told of under ``rate``."""
    pacer = Pacer(rate, now=clock())

    def pace(nbytes: int) -> None:
        wait = pacer.delay(nbytes, clock())
        if wait > 0:
            time.sleep(wait)

    return pace


class Admission(enum.Enum):
    STARTED = "started"  # a check starts now
    RUNNING = "running"  # one is already running for this blob
    RECENT = "recent"  # it was judged moments ago
    LIMITED = "limited"  # too many checks lately: the scrub or fsck will get to it


class CheckGate:
    """Which damage reports start a re-check: one at a time per blob, none for a blob judged
    within ``recheck_after``, and at most ``burst`` then ``per_second`` overall, so a
    client reporting every blob makes the server re-hash at a bounded rate."""

    def __init__(
        self,
        *,
        recheck_after: float = RECHECK_AFTER,
        per_second: float = CHECKS_PER_SECOND,
        burst: int = CHECK_BURST,
    ) -> None:
        self.recheck_after = recheck_after
        self.per_second = per_second
        self.burst = burst
        self.running: set[str] = set()
        self._recent: OrderedDict[str, float] = OrderedDict()  # sha -> when found intact
        self._tokens = float(burst)
        self._at: float | None = None

    def admit(self, sha256: str, now: float) -> Admission:
        if sha256 in self.running:
            return Admission.RUNNING
        seen = self._recent.get(sha256)
        if seen is not None and now - seen < self.recheck_after:
            return Admission.RECENT
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens < 1:
            return Admission.LIMITED
        self._tokens -= 1
        self.running.add(sha256)
        return Admission.STARTED

    def done(self, sha256: str, verdict: Verdict | None, now: float) -> None:
        """A started check ended (``verdict`` None: it failed, e.g. the store was down)."""
        self.running.discard(sha256)
        if verdict is None:
            return  # not judged: a later report may try again
        # Judged, whatever the verdict: intact stays intact, a damaged blob is quarantined
        # (nothing left to find), a missing one is recorded. Reports about it wait.
        self._recent[sha256] = now
        self._recent.move_to_end(sha256)
        while len(self._recent) > REMEMBERED:
            self._recent.popitem(last=False)


def referencing(registry: Registry, digests: Iterable[str]) -> dict[str, list[VersionKey]]:
    """The live versions whose manifests reference each of ``digests`` (one pass over every
    manifest: damage is rare, and this runs in a background thread or fsck)."""
    wanted = set(digests)
    found: dict[str, list[VersionKey]] = {sha: [] for sha in wanted}
    after: VersionKey | None = None
    while wanted and (page := registry.meta.manifests_after(after, 16)):
        for key, data in page:
            for sha in manifest_blobs(data) & wanted:
                found[sha].append(key)
        after = page[-1][0]
    return found


def check_blob(
    registry: Registry,
    sha256: str,
    *,
    detail: str = "",
    pace: Callable[[int], None] | None = None,
    quarantine: bool = True,
) -> Verdict:
    """Re-hash one stored blob and act on the verdict: quarantine and record a damaged one,
    record a missing one that live versions reference, rewrite a wrong sidecar, clear a
    record the blob no longer deserves. ``quarantine=False``: judge only (fsck --dry-run)."""
    store = registry.blobs
    hasher, token = store.rehash(sha256, pace)
    verdict = judge(sha256, hasher, None if hasher is None else store.read_sidecar(sha256))
    if not quarantine:
        return verdict
    if verdict is Verdict.SIDECAR:
        assert hasher is not None
        log.warning("blob %s: block digests were wrong; rewritten from its bytes", sha256)
        store.write_sidecar(sha256, hasher.block_digests())
    if verdict in (Verdict.OK, Verdict.SIDECAR):
        registry.meta.clear_damage([sha256])
        return verdict
    if verdict is Verdict.MISSING and any(
        d.sha256 == sha256 and d.state == Verdict.DAMAGED.value
        for d in registry.meta.damage_records()
    ):
        return verdict  # quarantined earlier: its record stays "damaged"
    if verdict is Verdict.DAMAGED:
        assert hasher is not None
        what = f"stored bytes hash to {hasher.hexdigest()[:16]}... ({hasher.size} bytes)"
        if not store.quarantine(sha256, token):
            return Verdict.OK  # replaced by a verified upload while we hashed
        detail = f"{what}; {detail}" if detail else what
    record(registry, {sha256: (verdict, detail)})
    return verdict


def record(registry: Registry, found: dict[str, tuple[Verdict, str]]) -> None:
    """Record damaged / missing blobs with the versions that reference them (a missing blob
    nothing references is no damage: the garbage collector may have freed it)."""
    users = referencing(registry, found)
    now = registry.clock()
    for sha, (verdict, detail) in found.items():
        if verdict is Verdict.MISSING and not users[sha]:
            continue
        registry.meta.record_damage(sha, verdict.value, now, detail, users[sha])
        log.error(
            "blob %s is %s (%s): %d live version(s) affected; re-upload it (artfs put) to heal",
            sha256_short(sha),
            verdict.value,
            detail or "no detail",
            len(users[sha]),
        )


def sha256_short(sha: str) -> str:
    return sha[:16] + "..."
