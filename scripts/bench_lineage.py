#!/usr/bin/env python3
"""The lineage graph: one request for the subgraph against walking it hop by hop.

Commits a layered graph straight into a fresh registry (``seed:v0`` -> ``--layers`` layers
of ``--width`` versions, each made from two of the layer below), starts
``python -m artfs.server`` on it, then times, from the seed:

- ``GET .../versions/0/lineage`` (the whole graph in one answer; median of ``--rounds``),
  with the size of its JSON;
- the same graph walked as a client without the route would: breadth-first over
  ``GET .../versions/N/used-by``, one request per version, on one keep-alive connection.

With ``--runs`` each version above the seed is logged by a run that used the two below it
(run inputs and outputs, no commit lineage): twice the nodes and hops, through the same
one request (the hop-by-hop walk, which ``used-by`` can't do through runs, is skipped).

    .venv/bin/python scripts/bench_lineage.py [--layers 10] [--width 100] [--runs]
    .venv/bin/python scripts/bench_lineage.py --db postgresql://... --blobs s3://b/p \\
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

from artfs.lineage_graph import MAX_LINEAGE_NODES
from artfs.manifest import Manifest
from artfs.registry import Registry


def build(reg: Registry, layers: int, width: int, tmp: Path, runs: bool = False) -> float:
    blob = tmp / "blob"
    blob.write_bytes(b"x")
    sha = hashlib.sha256(b"x").hexdigest()
    reg.put_file(sha, blob)
    manifests = [Manifest.build([]), Manifest.build([("f", 1, sha)])]  # alternate: no dedup
    reg.create_project("bench", exist_ok=True)
    for name in ("seed", *(f"l{k}" for k in range(1, layers + 1))):
        reg.create_artifact("bench", name, type="dataset", exist_ok=True)
    t0 = time.perf_counter()
    reg.commit("bench", "seed", manifests[0])
    for k in range(1, layers + 1):
        for j in range(width):
            below = (
                ["bench/seed:v0"]
                if k == 1
                else [f"bench/l{k - 1}:v{j}", f"bench/l{k - 1}:v{(j + 1) % width}"]
            )
            if not runs:
                reg.commit("bench", f"l{k}", manifests[j % 2], inputs=below, allow_duplicate=True)
                continue
            run = reg.create_run("bench", name=f"make-l{k}-{j}", job_type="bench")
            reg.add_run_inputs(run.id, below)
            made = reg.commit("bench", f"l{k}", manifests[j % 2], allow_duplicate=True)
            number = made.version.number
            reg.add_run_outputs(run.id, [f"bench/l{k}:v{number}"])
            reg.update_run(run.id, status="finished", exit_code=0)
    return time.perf_counter() - t0


def hop_by_hop(http: httpx.Client, url: str) -> tuple[int, int]:
    """(requests, versions) walking consumers from the seed with one request per version."""
    seen = {("seed", 0)}
    level, requests = [("seed", 0)], 0
    while level:
        nxt = []
        for artifact, number in level:
            r = http.get(f"{url}/v1/projects/bench/artifacts/{artifact}/versions/{number}/used-by")
            requests += 1
            for v in r.json()["used_by"]:
                key = (v["artifact"], int(v["number"]))
                if key not in seen:
                    seen.add(key)
                    nxt.append(key)
        level = nxt
    return requests, len(seen)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", action="store_true", help="versions made by runs (above)")
    add_store_options(ap)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        reg = open_registry(args, tmp / "data")
        try:
            built = build(reg, args.layers, args.width, tmp, args.runs)
        finally:
            reg.close()
        versions = 1 + args.layers * args.width
        runs = args.layers * args.width if args.runs else 0
        nodes, hops = versions + runs, args.layers * (2 if args.runs else 1)
        print(f"committed {versions} versions ({runs} runs) in {built:.1f} s")
        with serving(args, tmp / "data") as url, httpx.Client(timeout=120) as http:
            path = f"{url}/v1/projects/bench/artifacts/seed/versions/0/lineage"
            times, size = [], 0
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                r = http.get(path)
                times.append(time.perf_counter() - t0)
                size = len(r.content)
                assert len(r.json()["nodes"]) == min(nodes, MAX_LINEAGE_NODES)
            one = statistics.median(times)
            print(
                f"one request:  {one * 1000:7.1f} ms  ({size / 1024:.0f} KiB JSON, "
                f"{min(nodes, MAX_LINEAGE_NODES)} nodes, {hops} hops)"
            )
            if not args.runs:
                t0 = time.perf_counter()
                requests, seen = hop_by_hop(http, url)
                walked = time.perf_counter() - t0
                assert seen == versions
                print(f"hop by hop:   {walked * 1000:7.1f} ms  ({requests} requests to used-by)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
