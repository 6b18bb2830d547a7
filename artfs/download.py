"""``artfs get``: a version copied out of the shared cache, fetching what is missing.

Blobs go through the same cache as the mounts (one download per blob per host,
verified), several at once; files are written to a temp name and renamed, so a
destination file is either absent or complete.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import trio

from .cache.blobcache import BlobCache
from .client.base import RegistryClient
from .errors import AlreadyExists
from .names import Ref, manifest_path, parse_version
from .progress import Progress

PARALLEL = 4


async def download_version(
    client: RegistryClient, cache_dir: Path, ref: Ref, dest: Path, *, cache_size: int | None = None
) -> tuple[int, int]:
    number = ref.version if ref.version is not None else parse_version(ref.selector)
    if number is None:
        number = (await client.get_version(ref.project, ref.artifact, ref.selector)).number
    manifest = await client.get_manifest(ref.project, ref.artifact, number)
    if (dest.is_dir() and any(dest.iterdir())) or (dest.exists() and not dest.is_dir()):
        raise AlreadyExists(f"{dest} exists and is not an empty directory")
    dest.mkdir(parents=True, exist_ok=True)
    progress = Progress("downloading", manifest.total_size)
    sem = trio.Semaphore(PARALLEL)
    async with BlobCache(cache_dir, client, max_bytes=cache_size) as cache:

        async def one(path: str) -> None:
            entry = manifest[path]
            target = dest.joinpath(*manifest_path(path))
            async with sem:
                for attempt in (1, 2):
                    source = await cache.fetch(entry.sha256, entry.size)
                    try:
                        await trio.to_thread.run_sync(_copy, source, target)
                        break
                    except FileNotFoundError:
                        if attempt == 2:  # evicted twice by another process between fetch and copy
                            raise
            progress.advance(entry.size)

        async with trio.open_nursery() as nursery:
            for path in manifest:
                nursery.start_soon(one, path)
    progress.close()
    return len(manifest), manifest.total_size


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".artfs-tmp-{os.getpid()}-{secrets.token_hex(4)}")
    shutil.copyfile(source, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
