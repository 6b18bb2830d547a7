"""Mount options: the few knobs of the mount, validated once when the mount starts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInput
from .siblings import SiblingTuning

DEFAULT_LISTING_TTL = 5.0
MAX_LISTING_TTL = 10.0
IMMUTABLE_TIMEOUT = 86400.0
SMALL_WHOLE_MAX = 1 << 20  # measured: docs/decisions.md, "Small files: fetched whole at open"


def small_whole_default() -> int:
    return int(os.environ.get("ARTFS_SMALL_WHOLE_MAX", SMALL_WHOLE_MAX))


def passthrough_default() -> bool:
    return os.environ.get("ARTFS_PASSTHROUGH", "1") != "0"


def splice_default() -> bool:
    return os.environ.get("ARTFS_SPLICE", "1") != "0"


@dataclass(frozen=True, slots=True)
class MountOptions:
    """How the mount behaves.

    ``listing_ttl`` bounds how stale a root/project/artifact listing or an alias
    link may be (SPEC §2: aliases are re-resolved "within a short, documented
    time"); it is also the kernel entry/attr timeout of those objects, so it is
    capped at ``MAX_LISTING_TTL``. Everything inside a version is immutable and
    gets ``immutable_timeout``.

    ``xattrs=False`` answers getxattr/listxattr with ENOSYS, after which the
    kernel never asks again: ``ls -l`` otherwise pays two getxattr round trips
    per file (notes/fuse-performance.md).
    """

    listing_ttl: float = DEFAULT_LISTING_TTL
    immutable_timeout: float = IMMUTABLE_TIMEOUT
    xattrs: bool = False
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    meta_timeout: float = 15.0  # deadline of one metadata call to the registry
    # how long a caller holding a known listing waits for its refresh before the registry is
    # taken as down and the listing served as it is (fs/listings.py)
    stale_after: float = 1.0
    read_timeout: float = 120.0  # deadline of one read() served from the cache
    meta_root: Path | None = None  # default: <cache.root>/v1/meta
    source: str = ""  # the registry URL or directory; remembers the registry id offline
    allow_other: bool = False
    siblings: SiblingTuning = field(default_factory=SiblingTuning)  # directory read-ahead
    # FUSE passthrough for cached blobs and draft files (passthrough.py); ARTFS_PASSTHROUGH=0
    # turns it off by default (the suite runs both ways).
    passthrough: bool = field(default_factory=passthrough_default)
    # READ replies spliced from the cache file where libfuse can (splicing.py); ARTFS_SPLICE=0
    # turns it off
    splice: bool = field(default_factory=splice_default)
    # blobs fetched whole at open, then passed through (ARTFS_SMALL_WHOLE_MAX, for benchmarks)
    small_whole_max: int = field(default_factory=small_whole_default)
    # record which versions processes read and attribute them to drafts (fs/observe.py)
    observe_inputs: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.listing_ttl <= MAX_LISTING_TTL:
            raise InvalidInput(
                f"listing TTL {self.listing_ttl} s out of range: use 0 to {MAX_LISTING_TTL:g} s"
            )
        if self.immutable_timeout < 0:
            raise InvalidInput("immutable_timeout must not be negative")
        if self.meta_timeout <= 0 or self.read_timeout <= 0 or self.stale_after <= 0:
            raise InvalidInput("timeouts must be positive")
