"""Alias links from the shell, at the service level: ``ln -sfn``'s temporary link stays local.

coreutils' ``ln -sfn v1 best`` over an existing link does ``symlink(v1, CuXXXXXX)`` then
``rename(CuXXXXXX, best)``. The temporary name must never reach the registry: other hosts
would see it, and a crash in between would leave it there for good.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from artfs.client.memory import MemoryRegistryClient
from artfs.drafts.store import DraftStore
from artfs.fs.alias_links import PENDING_LINK_SECONDS
from artfs.fs.options import MountOptions
from artfs.fs.service import ArtfsFS
from artfs.fs.testing import MemoryBlobCache

from .test_fs_service import Clock, listdir, walk


class Recording(MemoryRegistryClient):
    """Remembers every alias name set or removed at the registry."""

    def __init__(self) -> None:
        super().__init__()
        self.alias_calls: list[tuple[str, str]] = []

    async def set_alias(
        self, project: str, artifact: str, alias: str, number: int, **kw: Any
    ) -> None:
        self.alias_calls.append(("set", alias))
        await super().set_alias(project, artifact, alias, number, **kw)

    async def delete_alias(self, project: str, artifact: str, alias: str, **kw: Any) -> None:
        self.alias_calls.append(("delete", alias))
        await super().delete_alias(project, artifact, alias, **kw)


def make_fs(tmp_path: Path) -> tuple[ArtfsFS, Recording, Clock]:
    registry = Recording()
    registry.publish("p", "a", {"f": b"first"})
    registry.publish("p", "a", {"f": b"second"}, aliases=["best"])
    clock = Clock()
    store = DraftStore(tmp_path / "state", owner=True)
    options = MountOptions(meta_root=tmp_path / "meta", listing_ttl=1.0)
    cache = MemoryBlobCache(registry, tmp_path / "cache")
    return ArtfsFS(registry, cache, options, clock=clock, drafts=store), registry, clock


async def test_ln_sfn_never_shows_its_temporary_name_to_the_registry(tmp_path: Path) -> None:
    fs, registry, _ = make_fs(tmp_path)
    art = await walk(fs, "p/a")
    attr = await fs.symlink(art.ino, "CuwWQics", "v0")  # what ln -sfn v0 best does first
    assert await fs.readlink(attr.ino) == "v0"
    assert "CuwWQics" in await listdir(fs, art.ino)  # this mount sees it
    assert "CuwWQics" not in (await registry.get_artifact("p", "a")).aliases
    await fs.rename(art.ino, "CuwWQics", art.ino, "best", 0)
    assert registry.alias_calls == [("set", "best")]
    assert (await registry.get_artifact("p", "a")).aliases["best"] == 0
    best = await walk(fs, "p/a/best")
    assert best.ino == attr.ino  # the kernel's dentry moved with the inode: still valid
    assert await fs.readlink(best.ino) == "v0"
    assert set(await listdir(fs, art.ino)) == {"v0", "v1", "latest", "best"}
    await fs.aclose()


async def test_a_pending_link_unlinked_or_kept(tmp_path: Path) -> None:
    fs, registry, clock = make_fs(tmp_path)
    art = await walk(fs, "p/a")
    await fs.symlink(art.ino, "CuAAAAAA", "v1")
    await fs.unlink(art.ino, "CuAAAAAA")  # ln failed and cleaned up: nothing happened anywhere
    assert registry.alias_calls == []
    assert "CuAAAAAA" not in await listdir(fs, art.ino)

    kept = await fs.symlink(art.ino, "Cu123xyz", "v1")  # someone really wants this name
    clock.now += PENDING_LINK_SECONDS + 1
    assert "Cu123xyz" in await listdir(fs, art.ino)  # the listing publishes it
    assert registry.alias_calls == [("set", "Cu123xyz")]
    assert (await registry.get_artifact("p", "a")).aliases["Cu123xyz"] == 1
    assert (await walk(fs, "p/a/Cu123xyz")).ino == kept.ino
    await fs.unlink(art.ino, "Cu123xyz")  # now a registry alias: removed there
    assert registry.alias_calls[-1] == ("delete", "Cu123xyz")
    assert "Cu123xyz" not in (await registry.get_artifact("p", "a")).aliases
    await fs.aclose()


async def test_other_names_are_set_at_once(tmp_path: Path) -> None:
    fs, registry, _ = make_fs(tmp_path)
    art = await walk(fs, "p/a")
    await fs.symlink(art.ino, "Cu-not-temp", "v0")
    await fs.symlink(art.ino, "candidate", "v1")
    assert registry.alias_calls == [("set", "Cu-not-temp"), ("set", "candidate")]
    await fs.aclose()
