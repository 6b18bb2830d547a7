"""Private PostgreSQL and SeaweedFS instances that tests and the soak script may crash.

``scripts/services.sh`` starts them with a state directory and ports of their own, so
crashing them never disturbs the shared services other tests use.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e import free_port

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "scripts" / "services.sh"
BUCKET = "artfs-test"


def _ports_free(ports: list[int]) -> bool:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _weed_base() -> int:
    """A base port whose SeaweedFS ports (BASE+0..5, BASE+10000..10003) are all free."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20000, 30000, 10)
        if _ports_free([base + i for i in range(6)] + [base + 10000 + i for i in range(4)]):
            return base
    raise RuntimeError("no free port range for SeaweedFS")


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not found:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql")
    return found[-1]


@dataclass
class PrivateServices:
    """A PostgreSQL cluster and a SeaweedFS server of our own, which the tests may crash."""

    state: Path
    pg_port: int = field(default_factory=free_port)
    weed_base: int = field(default_factory=_weed_base)
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def fresh(cls) -> PrivateServices:
        """Not started yet; its state directory under /tmp (PostgreSQL runs as the postgres
        user, which can't enter pytest's private temporary directories)."""
        parent = Path(tempfile.mkdtemp(prefix="artfs-faults-"))
        parent.chmod(0o755)
        return cls(parent / "services")

    def _script(self, command: str) -> str:
        proc = subprocess.run(
            [str(SERVICES), command],
            env={
                **os.environ,
                "ARTFS_SERVICES_DIR": str(self.state),
                "ARTFS_PG_PORT": str(self.pg_port),
                "ARTFS_WEED_PORT_BASE": str(self.weed_base),
                "ARTFS_VENV": sys.prefix,  # where `weed` is: the venv running these tests
            },
            capture_output=True,
            text=True,
            timeout=180,
        )
        if proc.returncode != 0:
            raise AssertionError(f"services.sh {command} failed:\n{proc.stderr}")
        return proc.stdout

    def start(self) -> None:
        """Start what is not running (both at first; after a crash, the crashed one)."""
        for line in self._script("start").splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            self.env[key] = value

    def stop(self) -> None:
        self._script("stop")

    @property
    def dsn(self) -> str:
        return self.env["ARTFS_TEST_PG_DSN"]

    @property
    def s3_endpoint(self) -> str:
        return self.env["ARTFS_TEST_S3_ENDPOINT"]

    def crash_postgres(self) -> None:
        """``pg_ctl stop -m immediate``: every backend quits at once, no checkpoint; the next
        start runs crash recovery, as after a power cut."""
        cmd = [str(_pg_bin() / "pg_ctl"), "-D", str(self.state / "pg"), "-m", "immediate", "stop"]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def wait_s3_serves(self, bucket: str, prefix: str) -> None:
        """Until an object under ``prefix`` can be read: after a restart the S3 gateway answers
        (health, buckets) a while before its volume server serves object bytes again (HTTP
        500 meanwhile)."""
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.s3_endpoint)
        deadline = time.monotonic() + 90
        while True:
            try:
                keys = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
                if keys:
                    s3.get_object(Bucket=bucket, Key=keys[0]["Key"])["Body"].read()
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def kill_seaweedfs(self) -> None:
        """SIGKILL to SeaweedFS's process group (master, volume, filer and S3 gateway)."""
        pid = int((self.state / "weed.pid").read_text())
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError("SeaweedFS did not die")
