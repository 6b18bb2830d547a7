"""The mount's memory on a very large version: a walk of a million files.

    .venv/bin/python scripts/bench_walk.py [--files 1000000] [--per-dir 1000] [--workdir DIR]

Starts a real ``artfs serve`` and commits one version of ``--files`` small files (they
share one blob: the manifest is what costs memory, not the bytes), mounts it with the CLI
and walks it with ``os.walk`` + ``stat`` of every file, sampling the daemon's resident
memory (``/proc/PID/status``) while it runs. Then it asks the kernel to drop its dentries and
inodes (``drop_caches`` 2: the kernel sends FORGET for every node of the version) and
measures again: the daemon frees a version's tree once the kernel has forgotten it
(docs/design.md, "Inodes").

Rows: the walk's time against the same walk of a tree of empty files on local disk (made in
the same run, page cache dropped), the daemon's peak memory against the issue's bound
(300 MB for 1,000,000 files), and its memory after the kernel forgot the tree. Root is needed
to drop caches. The machine is shared and noisy: compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from artfs.client.http import HttpRegistryClient
from artfs.manifest import Manifest
from artfs.mountinfo import read_record
from scripts.bench import drop_caches, walk_stat
from tests.e2e import Server, is_mounted, run_cli

BLOB = b"artfs walk benchmark\n"


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def path_of(i: int, per_dir: int) -> str:
    return f"d{i // per_dir:05d}/f{i:07d}.bin"


async def publish(url: str, files: int, per_dir: int, blob: Path) -> None:
    import hashlib

    sha = hashlib.sha256(BLOB).hexdigest()
    client = HttpRegistryClient(url, timeout=600)
    try:
        await client.create_project("bench", exist_ok=True)
        await client.create_artifact("bench", "walk", type="dataset", exist_ok=True)
        await client.upload_blob(sha, blob)
        manifest = Manifest.build((path_of(i, per_dir), len(BLOB), sha) for i in range(files))
        await client.commit("bench", "walk", manifest)
    finally:
        await client.aclose()


class Sampler:
    """The highest VmRSS of ``pid`` seen every 0.2 s while it runs (VmHWM would include the
    daemon's whole life, the commit's manifest parse included)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, rss_mib(self.pid))

    def __enter__(self) -> Sampler:
        self.peak = rss_mib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib(self.pid))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--per-dir", type=int, default=1000)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="artfs-walk-", dir=args.workdir))
    server = Server(work / "registry")
    mnt = work / "mnt"
    rows: list[tuple[str, str, str, str]] = []
    try:
        blob = work / "blob.bin"
        blob.write_bytes(BLOB)
        server.start()
        t0 = time.perf_counter()
        trio.run(publish, server.url, args.files, args.per_dir, blob)
        print(f"committed {args.files} files in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        local = work / "local"
        for i in range(args.files):
            p = local / path_of(i, args.per_dir)
            if i % args.per_dir == 0:
                p.parent.mkdir(parents=True)
            p.touch()
        drop_caches()
        t0 = time.perf_counter()
        n_local = walk_stat(local)
        t_local = time.perf_counter() - t0
        shutil.rmtree(local)

        mnt.mkdir()
        run_cli(
            "mount", "--registry", server.url, str(mnt),
            "--cache-dir", str(work / "cache"), "--state-dir", str(work / "state"),
        )  # fmt: skip
        record = read_record(mnt)
        if record is None:
            raise RuntimeError("the mount left no record")
        pid = int(record["pid"])
        idle = rss_mib(pid)
        drop_caches()
        with Sampler(pid) as s:
            t0 = time.perf_counter()
            n = walk_stat(mnt / "bench" / "walk" / "v0")
            t_walk = time.perf_counter() - t0
        if n != args.files or n_local != args.files:
            raise AssertionError(f"walked {n} files in the mount, {n_local} locally")
        after_walk = rss_mib(pid)
        drop_caches(2)  # the kernel forgets dentries and inodes: FORGET reaches the daemon
        time.sleep(2)
        after_forget = rss_mib(pid)

        rows.append(
            (
                f"find+stat {n} files",
                f"{t_walk:.1f} s ({n / t_walk:.0f} files/s)",
                f"{t_local:.1f} s (local, cold)",
                f"ratio {t_local / t_walk:.2f}",
            )
        )
        bound = 300  # MB, the bound for 1,000,000 files
        rows.append(
            (
                "daemon memory, peak during the walk",
                f"{s.peak:.0f} MiB (idle {idle:.0f} MiB)",
                f"bound {bound:.0f} MB",
                "ok" if s.peak * 1.048576 < bound else "OVER",
            )
        )
        rows.append(
            (
                "daemon memory, after the walk / after the kernel forgot",
                f"{after_walk:.0f} / {after_forget:.0f} MiB",
                f"idle {idle:.0f} MiB",
                f"kept {after_forget - idle:+.0f} MiB",
            )
        )
    finally:
        if is_mounted(mnt):
            run_cli("umount", str(mnt), check=False)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print("\n| measure | artfs | baseline | result |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
