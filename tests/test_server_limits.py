"""Bounded server ports (issue 10, "Why" 3): slow uploads can't take the server's memory,
can't stall blob reads, are cut off, and give their memory back; connection and upload caps
answer 503. Real server subprocesses, raw sockets."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest_server import RunningServer, start_server, stop_server

SLOW = 300  # slow uploads held open at once
DECLARED = 100 << 20  # what each of them says it will send


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_upload(port: int, digest: str, size: int, path: str = "/blobs/") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"PUT {path}{digest} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\nx".encode())
    return s


def dribble(socks: list[socket.socket]) -> int:
    """One more byte on each socket the server hasn't closed; how many took it."""
    alive = 0
    for s in socks:
        try:
            s.send(b"x", socket.MSG_DONTWAIT)
            alive += 1
        except OSError:
            pass
    return alive


def closed_by_server(s: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before closing, or None if it kept the connection open."""
    s.settimeout(timeout)
    got = b""
    try:
        while chunk := s.recv(65536):
            got += chunk
    except TimeoutError:
        return None
    except OSError:  # reset after the answer: closed too
        pass
    return got


@pytest.fixture
def limited_server(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server(
        tmp_path / "data", "--body-timeout", "2", "--body-min-rate", "64", "--max-uploads", "400"
    )
    try:
        yield server
    finally:
        stop_server(server.proc)


def sockets_open(pid: int) -> int:
    """How many sockets the server process holds (listeners, accepted connections)."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += fd.readlink().name.startswith("socket:")
        except FileNotFoundError:  # closed while we looked
            pass
    return count


def wait_sockets(pid: int, n: int, timeout: float = 20.0) -> None:
    """Wait until the server holds ``n`` sockets: a connection it has accepted is counted
    in the same step as the accept; one it has closed is uncounted a step later, so a
    little sleep follows. (Fixed sleeps were too short on a loaded CI machine.)"""
    deadline = time.monotonic() + timeout
    while (now := sockets_open(pid)) != n:
        assert time.monotonic() < deadline, f"the server holds {now} sockets, not {n}"
        time.sleep(0.02)
    time.sleep(0.2)


def put_blob(server: RunningServer, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    r = httpx.put(f"{server.blob_url}/blobs/{digest}", content=data, timeout=30)
    assert r.status_code in (200, 201), r.text
    return digest


def test_slow_uploads_are_bounded_cut_off_and_leave_reads_fast(
    limited_server: RunningServer,
) -> None:
    server = limited_server
    data = bytes(range(256)) * 4096  # 1 MiB
    digest = put_blob(server, data)
    # A server that has taken a large upload before: glibc had raised its mmap threshold
    # past the old 4 MiB buffers, so each upload's 12 MiB then came from the heap, touched.
    put_blob(server, hashlib.sha256(b"big").digest() * (1 << 19))  # 16 MiB
    assert server.blob_port is not None
    pid = server.proc.pid
    before = rss_mb(pid)
    socks = [open_upload(server.blob_port, "ab" * 32, DECLARED) for _ in range(SLOW)]
    api_socks = [
        open_upload(int(server.url.rsplit(":", 1)[1]), "cd" * 32, DECLARED, "/v1/blobs/")
        for _ in range(50)
    ]
    try:
        peak = before
        slowest_get = 0.0
        for _ in range(3):  # 1.5 s: well inside the 2 s window, all still open
            time.sleep(0.5)
            assert dribble(socks) == SLOW
            dribble(api_socks)
            peak = max(peak, rss_mb(pid))
            t0 = time.monotonic()
            with httpx.Client() as c:
                r = c.get(f"{server.blob_url}/blobs/{digest}", timeout=30)
            slowest_get = max(slowest_get, time.monotonic() - t0)
            assert r.status_code == 200 and r.content == data
        # Every slow upload is cut off by the server: a 408 (or, waiting for a slot, a 503).
        deadline = time.monotonic() + 20
        answers = []
        for s in [*socks, *api_socks]:
            got = closed_by_server(s, max(deadline - time.monotonic(), 0.1))
            assert got is not None, "the server kept a slow upload open"
            answers.append(got.split(b"\r\n", 1)[0])
        assert all(b" 408 " in a or b" 503 " in a for a in answers if a), set(answers)
        assert sum(b" 408 " in a for a in answers) >= SLOW, set(answers)
    finally:
        for s in [*socks, *api_socks]:
            s.close()
    # 12 MiB of buffers per upload took 200 uploads to 2.45 GB; now 64 KiB at most each.
    assert peak - before < 150, f"RSS rose from {before:.0f} MB to {peak:.0f} MB"
    assert slowest_get < 2.0, f"a blob GET took {slowest_get:.2f} s during the slow uploads"
    # Memory given back once they are gone (no per-connection buffers kept).
    time.sleep(0.5)
    assert rss_mb(pid) - before < 60, f"RSS {rss_mb(pid):.0f} MB after, {before:.0f} before"
    # And the server still takes uploads.
    put_blob(server, b"after the storm")


def test_fast_upload_after_the_dribblers(limited_server: RunningServer) -> None:
    """The small-first buffers still carry a large upload whole (grows to 4 MiB buffers)."""
    data = hashlib.sha256(b"seed").digest() * (400_000)  # 12.8 MB
    digest = put_blob(limited_server, data)
    r = httpx.get(f"{limited_server.blob_url}/blobs/{digest}", timeout=30)
    assert r.content == data


def test_connection_and_upload_caps_answer_503(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "data", "--max-connections", "4", "--max-uploads", "1", "--body-timeout", "30"
    )
    assert server.blob_port is not None
    pid = server.proc.pid
    try:
        base = sockets_open(pid)
        digest = put_blob(server, b"held")
        # The upload's connection must be gone before the four idle ones arrive, or the
        # fourth is the one refused and the GET below finds a free place.
        wait_sockets(pid, base)
        idle = [socket.create_connection(("127.0.0.1", server.blob_port)) for _ in range(4)]
        wait_sockets(pid, base + 4)  # accepted and counted
        r = httpx.get(f"{server.blob_url}/blobs/{digest}", timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "unavailable"
        for s in idle:
            s.close()
        wait_sockets(pid, base)
        assert httpx.get(f"{server.blob_url}/blobs/{digest}", timeout=10).content == b"held"
        wait_sockets(pid, base)
        # One upload slot: a second upload waits (10 s), then 503; the first is unaffected.
        first = open_upload(server.blob_port, hashlib.sha256(b"xy").hexdigest(), 2)
        wait_sockets(pid, base + 1)  # accepted; it takes the slot within a pass or two
        t0 = time.monotonic()
        second = open_upload(server.blob_port, "ef" * 32, 10)
        second.settimeout(30)
        got = second.recv(65536)
        assert b" 503 " in got.split(b"\r\n", 1)[0], got
        second.close()
        assert time.monotonic() - t0 > 5
        first.sendall(b"y")
        first.settimeout(10)
        assert b" 201 " in first.recv(65536).split(b"\r\n", 1)[0]
        first.close()
        # The API port: at most 4 requests running; slow uploads count.
        api_port = int(server.url.rsplit(":", 1)[1])
        wait_sockets(pid, base)
        held = [open_upload(api_port, "ab" * 32, 100, "/v1/blobs/") for _ in range(4)]
        wait_sockets(pid, base + 4)
        deadline = time.monotonic() + 15  # each starts its request once Hypercorn reads it
        while (r := httpx.get(f"{server.url}/v1/projects", timeout=10)).status_code != 503:
            assert time.monotonic() < deadline, "4 slow uploads and the API still answers"
            time.sleep(0.1)
        assert r.json()["error"]["code"] == "unavailable"
        for s in held:
            s.close()
        deadline = time.monotonic() + 15  # the server notices the closed uploads
        while httpx.get(f"{server.url}/v1/projects", timeout=10).status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        stop_server(server.proc)


# --- the pacer alone, on trio's mock clock ---------------------------------------------------
def run_paced(reads: list[tuple[float, int]], *, away: float = 0.0) -> float | None:
    """Feed a BodyPacer (30 s window, 1 KiB/s) reads that each take ``seconds`` and bring
    ``n`` bytes, with ``away`` seconds between reads that are not spent waiting on the client.
    When it cuts the body off: the mock time; else None."""
    import trio
    import trio.testing

    from artfs.errors import TooSlow
    from artfs.server.limits import BodyPacer

    async def main() -> float | None:
        pacer = BodyPacer(30.0, 1024)
        try:
            for seconds, n in reads:
                deadline = pacer.deadline()
                if trio.current_time() + seconds >= deadline:
                    await trio.sleep_until(deadline)
                    pacer.expired()
                    continue
                await trio.sleep(seconds)
                pacer.arrived(n)
                await trio.sleep(away)
        except TooSlow:
            return trio.current_time()
        return None

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_pacer_cuts_off_a_dribble_and_keeps_a_steady_body() -> None:
    dribble = [(3.0, 1)] * 100  # one byte every 3 s
    cut = run_paced(dribble)
    assert cut is not None and 29 < cut < 31
    assert run_paced([(1.0, 2048)] * 200) is None  # 2 KiB/s for 200 s: fine
    assert run_paced([(0.001, 65536)] * 100, away=10.0) is None  # our slow disk: not counted
    assert run_paced([(40.0, 0)]) is not None  # nothing at all for a window
