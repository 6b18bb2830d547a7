"""Regression tests for the registry server's hardening (issue 10), each against a real
``python -m artfs.server`` over HTTP: the data server honours ``Connection: close``; an
upload body longer than its ``Content-Length`` stores nothing when answered with an error;
the registry's files are its owner's alone; ``artfs gc`` removes the temporary files of
dead uploads (never a live one's); a bare number names the same version on every route."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from artfs.client.base import UNSET
from artfs.hashing import BLOCK_SIZE
from artfs.registry import Registry

from .conftest_server import RunningServer, start_server, stop_server
from .e2e import run_cli

pytestmark = pytest.mark.timeout(120)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it
    doesn't: the test's socket timeout is far below the server's 60 s idle timeout)."""
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    return got


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Parse back-to-back HTTP/1.1 responses with Content-Length bodies."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
        }
        n = int(headers.get("content-length", "0"))
        out.append((int(lines[0].split()[1]), headers, rest[:n]))
        raw = rest[n:]
    return out


def put_request(digest: str, body: bytes, *headers: str, version: str = "1.1") -> bytes:
    head = f"PUT /blobs/{digest} HTTP/{version}\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    return (head + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode() + body


def missing(server: RunningServer, *digests: str) -> list[str]:
    r = httpx.post(f"{server.url}/v1/blobs/missing", json={"digests": list(digests)})
    result: list[str] = r.json()["missing"]
    return result


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server(tmp_path / "data")
    try:
        yield server
    finally:
        stop_server(server.proc)


# --- 1. Connection: close on the data server ---------------------------------------------
def test_data_server_closes_when_the_client_asks(local_registry_server: RunningServer) -> None:
    server = local_registry_server
    assert server.blob_port is not None
    blobs = [os.urandom(1000 + i) for i in range(4)]
    requests = [
        put_request(sha(blobs[0]), blobs[0], "Connection: close"),
        put_request(sha(blobs[1]), blobs[1], version="1.0"),
        put_request(sha(blobs[2]), blobs[2], "Connection: keep-alive, close"),
        f"GET /blobs/{sha(blobs[0])} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        f"HEAD /blobs/{sha(blobs[0])} HTTP/1.0\r\nHost: x\r\n\r\n".encode(),
    ]
    for request in requests:
        with socket.create_connection(("127.0.0.1", server.blob_port), timeout=5) as s:
            s.sendall(request)
            [(status, headers, _)] = responses(read_until_closed(s))  # closed, one answer
            assert status in (200, 201), request[:40]
            assert headers["connection"] == "close"
    assert missing(server, *map(sha, blobs[:3])) == []
    # Without it the connection stays open for the next request (keep-alive).
    with socket.create_connection(("127.0.0.1", server.blob_port), timeout=5) as s:
        s.sendall(put_request(sha(blobs[3]), blobs[3]))
        time.sleep(0.5)  # answered, and still open:
        s.sendall(
            f"GET /blobs/{sha(blobs[3])} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        [(put, _, _), (get, _, body)] = responses(read_until_closed(s))
    assert (put, get, body) == (201, 200, blobs[3])


# --- 2. an upload body longer than its Content-Length -------------------------------------
def test_overlong_upload_body_stores_nothing(local_registry_server: RunningServer) -> None:
    server = local_registry_server
    assert server.blob_port is not None
    tmp = server.data / "blobs" / ".tmp"
    cases = [
        # bytes after the body that can't be the next request
        (b"\x00\xff\x13 the rest of a longer file\r\n", ()),
        (b"\x00" + os.urandom(3 << 20), ()),
        # anything at all after the last request a client announced
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ("Connection: close",)),
    ]
    for excess, extra in cases:
        body = os.urandom(200_000)
        digest = sha(body)  # the declared bytes do hash to it: only the length is wrong
        with socket.create_connection(("127.0.0.1", server.blob_port), timeout=10) as s:
            s.sendall(put_request(digest, body, *extra) + excess)
            [(status, _, answer)] = responses(read_until_closed(s))
        assert status == 400, answer
        error = json.loads(answer)["error"]
        assert error["code"] == "invalid" and "longer than its Content-Length" in error["message"]
        assert missing(server, digest) == [digest]
        assert not (server.data / "blobs" / digest[:2] / digest).exists()
    assert not any(tmp.iterdir())
    # A pipelined request after an exact body is still served (keep-alive, not an excess).
    body = os.urandom(5000)
    with socket.create_connection(("127.0.0.1", server.blob_port), timeout=10) as s:
        s.sendall(
            put_request(sha(body), body)
            + f"GET /blobs/{sha(body)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        [(put, _, _), (get, _, got)] = responses(read_until_closed(s))
    assert (put, get, got) == (201, 200, body)
    # The API port (Hypercorn) frames by Content-Length: the PUT's own answer is 201 for
    # exactly the declared, verified bytes; what follows is answered as another request.
    body = os.urandom(200_000)
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        head = f"PUT /v1/blobs/{sha(body)} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        s.sendall(head.encode() + b"\r\n" + body + b"\x00\xff garbage\r\n\r\n")
        first = responses(read_until_closed(s))[0]
    assert first[0] == 201 and json.loads(first[2])["size"] == len(body)
    assert httpx.get(f"{server.blob_url}/blobs/{sha(body)}").content == body


# --- 3. the registry's files are private ----------------------------------------------------
def test_registry_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db_files = [data / f"registry.db{suffix}" for suffix in ("", "-wal", "-shm")]

    def check_private() -> None:
        for path in db_files:
            assert mode(path) == 0o600, path
        assert mode(data / "blobs") == 0o700

    server = start_server(data)
    try:
        check_private()
        assert server.blob_port is not None
        blob = os.urandom(3 * BLOCK_SIZE + 7)  # several blocks: it has a sidecar
        digest = sha(blob)
        r = httpx.put(f"{server.blob_url}/blobs/{digest}", content=blob)
        assert r.status_code == 201
        stored = data / "blobs" / digest[:2] / digest
        for path in (stored, stored.with_name(f"{digest}.blocks"), stored.parent):
            assert mode(path) & 0o077 == 0, (path, oct(mode(path)))
        # still served (data server) and collectable (artfs gc)
        ranged = httpx.get(f"{server.blob_url}/blobs/{digest}", headers={"Range": "bytes=5-9"})
        assert ranged.content == blob[5:10]
        check_private()
    finally:
        stop_server(server.proc)
    done = run_cli("gc", "--data", str(data), "--grace", "0")
    assert done.stdout.startswith("freed 1 blob,"), done.stdout
    assert not stored.exists()

    # A registry made before (world-readable files, its WAL in use by another process) is
    # tightened when a server opens it.
    os.chmod(db_files[0], 0o644)
    os.chmod(data / "blobs", 0o755)
    other = sqlite3.connect(db_files[0])
    try:
        other.execute("SELECT count(*) FROM projects").fetchone()
        assert mode(db_files[1]) == mode(db_files[2]) == 0o644
        server = start_server(data)
        try:
            check_private()
        finally:
            stop_server(server.proc)
    finally:
        other.close()


# --- 4. artfs gc removes dead uploads' temporary files, never a live one's ----------------
def _start_upload(port: int, path: str, size: int, sent: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode() + sent)
    return s


def _new_temp_file(tmp: Path, known: set[Path]) -> Path:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fresh = set(tmp.iterdir()) - known
        if fresh:
            [path] = fresh
            return path
        time.sleep(0.02)
    raise AssertionError("the upload made no temporary file")


def test_gc_removes_abandoned_uploads_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    tmp = data / "blobs" / ".tmp"
    long_ago = time.time() - 2 * 3600
    dead_body, live_body = os.urandom(2 << 20), os.urandom(1 << 20)

    # A server killed mid-upload leaves the upload's temporary file behind.
    crashed = start_server(data)
    port = int(crashed.url.rsplit(":", 1)[1])
    conn = _start_upload(port, f"/v1/blobs/{sha(dead_body)}", len(dead_body), dead_body[:100_000])
    dead = _new_temp_file(tmp, set())
    crashed.proc.kill()
    crashed.proc.wait()
    conn.close()
    os.utime(dead, (long_ago, long_ago))

    server = start_server(data)
    try:
        assert server.blob_port is not None
        assert dead.exists()  # (a server starting removes only day-old ones)
        # A live upload, idle for as long (its client is slow): its file must stay.
        live_conn = _start_upload(
            server.blob_port, f"/blobs/{sha(live_body)}", len(live_body), live_body[:1000]
        )
        live = _new_temp_file(tmp, {dead})
        os.utime(live, (long_ago, long_ago))

        dry = run_cli("gc", "--data", str(data), "--grace", "1h", "--dry-run")
        assert "would remove 1 abandoned upload," in dry.stdout, dry.stdout
        assert dead.exists() and live.exists()

        done = run_cli("gc", "--data", str(data), "--grace", "1h")
        assert "removed 1 abandoned upload," in done.stdout, done.stdout
        assert not dead.exists() and live.exists()
        again = run_cli("gc", "--data", str(data), "--grace", "0")
        assert "abandoned" not in again.stdout and live.exists()

        with live_conn:
            live_conn.sendall(live_body[1000:])
            f = live_conn.makefile("rb")
            assert f.readline().startswith(b"HTTP/1.1 201")
        assert httpx.get(f"{server.blob_url}/blobs/{sha(live_body)}").content == live_body
        assert missing(server, sha(dead_body)) == [sha(dead_body)]
        assert not any(tmp.iterdir())
    finally:
        stop_server(server.proc)


# --- 5. a bare number is a version on every route ---------------------------------------------
def _commit(server: RunningServer, project: str, files: dict[str, bytes]) -> dict[str, Any]:
    base = f"{server.url}/v1"
    for blob in files.values():
        httpx.put(f"{base}/blobs/{sha(blob)}", content=blob).raise_for_status()
    entries = [[path, len(blob), sha(blob)] for path, blob in files.items()]
    r = httpx.post(
        f"{base}/projects/{project}/artifacts/a/versions", json={"manifest": {"files": entries}}
    )
    r.raise_for_status()
    version: dict[str, Any] = r.json()["version"]
    return version


def test_bare_number_names_the_same_version_on_every_route(
    registry_server: RunningServer, unique_project: str
) -> None:
    base = f"{registry_server.url}/v1"
    p = unique_project
    httpx.post(f"{base}/projects", json={"name": p}).raise_for_status()
    art = f"{base}/projects/{p}/artifacts"
    httpx.post(art, json={"name": "a", "type": "dataset"}).raise_for_status()
    v0 = _commit(registry_server, p, {"zero": b"version zero"})
    v1 = _commit(registry_server, p, {"one": b"version one"})

    # An alias that reads as a number is refused, on every way of making one.
    r = httpx.put(f"{art}/a/aliases/0", json={"version": 1})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid"
    assert "v0" in r.json()["error"]["message"]
    r = httpx.post(
        f"{art}/a/versions",
        json={"manifest": {"files": [["one", 11, sha(b"version one")]]}, "aliases": ["7"]},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid"
    assert httpx.get(f"{art}/a").json()["aliases"] == {"latest": 1}

    for version in (v0, v1):
        n = version["number"]
        for selector in (str(n), f"v{n}"):
            got = httpx.get(f"{art}/a/versions/{selector}")
            assert got.status_code == 200 and got.json()["digest"] == version["digest"]
            manifest = httpx.get(f"{art}/a/versions/{selector}/manifest")
            assert manifest.headers["x-artfs-digest"] == version["digest"], selector
            assert httpx.get(f"{art}/a/versions/{selector}/used-by").status_code == 200
    for bad in ("00", "01", "v01"):
        for route in ("", "/manifest"):
            r = httpx.get(f"{art}/a/versions/{bad}{route}")
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid", (bad, route)


def test_all_digit_alias_from_an_older_registry(
    local_registry_server: RunningServer, unique_project: str
) -> None:
    """Such an alias doesn't shadow the version of that number, and can be removed."""
    base = f"{local_registry_server.url}/v1"
    p = unique_project
    httpx.post(f"{base}/projects", json={"name": p}).raise_for_status()
    art = f"{base}/projects/{p}/artifacts/a"
    httpx.post(f"{base}/projects/{p}/artifacts", json={"name": "a", "type": "t"}).raise_for_status()
    v0 = _commit(local_registry_server, p, {"zero": b"version zero"})
    _commit(local_registry_server, p, {"one": b"version one"})
    reg = Registry.open(local_registry_server.data)  # as an older server let it be made
    try:
        reg.meta.set_alias(p, "a", "0", 1, UNSET)
    finally:
        reg.close()
    assert httpx.get(art).json()["aliases"] == {"0": 1, "latest": 1}
    assert httpx.get(f"{art}/versions/0").json()["digest"] == v0["digest"]
    assert httpx.get(f"{art}/versions/0/manifest").headers["x-artfs-digest"] == v0["digest"]
    assert httpx.delete(f"{art}/aliases/0").status_code == 204
    assert httpx.get(art).json()["aliases"] == {"latest": 1}
