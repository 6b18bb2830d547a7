"""A bounded soak of the scale-out configuration under faults (issue 10; not run in CI).

    .venv/bin/python scripts/soak.py [--minutes 10] [--mounts 8] [--writers 4]
                                     [--restart-every 60] [--workdir DIR]

Starts its own PostgreSQL and SeaweedFS (``tests/faultservices.py``), one ``artfs serve`` on
them and ``--mounts`` mounts of it. For ``--minutes``:

- one reader per mount reads random files of acknowledged versions through its mount and
  compares every byte (sha256) with what the writer put;
- ``--writers`` writers ``artfs put`` new versions of random files (each its own artifact)
  and record a version as acknowledged only when ``put`` said so;
- the server is killed (SIGKILL and SIGTERM in turn) and started again every
  ``--restart-every`` seconds, and PostgreSQL crashes (``pg_ctl -m immediate``) once, halfway.

At the end every acknowledged version is downloaded with ``artfs get`` and compared. The
figures: reads correct / reads failed cleanly / WRONG bytes, commits acknowledged / failed
cleanly / LOST, failures that were not one clean line. Exit status 1 if anything was wrong
or lost. Results go to docs/performance.md by hand.
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
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e import Server, is_mounted, run_cli
from tests.faultservices import BUCKET, PrivateServices


@dataclass
class Acked:
    """Acknowledged versions: (artifact, number) -> {file name: sha256}."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    versions: dict[tuple[str, int], dict[str, str]] = field(default_factory=dict)

    def add(self, artifact: str, number: int, files: dict[str, str]) -> None:
        with self.lock:
            if (artifact, number) in self.versions:
                raise AssertionError(f"{artifact} v{number} acknowledged twice")
            self.versions[(artifact, number)] = files

    def pick(self, rng: random.Random) -> tuple[str, int, str, str] | None:
        with self.lock:
            if not self.versions:
                return None
            (artifact, number), files = rng.choice(list(self.versions.items()))
        name, sha = rng.choice(sorted(files.items()))
        return artifact, number, name, sha


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)

    def __call__(self, what: str, sample: str = "") -> None:
        with self.lock:
            self.counts[what] += 1
            if sample and what not in self.samples:
                self.samples[what] = sample[:500]


def sha_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def clean_failure(proc: subprocess.CompletedProcess[str]) -> bool:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return bool(lines) and "Traceback" not in proc.stderr


def writer(n: int, url: str, work: Path, acked: Acked, tally: Tally, stop: threading.Event):
    rng = random.Random(1000 + n)
    artifact = f"w{n}"
    i = 0
    while not stop.is_set():
        src = work / f"writer{n}" / f"put{i}"
        files: dict[str, str] = {}
        for k in range(rng.randint(1, 3)):
            data = rng.randbytes(rng.choice([4 << 10, 256 << 10, 3 << 20]))
            (src / f"f{k}.bin").parent.mkdir(parents=True, exist_ok=True)
            (src / f"f{k}.bin").write_bytes(data)
            files[f"f{k}.bin"] = hashlib.sha256(data).hexdigest()
        proc = run_cli(
            "put", str(src), f"soak/{artifact}", "--registry", url, "--timeout", "10",
            check=False, timeout=300,
        )  # fmt: skip
        if proc.returncode == 0:
            number = int(proc.stdout.strip().rsplit(":v", 1)[1])
            acked.add(artifact, number, files)
            tally("commit acknowledged")
        elif clean_failure(proc):
            tally("commit failed cleanly", proc.stderr)
        else:
            tally("commit failure NOT one clean line", proc.stderr)
        shutil.rmtree(src, ignore_errors=True)
        i += 1


def reader(n: int, mnt: Path, acked: Acked, tally: Tally, stop: threading.Event) -> None:
    rng = random.Random(n)
    while not stop.is_set():
        picked = acked.pick(rng)
        if picked is None:
            time.sleep(0.2)
            continue
        artifact, number, name, sha = picked
        path = mnt / "soak" / artifact / f"v{number}" / name
        try:
            got = sha_of(path)
        except FileNotFoundError:
            tally("read: not listed yet (ENOENT)")
            continue
        except OSError as e:
            tally(f"read failed cleanly ({e.strerror})", str(e))
            continue
        tally("read correct" if got == sha else "read WRONG BYTES", str(path))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--mounts", type=int, default=8)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--restart-every", type=float, default=60)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="artfs-soak-", dir=args.workdir))
    svc = PrivateServices.fresh()
    acked, tally = Acked(), Tally()
    stop = threading.Event()
    mounts = [work / f"mnt{i}" for i in range(args.mounts)]
    threads: list[threading.Thread] = []
    server: Server | None = None
    events: list[str] = []
    t_start = time.monotonic()
    try:
        svc.start()
        # the server and the CLI reach SeaweedFS with the credentials services.sh configured
        os.environ.update({k: v for k, v in svc.env.items() if k.startswith("AWS_")})
        (work / "registry").mkdir()
        server = Server(
            work / "registry",
            extra_args=(
                "--db", svc.dsn, "--blobs", f"s3://{BUCKET}/soak",
                "--s3-endpoint", svc.s3_endpoint,
            ),
        )  # fmt: skip
        server.start()
        for i, mnt in enumerate(mounts):
            mnt.mkdir()
            run_cli(
                "mount", "--registry", server.url, str(mnt), "--cache-dir", str(work / f"c{i}"),
                "--state-dir", str(work / f"s{i}"), "--timeout", "10",
            )  # fmt: skip
        for n in range(args.writers):
            threads.append(
                threading.Thread(
                    target=writer, args=(n, server.url, work, acked, tally, stop), daemon=True
                )
            )
        for n, mnt in enumerate(mounts):
            threads.append(
                threading.Thread(target=reader, args=(n, mnt, acked, tally, stop), daemon=True)
            )
        for t in threads:
            t.start()

        end = t_start + args.minutes * 60
        pg_crash_at = t_start + args.minutes * 30
        next_restart = time.monotonic() + args.restart_every
        kill = True
        while (now := time.monotonic()) < end:
            if pg_crash_at and now >= pg_crash_at:
                svc.crash_postgres()
                time.sleep(3)
                svc.start()
                events.append(f"{now - t_start:.0f}s PostgreSQL crashed, restarted after 3 s")
                pg_crash_at = 0
            if now >= next_restart:
                assert server.proc is not None
                if kill:
                    server.proc.kill()
                    server.proc.wait()
                else:
                    server.stop()
                server.start()
                events.append(f"{now - t_start:.0f}s server {'killed' if kill else 'stopped'}")
                kill = not kill
                next_restart = time.monotonic() + args.restart_every
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(600)

        # Every acknowledged version, downloaded and compared.
        for (artifact, number), files in sorted(acked.versions.items()):
            dest = work / "check" / f"{artifact}-{number}"
            proc = run_cli(
                "get", f"soak/{artifact}:v{number}", str(dest), "--registry", server.url,
                check=False, timeout=300,
            )  # fmt: skip
            if proc.returncode != 0:
                tally("commit LOST (get failed)", proc.stderr)
                continue
            ok = all(sha_of(dest / name) == sha for name, sha in files.items())
            tally("commit verified" if ok else "commit LOST (wrong bytes)", str(dest))
            shutil.rmtree(dest, ignore_errors=True)
    finally:
        stop.set()
        for mnt in mounts:
            if is_mounted(mnt):
                run_cli("umount", str(mnt), check=False)
        if server is not None:
            server.stop()
        svc.stop()
        shutil.rmtree(svc.state.parent, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    minutes = (time.monotonic() - t_start) / 60
    print(
        f"\nsoak: {minutes:.1f} min, {args.mounts} mounts, {args.writers} writers, "
        f"server restarted every {args.restart_every:.0f} s, PostgreSQL crashed once\n"
    )
    print("| outcome | count |\n|---|---|")
    for what, count in sorted(tally.counts.items()):
        print(f"| {what} | {count} |")
    for e in events:
        print(f"  {e}", file=sys.stderr)
    for what, sample in tally.samples.items():
        print(f"  e.g. {what}: {sample.strip()}", file=sys.stderr)
    bad = sum(n for what, n in tally.counts.items() if "WRONG" in what or "LOST" in what)
    bad += tally.counts["commit failure NOT one clean line"]
    return 1 if bad else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
