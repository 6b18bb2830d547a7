#!/usr/bin/env python3
"""Which files to fetch whole at open (then pass through), measured: the threshold of
``MountOptions.small_whole_max`` (``ARTFS_SMALL_WHOLE_MAX``).

    .venv/bin/python scripts/bench_small_whole.py [--mib-per-size 64]

For each file size, a directory of files adding up to ``--mib-per-size`` MiB is published;
then, on a fresh mount with an empty cache and the page cache dropped, every file is read
whole (``cat``: the training-input case) and, on another fresh mount, only its first 4 KiB
(a header), once with nothing fetched whole at open (threshold 0: reads through the
daemon with read-ahead) and once with everything fetched whole (threshold above every
size). Ratios are whole / lazy of the same run (< 1: fetching whole is faster).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e import Server, is_mounted, run_cli

KiB, MiB = 1 << 10, 1 << 20
SIZES = [64 * KiB, 256 * KiB, MiB, 4 * MiB, 16 * MiB]


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def read_dir(d: Path, head: bool) -> None:
    for f in sorted(d.iterdir()):
        with open(f, "rb", buffering=0) as fh:
            if head:
                fh.read(4096)
            else:
                while fh.read(MiB):
                    pass


def timed_mount(server: Server, work: Path, threshold: int, tag: str, head: bool) -> list[float]:
    point, cache = work / f"mnt-{tag}", work / f"cache-{tag}"
    point.mkdir()
    env = {"ARTFS_SMALL_WHOLE_MAX": str(threshold)}
    run_cli("mount", "--registry", server.url, str(point), "--cache-dir", str(cache),
            "--state-dir", str(work / f"state-{tag}"), "--dir-readahead", "0", env=env)  # fmt: skip
    try:
        times = []
        for size in SIZES:
            d = point / "p" / "a" / "v0" / f"s{size}"
            os.listdir(d)
            drop_caches()
            start = time.perf_counter()
            read_dir(d, head)
            times.append(time.perf_counter() - start)
        return times
    finally:
        run_cli("umount", str(point), check=False)
        if is_mounted(point):
            subprocess.run(["fusermount3", "-u", "-z", str(point)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mib-per-size", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = Path(tmp)
        src = work / "src"
        rng = random.Random(1)
        for size in SIZES:
            d = src / f"s{size}"
            d.mkdir(parents=True)
            for k in range(max(4, args.mib_per_size * MiB // size)):
                (d / f"f{k:05d}").write_bytes(rng.randbytes(size))
        server = Server(work / "registry")
        server.start()
        try:
            run_cli("put", str(src), "p/a", "--registry", server.url)
            rows = []
            for head in (False, True):
                what = "first 4 KiB" if head else "whole file"
                lazy = timed_mount(server, work, 0, f"lazy{head}", head)
                whole = timed_mount(server, work, 1 << 40, f"whole{head}", head)
                for size, a, b in zip(SIZES, lazy, whole, strict=True):
                    rows.append((what, size, a, b))
        finally:
            server.stop()
    print(f"{'read':<12} {'file size':>10} {'lazy s':>8} {'whole s':>8} {'whole/lazy':>10}")
    for what, size, a, b in rows:
        print(f"{what:<12} {size // KiB:>8}Ki {a:>8.3f} {b:>8.3f} {b / a:>10.2f}")


if __name__ == "__main__":
    main()
