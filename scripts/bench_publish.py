"""artfs publish benchmark: ratios against baselines measured in the same run (issue 3).

    .venv/bin/python scripts/bench_publish.py [--size-mib 1024] [--files 16] [--workdir DIR]

Starts a real ``artfs serve`` and measures, each against a fresh registry (so no
run profits from blobs an earlier one uploaded):

- ``cp -r`` of a tree into a draft of a mount + ``artfs commit``, vs a plain HTTP
  upload of the same bytes (``curl -T``, one file after the other on one connection,
  to the fastest upload endpoint the server offers: the data server's
  ``PUT /blobs/{sha}`` advertised as ``upload.put_url`` in ``GET /v1``, else
  ``PUT /v1/blobs/{sha}``; also with 4 transfers at once, like the commit), and vs
  ``artfs put`` of the same tree;
- a re-commit of the unchanged tree through ``artfs draft p/a:v0`` + commit: bytes
  uploaded (must be 0) and time;
- write throughput of one large file into a draft vs writing it to local disk
  (the same filesystem as the state directory), both ending with fsync.

The machine is shared and noisy: compare ratios, not absolute numbers.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.bench import (
    CHUNK,
    bench_args,
    drop_caches,
    render_table,
    run_cleanly,
    timed,
    write_random,
)
from tests.e2e import Server, is_mounted, run_cli


def make_tree(root: Path, size: int, files: int) -> dict[Path, str]:
    """``files`` random files totalling ``size`` bytes; their sha256 by path."""
    digests: dict[Path, str] = {}
    rng = random.Random(3)
    each = size // files
    for i in range(files):
        path = root / f"shard-{i // 8:02d}" / f"part-{i:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        digests[path] = write_random(path, each, rng)
    return digests


def write_file(path: Path, size: int) -> None:
    """Write ``size`` bytes in 1 MiB writes, then fsync (what a checkpoint writer does)."""
    block = os.urandom(CHUNK)
    with open(path, "wb", buffering=0) as f:
        left = size
        while left:
            left -= f.write(block[: min(left, CHUNK)])
        os.fsync(f.fileno())


class PublishBench:
    def __init__(self, work: Path, size: int, nfiles: int) -> None:
        self.work = work
        self.size = size
        self.nfiles = nfiles
        self.rows: list[tuple[str, str, str, float, str]] = []
        self.server = Server(work / "registry")
        self.mounts: list[Path] = []

    def row(self, name: str, artfs: str, base: str, ratio: float, target: str) -> None:
        self.rows.append((name, artfs, base, ratio, target))
        print(
            f"  {name}: artfs {artfs}, baseline {base}, ratio {ratio:.2f} (target {target})",
            file=sys.stderr,
        )

    def fresh_registry(self) -> None:
        self.server.stop()
        shutil.rmtree(self.server.data, ignore_errors=True)
        self.server.start()

    def mount(self, name: str) -> Path:
        mnt = self.work / name
        mnt.mkdir(exist_ok=True)
        run_cli(
            "mount",
            "--registry",
            self.server.url,
            str(mnt),
            "--cache-dir",
            str(self.work / f"{name}-cache"),
            "--state-dir",
            str(self.work / f"{name}-state"),
        )
        self.mounts.append(mnt)
        return mnt

    def umount(self, mnt: Path) -> None:
        if is_mounted(mnt):
            run_cli("umount", str(mnt))

    def upload_url(self) -> str:
        """The fastest upload URL template the server offers (what the bench's baseline uses)."""
        info = json.loads(urllib.request.urlopen(f"{self.server.url}/v1").read())
        upload = info.get("upload") or {}
        return str(upload.get("put_url") or f"{self.server.url}/v1/blobs/{{sha256}}")

    def curl_upload(self, digests: dict[Path, str], parallel: int = 1) -> float:
        template = self.upload_url()
        print(f"  curl baseline uploads to {template} ({parallel} at once)", file=sys.stderr)
        args = ["curl", "-sf"]
        if parallel > 1:
            args += ["--parallel", "--parallel-max", str(parallel)]
        for path, sha in digests.items():
            args += ["-o", "/dev/null", "-T", str(path), template.replace("{sha256}", sha)]
        return timed(lambda: subprocess.run(args, check=True))

    def run(self) -> None:
        tree = self.work / "tree"
        digests = make_tree(tree, self.size, self.nfiles)
        gbs = self.size / 1e9

        self.fresh_registry()
        drop_caches()
        t_curl = self.curl_upload(digests)
        # the commit uploads 4 blobs at once: so can a careful curl user
        self.fresh_registry()
        drop_caches()
        t_curl4 = self.curl_upload(digests, parallel=4)

        self.fresh_registry()
        drop_caches()
        t_put = timed(
            lambda: run_cli(
                "put", str(tree), "bench/put", "--registry", self.server.url, timeout=1800
            )
        )

        self.fresh_registry()
        mnt = self.mount("mnt")
        art = mnt / "bench" / "cp"
        os.makedirs(art / "d")
        drop_caches()
        start = time.perf_counter()
        subprocess.run(["cp", "-r", f"{tree}/.", str(art / "d")], check=True)
        t_cp = time.perf_counter() - start
        run_cli("commit", str(art / "d"), timeout=1800)
        t_cp_commit = time.perf_counter() - start
        self.row(
            f"cp -r + commit, {self.nfiles} files",
            f"{gbs / t_cp_commit:.2f} GB/s (cp {t_cp:.1f} s, commit {t_cp_commit - t_cp:.1f} s)",
            f"{gbs / t_curl:.2f} GB/s (curl PUT)",
            t_curl / t_cp_commit,
            ">= 0.7",
        )
        self.row(
            "cp -r + commit vs 4 parallel uploads",
            f"{t_cp_commit:.1f} s",
            f"{t_curl4:.1f} s, {gbs / t_curl4:.2f} GB/s (curl --parallel-max 4)",
            t_curl4 / t_cp_commit,
            "report",
        )
        self.row(
            "cp -r + commit vs artfs put",
            f"{t_cp_commit:.1f} s",
            f"{t_put:.1f} s (artfs put)",
            t_put / t_cp_commit,
            "report",
        )

        # unchanged re-commit through a draft from BASE
        received = self.server.stats()["blob_bytes_received"]
        state = str(self.work / "mnt-state")
        run_cli(
            "draft", "--registry", self.server.url, "bench/cp:v0", "again", "--state-dir", state
        )
        t_again = timed(lambda: run_cli("commit", str(art / "again"), timeout=1800))
        moved = self.server.stats()["blob_bytes_received"] - received
        self.row(
            "re-commit of the unchanged tree (draft from BASE)",
            f"{moved} bytes uploaded, {t_again:.2f} s",
            "0 bytes",
            0.0,
            "0 bytes",
        )

        # draft write throughput vs local disk
        os.mkdir(art / "w")
        local = self.work / "local-write.bin"
        drop_caches()
        t_local = timed(lambda: write_file(local, self.size))
        local.unlink()
        drop_caches()
        t_draft = timed(lambda: write_file(art / "w" / "big.bin", self.size))
        self.row(
            "write 1 file into a draft (+fsync)",
            f"{gbs / t_draft:.2f} GB/s",
            f"{gbs / t_local:.2f} GB/s (local disk)",
            t_local / t_draft,
            ">= 0.5",
        )
        self.umount(mnt)

    def table(self) -> str:
        return render_table(self.rows)


def main() -> None:
    args = bench_args(__doc__, 16)
    work = Path(tempfile.mkdtemp(prefix="artfs-bench-publish-", dir=args.workdir or "/var/tmp"))
    bench = PublishBench(work, args.size_mib << 20, args.files)
    run_cleanly(bench.run, work, bench.mounts, bench.server)
    print(
        f"\nartfs publish bench, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"{args.size_mib} MiB in {args.files} files\n"
    )
    print(bench.table())


if __name__ == "__main__":
    main()
