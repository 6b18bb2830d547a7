#!/usr/bin/env python3
"""Blob download speed of the registry's data server against a plain static HTTP server.

Stores one blob (1 GiB of random bytes by default) in a fresh registry, starts
``python -m artfs.server`` and ``python -m http.server`` serving the same file, warms
the page cache, then downloads it from each several times, alternating, with a plain
socket reader (1 MiB reads: measures the servers) and with curl if present (what a
user sees; curl's own 16 KiB reads may bound both), and prints GB/s (median) and the
ratios. Also
times ``HttpRegistryClient.read_range`` of the whole blob: what the mount's cache gets.

    .venv/bin/python scripts/bench_server.py [--size 1G] [--rounds 3]

``--slow-uploads N`` measures the server under N slow uploads instead (issue 10: a declared
100 MiB body, one byte every 3 s, on the data port, with the default limits): the server's
RSS before, at its peak and after the connections are gone, blob GET latency meanwhile,
and how many uploads the server cut off (408) or refused (503).

    .venv/bin/python scripts/bench_server.py --slow-uploads 400 [--seconds 45]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from artfs.hashing import BlobHasher
from artfs.registry import LocalBlobStore

CHUNK = 4 << 20


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)i?B?", text.strip().upper())
    if not m:
        raise SystemExit(f"bad size {text!r}")
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]


def make_blob(path: Path, size: int) -> str:
    hasher = BlobHasher()
    with open(path, "wb") as f:
        left = size
        while left:
            data = os.urandom(min(CHUNK, left))
            hasher.update(data)
            f.write(data)
            left -= len(data)
    return hasher.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listening on port {port}")


def start_registry(data: Path) -> tuple[subprocess.Popen[str], str, int]:
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
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"listening on (http://\S+) \(blobs on :(\d+)\)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"registry did not start: {line!r}")
    return proc, m.group(1), int(m.group(2))


def download_curl(url: str) -> float:
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]) / float(out[1])


def download_socket(url: str) -> float:
    m = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url)
    assert m
    host, port, path = m.group(1), int(m.group(2)), m.group(3)
    buf = bytearray(1 << 20)
    t0 = time.perf_counter()
    with socket.create_connection((host, port)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        total = 0
        while n := s.recv_into(buf):
            total += n
    return total / (time.perf_counter() - t0)


def client_read(api_url: str, sha: str, size: int) -> float:
    import trio

    from artfs.client.http import HttpRegistryClient

    async def run() -> float:
        async with HttpRegistryClient(api_url) as client:
            got = 0

            def sink(data: bytes) -> None:
                nonlocal got
                got += len(data)

            await client.locate(sha)
            t0 = time.perf_counter()
            await client.read_range(sha, size, 0, size, sink)
            assert got == size
            return size / (time.perf_counter() - t0)

    return trio.run(run)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed_get(port: int, sha: str) -> float:
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"GET /blobs/{sha} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        while s.recv(1 << 20):
            pass
    return time.perf_counter() - t0


def slow_uploads(work: Path, n: int, seconds: float) -> int:
    """The ``--slow-uploads`` mode."""
    import hashlib

    store = LocalBlobStore(work / "registry" / "blobs")
    data = os.urandom(1 << 20)
    sha = hashlib.sha256(data).hexdigest()
    src = work / "small.bin"
    src.write_bytes(data)
    store.put_file(sha, src)
    reg, _api_url, blob_port = start_registry(work / "registry")
    try:
        # A server that has taken uploads before: glibc's dynamic mmap threshold has grown
        # past the old 4 MiB upload buffers, so new ones came from the heap, touched.
        big = os.urandom(16 << 20)
        with socket.create_connection(("127.0.0.1", blob_port)) as s:
            s.sendall(
                f"PUT /blobs/{hashlib.sha256(big).hexdigest()} HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {len(big)}\r\nConnection: close\r\n\r\n".encode()
                + big
            )
            while s.recv(65536):
                pass
        for _ in range(20):
            timed_get(blob_port, sha)
        before = rss_mb(reg.pid)
        socks = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", blob_port))
            s.sendall(
                f"PUT /blobs/{i:064x} HTTP/1.1\r\nHost: x\r\nContent-Length: {100 << 20}"
                "\r\n\r\nx".encode()
            )
            s.setblocking(False)
            socks.append(s)
        peak, latencies, answers = before, [], {}
        when: list[tuple[float, float]] = []
        start = next_byte = time.monotonic()
        while time.monotonic() - start < seconds:
            if time.monotonic() >= next_byte:
                next_byte += 3.0
                for s in socks:
                    if s.fileno() < 0:
                        continue
                    try:
                        got = s.recv(4096)
                    except BlockingIOError:
                        got = None
                    except OSError:
                        got = b""
                    if got is not None:  # answered or closed by the server
                        status = got.split(b" ", 2)[1].decode() if got else "closed"
                        answers[status] = answers.get(status, 0) + 1
                        s.close()
                        continue
                    try:
                        s.send(b"x")
                    except OSError:
                        pass
            latencies.append(timed_get(blob_port, sha))
            when.append((latencies[-1], time.monotonic() - start))
            peak = max(peak, rss_mb(reg.pid))
            time.sleep(0.1)
        still_open = sum(1 for s in socks if s.fileno() >= 0)
        for s in socks:
            s.close()
        time.sleep(2)
        after = rss_mb(reg.pid)
        latencies.sort()
        ms = [1000 * latencies[int(q * (len(latencies) - 1))] for q in (0.5, 0.99, 1.0)]
        print(
            f"\n{n} slow uploads (100 MiB declared, 1 byte / 3 s) for {seconds:.0f} s, "
            "default limits, data port:\n"
        )
        print("| server RSS before | peak | after close | GET p50 | p99 | max | GETs | answers |")
        print("|---|---|---|---|---|---|---|---|")
        told = ", ".join(f"{k}: {v}" for k, v in sorted(answers.items()))
        print(
            f"| {before:.0f} MB | {peak:.0f} MB (+{peak - before:.0f}) | {after:.0f} MB | "
            f"{ms[0]:.1f} ms | {ms[1]:.1f} ms | {ms[2]:.1f} ms | {len(latencies)} | "
            f"{told}; still open {still_open} |"
        )
        worst = ", ".join(f"{1000 * t:.0f} ms at {at:.1f} s" for t, at in sorted(when)[-5:])
        print(f"\nslowest GETs: {worst}")
        return 0
    finally:
        reg.terminate()
        reg.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="1G", help="blob size (default 1G)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--slow-uploads", type=int, default=0, help="the slow-upload mode: how many")
    ap.add_argument("--seconds", type=float, default=45, help="slow-upload mode: how long")
    args = ap.parse_args()
    size = parse_size(args.size)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="artfs-bench-server-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.slow_uploads:
        try:
            return slow_uploads(work, args.slow_uploads, args.seconds)
        finally:
            if not args.dir:
                shutil.rmtree(work, ignore_errors=True)
    procs: list[subprocess.Popen[str]] = []
    try:
        print(f"writing a {size / (1 << 30):.2f} GiB blob ...", file=sys.stderr)
        src = work / "blob.bin"
        sha = make_blob(src, size)
        store = LocalBlobStore(work / "registry" / "blobs")
        store.put_file(sha, src)
        src.unlink()
        blob_file = store.path(sha)

        reg, api_url, blob_port = start_registry(work / "registry")
        procs.append(reg)
        static_port = free_port()
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    str(static_port),
                    "--directory",
                    str(blob_file.parent),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )
        wait_port(static_port)
        artfs_url = f"http://127.0.0.1:{blob_port}/blobs/{sha}"
        static_url = f"http://127.0.0.1:{static_port}/{sha}"
        with open(blob_file, "rb") as f:  # warm the page cache: both read from memory
            while f.read(CHUNK):
                pass

        tools = {"socket reader (1 MiB recv_into)": download_socket}
        if shutil.which("curl"):
            tools["curl"] = download_curl
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for tool, fetch in tools.items():
                for source, url in (
                    ("artfs data server", artfs_url),
                    ("python -m http.server", static_url),
                ):
                    results.setdefault((source, tool), []).append(fetch(url))
            results.setdefault(("artfs client read_range", "HttpRegistryClient"), []).append(
                client_read(api_url, sha, size)
            )

        print(
            f"\nBlob download, {size / (1 << 30):.2f} GiB from the page cache over loopback, "
            f"median of {args.rounds} rounds:\n"
        )
        print(f"| {'source':<26} | {'downloaded by':<32} | {'GB/s':>6} | ratio vs http.server |")
        print(f"|{'-' * 28}|{'-' * 34}|{'-' * 8}|{'-' * 22}|")
        for (source, tool), speeds in results.items():
            med = statistics.median(speeds)
            base_tool = tool if tool in tools else next(iter(tools))
            base = statistics.median(results[("python -m http.server", base_tool)])
            print(f"| {source:<26} | {tool:<32} | {med / 1e9:6.2f} | {med / base:19.2f}x |")
        return 0
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
