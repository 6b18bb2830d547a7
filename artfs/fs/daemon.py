"""Running a mount: mount and serve under trio, unmount cleanly, and the background start.

pyfuse3 keeps one session per process in module globals, so a process runs at
most one mount at a time (``run_mount`` refuses a second).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyfuse3
import trio

from ..cache.protocol import BlobCacheAPI
from ..client.base import RegistryClient
from ..drafts.store import DraftStore
from ..errors import AlreadyExists, ArtfsError, Conflict, InvalidInput, NotFound, Unavailable
from . import splicing
from .fuse_ops import FuseOperations, KernelBacking, invalidate_entry, splice_granted
from .options import MountOptions
from .passthrough import OFF_BY_OPTION, PassthroughState, probe
from .service import ArtfsFS

log = logging.getLogger(__name__)

READ_AHEAD_KB = 1024  # 1 MiB read requests instead of 128 KiB (notes/fuse-performance.md)
FSNAME = "artfs"
_active = threading.Lock()


# --- /proc/self/mountinfo ---------------------------------------------------------------
def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    if "\\" not in field:
        return field
    raw = field.encode()
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 4 <= len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def canonical(mountpoint: str | os.PathLike[str]) -> str:
    """The path mountinfo shows: symlinks resolved in the parent, never by touching the mount.

    ``realpath`` of the mountpoint itself would lstat it, which waits for its daemon.
    """
    path = os.path.abspath(mountpoint)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def fuse_mounts(mountpoint: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """(mount id, ``major:minor``) of every FUSE mount stacked at ``mountpoint``.

    Read from mountinfo rather than by ``stat``: stat on a FUSE mount waits for
    its daemon, which may be ourselves or hung.
    """
    target = canonical(mountpoint)
    found: list[tuple[int, str]] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split(" ")
        try:
            sep = fields.index("-")
            mount_id, device, point, fstype = int(fields[0]), fields[2], fields[4], fields[sep + 1]
        except (ValueError, IndexError):
            continue
        if _unescape(point) == target and (fstype == "fuse" or fstype.startswith("fuse.")):
            found.append((mount_id, device))
    return found


def is_fuse_mount(mountpoint: str | os.PathLike[str]) -> bool:
    return bool(fuse_mounts(mountpoint))


def raise_read_ahead(mountpoint: str, kb: int = READ_AHEAD_KB) -> bool:
    """Let the kernel send 1 MiB reads; best effort (needs root or a writable sysfs)."""
    mounts = fuse_mounts(mountpoint)
    if not mounts:
        return False
    device = mounts[-1][1]
    try:
        Path(f"/sys/class/bdi/{device}/read_ahead_kb").write_text(f"{kb}\n")
    except OSError as e:
        log.info("could not raise read-ahead for %s (%s): %s", mountpoint, device, e)
        return False
    return True


# --- the mount itself ---------------------------------------------------------------------
def fuse_options(options: MountOptions) -> set[str]:
    """Not ``ro``: drafts will be writable; versions refuse writes themselves (EROFS)."""
    opts = {f"fsname={FSNAME}", f"subtype={FSNAME}", "default_permissions"}
    if options.allow_other:
        opts.add("allow_other")
    return opts


async def run_mount(
    mountpoint: str | os.PathLike[str],
    client: RegistryClient,
    cache: BlobCacheAPI,
    options: MountOptions | None = None,
    *,
    drafts: DraftStore | None = None,
    ready: Callable[[ArtfsFS], None] | None = None,
    task_status: trio.TaskStatus[ArtfsFS] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Mount the registry at ``mountpoint`` and serve until unmounted, signalled or cancelled.

    Reports the service through ``task_status`` once mounted (requests the
    kernel sends meanwhile wait in its queue). SIGTERM/SIGINT (when run in the
    main thread) end the loop; the mount is always closed and unmounted on exit.
    ``drafts`` (the state directory's store, owned by this mount) makes it writable.
    ``ready(fs)`` is called once the kernel has finished INIT and the mount knows whether
    it can use passthrough (``fs.passthrough``).
    """
    options = options or MountOptions()
    point = canonical(mountpoint)
    if not os.path.isdir(point):
        raise InvalidInput(f"mountpoint {point} is not a directory")
    if not _active.acquire(blocking=False):
        raise Conflict("this process already runs a mount (pyfuse3 allows one per process)")
    try:
        fs = ArtfsFS(client, cache, options, drafts=drafts, invalidate=invalidate_entry)
        try:
            pyfuse3.init(FuseOperations(fs), point, fuse_options(options))
        except RuntimeError as e:
            raise ArtfsError(f"could not mount at {point}: {e} (is /dev/fuse usable?)") from None
        try:
            log.info("mounted at %s", point)
            async with fs.running(), trio.open_nursery() as nursery:
                if threading.current_thread() is threading.main_thread():
                    await nursery.start(_terminate_on_signals)
                nursery.start_soon(_tune_when_ready, point, fs, ready)
                task_status.started(fs)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await fs.aclose()
            pyfuse3.close(unmount=True)
            log.info("unmounted %s", point)
    finally:
        _active.release()


async def _tune_when_ready(
    point: str, fs: ArtfsFS, ready: Callable[[ArtfsFS], None] | None
) -> None:
    """Raise read-ahead and decide on passthrough once the kernel has finished INIT (INIT
    would reset read-ahead, and grants passthrough).

    A stat of the mount root is answered only after INIT, by this very loop, so
    it runs in a worker thread; it is abandoned if the loop ends first.
    """
    try:
        await trio.to_thread.run_sync(os.stat, point, abandon_on_cancel=True)
    except OSError as e:
        log.warning("the new mount at %s does not answer: %s", point, e)
        return
    raise_read_ahead(point)
    _decide_passthrough(fs)
    _decide_replies(fs)
    if ready is not None:
        ready(fs)


def _decide_passthrough(fs: ArtfsFS) -> None:
    """Probe FUSE passthrough where the mount keeps files (cache, drafts); say once why not."""
    if not fs.options.passthrough:
        state = OFF_BY_OPTION
    elif (why := KernelBacking.unavailable()) is not None:
        state = PassthroughState(False, why)
    else:
        dirs = [fs.cache.root]
        if fs.drafts is not None:
            dirs.append(fs.drafts.store.data_dir)
        state = probe(KernelBacking(), dirs)
    fs.use_passthrough(KernelBacking() if state.on else None, state)
    if state.on:
        log.info("passthrough: on (cached blobs and draft files are read by the kernel)")
    else:
        log.info("passthrough: off, reads go through the daemon: %s", state.reason)


def _decide_replies(fs: ArtfsFS) -> None:
    """Answer READs from the cache file where libfuse will splice them (splicing.py)."""
    granted = splice_granted()
    state = splicing.decide(
        wanted=fs.options.splice,
        patched=granted is not None,
        granted=bool(granted),
        fits=splicing.pipe_fits(),
    )
    fs.use_replies(state)
    log.info("READ replies: %s", state.mode)


async def _terminate_on_signals(*, task_status: trio.TaskStatus[None]) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            log.info("received %s, unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return


# --- for the CLI --------------------------------------------------------------------------
def _fusermount() -> str:
    for name in ("fusermount3", "fusermount"):
        path = shutil.which(name)
        if path:
            return path
    raise NotFound("fusermount3 not found: install the fuse3 package")


def unmount(mountpoint: str | os.PathLike[str], *, timeout: float = 30.0) -> bool:
    """Unmount; True if clean, False if it had to be lazy (files still open).

    A lazy unmount detaches the mount now and finishes when the last open file
    closes; the daemon exits then.
    """
    point = canonical(mountpoint)
    if not is_fuse_mount(point):
        raise NotFound(f"{point} is not a mounted artfs filesystem")
    tool = _fusermount()
    first = subprocess.run([tool, "-u", point], capture_output=True, text=True, timeout=timeout)
    if first.returncode == 0:
        return True
    lazy = subprocess.run(
        [tool, "-u", "-z", point], capture_output=True, text=True, timeout=timeout
    )
    if lazy.returncode != 0 and is_fuse_mount(point):
        reason = (lazy.stderr or first.stderr).strip()
        raise Conflict(f"could not unmount {point}: {reason}")
    log.warning("%s was busy (%s); unmounted lazily", point, first.stderr.strip())
    return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def mount_background(
    argv: Sequence[str],
    mountpoint: str | os.PathLike[str],
    *,
    log_path: Path,
    timeout: float = 30.0,
) -> int:
    """Start ``argv`` (the mount command run with ``--foreground``) detached; return its pid.

    The child runs in its own session with its output appended to ``log_path``.
    Returns once a new FUSE mount shows up at ``mountpoint``; if the child exits
    first, or nothing shows up within ``timeout``, raise with its last log lines.
    """
    point = canonical(mountpoint)
    if is_fuse_mount(point):
        raise AlreadyExists(f"{point} is already mounted; run 'artfs umount {point}' first")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as out:
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while True:
        if is_fuse_mount(point):
            return child.pid
        status = child.poll()
        if status is not None:
            raise ArtfsError(
                f"the mount daemon exited with status {status} before {point} was mounted; "
                f"its log ({log_path}) ends with:\n{_new_tail(log_path, offset)}"
            )
        if time.monotonic() > deadline:
            child.terminate()
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
            raise Unavailable(
                f"{point} was not mounted within {timeout:g} s; "
                f"the log ({log_path}) ends with:\n{_new_tail(log_path, offset)}"
            )
        time.sleep(0.05)


def _new_tail(path: Path, offset: int) -> str:
    """The last lines this child wrote (the log is shared by earlier runs)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return _tail(path)
    return "\n".join(text.splitlines()[-20:]) or "(nothing)"
