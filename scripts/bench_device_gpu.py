"""Load a safetensors checkpoint onto the GPU from an artfs mount vs from local disk.

    python3 scripts/bench_device_gpu.py --artfs .device-bundle/bin/artfs [--size-mib 2048]
        [--modes on,off] [--device cuda:0] [--workdir DIR] [--rows-only]

Runs with the machine's own python3 (torch + safetensors), as a training script would; only
the artfs commands (serve, put, mount, umount) go through ``--artfs``, a launcher that sets
the bundle's environment for them alone (scripts/device_bundle.sh). Makes a checkpoint of
four float16 tensors totalling --size-mib, publishes it to a registry on loopback, and times
``safetensors.torch.load_file(path, device=...)`` up to ``torch.cuda.synchronize()``:

- cold: artfs cache empty, page cache dropped (vs the local file, page cache dropped)
- warm: blob in the artfs disk cache, page cache dropped, a new mount (vs the local file, cold)
- hot: page cache kept (vs the local file, hot)

for each mode in --modes (on: passthrough as the mount decides; off: ARTFS_PASSTHROUGH=0);
warm and hot best of two; the baselines best of those before and after the loads through
artfs. On a CPU (``--device cpu``, for a check
without a GPU) the loaded tensors are copied once, since they would only map the file.
Prints the rows in scripts/bench.py's table format; where torch, safetensors or the device
is missing it prints one row saying so and exits 0. Needs root to drop the page cache.
No imports beyond the standard library, torch and safetensors.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, float, str]
ARTIFACT = "bench/ckpt"
NAME = "model.safetensors"


def render(rows: list[Row], rows_only: bool) -> str:
    """scripts/bench.py's table (not imported: that needs httpx, which this python may lack)."""
    lines = (
        []
        if rows_only
        else [
            "| workload | artfs | baseline | ratio (higher is better) | target |",
            "|---|---|---|---|---|",
        ]
    )
    for name, a, b, r, t in rows:
        lines.append(f"| {name} | {a} | {b} | {f'{r:.2f}' if r else '-'} | {t} |")
    return "\n".join(lines)


def drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        print("warning: cannot drop the page cache; cold/warm rows are optimistic", file=sys.stderr)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all held at once while picked: two binds in a row may get
    the same port from the kernel)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(16 << 20):
            h.update(piece)
    return h.hexdigest()


def write_safetensors(tensors: dict[str, Any], path: Path) -> None:
    """The safetensors format by hand (8-byte header length, JSON header, raw bytes), for a
    python3 whose safetensors.torch.save_file fails for want of numpy."""
    import ctypes
    import json
    import struct

    header: dict[str, Any] = {}
    offset = 0
    for name, t in tensors.items():
        size = t.numel() * t.element_size()
        dtype = {"torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float32": "F32"}
        header[name] = {
            "dtype": dtype[str(t.dtype)],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for t in tensors.values():
            c = t.contiguous()
            f.write(ctypes.string_at(c.data_ptr(), c.numel() * c.element_size()))


def save(save_file: Any, tensors: dict[str, Any], path: Path) -> None:
    try:
        save_file(tensors, str(path))
    except ImportError:  # safetensors >= 0.6 saves through numpy
        write_safetensors(tensors, path)


def is_mounted(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


class Gpu:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.artfs = str(Path(args.artfs).absolute())
        self.size = args.size_mib << 20
        self.server: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.mnt = work / "mnt"
        self.rows: list[Row] = []

    # --- artfs, through the bundle's launcher --------------------------------------------------
    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> None:
        done = subprocess.run(
            [self.artfs, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
        if done.returncode != 0:
            raise RuntimeError(f"artfs {' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    def serve(self) -> None:
        port, blob_port = free_ports(2)
        data = self.work / "registry"
        log = open(self.work / "server.log", "ab")  # noqa: SIM115
        self.server = subprocess.Popen(
            [
                self.artfs,
                "serve",
                "--data",
                str(data),
                "--port",
                str(port),
                "--blob-port",
                str(blob_port),
            ],
            stdout=log,
            stderr=log,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError((self.work / "server.log").read_text())
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/v1", timeout=1) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("artfs serve did not become ready")

    @contextlib.contextmanager
    def mounted(self, cache: Path, mode: str) -> Iterator[Path]:
        self.mnt.mkdir(exist_ok=True)
        self.cli(
            "mount",
            "--registry",
            self.url,
            str(self.mnt),
            "--cache-dir",
            str(cache),
            "--state-dir",
            str(self.work / "state"),
            env={"ARTFS_PASSTHROUGH": "0"} if mode == "off" else None,
        )
        try:
            yield self.mnt / ARTIFACT / "v0" / NAME
        finally:
            self.umount()

    def umount(self) -> None:
        if not is_mounted(self.mnt):
            return
        try:
            self.cli("umount", str(self.mnt), timeout=60)
        finally:
            if is_mounted(self.mnt):
                bundled = Path(self.artfs).parent / "fusermount3"
                tool = str(bundled) if bundled.exists() else "fusermount3"
                subprocess.run([tool, "-u", "-z", str(self.mnt)], check=False)

    def close(self) -> None:
        self.umount()
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()

    # --- torch -----------------------------------------------------------------------------------
    def run(self, torch: Any, load_file: Callable[..., dict[str, Any]], save_file: Any) -> None:
        device = self.args.device
        cuda = device.startswith("cuda")

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize()

        def load(path: Path) -> float:
            start = time.perf_counter()
            tensors = load_file(str(path), device=device)
            if cuda:
                sync()
            else:  # (test runs without a GPU: on the CPU the tensors map the file, lazily)
                tensors = {k: t.clone() for k, t in tensors.items()}
            took = time.perf_counter() - start
            got = sum(t.numel() * t.element_size() for t in tensors.values())
            del tensors
            if cuda:
                torch.cuda.empty_cache()
            if got != self.size:
                raise RuntimeError(f"loaded {got} bytes from {path}, not {self.size}")
            return took

        # the checkpoint: four float16 tensors of --size-mib / 4 each
        src = self.work / "src"
        src.mkdir()
        local = src / NAME
        rows, cols = self.args.size_mib * 32, 4096  # 2 bytes x 4096 x 32 x 4 tensors = 1 MiB
        make = torch.Generator(device=device if cuda else "cpu").manual_seed(0)
        tensors = {
            f"layer{i}.weight": torch.randn(
                rows, cols, dtype=torch.float16, device=device if cuda else "cpu", generator=make
            ).cpu()
            for i in range(4)
        }
        save(save_file, tensors, local)
        del tensors
        sha = sha256_of(local)
        self.serve()
        self.cli("put", str(src), ARTIFACT, "--registry", self.url, timeout=600)

        # warm up the device and the library on a small file, off the clock
        small = self.work / "small.safetensors"
        save(save_file, {"x": torch.zeros(1024, dtype=torch.float16)}, small)
        load_file(str(small), device=device)
        sync()

        gb = self.size / 1e9
        what = f"safetensors {self.args.size_mib} MiB -> {device}"

        def cold(path: Path) -> float:
            drop_caches()
            return load(path)

        # the baselines, best of those before and after the loads through artfs (the first
        # large loads pay first-touch costs; noise on a shared host hits both sides alike)
        local_cold = [cold(local), cold(local)]
        local_hot = [load(local), load(local)]
        through: list[tuple[str, float, float, float]] = []
        for mode in self.args.modes:
            tag = "" if mode == "on" else " [passthrough off]"
            cache = self.work / f"cache-{mode}"
            drop_caches()
            with self.mounted(cache, mode) as path:
                t_cold = load(path)  # (once: then the blob is in the cache)
                deadline = time.monotonic() + 120  # the daemon finishes and verifies the blob
                while not any(p.is_file() for p in cache.rglob(sha)):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the blob did not complete in the artfs cache")
                    time.sleep(0.2)
            with self.mounted(cache, mode) as path:  # a new mount, then as above
                t_warm = min(cold(path), cold(path))
                t_hot = min(load(path), load(path))
            through.append((tag, t_cold, t_warm, t_hot))
        local_cold.append(cold(local))
        local_hot += [load(local), load(local)]
        t_local_cold, t_local_hot = min(local_cold), min(local_hot)
        for tag, t_cold, t_warm, t_hot in through:
            self.row(
                f"{what}, cold{tag}",
                f"{gb / t_cold:.2f} GB/s",
                f"{gb / t_local_cold:.2f} GB/s (local disk, cold)",
                t_local_cold / t_cold,
                "report (network: loopback server)",
            )
            self.row(
                f"{what}, warm (artfs disk cache){tag}",
                f"{gb / t_warm:.2f} GB/s",
                f"{gb / t_local_cold:.2f} GB/s (local disk, cold)",
                t_local_cold / t_warm,
                ">= 0.9",
            )
            self.row(
                f"{what}, hot (page cache){tag}",
                f"{gb / t_hot:.2f} GB/s",
                f"{gb / t_local_hot:.2f} GB/s (local disk, hot)",
                t_local_hot / t_hot,
                ">= 0.9",
            )

    def row(self, name: str, artfs: str, base: str, ratio: float, target: str) -> None:
        self.rows.append((name, artfs, base, ratio, target))
        print(f"  {name}: artfs {artfs}, baseline {base}, ratio {ratio:.2f}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--artfs", required=True, help="the artfs launcher (.device-bundle/bin/artfs)")
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--modes", default="on,off", help="passthrough modes: on, off or on,off")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--workdir", help="where to put data (default: a temp dir on /var/tmp)")
    ap.add_argument("--rows-only", action="store_true", help="no table header")
    args = ap.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    # `timeout` sends SIGTERM: unwind, so that mounts, server and data are cleaned up
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    what = f"safetensors {args.size_mib} MiB -> {args.device}"

    def skipped(why: str) -> int:
        print(f"bench_device_gpu: skipped: {why}", file=sys.stderr)
        print(render([(what, f"skipped: {why}", "-", 0.0, "-")], args.rows_only))
        return 0

    try:
        import torch  # type: ignore[import-not-found,unused-ignore]
        from safetensors.torch import (  # type: ignore[import-not-found,unused-ignore]
            load_file,
            save_file,
        )
    except ImportError as e:
        return skipped(f"no torch/safetensors here ({e})")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        return skipped("torch sees no CUDA device")
    work = Path(tempfile.mkdtemp(prefix="artfs-gpu-", dir=args.workdir or "/var/tmp"))
    bench = Gpu(args, work)
    try:
        bench.run(torch, load_file, save_file)
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    print(render(bench.rows, args.rows_only))
    return 0


if __name__ == "__main__":
    sys.exit(main())
