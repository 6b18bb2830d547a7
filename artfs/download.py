"""``artfs get`` and ``artfs prefetch``: versions pulled through the shared cache.

Blobs go through the same cache as the mounts (one download per blob per host,
verified), several at once. ``get`` then copies each file out to a temp name and
renames it, so a destination file is either absent or complete; ``prefetch``
only fills the cache ahead of a job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from . import copyout
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


@dataclass(slots=True)
class Selection:
    """What a ``get`` writes: the entries at or under a path of the version, with paths
    relative to it (``single``: the path named one file or symlink, whose name is kept)."""

    files: list[tuple[str, FileEntry]] = field(default_factory=list)
    executable: set[str] = field(default_factory=set)
    symlinks: list[tuple[str, str]] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    single: bool = False


def select_tree(manifest: Manifest, prefix: str = "") -> Selection:
    """The part of ``manifest`` at or under ``prefix`` ('' = all), paths made relative."""
    prefix = prefix.strip("/")
    out = Selection()
    if not prefix:
        out.files = list(manifest.items())
        out.executable = set(manifest.executable)
        out.symlinks = list(manifest.symlinks.items())
        out.dirs = list(manifest.dirs)
        return out
    manifest_path(prefix, limits=False)
    entry = manifest.get(prefix)
    name = prefix.rpartition("/")[2]
    if entry is not None:
        out.files, out.single = [(name, entry)], True
        if prefix in manifest.executable:
            out.executable.add(name)
        return out
    if prefix in manifest.symlinks:
        out.symlinks, out.single = [(name, manifest.symlinks[prefix])], True
        return out
    under = prefix + "/"
    cut = len(under)
    out.files = [(p[cut:], e) for p, e in manifest.items() if p.startswith(under)]
    out.executable = {p[cut:] for p in manifest.executable if p.startswith(under)}
    out.symlinks = [(p[cut:], t) for p, t in manifest.symlinks.items() if p.startswith(under)]
    out.dirs = [p[cut:] for p in manifest.dirs if p.startswith(under)]
    if prefix in manifest.dirs:
        return out  # an empty directory: nothing under it
    if not (out.files or out.symlinks or out.dirs):
        raise NotFound(f"{prefix!r} is not in this version")
    return out


@dataclass(slots=True)
class GetReport:
    files: int = 0
    size: int = 0
    reflinked: int = 0
    hardlinked: int = 0
    copied: int = 0  # with --link: files another filesystem made us copy


async def download_version(
    client: RegistryClient,
    cache_dir: Path,
    ref: Ref,
    dest: Path,
    *,
    cache_size: int | None = None,
    prefix: str = "",
    merge: bool = False,
    link: bool = False,
) -> GetReport:
    _, manifest = await resolve_manifest(client, ref)
    async with BlobCache(cache_dir, client, max_bytes=cache_size) as cache:
        return await download_into(cache, manifest, dest, prefix=prefix, merge=merge, link=link)


async def download_into(
    cache: BlobCache,
    manifest: Manifest,
    dest: Path,
    show_progress: bool | None = None,
    *,
    prefix: str = "",
    merge: bool = False,
    link: bool = False,
) -> GetReport:
    """Copy a version's files (those at or under ``prefix``) out of an open cache into
    ``dest``, each written to a temp name and renamed (also the Python API's
    ``Version.download``), with executable bits, symlinks and empty directories.

    ``dest`` must be absent or an empty directory unless ``merge`` (then what is there
    stays, and the version's files replace those of the same name). A ``prefix`` naming one
    file writes it as ``dest`` or, if ``dest`` is a directory, into it. ``link``: reflink
    (``FICLONE``) each file from the cache where the filesystem can, else hard-link the
    cache's read-only file (``copyout.py``)."""
    chosen = select_tree(manifest, prefix)
    if chosen.single:
        name = chosen.files[0][0] if chosen.files else chosen.symlinks[0][0]
        target = dest / name if dest.is_dir() else dest
        if (target.exists() or target.is_symlink()) and not merge:
            raise AlreadyExists(f"{target} exists (get --merge replaces it)")
        root, rename = target.parent, target.name
    else:
        if dest.exists() and not dest.is_dir():
            raise AlreadyExists(f"{dest} exists and is not a directory")
        if not merge and dest.is_dir() and any(dest.iterdir()):
            raise AlreadyExists(
                f"{dest} exists and is not empty (get --merge writes into it, replacing "
                "files of the same name)"
            )
        root, rename = dest, ""
    root.mkdir(parents=True, exist_ok=True)
    report = GetReport(len(chosen.files), sum(e.size for _, e in chosen.files))

    def place(rel: str) -> Path:
        return root / rename if rename else root.joinpath(*manifest_path(rel, limits=False))

    async def copy_out(path: str, source: Path) -> None:
        how = await trio.to_thread.run_sync(
            copyout.place_file, source, place(path), path in chosen.executable, link
        )
        if how == copyout.REFLINK:
            report.reflinked += 1
        elif how == copyout.HARDLINK:
            report.hardlinked += 1
        elif link:
            report.copied += 1

    await fill_cache(cache, chosen.files, "downloading", copy_out, show_progress, manifest.refs)
    for rel in chosen.dirs:
        copyout.make_dirs(place(rel))
    for rel, points_to in chosen.symlinks:
        copyout.place_symlink(points_to, place(rel))
    return report


async def prefetch(
    client: RegistryClient, cache_dir: Path, ref: Ref, prefix: str = ""
) -> tuple[int, int]:
    _, manifest = await resolve_manifest(client, ref)
    files = select(manifest, prefix)
    async with BlobCache(cache_dir, client) as cache:
        await fill_cache(cache, files, f"prefetching {ref}", refs=manifest.refs)
    return len(files), sum(e.size for _, e in files)
