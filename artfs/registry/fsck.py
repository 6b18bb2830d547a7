"""``artfs fsck``: re-hash every stored blob, find the missing ones, quarantine and report.

Run on the server's host with the options given to ``artfs serve`` (like ``artfs gc``), with
servers running or not:

1. list every blob in the store and re-hash it (``--rate`` bytes/s at most): a blob whose
   bytes don't hash to its name is quarantined (moved aside, ``integrity.py``); a wrong or
   absent block-digest sidecar of intact bytes is rewritten;
2. read every live version's manifest: a blob it references that the store does not hold
   is *missing* (a lost disk, a hand-deleted file, an S3 lifecycle rule gone wrong);
3. record both in the metadata store with the versions they break (``damaged_blobs``), so
   ``artfs info``/``ls`` show those versions as damaged and uploads know to heal them; clear
   the records of blobs now intact (healed by an upload meanwhile, or by hand);
4. check every live version's stored manifest against its digest, in both forms: a canonical
   form (what mounts fetch) that does not match is rebuilt from the JSON form when that one
   matches; a version with no form that matches is reported (its manifest is lost: restore
   the metadata database from a backup).

The listed blobs go to a ``ReferenceSet`` on disk, so memory stays flat however large the
store. ``--dry-run`` changes nothing and reports what it would do.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ArtfsError, InvalidInput
from ..manifest_stream import canonical_from_json
from ..progress import human_bytes, plural
from .core import manifest_blobs
from .integrity import Verdict, judge, paced
from .meta import VersionKey
from .refset import ReferenceSet

if TYPE_CHECKING:
    from .core import Registry

MANIFEST_PAGE = 16
PROGRESS_EVERY = 10.0  # seconds between progress lines


@dataclass
class FsckReport:
    dry_run: bool
    scanned: int = 0  # blobs listed and re-hashed
    scanned_bytes: int = 0
    versions: int = 0  # live versions whose manifests were read
    damaged: dict[str, str] = field(default_factory=dict)  # sha -> what the bytes hash to
    missing: list[str] = field(default_factory=list)  # referenced, not stored
    sidecars: int = 0  # block digests rewritten (or that would be)
    cleared: list[str] = field(default_factory=list)  # records of blobs now intact
    quarantined: set[str] = field(default_factory=set)  # missing ones quarantined earlier
    users: dict[str, list[str]] = field(default_factory=dict)  # sha -> "p/a:vN" using it
    seconds: float = 0.0
    manifests_rebuilt: list[str] = field(default_factory=list)  # "p/a:vN", canonical form
    manifests_lost: list[str] = field(default_factory=list)  # "p/a:vN": no form matches

    @property
    def clean(self) -> bool:
        return not self.damaged and not self.missing and not self.manifests_lost


class Fsck:
    def __init__(
        self,
        registry: Registry,
        *,
        rate: float = 0.0,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate < 0:
            raise InvalidInput(f"invalid rate {rate!r}: bytes per second >= 0 (0: no limit)")
        self.registry = registry
        self.meta = registry.meta
        self.store = registry.blobs
        self.rate = rate
        self.progress = progress or (lambda _msg: None)

    def run(self, *, dry_run: bool = False) -> FsckReport:
        started = time.monotonic()
        report = FsckReport(dry_run=dry_run)
        records = {d.sha256: d for d in self.meta.damage_records()}
        with ReferenceSet() as listed:
            intact, vanished = self.rehash_all(report, listed, set(records), dry_run=dry_run)
            users = self.references(report, listed, vanished)
        labels = self.meta.version_labels({k for keys in users.values() for k in keys})
        report.users = {sha: sorted(labels[k] for k in keys) for sha, keys in users.items()}
        if not dry_run:
            now = self.registry.clock()
            for sha, detail in report.damaged.items():
                self.meta.record_damage(sha, "damaged", now, detail, users.get(sha, []))
            for sha in report.missing:
                earlier = records.get(sha)
                if earlier is not None and earlier.state == "damaged":
                    state, detail = "damaged", earlier.detail  # still quarantined
                else:
                    state, detail = "missing", "not in the store"
                self.meta.record_damage(sha, state, now, detail, users[sha])
        report.quarantined = {
            sha for sha in report.missing if sha in records and records[sha].state == "damaged"
        }
        # Records of blobs found intact (healed meanwhile) or no longer used by anything.
        known = set(records)
        stale = (known & intact) | {
            sha for sha in known - intact if sha not in report.damaged and not users.get(sha)
        }
        report.cleared = sorted(stale)
        if not dry_run and stale:
            self.meta.clear_damage(stale)
        self.check_manifests(report, dry_run=dry_run)
        report.seconds = time.monotonic() - started
        return report

    def check_manifests(self, report: FsckReport, *, dry_run: bool) -> None:
        """Step 4: every live version's stored manifest against its digest."""
        rebuilt: list[VersionKey] = []
        lost: list[VersionKey] = []
        after: VersionKey | None = None
        while page := self.meta.manifest_forms_after(after, MANIFEST_PAGE):
            for key, digest, json_gz, canonical_gz in page:
                if canonical_gz is not None and _matches(_gunzip(canonical_gz), digest):
                    continue  # (the JSON form was read in step 2; the canonical one is served)
                try:
                    doc = json.loads(gzip.decompress(json_gz))
                    canonical = canonical_from_json(doc)
                except (ValueError, KeyError, TypeError, EOFError, OSError, zlib.error, ArtfsError):
                    canonical = None
                if canonical is None or not _matches(canonical, digest):
                    lost.append(key)
                elif canonical_gz is not None:  # (none stored: converted at its first read)
                    rebuilt.append(key)
                    if not dry_run:
                        data = gzip.compress(canonical, compresslevel=1, mtime=0)
                        self.meta.replace_canonical_gz(key, digest, "refs" in doc, data)
            after = page[-1][0]
        labels = self.meta.version_labels({*rebuilt, *lost})
        report.manifests_rebuilt = sorted(labels[k] for k in rebuilt)
        report.manifests_lost = sorted(labels[k] for k in lost)

    def rehash_all(
        self, report: FsckReport, listed: ReferenceSet, known: set[str], *, dry_run: bool
    ) -> tuple[set[str], set[str]]:
        """Step 1: re-hash every listed blob; quarantine the damaged (unless ``dry_run``).
        Returns (blobs with a damage record (``known``) found intact, blobs gone while
        listed)."""
        pace = paced(self.rate) if self.rate > 0 else None
        intact: set[str] = set()
        vanished: set[str] = set()
        last = time.monotonic()
        for sha, size, _ in self.store.list_blobs():
            listed.add([sha])
            hasher, token = self.store.rehash(sha, pace)
            report.scanned += 1
            report.scanned_bytes += size
            verdict = judge(sha, hasher, None if hasher is None else self.store.read_sidecar(sha))
            if verdict is Verdict.MISSING:
                vanished.add(sha)  # deleted meanwhile (the collector): missing if referenced
            elif verdict is Verdict.DAMAGED:
                assert hasher is not None
                report.damaged[sha] = (
                    f"stored bytes hash to {hasher.hexdigest()[:16]}... ({hasher.size} bytes)"
                )
                if not dry_run and not self.store.quarantine(sha, token):
                    del report.damaged[sha]  # healed by an upload meanwhile
            else:
                if verdict is Verdict.SIDECAR:
                    assert hasher is not None
                    report.sidecars += 1
                    if not dry_run:
                        self.store.write_sidecar(sha, hasher.block_digests())
                if sha in known:
                    intact.add(sha)
            if time.monotonic() - last > PROGRESS_EVERY:
                last = time.monotonic()
                self.progress(
                    f"re-hashed {plural(report.scanned, 'blob')}, {human_bytes(report.scanned_bytes)}"
                )
        self.progress(
            f"re-hashed {plural(report.scanned, 'blob')}, {human_bytes(report.scanned_bytes)}"
        )
        return intact, vanished

    def references(
        self, report: FsckReport, listed: ReferenceSet, vanished: set[str]
    ) -> dict[str, list[VersionKey]]:
        """Step 2: read every live manifest; find referenced blobs the store lacks, and which
        versions use each damaged or missing blob."""
        bad = set(report.damaged)
        missing: set[str] = set()
        users: dict[str, list[VersionKey]] = {}
        after: VersionKey | None = None
        while page := self.meta.manifests_after(after, MANIFEST_PAGE):
            for key, data in page:
                report.versions += 1
                try:
                    blobs = manifest_blobs(data)
                except (ValueError, KeyError, TypeError, EOFError, OSError, zlib.error):
                    continue  # a damaged JSON form: step 4 says so (and rebuilds what it can)
                present = listed.referenced(sorted(blobs))
                gone = (blobs - present) | (blobs & vanished)
                missing |= gone
                for sha in gone | (blobs & bad):
                    users.setdefault(sha, []).append(key)
            after = page[-1][0]
        report.missing = sorted(missing)
        self.progress(f"read {plural(report.versions, 'live version')}")
        return users


def _gunzip(data: bytes) -> bytes | None:
    try:
        return gzip.decompress(data)
    except (EOFError, zlib.error, OSError):
        return None


def _matches(canonical: bytes | None, digest: str) -> bool:
    """Whether canonical manifest bytes are those of ``digest`` (what a mount checks)."""
    return canonical is not None and hashlib.sha256(canonical).hexdigest() == digest


def format_report(report: FsckReport) -> list[str]:
    """What ``artfs fsck`` prints: one line per damaged / missing blob, then a summary."""
    lines: list[str] = []
    act = "would quarantine" if report.dry_run else "quarantined"
    fix = "would rebuild" if report.dry_run else "rebuilt"
    for label in report.manifests_rebuilt:
        lines.append(
            f"manifest\t{label}\tits canonical form did not match its digest; {fix} from JSON"
        )
    for label in report.manifests_lost:
        lines.append(
            f"manifest\t{label}\tno stored form matches its digest: restore the metadata "
            "database from a backup"
        )
    for sha, detail in sorted(report.damaged.items()):
        users = ", ".join(report.users.get(sha, [])) or "no live version"
        lines.append(f"damaged\t{sha}\t{act}; {detail}; used by {users}")
    for sha in report.missing:
        users = ", ".join(report.users.get(sha, []))
        if sha in report.quarantined:
            lines.append(f"damaged\t{sha}\tquarantined earlier; used by {users}")
        else:
            lines.append(f"missing\t{sha}\tused by {users}")
    summary = (
        f"{plural(report.scanned, 'blob')} re-hashed ({human_bytes(report.scanned_bytes)}), "
        f"{plural(report.versions, 'live version')} read in {report.seconds:.1f}s: "
        f"{len(report.damaged)} damaged, {len(report.missing)} missing"
    )
    if report.sidecars:
        done = "to rewrite" if report.dry_run else "rewritten"
        summary += f", {plural(report.sidecars, 'block-digest file')} {done}"
    if report.cleared:
        done = "to clear" if report.dry_run else "cleared"
        summary += f", {plural(len(report.cleared), 'earlier record')} {done}"
    if report.manifests_rebuilt:
        done = "to rebuild" if report.dry_run else "rebuilt"
        summary += f", {plural(len(report.manifests_rebuilt), 'canonical manifest')} {done}"
    if report.manifests_lost:
        summary += f", {plural(len(report.manifests_lost), 'manifest')} lost"
    if report.damaged or report.missing:
        summary += (
            "; heal by uploading the right bytes: artfs put of any version holding them "
            "(the registry asks for exactly these blobs)"
        )
    if report.dry_run:
        summary += "; dry run, nothing changed"
    lines.append(summary)
    return lines
