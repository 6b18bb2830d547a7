"""A real FUSE mount over the in-memory registry, checked with plain ``os`` calls.

The daemon runs in a background thread of the test process with its own trio
loop (pyfuse3 allows one mount per process, so these tests mount one at a
time), or as a child process for the background start and signal handling.
Every mount is lazily unmounted in teardown, even when a test fails.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyfuse3
import pytest
import trio

from artfs.cache.blobcache import BlobCache
from artfs.cache.settings import CacheTuning
from artfs.client.memory import FaultyClient, MemoryRegistryClient
from artfs.errors import ArtfsError, NotFound, Unavailable
from artfs.fs.attrs import Attr
from artfs.fs.daemon import fuse_mounts, is_fuse_mount, mount_background, run_mount, unmount
from artfs.fs.fuse_ops import FuseOperations
from artfs.fs.options import MountOptions
from artfs.fs.service import ArtfsFS
from artfs.fs.testing import MemoryBlobCache, MemoryBlobReader

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3",
)

BIG = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)  # ~3 MiB, not block-aligned
LONG_NAME = "é" * 127 + "x"  # 255 bytes
FILES = {
    "train/part-0.bin": BIG,
    "train/part-1.bin": b"second part\n",
    "empty": b"",
    "with space/ünïcode ファイル.txt": b"text\n",
    f"names/{LONG_NAME}": b"long",
}


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def force_unmount(point: Path) -> None:
    if is_fuse_mount(point):
        subprocess.run(["fusermount3", "-u", "-z", str(point)], capture_output=True, check=False)


@dataclass
class Mount:
    point: Path
    registry: MemoryRegistryClient
    client: FaultyClient
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)


@pytest.fixture(params=["twin", "blobcache"])
def make_mount(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Mount]]:
    """Start mounts over the in-memory cache twin, and over the real on-disk blob cache."""
    mounts: list[Mount] = []
    real_cache = request.param == "blobcache"

    def start(broken_cache: bool = False, **kw: object) -> Mount:
        registry = MemoryRegistryClient()
        registry.publish("proj", "data", {"train/part-1.bin": b"old\n"}, aliases=["best"])
        registry.publish("proj", "data", FILES, metadata={"rows": 3}, description="demo")
        client = FaultyClient(registry)
        point = tmp_path / f"mnt{len(mounts)}"
        point.mkdir()
        opts: dict[str, object] = {"meta_root": tmp_path / "meta", "meta_timeout": 2.0}
        opts.update(kw)
        options = MountOptions(**opts)  # type: ignore[arg-type]
        errors: list[BaseException] = []

        async def main() -> None:
            if broken_cache or not real_cache:
                kind = ExplodingCache if broken_cache else MemoryBlobCache
                await run_mount(point, client, kind(client, tmp_path / "c"), options)
                return
            tuning = CacheTuning(timeout=2.0)
            async with BlobCache(tmp_path / f"cache{len(mounts)}", client, tuning=tuning) as cache:
                await run_mount(point, client, cache, options)

        def serve() -> None:
            try:
                trio.run(main)
            except BaseException as e:  # reported by the test's teardown
                errors.append(e)

        thread = threading.Thread(target=serve, name=f"artfs-mount-{point.name}", daemon=True)
        mount = Mount(point, registry, client, thread, errors)
        mounts.append(mount)
        thread.start()
        wait_for(lambda: is_fuse_mount(point) or not thread.is_alive(), "the mount")
        assert not errors, errors
        return mount

    try:
        yield start
    finally:
        for mount in mounts:
            force_unmount(mount.point)
            mount.thread.join(20)
        for mount in mounts:
            assert not mount.thread.is_alive(), "the mount thread did not exit after unmount"
            assert not mount.errors, mount.errors


def test_listing_stat_and_byte_exact_reads(make_mount: Callable[..., Mount]) -> None:
    m = make_mount()
    root = m.point
    assert os.listdir(root) == ["proj"]
    art = root / "proj" / "data"
    assert sorted(os.listdir(art)) == ["best", "latest", "v0", "v1"]
    assert os.readlink(art / "latest") == "v1"
    assert os.readlink(art / "best") == "v0"
    assert stat.S_ISLNK(os.lstat(art / "latest").st_mode)

    v1 = art / "v1"
    st = os.stat(v1)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    for rel, data in FILES.items():
        st = os.stat(v1 / rel)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444
        assert st.st_size == len(data)
        assert (v1 / rel).read_bytes() == data
        assert (art / "latest" / rel).read_bytes() == data
    assert (art / "best" / "train" / "part-1.bin").read_bytes() == b"old\n"
    # random access in the middle of the big file
    with open(v1 / "train" / "part-0.bin", "rb") as f:
        f.seek(1_000_003)
        assert f.read(70_000) == BIG[1_000_003:1_070_003]
    found = {
        os.path.relpath(os.path.join(d, name), v1) for d, _, names in os.walk(v1) for name in names
    }
    assert found == set(FILES)
    if os.getuid() == 0:  # the daemon raised the kernel's read-ahead to 1 MiB
        device = fuse_mounts(root)[-1][1]
        assert Path(f"/sys/class/bdi/{device}/read_ahead_kb").read_text().strip() == "1024"
    listing = subprocess.run(["ls", "-lR", str(art / "v1")], capture_output=True, text=True)
    assert listing.returncode == 0 and "-r--r--r--" in listing.stdout
    with pytest.raises(FileNotFoundError):
        os.stat(v1 / "missing")


def test_mutations_in_versions_fail_with_erofs(make_mount: Callable[..., Mount]) -> None:
    m = make_mount()
    v1 = m.point / "proj" / "data" / "v1"
    target = v1 / "train" / "part-1.bin"
    # as root the permission bits do not stop these, so they reach the daemon
    allowed = {errno.EROFS} if os.getuid() == 0 else {errno.EROFS, errno.EACCES}
    attempts: list[Callable[[], object]] = [
        lambda: open(target, "wb"),  # noqa: SIM115
        lambda: open(target, "r+b"),  # noqa: SIM115
        lambda: open(v1 / "new.txt", "wb"),  # noqa: SIM115
        lambda: os.mkdir(v1 / "newdir"),
        lambda: os.unlink(target),
        lambda: os.rmdir(v1 / "names"),
        lambda: os.rename(target, v1 / "moved"),
        lambda: os.symlink("x", v1 / "link"),
        lambda: os.link(target, v1 / "hard"),
        lambda: os.chmod(target, 0o644),
        lambda: os.truncate(target, 0),
        lambda: os.utime(target, (0, 0)),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as exc:
            attempt()
        assert exc.value.errno in allowed, (attempt, exc.value)
    assert target.read_bytes() == b"second part\n"


def test_xattrs_when_enabled(make_mount: Callable[..., Mount]) -> None:
    m = make_mount(xattrs=True)
    v1 = m.point / "proj" / "data" / "v1"
    assert os.getxattr(v1, "user.artfs.ref") == b"proj/data:v1"
    assert os.getxattr(v1, "user.artfs.aliases") == b"latest"
    assert os.getxattr(v1, "user.artfs.metadata") == b'{"rows":3}'
    assert os.getxattr(v1, "user.artfs.description") == b"demo"
    assert "user.artfs.digest" in os.listxattr(v1)
    f = v1 / "train" / "part-1.bin"
    assert (
        os.getxattr(f, "user.artfs.sha256") == hashlib.sha256(b"second part\n").hexdigest().encode()
    )
    assert os.getxattr(f, "user.artfs.cached") == b"0"
    f.read_bytes()
    assert os.getxattr(f, "user.artfs.cached") == str(len(b"second part\n")).encode()
    with pytest.raises(OSError) as exc:
        os.getxattr(f, "user.nope")
    assert exc.value.errno == errno.ENODATA
    with pytest.raises(OSError) as exc:
        os.setxattr(f, "user.artfs.sha256", b"x")
    assert exc.value.errno == errno.EROFS


def test_xattrs_off_by_default(make_mount: Callable[..., Mount]) -> None:
    m = make_mount()
    f = m.point / "proj" / "data" / "v1" / "empty"
    for _ in range(2):  # after the first ENOSYS the kernel answers by itself
        with pytest.raises(OSError) as exc:
            os.getxattr(f, "user.artfs.sha256")
        assert exc.value.errno == errno.EOPNOTSUPP


def test_alias_move_is_seen_and_open_files_keep_their_version(
    make_mount: Callable[..., Mount],
) -> None:
    m = make_mount(listing_ttl=0.5)
    art = m.point / "proj" / "data"
    with open(art / "latest" / "train" / "part-1.bin", "rb") as held:
        m.registry.publish("proj", "data", {"train/part-1.bin": b"third\n"})
        wait_for(lambda: os.readlink(art / "latest") == "v2", "latest to move to v2")
        assert (art / "latest" / "train" / "part-1.bin").read_bytes() == b"third\n"
        assert held.read() == b"second part\n"
    assert "v2" in os.listdir(art)


def test_offline_reads_fail_with_eio_and_the_mount_stays_up(
    make_mount: Callable[..., Mount],
) -> None:
    m = make_mount(listing_ttl=0.2, read_timeout=2.0)
    v1 = m.point / "proj" / "data" / "v1"
    assert (v1 / "train" / "part-1.bin").read_bytes() == b"second part\n"
    m.client.down = True
    with pytest.raises(OSError) as exc:
        (v1 / "train" / "part-0.bin").read_bytes()
    assert exc.value.errno == errno.EIO
    time.sleep(0.3)  # let the listings go stale: they are served from what was known
    assert sorted(os.listdir(m.point / "proj" / "data")) == ["best", "latest", "v0", "v1"]
    assert (v1 / "train" / "part-1.bin").read_bytes() == b"second part\n"
    m.client.down = False
    assert (v1 / "train" / "part-0.bin").read_bytes() == BIG


class ExplodingCache(MemoryBlobCache):
    """A cache with a bug: what an unexpected exception does to the mount."""

    async def open(self, sha256: str, size: int) -> MemoryBlobReader:
        raise RuntimeError("a bug in the cache")


def test_an_unexpected_exception_is_eio_and_the_mount_survives(
    make_mount: Callable[..., Mount],
) -> None:
    m = make_mount(broken_cache=True)
    v1 = m.point / "proj" / "data" / "v1"
    for _ in range(2):
        with pytest.raises(OSError) as exc:
            (v1 / "train" / "part-1.bin").read_bytes()
        assert exc.value.errno == errno.EIO
    assert (v1 / "empty").read_bytes() == b""  # nothing to fetch: no cache involved
    assert sorted(os.listdir(v1)) == sorted({p.split("/")[0] for p in FILES})


async def test_the_adapter_maps_errors_to_errnos(tmp_path: Path) -> None:
    registry = MemoryRegistryClient()
    fs = ArtfsFS(registry, MemoryBlobCache(registry, tmp_path), MountOptions(meta_root=tmp_path))
    ops = FuseOperations(fs)
    failures: list[tuple[BaseException, int]] = [
        (NotFound("gone"), errno.ENOENT),
        (Unavailable("down"), errno.EIO),
        (ZeroDivisionError("bug"), errno.EIO),
    ]
    for failure, expected in failures:

        async def fail(ino: int, failure: BaseException = failure) -> Attr:
            raise failure

        fs.getattr = fail  # type: ignore[method-assign]
        with pytest.raises(pyfuse3.FUSEError) as exc:
            await ops.getattr(1, None)  # type: ignore[arg-type]
        assert exc.value.errno == expected


def test_unmount_is_clean(make_mount: Callable[..., Mount]) -> None:
    m = make_mount()
    assert os.listdir(m.point) == ["proj"]
    assert unmount(m.point) is True
    m.thread.join(20)
    assert not m.thread.is_alive() and not m.errors
    assert not is_fuse_mount(m.point)
    with pytest.raises(NotFound):
        unmount(m.point)


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import trio

    from artfs.client.memory import MemoryRegistryClient
    from artfs.fs.daemon import run_mount
    from artfs.fs.options import MountOptions
    from artfs.fs.testing import MemoryBlobCache

    registry = MemoryRegistryClient()
    registry.publish("p", "a", {"hello.txt": b"hi from the child"})
    state = Path(sys.argv[2])
    cache = MemoryBlobCache(registry, state / "cache")
    trio.run(run_mount, sys.argv[1], registry, cache, MountOptions(meta_root=state / "meta"))
    print("clean exit", flush=True)
    """
)


def test_background_mount_and_sigterm(tmp_path: Path) -> None:
    point = tmp_path / "mnt"
    point.mkdir()
    log = tmp_path / "state" / "mount.log"
    argv = [sys.executable, "-c", CHILD, str(point), str(tmp_path / "state")]
    try:
        pid = mount_background(argv, point, log_path=log, timeout=60)
        assert fuse_mounts(point)
        assert (point / "p" / "a" / "v0" / "hello.txt").read_bytes() == b"hi from the child"
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not is_fuse_mount(point), "the daemon to unmount on SIGTERM")
        wait_for(lambda: _exited(pid), "the daemon to exit")
        assert "clean exit" in log.read_text()
    finally:
        force_unmount(point)


def _exited(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def test_background_mount_reports_a_failing_daemon(tmp_path: Path) -> None:
    point = tmp_path / "mnt"
    point.mkdir()
    argv = [sys.executable, "-c", "import sys; print('boom: no registry'); sys.exit(3)"]
    with pytest.raises(ArtfsError) as exc:
        mount_background(argv, point, log_path=tmp_path / "mount.log", timeout=60)
    assert "boom: no registry" in str(exc.value) and "status 3" in str(exc.value)


@pytest.mark.skipif(os.getuid() != 0, reason="dropping the kernel's caches needs root")
def test_trees_the_kernel_forgets_are_freed_and_keep_their_inode_numbers(
    make_mount: Callable[..., Mount],
) -> None:
    m = make_mount()
    v1 = m.point / "proj" / "data" / "v1"
    inos = {rel: os.stat(v1 / rel).st_ino for rel in FILES}
    for rel, data in FILES.items():
        assert (v1 / rel).read_bytes() == data
    v0_file = m.point / "proj" / "data" / "v0" / "train" / "part-1.bin"
    assert v0_file.read_bytes() == b"old\n"
    known = os.statvfs(m.point).f_files  # the daemon reports its inode count here
    held = open(v1 / "train" / "part-1.bin", "rb")  # noqa: SIM115
    try:

        def freed() -> bool:
            Path("/proc/sys/vm/drop_caches").write_text("3")  # the kernel sends FORGETs
            return os.statvfs(m.point).f_files < known

        wait_for(freed, "FORGET to free v0's tree")
        known = os.statvfs(m.point).f_files
        assert held.read() == b"second part\n"  # v1 stays: a file in it is open
        assert os.stat(v1 / "train" / "part-1.bin").st_ino == inos["train/part-1.bin"]
    finally:
        held.close()
    wait_for(freed, "v1's tree to be freed once nothing in it is open")
    assert {rel: os.stat(v1 / rel).st_ino for rel in FILES} == inos
    for rel, data in FILES.items():
        assert (v1 / rel).read_bytes() == data
    assert os.statvfs(m.point).f_files == known
    assert v0_file.read_bytes() == b"old\n"
