"""READ replies made from the cache file (fs/splicing.py): the reader says where verified bytes
lie, pyfuse3 (patched by scripts/pyfuse3_passthrough.py) hands that to libfuse, which splices
the file's pages into /dev/fuse when a pipe can hold a whole 1 MiB reply.

Three levels: the decision alone, the reader over the real on-disk cache (what it answers,
and when), and real mounts with every read going through the daemon (passthrough off), with
pipes allowed to grow (``/proc/sys/fs/pipe-max-size`` raised for the test) and without.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from artfs.cache.blobcache import BlobCache
from artfs.cache.protocol import FileSlice
from artfs.cache.settings import CacheTuning
from artfs.client.memory import MemoryRegistryClient
from artfs.fs import splicing
from tests.conftest_server import RunningServer
from tests.e2e import is_mounted, run_cli

MiB = 1 << 20
PIPE_MAX = Path("/proc/sys/fs/pipe-max-size")


# --- the decision -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("found", "said"),
    [
        ({"wanted": False}, "copied (turned off (ARTFS_SPLICE=0))"),
        ({"patched": False}, "copied (this pyfuse3 cannot reply from a file"),
        ({"granted": False}, "copied (the kernel or libfuse offers no splice)"),
        ({"fits": False}, "copied (a 1 MiB reply does not fit a pipe"),
        ({}, "spliced from the cache file"),
    ],
)
def test_the_reply_mode_says_why_replies_are_not_spliced(found: dict[str, bool], said: str) -> None:
    inputs = {"wanted": True, "patched": True, "granted": True, "fits": True, **found}
    state = splicing.decide(**inputs)
    assert state.mode.startswith(said)
    assert state.spliced == (found == {})


def test_the_pipe_probe_asks_the_kernel() -> None:
    assert splicing.pipe_fits(64 * 1024)  # every pipe may hold 16 pages
    assert not splicing.pipe_fits(1 << 40)
    limit = int(PIPE_MAX.read_text())
    if os.geteuid() != 0 or limit >= 2 * MiB:
        return
    with big_pipes():
        assert splicing.pipe_fits()  # a 1 MiB reply, its header and libfuse's slack


# --- the reader -------------------------------------------------------------------------------
async def test_the_reader_answers_where_verified_bytes_lie(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(3 * MiB + 77)
    registry = MemoryRegistryClient()
    sha = registry.add_blob(data)
    async with BlobCache(tmp_path / "cache", registry, tuning=CacheTuning(timeout=5)) as cache:
        reader = await cache.open(sha, len(data))
        try:
            for offset, length in [(0, MiB), (MiB + 5, 300_000), (3 * MiB, MiB), (3 * MiB + 77, 9)]:
                got = await reader.read_reply(offset, length)
                expected = data[offset : offset + length]
                if isinstance(got, FileSlice):  # (fetched, checked, then read from the file)
                    assert got.size == len(expected)
                    assert os.pread(got.fd, got.size, got.offset) == expected
                else:
                    assert got == expected
                assert await reader.read(offset, length) == expected  # (bytes, always)
            again = await reader.read_reply(MiB + 5, 300_000)
            assert isinstance(again, FileSlice), "verified blocks are answered from the file"
        finally:
            await reader.aclose()


# --- real mounts ------------------------------------------------------------------------------
@contextmanager
def big_pipes() -> Iterator[None]:
    """Let pipes grow to 4 MiB (what CAP_SYS_RESOURCE gives a daemon), then restore."""
    before = PIPE_MAX.read_text()
    PIPE_MAX.write_text(f"{4 * MiB}\n")
    try:
        yield
    finally:
        PIPE_MAX.write_text(before)


@pytest.fixture
def server(local_registry_server: RunningServer, unique_project: str) -> Published:
    return Published(local_registry_server.url, unique_project)


@dataclass(frozen=True)
class Published:
    url: str
    project: str


def published(server: Published, tmp_path: Path) -> dict[str, bytes]:
    files = {
        "weights.bin": random.Random(7).randbytes(24 * MiB + 11),
        "config.json": b'{"layers": 12}\n' * 300,
    }
    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    run_cli("put", str(src), f"{server.project}/a", "--registry", server.url)
    return files


@contextmanager
def daemon_mount(server: Published, tmp_path: Path, **env: str) -> Iterator[Path]:
    """A mount whose every read goes through the daemon (passthrough off)."""
    point = tmp_path / "mnt"
    point.mkdir(exist_ok=True)
    proc = run_cli(
        "mount", "--registry", server.url, str(point), "--cache-dir", str(tmp_path / "cache"),
        "--state-dir", str(tmp_path / "state"), "--no-passthrough",
        env=env,
    )  # fmt: skip
    assert re.search(r"\(log: (.+)\)", proc.stderr), proc.stderr
    try:
        yield point
    finally:
        run_cli("umount", str(point), check=False)
        if is_mounted(point):
            subprocess.run(["fusermount3", "-u", "-z", str(point)], check=False)


def replies(point: Path) -> str:
    for _ in range(100):
        said = str(json.loads(run_cli("info", str(point)).stdout)["replies"])
        if said != "starting":
            return said
        time.sleep(0.05)
    raise AssertionError("the mount never decided how to reply")


def daemon_read(path: Path, offset: int, length: int) -> bytes:
    """Read through the daemon: the FUSE file's page cache dropped first."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def check_reads(point: Path, project: str, files: dict[str, bytes]) -> None:
    version = point / project / "a" / "v0"
    for name, data in files.items():
        assert (version / name).read_bytes() == data, name  # cold: fetched as it is read
    big = files["weights.bin"]
    path = version / "weights.bin"
    rng = random.Random(3)
    for _ in range(40):  # unaligned, across blocks and the end
        offset = rng.randrange(len(big))
        length = rng.choice([1, 4096, 100_000, MiB, 3 * MiB])
        assert daemon_read(path, offset, length) == big[offset : offset + length]

    def reader(seed: int) -> list[str]:
        r, wrong = random.Random(seed), []
        for _ in range(25):
            offset = r.randrange(len(big))
            if daemon_read(path, offset, 2 * MiB) != big[offset : offset + 2 * MiB]:
                wrong.append(f"reader {seed} at {offset}")
        return wrong

    with ThreadPoolExecutor(4) as pool:  # four readers at once
        assert [w for wrong in pool.map(reader, range(4)) for w in wrong] == []


def test_daemon_reads_are_spliced_from_the_cache_file(server: Published, tmp_path: Path) -> None:
    files = published(server, tmp_path)
    with big_pipes():
        with daemon_mount(server, tmp_path) as point:
            assert replies(point) == "spliced from the cache file"
            check_reads(point, server.project, files)
        with daemon_mount(server, tmp_path) as point:  # warm: the blobs complete on disk
            assert replies(point) == "spliced from the cache file"
            check_reads(point, server.project, files)


def test_replies_are_copied_where_a_pipe_cannot_hold_one(server: Published, tmp_path: Path) -> None:
    files = published(server, tmp_path)
    with daemon_mount(server, tmp_path) as point:
        if splicing.pipe_fits():  # (a daemon with CAP_SYS_RESOURCE, or a raised limit)
            assert replies(point) == "spliced from the cache file"
        else:
            assert replies(point).startswith("copied (a 1 MiB reply does not fit a pipe")
        check_reads(point, server.project, files)
    with big_pipes(), daemon_mount(server, tmp_path, ARTFS_SPLICE="0") as point:
        assert replies(point) == "copied (turned off (ARTFS_SPLICE=0))"
        check_reads(point, server.project, files)
