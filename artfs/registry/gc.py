"""Blob garbage collection (``artfs gc``): free the blobs no live version references.

A commit uploads blobs first and registers the manifest last, so at any moment the store
holds blobs that a commit is about to reference. The collector therefore never deletes a
blob the metadata store has not first *doomed*, in a transaction that excludes commits:

1. finish what an interrupted collection left doomed (delete, then un-doom);
2. read every live version's manifest (most of them before taking any lock: a version's
   manifest never changes and its key is never reused) into a set of referenced blobs on
   disk (``refset.py``: memory stays flat however large the registry);
3. list every blob in the store with its size and last-modified time, keep those nothing
   referenced and older than the grace as candidates, then, in ONE write transaction that
   excludes commits (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: the gc advisory lock, which
   every commit takes in shared mode), read the manifests of versions committed meanwhile
   and doom every listed blob that nothing references and that is older than the grace;
4. delete the doomed blobs (and their block-digest sidecars) from the store;
5. un-doom them, which bumps the gc epoch.

Step 0 deletes the versions whose time to live passed (``artfs ttl``, ``--ttl``) and that
no alias but ``latest`` holds (``Registry.expire``). It also removes the temporary files of uploads that died (nothing written to them for the
grace, and no live writer: ``BlobStore.remove_stale_uploads``).

While a blob is doomed, a commit referencing it is refused inside its transaction
(Conflict: upload again and retry), ``missing_blobs`` reports it missing and uploads of it
are refused. A commit that passed that check holds the lock, so it lands before the marking
(which then sees its references) or after it (and then sees the doomed rows). A commit that
checked blob existence before a whole collection ran sees a new gc epoch in its transaction
and checks again without cached sizes. The grace keeps blobs uploaded for a commit that has
not happened yet. Why this and not a stop-the-world collection: docs/decisions.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import InvalidInput
from ..progress import human_bytes, plural
from .blobrefs import UPLOAD_PROOF_SECONDS
from .core import manifest_blobs
from .meta import VersionKey
from .refset import ReferenceSet

if TYPE_CHECKING:
    from .core import Registry

MANIFEST_PAGE = 16  # manifests per read while computing references outside the lock
LIST_BATCH = 5000  # listed blobs checked against the references at once
DELETE_BATCH = 1000  # blobs deleted from the store, then un-doomed, per batch
DELETE_THREADS = 8
UPLOAD_IDLE_MIN = 60.0  # an upload's temporary file idle this long may go, whatever the grace


@dataclass
class GcReport:
    dry_run: bool
    grace: float
    scanned: int = 0  # blobs listed in the store
    scanned_bytes: int = 0
    versions: int = 0  # live versions whose manifests were read
    referenced: int = 0  # listed blobs some live version references
    young: int = 0  # listed blobs referenced by nothing when scanned but younger than the grace
    doomed: list[tuple[str, int]] = field(default_factory=list)  # (sha256, size) marked
    freed: int = 0  # blobs deleted from the store (dry run: 0)
    freed_bytes: int = 0
    resumed: int = 0  # blobs an interrupted collection had doomed, deleted now
    uploads: int = 0  # abandoned uploads' temporary files removed (dry run: that would be)
    uploads_bytes: int = 0
    proofs: int = 0  # expired upload proofs forgotten (project isolation, blobrefs.py)
    expired: list[str] = field(default_factory=list)  # versions deleted for their TTL (refs)
    seconds: float = 0.0

    @property
    def doomed_bytes(self) -> int:
        return sum(size for _, size in self.doomed)


class GarbageCollector:
    """One collection over a ``Registry``'s stores. ``run`` does every step; the steps are
    methods of their own so tests can stop between them (an interrupted run)."""

    def __init__(
        self,
        registry: Registry,
        *,
        progress: Callable[[str], None] | None = None,
        batch: int = DELETE_BATCH,
    ) -> None:
        self.registry = registry
        self.meta = registry.meta
        self.blobs = registry.blobs
        self.progress = progress or (lambda _msg: None)
        self.batch = batch

    def run(self, grace: float, *, dry_run: bool = False) -> GcReport:
        if isinstance(grace, bool) or not isinstance(grace, int | float) or not grace >= 0:
            raise InvalidInput(f"invalid grace {grace!r}: a number of seconds >= 0")
        if dry_run:  # changes nothing, so it needs no exclusivity either
            return self._collect(grace, dry_run=True)
        with self.meta.gc_run_lock():
            return self._collect(grace, dry_run=False)

    def _collect(self, grace: float, *, dry_run: bool) -> GcReport:
        started = time.monotonic()
        report = GcReport(dry_run=dry_run, grace=float(grace))
        if not dry_run:
            report.resumed = self.finish_doomed()
        report.uploads, report.uploads_bytes = self.abandoned_uploads(grace, dry_run=dry_run)
        if not dry_run:
            report.proofs = self.meta.drop_upload_proofs(
                self.registry.clock() - UPLOAD_PROOF_SECONDS
            )
        # Versions whose time to live passed go first, so their blobs go in this collection
        # (a dry run lists them; their blobs then still count as referenced).
        report.expired = self.registry.expire(dry_run=dry_run)
        candidates, seen = self.candidates(report, grace)
        doomed = self.mark(candidates, seen, dry_run=dry_run)
        report.doomed = [(sha, candidates[sha]) for sha in doomed]
        report.referenced = report.scanned - report.young - len(doomed)
        if not dry_run and doomed:
            report.freed, report.freed_bytes = self.sweep(report.doomed)
        report.seconds = time.monotonic() - started
        return report

    # --- the steps ------------------------------------------------------------------------
    def finish_doomed(self) -> int:
        """Step 1: delete and un-doom what an interrupted collection left doomed."""
        left = self.meta.doomed_blobs()
        if not left:
            return 0
        self.progress(f"finishing {plural(len(left), 'blob')} doomed by an interrupted collection")
        self._delete_and_undoom(left)
        return len(left)

    def abandoned_uploads(self, grace: float, *, dry_run: bool) -> tuple[int, int]:
        """Remove temporary files of uploads that died (a crash, a vanished client): nothing
        written to them for the grace (at least ``UPLOAD_IDLE_MIN``). A running upload's file
        is never removed (the store knows its writers). They are not blobs: no commit can
        reference them, so this needs no marking."""
        idle_since = self.registry.clock() - max(grace, UPLOAD_IDLE_MIN)
        count, size = self.blobs.remove_stale_uploads(idle_since, dry_run=dry_run)
        if count:
            self.progress(
                f"{'would remove' if dry_run else 'removed'} {plural(count, 'abandoned upload')}, "
                f"{human_bytes(size)}"
            )
        return count, size

    def candidates(self, report: GcReport, grace: float) -> tuple[dict[str, int], set[VersionKey]]:
        """Steps 2 and 3 outside any lock: the blobs in the store that no version read here
        references and that are older than the grace (sha256 -> size), and which versions
        were read (the marking transaction reads only the ones committed since).

        The references go to a ``ReferenceSet`` on disk and the store's listing is streamed
        against it in batches, so memory stays flat however many blobs there are. Listing
        after reading the references is safe: a blob a version committed meanwhile
        references is caught by the marking transaction, which reads that version."""
        with ReferenceSet() as referenced:
            seen = self.references(report, referenced)
            cutoff = self.registry.clock() - grace
            candidates: dict[str, int] = {}
            for batch in _batches(self.blobs.list_blobs(), LIST_BATCH):
                known = referenced.referenced([sha for sha, _, _ in batch])
                for sha, size, mtime in batch:
                    report.scanned += 1
                    report.scanned_bytes += size
                    if sha in known:
                        continue
                    if mtime > cutoff:
                        report.young += 1
                    else:
                        candidates[sha] = size
        self.progress(
            f"scanned {plural(report.scanned, 'blob')}, {human_bytes(report.scanned_bytes)}"
        )
        return candidates, seen

    def references(self, report: GcReport, into: ReferenceSet) -> set[VersionKey]:
        """Step 2, outside any lock: put the blobs live versions reference ``into`` the set;
        return which versions were read."""
        seen: set[VersionKey] = set()
        after: VersionKey | None = None
        while page := self.meta.manifests_after(after, MANIFEST_PAGE):
            for key, data in page:
                into.add(manifest_blobs(data))
                seen.add(key)
            after = page[-1][0]
        report.versions = len(seen)
        self.progress(
            f"read {plural(len(seen), 'live version')} referencing {plural(len(into), 'blob')}"
        )
        return seen

    def mark(
        self, candidates: dict[str, int], seen: set[VersionKey], *, dry_run: bool
    ) -> list[str]:
        """Step 3, locked: doom the candidates no version committed since references."""
        if not candidates:
            return []
        return self.meta.mark_doomed(
            candidates, seen, manifest_blobs, self.registry.clock(), dry_run=dry_run
        )

    def sweep(self, doomed: list[tuple[str, int]]) -> tuple[int, int]:
        """Steps 4 and 5: delete the doomed blobs from the store, then un-doom them."""
        self.progress(
            f"deleting {plural(len(doomed), 'blob')}, {human_bytes(sum(s for _, s in doomed))}"
        )
        self._delete_and_undoom([sha for sha, _ in doomed])
        return len(doomed), sum(size for _, size in doomed)

    def _delete_and_undoom(self, shas: Iterable[str]) -> None:
        listed = list(shas)
        with ThreadPoolExecutor(DELETE_THREADS) as pool:
            for i in range(0, len(listed), self.batch):
                chunk = listed[i : i + self.batch]
                # Rows go only after their blobs are gone: a crash in between leaves them
                # doomed, and the next collection finishes them (finish_doomed).
                list(pool.map(self.blobs.delete, chunk))
                self.meta.undoom(chunk)


def _batches(
    items: Iterable[tuple[str, int, float]], n: int
) -> Iterator[list[tuple[str, int, float]]]:
    batch: list[tuple[str, int, float]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch
