"""``artfs info`` on a very large version: what listing its external refs costs.

    .venv/bin/python scripts/bench_info.py [FILES ...]     (default: 1000 100000 1000000)

Starts a real ``artfs serve``, commits one version of FILES small files sharing one blob
(``bench_walk.publish``), then times two ``artfs info`` runs (a new process each: the CLI's
start is most of a small version's time) and, for comparison, one ``get_manifest``: what
``info`` would cost if it listed refs from the manifest itself (docs/decisions.md, "External
references in Python, info and the web page"). The machine is shared: compare ratios.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from artfs.client import open_client
from scripts.bench_walk import BLOB, publish
from tests.e2e import Server


def one(files: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "registry")
        server.start()
        try:
            blob = Path(tmp) / "blob"
            blob.write_bytes(BLOB)
            trio.run(publish, server.url, files, 1000, blob)
            cli = [sys.executable, "-m", "artfs.cli", "info", "--registry", server.url]
            for _ in range(2):
                t0 = time.perf_counter()
                subprocess.run([*cli, "bench/walk:v0"], check=True, capture_output=True)
                print(f"{files} files: artfs info {time.perf_counter() - t0:.2f} s")

            async def manifest() -> None:
                client = open_client(server.url, timeout=600)
                t0 = time.perf_counter()
                await client.get_manifest("bench", "walk", 0)
                print(f"{files} files: get_manifest {time.perf_counter() - t0:.2f} s")
                await client.aclose()

            trio.run(manifest)
        finally:
            server.stop()


def main() -> int:
    for files in map(int, sys.argv[1:] or ["1000", "100000", "1000000"]):
        one(files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
