"""Plain values of the draft store: keys, draft records, attributes, commit snapshots."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..names import alias_name, artifact_name, project_name

NAME_MAX = 255


def entry_name(name: str) -> str:
    """Validate one component of a path inside a draft (the SPEC's manifest path rules)."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise InvalidInput(f"invalid name {name!r} inside a draft")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"invalid name {name!r}: not valid UTF-8") from None
    if len(encoded) > NAME_MAX:
        raise InvalidInput(f"invalid name {name[:40]!r}…: over {NAME_MAX} bytes")
    return name


@dataclass(frozen=True, slots=True)
class DraftKey:
    """Which draft: a registry, an artifact in it, and the draft's directory name."""

    registry: str
    project: str
    artifact: str
    name: str

    def validate(self) -> DraftKey:
        project_name(self.project)
        artifact_name(self.artifact)
        alias_name(self.name)  # a draft name is any allowed alias name
        return self

    def __str__(self) -> str:
        return f"{self.project}/{self.artifact}/{self.name}"


@dataclass(frozen=True, slots=True)
class PendingCommit:
    """A commit sent to the registry whose outcome is not known yet (recorded before sending).

    ``floor`` is the highest version number of the artifact before the first attempt
    (-1: none), so a retry recognises its own version: number > floor and same digest.
    """

    digest: str
    floor: int
    started: float

    def to_text(self) -> str:
        return json.dumps({"digest": self.digest, "floor": self.floor, "started": self.started})

    @classmethod
    def from_text(cls, text: str | None) -> PendingCommit | None:
        if not text:
            return None
        try:
            d: Any = json.loads(text)
            return cls(str(d["digest"]), int(d["floor"]), float(d["started"]))
        except (ValueError, KeyError, TypeError):
            return None


class Draft:
    """A draft's record. ``committing`` is in memory only: a crash ends any commit."""

    __slots__ = ("base", "committing", "created", "id", "key", "pending", "root", "type")

    def __init__(
        self,
        id: int,
        key: DraftKey,
        base: int | None,
        type: str | None,
        created: float,
        root: int,
        pending: PendingCommit | None,
    ) -> None:
        self.id = id
        self.key = key
        self.base = base
        self.type = type
        self.created = created
        self.root = root
        self.pending = pending
        self.committing = False

    def __repr__(self) -> str:
        return f"Draft({self.id}, {self.key})"


@dataclass(frozen=True, slots=True)
class NodeStat:
    """Attributes of a file or directory inside a draft (``mode`` includes the file type)."""

    id: int
    draft: int
    mode: int
    size: int
    mtime_ns: int
    nlink: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """One file of a draft as a commit sees it.

    ``sha256`` is None when the content must be hashed; ``source`` is the local
    data file (None for an inherited file, whose bytes are in the registry).
    """

    path: str
    node: int
    size: int
    sha256: str | None
    source: Path | None
