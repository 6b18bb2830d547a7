"""What the peer benchmark (``bench_peers.py``) runs against: PostgreSQL and SeaweedFS
(``scripts/services.sh``), a database per run, the data, and the same files uploaded under
plain names for the peers."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.bench import write_random  # noqa: E402

PEER_PACKAGES = {"rclone": "rclone", "s3fs": "s3fs"}  # command -> Debian package
SMALL_DIR = "small"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_peers(install: bool) -> None:
    missing = [pkg for cmd, pkg in PEER_PACKAGES.items() if shutil.which(cmd) is None]
    if not missing:
        return
    if not install:
        raise SystemExit(f"missing {' '.join(missing)}: run with --install (apt-get, as root)")
    log(f"installing {' '.join(missing)} (apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, timeout=900)


@dataclass
class Store:
    """The S3 store and the PostgreSQL cluster everything in this run uses."""

    endpoint: str
    bucket: str
    pg_dsn: str
    access_key: str
    secret_key: str


def start_services(state: Path, pg_port: int, weed_base: int) -> Store:
    env = {
        **os.environ,
        "ARTFS_SERVICES_DIR": str(state),
        "ARTFS_PG_PORT": str(pg_port),
        "ARTFS_WEED_PORT_BASE": str(weed_base),
    }
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "services.sh"), "start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise SystemExit(f"scripts/services.sh start failed:\n{out.stderr}")
    for line in out.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export ") :].split("=", 1)
            os.environ[key] = value
    return store_from_env()


def stop_services(state: Path, pg_port: int, weed_base: int) -> None:
    env = {
        **os.environ,
        "ARTFS_SERVICES_DIR": str(state),
        "ARTFS_PG_PORT": str(pg_port),
        "ARTFS_WEED_PORT_BASE": str(weed_base),
    }
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "services.sh"), "stop"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )


def store_from_env() -> Store:
    try:
        return Store(
            endpoint=os.environ["ARTFS_TEST_S3_ENDPOINT"],
            bucket=os.environ.get("ARTFS_TEST_S3_BUCKET", "artfs-test"),
            pg_dsn=os.environ["ARTFS_TEST_PG_DSN"],
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        )
    except KeyError as e:
        raise SystemExit(f"--services env: {e.args[0]} is not set (scripts/services.sh)") from None


def create_database(dsn: str) -> str:
    """A fresh database on the cluster of ``dsn`` (a run never sees another run's data)."""
    import psycopg

    name = f"artfs_peers_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def drop_database(admin_dsn: str, dsn: str) -> None:
    import psycopg

    name = urlsplit(dsn).path.lstrip("/")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_data(work: Path, size: int, nfiles: int) -> tuple[Path, str, Path]:
    """A random file of ``size`` bytes (and its sha256) and a flat directory of small files."""
    big_dir = work / "src-big"
    big_dir.mkdir()
    big = big_dir / "big.bin"
    rng = random.Random(1)
    sha = write_random(big, size, rng)
    small = work / "src-small" / SMALL_DIR
    small.mkdir(parents=True)
    for i in range(nfiles):
        (small / f"f{i:05d}.bin").write_bytes(rng.randbytes(rng.randrange(100, 4096)))
    return big, sha, small


def s3_client(store: Store) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        aws_access_key_id=store.access_key,
        aws_secret_access_key=store.secret_key,
        region_name="us-east-1",
    )


def upload_plain(store: Store, prefix: str, big: Path, small: Path) -> None:
    """The same files under plain names, for the peers (one prefix, same bucket)."""
    s3 = s3_client(store)
    s3.upload_file(str(big), store.bucket, f"{prefix}/big.bin")
    paths = sorted(small.iterdir())

    def put(p: Path) -> None:
        s3.put_object(
            Bucket=store.bucket, Key=f"{prefix}/{SMALL_DIR}/{p.name}", Body=p.read_bytes()
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, paths))
