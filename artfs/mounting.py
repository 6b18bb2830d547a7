"""``artfs mount`` and ``artfs umount``: wiring the client, the cache and the filesystem together.

Without ``--foreground`` the command re-runs itself with ``--foreground`` in a new
session and returns once the kernel shows the mount (``fs.daemon.mount_background``).
The foreground process owns everything: one trio run holding the client, the cache
(and its fetch tasks) and the FUSE session, closed in that order's reverse.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

import trio

from . import config
from .cache.blobcache import BlobCache
from .cache.settings import CacheTuning
from .client import open_client
from .drafts.store import DraftStore
from .errors import InvalidInput
from .fs.daemon import canonical, is_fuse_mount, mount_background, run_mount, unmount
from .fs.options import MountOptions, passthrough_default
from .fs.service import ArtfsFS
from .fs.siblings import SiblingTuning
from .heap import freeze_startup_heap
from .mountinfo import read_record, remove_record, write_record


def _registry(args: argparse.Namespace) -> str:
    registry = config.registry_from(args.registry)
    if not registry.startswith(("http://", "https://")):
        path = Path(registry).expanduser().absolute()
        if not (path / "registry.db").exists():
            raise InvalidInput(
                f"{path} is not a registry directory (no registry.db); give a URL or a registry dir"
            )
        registry = str(path)
    return registry


def _options(args: argparse.Namespace, registry: str) -> MountOptions:
    return MountOptions(
        listing_ttl=args.ttl,
        xattrs=args.xattrs,
        allow_other=args.allow_other,
        siblings=SiblingTuning(maximum=args.dir_readahead),
        source=registry,
        meta_timeout=args.timeout,
        read_timeout=max(30.0, 6 * args.timeout),
        passthrough=passthrough_default() and not args.no_passthrough,
        observe_inputs=not args.no_observed_inputs,
    )


def mount_command(args: argparse.Namespace) -> int:
    registry = _registry(args)
    point = canonical(args.mountpoint)
    if is_fuse_mount(point):  # (before any stat: a dead mount answers ENOTCONN)
        _replace_dead_mount(point)
    if not os.path.isdir(point):
        raise InvalidInput(f"mountpoint {point} is not a directory (create it first)")
    if not args.nonempty and os.listdir(point):
        raise InvalidInput(
            f"mountpoint {point} is not empty: mounting would hide its files "
            "(--nonempty mounts over them anyway)"
        )
    cache_dir = config.cache_dir_from(args.cache_dir)
    state_dir = default_state_dir(point, args.state_dir)
    max_bytes = config.parse_size(args.cache_size) if args.cache_size else None
    options = _options(args, registry)
    tuning = CacheTuning(timeout=max(args.timeout, 5.0), random_fill_after=args.random_fill)
    if not args.foreground:
        argv = [
            sys.executable,
            "-m",
            "artfs.cli",
            "mount",
            point,
            "--foreground",
            "--registry",
            registry,
            "--cache-dir",
            str(cache_dir),
            "--state-dir",
            str(state_dir),
            "--ttl",
            str(args.ttl),
            "--timeout",
            str(args.timeout),
            "--dir-readahead",
            str(args.dir_readahead),
            "--random-fill",
            str(args.random_fill),
        ]
        if args.cache_size:
            argv += ["--cache-size", args.cache_size]
        for flag in (
            "xattrs",
            "allow_other",
            "debug",
            "no_passthrough",
            "no_observed_inputs",
            "nonempty",
        ):
            if getattr(args, flag):
                argv.append("--" + flag.replace("_", "-"))
        log_path = (
            Path(args.log).expanduser().absolute()
            if args.log
            else config.runtime_dir() / f"mount-{mount_key(point)}.log"
        )
        mount_background(argv, point, log_path=log_path, timeout=max(30.0, 3 * args.timeout))
        print(f"mounted {registry} at {point} (log: {log_path})", file=sys.stderr)
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.debug:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    trio.run(_serve, registry, point, cache_dir, state_dir, max_bytes, options, tuning)
    return 0


async def _serve(
    registry: str,
    point: str,
    cache_dir: Path,
    state_dir: Path,
    max_bytes: int | None,
    options: MountOptions,
    tuning: CacheTuning,
) -> None:
    drafts = DraftStore(state_dir, owner=True)  # refuses a state dir another mount holds
    client = open_client(registry, timeout=options.meta_timeout)
    freeze_startup_heap()  # (one full collection took 11-23 ms, inside the first `stat`)
    try:
        async with (
            BlobCache(
                cache_dir,
                client,
                max_bytes=max_bytes,
                tuning=tuning,
            ) as cache,
            trio.open_nursery() as nursery,
        ):
            record = functools.partial(
                write_record, Path(point), registry, cache_dir, os.getpid(), state_dir
            )

            def ready(fs: ArtfsFS) -> None:
                record(mode=fs.passthrough.mode, replies=fs.replies.mode)

            mount = functools.partial(run_mount, drafts=drafts, ready=ready)
            await nursery.start(mount, point, client, cache, options)
            record()
    finally:
        remove_record(Path(point))
        with trio.CancelScope(shield=True):
            await client.aclose()
        drafts.close()


def default_state_dir(mountpoint: str, arg: str | None) -> Path:
    """``--state-dir``, else one directory per mountpoint, so that two mounts never share
    drafts by accident and a remount at the same place finds its drafts again."""
    if arg:
        return config.state_dir_from(arg)
    return config.state_dir_from(None) / "mounts" / mount_key(mountpoint)


def mount_key(mountpoint: str) -> str:
    """A readable, unique file name for a mountpoint (its state dir, its log)."""
    key = mountpoint.strip("/").replace("/", "_")[-100:] or "root"
    return f"{key}-{hashlib.sha1(mountpoint.encode()).hexdigest()[:8]}"


def _replace_dead_mount(point: str) -> None:
    """Clear the mount a killed daemon left behind ("Transport endpoint is not connected"),
    so that remounting after a crash (a service manager restarting it) just works. A mount
    whose daemon is alive, or one artfs did not record, is refused as before. Never touches
    the mountpoint itself: a hung daemon would hang this process too."""
    record = read_record(Path(point))
    pid = int(record.get("pid", 0)) if record else 0
    if pid <= 0 or _daemon_alive(pid):
        raise InvalidInput(f"{point} is already mounted; run 'artfs umount {point}' first")
    print(f"replacing the mount at {point}: its daemon (pid {pid}) is gone", file=sys.stderr)
    unmount(point)
    remove_record(Path(point))


def _daemon_alive(pid: int) -> bool:
    """Whether ``pid`` is a running artfs mount daemon (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"artfs" in cmdline and b"mount" in cmdline


def umount_command(args: argparse.Namespace) -> int:
    point = canonical(args.mountpoint)
    record = read_record(Path(point))
    clean = unmount(point)
    remove_record(Path(point))
    if record and clean:
        _wait_exit(int(record.get("pid", 0)), 15.0)
    print(
        f"unmounted {point}" + ("" if clean else " (lazily: files were still open)"),
        file=sys.stderr,
    )
    return 0


def _wait_exit(pid: int, timeout: float) -> None:
    """Wait for the daemon to finish closing its cache (it exits once unmounted)."""
    if pid <= 0 or pid == os.getpid():
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
