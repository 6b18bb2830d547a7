"""Helpers for end-to-end tests: a real ``artfs serve`` process and real mounts made by the CLI."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ARTFS = [sys.executable, "-m", "artfs.cli"]


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's syntax: ``256k``, ``2m``) mounted at ``where``, for tests
    of a full disk; skips the test where mounting needs root and we lack it."""
    import pytest

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, and never one this process handed out before: the
    kernel may give two binds in a row the same free port (a server's API and blob ports
    once came out equal, and the server refused to start)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def run_cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*ARTFS, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"artfs {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@dataclass
class Server:
    data: Path
    port: int = field(default_factory=free_port)
    blob_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()
    """More ``artfs serve`` arguments, e.g. ``RegistrySpec.serve_args()`` of tests/backends.py
    (``--db postgresql://... --blobs s3://... --s3-endpoint URL``)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.data.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *ARTFS,
                "serve",
                "--data",
                str(self.data),
                "--port",
                str(self.port),
                "--blob-port",
                str(self.blob_port),
                *self.extra_args,
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited: {(self.data.parent / f'server-{self.port}.log').read_text()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/v1", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError("server did not become ready")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stats(self) -> dict[str, int]:
        data = httpx.get(self.url + "/v1/stats", timeout=5).json()
        return {k: int(v) for k, v in data.items()}


@contextlib.contextmanager
def backend_server(backend: str, data: Path, *extra: str) -> Iterator[Server]:
    """A real ``artfs serve`` on a fresh registry of ``backend`` (tests/backends.py: SQLite
    and a blob directory, or a database of its own and an S3 prefix) with ``extra``
    arguments; stopped, and its database dropped, on exit, whatever the test did to it."""
    from tests.backends import make_spec, release

    spec = make_spec(backend, data, for_servers=True)
    server = Server(Path(spec.data_dir), extra_args=(*spec.serve_args(), *extra))
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGCONT)  # a stopped server ignores SIGTERM
        server.stop()
        release(spec)


def named_mount(
    url: str, tmp_path: Path, name: str, *extra: str
) -> contextlib.AbstractContextManager[Path]:
    """``mounted`` at ``tmp_path/NAME`` with its own cache and state directory (``NAME-cache``,
    ``NAME-state``) and a 1 s listing TTL, so that a test sees other hosts' changes soon."""
    return mounted(
        url,
        tmp_path / name,
        tmp_path / f"{name}-cache",
        "--state-dir",
        str(tmp_path / f"{name}-state"),
        "--ttl",
        "1",
        *extra,
    )


def is_mounted(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


@contextlib.contextmanager
def mounted(registry: str, mountpoint: Path, cache_dir: Path, *extra: str) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    run_cli("mount", "--registry", registry, str(mountpoint), "--cache-dir", str(cache_dir), *extra)
    try:
        assert is_mounted(mountpoint)
        yield mountpoint
    finally:
        if is_mounted(mountpoint):
            proc = run_cli("umount", str(mountpoint), check=False)
            if is_mounted(mountpoint):
                subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
                raise AssertionError(f"umount failed: {proc.stderr}")
