"""What the service answers, as plain values the FUSE adapter copies into pyfuse3 structs."""

from __future__ import annotations

import stat
from dataclasses import dataclass

DIR_MODE = stat.S_IFDIR | 0o555
FILE_MODE = stat.S_IFREG | 0o444
EXEC_MODE = stat.S_IFREG | 0o555  # a file committed with its executable bit
LINK_MODE = stat.S_IFLNK | 0o777
BLKSIZE = 1024 * 1024  # I/O size programs should use (cp, cat size buffers by st_blksize): the
# kernel sends 1 MiB READs after read-ahead is raised, and cp into a draft measured 2.2-2.8 s
# -> 1.7 s for 1 GiB with 1 MiB instead of 128 KiB


@dataclass(frozen=True, slots=True)
class Attr:
    """Attributes of one inode, with how long the kernel may trust them.

    ``ino == 0`` is a negative entry: the name does not exist, and the kernel may
    remember that for ``entry_timeout`` seconds (pyfuse3's convention).
    """

    ino: int
    mode: int
    nlink: int
    size: int
    mtime_ns: int
    uid: int
    gid: int
    entry_timeout: float
    attr_timeout: float

    @property
    def is_negative(self) -> bool:
        return self.ino == 0

    @property
    def blocks(self) -> int:
        """512-byte units, as st_blocks counts them (``du`` sums these)."""
        return (self.size + 511) // 512

    @classmethod
    def negative(cls, timeout: float) -> Attr:
        return cls(0, 0, 0, 0, 0, 0, 0, timeout, timeout)


@dataclass(frozen=True, slots=True)
class Opened:
    """How an open is answered. ``backing_id`` > 0: FUSE passthrough to that backing file
    (``passthrough.py``); the kernel refuses it combined with ``keep_cache``."""

    fh: int
    keep_cache: bool  # keep the page cache across opens: true for immutable version files
    backing_id: int = 0

    def __post_init__(self) -> None:
        if self.backing_id and self.keep_cache:
            raise ValueError("an open answered with passthrough cannot keep the page cache")


@dataclass(frozen=True, slots=True)
class FsStats:
    block_size: int
    blocks: int
    blocks_free: int
    files: int
    name_max: int = 255
