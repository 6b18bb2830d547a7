"""The two registry configurations the suite runs on: "sqlite+local" (the embedded default)
and "postgres+s3" (PostgreSQL metadata, blobs in an S3 bucket: SeaweedFS in CI).

"postgres+s3" needs the services of scripts/services.sh; it is skipped only when their
environment variables are absent::

    eval "$(scripts/services.sh start)"     # ARTFS_TEST_PG_DSN, ARTFS_TEST_S3_ENDPOINT, ...

Every registry made here is fresh: its own PostgreSQL schema (in-process) or database
(server processes) and its own key prefix in the test bucket.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from artfs.registry import Registry

SQLITE = "sqlite+local"
POSTGRES = "postgres+s3"
BACKENDS = [SQLITE, POSTGRES]

PG_DSN = os.environ.get("ARTFS_TEST_PG_DSN")
S3_ENDPOINT = os.environ.get("ARTFS_TEST_S3_ENDPOINT")
S3_BUCKET = os.environ.get("ARTFS_TEST_S3_BUCKET", "artfs-test")
HAVE_SERVICES = bool(PG_DSN and S3_ENDPOINT and os.environ.get("AWS_ACCESS_KEY_ID"))
SKIP_REASON = "postgres+s3 needs ARTFS_TEST_PG_DSN/ARTFS_TEST_S3_ENDPOINT (scripts/services.sh)"


def backend_params() -> list[object]:
    """``params=`` for a fixture parametrized over both configurations."""
    return [
        pytest.param(SQLITE, id=SQLITE),
        pytest.param(
            POSTGRES, id=POSTGRES, marks=pytest.mark.skipif(not HAVE_SERVICES, reason=SKIP_REASON)
        ),
    ]


@dataclass(frozen=True)
class RegistrySpec:
    """Where one test registry lives; picklable, so worker processes can open it too."""

    backend: str
    data_dir: str
    db: str | None = None  # postgresql://... (None: DATA/registry.db)
    schema: str | None = None  # in-process PostgreSQL stores only
    blobs: str | None = None  # s3://bucket/prefix (None: DATA/blobs)

    def open(self) -> Registry:
        if self.backend == SQLITE:
            return Registry.open(self.data_dir)
        from artfs.registry.postgres import PostgresMetaStore
        from artfs.registry.s3 import S3BlobStore, parse_s3_url

        assert self.db is not None and self.blobs is not None
        meta = PostgresMetaStore(self.db, schema=self.schema)
        try:
            bucket, prefix = parse_s3_url(self.blobs)
            return Registry(meta, S3BlobStore(bucket, prefix, endpoint_url=S3_ENDPOINT))
        except BaseException:
            meta.close()
            raise

    def serve_args(self) -> list[str]:
        """Extra ``artfs serve`` / ``python -m artfs.server`` arguments for this registry."""
        if self.backend == SQLITE:
            return []
        assert self.db is not None and self.blobs is not None and S3_ENDPOINT is not None
        return ["--db", self.db, "--blobs", self.blobs, "--s3-endpoint", S3_ENDPOINT]


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_database() -> str:
    """A fresh, empty PostgreSQL database on the test cluster; its DSN."""
    import psycopg

    assert PG_DSN is not None
    name = f"artfs_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_database(PG_DSN, name)


def drop_database(dsn: str) -> None:
    import psycopg

    assert PG_DSN is not None
    name = urlsplit(dsn).path.lstrip("/")
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for attempt in range(20):
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except psycopg.errors.InsufficientPrivilege:
                # An autovacuum worker in the database (no role: services.sh grants
                # pg_signal_backend for that; an older services state may lack it).
                if attempt == 19:
                    raise
                time.sleep(0.25)


def make_spec(backend: str, data_dir: Path, *, for_servers: bool = False) -> RegistrySpec:
    """A fresh registry. ``for_servers``: its own database (server processes take a DSN),
    else its own schema in the shared test database (cheaper). Pair a ``for_servers`` spec
    with ``release(spec)``."""
    if backend == SQLITE:
        return RegistrySpec(SQLITE, str(data_dir))
    if not HAVE_SERVICES:
        pytest.skip(SKIP_REASON)
    assert PG_DSN is not None
    tag = uuid.uuid4().hex[:12]
    blobs = f"s3://{S3_BUCKET}/t-{tag}"
    if for_servers:
        return RegistrySpec(POSTGRES, str(data_dir), db=create_database(), blobs=blobs)
    return RegistrySpec(POSTGRES, str(data_dir), db=PG_DSN, schema=f"t_{tag}", blobs=blobs)


def release(spec: RegistrySpec) -> None:
    """Drop what ``make_spec(..., for_servers=True)`` created (blobs stay: the bucket is
    thrown away with the services)."""
    if spec.backend == POSTGRES and spec.schema is None and spec.db is not None:
        drop_database(spec.db)


def s3_keys(spec: RegistrySpec, under: str) -> list[str]:
    """Keys in the test bucket under ``PREFIX/under`` (e.g. "uploads/")."""
    import boto3

    assert spec.blobs is not None
    bucket, prefix = spec.blobs[len("s3://") :].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=S3_ENDPOINT)
    resp = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{under}")
    return [obj["Key"] for obj in resp.get("Contents", [])]
