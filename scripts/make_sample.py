"""Write a small, deterministic sample project to a directory (used by scripts/demo.sh and the bench).

Layout: DEST/dataset-v0, DEST/dataset-v1 (two versions of a dataset that share
most files) and DEST/model (a checkpoint with a 48 MiB weights file).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make(dest: Path) -> None:
    rng = random.Random(1234)
    for version, rows in (("dataset-v0", 1000), ("dataset-v1", 1200)):
        root = dest / version
        lines = ["id,label,text"] + [f"{i},{i % 10},sample text number {i}" for i in range(rows)]
        write(root / "train.csv", ("\n".join(lines) + "\n").encode())
        write(root / "test.csv", b"id,label,text\n1,1,held out\n")
        write(root / "README.md", f"# Sample dataset ({version})\n\nRows: {rows}\n".encode())
        for i in range(20):
            write(root / "images" / f"img_{i:03d}.bin", rng.randbytes(4096 + 512 * i))
        write(root / "notes" / "données é.txt", b"unicode names work\n")
        write(root / "empty.txt", b"")
    model = dest / "model"
    write(model / "config.json", json.dumps({"layers": 12, "hidden": 768}, indent=2).encode())
    write(model / "weights.bin", random.Random(99).randbytes(48 << 20))


if __name__ == "__main__":
    make(Path(sys.argv[1]))
