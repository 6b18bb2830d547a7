"""The three FUSE mounts of the peer benchmark (``bench_peers.py``): how each is mounted on
a cache directory, unmounted, and where its copy of the files is."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.peer_services import Store, log  # noqa: E402
from tests.e2e import Server, is_mounted, run_cli  # noqa: E402

MOUNT_WAIT = 30.0


@dataclass
class Tool:
    """One FUSE mount under test: how to mount it on a cache directory and where its files are."""

    name: str
    mnt: Path
    work: Path
    big_rel: str
    small_rel: str
    proc: subprocess.Popen[bytes] | None = None
    mounts: int = 0

    def command(self, cache: Path) -> list[str] | None:
        """The foreground mount process to start, or None when ``mount`` is overridden."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def mount(self, cache: Path) -> None:
        self.mnt.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        self.mounts += 1
        cmd = self.command(cache)
        assert cmd is not None
        logf = open(self.work / f"{self.name}-{self.mounts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, env=self.env()
        )
        logf.close()
        deadline = time.monotonic() + MOUNT_WAIT
        while not is_mounted(self.mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = (self.work / f"{self.name}-{self.mounts}.log").read_text(errors="replace")
                raise RuntimeError(f"{self.name} did not mount:\n{text[-2000:]}")
            time.sleep(0.05)

    def umount(self) -> None:
        if is_mounted(self.mnt):
            done = subprocess.run(["fusermount3", "-u", str(self.mnt)], check=False)
            if done.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    @property
    def big(self) -> Path:
        return self.mnt / self.big_rel

    @property
    def small(self) -> Path:
        return self.mnt / self.small_rel


@dataclass
class ArtfsTool(Tool):
    server: Server | None = None
    extra: tuple[str, ...] = ()  # more ``artfs mount`` options

    def mount(self, cache: Path) -> None:
        assert self.server is not None
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.mounts += 1
        run_cli(
            "mount",
            "--registry",
            self.server.url,
            str(self.mnt),
            "--cache-dir",
            str(cache),
            "--state-dir",
            str(self.work / "artfs-state"),
            *self.extra,
        )

    def umount(self) -> None:
        if is_mounted(self.mnt):
            proc = run_cli("umount", str(self.mnt), check=False)
            if is_mounted(self.mnt):
                log(f"artfs umount failed ({proc.stderr.strip()}); lazy unmount")
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)


@dataclass
class RcloneTool(Tool):
    store: Store | None = None
    remote: str = ""

    def command(self, cache: Path) -> list[str]:
        assert self.store is not None
        return [
            "rclone",
            "mount",
            f":s3:{self.remote}",
            str(self.mnt),
            "--s3-provider=Other",
            f"--s3-endpoint={self.store.endpoint}",
            "--s3-env-auth=false",
            f"--s3-access-key-id={self.store.access_key}",
            f"--s3-secret-access-key={self.store.secret_key}",
            "--read-only",
            "--vfs-cache-mode=full",
            f"--cache-dir={cache}",
            # Modification times from the listing, not one HEAD per file (its docs' advice
            # for S3): the peer at its best for ls -l.
            "--use-server-modtime",
        ]

    def env(self) -> dict[str, str]:
        # The AWS SDK in rclone fails on an AWS_CA_BUNDLE ("unsupported transport"); the
        # store is plain http on loopback, so no bundle is needed.
        return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


@dataclass
class S3fsTool(Tool):
    store: Store | None = None
    remote: str = ""
    passwd: Path = field(default_factory=Path)

    def command(self, cache: Path) -> list[str]:
        assert self.store is not None
        opts = [
            f"url={self.store.endpoint}",
            "use_path_request_style",
            f"passwd_file={self.passwd}",
            f"use_cache={cache}",
            "ro",
        ]
        return ["s3fs", self.remote, str(self.mnt), "-f", "-o", ",".join(opts)]


def readahead_kb(mnt: Path) -> str:
    """The mount's bdi read-ahead: how large the kernel's read requests to the daemon get."""
    dev = os.stat(mnt).st_dev
    bdi = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    try:
        return bdi.read_text().strip()
    except OSError:
        return "?"
