"""Open a registry from ``artfs serve``'s options: SQLite and a blob directory under
``--data`` by default, PostgreSQL (``--db postgresql://...``) and/or S3
(``--blobs s3://BUCKET/PREFIX``) when given. The PostgreSQL and S3 modules are imported
only when used, so the embedded default needs neither psycopg nor boto3 loaded."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from .blobs import BlobStore, LocalBlobStore
from .core import Registry
from .meta import MetaStore
from .sqlite import SqliteMetaStore


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Where metadata and blobs live (``artfs serve --db/--blobs/--s3-endpoint/--db-pool``);
    all None: SQLite and a blob directory under the data directory."""

    db: str | None = None
    blobs: str | None = None
    s3_endpoint: str | None = None
    db_pool: int | None = None


def add_store_arguments(parser: Any) -> None:
    """``--db``, ``--blobs``, ``--s3-endpoint``, ``--db-pool`` on an argparse parser."""
    parser.add_argument(
        "--db",
        default=None,
        help="metadata: postgresql://USER:PASSWORD@HOST/DB, or a SQLite file "
        "(default: DATA/registry.db)",
    )
    parser.add_argument(
        "--blobs",
        default=None,
        help="blob store: s3://BUCKET[/PREFIX] (credentials from the AWS_* environment), "
        "or a directory (default: DATA/blobs)",
    )
    parser.add_argument(
        "--s3-endpoint", default=None, help="S3 endpoint URL for non-AWS stores (SeaweedFS, MinIO)"
    )
    parser.add_argument(
        "--db-pool", type=int, default=None, help="PostgreSQL connections per server (default 16)"
    )


def store_options(args: Any) -> StoreOptions:
    return StoreOptions(args.db, args.blobs, args.s3_endpoint, args.db_pool)


def redact(dsn: str) -> str:
    """A database URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn)


def describe_stores(stores: StoreOptions, data_dir: Path) -> str:
    """ "metadata ..., blobs ..." for the ready line; "" for the embedded default."""
    if stores.db is None and stores.blobs is None:
        return ""
    db = redact(stores.db) if stores.db else str(data_dir / "registry.db")
    return f"metadata {db}, blobs {stores.blobs or data_dir / 'blobs'}"


def open_meta(
    data_dir: str | Path,
    *,
    db: str | None = None,
    db_pool: int | None = None,
    spend_reserve: bool = False,
) -> MetaStore:
    """The metadata store alone (what ``artfs token`` needs): ``db`` is None
    (``DATA/registry.db``), a SQLite file path, or ``postgresql://...``. ``spend_reserve``:
    SQLite gives back its reserved room on a nearly full disk (``artfs gc``; reserve.py)."""
    root = Path(data_dir)
    if db is not None and db.startswith(("postgresql://", "postgres://")):
        from .postgres import POOL_MAX, PostgresMetaStore

        return PostgresMetaStore(db, pool_max=db_pool or POOL_MAX)
    if db_pool is not None:
        raise InvalidInput("--db-pool applies to PostgreSQL only")
    if db is not None and "://" in db:
        raise InvalidInput(f"unsupported database {db!r}: a SQLite path or postgresql://...")
    path = Path(db) if db is not None else root / "registry.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteMetaStore(path, spend_reserve=spend_reserve)


def open_registry(
    data_dir: str | Path,
    *,
    db: str | None = None,
    blobs: str | None = None,
    s3_endpoint: str | None = None,
    db_pool: int | None = None,
    spend_reserve: bool = False,
) -> Registry:
    """``db``: None (``DATA/registry.db``), a SQLite file path, or ``postgresql://...``;
    ``blobs``: None (``DATA/blobs``), a directory, or ``s3://BUCKET[/PREFIX]``."""
    meta = open_meta(data_dir, db=db, db_pool=db_pool, spend_reserve=spend_reserve)
    try:
        store: BlobStore
        if blobs is not None and blobs.startswith("s3://"):
            from .s3 import S3BlobStore, parse_s3_url

            bucket, prefix = parse_s3_url(blobs)
            store = S3BlobStore(bucket, prefix, endpoint_url=s3_endpoint)
        else:
            if s3_endpoint is not None:
                raise InvalidInput("--s3-endpoint needs --blobs s3://BUCKET/PREFIX")
            if blobs is not None and "://" in blobs:
                raise InvalidInput(f"unsupported blob store {blobs!r}: a directory or s3://...")
            store = LocalBlobStore(Path(blobs) if blobs is not None else Path(data_dir) / "blobs")
    except BaseException:
        meta.close()
        raise
    return Registry(meta, store)
