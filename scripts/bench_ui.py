#!/usr/bin/env python3
"""The registry web page (``/ui/``) at the sizes issue 13 names: 10,000 versions of one
artifact and 100,000 files in one version.

Commits straight into a fresh registry: ``bench/steps`` with ``--versions`` versions
(a few files each, metadata, an alias every 100), ``bench/big`` with two versions of
``--files`` files in 100 directories (v1 changes every 10th file and adds 1,000), and
``bench/model``, whose versions are each made from 3 ``steps`` versions (a lineage graph
of a few hundred nodes). Starts ``python -m artfs.server`` on it and times each page:
the first request (cold: the first read of a manifest since the server started; the
comparison comes before any page of those versions) and the median of
``--rounds`` more, with the size of the page. Prints one row per page.

    .venv/bin/python scripts/bench_ui.py [--versions 10000] [--files 100000]
    .venv/bin/python scripts/bench_ui.py --db postgresql://... --blobs s3://b/p \\
        --s3-endpoint http://127.0.0.1:8333
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchstore import add_store_options, open_registry, serving

from artfs.manifest import Manifest
from artfs.registry import Registry

BLOBS = 256  # distinct blobs the files share
MODELS = 100


def build(reg: Registry, versions: int, files: int, tmp: Path) -> float:
    shas = []
    for i in range(BLOBS):
        data = f"blob {i}\n".encode() * (i + 1)
        (tmp / "blob").write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        reg.put_file(sha, tmp / "blob")
        shas.append((sha, len(data)))
    reg.create_project("bench", exist_ok=True)
    for name, kind in (("steps", "dataset"), ("big", "dataset"), ("model", "model")):
        reg.create_artifact("bench", name, type=kind, exist_ok=True)
    t0 = time.perf_counter()
    for v in range(versions):
        entries = [(f"step-{v}.txt", *reversed(shas[v % BLOBS]))]
        entries += [(f"common/{k}.bin", *reversed(shas[k])) for k in range(3)]
        aliases = [f"ckpt-{v // 100}"] if v % 100 == 0 else []
        reg.commit(
            "bench",
            "steps",
            Manifest.build([(p, s, h) for p, s, h in entries]),
            metadata={"step": v, "loss": 1.0 / (v + 1), "note": "x" * 40},
            aliases=aliases,
            creator="bench",
        )
    rows = [(f"d{i % 100:02d}/f{i:06d}.bin", *reversed(shas[i % BLOBS])) for i in range(files)]
    reg.commit("bench", "big", Manifest.build([(p, s, h) for p, s, h in rows], limits=False))
    changed = [
        (p, *reversed(shas[(i + 1) % BLOBS])) if i % 10 == 0 else (p, s, h)
        for i, (p, s, h) in enumerate(rows)
    ]
    changed += [(f"new/f{i:04d}.bin", *reversed(shas[0])) for i in range(1000)]
    reg.commit("bench", "big", Manifest.build([(p, s, h) for p, s, h in changed], limits=False))
    for m in range(MODELS):
        ins = [f"bench/steps:v{(m * 7 + k) % versions}" for k in range(3)]
        reg.commit(
            "bench",
            "model",
            Manifest.build([(f"w{m}.bin", *reversed(shas[m % BLOBS]))]),
            inputs=ins,
        )
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--versions", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument(
        "--restarts", type=int, default=5, help="more cold compares, each after a start"
    )
    add_store_options(ap)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        reg = open_registry(args, tmp / "data")
        try:
            built = build(reg, args.versions, args.files, tmp)
        finally:
            reg.close()
        print(f"committed {args.versions} + {MODELS} + 2 versions in {built:.1f} s")
        with serving(args, tmp / "data") as url:
            last = args.versions - 1
            pages = [
                ("projects", "/ui/"),
                ("artifacts", "/ui/p/bench"),
                ("versions, page 1", "/ui/p/bench/steps"),
                ("versions, last page", f"/ui/p/bench/steps?page={-(-args.versions // 50)}"),
                ("version (few files)", f"/ui/p/bench/steps/v{last}"),
                # compared first: neither manifest was read since the server started
                ("compare 100k vs 101k files", "/ui/p/bench/big/compare?a=0&b=1"),
                ("compare, added, page 2", "/ui/p/bench/big/compare?a=0&b=1&show=added&page=2"),
                ("version, 100k files, top", "/ui/p/bench/big/v0"),
                ("version, 100k files, a dir", "/ui/p/bench/big/v0?dir=d42"),
                ("version, 100k files, page 2", "/ui/p/bench/big/v0?dir=d42&page=2"),
                ("lineage (3 hops)", f"/ui/p/bench/steps/v{last}/lineage"),
                ("lineage (all hops)", "/ui/p/bench/model/v0/lineage?up=all&down=all"),
            ]
            print(f"{'page':32} {'cold ms':>8} {'median ms':>10} {'KiB':>7}")
            with httpx.Client(timeout=120) as http:
                for name, path in pages:
                    t0 = time.perf_counter()
                    r = http.get(url + path)
                    cold = time.perf_counter() - t0
                    assert r.status_code == 200, (path, r.status_code, r.text[:300])
                    times = []
                    for _ in range(args.rounds):
                        t0 = time.perf_counter()
                        r = http.get(url + path)
                        times.append(time.perf_counter() - t0)
                    size = len(r.content)
                    assert size < 1 << 20, (path, size)
                    med = statistics.median(times)
                    print(f"{name:32} {cold * 1000:8.1f} {med * 1000:10.1f} {size / 1024:7.1f}")
        firsts = []  # the first comparison after each of --restarts fresh server starts
        for _ in range(args.restarts):
            with serving(args, tmp / "data") as url, httpx.Client(timeout=120) as http:
                http.get(url + "/ui/")  # (the connection and the first page's own costs)
                t0 = time.perf_counter()
                r = http.get(url + "/ui/p/bench/big/compare?a=0&b=1")
                firsts.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text[:300]
        if firsts:
            shown = ", ".join(f"{t * 1000:.1f}" for t in firsts)
            print(f"first compare after each of {len(firsts)} restarts, ms: {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
