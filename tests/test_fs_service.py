"""The mount's filesystem service, driven directly (no kernel): tree, TTLs, offline, EROFS."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from artfs.cache.blobcache import BlobCache
from artfs.cache.protocol import BlobCacheAPI
from artfs.cache.settings import CacheTuning
from artfs.client.memory import FaultyClient, MemoryRegistryClient
from artfs.errors import (
    IntegrityError,
    NoAttribute,
    NotFound,
    NotPermitted,
    ReadOnly,
    Unavailable,
    Unsupported,
)
from artfs.fs.attrs import Attr
from artfs.fs.inodes import ROOT_INODE, Node
from artfs.fs.options import MountOptions
from artfs.fs.service import ArtfsFS
from artfs.fs.testing import MemoryBlobCache
from artfs.manifest import Manifest

TTL = 5.0


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    fs: ArtfsFS
    registry: MemoryRegistryClient
    client: FaultyClient
    cache: BlobCacheAPI
    clock: Clock
    tmp: Path

    def fresh_fs(self, **kw: object) -> ArtfsFS:
        """Another mount of the same registry, sharing the on-disk metadata and the cache."""
        return ArtfsFS(self.client, self.cache, options(self.tmp, **kw), clock=self.clock)


def options(tmp: Path, **kw: object) -> MountOptions:
    base: dict[str, object] = {
        "listing_ttl": TTL,
        "meta_root": tmp / "meta",
        "source": "memory://test",
        "meta_timeout": 2.0,
        "read_timeout": 2.0,
    }
    base.update(kw)
    return MountOptions(**base)  # type: ignore[arg-type]


@pytest.fixture(params=["twin", "blobcache"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    """Each test runs over the in-memory cache twin and over the real on-disk blob cache."""
    registry = MemoryRegistryClient()
    client = FaultyClient(registry)
    clock = Clock()
    if request.param == "twin":
        cache: BlobCacheAPI = MemoryBlobCache(client, tmp_path / "cache")
        yield Env(
            ArtfsFS(client, cache, options(tmp_path), clock=clock),
            registry,
            client,
            cache,
            clock,
            tmp_path,
        )
        return
    tuning = CacheTuning(timeout=2.0)
    async with BlobCache(tmp_path / "cache", client, tuning=tuning) as real:
        yield Env(
            ArtfsFS(client, real, options(tmp_path), clock=clock),
            registry,
            client,
            real,
            clock,
            tmp_path,
        )


def open_readers(cache: BlobCacheAPI) -> int:
    """Readers the mount left open (the twin counts them; the real cache pins instead)."""
    if isinstance(cache, MemoryBlobCache):
        return cache.open_readers
    return 0


async def walk(fs: ArtfsFS, path: str) -> Attr:
    """Resolve a path as the kernel would, following alias links on the way (not at the end)."""
    attr = await fs.getattr(ROOT_INODE)
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        parent, attr = attr, await fs.lookup(attr.ino, part)
        if attr.is_negative:
            raise NotFound(path)
        if stat.S_ISLNK(attr.mode) and i < len(parts) - 1:
            attr = await fs.lookup(parent.ino, await fs.readlink(attr.ino))
    return attr


async def listdir(fs: ArtfsFS, ino: int) -> dict[str, Attr]:
    fh = await fs.opendir(ino)
    try:
        out: dict[str, Attr] = {}
        start = 0
        while True:  # in small batches, as the kernel asks
            batch = []
            for name, attr, nxt in fs.readdir(fh, start):
                batch.append((name, attr))
                fs.entry_sent(attr.ino)  # as the FUSE adapter does: readdirplus is a lookup
                start = nxt
                if len(batch) == 7:
                    break
            if not batch:
                return out
            for name, attr in batch:
                assert name not in out, f"{name} listed twice"
                out[name] = attr
    finally:
        await fs.releasedir(fh)


async def cat(fs: ArtfsFS, ino: int, chunk: int = 4096) -> bytes:
    opened = await fs.open(ino, 0)
    try:
        out = bytearray()
        while True:
            data = await fs.read(opened.fh, len(out), chunk)
            if not data:
                return bytes(out)
            out += data
    finally:
        await fs.release(opened.fh)


LONG_NAME = "é" * 127 + "x"  # 255 bytes in UTF-8
FILES = {
    "empty.txt": b"",
    "deep/a/b/c/d/e/f/g/leaf.bin": bytes(range(256)) * 100,
    "with space/file name.txt": b"spaces\n",
    "unicodé/ファイル.txt": "こんにちは".encode(),
    f"long/{LONG_NAME}": b"long name",
    "big.bin": bytes(range(251)) * 4000,  # ~1 MB, not a multiple of the read size
}


async def test_version_tree_from_manifest(env: Env) -> None:
    info = env.registry.publish("proj", "data", FILES)
    fs = env.fs
    assert set(await listdir(fs, ROOT_INODE)) == {"proj"}
    art = await walk(fs, "proj/data")
    assert set(await listdir(fs, art.ino)) == {"v0", "latest"}
    v0 = await walk(fs, "proj/data/v0")
    assert stat.S_ISDIR(v0.mode) and stat.S_IMODE(v0.mode) == 0o555
    assert set(await listdir(fs, v0.ino)) == {
        "empty.txt",
        "deep",
        "with space",
        "unicodé",
        "long",
        "big.bin",
    }
    for path, data in FILES.items():
        attr = await walk(fs, f"proj/data/v0/{path}")
        assert stat.S_ISREG(attr.mode) and stat.S_IMODE(attr.mode) == 0o444
        assert attr.size == len(data)
        assert attr.blocks == (len(data) + 511) // 512
        assert attr.mtime_ns == int(info.created * 1e9)
        assert (attr.uid, attr.gid) == (fs.options.uid, fs.options.gid)
        assert await cat(fs, attr.ino) == data
    assert await walk(fs, "proj/data/latest/big.bin") == await walk(fs, "proj/data/v0/big.bin")
    leaf_dir = await walk(fs, "proj/data/v0/deep/a/b/c/d/e/f/g")
    assert list(await listdir(fs, leaf_dir.ino)) == ["leaf.bin"]
    # inodes are stable: the same path gives the same number every time
    assert (await walk(fs, "proj/data/v0/big.bin")).ino == (
        await walk(fs, "proj/data/v0/big.bin")
    ).ino
    assert open_readers(env.cache) == 0


async def test_reads_at_offsets_and_past_the_end(env: Env) -> None:
    env.registry.publish("p", "a", {"f": b"0123456789"})
    attr = await walk(env.fs, "p/a/v0/f")
    opened = await env.fs.open(attr.ino, 0)
    assert opened.keep_cache
    assert await env.fs.read(opened.fh, 3, 4) == b"3456"
    assert await env.fs.read(opened.fh, 8, 100) == b"89"
    assert await env.fs.read(opened.fh, 10, 5) == b""
    assert await env.fs.read(opened.fh, 500, 5) == b""
    await env.fs.release(opened.fh)
    assert open_readers(env.cache) == 0


async def test_aliases_are_symlinks(env: Env) -> None:
    env.registry.publish("p", "a", {"f": b"one"}, aliases=["best"])
    env.registry.publish("p", "a", {"f": b"two"})
    art = await walk(env.fs, "p/a")
    entries = await listdir(env.fs, art.ino)
    assert set(entries) == {"v0", "v1", "latest", "best"}
    for name, target in (("latest", "v1"), ("best", "v0")):
        link = entries[name]
        assert stat.S_ISLNK(link.mode) and stat.S_IMODE(link.mode) == 0o777
        assert link.size == len(target)
        assert link.entry_timeout == TTL and link.attr_timeout == TTL
        assert await env.fs.readlink(link.ino) == target
    assert entries["v0"].entry_timeout == TTL
    assert entries["v0"].attr_timeout == env.fs.options.immutable_timeout
    assert art.attr_timeout == TTL


async def test_alias_moves_are_seen_after_the_ttl_not_before(env: Env) -> None:
    env.registry.publish("p", "a", {"f": b"old"})
    link = await walk(env.fs, "p/a/latest")
    assert await env.fs.readlink(link.ino) == "v0"
    env.registry.publish("p", "a", {"f": b"new"})
    before = env.registry.requests

    env.clock.now += TTL / 2
    assert await env.fs.readlink(link.ino) == "v0"
    art = await walk(env.fs, "p/a")
    assert (await env.fs.lookup(art.ino, "v1")).is_negative
    assert env.registry.requests == before  # nothing asked within the TTL

    env.clock.now += TTL
    assert await env.fs.readlink(link.ino) == "v1"
    assert await cat(env.fs, (await walk(env.fs, "p/a/v1/f")).ino) == b"new"


async def test_file_opened_through_alias_keeps_its_version(env: Env) -> None:
    env.registry.publish("p", "a", {"f": b"first version"})
    attr = await walk(env.fs, "p/a/latest/f")
    opened = await env.fs.open(attr.ino, 0)
    env.registry.publish("p", "a", {"f": b"second version"})
    env.clock.now += TTL * 2
    assert await env.fs.readlink((await walk(env.fs, "p/a/latest")).ino) == "v1"
    assert await env.fs.read(opened.fh, 0, 100) == b"first version"
    await env.fs.release(opened.fh)
    assert await cat(env.fs, (await walk(env.fs, "p/a/latest/f")).ino) == b"second version"


async def test_new_projects_and_deletions_follow_the_ttl(env: Env) -> None:
    env.registry.publish("p", "a", {"f": b"x"})
    assert set(await listdir(env.fs, ROOT_INODE)) == {"p"}
    env.registry.publish("q", "b", {"g": b"y"})
    assert (await env.fs.lookup(ROOT_INODE, "q")).is_negative
    assert (await env.fs.lookup(ROOT_INODE, "q")).entry_timeout == TTL
    env.clock.now += TTL
    assert set(await listdir(env.fs, ROOT_INODE)) == {"p", "q"}
    # a project deleted in the registry disappears, with everything below it
    old = await walk(env.fs, "p/a/v0/f")
    del env.registry.projects["p"]
    del env.registry.artifacts[("p", "a")]
    env.clock.now += TTL
    assert (await env.fs.lookup(ROOT_INODE, "p")).is_negative
    with pytest.raises(NotFound):
        await env.fs.getattr(old.ino)


async def test_offline_serves_what_was_listed_and_cached(env: Env) -> None:
    # "unread" sorts before "seen": reading "seen" starts no directory read-ahead of it
    env.registry.publish("p", "a", {"seen": b"read before", "a-unread": b"never read"})
    env.registry.publish("p", "b", {"other": b"z"})
    seen = await walk(env.fs, "p/a/v0/seen")
    assert await cat(env.fs, seen.ino) == b"read before"
    await walk(env.fs, "p/b")

    env.client.down = True
    env.clock.now += TTL * 3
    assert set(await listdir(env.fs, ROOT_INODE)) == {"p"}
    assert set(await listdir(env.fs, (await walk(env.fs, "p")).ino)) == {"a", "b"}
    assert await env.fs.readlink((await walk(env.fs, "p/a/latest")).ino) == "v0"
    assert await cat(env.fs, (await walk(env.fs, "p/a/latest/seen")).ino) == b"read before"
    with pytest.raises(Unavailable) as exc:
        await cat(env.fs, (await walk(env.fs, "p/a/v0/a-unread")).ino)
    assert exc.value.errno == errno.EIO
    with pytest.raises(Unavailable):  # never listed inside: its manifest is not here
        await walk(env.fs, "p/b/v0/other")


async def test_offline_restart_lists_from_disk(env: Env) -> None:
    env.registry.publish("p", "a", {"d/f": b"kept"}, aliases=["best"])
    assert await cat(env.fs, (await walk(env.fs, "p/a/best/d/f")).ino) == b"kept"

    env.client.down = True
    again = env.fresh_fs()  # a new mount process, registry unreachable from the start
    assert set(await listdir(again, ROOT_INODE)) == {"p"}
    assert set(await listdir(again, (await walk(again, "p/a")).ino)) == {"v0", "latest", "best"}
    assert await again.readlink((await walk(again, "p/a/best")).ino) == "v0"
    assert await cat(again, (await walk(again, "p/a/v0/d/f")).ino) == b"kept"

    # a registry never seen from this host cannot be guessed
    stranger = env.fresh_fs(source="memory://other", meta_root=env.tmp / "empty")
    with pytest.raises(Unavailable):
        await listdir(stranger, ROOT_INODE)


async def test_stalled_registry_fails_within_the_deadline(env: Env) -> None:
    env.registry.publish("p", "a", {"f": b"x"})
    env.client.stall = True
    fs = env.fresh_fs(meta_timeout=0.2, meta_root=env.tmp / "cold")
    with trio.fail_after(30):  # generous: only guards against hanging forever
        with pytest.raises(Unavailable):
            await listdir(fs, ROOT_INODE)


async def test_a_100k_file_version_costs_one_manifest_request(env: Env) -> None:
    files = {f"shard{i // 1000:03d}/item{i:06d}.json": b"" for i in range(100_000)}
    env.registry.publish("p", "big", files)
    before = env.registry.requests
    v0 = await walk(env.fs, "p/big/v0")
    count = 0
    for name, attr in (await listdir(env.fs, v0.ino)).items():
        assert name.startswith("shard") and stat.S_ISDIR(attr.mode)
        inner = await listdir(env.fs, attr.ino)
        count += len(inner)
        assert all(a.size == 0 and stat.S_ISREG(a.mode) for a in inner.values())
    assert count == 100_000
    await walk(env.fs, "p/big/v0/shard099/item099999.json")
    # list projects + list the project + the manifest
    assert env.registry.requests - before <= 3

    before = env.registry.requests
    again = env.fresh_fs()
    shard = await walk(again, "p/big/v0/shard042")
    assert len(await listdir(again, shard.ino)) == 1000
    assert env.registry.requests - before <= 2  # the manifest came from disk


async def test_concurrent_lookups_fetch_the_manifest_once(env: Env) -> None:
    env.registry.publish("p", "a", {f"f{i}": b"x" for i in range(10)})
    v0 = await walk(env.fs, "p/a/v0")
    calls = 0
    inner = env.registry.get_manifest

    async def counting(project: str, artifact: str, number: int) -> Manifest:
        nonlocal calls
        calls += 1
        await trio.sleep(0.01)
        return await inner(project, artifact, number)

    env.registry.get_manifest = counting  # type: ignore[method-assign]
    results: list[Attr] = []

    async def one(i: int) -> None:
        results.append(await env.fs.lookup(v0.ino, f"f{i}"))

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(one, i)
    assert calls == 1 and len({r.ino for r in results}) == 10


async def test_manifest_that_does_not_match_its_digest_is_refused(env: Env) -> None:
    env.registry.publish("p", "a", {"f": b"x"})
    forged = Manifest.build([("evil", 1, "0" * 64)])

    async def wrong(project: str, artifact: str, number: int) -> Manifest:
        return forged

    env.registry.get_manifest = wrong  # type: ignore[method-assign]
    v0 = await walk(env.fs, "p/a/v0")
    with pytest.raises(IntegrityError):
        await env.fs.lookup(v0.ino, "evil")


async def test_negative_entries_are_cached_long_inside_versions(env: Env) -> None:
    env.registry.publish("p", "a", {"f": b"x"})
    v0 = await walk(env.fs, "p/a/v0")
    miss = await env.fs.lookup(v0.ino, "nope")
    assert miss.is_negative and miss.entry_timeout == env.fs.options.immutable_timeout
    art = await walk(env.fs, "p/a")
    assert (await env.fs.lookup(art.ino, "v7")).entry_timeout == TTL
    f = await walk(env.fs, "p/a/v0/f")
    assert f.entry_timeout == f.attr_timeout == env.fs.options.immutable_timeout


async def test_mutations_inside_versions_fail_with_erofs(env: Env) -> None:
    env.registry.publish("p", "a", {"d/f": b"x"})
    fs = env.fs
    v0 = await walk(fs, "p/a/v0")
    d = await walk(fs, "p/a/v0/d")
    f = await walk(fs, "p/a/v0/d/f")
    art = await walk(fs, "p/a")
    refused = [
        fs.mkdir(v0.ino, "new", 0o755),
        fs.create(d.ino, "new", 0o644, 0),
        fs.mknod(d.ino, "fifo", stat.S_IFIFO | 0o644),
        fs.unlink(d.ino, "f"),
        fs.rmdir(v0.ino, "d"),
        fs.rmdir(art.ino, "v0"),
        fs.rename(d.ino, "f", d.ino, "g", 0),
        fs.rename(d.ino, "f", art.ino, "g", 0),
        fs.setattr(f.ino),
        fs.setattr(v0.ino),
        fs.symlink(d.ino, "ln", "f"),
        fs.link(f.ino, d.ino, "hard"),
        fs.open(f.ino, 1),  # O_WRONLY
        fs.open(f.ino, 2 | 512),  # O_RDWR | O_TRUNC
        fs.setxattr(f.ino, "user.other", b"v"),
        fs.removexattr(v0.ino, "user.artfs.ref"),
    ]
    for call in refused:
        with pytest.raises(ReadOnly) as exc:
            await call
        assert exc.value.errno == errno.EROFS
    with pytest.raises(NotPermitted):  # only drafts can be committed
        await fs.setxattr(v0.ino, "user.artfs.commit", b"{}")
    with pytest.raises(NotPermitted):
        await fs.unlink(art.ino, "latest")


async def test_xattrs_on_versions_and_files(env: Env) -> None:
    info = env.registry.publish(
        "p",
        "a",
        {"d/f": b"hello"},
        aliases=["best"],
        metadata={"acc": 0.9, "name": "ünï"},
        description="first cut",
    )
    fs = env.fresh_fs(xattrs=True)
    v0 = await walk(fs, "p/a/v0")
    expected = {
        "user.artfs.ref": b"p/a:v0",
        "user.artfs.digest": info.digest.encode(),
        "user.artfs.aliases": b"best,latest",
        "user.artfs.description": b"first cut",
        "user.artfs.type": b"dataset",
    }
    for name, value in expected.items():
        assert await fs.getxattr(v0.ino, name) == value
    meta = json.loads(await fs.getxattr(v0.ino, "user.artfs.metadata"))
    assert meta == {"acc": 0.9, "name": "ünï"}
    created = (await fs.getxattr(v0.ino, "user.artfs.created")).decode()
    assert created.endswith("Z") and created[:4].isdigit()
    assert set(await fs.listxattr(v0.ino)) >= set(expected)

    f = await walk(fs, "p/a/v0/d/f")
    assert (
        await fs.getxattr(f.ino, "user.artfs.sha256")
        == hashlib.sha256(b"hello").hexdigest().encode()
    )
    assert await fs.getxattr(f.ino, "user.artfs.ref") == b"p/a:v0"
    assert await fs.getxattr(f.ino, "user.artfs.path") == b"d/f"
    assert await fs.getxattr(f.ino, "user.artfs.cached") == b"0"
    assert await cat(fs, f.ino) == b"hello"
    assert await fs.getxattr(f.ino, "user.artfs.cached") == b"5"
    with pytest.raises(NoAttribute) as exc:
        await fs.getxattr(f.ino, "user.unknown")
    assert exc.value.errno == errno.ENODATA
    with pytest.raises(NoAttribute):
        await fs.getxattr(ROOT_INODE, "user.artfs.ref")


async def test_xattrs_off_answers_enosys(env: Env) -> None:
    env.registry.publish("p", "a", {"f": b"x"})
    f = await walk(env.fs, "p/a/v0/f")
    for call in (env.fs.getxattr(f.ino, "user.artfs.sha256"), env.fs.listxattr(f.ino)):
        with pytest.raises(Unsupported) as exc:
            await call
        assert exc.value.errno == errno.ENOSYS


async def test_version_recreated_under_the_same_number_gets_new_inodes(env: Env) -> None:
    env.registry.publish("p", "a", {"f": b"before"})
    old = await walk(env.fs, "p/a/v0/f")
    assert await cat(env.fs, old.ino) == b"before"
    # the artifact is deleted and re-created: v0 now names other content
    del env.registry.artifacts[("p", "a")]
    del env.registry.versions[("p", "a", 0)]
    env.registry.publish("p", "a", {"f": b"after!"})
    env.clock.now += TTL
    new = await walk(env.fs, "p/a/v0/f")
    assert new.ino != old.ino
    assert await cat(env.fs, new.ino) == b"after!"


# --- freeing version trees the kernel no longer holds ----------------------------------------


def kernel_refs(fs: ArtfsFS) -> dict[int, int]:
    """Count the lookups the 'kernel' is given from now on, per inode: what its FORGETs
    return (the table itself keeps one count per version, no record per inode)."""
    refs: dict[int, int] = {}
    remember = fs.table.remember

    def counting(node: Node) -> None:
        refs[node.ino] = refs.get(node.ino, 0) + 1
        remember(node)

    fs.table.remember = counting  # type: ignore[method-assign]
    return refs


def forget_all(fs: ArtfsFS, refs: dict[int, int], keep: int = 0) -> None:
    """FORGET what the kernel holds, but for ``keep`` inodes."""
    held = list(refs.items())
    gone = held[: len(held) - keep]
    fs.forget(gone)
    for ino, _ in gone:
        del refs[ino]


async def test_a_forgotten_version_tree_is_freed_and_rebuilt_with_the_same_numbers(
    env: Env,
) -> None:
    env.registry.publish("p", "a", FILES)
    fs = env.fs
    refs = kernel_refs(fs)
    await walk(fs, "p/a/v0")
    before = len(fs.table)
    inos = {rel: (await walk(fs, "p/a/v0/" + rel)).ino for rel in FILES}
    assert await cat(fs, inos["big.bin"]) == FILES["big.bin"]
    assert len(fs.table) > before + len(FILES)
    forget_all(fs, refs, keep=1)  # all but one: the tree stays
    assert len(fs.table) > before + len(FILES)
    assert fs.files._walks  # the directory read-ahead's state holds file nodes...
    forget_all(fs, refs)
    assert len(fs.table) == before  # only the version directory is left
    assert not fs.files._walks  # ...and goes with the tree
    requests = env.registry.requests
    assert {rel: (await walk(fs, "p/a/v0/" + rel)).ino for rel in FILES} == inos
    assert env.registry.requests == requests  # rebuilt from the manifest on disk
    for rel, data in FILES.items():
        assert await cat(fs, inos[rel]) == data
    fs.forget([(123456789, 1), (inos["big.bin"], 1000)])  # unknown, or more than held: harmless
    await fs.aclose()


async def test_open_files_and_directories_keep_their_tree(env: Env) -> None:
    env.registry.publish("p", "a", FILES)
    fs = env.fs
    refs = kernel_refs(fs)
    big = await walk(fs, "p/a/v0/big.bin")
    opened = await fs.open(big.ino, os.O_RDONLY)
    deep = await walk(fs, "p/a/v0/deep/a")
    dir_fh = await fs.opendir(deep.ino)
    forget_all(fs, refs)
    assert await fs.read(opened.fh, 0, 10) == FILES["big.bin"][:10]
    entries = [name for name, _, _ in fs.readdir(dir_fh, 0)]
    assert entries == ["b"]
    await fs.release(opened.fh)
    assert fs.table.find(big.ino) is not None  # the directory handle still holds it
    await fs.releasedir(dir_fh)
    assert fs.table.find(big.ino) is None
    assert (await walk(fs, "p/a/v0/big.bin")).ino == big.ino
    await fs.aclose()
