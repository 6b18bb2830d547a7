"""artfs against rclone mount and s3fs-fuse on one S3 store (issue 4, item 5).

    .venv/bin/python scripts/bench_peers.py [--install] [--size-mib 1024] [--files 10000]

One run, one SeaweedFS bucket, three FUSE mounts reading the same bytes:

- artfs: ``artfs serve --db postgresql://... --blobs s3://BUCKET/RUN/artfs`` and an
  ``artfs mount`` of it; blob bytes go from SeaweedFS straight to the mount through the
  presigned URLs the server hands out (the blobs live under their sha256).
- rclone mount (Debian ``rclone``) of ``BUCKET/RUN/plain`` with ``--vfs-cache-mode full``,
- s3fs-fuse (Debian ``s3fs``) of the same prefix with its disk cache (``use_cache``);
  the same files are uploaded there under plain names.
- curl of the big blob's presigned URL (from ``/v1/blobs/locate``): the network baseline.

Workloads (every "cold" one: a fresh mount, the tool's cache empty, the page cache dropped):
sequential read of the big file cold and warm (remounted on the cache the cold read
filled, page cache dropped), time to its first 4 KiB through a fresh mount (lookups and
open included; median of 3 mounts), random 4 KiB reads in it (IOPS, cold), reading every small
file of a flat directory (cat all) and ``ls -l`` of that directory. Each measurement runs
in a child process with a time limit, so a hung mount ends the step, not the run.

Services: by default the script starts its own PostgreSQL and SeaweedFS with
scripts/services.sh (a private state directory and ports, loopback only) and stops them at
the end; ``--services env`` uses those already described by ``ARTFS_TEST_*``/``AWS_*``.
``--install`` apt-installs rclone and s3fs when they are missing. Everything started is
unmounted, stopped and deleted on exit, also on failure or SIGTERM. Root is needed (drop
the page cache, apt). The machine is shared: compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.bench import drop_caches, read_all  # noqa: E402
from scripts.peer_mounts import ArtfsTool, RcloneTool, S3fsTool, Tool, readahead_kb  # noqa: E402
from scripts.peer_services import (  # noqa: E402
    SMALL_DIR,
    create_database,
    drop_database,
    ensure_peers,
    log,
    make_data,
    start_services,
    stop_services,
    store_from_env,
    upload_plain,
)
from tests.e2e import Server, run_cli  # noqa: E402

RANDOM_COUNT = 2000
RANDOM_SECONDS = 60.0  # a slow peer ends its random-read step here; IOPS = reads / time


# ---------------------------------------------------------------- measurements (child side)


def _measure_seq(path: Path) -> dict[str, float]:
    start = time.perf_counter()
    n = read_all(path)
    return {"seconds": time.perf_counter() - start, "bytes": n}


def _measure_random(path: Path, size: int, count: int, limit: float) -> dict[str, float]:
    """Aligned 4 KiB preads at seeded random offsets, at most ``count`` or ``limit`` seconds."""
    rng = random.Random(5)
    offsets = [rng.randrange(0, size // 4096) * 4096 for _ in range(count)]
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        start = time.perf_counter()
        deadline = start + limit
        for off in offsets:
            if len(os.pread(fd, 4096, off)) != 4096:
                raise SystemExit(f"short read at {off} of {path}")
            done += 1
            if time.perf_counter() > deadline:
                break
        return {"seconds": time.perf_counter() - start, "count": done}
    finally:
        os.close(fd)


def _measure_first(path: Path) -> dict[str, float]:
    """Open a cold file and read its first 4 KiB: what a loader waits before any work."""
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        n = len(f.read(4096))
    return {"seconds": time.perf_counter() - start, "bytes": n}


def _measure_cat(directory: Path) -> dict[str, float]:
    """What ``cat DIR/*`` does: list the directory, then open and read every file."""
    start = time.perf_counter()
    names = sorted(os.listdir(directory))
    total = 0
    for name in names:
        total += read_all(directory / name)
    return {"seconds": time.perf_counter() - start, "files": len(names), "bytes": total}


def _measure_ls(directory: Path) -> dict[str, float]:
    start = time.perf_counter()
    out = subprocess.run(
        ["ls", "-l", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "files": sum(1 for line in out.splitlines() if line[:1] == "-")}


def measure_main(argv: list[str]) -> None:
    """``--measure KIND PATH [SIZE]``: one measurement, printed as JSON (child process)."""
    kind, path = argv[0], Path(argv[1])
    if kind == "seq":
        result = _measure_seq(path)
    elif kind == "random":
        result = _measure_random(path, int(argv[2]), RANDOM_COUNT, RANDOM_SECONDS)
    elif kind == "first":
        result = _measure_first(path)
    elif kind == "cat":
        result = _measure_cat(path)
    elif kind == "ls":
        result = _measure_ls(path)
    else:
        raise SystemExit(f"unknown measurement {kind}")
    print(json.dumps(result))


# ---------------------------------------------------------------- the run


@dataclass
class Result:
    """One workload's numbers; ``higher`` says whether a larger value is better."""

    name: str
    unit: str
    higher: bool
    values: dict[str, float] = field(default_factory=dict)
    target: float = 1.5
    against: str | None = None  # compared with this peer only (else the better peer)


class PeerBench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.size = args.size_mib << 20
        self.nfiles = args.files
        self.results: list[Result] = []
        self.curl_seconds = 0.0
        self.curl_first = 0.0
        self.cpu: dict[str, tuple[float, ...]] = {}  # cold sequential: wall, store, client, reader
        self.lo_per_byte = 1.0
        self.tools: list[Tool] = []
        self.cleanups: list[Callable[[], None]] = []
        self.caches = 0

    # -- helpers

    def child(self, kind: str, path: Path, *extra: str) -> dict[str, float]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", kind, str(path), *extra]
        try:
            out = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.args.step_timeout
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"{kind} of {path} took longer than {self.args.step_timeout} s"
            ) from None
        if out.returncode != 0:
            raise RuntimeError(f"{kind} of {path} failed:\n{out.stderr[-2000:]}")
        return {k: float(v) for k, v in json.loads(out.stdout).items()}

    def fresh_cache(self, tool: Tool) -> Path:
        self.caches += 1
        return self.work / f"cache-{tool.name}-{self.caches}"

    @contextlib.contextmanager
    def mounted(self, tool: Tool, cache: Path) -> Iterator[Tool]:
        drop_caches()
        tool.mount(cache)
        if tool.mounts == 1:
            log(f"{tool.name}: kernel read-ahead {readahead_kb(tool.mnt)} KiB")
        try:
            yield tool
        finally:
            tool.umount()

    def is_store(self, cmdline: str) -> bool:
        """SeaweedFS serving this run's bucket (S3 gateway, filer and volume in one process)."""
        port = urlsplit(self.store.endpoint).port
        return "weed server" in cmdline and f"-s3.port={port} " in cmdline + " "

    @staticmethod
    def daemon_of(tool: Tool) -> Callable[[str], bool]:
        """The FUSE daemon of ``tool``'s mount (not the reader, whose path is under it too)."""
        mnt = str(tool.mnt) + " "
        return lambda cmdline: mnt in cmdline + " " and "--measure" not in cmdline

    def result(self, name: str, unit: str, higher: bool) -> Result:
        r = Result(name, unit, higher)
        self.results.append(r)
        return r

    # -- setup

    def setup(self) -> tuple[Path, str, Path]:
        args = self.args
        if args.services == "own":
            state = Path(f"/tmp/artfs-peers-services-{os.getpid()}")
            self.cleanups.append(lambda: stop_services(state, args.pg_port, args.weed_port_base))
            log(f"starting PostgreSQL and SeaweedFS ({state})")
            store = start_services(state, args.pg_port, args.weed_port_base)
        else:
            store = store_from_env()
        os.environ["AWS_ACCESS_KEY_ID"] = store.access_key
        os.environ["AWS_SECRET_ACCESS_KEY"] = store.secret_key
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        self.store = store

        log(f"making data: {args.size_mib} MiB file, {self.nfiles} small files")
        big, sha, small = make_data(self.work, self.size, self.nfiles)
        run = f"peers-{uuid.uuid4().hex[:8]}"

        db = create_database(store.pg_dsn)
        self.cleanups.append(lambda: drop_database(store.pg_dsn, db))
        server = Server(
            self.work / "registry",
            extra_args=(
                "--db",
                db,
                "--blobs",
                f"s3://{store.bucket}/{run}/artfs",
                "--s3-endpoint",
                store.endpoint,
            ),
        )
        self.cleanups.append(server.stop)
        server.start()
        self.server = server
        log("publishing through artfs (presigned uploads)")
        t = time.perf_counter()
        run_cli("put", str(big.parent), "bench/big", "--registry", server.url, timeout=1800)
        run_cli("put", str(small.parent), "bench/small", "--registry", server.url, timeout=1800)
        log(f"  artfs put: {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        upload_plain(store, f"{run}/plain", big, small)
        log(f"  plain upload (boto3) for the peers: {time.perf_counter() - t:.1f} s")

        passwd = self.work / "s3fs-passwd"
        passwd.write_text(f"{store.access_key}:{store.secret_key}\n")
        passwd.chmod(0o600)
        self.tools = [
            ArtfsTool(
                "artfs",
                self.work / "mnt-artfs",
                self.work,
                "bench/big/v0/big.bin",
                f"bench/small/v0/{SMALL_DIR}",
                server=server,
            ),
            RcloneTool(
                "rclone",
                self.work / "mnt-rclone",
                self.work,
                "big.bin",
                SMALL_DIR,
                store=store,
                remote=f"{store.bucket}/{run}/plain",
            ),
            S3fsTool(
                "s3fs",
                self.work / "mnt-s3fs",
                self.work,
                "big.bin",
                SMALL_DIR,
                store=store,
                remote=f"{store.bucket}:/{run}/plain",
                passwd=passwd,
            ),
        ]
        for tool in self.tools:
            self.cleanups.append(tool.umount)
        return big, sha, small

    def presigned_url(self, sha: str) -> str:
        import httpx

        resp = httpx.post(self.server.url + "/v1/blobs/locate", json={"digests": [sha]}, timeout=30)
        resp.raise_for_status()
        return str(resp.json()["blobs"][sha]["url"])

    # -- workloads

    def run(self) -> None:
        big, sha, small = self.setup()
        gb = self.size / 1e9
        url = self.presigned_url(sha)
        drop_caches()
        lo_before = loopback_bytes()
        meter = CpuMeter(self.is_store, lambda _: False)
        with meter:
            out = subprocess.run(
                [
                    "curl",
                    "-sf",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{time_total} %{size_download} %{time_starttransfer}",
                    url,
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=self.args.step_timeout,
            ).stdout.split()
        if int(float(out[1])) != self.size:
            raise RuntimeError(f"curl of the presigned URL got {out[1]} of {self.size} bytes")
        self.curl_seconds = float(out[0])
        self.curl_first = float(out[2])
        store_cpu, _, curl_cpu = meter.spent
        self.cpu["curl"] = (self.curl_seconds, store_cpu, curl_cpu, 0.0)
        # The store's own hops (S3 gateway, filer, volume server) cross loopback too: how
        # many loopback bytes one byte delivered from the store costs, to divide by below.
        self.lo_per_byte = max(1.0, (loopback_bytes() - lo_before) / self.size)
        log(f"curl of the presigned URL, cold: {gb / self.curl_seconds:.2f} GB/s")

        rows = set(self.args.rows.split(","))
        if "seq" in rows:
            self.run_seq(big)
        if "first" in rows:
            self.run_first()
        if "random" in rows:
            self.run_random()
        if "cat" in rows:
            self.run_cat(small)
        if "ls" in rows:
            self.run_ls()

    def run_seq(self, big: Path) -> None:
        gb = self.size / 1e9
        cold = self.result("sequential read 1 file, cold", "GB/s", True)
        warm = self.result("sequential read 1 file, warm (disk cache)", "GB/s", True)
        for tool in self.tools:
            cache = self.fresh_cache(tool)
            with self.mounted(tool, cache):
                with CpuMeter(self.is_store, self.daemon_of(tool)) as meter:
                    m = self.child("seq", tool.big)
                self.check_size(tool, m["bytes"], self.size)
                cold.values[tool.name] = gb / m["seconds"]
                self.cpu[tool.name] = (m["seconds"], *meter.spent)
            with self.mounted(tool, cache):
                m = self.child("seq", tool.big)
                warm.values[tool.name] = gb / m["seconds"]
                self.verify(tool, big)
            log(
                f"{tool.name}: cold {cold.values[tool.name]:.2f}, warm {warm.values[tool.name]:.2f} GB/s"
            )
            shutil.rmtree(cache, ignore_errors=True)

    def run_first(self, rounds: int = 3) -> None:
        """Time to the first 4 KiB of the big file through a fresh mount with an empty cache
        (lookups, open and the first read included); the median of ``rounds`` mounts."""
        first = self.result("time to first byte, 1 file, cold", "ms", False)
        first.target, first.against = 1.0, "rclone"  # issue 9: no more than rclone's
        for tool in self.tools:
            times = []
            for _ in range(rounds):
                cache = self.fresh_cache(tool)
                with self.mounted(tool, cache):
                    m = self.child("first", tool.big)
                    self.check_size(tool, m["bytes"], min(4096, self.size))
                    times.append(m["seconds"] * 1000)
                shutil.rmtree(cache, ignore_errors=True)
            first.values[tool.name] = statistics.median(times)
            log(f"{tool.name}: first byte {', '.join(f'{t:.1f}' for t in times)} ms")

    def run_random(self) -> None:
        rand = self.result("random 4 KiB reads in the file, cold", "IOPS", True)
        moved = self.result("random 4 KiB: bytes from the store per byte read", "x", False)
        for tool in self.tools:
            self.random_step(tool, rand, moved)
        artfs = next((t for t in self.tools if isinstance(t, ArtfsTool)), None)
        if artfs is None:
            return
        # The opt-in policy for files sampled at random (docs/decisions.md): the same
        # reads, the rest of the file fetched in the background after 64 misses.
        option = ("--random-fill", "64")
        fill = self.result(
            f"random 4 KiB reads, cold, artfs {' '.join(option)} (opt-in)", "IOPS", True
        )
        fill_moved = self.result(
            f"random 4 KiB, artfs {' '.join(option)}: bytes from the store per byte read",
            "x",
            False,
        )
        for r, base in ((fill, rand), (fill_moved, moved)):
            r.values.update((k, v) for k, v in base.values.items() if k != artfs.name)
        artfs.extra = option
        try:
            self.random_step(artfs, fill, fill_moved)
        finally:
            artfs.extra = ()

    def random_step(self, tool: Tool, rand: Result, moved: Result) -> None:
        cache = self.fresh_cache(tool)
        with self.mounted(tool, cache):
            before = loopback_bytes()
            m = self.child("random", tool.big, str(self.size))
            lo = (loopback_bytes() - before) / self.lo_per_byte
            moved.values[tool.name] = lo / (m["count"] * 4096)
            rand.values[tool.name] = m["count"] / m["seconds"]
        label = " ".join((tool.name, *(tool.extra if isinstance(tool, ArtfsTool) else ())))
        log(
            f"{label}: {rand.values[tool.name]:.0f} IOPS ({m['count']:.0f} reads, "
            f"{moved.values[tool.name]:.0f} bytes moved per byte read)"
        )
        shutil.rmtree(cache, ignore_errors=True)

    def run_cat(self, small: Path) -> None:
        expected = sum(p.stat().st_size for p in small.iterdir())
        cat = self.result(f"read {self.nfiles} small files (cat all), cold", "s", False)
        for tool in self.tools:
            cache = self.fresh_cache(tool)
            with self.mounted(tool, cache):
                m = self.child("cat", tool.small)
                self.check_size(tool, m["files"], self.nfiles, "files")
                self.check_size(tool, m["bytes"], expected)
                cat.values[tool.name] = m["seconds"]
            log(f"{tool.name}: cat all {m['seconds']:.2f} s")
            shutil.rmtree(cache, ignore_errors=True)

    def run_ls(self) -> None:
        ls = self.result(f"ls -l of {self.nfiles} files, cold", "s", False)
        for tool in self.tools:
            cache = self.fresh_cache(tool)
            with self.mounted(tool, cache):
                m = self.child("ls", tool.small)
                self.check_size(tool, m["files"], self.nfiles, "files")
                ls.values[tool.name] = m["seconds"]
            log(f"{tool.name}: ls -l {m['seconds']:.2f} s")
            shutil.rmtree(cache, ignore_errors=True)

    def check_size(self, tool: Tool, got: float, want: int, what: str = "bytes") -> None:
        if int(got) != want:
            raise RuntimeError(f"{tool.name} delivered {int(got)} {what}, expected {want}")

    def verify(self, tool: Tool, local: Path) -> None:
        """Spot-check that the mount hands out the published bytes (8 slices of 64 KiB)."""
        rng = random.Random(9)
        with open(tool.big, "rb") as f, open(local, "rb") as g:
            for _ in range(8):
                off = rng.randrange(0, max(1, self.size - (64 << 10)))
                f.seek(off)
                g.seek(off)
                if f.read(64 << 10) != g.read(64 << 10):
                    raise RuntimeError(f"{tool.name} returned wrong bytes at offset {off}")

    # -- report

    def table(self) -> str:
        peers = [t.name for t in self.tools if t.name != "artfs"]
        lines = [
            "| workload | artfs | rclone | s3fs | artfs vs better peer | target |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.results:

            def fmt(v: float, unit: str = r.unit) -> str:
                if unit == "GB/s":
                    return f"{v:.2f} GB/s"
                if unit == "IOPS":
                    return f"{v:.0f} IOPS"
                if unit == "x":
                    return f"{v:.1f}"
                if unit == "ms":
                    return f"{v:.1f} ms"
                return f"{v:.2f} s"

            a = r.values["artfs"]
            cells = " | ".join(fmt(r.values[n]) for n in ("artfs", *peers))
            if r.unit == "x":  # a fact to read the row above by, not a race
                lines.append(f"| {r.name} | {cells} | | report |")
                continue
            if r.against is not None and r.against in r.values:
                best = r.values[r.against]
                ratio = a / best if r.higher else best / a
                mark = "met" if ratio >= r.target else "missed"
                lines.append(
                    f"| {r.name} | {cells} | {ratio:.2f}x of {r.against} "
                    f"| >= {r.target}x of {r.against} ({mark}) |"
                )
                continue
            if r.higher:
                best = max(r.values[p] for p in peers)
                ratio = a / best
            else:
                best = min(r.values[p] for p in peers)
                ratio = best / a
            mark = "met" if ratio >= r.target else "missed"
            lines.append(f"| {r.name} | {cells} | {ratio:.2f}x | >= {r.target}x ({mark}) |")
        if self.curl_first:
            lines.append(
                f"| curl's first byte of the presigned URL | {self.curl_first * 1000:.1f} ms | | | | report |"
            )
        if not self.results or self.results[0].unit != "GB/s":
            return "\n".join(lines)
        cold = self.results[0].values["artfs"]
        curl = self.size / 1e9 / self.curl_seconds
        ratio = cold / curl
        mark = "met" if ratio >= 0.8 else "missed"
        lines.append(
            f"| sequential read 1 file, cold, vs curl of the presigned URL ({curl:.2f} GB/s) "
            f"| {cold:.2f} GB/s | | | {ratio:.2f}x of curl | >= 0.8x ({mark}) |"
        )
        return "\n".join(lines)

    def cpu_table(self) -> str:
        """Where the CPU went in the cold sequential read: what bounds it on 2 cores."""
        if not self.cpu:
            return ""
        gib = self.size / (1 << 30)
        lines = [
            "| cold sequential read, per GiB | wall s | store CPU s | client CPU s "
            "| reader CPU s | CPU s in all |",
            "|---|---|---|---|---|---|",
        ]
        for name, (wall, store, client, reader) in self.cpu.items():
            cells = " | ".join(f"{v / gib:.2f}" for v in (wall, store, client, reader))
            lines.append(f"| {name} | {cells} | {(store + client + reader) / gib:.2f} |")
        return "\n".join(lines)

    def close(self) -> None:
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # keep cleaning up: every later step still has to run
                log(f"cleanup: {e}")
        self.cleanups.clear()


def cpu_seconds(match: Callable[[str], bool]) -> float:
    """User + system CPU seconds so far of the running processes whose command line matches."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            if not match(cmdline):
                continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return total


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """CPU seconds spent by the store, a client's FUSE daemon and the reader during one step."""

    store: Callable[[str], bool]
    client: Callable[[str], bool]
    start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def now(self) -> tuple[float, float, float]:
        return cpu_seconds(self.store), cpu_seconds(self.client), children_cpu()

    def __enter__(self) -> CpuMeter:
        self.start = self.now()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self.now()
        self.spent = tuple(b - a for a, b in zip(self.start, end, strict=True))


def loopback_bytes() -> int:
    """Bytes received on the loopback interface so far (every byte from the store crosses it).

    Counts all loopback traffic on the machine, so read it on an otherwise quiet machine.
    """
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[0])
    return 0


def machine() -> str:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // (1 << 20)
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, {mem} GiB memory, Linux {os.uname().release}, load {load:.1f}"


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(f"signal {signum}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        measure_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-mib", type=int, default=1024, help="size of the big file")
    ap.add_argument("--files", type=int, default=10_000, help="number of small files")
    ap.add_argument("--install", action="store_true", help="apt-get install rclone/s3fs if missing")
    ap.add_argument("--services", choices=("own", "env"), default="own")
    ap.add_argument("--pg-port", type=int, default=55632, help="own services: PostgreSQL port")
    ap.add_argument(
        "--weed-port-base", type=int, default=18630, help="own services: SeaweedFS ports base"
    )
    ap.add_argument(
        "--rows",
        default="seq,first,random,cat,ls",
        help="workloads to run, comma-separated (default: %(default)s)",
    )
    ap.add_argument("--step-timeout", type=float, default=600.0, help="seconds per measurement")
    ap.add_argument("--keep", action="store_true", help="keep the logs (data is deleted)")
    ap.add_argument("--workdir", help="where to put data (default: a temp dir on /var/tmp)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the page cache is dropped between steps")
    ensure_peers(args.install)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    work = Path(tempfile.mkdtemp(prefix="artfs-peers-", dir=args.workdir or "/var/tmp"))
    bench = PeerBench(args, work)
    started = time.strftime("%Y-%m-%d %H:%M")
    host = machine()
    try:
        bench.run()
    finally:
        bench.close()
        if args.keep:
            for p in (*work.glob("src-*"), *work.glob("cache-*")):
                shutil.rmtree(p, ignore_errors=True)
            (work / "s3fs-passwd").unlink(missing_ok=True)
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nartfs vs rclone/s3fs on one SeaweedFS bucket, {started}, {host}; "
        f"{args.size_mib} MiB file, {args.files} small files; "
        f"load at the end {os.getloadavg()[0]:.1f}\n"
    )
    print(bench.table())
    if bench.cpu:
        print(f"\n{bench.cpu_table()}")


if __name__ == "__main__":
    main()
