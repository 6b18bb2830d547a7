"""The host-wide, content-addressed blob cache shared by every mount and ``artfs get``."""

from .blobcache import BlobCache, CachedBlobReader
from .protocol import BlobCacheAPI, BlobReader, CacheStats
from .settings import CacheTuning

__all__ = [
    "BlobCache",
    "BlobCacheAPI",
    "BlobReader",
    "CacheStats",
    "CacheTuning",
    "CachedBlobReader",
]
