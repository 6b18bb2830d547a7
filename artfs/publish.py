"""Publishing a local file or directory tree as a new version (``artfs put``; reused by draft commits).

Order matters for atomicity: hash everything, upload only the blobs the registry
lacks (several at once), and only then register the version in one request. A
crash at any point before the last step leaves no version behind; repeating the
whole thing uploads nothing twice and, if the first commit did land, returns
the same version (identical content to ``latest``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from .client.base import RegistryClient
from .errors import ArtfsError, BeingCollected, InvalidInput, NotFound
from .hashing import hash_file
from .manifest import Manifest
from .models import ArtifactInfo, CommitResult
from .progress import Progress
from .refs.model import REF_SUFFIX, parse_ref_file
from .treescan import LocalFile as LocalFile
from .treescan import ScannedTree, SymlinkPolicy, scan

log = logging.getLogger(__name__)

UPLOAD_PARALLELISM = 4
# Waits between attempts while a garbage collection deletes blobs a commit needs (~1 min)
COLLECTION_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
HASH_PARALLELISM = 2


def scan_tree(root: Path) -> list[LocalFile]:
    """Regular files under ``root`` (or ``root`` itself if it is a file). Anything else is
    refused, and so is a tree no commit would accept (``treescan.scan``)."""
    return scan(root, symlinks=None).files


async def hash_files(
    files: list[LocalFile], progress: Progress | None = None, tree: ScannedTree | None = None
) -> Manifest:
    """The manifest of ``files`` (hashed in threads), with ``tree``'s executable bits,
    symlinks and empty directories when given (``treescan.py``)."""
    limiter = trio.CapacityLimiter(HASH_PARALLELISM)
    digests: dict[str, str] = {}

    async def one(f: LocalFile) -> None:
        h = await trio.to_thread.run_sync(hash_file, f.source, limiter=limiter)
        if h.size != f.size:
            raise InvalidInput(f"{f.source} changed size while being read; retry when it is stable")
        digests[f.path] = h.hexdigest()
        if progress:
            progress.advance(f.size)

    async with trio.open_nursery() as nursery:
        for f in files:
            nursery.start_soon(one, f)
    rows = ((f.path, f.size, digests[f.path]) for f in files)
    if tree is None:
        return Manifest.build(rows)
    try:
        return Manifest.build(
            rows, executable=tree.executable, symlinks=tree.symlinks, dirs=tree.dirs
        )
    except InvalidInput as e:
        if "symlink" not in str(e):
            raise
        raise InvalidInput(
            f"{e} (put --symlinks=follow stores what a link points at, --symlinks=skip "
            "leaves links out)"
        ) from None


def split_ref_files(
    files: list[LocalFile], refs: Sequence[tuple[str, str]]
) -> tuple[list[LocalFile], list[tuple[str, str]]]:
    """Files to hash and ``(path, url)`` refs: those given, and each ``NAME.artfs-ref``
    file's (its path without the suffix, the URL it holds: ``refs.model.parse_ref_file``)."""
    plain: list[LocalFile] = []
    pairs = list(refs)
    for f in files:
        if f.path.endswith(REF_SUFFIX) and len(f.path) > len(REF_SUFFIX):
            pairs.append((f.path[: -len(REF_SUFFIX)], parse_ref_file(f.source.read_bytes())))
        else:
            plain.append(f)
    return plain, pairs


async def hash_with_refs(
    files: list[LocalFile],
    pairs: Sequence[tuple[str, str]],
    tmp: Path,
    progress: Progress | None = None,
    tree: ScannedTree | None = None,
) -> tuple[Manifest, dict[str, Path]]:
    """The manifest of local ``files`` plus refs (read once from their sources), and the
    local file of each blob to upload (refs' block lists are written under ``tmp``);
    ``tree``: its executable bits, symlinks and empty directories (``hash_files``)."""
    plain = await hash_files(files, progress, tree)
    sources = {plain[f.path].sha256: f.source for f in files}
    if not pairs:
        return plain, sources
    from .refs.publish import hash_refs, manifest_refs
    from .refs.sources import Sources

    reader = Sources(file_roots=None)  # the committer names its own files: any path
    try:
        hashed, lists = await hash_refs(pairs, reader, tmp)
    finally:
        await reader.aclose()
    entries = [(p, e.size, e.sha256) for p, e in plain.items()]
    entries += [(h.path, h.size, h.sha256) for h in hashed]
    refs = {sha: ref for sha, ref in manifest_refs(hashed).items() if sha not in sources}
    manifest = Manifest.build(
        entries,
        refs=refs,
        executable=plain.executable,
        symlinks=plain.symlinks.items(),
        dirs=plain.dirs,
    )
    return manifest, {**sources, **lists}


async def upload_and_commit(
    client: RegistryClient,
    manifest: Manifest,
    sources: dict[str, Path],
    progress: Progress | None,
    commit: Callable[[], Awaitable[CommitResult]],
    *,
    delays: Sequence[float] = COLLECTION_RETRY_DELAYS,
) -> tuple[CommitResult, int]:
    """Upload what the registry lacks, then ``commit()``; returns its result and the bytes
    uploaded. While a garbage collection is deleting a blob this commit needs (it refuses
    the upload or the commit with ``BeingCollected``: the blob existed, unreferenced, when
    it was checked), wait and do both again: ``missing`` then reports the blob, and once the
    collection is done it can be uploaded. Gives up with that error after ``delays``."""
    uploaded = 0
    for delay in (*delays, None):
        try:
            uploaded += await upload_missing(client, manifest, sources, progress)
            return await commit(), uploaded
        except BeingCollected as e:
            if delay is None:
                raise
            log.info("%s; retrying in %g s", e, delay)
            await trio.sleep(delay)
    raise AssertionError("unreachable")


async def upload_missing(
    client: RegistryClient,
    manifest: Manifest,
    sources: Mapping[str, Path],
    progress: Progress | None = None,
) -> int:
    """Upload the blobs the registry lacks, several at once; return bytes uploaded.
    A missing blob without a local source is ``NotFound`` (nothing to upload it from)."""
    blobs = manifest.stored_blobs()
    missing = await client.missing_blobs(blobs)
    if progress:  # the bytes this upload really sends, not the version's size
        progress.total = progress.done + sum(blobs[sha] for sha in missing)
    lost = sorted(sha for sha in missing if sha not in sources)
    if lost:
        raise NotFound(
            f"{len(lost)} blob(s) of the manifest are no longer in the registry and have no "
            f"local copy (e.g. {lost[0][:12]}…)"
        )
    sem = trio.Semaphore(UPLOAD_PARALLELISM)
    uploaded = 0

    async def one(sha: str) -> None:
        nonlocal uploaded
        async with sem:
            await client.upload_blob(sha, sources[sha])
            uploaded += blobs[sha]
            if progress:
                progress.advance(blobs[sha])

    try:
        async with trio.open_nursery() as nursery:
            for sha in sorted(missing):
                nursery.start_soon(one, sha)
    except BaseExceptionGroup as group:
        raise one_error(group) from None
    return uploaded


def one_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """What parallel uploads that failed together report: an interrupt if there was one,
    else the first artfs error (one clear line in the CLI), else the group itself."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseExceptionGroup):
            stack.extend(reversed(e.exceptions))
        else:
            leaves.append(e)
    for kind in (KeyboardInterrupt, ArtfsError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if len(leaves) == 1 else group


async def artifact_to_create(
    client: RegistryClient, project: str, artifact: str, type: str | None
) -> str | None:
    """The type to pass as ``commit(create_type=...)``: ``type`` (default ``dataset``) when
    the artifact does not exist yet, so the commit creates it with its first version; None
    when it exists. An explicit ``type`` other than the artifact's is refused before any
    byte is uploaded."""
    try:
        info: ArtifactInfo | None = await client.get_artifact(project, artifact)
    except NotFound:
        info = None
    await check_writable(client, project, info is not None)
    return creation_type(info, type)


async def check_writable(client: RegistryClient, project: str, exists: bool) -> None:
    """Refuse a token that may not write to ``project`` now, naming the project, before a
    byte is hashed or uploaded (the upload would refuse it later, unable to name it): an
    existing project's ``create_project(exist_ok=True)`` is a write that changes nothing.
    A project that does not exist yet is created by the commit, with its first version."""
    if not exists:
        try:
            await client.list_artifacts(project)
        except NotFound:
            return
    await client.create_project(project, exist_ok=True)


def creation_type(info: ArtifactInfo | None, type: str | None) -> str | None:
    """``artifact_to_create`` for an artifact already looked up (None: it does not exist)."""
    if info is None:
        return type or "dataset"
    if type is not None and info.type != type:
        raise InvalidInput(
            f"artifact {info.project}/{info.name} has type {info.type!r}, not {type!r} "
            "(a type is fixed at creation)"
        )
    return None


def refuse_empty(what: str, count: int, allow_empty: bool) -> None:
    """An empty version is almost always a mistake (a wrong path, a draft written elsewhere):
    refused unless asked for."""
    if count == 0 and not allow_empty:
        raise InvalidInput(
            f"{what} has no files; refusing an empty version (--allow-empty makes one)"
        )


async def put_tree(
    client: RegistryClient,
    root: Path | None,
    project: str,
    artifact: str,
    *,
    type: str | None = None,
    aliases: tuple[str, ...] = (),
    metadata: dict[str, Any] | None = None,
    description: str = "",
    creator: str = "",
    show_progress: bool | None = None,
    inputs: tuple[str, ...] = (),
    refs: Sequence[tuple[str, str]] = (),
    tags: tuple[str, ...] = (),
    ttl: float | None = None,
    allow_duplicate: bool = False,
    allow_empty: bool = False,
    symlinks: SymlinkPolicy = "keep",
) -> tuple[CommitResult, int]:
    """Publish ``root`` as a new version; returns the commit result and the bytes uploaded.
    ``inputs``: lineage, references of the versions it was made from. ``refs``: ``(path,
    url)`` entries whose bytes stay at the URL, as do ``NAME.artfs-ref`` files under
    ``root`` (refs/model.py): each read once here for its size and digests. ``tags``,
    ``ttl`` and ``allow_duplicate``: as ``RegistryClient.commit``. ``symlinks``: what to do
    with links (``treescan.py``); executable bits and empty directories are kept. The
    artifact (and project) are created by the commit itself: a put that fails leaves none
    behind."""
    tree = scan(root, symlinks) if root is not None else ScannedTree()
    files, pairs = split_ref_files(tree.files, refs)
    count = len(files) + len(pairs) + len(tree.symlinks)
    refuse_empty(str(root) if root is not None else "refs", count, allow_empty)
    create_type = await artifact_to_create(client, project, artifact, type)
    hashing = Progress("hashing", sum(f.size for f in files), enabled=show_progress)
    with tempfile.TemporaryDirectory(prefix="artfs-put-") as tmp:
        manifest, sources = await hash_with_refs(files, pairs, Path(tmp), hashing, tree)
        hashing.close()
        uploading = Progress(
            "uploading", sum(manifest.stored_blobs().values()), enabled=show_progress
        )

        async def commit() -> CommitResult:
            return await client.commit(
                project,
                artifact,
                manifest,
                metadata=metadata,
                description=description,
                aliases=aliases,
                creator=creator,
                inputs=inputs,
                tags=tags,
                ttl=ttl,
                allow_duplicate=allow_duplicate,
                create_type=create_type,
            )

        try:  # inside the temp directory: refs' block lists are uploaded from it
            return await upload_and_commit(client, manifest, sources, uploading, commit)
        finally:
            uploading.close()
