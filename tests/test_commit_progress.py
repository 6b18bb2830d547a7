"""Commit progress counts real bytes (issue 12: a commit showed ``hashing: 0 B / 0 B
(100%)`` because every file had been hashed while it was written), and a phase with
nothing to do draws no line."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from artfs.cache.blobcache import BlobCache
from artfs.client.memory import MemoryRegistryClient
from artfs.drafts.commit import commit_draft
from artfs.drafts.model import DraftKey
from artfs.drafts.store import DraftStore
from artfs.manifest import Manifest
from artfs.progress import Progress
from artfs.publish import hash_files, scan_tree, upload_missing

from .drafts_helpers import PathDraft


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[MemoryRegistryClient, BlobCache, DraftStore]]:
    registry = MemoryRegistryClient()
    async with BlobCache(tmp_path / "cache", registry) as cache:
        store = DraftStore(tmp_path / "state")
        yield registry, cache, store
        store.close()


async def _all_hashed(store: DraftStore, draft_id: int) -> None:
    """Wait for the background hasher (bghash.py) to know every file's digest."""
    with trio.fail_after(30):
        while any(f.sha256 is None for f in store.snapshot(draft_id)):
            await trio.sleep(0.02)


async def test_a_draft_hashed_while_written_reports_its_bytes(
    env: tuple[MemoryRegistryClient, BlobCache, DraftStore],
) -> None:
    registry, cache, store = env
    registry.publish("proj", "art", {"old.bin": os.urandom(50_000)})
    base = registry.versions[("proj", "art", 0)][1]
    d = PathDraft(
        store, store.create_draft(DraftKey("memory", "proj", "art", "w"), base=0, manifest=base)
    )
    sizes = {"a.bin": 300_000, "b.bin": 123_456, "c.txt": 5}
    for name, size in sizes.items():
        d.write(name, os.urandom(size))
    await _all_hashed(store, d.draft.id)
    reports: list[tuple[str, int, int]] = []
    outcome = await commit_draft(
        registry, cache, store, d.draft.id, progress=lambda *r: reports.append(r)
    )
    written = sum(sizes.values())  # the inherited old.bin is neither hashed nor uploaded
    hashing = [r for r in reports if r[0] == "hashing"]
    uploading = [r for r in reports if r[0] == "uploading"]
    assert hashing[-1] == ("hashing", written, written)
    assert uploading[-1] == ("uploading", written, written) and outcome.uploaded == written


async def test_put_counts_the_bytes_it_sends_not_the_versions_size(tmp_path: Path) -> None:
    registry = MemoryRegistryClient()
    (tmp_path / "src").mkdir()
    for name, size in (("a", 70_000), ("b", 30_000)):
        (tmp_path / "src" / name).write_bytes(os.urandom(size))
    files = scan_tree(tmp_path / "src")
    manifest: Manifest = await hash_files(files)
    sources = {manifest[f.path].sha256: f.source for f in files}
    first = Progress("uploading", manifest.total_size, enabled=False)
    assert await upload_missing(registry, manifest, sources, first) == 100_000
    assert (first.done, first.total) == (100_000, 100_000)
    again = Progress("uploading", manifest.total_size, enabled=False)
    assert await upload_missing(registry, manifest, sources, again) == 0
    assert (again.done, again.total) == (0, 0)


def test_a_phase_with_nothing_to_do_draws_nothing() -> None:
    out = io.StringIO()
    Progress("uploading", 0, stream=out, enabled=True).close()
    assert out.getvalue() == ""
    shown = Progress("hashing", 2048, stream=out, enabled=True)
    shown.advance(2048)
    shown.close()
    assert "hashing: 2.0 KiB / 2.0 KiB (100%)" in out.getvalue()
