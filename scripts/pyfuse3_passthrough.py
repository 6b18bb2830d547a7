#!/usr/bin/env python3
"""Add FUSE passthrough and READ replies from a file to an unpacked pyfuse3 sdist (3.5.x),
in place and idempotently.

    python3 scripts/pyfuse3_passthrough.py DIR     # DIR: the unpacked pyfuse3-3.5.0/

What it adds (the proposal in docs/decisions.md, "FUSE passthrough in pyfuse3"):

* ``Operations.enable_passthrough`` (default False): ask the kernel for FUSE_PASSTHROUGH
  at INIT, as ``enable_writeback_cache`` asks for FUSE_WRITEBACK_CACHE;
* ``pyfuse3.passthrough_granted()``: whether INIT asked for it (the kernel had it to offer);
* ``FileInfo(backing_id=N)``: an open or create reply that hands the file to the kernel's
  passthrough (libfuse >= 3.17 sets FOPEN_PASSTHROUGH when ``backing_id`` > 0);
* ``pyfuse3.backing_open(fd) -> int`` and ``pyfuse3.backing_close(backing_id)``: the
  FUSE_DEV_IOC_BACKING_OPEN / _CLOSE ioctls on the session's /dev/fuse descriptor.

And (``patch_fd_replies``, the proposal in docs/decisions.md, "READ replies spliced from the
cache file"):

* ``Operations.read`` may return ``(fd, offset, size)`` instead of bytes: the reply is made
  from that file with ``fuse_reply_data``, without the GIL;
* ``Operations.enable_splice_write`` (default False): ask for FUSE_CAP_SPLICE_WRITE at INIT,
  so that libfuse splices such replies; ``pyfuse3.splice_write_granted()`` says if it did.

Every edit is anchored on one identifier of the sdist and fails loudly if the anchor is
not found, so a new pyfuse3 release is noticed rather than mispatched. The text inserted
is ours; nothing of pyfuse3's is copied.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MARK = "artfs-passthrough"
MARK_FD = "artfs-fd-replies"

# _IOW(229, 1, struct fuse_backing_map{int32 fd; uint32 flags; uint64 padding}) and
# _IOW(229, 2, uint32_t), from the kernel's uapi fuse.h (Linux >= 6.9).
IOC_BACKING_OPEN = 0x4010E501
IOC_BACKING_CLOSE = 0x4004E502


def _insert_after(text: str, pattern: str, addition: str, what: str) -> str:
    """Insert ``addition`` after the first line matching ``pattern`` (a regex)."""
    match = re.search(pattern + r"[^\n]*\n", text, re.MULTILINE)
    if match is None:
        raise SystemExit(f"pyfuse3_passthrough: anchor for {what} not found ({pattern!r})")
    return text[: match.end()] + addition + text[match.end() :]


def _edit(path: Path, edits: list[tuple[str, str, str]], mark: str = MARK) -> None:
    text = path.read_text()
    if mark in text:
        return
    for pattern, addition, what in edits:
        text = _insert_after(text, pattern, addition, what)
    path.write_text(text)


def patch(root: Path) -> None:
    include = root / "Include" / "fuse_common.pxd"
    src = root / "src" / "pyfuse3"
    _edit(
        include,
        [
            (
                r"from libc\.stdint cimport",
                f"from libc.stdint cimport int32_t  # {MARK}\n",
                "the stdint import",
            ),
            (
                r"\s+uint64_t lock_owner",
                "        int32_t backing_id  # libfuse >= 3.17\n",
                "fuse_file_info",
            ),
            (
                r"\s+FUSE_CAP_HANDLE_KILLPRIV\b",
                "      FUSE_CAP_PASSTHROUGH\n",
                "the capability enum",
            ),
        ],
    )
    _edit(
        src / "__init__.pyx",
        [
            (
                r"from libc\.stdint cimport",
                f"from libc.stdint cimport int32_t  # {MARK}\nimport fcntl as _fcntl\nimport struct as _struct\n",
                "the stdint import",
            ),
            (
                r"\s+cdef public bint nonseekable",
                "    cdef public int32_t backing_id  # > 0: reads and writes go to this backing file\n",
                "FileInfo's fields",
            ),
            (
                r"\s+self\.nonseekable = nonseekable",
                "        self.backing_id = 0\n",
                "FileInfo.__cinit__",
            ),
            (
                r"\s+cdef _copy_to_fuse\(self, fuse_file_info \*out\):",
                "        out.backing_id = self.backing_id\n",
                "FileInfo._copy_to_fuse",
            ),
            (
                r"^cdef int session_fd",
                f"""
cdef bint passthrough_wanted = False

def passthrough_granted():
    '''Whether INIT asked the kernel for FUSE passthrough (`Operations.enable_passthrough`
    and a kernel that offers it). The kernel may still refuse a backing file:
    `backing_open` then raises `OSError`.'''
    return passthrough_wanted

def backing_open(int fd):
    '''Register the open file *fd* as a backing file; return its backing id (> 0) for
    `FileInfo.backing_id`. Needs CAP_SYS_ADMIN and a granted passthrough; raises `OSError`.
    Close the id with `backing_close` once no open reply will use it any more (files
    already opened with it keep their backing file).'''
    arg = bytearray(_struct.pack('=iIQ', fd, 0, 0))
    return _fcntl.ioctl(session_fd, {IOC_BACKING_OPEN:#x}, arg, True)

def backing_close(int backing_id):
    '''Drop a backing id returned by `backing_open`.'''
    _fcntl.ioctl(session_fd, {IOC_BACKING_CLOSE:#x}, _struct.pack('=I', backing_id))
""",
                "the session fd",
            ),
        ],
    )
    # __cinit__ takes the id as a keyword too (pyfuse3 constructs FileInfo(fh=..., ...)).
    pyx = src / "__init__.pyx"
    text = pyx.read_text()
    if "backing_id=0):" not in text:
        text, n = re.subn(
            r"(def __cinit__\(self, fh=0, [^)]*nonseekable=0)\):",
            r"\1, backing_id=0):",
            text,
            count=1,
        )
        if n != 1:
            raise SystemExit("pyfuse3_passthrough: anchor for FileInfo.__cinit__'s signature")
        text = text.replace(
            "        self.backing_id = 0\n", "        self.backing_id = backing_id\n", 1
        )
        pyx.write_text(text)
    _edit(
        src / "handlers.pxi",
        [
            (
                r"cdef void fuse_init \(void \*userdata, fuse_conn_info \*conn\):",
                f"""    global passthrough_wanted  # {MARK}
    if (getattr(operations, 'enable_passthrough', False) and
        conn.capable & FUSE_CAP_PASSTHROUGH):
        conn.want |= FUSE_CAP_PASSTHROUGH
        passthrough_wanted = True
""",
                "fuse_init",
            ),
        ],
    )
    _edit(
        src / "_pyfuse3.py",
        [
            (
                r"\s+enable_writeback_cache: bool = ",
                f"    enable_passthrough: bool = False  # {MARK}: FileInfo.backing_id works\n",
                "Operations' class attributes",
            )
        ],
    )
    _edit(
        src / "__init__.pyi",
        [
            (r"\s+nonseekable: bool$", f"    backing_id: int  # {MARK}\n", "FileInfo's stub"),
            (
                r"\s+nonseekable: bool = \.\.\.,",
                "        backing_id: int = ...,\n",
                "FileInfo.__init__'s stub",
            ),
            (
                r"^def terminate\(\) -> None",
                "def passthrough_granted() -> bool: ...\n"
                "def backing_open(fd: int) -> int: ...\n"
                "def backing_close(backing_id: int) -> None: ...\n",
                "the module functions' stubs",
            ),
        ],
    )


def patch_fd_replies(root: Path) -> None:
    """A read handler may answer ``(fd, offset, size)`` instead of bytes: pyfuse3 then replies
    with ``fuse_reply_data`` from that file, without holding the GIL, and libfuse splices the
    file's pages into /dev/fuse when the kernel allows (``Operations.enable_splice_write``
    asks for FUSE_CAP_SPLICE_WRITE at INIT), else copies them in C. The bytes never become a
    Python object: no allocation, one copy instead of pread's and writev's."""
    src = root / "src" / "pyfuse3"
    reply = f"""
cdef bint splice_granted = False  # {MARK_FD}

def splice_write_granted():
    # Whether INIT asked the kernel to take replies by splice (Operations.enable_splice_write).
    return splice_granted

cdef int reply_from_fd(fuse_req_t req, int fd, off_t offset, size_t size):
    # A READ answered with `size` bytes of the file `fd` from `offset` (spliced if granted).
    cdef fuse_bufvec bufv
    cdef int ret
    bufv.count = 1
    bufv.idx = 0
    bufv.off = 0
    bufv.buf[0].size = size
    bufv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK
    bufv.buf[0].mem = NULL
    bufv.buf[0].fd = fd
    bufv.buf[0].pos = offset
    with nogil:
        ret = fuse_reply_data(req, &bufv, 0)
    return ret
"""
    _edit(src / "__init__.pyx", [(r"^cdef int session_fd", reply, "the session fd")], MARK_FD)
    init = f"""    global splice_granted  # {MARK_FD}
    if (getattr(operations, 'enable_splice_write', False) and
        conn.capable & FUSE_CAP_SPLICE_WRITE):
        conn.want |= FUSE_CAP_SPLICE_WRITE
        splice_granted = True
"""
    read = f"""        if isinstance(buf, tuple):  # {MARK_FD}: (fd, offset, size) of a file to reply from
            try:
                fd, offset, size = buf
                ret = reply_from_fd(c.req, fd, offset, size)
            except (TypeError, ValueError, OverflowError):
                log.exception('fuse_read(): not an (fd, offset, size) tuple: %r', buf)
                ret = fuse_reply_err(c.req, errno.EIO)
            if ret != 0:
                log.error('fuse_read(): fuse_reply_data failed with %s', strerror(-ret))
            return
"""
    _edit(
        src / "handlers.pxi",
        [
            (r"cdef void fuse_init \(void \*userdata, fuse_conn_info \*conn\):", init, "fuse_init"),
            (r"\s+buf = await operations\.read\(c\.fh, c\.off, c\.size\)", read, "fuse_read"),
        ],
        MARK_FD,
    )
    attr = f"    enable_splice_write: bool = False  # {MARK_FD}: fd replies are spliced\n"
    ops = src / "_pyfuse3.py"
    _edit(ops, [(r"\s+enable_writeback_cache: bool = ", attr, "Operations' attributes")], MARK_FD)
    stub = f"def splice_write_granted() -> bool: ...  # {MARK_FD}\n"
    _edit(src / "__init__.pyi", [(r"^def terminate\(\) -> None", stub, "the stubs")], MARK_FD)
    # Operations.read may return the tuple too (a subclass's wider return type type-checks).
    text = ops.read_text()
    wider = "size: int) -> Union[bytes, Tuple[int, int, int]]:"
    if wider not in text:
        text, n = re.subn(
            r"(async def read\(self, fh: FileHandleT, off: int, )size: int\) -> bytes:",
            lambda m: m.group(1) + wider,
            text,
            count=1,
        )
        if n != 1 or "from typing import " not in text:
            raise SystemExit("pyfuse3_passthrough: anchor for Operations.read's signature")
        ops.write_text(text.replace("from typing import ", "from typing import Union, ", 1))


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    patch(Path(sys.argv[1]))
    patch_fd_replies(Path(sys.argv[1]))


if __name__ == "__main__":
    main()
