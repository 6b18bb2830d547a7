"""Where things live by default, and the parsing of user-given sizes and durations."""

from __future__ import annotations

import getpass
import os
import re
import socket
from pathlib import Path

from .errors import InvalidInput

DEFAULT_REGISTRY = "http://127.0.0.1:8765"
DEFAULT_TIMEOUT = 10.0
DEFAULT_TTL = 5.0

_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?)(i?b?)\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """``'10G'``, ``'512MiB'``, ``'1.5g'``, ``'4096'`` -> bytes (binary units)."""
    m = _SIZE_RE.fullmatch(text)
    if not m:
        raise InvalidInput(
            f"invalid size {text!r}: use a number with an optional unit, e.g. 512M or 20G"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


_DURATION_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``'1h'``, ``'30m'``, ``'2d'``, ``'1.5h'``, ``'90'`` (seconds) -> seconds."""
    m = _DURATION_RE.fullmatch(text)
    if not m:
        raise InvalidInput(
            f"invalid duration {text!r}: use a number with an optional unit s, m, h, d or w, "
            "e.g. 1h or 90m"
        )
    return float(m.group(1)) * _SECONDS[m.group(2).lower()]


def registry_from(arg: str | None) -> str:
    return arg or os.environ.get("ARTFS_REGISTRY") or DEFAULT_REGISTRY


def cache_dir_from(arg: str | None) -> Path:
    if arg:
        return Path(arg).expanduser().absolute()
    if env := os.environ.get("ARTFS_CACHE_DIR"):
        return Path(env).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "artfs"


def state_dir_from(arg: str | None) -> Path:
    """Where a mount keeps its drafts: ``--state-dir``, $ARTFS_STATE_DIR, or ~/.local/state/artfs."""
    if arg:
        return Path(arg).expanduser().absolute()
    if env := os.environ.get("ARTFS_STATE_DIR"):
        return Path(env).expanduser().absolute()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "artfs"


def runtime_dir() -> Path:
    """Per-user directory for facts about running mounts (which registry a mountpoint shows)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/artfs-{os.getuid()}"
    path = Path(base) / "artfs-mounts" if os.environ.get("XDG_RUNTIME_DIR") else Path(base)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def creator() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
