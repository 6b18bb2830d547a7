"""Where the cache keeps what, on disk.

Everything lives under ``ROOT/v1`` so that a future incompatible layout can sit
beside it (``v2``) and old caches are ignored, not misread::

    v1/blobs/ab/<sha>        complete, verified blobs (mode 0444)
    v1/partial/ab/<sha>.data sparse file of the blob's size, holding the blocks fetched so far
    v1/partial/ab/<sha>.map  presence map: one byte per BLOCK_SIZE block (1 = present)
    v1/meta/ab/<sha>.blocks  the blob's 32-byte block digests, as served by the registry
    v1/meta/ab/<sha>.verified  stamp: this complete file was checked in this boot (trust.py)
    v1/pins/ab/<sha>.pin     flock(LOCK_SH) while open in any process; the evictor needs LOCK_EX;
                             its mtime is the blob's last use (eviction order)
    v1/tmp/                  temp files, renamed into place when complete
    v1/state.lock            flock serialising the few partial<->complete transitions
    v1/evict.lock            flock: one evictor at a time
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from ..errors import StorageFull

LAYOUT_VERSION = "v1"


class CacheLayout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = root / LAYOUT_VERSION
        self.blobs_dir = self.base / "blobs"
        self.partial_dir = self.base / "partial"
        self.meta_dir = self.base / "meta"
        self.pins_dir = self.base / "pins"
        self.tmp_dir = self.base / "tmp"
        self.state_lock = self.base / "state.lock"
        self.evict_lock = self.base / "evict.lock"

    def create(self) -> None:
        for d in (self.blobs_dir, self.partial_dir, self.meta_dir, self.pins_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)

    def complete(self, sha: str) -> Path:
        return self.blobs_dir / sha[:2] / sha

    def partial_data(self, sha: str) -> Path:
        return self.partial_dir / sha[:2] / f"{sha}.data"

    def partial_map(self, sha: str) -> Path:
        return self.partial_dir / sha[:2] / f"{sha}.map"

    def digests(self, sha: str) -> Path:
        return self.meta_dir / sha[:2] / f"{sha}.blocks"

    def verified(self, sha: str) -> Path:
        return self.meta_dir / sha[:2] / f"{sha}.verified"

    def pin(self, sha: str) -> Path:
        return self.pins_dir / sha[:2] / f"{sha}.pin"

    def tmp_path(self, hint: str) -> Path:
        return self.tmp_dir / f"{hint[:16]}.{os.getpid()}.{secrets.token_hex(6)}.tmp"

    def write_file(self, path: Path, data: bytes, *, replace: bool) -> None:
        """Create ``path`` atomically (temp + rename, or + link when it must not replace).

        With ``replace=False`` an existing file wins: used for presence maps, which another
        process may already be filling.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_path(path.name)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            if replace:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    pass
        except OSError as e:
            raise storage_error(e, f"writing {path}") from None
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def remove_stale_tmp(self, max_age: float) -> None:
        cutoff = time.time() - max_age
        try:
            entries = list(os.scandir(self.tmp_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass


def storage_error(e: OSError, what: str) -> Exception:
    """Map an OSError from cache I/O to the artfs error the caller should see."""
    import errno

    from ..errors import ArtfsError

    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"cache disk full while {what}: free space or lower the cache limit")
    return ArtfsError(f"cache I/O error while {what}: {e.strerror or e}")
