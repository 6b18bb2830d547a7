"""A mount's memory does not grow per file it shows (issue 10, item 10).

A real ``artfs serve``, a real mount made by the CLI (its own daemon process, whose
resident memory we read from /proc), and a version of 200,000 files walked with
``os.walk`` + ``stat``. Before the packed version trees the daemon kept ~580 bytes per
file seen (a ``Manifest`` of objects plus a node object per file and its dict entries);
now it keeps the packed tree, ~64 bytes per file plus its name, and builds it from the
manifest streamed in canonical form, with no object per file at any point.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from artfs.mountinfo import read_record
from tests.e2e import Server, mounted

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3",
)

FILES = 200_000
PER_FILE_BOUND = 250  # bytes of daemon memory per file walked (was ~580)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """SQLite + local blobs: the daemon's memory does not depend on the registry's store."""
    s = Server(tmp_path / "registry")
    s.start()
    yield s
    s.stop()


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def walk_stat(root: Path) -> dict[str, int]:
    inos: dict[str, int] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            inos[os.path.relpath(path, root)] = os.stat(path).st_ino
    return inos


@pytest.mark.skipif(os.getuid() != 0, reason="resetting the peak and dropping caches need root")
def test_a_walk_of_200k_files_keeps_the_daemon_small(server: Server, tmp_path: Path) -> None:
    blob = b"one blob for every file\n"
    sha = hashlib.sha256(blob).hexdigest()
    base = server.url + "/v1"
    httpx.post(base + "/projects", json={"name": "big"}).raise_for_status()
    httpx.post(
        base + "/projects/big/artifacts", json={"name": "tree", "type": "dataset"}
    ).raise_for_status()
    httpx.put(f"{base}/blobs/{sha}", content=blob).raise_for_status()
    files = [[f"d{i // 1000:03d}/f{i:07d}.bin", len(blob), sha] for i in range(FILES)]
    r = httpx.post(
        base + "/projects/big/artifacts/tree/versions",
        json={"manifest": {"files": files}},
        timeout=300,
    )
    r.raise_for_status()
    del files
    with mounted(server.url, tmp_path / "mnt", tmp_path / "cache") as mnt:
        record = read_record(mnt)
        assert record is not None
        pid = int(record["pid"])
        v0 = mnt / "big" / "tree" / "v0"
        assert "v0" in os.listdir(mnt / "big" / "tree")
        idle = status_kib(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS from here on
        inos = walk_stat(v0)
        assert len(inos) == FILES
        peak = status_kib(pid, "VmHWM")
        per_file = (peak - idle) * 1024 / FILES
        assert per_file < PER_FILE_BOUND, f"{per_file:.0f} B per file (idle {idle} KiB)"
        known = os.statvfs(mnt).f_files  # the daemon's inode count: the tree's entries count
        assert known > FILES

        deadline = time.monotonic() + 30
        while os.statvfs(mnt).f_files > FILES:  # FORGETs reach the daemon asynchronously
            assert time.monotonic() < deadline, "the daemon kept the tree the kernel forgot"
            Path("/proc/sys/vm/drop_caches").write_text("2")  # the kernel FORGETs the tree
            time.sleep(0.1)
        sample = dict(list(inos.items())[:: FILES // 1000])
        assert {rel: os.stat(v0 / rel).st_ino for rel in sample} == sample  # the same numbers
        assert (v0 / "d123" / "f0123456.bin").read_bytes() == blob
