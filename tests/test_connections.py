"""Closed keep-alive connections (issue 10, item 6): a request that meets a pooled connection
the peer has closed is sent again once on a fresh one when that is harmless, never otherwise.

A stub server makes the race deterministic: it answers the first request of a connection
with keep-alive, then reads the next request on it and closes without a byte of answer,
which is what a request written just as the peer's idle timeout fires sees. The real
server's data port, with a short idle timeout, is read through the client and a mount.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h11
import httpx
import pytest
import trio

from artfs.client.http import HttpRegistryClient
from artfs.client.ranges import Abort, BlobSource, RangeConnections, RawRangeFetcher
from artfs.client.resend import ConnectionTrace, PeerClosed, may_resend, peer_closed
from artfs.errors import Unavailable
from tests.conftest_server import start_server, stop_server
from tests.e2e import Server, mounted, run_cli

BLOB = bytes(range(256)) * 64


# --- the rule ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "exc",
    [
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("[Errno 104] Connection reset by peer"),
        ConnectionResetError(),
        BrokenPipeError(),
        trio.BrokenResourceError(),
        PeerClosed("connection closed before a response"),
        h11.RemoteProtocolError("peer closed"),
    ],
)
def test_closed_connections_are_recognised(exc: BaseException) -> None:
    assert peer_closed(exc)
    assert may_resend(exc, "GET", reused=True, answered=False, attempt=0)


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("timed out"),
        httpx.ConnectTimeout("timed out"),
        TimeoutError(),
        trio.TooSlowError(),
        httpx.ConnectError("refused"),
        ConnectionRefusedError(),
        ValueError("not a connection error"),
    ],
)
def test_timeouts_and_refusals_are_not_resent(exc: BaseException) -> None:
    assert not peer_closed(exc)
    assert not may_resend(exc, "GET", reused=True, answered=False, attempt=0)


def test_only_idempotent_first_attempts_on_reused_connections_before_an_answer() -> None:
    closed = httpx.RemoteProtocolError("Server disconnected")
    ok = {"reused": True, "answered": False, "attempt": 0}
    assert may_resend(closed, "GET", **ok)  # type: ignore[arg-type]
    assert may_resend(closed, "HEAD", **ok)  # type: ignore[arg-type]
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert not may_resend(closed, method, **ok)  # type: ignore[arg-type]
        # ... unless none of it was sent, or the caller declares it read-only
        assert may_resend(closed, method, sent=False, **ok)  # type: ignore[arg-type]
        assert may_resend(closed, method, declared_idempotent=True, **ok)  # type: ignore[arg-type]
    assert not may_resend(closed, "GET", reused=False, answered=False, attempt=0)
    assert not may_resend(closed, "GET", reused=True, answered=True, attempt=0)
    assert not may_resend(closed, "GET", reused=True, answered=False, attempt=1)
    assert not may_resend(closed, "GET", reused=True, answered=False, attempt=0, sent=True,
                          declared_idempotent=False)  # fmt: skip


async def test_connection_trace_sees_new_connections_and_answers() -> None:
    seen = ConnectionTrace()
    assert seen.reused and not seen.answered
    await seen("connection.connect_tcp.started", {})
    await seen("http11.receive_response_headers.complete", {})
    assert not seen.reused and seen.answered


# --- a stub server that closes every connection at its second request -------------------------
class ClosingStub:
    """Answers the first request of each connection (keep-alive); at the second it reads the
    request, records it and closes the connection without answering."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, answered)
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop = True
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        h = h11.Connection(h11.SERVER)
        with conn:
            for index in range(2):
                request = None
                while True:
                    event = h.next_event()
                    if event is h11.NEED_DATA:
                        data = conn.recv(65536)
                        if not data:
                            return
                        h.receive_data(data)
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.EndOfMessage):
                        break
                assert request is not None
                method, path = request.method.decode(), request.target.decode()
                self.requests.append((method, path, index == 0))
                if index == 1:
                    return  # the idle timeout fired as the request came in
                status, headers, body = self._answer(method, path, request.headers)
                headers = [*headers, ("Content-Length", str(len(body)))]
                conn.sendall(
                    h.send(h11.Response(status_code=status, headers=headers))
                    + h.send(h11.Data(data=body))
                    + h.send(h11.EndOfMessage())
                )
                h.start_next_cycle()

    @staticmethod
    def _answer(
        method: str, path: str, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if path == "/blob":
            spec = dict(headers)[b"range"].decode().split("=", 1)[1]
            start, end = (int(x) for x in spec.split("-"))
            rng = f"bytes {start}-{end}/{len(BLOB)}"
            return 206, [("Content-Range", rng)], BLOB[start : end + 1]
        if path == "/v1/projects" and method == "GET":
            return 200, [("Content-Type", "application/json")], b'{"projects": []}'
        if path == "/v1/blobs/missing":
            return 200, [("Content-Type", "application/json")], b'{"missing": []}'
        body = {"name": "p", "created": 0.0}
        return 201, [("Content-Type", "application/json")], json.dumps(body).encode()


@pytest.fixture
def stub() -> Iterator[ClosingStub]:
    s = ClosingStub()
    yield s
    s.close()


async def test_metadata_get_is_resent_on_a_fresh_connection(stub: ClosingStub) -> None:
    async with HttpRegistryClient(stub.url, timeout=5) as client:
        assert await client.list_projects() == []
        assert await client.list_projects() == []  # met the closed connection, resent
    assert stub.requests == [
        ("GET", "/v1/projects", True),
        ("GET", "/v1/projects", False),
        ("GET", "/v1/projects", True),
    ]
    assert stub.connections == 2


async def test_a_read_only_post_is_resent(stub: ClosingStub) -> None:
    async with HttpRegistryClient(stub.url, timeout=5) as client:
        assert await client.list_projects() == []
        assert await client.missing_blobs(["a" * 64]) == set()
    assert [r[0] for r in stub.requests] == ["GET", "POST", "POST"]


async def test_a_post_is_not_resent_blindly(stub: ClosingStub) -> None:
    async with HttpRegistryClient(stub.url, timeout=5) as client:
        assert await client.list_projects() == []
        with pytest.raises(Unavailable, match="Server disconnected"):
            await client.create_project("p")
    assert [r[:2] for r in stub.requests] == [("GET", "/v1/projects"), ("POST", "/v1/projects")]


async def test_ranged_reads_are_resent_on_every_path(stub: ClosingStub) -> None:
    url = stub.url + "/blob"
    got: list[bytes] = []
    # the trio socket fetcher
    raw = RawRangeFetcher(5)
    try:
        for offset in (0, 100):
            got.clear()
            await raw.fetch(url, offset, 1000, len(BLOB), got.append)
            assert b"".join(got) == BLOB[offset : offset + 1000]
    finally:
        await raw.aclose()
    # httpx (the https path), through the client
    async with HttpRegistryClient(stub.url, timeout=5) as client:
        for offset in (0, 200):
            got.clear()
            await client._fetch_httpx(url, offset, 1000, len(BLOB), got.append)
            assert b"".join(got) == BLOB[offset : offset + 1000]
    # the fetch threads' blocking connections
    conns = RangeConnections()
    source = BlobSource(url, (), False, 5)
    try:
        for offset in (0, 300):
            body = conns.get(source, offset, 1000, len(BLOB), Abort())
            buf = bytearray(1000)
            n = 0
            while k := body.readinto(memoryview(buf)[n:]):
                n += k
            body.close()
            assert bytes(buf) == BLOB[offset : offset + 1000]
    finally:
        conns.close()
    answered = [r for r in stub.requests if r[2]]
    assert len(answered) == 6 and len(stub.requests) == 9  # each path met one closed connection


async def test_a_resend_never_takes_another_pooled_connection(stub: ClosingStub) -> None:
    """After a server restart every pooled connection is closed: the resend goes fresh."""
    url = stub.url + "/blob"
    raw = RawRangeFetcher(5)
    try:
        async with trio.open_nursery() as nursery:  # two connections end up in the pool
            for offset in (0, 10):
                nursery.start_soon(raw.fetch, url, offset, 100, len(BLOB), lambda _: None)
        got: list[bytes] = []
        await raw.fetch(url, 500, 1000, len(BLOB), got.append)
        assert b"".join(got) == BLOB[500:1500]
    finally:
        await raw.aclose()
    assert stub.connections == 3


# --- the real data server, with a short idle timeout -------------------------------------------
IDLE = 0.4


async def test_reads_after_the_data_servers_idle_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARTFS_BLOB_IDLE_TIMEOUT", str(IDLE))
    server = start_server(tmp_path / "data")
    try:
        blob = os.urandom(3 << 20)
        sha = hashlib.sha256(blob).hexdigest()
        (tmp_path / "blob").write_bytes(blob)
        async with HttpRegistryClient(server.url, timeout=5) as client:
            await client.upload_blob(sha, tmp_path / "blob")
            for _ in range(3):
                got: list[bytes] = []
                await client.read_range(sha, len(blob), 1000, 1 << 20, got.append)
                assert b"".join(got) == blob[1000 : 1000 + (1 << 20)]
                await trio.sleep(IDLE * 2.5)  # the server closes the pooled connection
    finally:
        stop_server(server.proc)


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
def test_mount_reads_after_the_data_servers_idle_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARTFS_BLOB_IDLE_TIMEOUT", str(IDLE))
    # one file per directory: no directory read-ahead fetches the next one early
    files = {f"d{i}/f.bin": os.urandom((2 << 20) + i) for i in range(4)}
    src = tmp_path / "src"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    server = Server(tmp_path / "registry")
    server.start()
    try:
        run_cli("put", str(src), "proj/data", "--registry", server.url)
        with mounted(server.url, tmp_path / "mnt", tmp_path / "cache") as mnt:
            v0 = mnt / "proj" / "data" / "v0"
            for name in sorted(files):  # each a cold read on connections idle past the timeout
                assert (v0 / name).read_bytes() == files[name]
                time.sleep(IDLE * 2.5)
    finally:
        server.stop()
