"""artfs benchmark: one run, ratios against baselines measured in the same run.

    .venv/bin/python scripts/bench.py [--size-mib 1024] [--files 10000] [--workdir DIR]
                                      [--no-passthrough]

Starts a real ``artfs serve``, publishes a large random file and a tree of small
files, mounts with the CLI and measures (root is needed to drop the page cache):

- cold sequential read through the mount vs a plain HTTP download (curl; httpx where there
  is no curl) of the same blob
- time to first byte of a cold large file vs curl's time to first byte
- hot read (page cache) vs reading the same bytes in a local file on the cache's
  filesystem from the page cache (both 1 MiB reads, best of five)
- warm read (blob in the disk cache, page cache dropped) vs reading the cached file directly
- random 4 KiB reads of a cached blob (page cache dropped) vs the same offsets in the cached file
- random 4 KiB reads, cold: IOPS vs the same reads of a local file (page cache dropped),
  and bytes moved per byte asked
- find + stat of the small-file tree vs the same tree on local disk
- writes into a draft (``dd bs=4k``, ``dd bs=1M``, ``cp`` of the large file, close included,
  ``sync`` before each, source in the page cache) vs the same command writing into a local
  directory on the filesystem of the mount's state dir

``--no-passthrough`` starts the mounts with ARTFS_PASSTHROUGH=0 (every read and write goes
through the daemon), to compare both modes.

The machine is shared and noisy: compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e import Server, is_mounted, run_cli

CHUNK = 1 << 20


def drop_caches(level: int = 3) -> None:
    """Drop the page cache (and with 2 or 3 the dentries and inodes: the kernel then sends
    FORGET for a mount's nodes)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text(f"{level}\n")
    except OSError:
        print(
            "warning: cannot drop the page cache (not root?); warm/cold rows are optimistic",
            file=sys.stderr,
        )


def write_random(path: Path, size: int, rng: random.Random) -> str:
    """Write ``size`` bytes from ``rng`` to ``path`` in 16 MiB pieces; their sha256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            piece = rng.randbytes(min(left, 16 << 20))
            h.update(piece)
            f.write(piece)
            left -= len(piece)
    return h.hexdigest()


def read_all(path: Path) -> int:
    total = 0
    buf = bytearray(CHUNK)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def curl(url: str) -> tuple[float, float]:
    """(total seconds, seconds to first byte) of a plain HTTP download to /dev/null."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{time_starttransfer}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def http_download(url: str) -> tuple[float, float, str]:
    """``curl`` where there is one, else the same with httpx (hosts without curl);
    (total seconds, seconds to first byte, the tool's name)."""
    if shutil.which("curl"):
        return (*curl(url), "curl")
    import httpx

    with httpx.Client(timeout=120) as client:  # (made off the clock: it loads CA certificates)
        start = time.perf_counter()
        first = 0.0
        with client.stream("GET", url) as r:
            r.raise_for_status()
            for _ in r.iter_raw(CHUNK):
                first = first or time.perf_counter() - start
        return time.perf_counter() - start, first, "httpx"


def random_reads(path: Path, size: int, count: int, seed: int = 5) -> float:
    rng = random.Random(seed)
    offsets = [rng.randrange(0, size - 4096) // 4096 * 4096 for _ in range(count)]
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.perf_counter()
        for off in offsets:
            os.pread(fd, 4096, off)
        return time.perf_counter() - start
    finally:
        os.close(fd)


def walk_stat(root: Path) -> int:
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.stat(os.path.join(dirpath, name))
            n += 1
    return n


def run_timed(cmd: list[str]) -> float:
    """Seconds ``cmd`` takes, after a ``sync`` so that earlier dirty pages stay out of it."""
    os.sync()
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def dropped(fn: Callable[[], object]) -> float:
    """Seconds ``fn`` takes (or the seconds it returns), right after the page cache is dropped."""
    drop_caches()
    start = time.perf_counter()
    got = fn()
    return got if isinstance(got, float) else time.perf_counter() - start


def best_of(n: int, artfs: Callable[[], float], base: Callable[[], float]) -> tuple[float, float]:
    """The best seconds of ``n`` alternating runs of each side: noise hits both alike."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(n):
        a.append(artfs())
        b.append(base())
    return min(a), min(b)


def same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


class Bench:
    def __init__(self, work: Path, size: int, nfiles: int, passthrough: bool = True) -> None:
        self.work = work
        self.size = size
        self.nfiles = nfiles
        self.passthrough = passthrough
        self.rows: list[tuple[str, str, str, float, str]] = []
        self.server = Server(work / "registry")
        self.state = work / "state"  # the mount's drafts (--state-dir), on the work dir's fs
        self.log: Path | None = None  # the mount's log, once known
        self.modes: list[str] = []  # the daemon's "passthrough: ..." line of each mount

    def row(self, name: str, artfs: str, base: str, ratio: float, target: str) -> None:
        self.rows.append((name, artfs, base, ratio, target))
        print(
            f"  {name}: artfs {artfs}, baseline {base}, ratio {ratio:.2f} (target {target})",
            file=sys.stderr,
        )

    def _mode_lines(self) -> list[str]:
        if self.log is None or not self.log.exists():
            return []
        text = self.log.read_text(errors="replace")
        return [line for line in text.splitlines() if "passthrough:" in line]

    def mount(self, mnt: Path, cache: Path) -> None:
        mnt.mkdir(exist_ok=True)
        seen = len(self._mode_lines())
        env = {} if self.passthrough else {"ARTFS_PASSTHROUGH": "0"}
        proc = run_cli(
            "mount",
            "--registry",
            self.server.url,
            str(mnt),
            "--cache-dir",
            str(cache),
            "--state-dir",
            str(self.state),
            env=env,
        )
        if self.log is None and "(log: " in proc.stderr:
            self.log = Path(proc.stderr.rsplit("(log: ", 1)[1].split(")", 1)[0])
        # the daemon says whether it uses passthrough just after INIT, maybe after we return
        deadline = time.monotonic() + 5
        while len(lines := self._mode_lines()) <= seen and time.monotonic() < deadline:
            time.sleep(0.05)
        if len(lines) > seen:
            self.modes.append(lines[-1].split("passthrough:", 1)[1].strip())

    def umount(self, mnt: Path) -> None:
        if is_mounted(mnt):
            run_cli("umount", str(mnt))

    def mode(self) -> str:
        """The mounts' passthrough line(s), e.g. "on (cached blobs ...)"; "unknown" if not logged."""
        unique = list(dict.fromkeys(self.modes))
        return "; ".join(unique) if unique else "unknown (no 'passthrough:' line in the mount log)"

    def prepare(self) -> tuple[Path, str, Path]:
        big_dir = self.work / "src-big"
        big_dir.mkdir()
        big = big_dir / "big.bin"
        sha = write_random(big, self.size, random.Random(1))
        tree = self.work / "src-tree"
        rng = random.Random(2)
        for i in range(self.nfiles):
            p = tree / f"d{i // 100:03d}" / f"f{i:05d}.bin"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rng.randbytes(rng.randrange(100, 4096)))
        self.state.mkdir()
        self.server.start()
        run_cli("put", str(big_dir), "bench/big", "--registry", self.server.url, timeout=1200)
        run_cli("put", str(tree), "bench/tree", "--registry", self.server.url, timeout=1200)
        return big, sha, tree

    def run(self) -> None:
        big, sha, tree = self.prepare()
        blob_url = f"http://127.0.0.1:{self.server.blob_port}/blobs/{sha}"
        mnt, cache = self.work / "mnt", self.work / "cache"
        mfile = mnt / "bench" / "big" / "v0" / "big.bin"
        count = 2000  # random 4 KiB reads per measurement

        # cold sequential vs curl
        drop_caches()
        t_curl, ttfb_curl, tool = http_download(blob_url)
        drop_caches()
        self.mount(mnt, cache)
        t_cold = timed(lambda: read_all(mfile))
        gbs = self.size / 1e9
        self.row(
            "cold sequential read, 1 file",
            f"{gbs / t_cold:.2f} GB/s",
            f"{gbs / t_curl:.2f} GB/s ({tool})",
            t_curl / t_cold,
            "no worse than before (2 cores)",
        )

        # hot: page cache kept (after the daemon has published the blob: its whole-file hash
        # would otherwise compete for the CPU), best of five, alternating with the baseline:
        # the same bytes in a local file on the cache's filesystem, read the same way
        deadline = time.monotonic() + 60
        while not any(p.is_file() for p in cache.rglob(sha)) and time.monotonic() < deadline:
            time.sleep(0.2)
        cached = next(p for p in cache.rglob(sha) if p.is_file())
        if not same_fs(big, cached):
            print("warning: the local file is not on the cache's filesystem", file=sys.stderr)
        read_all(big)  # (the mount's file is in the page cache from the cold read)
        t_hot, t_hot_local = best_of(
            5, lambda: timed(lambda: read_all(mfile)), lambda: timed(lambda: read_all(big))
        )
        self.row(
            "hot read (page cache)",
            f"{gbs / t_hot:.2f} GB/s",
            f"{gbs / t_hot_local:.2f} GB/s (local file, cache's fs)",
            t_hot_local / t_hot,
            ">= 0.9",
        )
        self.umount(mnt)

        # warm: blob in the disk cache, page cache dropped; baseline: the cached file itself.
        # The first read is the first open of a new mount; best of two.
        self.mount(mnt, cache)
        t_warm, t_warm_local = best_of(
            2,
            lambda: dropped(lambda: read_all(mfile)),
            lambda: dropped(lambda: read_all(cached)),
        )
        self.row(
            "warm read (disk cache)",
            f"{gbs / t_warm:.2f} GB/s",
            f"{gbs / t_warm_local:.2f} GB/s (cached file)",
            t_warm_local / t_warm,
            ">= 0.9",
        )

        # random 4 KiB reads of the cached blob (read once fully just above), page cache
        # dropped before each side, same offsets
        t_rand_cached, t_rand_cached_local = best_of(
            2,
            lambda: dropped(lambda: random_reads(mfile, self.size, count)),
            lambda: dropped(lambda: random_reads(cached, self.size, count)),
        )
        self.row(
            "random 4 KiB reads, cached blob",
            f"{count / t_rand_cached:.0f} IOPS",
            f"{count / t_rand_cached_local:.0f} IOPS (cached file)",
            t_rand_cached_local / t_rand_cached,
            ">= 0.7",
        )
        self.umount(mnt)

        # time to first byte, cold
        shutil.rmtree(cache)
        drop_caches()
        self.mount(mnt, cache)

        def first_byte() -> None:
            with open(mfile, "rb", buffering=0) as f:
                f.read(4096)

        t_first = timed(first_byte)
        self.row(
            "time to first byte, cold 1 file",
            f"{t_first * 1000:.1f} ms",
            f"{ttfb_curl * 1000:.1f} ms ({tool})",
            ttfb_curl / t_first if t_first else 0.0,
            "no worse than before (2 cores)",
        )
        self.umount(mnt)

        # random 4 KiB reads, cold
        shutil.rmtree(cache)
        drop_caches()
        self.mount(mnt, cache)
        before = self.server.stats()["blob_bytes_sent"]
        t_rand = random_reads(mfile, self.size, count)
        moved = self.server.stats()["blob_bytes_sent"] - before
        drop_caches()
        t_rand_local = random_reads(big, self.size, count)
        self.row(
            "random 4 KiB reads, cold",
            f"{count / t_rand:.0f} IOPS",
            f"{count / t_rand_local:.0f} IOPS (local)",
            t_rand_local / t_rand,
            "report",
        )
        self.row(
            "random 4 KiB: bytes moved per byte asked",
            f"{moved / (count * 4096):.1f}",
            "32 = one 128 KiB verified block per read",
            0.0,
            "<= 32",
        )
        self.umount(mnt)

        # find + stat of the small-file tree
        drop_caches()
        t_local_tree = timed(lambda: walk_stat(tree))
        self.mount(mnt, cache)
        t_tree = timed(lambda: walk_stat(mnt / "bench" / "tree" / "v0"))
        t_tree2 = timed(lambda: walk_stat(mnt / "bench" / "tree" / "v0"))
        self.row(
            f"find+stat {self.nfiles} files, first pass",
            f"{t_tree * 1000:.0f} ms",
            f"{t_local_tree * 1000:.0f} ms (local, cold)",
            t_local_tree / t_tree,
            ">= 0.2 (<= 5x)",
        )
        self.row(
            f"find+stat {self.nfiles} files, second pass",
            f"{t_tree2 * 1000:.0f} ms",
            f"{t_local_tree * 1000:.0f} ms (local, cold)",
            t_local_tree / t_tree2,
            "report",
        )

        # writes into a draft (same mount)
        self.draft_writes(mnt, big)
        self.umount(mnt)

    def draft_writes(self, mnt: Path, src: Path) -> None:
        """``dd``/``cp`` of ``src`` into a draft vs into a local directory on the state dir's
        filesystem: plain commands as a user runs them (their close included, no fsync), a
        ``sync`` before each, the written file removed after each; best of two."""
        draft = mnt / "bench" / "big" / "bench-writes"
        draft.mkdir()  # a new draft of bench/big
        local = self.work / "local-writes"
        local.mkdir()
        if not same_fs(local, self.state):
            print("warning: the local directory is not on the state dir's fs", file=sys.stderr)
        read_all(src)  # the source comes from the page cache
        gbs = self.size / 1e9

        def dd(bs: str) -> Callable[[Path], list[str]]:
            return lambda dst: ["dd", f"if={src}", f"of={dst}", f"bs={bs}", "status=none"]

        commands: list[tuple[str, Callable[[Path], list[str]], str]] = [
            ("dd bs=4k", dd("4k"), ">= 0.5"),
            ("dd bs=1M", dd("1M"), ">= 0.7"),
            ("cp", lambda dst: ["cp", str(src), str(dst)], ">= 0.7"),
        ]
        for name, command, target in commands:
            t_draft: list[float] = []
            t_local: list[float] = []
            for _ in range(2):
                for where, times in ((draft, t_draft), (local, t_local)):
                    dst = where / "x"
                    times.append(run_timed(command(dst)))
                    if (got := dst.stat().st_size) != self.size:
                        raise AssertionError(f"{name} wrote {got} bytes to {dst}, not {self.size}")
                    dst.unlink()
                if t_draft[-1] > 20:  # slow enough that one run says it (keeps the bench short)
                    break
            self.row(
                f"draft write, {name}",
                f"{gbs / min(t_draft):.2f} GB/s",
                f"{gbs / min(t_local):.2f} GB/s (local dir, state dir's fs)",
                min(t_local) / min(t_draft),
                target,
            )

    def table(self) -> str:
        return render_table(self.rows)


Row = tuple[str, str, str, float, str]


def render_table(rows: list[Row]) -> str:
    """The markdown table every bench script prints: a ratio of 0 means "not a ratio"."""
    lines = [
        "| workload | artfs | baseline | ratio (higher is better) | target |",
        "|---|---|---|---|---|",
    ]
    for name, a, b, r, t in rows:
        lines.append(f"| {name} | {a} | {b} | {f'{r:.2f}' if r else '-'} | {t} |")
    return "\n".join(lines)


def bench_args(
    doc: str | None, files: int, *, passthrough_flag: bool = False
) -> argparse.Namespace:
    """The options every bench script takes (``--no-passthrough`` where it is asked for)."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=files)
    ap.add_argument("--workdir", help="where to put data (default: a temp dir on /var/tmp)")
    if passthrough_flag:
        ap.add_argument(
            "--no-passthrough",
            action="store_true",
            help="mount with ARTFS_PASSTHROUGH=0: every read and write goes through the daemon",
        )
    return ap.parse_args()


def run_cleanly(run: Callable[[], object], work: Path, mounts: list[Path], server: Server) -> None:
    """Run a bench; whatever happens, unmount, stop the server and remove the work dir."""
    try:
        run()
    finally:
        for m in mounts:
            if is_mounted(m):
                subprocess.run(["fusermount3", "-u", "-z", str(m)], check=False)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    args = bench_args(__doc__, 10_000, passthrough_flag=True)
    # `timeout` (scripts/bench_device.sh) sends SIGTERM: unwind, so that the cleanup runs
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    work = Path(tempfile.mkdtemp(prefix="artfs-bench-", dir=args.workdir or "/var/tmp"))
    bench = Bench(work, args.size_mib << 20, args.files, passthrough=not args.no_passthrough)
    try:
        run_cleanly(bench.run, work, [work / "mnt"], bench.server)
    finally:
        if bench.log is not None:  # the daemons' log: one per mountpoint, and this one is gone
            bench.log.unlink(missing_ok=True)
    asked = "off (ARTFS_PASSTHROUGH=0)" if args.no_passthrough else "default"
    print(
        f"\nartfs bench, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"{args.size_mib} MiB file, {args.files} small files\n"
        f"passthrough asked: {asked}; the mounts said: passthrough: {bench.mode()}\n"
    )
    print(bench.table())


if __name__ == "__main__":
    main()
