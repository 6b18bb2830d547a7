"""Publishing a draft as a new version, atomically and at most once.

Order (each step leaves the draft intact if it fails):

1. freeze the draft (every change answers EBUSY) and wait briefly for files
   still open for writing: FUSE sends RELEASE after ``close()`` returns, so a
   commit right after ``cp`` may see writers for a moment; any left after
   ``writer_grace`` seconds refuse the commit, naming the files;
2. hash what is not known yet (digests computed while writing, or by an
   earlier attempt, are reused), in worker threads, and build the manifest;
3. create the project/artifact if needed;
4. record ``PendingCommit(digest, floor)`` durably, *then* upload the missing
   blobs and register the version. A retry after a lost response or a crash
   first looks for a version newer than ``floor`` with the same digest and, if
   there is one, takes it as its own instead of committing again — so a retry
   never makes a second version, even if someone else committed in between
   (the registry's identical-content rule alone would not, with ``allow_duplicate``);
5. meanwhile (from step 3 on, concurrently with the uploads) stage the written
   files in the blob cache: hard-linked into its temp dir and verified there, in
   worker threads; once the version exists, drop the draft and publish them, so
   reading ``vN`` moves no bytes over the network. A staged blob of a failed
   commit is discarded before the draft is writable again.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from .. import manifest_extras
from ..cache.ingest import StagedBlob
from ..client.base import RegistryClient
from ..errors import ArtfsError, Conflict, IntegrityError, InvalidInput, NotFound
from ..hashing import hash_file
from ..manifest import Manifest, check_paths
from ..models import ArtifactInfo, CommitResult
from ..names import alias_name, version_label
from ..progress import Progress
from ..publish import check_writable, creation_type, refuse_empty, upload_and_commit
from ..refs.drafts import hash_draft_refs, inherited_refs, is_ref_file, ref_pair
from ..refs.drafts import with_refs as refs_added
from ..refs.publish import manifest_refs
from .model import Draft, PendingCommit, SnapshotFile
from .store import DraftStore

log = logging.getLogger(__name__)

HASH_PARALLELISM = 2
STAGE_PARALLELISM = 2  # files hashed into the cache at once, while the uploads run
WRITER_GRACE = 2.0

ProgressFn = Callable[[str, int, int], None]
"""``progress(phase, done_bytes, total_bytes)``; phases: ``hashing``, ``uploading``."""


class CommitCache(Protocol):
    """What a commit needs from the blob cache (``BlobCache``)."""

    async def stage_file(self, sha256: str, src: Path) -> StagedBlob: ...

    async def publish_staged(self, staged: StagedBlob) -> Path: ...

    def discard_staged(self, staged: StagedBlob) -> None: ...

    def cached_bytes(self, sha256: str, size: int) -> int: ...


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    result: CommitResult
    uploaded: int  # bytes sent to the registry by this attempt
    recovered: bool  # an earlier attempt had landed; this one only confirmed it

    @property
    def ref(self) -> str:
        return self.result.version.ref


class _PhaseProgress(Progress):
    """A silent ``Progress`` that reports every advance to a callback."""

    def __init__(self, phase: str, total: int, report: ProgressFn | None) -> None:
        super().__init__(phase, total, enabled=False)
        self._report = report
        if report is not None:
            report(phase, 0, total)

    def advance(self, nbytes: int) -> None:
        super().advance(nbytes)
        if self._report is not None:
            self._report(self.label, self.done, self.total)


@dataclass(frozen=True, slots=True)
class _Publish:
    """What the version gets besides its files (checked once, passed down as one value)."""

    aliases: tuple[str, ...]
    metadata: dict[str, Any] | None
    description: str
    type: str | None
    creator: str
    inputs: tuple[str, ...]
    observed_inputs: tuple[str, ...]
    progress: ProgressFn | None
    tags: tuple[str, ...] = ()
    ttl: float | None = None
    allow_duplicate: bool = False
    allow_empty: bool = False


async def commit_draft(
    client: RegistryClient,
    cache: CommitCache | None,
    store: DraftStore,
    draft_id: int,
    *,
    aliases: Iterable[str] = (),
    metadata: dict[str, Any] | None = None,
    description: str = "",
    type: str | None = None,
    creator: str = "",
    progress: ProgressFn | None = None,
    writer_grace: float = WRITER_GRACE,
    inputs: Iterable[str] = (),
    observed_inputs: Iterable[str] = (),
    tags: Iterable[str] = (),
    ttl: float | None = None,
    allow_duplicate: bool = False,
    allow_empty: bool = False,
) -> CommitOutcome:
    """Publish the draft; it is gone on success and untouched (writable again) on failure.

    ``inputs`` are declared lineage; ``observed_inputs`` (``p/a:vN``) what the mount saw
    the draft's writers read: recorded as such, dropped where no longer readable."""
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidInput("metadata must be a JSON object")
    wanted = _Publish(
        tuple(alias_name(a) for a in aliases),
        metadata,
        description,
        type,
        creator,
        tuple(inputs),
        tuple(observed_inputs),
        progress,
        tuple(tags),
        ttl,
        allow_duplicate,
        allow_empty,
    )
    draft = store.begin_commit(draft_id)
    staged: list[StagedBlob] = []
    try:
        await _wait_for_writers(store, draft, writer_grace)
        outcome = await _publish(client, store, draft, wanted, cache, staged)
    except BaseException:
        if cache is not None:
            for blob in staged:  # may share the draft's files: gone before they are writable
                cache.discard_staged(blob)
        store.end_commit(draft_id)
        raise
    store.finish_commit(draft_id)
    if cache is not None:
        await _publish_staged(cache, staged, outcome.result)
    return outcome


async def _wait_for_writers(store: DraftStore, draft: Draft, grace: float) -> None:
    deadline = trio.current_time() + grace
    while writers := store.writers(draft.id):
        if trio.current_time() >= deadline:
            shown = ", ".join(writers[:3]) + (" …" if len(writers) > 3 else "")
            raise Conflict(
                f"cannot commit {draft.key}: still open for writing: {shown}; close it and retry"
            )
        await trio.sleep(0.05)


async def _hash_unknown(
    store: DraftStore, files: list[SnapshotFile], progress: ProgressFn | None
) -> dict[str, str]:
    """sha256 of every file, hashing (in threads) only those not known yet."""
    digests = {f.path: f.sha256 for f in files if f.sha256 is not None}
    todo = [f for f in files if f.sha256 is None]
    # The bytes written to the draft, those hashed while being written already done: a
    # draft hashed in the background shows its size, not "0 B / 0 B". Inherited files
    # (no local source) are not hashed at all.
    written = [f for f in files if f.source is not None or f.sha256 is None]
    meter = _PhaseProgress("hashing", sum(f.size for f in written), progress)
    meter.advance(sum(f.size for f in written if f.sha256 is not None))
    limiter = trio.CapacityLimiter(HASH_PARALLELISM)

    async def one(f: SnapshotFile) -> None:
        if f.source is None:
            raise IntegrityError(f"{f.path}: inherited file without a known digest")
        stamp = store.stamp_of(f.source)
        try:
            hasher = await trio.to_thread.run_sync(hash_file, f.source, limiter=limiter)
        except OSError as e:
            raise ArtfsError(f"reading {f.path} of the draft: {e.strerror or e}") from None
        if hasher.size != f.size:
            raise Conflict(f"{f.path} changed while being hashed; retry the commit")
        digests[f.path] = hasher.hexdigest()
        store.remember_hash(f.node, hasher.hexdigest(), stamp)
        meter.advance(f.size)

    async with trio.open_nursery() as nursery:
        for f in todo:
            nursery.start_soon(one, f)
    return digests


async def _publish(
    client: RegistryClient,
    store: DraftStore,
    draft: Draft,
    wanted: _Publish,
    cache: CommitCache | None,
    staged: list[StagedBlob],
) -> CommitOutcome:
    every = store.snapshot(draft.id)
    shape = store.shape(draft.id)  # its links (checked: inside the version), dirs, x bits
    refuse_empty(f"draft {draft.key}", len(every) + len(shape.symlinks), wanted.allow_empty)
    check_paths(f.path for f in every)  # refused before hashing or uploading a byte
    files = [f for f in every if not is_ref_file(f.path, f.source)]
    pairs = [
        ref_pair(f.path, f.source) for f in every if f.source and is_ref_file(f.path, f.source)
    ]
    manifest_extras.check(
        {f.path for f in files} | {path for path, _ in pairs},
        shape.executable,
        shape.symlinks,
        shape.dirs,
        limits=True,
    )
    digests = await _hash_unknown(store, files, wanted.progress)
    try:
        with tempfile.TemporaryDirectory(prefix="artfs-commit-") as tmp:
            hashed, lists = await hash_draft_refs(pairs, Path(tmp)) if pairs else ([], {})
            entries = [(f.path, f.size, digests[f.path]) for f in files]
            entries += [(h.path, h.size, h.sha256) for h in hashed]
            local = {digests[f.path] for f in files if f.source is not None}
            refs = {s: r for s, r in manifest_refs(hashed).items() if s not in local}
            manifest = Manifest.build(
                entries,
                refs=refs,
                executable=shape.executable,
                symlinks=shape.symlinks,
                dirs=shape.dirs,
            )
            async with trio.open_nursery() as nursery:
                if cache is not None:
                    nursery.start_soon(_stage_all, cache, files, digests, staged)
                return await _register(
                    client, store, draft, files, digests, manifest, wanted, lists
                )
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        raise leaf from None


async def _register(
    client: RegistryClient,
    store: DraftStore,
    draft: Draft,
    files: list[SnapshotFile],
    digests: dict[str, str],
    manifest: Manifest,
    wanted: _Publish,
    lists: dict[str, Path],
) -> CommitOutcome:
    """Steps 3-4: the artifact, the at-most-once record, the uploads, the version.
    ``lists``: block-digest lists of the draft's new external refs (refs/drafts.py)."""
    key = draft.key

    effective_type = (
        wanted.type or draft.type or store.artifact_type(key.registry, key.project, key.artifact)
    )
    try:
        info = await client.get_artifact(key.project, key.artifact)
        create_type = creation_type(info, effective_type)
        await check_writable(client, key.project, True)
    except NotFound:  # new: the commit creates it with this version
        create_type = creation_type(None, effective_type)
        info = ArtifactInfo(key.project, key.artifact, create_type or "", "", 0.0)
        await check_writable(client, key.project, False)

    pending = draft.pending
    if pending is not None and pending.digest == manifest.digest:
        for summary in info.versions:
            if summary.number > pending.floor and summary.digest == manifest.digest:
                version = await client.get_version(
                    key.project, key.artifact, version_label(summary.number)
                )
                log.info("commit of %s had landed as %s; not committing again", key, version.ref)
                return CommitOutcome(CommitResult(version, True), 0, True)
        floor = pending.floor
    else:
        floor = max((v.number for v in info.versions), default=-1)
    store.set_pending(draft.id, PendingCommit(manifest.digest, floor, time.time()))

    sources = {digests[f.path]: f.source for f in files if f.source is not None}
    blobs = manifest.stored_blobs()
    missing = await client.missing_blobs(blobs)
    lost = sorted(sha for sha in missing if sha not in sources and sha not in lists)
    if lost and draft.base is not None:  # inherited refs: their bytes are never the registry's
        found = await inherited_refs(client, key.project, key.artifact, draft.base, lost)
        if found:
            manifest = refs_added(manifest, found)
            return await _register(client, store, draft, files, digests, manifest, wanted, lists)
    if lost:
        raise NotFound(
            f"cannot commit {key}: {len(lost)} inherited file(s) are no longer in the registry "
            f"(e.g. blob {lost[0][:12]}…); rewrite them in the draft"
        )
    meter = _PhaseProgress("uploading", sum(blobs[s] for s in missing), wanted.progress)
    upload_sources = {sha: path for sha, path in sources.items() if path is not None} | lists

    known = {v.number for v in info.versions}
    parent = draft.base if draft.base in known else None

    async def commit() -> CommitResult:
        return await client.commit(
            key.project,
            key.artifact,
            manifest,
            metadata=wanted.metadata,
            description=wanted.description,
            aliases=wanted.aliases,
            parent=parent,
            creator=wanted.creator,
            inputs=wanted.inputs,
            observed_inputs=wanted.observed_inputs,
            tags=wanted.tags,
            ttl=wanted.ttl,
            allow_duplicate=wanted.allow_duplicate,
            create_type=create_type,
        )

    result, uploaded = await upload_and_commit(client, manifest, upload_sources, meter, commit)
    return CommitOutcome(result, uploaded, False)


async def _stage_all(
    cache: CommitCache,
    files: list[SnapshotFile],
    digests: dict[str, str],
    staged: list[StagedBlob],
) -> None:
    """Stage the draft's local files in the cache, a few at once; failures only cost a refetch."""
    todo: dict[str, SnapshotFile] = {}
    for f in files:
        sha = digests[f.path]
        if f.source is not None and sha not in todo and cache.cached_bytes(sha, f.size) != f.size:
            todo[sha] = f
    limiter = trio.Semaphore(STAGE_PARALLELISM)

    async def one(sha: str, f: SnapshotFile) -> None:
        assert f.source is not None
        async with limiter:
            try:
                staged.append(await cache.stage_file(sha, f.source))
            except ArtfsError as e:
                log.warning("not caching %s of the commit: %s", f.path, e)

    async with trio.open_nursery() as nursery:
        for sha, f in todo.items():
            nursery.start_soon(one, sha, f)


async def _publish_staged(
    cache: CommitCache, staged: list[StagedBlob], result: CommitResult
) -> None:
    for blob in staged:
        try:
            await cache.publish_staged(blob)
        except ArtfsError as e:
            log.warning(
                "%s committed, but caching blob %s failed: %s",
                result.version.ref,
                blob.sha256[:12],
                e,
            )
