"""``artfs get`` and ``artfs prefetch``: versions pulled through the shared cache.

Blobs go through the same cache as the mounts (one download per blob per host,
verified), several at once. ``get`` then copies each file out to a temp name and
renames it, so a destination file is either absent or complete; ``prefetch``
only fills the cache ahead of a job.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import trio

from .cache.blobcache import BlobCache
from .client.base import RegistryClient
from .errors import AlreadyExists, IntegrityError, NotFound
from .manifest import FileEntry, Manifest
from .names import Ref, manifest_path, parse_version
from .progress import Progress
from .refs.model import BlobRef

PARALLEL = 4


async def resolve_manifest(client: RegistryClient, ref: Ref) -> tuple[int, Manifest]:
    number = ref.version if ref.version is not None else parse_version(ref.selector)
    if number is None:
        number = (await client.get_version(ref.project, ref.artifact, ref.selector)).number
    return number, await client.get_manifest(ref.project, ref.artifact, number)


def select(manifest: Manifest, prefix: str) -> list[tuple[str, FileEntry]]:
    """The files at or under ``prefix`` (a path inside the version; '' = all)."""
    if not prefix:
        return list(manifest.items())
    chosen = [(p, e) for p, e in manifest.items() if p == prefix or p.startswith(prefix + "/")]
    if not chosen:
        raise NotFound(f"{prefix!r} is not in this version")
    return chosen


async def fill_cache(
    cache: BlobCache,
    files: list[tuple[str, FileEntry]],
    label: str,
    then: Callable[[str, Path], Awaitable[None]] | None = None,
    show_progress: bool | None = None,
    refs: Mapping[str, BlobRef] | None = None,
) -> None:
    """Fetch every file's blob (each distinct blob once), ``PARALLEL`` at a time, with progress.
    ``refs``: the manifest's external refs, named in the error when one's source changed."""
    progress = Progress(label, sum(e.size for _, e in files), enabled=show_progress)
    sem = trio.Semaphore(PARALLEL)

    async def one(path: str, entry: FileEntry) -> None:
        async with sem:
            for attempt in (1, 2):
                try:
                    source = await cache.fetch(entry.sha256, entry.size)
                except IntegrityError as e:
                    ref = (refs or {}).get(entry.sha256)
                    if ref is None:
                        raise
                    raise IntegrityError(
                        f"{path}: external ref {ref.url} does not match what was committed "
                        f"(changed at its source?): {e.message}"
                    ) from None
                try:
                    if then is not None:
                        await then(path, source)
                    break
                except FileNotFoundError:
                    if attempt == 2:  # evicted twice by another process in between
                        raise
        progress.advance(entry.size)

    async with trio.open_nursery() as nursery:
        for path, entry in files:
            nursery.start_soon(one, path, entry)
    progress.close()


async def download_version(
    client: RegistryClient, cache_dir: Path, ref: Ref, dest: Path, *, cache_size: int | None = None
) -> tuple[int, int]:
    _, manifest = await resolve_manifest(client, ref)
    async with BlobCache(cache_dir, client, max_bytes=cache_size) as cache:
        await download_into(cache, manifest, dest)
    return len(manifest), manifest.total_size


async def download_into(
    cache: BlobCache, manifest: Manifest, dest: Path, show_progress: bool | None = None
) -> None:
    """Copy a version's files out of an open cache into ``dest`` (absent or empty), each
    written to a temp name and renamed (also the Python API's ``Version.download``)."""
    if (dest.is_dir() and any(dest.iterdir())) or (dest.exists() and not dest.is_dir()):
        raise AlreadyExists(f"{dest} exists and is not an empty directory")
    dest.mkdir(parents=True, exist_ok=True)

    async def copy_out(path: str, source: Path) -> None:
        await trio.to_thread.run_sync(
            _copy, source, dest.joinpath(*manifest_path(path, limits=False))
        )

    await fill_cache(
        cache, list(manifest.items()), "downloading", copy_out, show_progress, manifest.refs
    )


async def prefetch(
    client: RegistryClient, cache_dir: Path, ref: Ref, prefix: str = ""
) -> tuple[int, int]:
    _, manifest = await resolve_manifest(client, ref)
    files = select(manifest, prefix)
    async with BlobCache(cache_dir, client) as cache:
        await fill_cache(cache, files, f"prefetching {ref}", refs=manifest.refs)
    return len(files), sum(e.size for _, e in files)


def _make_dirs(directory: Path) -> None:
    """``mkdir -p`` without recursion (``Path.mkdir(parents=True)`` recurses once per missing
    level): a version stored before ``names.MAX_DEPTH`` may be 1000 levels deep."""
    missing: list[Path] = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for made in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by a parallel copy
            made.mkdir()


def _copy(source: Path, target: Path) -> None:
    _make_dirs(target.parent)
    tmp = target.with_name(f".artfs-tmp-{os.getpid()}-{secrets.token_hex(4)}")
    shutil.copyfile(source, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
