"""Placing a cached blob, a symlink or a directory in a ``get``'s destination.

Each file is written to a temp name beside its target and renamed, so a destination file
is either absent or complete (also under ``--merge``, where it replaces one of the same
name). With ``link`` a file shares the cache's bytes instead of copying them:

* a *reflink* (``ioctl(FICLONE)``, btrfs/XFS/bcachefs): a copy-on-write clone, an
  independent file that costs no space until written; it gets a copy's modes;
* else a *hard link* to the cache's complete file: the same inode, so it is read-only
  (the cache makes complete files 0444). An executable file is copied instead: one inode
  has one mode, and the cache's must stay as it is.
  Such a file must not be modified: ``chmod u+w`` and a write would change the cache's
  bytes too. The cache would notice (its check stamp holds the inode's ctime, which any
  write or chmod moves, so the blob is verified again and a changed one refetched:
  ``cache/trust.py``) but the file would no longer be the version's. While the link
  exists the cache never evicts the blob (evicting it would free nothing: the other name
  keeps the bytes, ``cache/eviction.py``); deleting the downloaded copy unpins it.
* across filesystems neither works: the file is copied (the caller reports how many).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
from pathlib import Path

FICLONE = 0x40049409  # _IOW(0x94, 9, int): linux/fs.h
REFLINK, HARDLINK, COPY = "reflink", "hardlink", "copy"
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}
_NO_HARDLINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES}


def make_dirs(directory: Path) -> None:
    """``mkdir -p`` without recursion (``Path.mkdir(parents=True)`` recurses once per missing
    level): a version stored before ``names.MAX_DEPTH`` may be 1000 levels deep."""
    missing: list[Path] = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for made in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by a parallel copy
            made.mkdir()


def _tmp(target: Path) -> Path:
    return target.with_name(f".artfs-tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _reflink(source: Path, tmp: Path) -> bool:
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.ioctl(dst, FICLONE, src)
            return True
        except OSError as e:
            if e.errno not in _NO_REFLINK:
                raise
            return False
        finally:
            os.close(dst)
    finally:
        os.close(src)


def place_file(source: Path, target: Path, executable: bool, link: bool) -> str:
    """Put the bytes of ``source`` (a complete cache file) at ``target``; returns how."""
    make_dirs(target.parent)
    tmp = _tmp(target)
    how = COPY
    try:
        if link and _reflink(source, tmp):
            how = REFLINK
        elif link and not executable:
            tmp.unlink(missing_ok=True)  # the empty file a failed FICLONE left
            try:
                os.link(source, tmp)
                how = HARDLINK
            except OSError as e:
                if e.errno not in _NO_HARDLINK:
                    raise
        if how == COPY:
            shutil.copyfile(source, tmp)
        if how != HARDLINK:
            os.chmod(tmp, 0o755 if executable else 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return how


def place_symlink(link_target: str, target: Path) -> None:
    """A symlink ``target -> link_target`` (replacing one of that name, atomically)."""
    make_dirs(target.parent)
    tmp = _tmp(target)
    os.symlink(link_target, tmp)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
