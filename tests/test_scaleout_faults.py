"""Faults on the scale-out configuration (issue 10, item 9): PostgreSQL crashed and restarted
while versions are committed, SeaweedFS killed during reads and uploads, the registry server
killed while a mount reads through it.

Nothing acknowledged may be lost, nothing wrong may be read, and everything recovers by
itself: the server is never restarted for the database's sake, the mount never remounted.

These tests crash the services, so they run their own PostgreSQL cluster and SeaweedFS server
(``scripts/services.sh`` with a private state directory and ports), started once for the
module; they run where the postgres+s3 configuration runs (the shared services' variables
set: CI's ``scripts/test.sh``).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.backends import HAVE_SERVICES, SKIP_REASON
from tests.e2e import Server, free_port, is_mounted, mounted, run_cli

pytestmark = pytest.mark.skipif(not HAVE_SERVICES, reason=SKIP_REASON)

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

    def _script(self, command: str) -> str:
        proc = subprocess.run(
            [str(SERVICES), command],
            env={
                **os.environ,
                "ARTFS_SERVICES_DIR": str(self.state),
                "ARTFS_PG_PORT": str(self.pg_port),
                "ARTFS_WEED_PORT_BASE": str(self.weed_base),
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


@pytest.fixture(scope="module")
def services() -> Iterator[PrivateServices]:
    state = Path(tempfile.mkdtemp(prefix="artfs-faults-"))
    state.chmod(0o755)  # PostgreSQL runs as the postgres user
    shutil.rmtree(state)  # services.sh makes it
    svc = PrivateServices(state)
    try:
        svc.start()
        yield svc
    finally:
        svc.stop()


def _server(svc: PrivateServices, tmp: Path, tag: str | None = None) -> Server:
    tag = tag or os.urandom(6).hex()
    server = Server(
        tmp / "registry",
        extra_args=(
            "--db",
            svc.dsn,
            "--blobs",
            f"s3://{BUCKET}/t-{tag}",
            "--s3-endpoint",
            svc.s3_endpoint,
        ),
    )
    (tmp / "registry").mkdir()
    server.start()
    return server


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip(), "a failure must say why"


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _random_file(path: Path, size: int, seed: int) -> str:
    data = random.Random(seed).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


class Reader(threading.Thread):
    """Reads a file through the mount in 1 MiB pieces: the sha256 of all of it, or the error."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.started_reading = threading.Event()
        self.sha: str | None = None
        self.error: OSError | None = None

    def run(self) -> None:
        h = hashlib.sha256()
        try:
            with open(self.path, "rb", buffering=0) as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    self.started_reading.set()
            self.sha = h.hexdigest()
        except OSError as e:
            self.error = e
        finally:
            self.started_reading.set()


def test_postgres_crash_while_committing(services: PrivateServices, tmp_path: Path) -> None:
    """Commits run in a loop while PostgreSQL crashes and comes back: every acknowledged
    version is there with its bytes, failures during the outage are one clean line, and the
    same server commits again once the database is back (no restart)."""
    server = _server(services, tmp_path)
    acked: dict[int, str] = {}  # version number -> sha256 of its one file
    failures: list[subprocess.CompletedProcess[str]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            src = tmp_path / f"src{i}"
            sha = _random_file(src / "data.bin", 64 << 10, seed=i)
            proc = run_cli(
                "put", str(src), "faults/pg", "--registry", server.url, "--timeout", "10",
                check=False, timeout=120,
            )  # fmt: skip
            with lock:
                if proc.returncode == 0:
                    number = int(proc.stdout.strip().rsplit(":v", 1)[1])
                    assert number not in acked
                    acked[number] = sha
                else:
                    failures.append(proc)
            i += 1

    def wait_acked(n: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            with lock:
                if len(acked) >= n:
                    return
            time.sleep(0.1)
        raise AssertionError(f"only {len(acked)} commits acknowledged; failures: {failures[-3:]}")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        wait_acked(3, time.monotonic() + 60)
        services.crash_postgres()
        time.sleep(2)
        with lock:
            before = len(acked)
        services.start()
        wait_acked(before + 3, time.monotonic() + 90)
    finally:
        stop.set()
        thread.join(120)
    assert server.proc is not None and server.proc.poll() is None, "the server must survive"
    for proc in failures:
        _one_line_error(proc)

    # Every acknowledged version has its bytes; a version committed whose answer was lost
    # in the crash may exist too, but then with bytes some writer wrote.
    listed = run_cli("ls", "faults/pg", "--registry", server.url).stdout
    for number, sha in acked.items():
        assert f"v{number}" in listed
        dest = tmp_path / f"got{number}"
        run_cli("get", f"faults/pg:v{number}", str(dest), "--registry", server.url)
        assert _sha(dest / "data.bin") == sha
    server.stop()


def test_seaweedfs_killed_during_reads_and_uploads(
    services: PrivateServices, tmp_path: Path
) -> None:
    """SeaweedFS dies while a mount reads a cold file and while a put uploads: the reader
    gets its bytes right or an error (never wrong bytes), cached files still read, the put
    fails with one line; with SeaweedFS back the same mount reads everything correctly."""
    tag = os.urandom(6).hex()
    server = _server(services, tmp_path, tag)
    shas = {
        name: _random_file(tmp_path / "src" / name, size, seed)
        for name, size, seed in (("small.bin", 1 << 20, 1), ("big.bin", 96 << 20, 2))
    }
    run_cli("put", str(tmp_path / "src"), "faults/weed", "--registry", server.url, timeout=300)
    mnt = tmp_path / "mnt"
    revived = False
    with mounted(server.url, mnt, tmp_path / "cache", "--timeout", "10"):
        version = mnt / "faults" / "weed" / "v0"
        assert _sha(version / "small.bin") == shas["small.bin"]  # now cached
        reader = Reader(version / "big.bin")
        reader.start()
        assert reader.started_reading.wait(60)
        services.kill_seaweedfs()
        try:
            reader.join(180)
            assert not reader.is_alive(), "a read must end (error or bytes) with S3 gone"
            if reader.sha is not None:
                assert reader.sha == shas["big.bin"], "wrong bytes read while S3 died"
            assert _sha(version / "small.bin") == shas["small.bin"]  # cached: still served

            other = tmp_path / "other"
            _random_file(other / "x.bin", 4 << 20, 3)
            proc = run_cli(
                "put", str(other), "faults/weed", "--registry", server.url, "--timeout", "10",
                check=False, timeout=300,
            )  # fmt: skip
            _one_line_error(proc)
        finally:
            services.start()
            revived = True
        services.wait_s3_serves(BUCKET, f"t-{tag}/")
        assert _sha(version / "big.bin") == shas["big.bin"]  # the same mount, recovered
    assert revived
    run_cli("put", str(tmp_path / "other"), "faults/weed", "--registry", server.url)
    server.stop()


def test_server_killed_while_mount_reads(services: PrivateServices, tmp_path: Path) -> None:
    """The registry server is SIGKILLed while a mount reads: cached files and known
    listings keep working, a read in flight ends with its bytes right or an error, and once
    a server runs again (same address) the mount reads the rest without a remount."""
    server = _server(services, tmp_path)
    shas = {
        name: _random_file(tmp_path / "src" / name, size, seed)
        for name, size, seed in (("a.bin", 1 << 20, 4), ("b.bin", 64 << 20, 5))
    }
    run_cli("put", str(tmp_path / "src"), "faults/srv", "--registry", server.url, timeout=300)
    mnt = tmp_path / "mnt"
    with mounted(server.url, mnt, tmp_path / "cache", "--timeout", "5"):
        version = mnt / "faults" / "srv" / "v0"
        assert _sha(version / "a.bin") == shas["a.bin"]
        reader = Reader(version / "b.bin")
        reader.start()
        assert reader.started_reading.wait(60)
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait()
        try:
            reader.join(180)
            assert not reader.is_alive()
            if reader.sha is not None:
                assert reader.sha == shas["b.bin"]
            assert _sha(version / "a.bin") == shas["a.bin"]
            assert sorted(os.listdir(version)) == ["a.bin", "b.bin"]
        finally:
            server.start()  # same ports, same database and bucket
        assert _sha(version / "b.bin") == shas["b.bin"]
        assert is_mounted(mnt)
    server.stop()
