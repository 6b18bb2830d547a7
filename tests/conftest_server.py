"""Fixtures for tests against the registry: a real server process and both real clients.

Loaded as a pytest plugin from tests/conftest.py. ``registry_server`` runs
``python -m artfs.server`` on ephemeral ports for the whole session, once per registry
configuration (tests/backends.py: SQLite + a blob directory, PostgreSQL + S3);
``local_registry_server`` is the SQLite one alone, for tests of its blob data port.
Tests use ``unique_project`` names so they don't see each other. ``http_client``,
``local_client`` and the parametrized ``client`` (both kinds) are per test; the
in-process kind runs on SQLite only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from artfs.client.base import RegistryClient
from artfs.client.http import HttpRegistryClient
from artfs.client.local import LocalRegistryClient

from .backends import SQLITE, RegistrySpec, backend_params, make_spec, release

_READY = re.compile(r"listening on (http://\S+) \((?:blobs on :(\d+)|blobs presigned)\)")


@dataclass
class RunningServer:
    url: str
    blob_port: int | None  # None: a presigning store (S3), no data port
    data: Path
    proc: subprocess.Popen[str]
    log: list[str]
    spec: RegistrySpec | None = None

    @property
    def backend(self) -> str:
        return self.spec.backend if self.spec is not None else SQLITE

    @property
    def blob_url(self) -> str:
        assert self.blob_port is not None, "this server has no blob data port"
        return f"http://127.0.0.1:{self.blob_port}"


def start_server(data: Path, *extra: str, timeout: float = 30.0) -> RunningServer:
    """Start ``python -m artfs.server`` on free ports and wait for its ready line."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "artfs.server",
            "--data",
            str(data),
            "--port",
            "0",
            "--blob-port",
            "0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    log: list[str] = []
    found: list[RunningServer] = []
    ready = threading.Event()

    def pump() -> None:  # keep reading so the server never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            m = _READY.search(line)
            if m and not found:
                port = int(m.group(2)) if m.group(2) else None
                found.append(RunningServer(m.group(1), port, data, proc, log))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(timeout) or not found:
        stop_server(proc)
        raise AssertionError("registry server did not start:\n" + "".join(log))
    return found[0]


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_spec_server(spec: RegistrySpec, *extra: str) -> RunningServer:
    server = start_server(Path(spec.data_dir), *spec.serve_args(), *extra)
    server.spec = spec
    return server


@pytest.fixture(scope="session", params=backend_params())
def registry_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    spec = make_spec(request.param, tmp_path_factory.mktemp("registry") / "data", for_servers=True)
    try:
        server = start_spec_server(spec)
        try:
            yield server
        finally:
            stop_server(server.proc)
    finally:
        release(spec)


@pytest.fixture(scope="session")
def local_registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """SQLite and a blob directory: the configuration with the sendfile data port."""
    server = start_server(tmp_path_factory.mktemp("registry-local") / "data")
    try:
        yield server
    finally:
        stop_server(server.proc)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The in-process client opens a registry directory: it has no PostgreSQL+S3 variant,
    so those combinations are not run at all (rather than reported as skipped)."""
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        p = params.params if params is not None else {}
        if p.get("client") == "local" and p.get("registry_server", SQLITE) != SQLITE:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def unique_project() -> str:
    return f"p-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def http_client(registry_server: RunningServer) -> AsyncIterator[HttpRegistryClient]:
    client = HttpRegistryClient(registry_server.url, timeout=10.0)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def local_client(tmp_path: Path) -> AsyncIterator[LocalRegistryClient]:
    client = LocalRegistryClient(tmp_path / "local-registry")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=["http", "local"])
async def client(
    request: pytest.FixtureRequest, registry_server: RunningServer, tmp_path: Path
) -> AsyncIterator[RegistryClient]:
    """Each test using this runs once over HTTP and once in-process."""
    c: RegistryClient
    if request.param == "http":
        c = HttpRegistryClient(registry_server.url, timeout=10.0)
    else:
        c = LocalRegistryClient(tmp_path / "local-registry")
    try:
        yield c
    finally:
        await c.aclose()
