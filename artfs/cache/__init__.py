"""The host-wide, content-addressed blob cache shared by every mount and ``artfs get``."""

from .blobcache import BlobCache
from .protocol import BlobCacheAPI, BlobReader, CacheStats
from .reader import CachedBlobReader
from .settings import CacheTuning

__all__ = [
    "BlobCache",
    "BlobCacheAPI",
    "BlobReader",
    "CacheStats",
    "CacheTuning",
    "CachedBlobReader",
]
