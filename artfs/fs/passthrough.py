"""FUSE passthrough: the kernel reads (and, for drafts, writes) a local file itself.

An open answered with a *backing id* (registered from an open fd of a local file) makes
the kernel serve that handle's reads, writes and mmap from the backing file: no daemon
round trip per request, the backing filesystem's page cache (large folios), local-disk
speed. artfs uses it for version files whose blob is complete and verified in the cache,
and for draft files, whose bytes are local files already (docs/design.md, "Passthrough").

Two kernel rules shape this module (fs/fuse/iomode.c):

* one inode is in one I/O mode at a time: while any handle of it is open in caching mode
  (an ordinary FUSE open), a passthrough open of it fails with EIO, and the other way
  round; so the mount keeps count of the handles of each inode per mode (``IoModes``)
  and answers a new open in the mode the inode is in;
* all passthrough handles of one inode must share one backing file: one backing id per
  inode, opened at its first passthrough open and closed at its last release.

The kernel also answers EIO to an open reply combining passthrough with ``keep_cache``,
so ``Opened`` never carries both.

``Backing`` is the small protocol over the two ioctls (FUSE_DEV_IOC_BACKING_OPEN/CLOSE);
the FUSE adapter supplies the real one, tests ``MemoryBacking``.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class Backing(Protocol):
    """Registers open files with the kernel as backing files of passthrough handles."""

    def open(self, fd: int) -> int:
        """A backing id (> 0) for the file open at ``fd``; raises ``OSError``."""
        ...

    def close(self, backing_id: int) -> None:
        """Forget ``backing_id`` (handles already opened with it keep their file)."""
        ...


class MemoryBacking:
    """An in-memory ``Backing`` for tests, with a fault injector (``fail`` = an errno)."""

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}  # live backing id -> the fd it was opened from
        self.opened = 0
        self.fail: int | None = None
        self._next = 1

    def open(self, fd: int) -> int:
        if self.fail is not None:
            raise OSError(self.fail, os.strerror(self.fail))
        os.fstat(fd)  # a closed fd fails as the ioctl would (EBADF)
        backing_id, self._next = self._next, self._next + 1
        self.ids[backing_id] = fd
        self.opened += 1
        return backing_id

    def close(self, backing_id: int) -> None:
        if self.ids.pop(backing_id, None) is None:
            raise OSError(errno.EINVAL, f"unknown backing id {backing_id}")


@dataclass(slots=True)
class _InodeIo:
    cached: int = 0  # handles open in caching mode
    passthrough: int = 0  # handles open in passthrough mode
    backing_id: int = 0  # shared by the passthrough handles (0: none open)


@dataclass(slots=True)
class IoModes:
    """Per inode: how many handles are open in which kernel I/O mode, and the backing id.

    Pure bookkeeping plus the ``Backing`` calls; the service asks ``may_passthrough``
    before it prepares a backing file, then records the open it answered.
    """

    backing: Backing
    _inodes: dict[int, _InodeIo] = field(default_factory=dict)

    def may_passthrough(self, ino: int) -> bool:
        """False while a handle of ``ino`` is open in caching mode (the kernel would EIO)."""
        io = self._inodes.get(ino)
        return io is None or io.cached == 0

    def in_passthrough(self, ino: int) -> bool:
        """True while a handle of ``ino`` is open in passthrough mode (a caching open
        would fail with EIO: such an open must be answered in passthrough too)."""
        io = self._inodes.get(ino)
        return io is not None and io.passthrough > 0

    def open_passthrough(self, ino: int, fd: Callable[[], int]) -> int:
        """Record a passthrough open of ``ino``; return the backing id to answer with.

        ``fd()`` gives the backing file, asked only when the inode has no backing id yet.
        Raises ``OSError`` from the kernel (nothing recorded then).
        """
        io = self._inodes.get(ino)
        if io is None:
            io = self._inodes[ino] = _InodeIo()
        if io.cached:
            raise AssertionError(f"inode {ino} is open in caching mode")
        if not io.backing_id:
            try:
                io.backing_id = self.backing.open(fd())
            except BaseException:
                if not io.passthrough:
                    del self._inodes[ino]
                raise
        io.passthrough += 1
        return io.backing_id

    def open_cached(self, ino: int) -> None:
        io = self._inodes.get(ino)
        if io is None:
            io = self._inodes[ino] = _InodeIo()
        io.cached += 1

    def release(self, ino: int, passthrough: bool) -> None:
        """One handle of ``ino`` closed; the last passthrough one closes the backing id."""
        io = self._inodes.get(ino)
        if io is None:
            return
        if passthrough:
            io.passthrough -= 1
            if io.passthrough == 0 and io.backing_id:
                backing_id, io.backing_id = io.backing_id, 0
                try:
                    self.backing.close(backing_id)
                except OSError as e:  # the kernel forgets it with the session anyway
                    log.warning("closing backing id %d failed: %s", backing_id, e)
        else:
            io.cached -= 1
        if io.cached <= 0 and io.passthrough <= 0:
            del self._inodes[ino]

    def open_backing_ids(self) -> int:
        return sum(1 for io in self._inodes.values() if io.backing_id)

    def close_all(self) -> None:
        """At unmount (the kernel sends no RELEASE after it)."""
        for ino, io in list(self._inodes.items()):
            while io.passthrough > 0:
                self.release(ino, True)
        self._inodes.clear()


@dataclass(frozen=True, slots=True)
class PassthroughState:
    """Whether this mount answers opens with passthrough, and if not, why (said once)."""

    on: bool
    reason: str  # why it is off ("" when on)

    @property
    def mode(self) -> str:
        return "passthrough" if self.on else f"daemon reads ({self.reason})"


OFF_BY_OPTION = PassthroughState(False, "turned off (--no-passthrough or ARTFS_PASSTHROUGH=0)")


def probe(backing: Backing, directories: list[Path]) -> PassthroughState:
    """Try to register one file of each directory as a backing file, so that a mount that
    cannot use passthrough says why once, at start, instead of failing opens later."""
    for directory in directories:
        try:
            fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as e:
            return PassthroughState(False, f"cannot create a file in {directory}: {e.strerror}")
        try:
            backing.close(backing.open(fd))
        except OSError as e:
            return PassthroughState(False, _why(e, directory))
        finally:
            os.close(fd)
    return PassthroughState(True, "")


def _why(e: OSError, directory: Path) -> str:
    if e.errno == errno.EPERM:
        return "the kernel refused a backing file: passthrough needs CAP_SYS_ADMIN"
    if e.errno == errno.ELOOP:
        return (
            f"{directory} is on a stacked filesystem (e.g. overlayfs) that FUSE passthrough "
            "cannot sit on; put the cache and state directories on a plain filesystem"
        )
    if e.errno in (errno.ENOTTY, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return f"the kernel does not support FUSE passthrough here ({e.strerror}; Linux >= 6.9)"
    return f"registering a backing file in {directory} failed: {e.strerror}"
