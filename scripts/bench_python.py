"""The Python API and the fsspec filesystem against reading the same cached blob through the mount.

    .venv/bin/python scripts/bench_python.py [--size-mib 256] [--workdir DIR]

Starts a real ``artfs serve``, publishes two random files of ``--size-mib``, mounts with
the CLI (passthrough as by default) and points ``artfs.Registry`` and ``ArtfsFileSystem``
at the mount's own cache directory, so every side reads the same cached blob. Rows, each
the best of five alternating runs (ratio = mount seconds / API seconds: higher is better,
the issue's target is 0.8):

- sequential 1 MiB reads of the whole file, hot (page cache): ``Version.open`` and
  ``fsspec.open`` vs ``open()`` on the mount;
- the same after dropping the page cache (warm: the blob on the cache's disk);
- random 64 KiB ranged reads (seek + read): ``Version.open``, ``fs.cat_file(start, end)``
  vs ``os.pread`` on the mount;
- cold: the second file read for the first time, fetched from the server and verified
  (``Version.open`` vs the mount; each on its own cache so neither helps the other).

Root is needed to drop the page cache. The machine is shared and noisy: compare ratios.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fsspec

import artfs
from artfs.api.fsspec_fs import ArtfsFileSystem
from scripts.bench import (
    CHUNK,
    bench_args,
    best_of,
    drop_caches,
    render_table,
    run_cleanly,
    timed,
    write_random,
)
from tests.e2e import Server, run_cli

RANDOM_READ = 64 << 10
RANDOM_COUNT = 2000
TARGET = ">= 0.8"


def read_file(f: Any) -> int:
    """Read an open binary file to its end in 1 MiB ``readinto`` calls."""
    total = 0
    buf = bytearray(CHUNK)
    while n := f.readinto(buf):
        total += n
    return total


class PythonBench:
    def __init__(self, work: Path, size: int) -> None:
        self.work = work
        self.size = size
        self.server = Server(work / "registry")
        self.rows: list[tuple[str, str, str, float, str]] = []

    def row(self, name: str, api: float, mount: float, nbytes: int) -> None:
        rate = lambda s: f"{nbytes / s / 1e9:.2f} GB/s"  # noqa: E731
        self.rows.append((name, rate(api), f"{rate(mount)} (mount)", mount / api, TARGET))
        print(f"  {name}: api {rate(api)}, mount {rate(mount)}, ratio {mount / api:.2f}")

    def prepare(self) -> None:
        rng = random.Random(1)
        for name in ("a", "b"):
            d = self.work / f"src-{name}"
            d.mkdir()
            write_random(d / "big.bin", self.size, rng)
        self.server.start()
        for name in ("a", "b"):
            run_cli(
                "put",
                str(self.work / f"src-{name}"),
                f"bench/{name}",
                "--registry",
                self.server.url,
                timeout=1200,
            )

    def run(self) -> None:
        self.prepare()
        mnt, cache = self.work / "mnt", self.work / "cache"
        mnt.mkdir()
        run_cli(
            "mount",
            "--registry",
            self.server.url,
            str(mnt),
            "--cache-dir",
            str(cache),
            "--state-dir",
            str(self.work / "state"),
        )
        mfile = mnt / "bench" / "a" / "v0" / "big.bin"
        with open(mfile, "rb") as f:  # fill the cache through the mount
            read_file(f)
        time.sleep(1)  # let the daemon publish the blob complete
        reg = artfs.Registry(self.server.url, cache_dir=cache)
        fs = ArtfsFileSystem(registry=self.server.url, cache_dir=str(cache))
        fsspec.register_implementation("artfs", ArtfsFileSystem, clobber=True)
        version = reg.version("bench/a:v0")
        url = "bench/a:v0/big.bin"

        def via_mount() -> float:
            with open(mfile, "rb", buffering=0) as f:
                return timed(lambda: read_file(f))

        def via_api() -> float:
            with version.open("big.bin") as f:
                return timed(lambda: read_file(f))

        def via_fsspec() -> float:
            with fs.open(url, "rb") as f:
                return timed(lambda: read_file(f))

        for label, fn in (("Version.open", via_api), ("fsspec open", via_fsspec)):
            api, mount = best_of(5, fn, via_mount)
            self.row(f"hot sequential 1 MiB reads, {label}", api, mount, self.size)

        def dropped(fn: Callable[[], float]) -> Callable[[], float]:
            return lambda: (drop_caches(), fn())[1]

        for label, fn in (("Version.open", via_api), ("fsspec open", via_fsspec)):
            api, mount = best_of(3, dropped(fn), dropped(via_mount))
            self.row(
                f"warm sequential 1 MiB reads (page cache dropped), {label}", api, mount, self.size
            )

        rng = random.Random(5)
        offsets = [rng.randrange(0, self.size - RANDOM_READ) for _ in range(RANDOM_COUNT)]

        def random_mount() -> float:
            fd = os.open(mfile, os.O_RDONLY)
            try:

                def go() -> None:
                    for o in offsets:  # (a loop, not a list: every side frees each result)
                        os.pread(fd, RANDOM_READ, o)

                return timed(go)
            finally:
                os.close(fd)

        def random_api() -> float:
            with version.open("big.bin") as f:

                def go() -> None:
                    for o in offsets:
                        f.seek(o)
                        f.read(RANDOM_READ)

                return timed(go)

        def random_cat() -> float:
            def go() -> None:
                for o in offsets:
                    fs.cat_file(url, o, o + RANDOM_READ)

            return timed(go)

        nbytes = RANDOM_READ * RANDOM_COUNT
        for label, fn in (("Version.open seek+read", random_api), ("fs.cat_file", random_cat)):
            api, mount = best_of(5, fn, random_mount)
            self.row(f"hot random 64 KiB ranged reads, {label}", api, mount, nbytes)

        # cold: bench/b, never read; each side on its own empty cache
        reg.close()
        fs.registry.close()
        cold_reg = artfs.Registry(self.server.url, cache_dir=self.work / "cache-api")
        drop_caches()
        with cold_reg.version("bench/b:v0").open("big.bin") as f:
            api = timed(lambda: read_file(f))
        cold_reg.close()
        drop_caches()
        with open(mnt / "bench" / "b" / "v0" / "big.bin", "rb", buffering=0) as f:
            mount = timed(lambda: read_file(f))
        self.row(
            "cold sequential 1 MiB reads (fetch + verify), Version.open", api, mount, self.size
        )
        run_cli("umount", str(mnt))


def main() -> None:
    args = bench_args(__doc__, 0)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    work = Path(tempfile.mkdtemp(prefix="artfs-bench-py-", dir=args.workdir or "/var/tmp"))
    size_mib = args.size_mib if args.size_mib != 1024 else 256  # (bench_args' default is 1 GiB)
    bench = PythonBench(work, size_mib << 20)
    run_cleanly(bench.run, work, [work / "mnt"], bench.server)
    print(
        f"\nartfs Python API bench, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"{size_mib} MiB file\n"
    )
    print(render_table(bench.rows))


if __name__ == "__main__":
    main()
