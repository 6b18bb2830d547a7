"""The registry core (``core.Registry``) over a metadata store and a blob store."""

from .blobs import BlobStore, BlobWriter, LocalBlobStore
from .core import Registry
from .meta import MetaStore, NewVersion
from .sqlite import SqliteMetaStore

__all__ = [
    "BlobStore",
    "BlobWriter",
    "LocalBlobStore",
    "MetaStore",
    "NewVersion",
    "Registry",
    "SqliteMetaStore",
]
