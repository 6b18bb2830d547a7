"""Publishing a local file or directory tree as a new version (``artfs put``; reused by draft commits).

Order matters for atomicity: hash everything, upload only the blobs the registry
lacks (several at once), and only then register the version in one request. A
crash at any point before the last step leaves no version behind; repeating the
whole thing uploads nothing twice and, if the first commit did land, returns
the same version (identical content to ``latest``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from .client.base import RegistryClient
from .errors import AlreadyExists, ArtfsError, BeingCollected, InvalidInput, NotFound
from .hashing import hash_file
from .manifest import Manifest
from .models import CommitResult
from .progress import Progress
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
    blobs = manifest.blobs()
    missing = await client.missing_blobs(blobs)
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
        raise _one_error(group) from None
    return uploaded


def _one_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
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


async def ensure_artifact(
    client: RegistryClient, project: str, artifact: str, type: str | None, description: str = ""
) -> None:
    await client.create_project(project, exist_ok=True)
    try:
        info = await client.get_artifact(project, artifact)
    except NotFound:
        try:
            await client.create_artifact(
                project, artifact, type=type or "dataset", description=description
            )
        except AlreadyExists:
            pass
        return
    if type is not None and info.type != type:
        raise InvalidInput(
            f"artifact {project}/{artifact} has type {info.type!r}, not {type!r} (a type is fixed at creation)"
        )


async def put_tree(
    client: RegistryClient,
    root: Path,
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
    symlinks: SymlinkPolicy = "keep",
) -> tuple[CommitResult, int]:
    """Publish ``root`` as a new version; returns the commit result and the bytes uploaded.
    ``inputs``: lineage, references of the versions it was made from. ``symlinks``: what
    to do with links (``treescan.py``); executable bits and empty directories are kept."""
    tree = scan(root, symlinks)
    files = tree.files
    total = sum(f.size for f in files)
    hashing = Progress("hashing", total, enabled=show_progress)
    manifest = await hash_files(files, hashing, tree)
    hashing.close()
    await ensure_artifact(client, project, artifact, type)
    sources = {manifest[f.path].sha256: f.source for f in files}
    uploading = Progress("uploading", sum(manifest.blobs().values()), enabled=show_progress)

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
        )

    try:
        return await upload_and_commit(client, manifest, sources, uploading, commit)
    finally:
        uploading.close()
