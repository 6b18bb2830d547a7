"""``mount -t fuse.artfs`` and fstab (issue 12): mount(8) runs ``mount.fuse.artfs``
(artfs/fstab.py), which turns the line's options into an ``artfs mount``. The end-to-end
test has the real mount(8) read a temporary fstab (``mount -T FILE``) and mount a real
server; the helper is installed where mount(8) looks for it (/sbin: mount(8) tries
/sbin/mount.fuse.artfs, then /sbin/mount.fuse, before any other directory) for the test
only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from artfs.errors import InvalidInput
from artfs.fstab import mount_argv, parse_helper_args
from tests.e2e import Server, is_mounted, run_cli
from tests.test_e2e_publish import private_runtime_dir, server

__all__ = ["private_runtime_dir", "server"]

HELPER = Path("/sbin/mount.fuse.artfs")


def test_options_become_artfs_mount_flags() -> None:
    argv, env = mount_argv(
        "http://r:8765",
        "/mnt/a",
        "rw,noauto,_netdev,nofail,x-systemd.automount,cache_dir=/c,cache_size=20G,xattrs,ttl=2",
    )
    assert argv == [
        "mount", "/mnt/a", "--registry", "http://r:8765",
        "--cache-dir", "/c", "--cache-size", "20G", "--xattrs", "--ttl", "2",
    ]  # fmt: skip
    assert env == {}


def test_token_file_sets_artfs_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("artfs_secret\n")
    _, env = mount_argv("u", "/m", f"token_file={tmp_path / 'token'}")
    assert env == {"ARTFS_TOKEN": "artfs_secret"}
    with pytest.raises(InvalidInput, match="token_file="):
        mount_argv("u", "/m", f"token_file={tmp_path / 'missing'}")


@pytest.mark.parametrize("bad", ["bogus", "cache_dir", "xattrs=1", "cache_size="])
def test_an_unknown_or_malformed_option_is_refused(bad: str) -> None:
    with pytest.raises(InvalidInput, match="unknown option"):
        mount_argv("u", "/m", f"rw,{bad}")


def test_helper_arguments_as_mount8_passes_them() -> None:
    assert parse_helper_args(["http://r", "/m", "-n", "-o", "rw,xattrs"]) == (
        "http://r", "/m", "rw,xattrs", False,
    )  # fmt: skip
    assert parse_helper_args(["http://r", "/m", "-fv", "-orw"])[3] is True
    with pytest.raises(InvalidInput, match="usage"):
        parse_helper_args(["/m"])


@pytest.fixture
def helper() -> Iterator[Path]:
    """mount.fuse.artfs for mount(8), running this checkout's artfs with this Python."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to install a mount helper")
    if HELPER.exists():
        pytest.skip(f"{HELPER} exists already (not this test's to replace)")
    path = os.pathsep.join(p for p in sys.path if p)
    HELPER.write_text(
        f"#!/bin/sh\nexport PYTHONPATH='{path}'\nexec '{sys.executable}' -m artfs.fstab \"$@\"\n"
    )
    HELPER.chmod(0o755)
    try:
        yield HELPER
    finally:
        HELPER.unlink()


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
@pytest.mark.timeout(180)
def test_mount_reads_an_fstab_line(helper: Path, server: Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_bytes(b"from fstab\n")
    run_cli("put", "--registry", server.url, str(src), "p/a", "--alias", "best")
    point = tmp_path / "mnt"
    point.mkdir()
    options = ",".join(
        [
            "noauto",
            "_netdev",
            f"cache_dir={tmp_path / 'cache'}",
            f"state_dir={tmp_path / 'state'}",
            f"log={tmp_path / 'mount.log'}",
            "xattrs",
            "ttl=1",
        ]
    )
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# a training host\n{server.url}\t{point}\tfuse.artfs\t{options}\t0 0\n")
    done = subprocess.run(["mount", "-T", str(fstab), str(point)], capture_output=True, text=True)
    try:
        assert done.returncode == 0, done.stderr
        assert is_mounted(point)
        fstype = subprocess.run(
            ["findmnt", "-no", "FSTYPE", str(point)], capture_output=True, text=True
        ).stdout.strip()
        assert fstype == "fuse.artfs"
        assert (point / "p" / "a" / "best" / "f.txt").read_bytes() == b"from fstab\n"
        assert os.getxattr(point / "p" / "a" / "v0", "user.artfs.ref") == b"p/a:v0"  # xattrs
        assert (tmp_path / "mount.log").exists() and (tmp_path / "state" / "drafts.db").exists()
        assert list((tmp_path / "cache").iterdir())  # the line's cache_dir is used
    finally:
        if is_mounted(point):
            subprocess.run(["umount", str(point)], check=False)
    assert not is_mounted(point)


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
def test_mount_t_refuses_an_unknown_option_and_mounts_nothing(
    helper: Path, server: Server, tmp_path: Path
) -> None:
    point = tmp_path / "mnt"
    point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "fuse.artfs", server.url, str(point), "-o", "cache_sise=1G"],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "unknown option 'cache_sise=1G'" in done.stderr
    assert not is_mounted(point)
