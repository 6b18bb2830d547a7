"""What the registry benchmarks share (bench_lineage.py, bench_ui.py): the store options,
a registry opened on them to commit into directly, and ``artfs.server`` started on it."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from artfs.registry import Registry

_READY = re.compile(r"listening on (http://\S+)")


def add_store_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--db", help="postgresql://... (default: SQLite in a temp directory)")
    ap.add_argument("--blobs", help="s3://bucket/prefix (with --db)")
    ap.add_argument("--s3-endpoint")


def open_registry(args: argparse.Namespace, data: Path) -> Registry:
    if args.db is None:
        return Registry.open(data)
    from artfs.registry.postgres import PostgresMetaStore
    from artfs.registry.s3 import S3BlobStore, parse_s3_url

    bucket, prefix = parse_s3_url(args.blobs)
    return Registry(
        PostgresMetaStore(args.db), S3BlobStore(bucket, prefix, endpoint_url=args.s3_endpoint)
    )


@contextmanager
def serving(args: argparse.Namespace, data: Path) -> Iterator[str]:
    """``python -m artfs.server`` on the store; yields its URL, stops it after."""
    store = ["--db", args.db, "--blobs", args.blobs] if args.db else []
    store += ["--s3-endpoint", args.s3_endpoint] if args.s3_endpoint else []
    cmd = [sys.executable, "-m", "artfs.server", "--data", str(data), "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--blob-port", "0", *store],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            m = _READY.search(line)
            if m:
                url = m.group(1)
                break
        if not url:
            raise SystemExit("the server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
