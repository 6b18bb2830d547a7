"""The pyfuse3 adapter: each handler translates arguments, calls ``ArtfsFS``, translates back.

``_handler`` is the one place where errors cross into FUSE: an ``ArtfsError``
becomes ``FUSEError(exc.errno)``; anything unexpected is logged with its
traceback and becomes EIO, so no stray exception can take the mount down
(pyfuse3 ends its main loop on any exception that is not a FUSEError).
Reads stay inline on the trio thread: a thread hop costs more than the read.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3

from ..cache.protocol import FileSlice
from ..errors import (
    ArtfsError,
    Forbidden,
    IntegrityError,
    InvalidInput,
    ProtectedAlias,
    StorageFull,
    Unauthorized,
    Unavailable,
)
from .attrs import BLKSIZE, Attr, Opened
from .service import ArtfsFS

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
# Worth a line in the mount's log (a refused token: EACCES to the reader, the reason here).
_LOUD = (Unavailable, IntegrityError, StorageFull, Unauthorized, Forbidden, ProtectedAlias)


def _handler(
    fn: Callable[Concatenate[FuseOperations, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[FuseOperations, P], Coroutine[Any, Any, R]]:
    @functools.wraps(fn)
    async def wrapper(self: FuseOperations, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if log.isEnabledFor(logging.DEBUG):  # --debug: every request
            log.debug("%s%r", fn.__name__, args)
        try:
            return await fn(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except ArtfsError as exc:
            if isinstance(exc, InvalidInput):  # "Invalid argument" alone says nothing: why
                log.info("%s refused: %s", fn.__name__, exc)
                self.fs.refused(fn.__name__, str(exc))
            else:
                level = logging.WARNING if isinstance(exc, _LOUD) else logging.DEBUG
                log.log(level, "%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except Exception:
            log.exception("unexpected error in %s; answering EIO", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def entry_attributes(attr: Attr) -> pyfuse3.EntryAttributes:
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = attr.ino
    entry.entry_timeout = attr.entry_timeout
    entry.attr_timeout = attr.attr_timeout
    if attr.is_negative:
        return entry
    entry.generation = 0
    entry.st_mode = attr.mode
    entry.st_nlink = attr.nlink
    entry.st_uid = attr.uid
    entry.st_gid = attr.gid
    entry.st_size = attr.size
    entry.st_blksize = BLKSIZE
    entry.st_blocks = attr.blocks
    entry.st_atime_ns = attr.mtime_ns
    entry.st_mtime_ns = attr.mtime_ns
    entry.st_ctime_ns = attr.mtime_ns
    return entry


def file_info(opened: Opened) -> pyfuse3.FileInfo:
    return pyfuse3.FileInfo(
        fh=opened.fh, keep_cache=opened.keep_cache, backing_id=opened.backing_id
    )


class KernelBacking:
    """``passthrough.Backing`` over the session's /dev/fuse (pyfuse3 built by
    scripts/build_fuse.sh); ``None`` from ``available`` says why it cannot be used."""

    @staticmethod
    def unavailable() -> str | None:
        if not hasattr(pyfuse3, "backing_open"):
            return "this pyfuse3 has no passthrough (built without scripts/build_fuse.sh)"
        if not pyfuse3.passthrough_granted():
            return "the kernel or libfuse does not offer FUSE passthrough (Linux >= 6.9, libfuse >= 3.17)"
        return None

    def open(self, fd: int) -> int:
        return int(pyfuse3.backing_open(fd))

    def close(self, backing_id: int) -> None:
        pyfuse3.backing_close(backing_id)


def splice_granted() -> bool | None:
    """Whether INIT asked the kernel for spliced replies; None: this pyfuse3 cannot reply
    from a file (built without scripts/build_fuse.sh)."""
    if not hasattr(pyfuse3, "splice_write_granted"):
        return None
    return bool(pyfuse3.splice_write_granted())


def invalidate_entry(parent: int, name: str) -> None:
    """Make the kernel forget ``name`` in ``parent`` (``ArtfsFS``'s ``invalidate``).

    Asynchronous (pyfuse3 queues it to its own thread): the kernel may hold the
    directory for the very request being answered, so waiting here would deadlock.
    """
    pyfuse3.invalidate_entry_async(parent, os.fsencode(name), ignore_enoent=True)


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


class FuseOperations(pyfuse3.Operations):
    """pyfuse3 request handlers over an ``ArtfsFS``."""

    def __init__(self, fs: ArtfsFS) -> None:
        super().__init__()
        self.fs = fs
        # Asked for at INIT; used once the mount has probed it (daemon.py).
        self.enable_passthrough = fs.options.passthrough
        self.enable_splice_write = fs.options.splice  # (ignored by an unpatched pyfuse3)

    # --- reading ------------------------------------------------------------------------
    @_handler
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return entry_attributes(await self.fs.lookup(parent_inode, _name(name)))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        """No reply goes back for FORGET, so nothing may escape (pyfuse3 would only log it)."""
        try:
            self.fs.forget(inode_list)
        except Exception:
            log.exception("forget of %d inodes failed", len(inode_list))

    @_handler
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return entry_attributes(await self.fs.getattr(inode))

    @_handler
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(await self.fs.readlink(inode))

    @_handler
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return await self.fs.opendir(inode)

    @_handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        for name, attr, next_id in self.fs.readdir(fh, start_id):
            if not pyfuse3.readdir_reply(token, os.fsencode(name), entry_attributes(attr), next_id):
                break
            self.fs.entry_sent(attr.ino)  # a readdirplus entry counts as a lookup

    @_handler
    async def releasedir(self, fh: int) -> None:
        await self.fs.releasedir(fh)

    @_handler
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        return file_info(await self.fs.open(inode, flags, ctx.pid))

    @_handler
    async def read(self, fh: int, off: int, size: int) -> bytes | FileSlice:
        return await self.fs.read_reply(fh, off, size)  # a slice: replied from that file

    @_handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.fs.write(fh, off, buf)

    @_handler
    async def flush(self, fh: int) -> None:
        await self.fs.flush(fh)

    @_handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.fs.fsync(fh, datasync)

    @_handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        """Draft namespace changes are durable when they return: nothing left to sync."""

    @_handler
    async def release(self, fh: int) -> None:
        await self.fs.release(fh)

    @_handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        stats = await self.fs.statfs()
        data = pyfuse3.StatvfsData()
        data.f_bsize = stats.block_size
        data.f_frsize = stats.block_size
        data.f_blocks = stats.blocks
        data.f_bfree = stats.blocks_free
        data.f_bavail = stats.blocks_free
        data.f_files = stats.files
        data.f_ffree = 0
        data.f_favail = 0
        data.f_namemax = stats.name_max
        return data

    @_handler
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.fs.getxattr(inode, _name(name))

    @_handler
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        return [os.fsencode(n) for n in await self.fs.listxattr(inode)]

    # --- changing (refused inside versions) ------------------------------------------------
    @_handler
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        await self.fs.setxattr(inode, _name(name), value)

    @_handler
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.fs.removexattr(inode, _name(name))

    @_handler
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        changed = await self.fs.setattr(
            inode,
            mode=attr.st_mode if fields.update_mode else None,
            size=attr.st_size if fields.update_size else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            owner=(
                attr.st_uid if fields.update_uid else None,
                attr.st_gid if fields.update_gid else None,
            ),
            pid=ctx.pid,
        )
        return entry_attributes(changed)

    @_handler
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return entry_attributes(await self.fs.mkdir(parent_inode, _name(name), mode, ctx.pid))

    @_handler
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        opened, attr = await self.fs.create(parent_inode, _name(name), mode, flags, ctx.pid)
        return file_info(opened), entry_attributes(attr)

    @_handler
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return entry_attributes(await self.fs.mknod(parent_inode, _name(name), mode, ctx.pid))

    @_handler
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        attr = await self.fs.symlink(parent_inode, _name(name), os.fsdecode(target))
        return entry_attributes(attr)

    @_handler
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return entry_attributes(await self.fs.link(inode, new_parent_inode, _name(new_name)))

    @_handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.fs.unlink(parent_inode, _name(name), ctx.pid)

    @_handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.fs.rmdir(parent_inode, _name(name), ctx.pid)

    @_handler
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        await self.fs.rename(
            parent_inode_old, _name(name_old), parent_inode_new, _name(name_new), flags, ctx.pid
        )
