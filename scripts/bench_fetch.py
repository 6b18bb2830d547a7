"""The cold path's CPU: fetch threads against the trio thread, alternating in the same minutes.

    .venv/bin/python scripts/bench_fetch.py [--size-mib 1024] [--rounds 3] [--threads 0,2,4]
                                            [--mount] [--cache-dir DIR]

Starts ``artfs serve`` with one random blob whose file stays in the page cache (the
registry's disk is not what is measured), then, per round, for each fetch-thread setting
(``CacheTuning.fetch_threads`` / ``ARTFS_FETCH_THREADS``; 0 = the old path, everything on
the trio thread):

- cache: a fresh process reads the blob cold through ``BlobCache`` with 1 MiB sequential
  reads (what the mount asks with 1 MiB kernel read-ahead) and reports GB/s, the CPU
  seconds per GiB of its trio thread and of the whole process (completion hash included),
  and the time to the first 4 KiB of the cold blob (open + read: the data path alone);
- mount (``--mount``): ``artfs mount`` with ``ARTFS_FETCH_THREADS=N``, a cold sequential
  read of the file with 1 MiB reads, the daemon's CPU seconds per GiB (process and trio
  thread, from /proc), and the first 4 KiB on a fresh mount (lookups included);
- curl of the blob's URL (page cache warm): GB/s and time to first byte.

CPU seconds per GiB are what transfer to a bigger machine: the trio thread's share bounds
one reader's speed whatever the cores; the process's total, divided by the cores, the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e import Server, is_mounted, run_cli

MiB = 1 << 20
TICK = os.sysconf("SC_CLK_TCK")
CURL_FORMAT = "%{time_total} %{time_starttransfer}"


def child(url: str, sha: str, size: int, threads: int, cache_dir: str, code: str) -> None:
    """One cold read through BlobCache in this process; prints a JSON line."""
    if code:
        sys.path.insert(0, code)
    import trio

    from artfs.cache import BlobCache, CacheTuning
    from artfs.client.http import HttpRegistryClient

    async def main() -> dict[str, float]:
        async with HttpRegistryClient(url) as client:
            await client.registry_id()
            tuning = CacheTuning(fetch_threads=threads) if threads >= 0 else CacheTuning()
            async with BlobCache(Path(cache_dir), client, tuning=tuning) as cache:
                ru0 = resource.getrusage(resource.RUSAGE_SELF)
                trio0 = time.thread_time()
                t0 = time.perf_counter()
                async with await cache.open(sha, size) as reader:
                    await reader.read(0, 4096)
                    t_first = time.perf_counter() - t0
                    off = 4096
                    while off < size:
                        off += len(await reader.read(off, MiB - off % MiB))
                t_read = time.perf_counter() - t0
                trio_cpu = time.thread_time() - trio0
            ru1 = resource.getrusage(resource.RUSAGE_SELF)  # after completion (cache exit)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        gib = size / (1 << 30)
        return {
            "gbs": size / t_read / 1e9,
            "ttfb_ms": t_first * 1000,
            "trio_cpu": trio_cpu / gib,
            "proc_cpu": cpu / gib,
        }

    result = trio.run(main)
    complete = Path(cache_dir) / "v1" / "blobs" / sha[:2] / sha
    result["complete"] = float(complete.is_file())
    print(json.dumps(result))


def proc_cpu(pid: int, tid: int | None = None) -> float:
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def daemon_pid(mnt: Path) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--foreground" in cmd and str(mnt).encode() in cmd:
            return int(entry.name)
    raise RuntimeError(f"no daemon found for {mnt}")


def read_file(path: Path) -> int:
    total = 0
    buf = bytearray(MiB)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


class Bench:
    def __init__(self, work: Path, size: int, cache_root: Path) -> None:
        self.work = work
        self.size = size
        self.cache_root = cache_root
        self.server = Server(work / "registry")
        self.cleanups: list[Callable[[], object]] = []
        self.sha = ""
        self.results: dict[str, list[dict[str, float]]] = {}

    def use_s3(self) -> None:
        """Serve from PostgreSQL + the S3 store of scripts/services.sh (its env must be set):
        blob bytes then come from the store through presigned URLs."""
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from peer_services import create_database, drop_database

        admin = os.environ["ARTFS_TEST_PG_DSN"]
        db = create_database(admin)
        self.cleanups.append(lambda: drop_database(admin, db))
        bucket = os.environ.get("ARTFS_TEST_S3_BUCKET", "artfs-test")
        prefix = f"s3://{bucket}/fetch-{os.getpid()}-{int(time.time())}"
        endpoint = os.environ["ARTFS_TEST_S3_ENDPOINT"]
        self.server = Server(
            self.work / "registry",
            extra_args=("--db", db, "--blobs", prefix, "--s3-endpoint", endpoint),
        )

    def prepare(self) -> None:
        src = self.work / "src"
        src.mkdir()
        big = src / "big.bin"
        import hashlib

        h = hashlib.sha256()
        with open(big, "wb") as f:
            left = self.size
            while left:
                piece = os.urandom(min(left, 16 * MiB))
                h.update(piece)
                f.write(piece)
                left -= len(piece)
        self.sha = h.hexdigest()
        self.server.start()
        run_cli("put", str(src), "bench/big", "--registry", self.server.url, timeout=1200)
        self.curl()  # the registry's copy into the page cache

    def curl(self) -> dict[str, float]:
        located = httpx.post(
            self.server.url + "/v1/blobs/locate", json={"digests": [self.sha]}, timeout=30
        )
        url = located.json()["blobs"][self.sha]["url"]  # (presigned with S3)
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", CURL_FORMAT, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return {"gbs": self.size / float(out[0]) / 1e9, "ttfb_ms": float(out[1]) * 1000}

    def add(self, key: str, result: dict[str, float]) -> None:
        self.results.setdefault(key, []).append(result)
        shown = ", ".join(f"{k} {v:.2f}" for k, v in result.items())
        print(f"  {key}: {shown}", file=sys.stderr)

    def cache_run(self, threads: int, code: str = "") -> None:
        cache = Path(tempfile.mkdtemp(prefix="cache-", dir=self.cache_root))
        args = [str(self.size), str(threads), str(cache), code]
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--child", self.server.url, self.sha, *args],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                raise RuntimeError(done.stderr)
            what = f"threads={threads}" if threads >= 0 else "old code"
            self.add(f"cache, {what}", json.loads(done.stdout.splitlines()[-1]))
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    def mount_run(self, threads: int, code: str = "") -> None:
        cache = Path(tempfile.mkdtemp(prefix="cache-", dir=self.cache_root))
        mnt = self.work / "mnt"
        mnt.mkdir(exist_ok=True)
        env = {"ARTFS_FETCH_THREADS": str(threads)} if threads >= 0 else {}
        if code:
            env["PYTHONPATH"] = code
        path = mnt / "bench" / "big" / "v0" / "big.bin"
        try:
            run_cli(
                "mount", "--registry", self.server.url, str(mnt), "--cache-dir", str(cache), env=env
            )
            t0 = time.perf_counter()
            with open(path, "rb", buffering=0) as f:
                f.read(4096)
            ttfb = time.perf_counter() - t0
            run_cli("umount", str(mnt))
            shutil.rmtree(cache)
            run_cli(
                "mount", "--registry", self.server.url, str(mnt), "--cache-dir", str(cache), env=env
            )
            path.stat()  # (lookups before timing)
            pid = daemon_pid(mnt)
            cpu0, trio0 = proc_cpu(pid), proc_cpu(pid, pid)
            t0 = time.perf_counter()
            n = read_file(path)
            wall = time.perf_counter() - t0
            cpu1, trio1 = proc_cpu(pid), proc_cpu(pid, pid)
            assert n == self.size
            gib = self.size / (1 << 30)
            self.add(
                f"mount, {f'threads={threads}' if threads >= 0 else 'old code'}",
                {
                    "gbs": self.size / wall / 1e9,
                    "ttfb_ms": ttfb * 1000,
                    "trio_cpu": (trio1 - trio0) / gib,
                    "proc_cpu": (cpu1 - cpu0) / gib,
                },
            )
        finally:
            if is_mounted(mnt):
                run_cli("umount", str(mnt), check=False)
            shutil.rmtree(cache, ignore_errors=True)

    def ttfb_run(self, threads: int, code: str = "") -> None:
        """Time to the first 4 KiB of the cold file on a fresh mount with an empty cache."""
        cache = Path(tempfile.mkdtemp(prefix="cache-", dir=self.cache_root))
        mnt = self.work / "mnt"
        mnt.mkdir(exist_ok=True)
        env = {"ARTFS_FETCH_THREADS": str(threads)} if threads >= 0 else {}
        if code:
            env["PYTHONPATH"] = code
        try:
            run_cli(
                "mount", "--registry", self.server.url, str(mnt), "--cache-dir", str(cache), env=env
            )
            t0 = time.perf_counter()
            with open(mnt / "bench" / "big" / "v0" / "big.bin", "rb", buffering=0) as f:
                f.read(4096)
            ttfb = time.perf_counter() - t0
            what = f"threads={threads}" if threads >= 0 else "old code"
            self.add(f"first byte on a fresh mount, {what}", {"ttfb_ms": ttfb * 1000})
        finally:
            if is_mounted(mnt):
                run_cli("umount", str(mnt), check=False)
            shutil.rmtree(cache, ignore_errors=True)

    def table(self) -> str:
        cols = [
            ("gbs", "GB/s"),
            ("ttfb_ms", "first 4 KiB, ms"),
            ("trio_cpu", "trio thread CPU s/GiB"),
        ]
        cols.append(("proc_cpu", "process CPU s/GiB"))
        lines = [
            "| run | " + " | ".join(name for _, name in cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for key, runs in self.results.items():
            cells = []
            for field, _ in cols:
                values = sorted(r[field] for r in runs if field in r)
                if len(values) >= 8:  # many samples: median and quartiles
                    q = statistics.quantiles(values, n=4)
                    cells.append(f"{q[1]:.2f} (quartiles {q[0]:.2f}-{q[2]:.2f}, n={len(values)})")
                    continue
                if not values:
                    cells.append("-")
                elif len(values) == 1:
                    cells.append(f"{values[0]:.2f}")
                else:
                    med = statistics.median(values)
                    cells.append(f"{med:.2f} ({values[0]:.2f}-{values[-1]:.2f})")
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        url, sha, size, threads, cache, code = sys.argv[2:8]
        child(url, sha, int(size), int(threads), cache, code)
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="0,2,4")
    ap.add_argument("--mount", action="store_true", help="also read through a real mount")
    ap.add_argument("--no-cache", action="store_true", help="skip the in-process cache runs")
    ap.add_argument(
        "--ttfb", type=int, default=0, help="also time the first byte on N fresh mounts per setting"
    )
    ap.add_argument("--cache-dir", help="where the caches go (default: under the work dir)")
    ap.add_argument(
        "--s3",
        action="store_true",
        help='registry on PostgreSQL + S3 (run `eval "$(scripts/services.sh start)"` first)',
    )
    ap.add_argument("--workdir", help="default: a temp dir on /var/tmp")
    ap.add_argument(
        "--old-code",
        help="also measure the artfs package in this directory (e.g. `git archive HEAD artfs`)",
    )
    args = ap.parse_args()
    settings = [int(t) for t in args.threads.split(",")]
    work = Path(tempfile.mkdtemp(prefix="artfs-fetch-", dir=args.workdir or "/var/tmp"))
    cache_root = Path(args.cache_dir) if args.cache_dir else work
    bench = Bench(work, args.size_mib * MiB, cache_root)
    os.chdir(work)  # (so that the CLI's `python -m artfs.cli` takes PYTHONPATH's artfs first)
    runs = [(threads, "") for threads in settings]
    if args.old_code:
        runs.insert(0, (-1, str(Path(args.old_code).resolve())))
    try:
        if args.s3:
            bench.use_s3()
        bench.prepare()
        for _ in range(args.rounds):
            bench.add("curl", bench.curl())
            for threads, code in runs:
                if not args.no_cache:
                    bench.cache_run(threads, code)
                if args.mount:
                    bench.mount_run(threads, code)
        for _ in range(args.ttfb):
            for threads, code in runs:
                bench.ttfb_run(threads, code)
    finally:
        mnt = work / "mnt"
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        bench.server.stop()
        for cleanup in bench.cleanups:
            cleanup()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nbench_fetch, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
        f"{args.size_mib} MiB blob, {args.rounds} rounds (median, range)\n"
    )
    print(bench.table())


if __name__ == "__main__":
    main()
