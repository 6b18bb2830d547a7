"""Records of running mounts, so ``artfs info PATH`` works without xattrs.

When a mount is ready, a small JSON record (mountpoint, registry, cache dir,
pid) is written under ``config.runtime_dir()``; it is removed on unmount. A
path is mapped back to ``project/artifact:vN`` + a path inside the version.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config
from .errors import InvalidInput, NotFound
from .progress import iso_time


def _record_path(mountpoint: Path) -> Path:
    key = hashlib.sha1(str(mountpoint).encode()).hexdigest()[:16]
    return config.runtime_dir() / f"mount-{key}.json"


def _canonical(mountpoint: Path) -> Path:
    """Resolve symlinks in the parent only: ``realpath`` of a mountpoint stats it, which
    would wait on the mount's own daemon (a deadlock when the daemon itself calls this)."""
    path = os.path.abspath(mountpoint)
    return Path(os.path.realpath(os.path.dirname(path))) / os.path.basename(path)


def write_record(
    mountpoint: Path,
    registry: str,
    cache_dir: Path,
    pid: int,
    state_dir: Path | None = None,
    mode: str = "starting",
    replies: str = "starting",
) -> None:
    """``mode``: how the mount reads cached files ("passthrough", or why not); ``replies``:
    how the daemon answers the READs it gets (fs/splicing.py)."""
    mountpoint = _canonical(mountpoint)
    data = {
        "mountpoint": str(mountpoint),
        "registry": registry,
        "cache_dir": str(cache_dir),
        "pid": pid,
        "state_dir": str(state_dir) if state_dir else None,
        "mode": mode,
        "replies": replies,
    }
    path = _record_path(mountpoint)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


REFUSAL_FILE = "last-refusal.json"


def write_refusal(state_dir: Path, op: str, message: str) -> None:
    """The reason of the mount's last EINVAL (``mkdir v9``, an alias link to a version that
    does not exist): the errno alone says "Invalid argument"; ``artfs info MOUNT`` shows
    this. Best effort: a refusal is answered whether or not its reason could be kept."""
    path = Path(state_dir) / REFUSAL_FILE
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({"at": time.time(), "op": op, "message": message}))
        tmp.replace(path)
    except OSError:
        pass


def read_refusal(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(state_dir) / REFUSAL_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_record(mountpoint: Path) -> None:
    try:
        _record_path(_canonical(mountpoint)).unlink()
    except FileNotFoundError:
        pass


def read_record(mountpoint: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(_record_path(mountpoint).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def mount_facts(path: Path) -> dict[str, Any] | None:
    """What ``artfs info MOUNTPOINT`` shows: the running mount's record (None if ``path`` is
    not the mountpoint of a running artfs mount)."""
    record = read_record(_canonical(path))
    if record is None or not os.path.ismount(_canonical(path)):
        return None
    state = record.get("state_dir")
    refusal = read_refusal(Path(state)) if isinstance(state, str) else None
    if refusal is not None:
        at = refusal.get("at")
        record["last_refusal"] = {
            "at": iso_time(at) if isinstance(at, int | float) else None,
            "op": refusal.get("op"),
            "message": refusal.get("message"),
        }
    return record


@dataclass(frozen=True, slots=True)
class Located:
    mountpoint: Path
    registry: str
    cache_dir: Path
    ref: str  # project/artifact[:vN]
    sub_path: str  # path inside the version, '' for the version itself


def locate(path: Path) -> Located:
    """Map a path inside an artfs mount to its registry, reference and path inside the version."""
    real = Path(os.path.realpath(path))  # a client process: stat through the mount is fine
    for candidate in [real, *real.parents]:
        record = read_record(candidate)
        if record is not None and os.path.ismount(candidate):
            rel = real.relative_to(candidate).parts
            if len(rel) < 2:
                raise InvalidInput(f"{path}: not inside an artifact of the mount at {candidate}")
            ref = f"{rel[0]}/{rel[1]}"
            if len(rel) >= 3:
                ref += f":{rel[2]}"
            return Located(
                candidate,
                str(record["registry"]),
                Path(str(record["cache_dir"])),
                ref,
                "/".join(rel[3:]),
            )
    raise NotFound(f"{path}: not inside a running artfs mount")


def running_records() -> list[dict[str, Any]]:
    """Records of mounts that are running now (their daemon alive, their mountpoint mounted)."""
    from .fs.daemon import is_fuse_mount  # late: the daemon module pulls in pyfuse3

    found: list[dict[str, Any]] = []
    for path in sorted(config.runtime_dir().glob("mount-*.json")):
        try:
            data = json.loads(path.read_text())
            pid = int(data["pid"])
            point = str(data["mountpoint"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        if is_fuse_mount(point):
            found.append(data)
    return found
