"""``artfs import wandb`` and ``artfs export wandb``: W&B artifact directories in and out.

Import publishes a directory the W&B SDK or CLI downloaded, with its ``wandb_manifest.json``,
as one version: every file is read once (md5 checked against the manifest, sha256 and
block digests for artfs), every reference becomes an artfs external ref (read once at its
source, md5 checked where the manifest states one), and nothing is committed unless all
of it matched. Export downloads a version through the shared cache and writes the
manifest W&B's own classes read (``wandb_io.export_manifest``).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .cache.blobcache import BlobCache
from .client.base import RegistryClient
from .download import download_into, resolve_manifest
from .errors import AlreadyExists, InvalidInput, NotFound
from .manifest import Manifest
from .models import CommitResult
from .names import Ref, manifest_path
from .progress import Progress
from .publish import artifact_to_create, upload_and_commit
from .refs.publish import hash_refs, manifest_refs
from .refs.sources import Sources
from .wandb_io import (
    MANIFEST_NAME,
    WandbEntry,
    check_md5,
    export_manifest,
    hash_local,
    import_metadata,
    parse_manifest,
)

HASH_PARALLELISM = 2
MAX_MANIFEST_BYTES = 1 << 30  # a W&B manifest of ~1M entries is ~200 MB of JSON


@dataclass(frozen=True, slots=True)
class Imported:
    result: CommitResult
    uploaded: int
    unchecked: int  # references whose W&B digest is no md5 (multipart ETag, URL)


def read_manifest_file(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise InvalidInput(f"{path}: over {MAX_MANIFEST_BYTES} bytes")
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file (a W&B download has {MANIFEST_NAME})") from None
    except ValueError as e:
        raise InvalidInput(f"{path}: not JSON: {e}") from None


async def import_wandb(
    client: RegistryClient,
    directory: Path,
    project: str,
    artifact: str,
    *,
    manifest_file: Path | None = None,
    type: str | None = None,
    aliases: tuple[str, ...] = (),
    metadata: Mapping[str, Any] | None = None,
    description: str = "",
    creator: str = "",
    show_progress: bool | None = None,
) -> Imported:
    wb = parse_manifest(read_manifest_file(manifest_file or directory / MANIFEST_NAME))
    local = [e for e in wb.entries if e.ref is None]
    refs = [e for e in wb.entries if e.ref is not None]
    progress = Progress("checking", sum(e.size or 0 for e in local), enabled=show_progress)
    entries: list[tuple[str, int, str]] = []
    sources: dict[str, Path] = {}
    limiter = trio.CapacityLimiter(HASH_PARALLELISM)

    async def one(entry: WandbEntry) -> None:
        path = directory.joinpath(*manifest_path(entry.path))
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise NotFound(
                f"{entry.path}: listed in {MANIFEST_NAME} but not in {directory}"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput(f"{path}: not a regular file")
        size, sha, md5 = await trio.to_thread.run_sync(hash_local, path, limiter=limiter)
        check_md5(entry, size, md5)
        entries.append((entry.path, size, sha))
        sources[sha] = path
        progress.advance(size)

    with tempfile.TemporaryDirectory(prefix="artfs-wandb-") as tmp:
        async with trio.open_nursery() as nursery:
            for entry in local:
                nursery.start_soon(one, entry)
        progress.close()
        reader = Sources(file_roots=None)  # the importer's own references: any path
        try:
            hashed, lists = await hash_refs(
                [(e.path, e.ref or "") for e in refs], reader, Path(tmp)
            )
        finally:
            await reader.aclose()
        unchecked = 0
        for entry, h in zip(refs, hashed, strict=True):
            unchecked += not check_md5(entry, h.size, h.md5)
            entries.append((h.path, h.size, h.sha256))
        kept = {sha: r for sha, r in manifest_refs(hashed).items() if sha not in sources}
        manifest = Manifest.build(entries, refs=kept)
        meta = {**import_metadata(wb), **(metadata or {})}
        create_type = await artifact_to_create(client, project, artifact, type)
        uploading = Progress(
            "uploading", sum(manifest.stored_blobs().values()), enabled=show_progress
        )

        async def commit() -> CommitResult:
            return await client.commit(
                project,
                artifact,
                manifest,
                metadata=meta,
                description=description,
                aliases=aliases,
                creator=creator,
                create_type=create_type,
            )

        try:
            result, uploaded = await upload_and_commit(
                client, manifest, {**sources, **lists}, uploading, commit
            )
        finally:
            uploading.close()
    return Imported(result, uploaded, unchecked)


async def export_wandb(
    client: RegistryClient,
    cache_dir: Path,
    ref: Ref,
    dest: Path,
    *,
    manifest_file: Path | None = None,
    cache_size: int | None = None,
) -> tuple[int, int]:
    """Write the version's files into ``dest`` (absent or empty) and its W&B manifest
    (``dest/wandb_manifest.json`` unless ``manifest_file``); returns (files, bytes)."""
    number, manifest = await resolve_manifest(client, ref)
    target = manifest_file or dest / MANIFEST_NAME
    if manifest_file is None and MANIFEST_NAME in manifest:
        raise AlreadyExists(
            f"{ref} has its own {MANIFEST_NAME}: write the W&B manifest elsewhere (--manifest)"
        )
    info = await client.get_version(ref.project, ref.artifact, f"v{number}")
    async with BlobCache(cache_dir, client, max_bytes=cache_size) as cache:
        await download_into(cache, manifest, dest)
    limiter = trio.CapacityLimiter(HASH_PARALLELISM)
    md5s: dict[str, bytes] = {}

    async def one(path: str) -> None:
        local = dest.joinpath(*manifest_path(path, limits=False))
        md5s[path] = (await trio.to_thread.run_sync(hash_local, local, limiter=limiter))[2]

    async with trio.open_nursery() as nursery:
        for path in manifest:
            nursery.start_soon(one, path)
    body = json.dumps(export_manifest(manifest, md5s, info.metadata), indent=2).encode()
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(body)
    os.replace(tmp, target)
    return len(manifest), manifest.total_size
