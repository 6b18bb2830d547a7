"""FUSE passthrough: cached blobs and draft files are read (and written) by the kernel itself.

Three levels: the I/O-mode bookkeeping alone (``IoModes`` over the in-memory ``Backing``
twin), the service over the real on-disk cache (which open gets which mode, pins,
fallbacks), and real mounts (the daemon sees no READ of a passthrough file, mmap works,
drafts are written by the kernel, a stacked cache directory falls back and says why).
The real-mount tests ask for passthrough explicitly (``ARTFS_PASSTHROUGH=1``): the suite
also runs with it off by default (scripts/test.sh).
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import random
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from artfs.cache.blobcache import BlobCache
from artfs.cache.layout import CacheLayout
from artfs.cache.settings import CacheTuning
from artfs.client.memory import MemoryRegistryClient
from artfs.drafts.store import DraftStore
from artfs.fs.attrs import Opened
from artfs.fs.inodes import ROOT_INODE
from artfs.fs.options import MountOptions
from artfs.fs.passthrough import IoModes, MemoryBacking, PassthroughState, probe
from artfs.fs.service import ArtfsFS
from tests.e2e import Server, is_mounted, run_cli

MiB = 1 << 20


# --- the bookkeeping -------------------------------------------------------------------------------
def test_one_backing_id_per_inode_closed_at_the_last_release(tmp_path: Path) -> None:
    backing = MemoryBacking()
    modes = IoModes(backing)
    fd = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR)
    try:
        first = modes.open_passthrough(7, lambda: fd)
        second = modes.open_passthrough(7, lambda: -1)  # not asked: the inode has its id
        other = modes.open_passthrough(8, lambda: fd)
        assert first == second != other
        assert backing.opened == 2
        modes.release(7, True)
        assert first in backing.ids  # one handle still open
        modes.release(7, True)
        assert first not in backing.ids
        modes.release(8, True)
        assert backing.ids == {}
    finally:
        os.close(fd)


def test_an_inode_is_in_one_mode_at_a_time(tmp_path: Path) -> None:
    modes = IoModes(MemoryBacking())
    modes.open_cached(3)
    assert not modes.may_passthrough(3)
    assert modes.may_passthrough(4)
    modes.release(3, False)
    assert modes.may_passthrough(3)
    fd = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR)
    try:
        modes.open_passthrough(3, lambda: fd)
        assert modes.in_passthrough(3)
        modes.close_all()
        assert not modes.in_passthrough(3)
        assert modes.open_backing_ids() == 0
    finally:
        os.close(fd)


def test_a_refused_backing_file_records_nothing(tmp_path: Path) -> None:
    backing = MemoryBacking()
    backing.fail = errno.EIO
    modes = IoModes(backing)
    fd = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR)
    try:
        with pytest.raises(OSError):
            modes.open_passthrough(5, lambda: fd)
        assert modes.may_passthrough(5) and not modes.in_passthrough(5)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("err", "said"),
    [
        (errno.EPERM, "CAP_SYS_ADMIN"),
        (errno.ELOOP, "stacked filesystem"),
        (errno.ENOTTY, "does not support FUSE passthrough"),
        (errno.EIO, "failed"),
    ],
)
def test_the_probe_says_why_passthrough_is_off(tmp_path: Path, err: int, said: str) -> None:
    backing = MemoryBacking()
    assert probe(backing, [tmp_path]) == PassthroughState(True, "")
    assert backing.ids == {}  # the probe's id is closed again
    backing.fail = err
    state = probe(backing, [tmp_path])
    assert not state.on and said in state.reason and said in state.mode


def test_passthrough_never_keeps_the_fuse_page_cache() -> None:
    with pytest.raises(ValueError):
        Opened(1, keep_cache=True, backing_id=3)


# --- the service over the real cache ---------------------------------------------------------------
class Env:
    def __init__(self, fs: ArtfsFS, cache: BlobCache, backing: MemoryBacking) -> None:
        self.fs, self.cache, self.backing = fs, cache, backing

    async def ino(self, *path: str) -> int:
        ino = ROOT_INODE
        for part in path:
            ino = (await self.fs.lookup(ino, part)).ino
        return ino


FILES = {
    "big.bin": random.Random(1).randbytes(6 * MiB + 5),
    "small.bin": random.Random(2).randbytes(3 * MiB),
    "tiny.txt": b"tiny\n",
}


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    registry = MemoryRegistryClient()
    registry.publish("p", "a", FILES)
    backing = MemoryBacking()
    options = MountOptions(meta_root=tmp_path / "meta", small_whole_max=4 * MiB)
    async with BlobCache(tmp_path / "cache", registry, tuning=CacheTuning(timeout=5)) as cache:
        fs = ArtfsFS(registry, cache, options)
        fs.use_passthrough(backing, PassthroughState(True, ""))
        try:
            yield Env(fs, cache, backing)
        finally:
            await fs.aclose()
    assert backing.ids == {}, "a backing id outlived its handles"


async def _read_all(env: Env, fh: int, size: int) -> bytes:
    return await env.fs.read(fh, 0, size + 1)


async def _wait_complete(env: Env, name: str) -> None:
    data = FILES[name]
    sha = hashlib.sha256(data).hexdigest()
    with trio.fail_after(10):
        while not env.cache.layout.complete(sha).exists():
            await trio.sleep(0.01)


async def test_small_files_are_fetched_whole_and_passed_through_from_the_first_open(
    env: Env,
) -> None:
    for name in ("small.bin", "tiny.txt"):
        ino = await env.ino("p", "a", "v0", name)
        opened = await env.fs.open(ino, os.O_RDONLY)
        assert opened.backing_id > 0 and not opened.keep_cache, name
        fd = env.backing.ids[opened.backing_id]
        assert os.pread(fd, len(FILES[name]) + 1, 0) == FILES[name]  # what the kernel reads
        await env.fs.release(opened.fh)


async def test_a_large_blob_is_passed_through_once_complete(env: Env) -> None:
    ino = await env.ino("p", "a", "v0", "big.bin")
    cold = await env.fs.open(ino, os.O_RDONLY)
    assert cold.backing_id == 0 and cold.keep_cache  # not cached: the daemon serves it
    assert await _read_all(env, cold.fh, len(FILES["big.bin"])) == FILES["big.bin"]
    await _wait_complete(env, "big.bin")
    # Complete now, but a handle is open in caching mode: the kernel would refuse passthrough.
    second = await env.fs.open(ino, os.O_RDONLY)
    assert second.backing_id == 0 and second.keep_cache
    await env.fs.release(cold.fh)
    await env.fs.release(second.fh)
    warm = await env.fs.open(ino, os.O_RDONLY)
    assert warm.backing_id > 0 and not warm.keep_cache
    again = await env.fs.open(ino, os.O_RDONLY)
    assert again.backing_id == warm.backing_id  # one backing file per inode
    assert env.backing.opened == 1
    await env.fs.release(warm.fh)
    await env.fs.release(again.fh)


async def test_an_open_passthrough_handle_pins_its_blob(env: Env) -> None:
    ino = await env.ino("p", "a", "v0", "small.bin")
    opened = await env.fs.open(ino, os.O_RDONLY)
    assert opened.backing_id > 0
    sha = hashlib.sha256(FILES["small.bin"]).hexdigest()
    env.cache.prune(0)
    assert env.cache.layout.complete(sha).exists()  # never pulled from under the kernel
    await env.fs.release(opened.fh)
    env.cache.prune(0)
    assert not env.cache.layout.complete(sha).exists()


async def test_a_refused_backing_file_falls_back_to_daemon_reads(env: Env) -> None:
    env.backing.fail = errno.EIO
    ino = await env.ino("p", "a", "v0", "small.bin")
    opened = await env.fs.open(ino, os.O_RDONLY)
    assert opened.backing_id == 0 and opened.keep_cache
    assert await _read_all(env, opened.fh, 3 * MiB) == FILES["small.bin"]
    await env.fs.release(opened.fh)


async def test_a_damaged_cached_blob_is_not_passed_through(env: Env) -> None:
    ino = await env.ino("p", "a", "v0", "small.bin")
    opened = await env.fs.open(ino, os.O_RDONLY)
    assert opened.backing_id > 0
    await env.fs.release(opened.fh)  # the blob's state is dropped: the next open checks again
    path = env.cache.layout.complete(hashlib.sha256(FILES["small.bin"]).hexdigest())
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(MiB)
        f.write(b"rot")
    second = await env.fs.open(ino, os.O_RDONLY)
    assert second.backing_id == 0  # damaged: the daemon repairs it and serves verified bytes
    assert await env.fs.read(second.fh, 0, 4 * MiB) == FILES["small.bin"]
    await env.fs.release(second.fh)
    third = await env.fs.open(ino, os.O_RDONLY)  # repaired and complete again
    assert third.backing_id > 0
    assert os.pread(env.backing.ids[third.backing_id], 4 * MiB, 0) == FILES["small.bin"]
    await env.fs.release(third.fh)


async def _ino(fs: ArtfsFS, *path: str) -> int:
    ino = ROOT_INODE
    for part in path:
        ino = (await fs.lookup(ino, part)).ino
    return ino


async def test_draft_files_are_handed_to_the_kernel(tmp_path: Path) -> None:
    registry = MemoryRegistryClient()
    registry.publish("p", "a", {"kept.txt": b"kept\n"})
    store = DraftStore(tmp_path / "state")
    backing = MemoryBacking()
    try:
        async with BlobCache(tmp_path / "cache", registry) as cache:
            fs = ArtfsFS(registry, cache, MountOptions(meta_root=tmp_path / "m"), drafts=store)
            fs.use_passthrough(backing, PassthroughState(True, ""))
            art = await _ino(fs, "p", "a")
            draft = (await fs.mkdir(art, "d", 0o755)).ino
            opened, attr = await fs.create(draft, "x.bin", 0o644, os.O_WRONLY | os.O_CREAT)
            assert opened.backing_id > 0 and attr.size == 0
            fd = backing.ids[opened.backing_id]
            payload = random.Random(3).randbytes(MiB + 3)
            os.pwrite(fd, payload, 0)  # what the kernel does with a passthrough write
            assert (await fs.getattr(attr.ino)).size == len(payload)  # learnt from the file
            await fs.flush(opened.fh)
            await fs.release(opened.fh)
            assert backing.ids == {}
            assert (await fs.getattr(attr.ino)).size == len(payload)
            reopened = await fs.open(attr.ino, os.O_RDONLY)
            assert reopened.backing_id > 0
            assert os.pread(backing.ids[reopened.backing_id], 2 * MiB, 0) == payload
            await fs.release(reopened.fh)
            await fs.aclose()
    finally:
        store.close()


# --- real mounts -----------------------------------------------------------------------------------
@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "registry")
    s.start()
    yield s
    s.stop()


@dataclass
class Mounted:
    point: Path
    log: Path  # the daemon's log (--debug: one line per FUSE request)

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def requests_since(self, start: int, op: str) -> int:
        return sum(1 for line in self.log_lines()[start:] if f" {op}(" in line)

    def mode(self) -> str:
        for _ in range(100):
            mode = str(json.loads(run_cli("info", str(self.point)).stdout)["mode"])
            if mode != "starting":
                return mode
            time.sleep(0.05)
        raise AssertionError("the mount never decided on passthrough")


@contextmanager
def mount(
    server: Server, tmp_path: Path, *extra: str, cache: Path | None = None
) -> Iterator[Mounted]:
    point = tmp_path / "mnt"
    point.mkdir(exist_ok=True)
    cache = cache or tmp_path / "cache"
    proc = run_cli(
        "mount", "--registry", server.url, str(point), "--cache-dir", str(cache),
        "--state-dir", str(tmp_path / "state"), "--debug", *extra,
        env={"ARTFS_PASSTHROUGH": "1"},
    )  # fmt: skip
    found = re.search(r"\(log: (.+)\)", proc.stderr)
    assert found, proc.stderr
    try:
        yield Mounted(point, Path(found.group(1)))
    finally:
        run_cli("umount", str(point), check=False)
        if is_mounted(point):
            subprocess.run(["fusermount3", "-u", "-z", str(point)], check=False)


def drop_page_cache() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def test_the_kernel_reads_cached_files_itself(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(4).randbytes(24 * MiB + 11)
    (src / "weights.bin").write_bytes(data)
    run_cli("put", str(src), "p/a", "--registry", server.url)
    with mount(server, tmp_path) as m:
        assert m.mode() == "passthrough"
        path = m.point / "p" / "a" / "v0" / "weights.bin"
        assert path.read_bytes() == data  # cold: through the daemon, completes the blob
        complete = CacheLayout(tmp_path / "cache").complete(hashlib.sha256(data).hexdigest())
        deadline = time.monotonic() + 30  # (hashed and published in the background)
        while not complete.exists():
            assert time.monotonic() < deadline, "the blob was never published complete"
            time.sleep(0.05)
        time.sleep(0.2)  # (and stamped, a step after)
        start = len(m.log_lines())
        for _ in range(3):
            drop_page_cache()
            assert path.read_bytes() == data
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
                assert hashlib.sha256(mm).digest() == hashlib.sha256(data).digest()
        assert m.requests_since(start, "open") >= 6
        assert m.requests_since(start, "read") == 0, "a cached file was read through the daemon"


def test_no_passthrough_reads_through_the_daemon(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(5).randbytes(3 * MiB)
    (src / "f.bin").write_bytes(data)
    run_cli("put", str(src), "p/a", "--registry", server.url)
    with mount(server, tmp_path, "--no-passthrough") as m:
        assert m.mode() == "daemon reads (turned off (--no-passthrough or ARTFS_PASSTHROUGH=0))"
        path = m.point / "p" / "a" / "v0" / "f.bin"
        assert path.read_bytes() == data
        start = len(m.log_lines())
        drop_page_cache()
        assert path.read_bytes() == data
        assert m.requests_since(start, "read") > 0


def test_a_cache_on_a_stacked_filesystem_falls_back_and_says_why(
    server: Server, tmp_path: Path
) -> None:
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    made = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
        capture_output=True, text=True,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount an overlayfs here: {made.stderr.strip()}")
    try:
        src = tmp_path / "src"
        src.mkdir()
        data = random.Random(6).randbytes(2 * MiB)
        (src / "f.bin").write_bytes(data)
        run_cli("put", str(src), "p/a", "--registry", server.url)
        with mount(server, tmp_path, cache=merged / "cache") as m:
            mode = m.mode()
            assert "stacked filesystem" in mode, mode
            for _ in range(2):
                assert (m.point / "p" / "a" / "v0" / "f.bin").read_bytes() == data
        said = [line for line in m.log_lines() if "passthrough:" in line]
        assert len(said) == 1 and "stacked filesystem" in said[0], said
    finally:
        subprocess.run(["umount", "-l", str(merged)], check=False)


def test_drafts_are_written_by_the_kernel_and_committed_whole(
    server: Server, tmp_path: Path
) -> None:
    payload = random.Random(7).randbytes(5 * MiB + 1)
    with mount(server, tmp_path) as m:
        assert m.mode() == "passthrough"
        point = m.point
        draft = point / "p" / "a" / "d"
        os.makedirs(draft)
        start = len(m.log_lines())
        with open(draft / "x.bin", "wb") as f:
            for k in range(0, len(payload), 4096):
                f.write(payload[k : k + 4096])
                if k == 1 * MiB:
                    f.flush()
                    assert os.stat(draft / "x.bin").st_size == k + 4096  # sizes follow the file
        assert os.stat(draft / "x.bin").st_size == len(payload)
        assert m.requests_since(start, "write") == 0, "draft writes went through the daemon"
        with open(draft / "x.bin", "r+b") as f:  # a random overwrite, then an append
            f.seek(100)
            f.write(b"patched")
        with open(draft / "x.bin", "ab") as f:
            f.write(b"tail")
        expected = payload[:100] + b"patched" + payload[107:] + b"tail"
        assert (draft / "x.bin").read_bytes() == expected
        out = run_cli("commit", str(draft)).stdout.strip()
        assert out == "p/a:v0"
        assert (point / "p" / "a" / "v0" / "x.bin").read_bytes() == expected
