"""Registry records as plain immutable values, with their JSON wire form.

The same classes are returned by the registry core, sent by the server and
rebuilt by the HTTP client, so both clients hand the mount identical values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError


def _optional_time(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    name: str
    created: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "created": self.created}

    @classmethod
    def from_json(cls, d: Any) -> ProjectInfo:
        try:
            return cls(str(d["name"]), float(d["created"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"malformed project record: {e}") from None


@dataclass(frozen=True, slots=True)
class VersionSummary:
    """What a listing of an artifact says of each version (no manifest, no metadata)."""

    number: int
    digest: str
    created: float
    file_count: int
    total_size: int
    damaged: int = 0  # blobs of it the server found damaged or missing (registry/integrity.py)
    tags: tuple[str, ...] = ()  # editable after the commit (versionmeta.py)
    expires: float | None = None  # artfs gc deletes it from then on, unless an alias holds it

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "digest": self.digest,
            "created": self.created,
            "file_count": self.file_count,
            "total_size": self.total_size,
            "damaged": self.damaged,
            "tags": list(self.tags),
            "expires": self.expires,
        }

    @classmethod
    def from_json(cls, d: Any) -> VersionSummary:
        try:
            return cls(
                int(d["number"]),
                str(d["digest"]),
                float(d["created"]),
                int(d["file_count"]),
                int(d["total_size"]),
                int(d.get("damaged", 0)),
                tuple(str(t) for t in d.get("tags", [])),
                _optional_time(d.get("expires")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"malformed version summary: {e}") from None


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """An artifact with its versions and aliases: one request answers a whole ``ls``."""

    project: str
    name: str
    type: str
    description: str
    created: float
    versions: tuple[VersionSummary, ...] = ()
    aliases: dict[str, int] = field(default_factory=dict)
    protected: tuple[str, ...] = ()  # aliases only an admin token moves (artfs alias protect)

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "created": self.created,
            "versions": [v.to_json() for v in self.versions],
            "aliases": dict(self.aliases),
            "protected": list(self.protected),
        }

    @classmethod
    def from_json(cls, d: Any) -> ArtifactInfo:
        try:
            return cls(
                str(d["project"]),
                str(d["name"]),
                str(d["type"]),
                str(d["description"]),
                float(d["created"]),
                tuple(VersionSummary.from_json(v) for v in d.get("versions", [])),
                {str(k): int(v) for k, v in d.get("aliases", {}).items()},
                tuple(str(a) for a in d.get("protected", [])),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProtocolError(f"malformed artifact record: {e}") from None


@dataclass(frozen=True, slots=True)
class VersionInput:
    """A version another version was made from (its lineage), as resolved at commit time.

    ``hidden``: the input is in a project the reader may not read; its names, number and
    digest are withheld (``HIDDEN_INPUT``, on the wire ``{"hidden": true}``), its place in
    the list kept, so a reader sees that the lineage goes on without seeing where.

    ``kind``: ``"declared"`` (named by the committer) or ``"observed"`` (recorded by a mount
    from what the writers read); None where the answer does not say (an older server, or
    ``used_by``). On the wire only when set, so older readers see what they always saw."""

    project: str
    artifact: str
    number: int
    digest: str  # of that version's manifest: the exact bytes used, even if it is deleted
    hidden: bool = False
    kind: str | None = None

    @property
    def ref(self) -> str:
        if self.hidden:
            return HIDDEN_REF
        return f"{self.project}/{self.artifact}:v{self.number}"

    def to_json(self) -> dict[str, Any]:
        if self.hidden:
            return {"hidden": True}
        out: dict[str, Any] = {
            "project": self.project,
            "artifact": self.artifact,
            "number": self.number,
            "digest": self.digest,
        }
        if self.kind is not None:
            out["kind"] = self.kind
        return out

    @classmethod
    def from_json(cls, d: Any) -> VersionInput:
        try:
            if d.get("hidden") is True:
                return HIDDEN_INPUT
            kind = d.get("kind")
            return cls(
                str(d["project"]),
                str(d["artifact"]),
                int(d["number"]),
                str(d["digest"]),
                kind=kind if kind in INPUT_KINDS else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProtocolError(f"malformed lineage input: {e}") from None


DECLARED = "declared"
OBSERVED = "observed"
INPUT_KINDS = (DECLARED, OBSERVED)

HIDDEN_REF = "(hidden)"
"""How a hidden lineage input is shown (CLI, ``user.artfs.inputs``): never a valid ref."""
HIDDEN_INPUT = VersionInput("", "", -1, "", hidden=True)


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """Everything about one version except its manifest."""

    project: str
    artifact: str
    number: int
    digest: str
    created: float
    creator: str
    description: str
    metadata: dict[str, Any]
    parent: int | None
    file_count: int
    total_size: int
    aliases: tuple[str, ...] = ()
    artifact_type: str = ""
    inputs: tuple[VersionInput, ...] = ()  # lineage: the versions it was made from
    damaged: int = 0  # blobs of it the server found damaged or missing: reads of them fail
    tags: tuple[str, ...] = ()  # editable after the commit, like description and metadata
    expires: float | None = None  # artfs gc deletes it from then on, unless an alias holds it

    @property
    def ref(self) -> str:
        return f"{self.project}/{self.artifact}:v{self.number}"

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "artifact": self.artifact,
            "number": self.number,
            "digest": self.digest,
            "created": self.created,
            "creator": self.creator,
            "description": self.description,
            "metadata": self.metadata,
            "parent": self.parent,
            "file_count": self.file_count,
            "total_size": self.total_size,
            "aliases": list(self.aliases),
            "artifact_type": self.artifact_type,
            "inputs": [i.to_json() for i in self.inputs],
            "damaged": self.damaged,
            "tags": list(self.tags),
            "expires": self.expires,
        }

    @classmethod
    def from_json(cls, d: Any) -> VersionInfo:
        try:
            parent = d.get("parent")
            return cls(
                str(d["project"]),
                str(d["artifact"]),
                int(d["number"]),
                str(d["digest"]),
                float(d["created"]),
                str(d["creator"]),
                str(d["description"]),
                dict(d["metadata"]),
                None if parent is None else int(parent),
                int(d["file_count"]),
                int(d["total_size"]),
                tuple(str(a) for a in d.get("aliases", [])),
                str(d.get("artifact_type", "")),
                tuple(VersionInput.from_json(i) for i in d.get("inputs", [])),
                int(d.get("damaged", 0)),
                tuple(str(t) for t in d.get("tags", [])),
                _optional_time(d.get("expires")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProtocolError(f"malformed version record: {e}") from None


@dataclass(frozen=True, slots=True)
class CommitResult:
    version: VersionInfo
    created: bool  # False: identical to a live version, which was returned (and matched)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"version": self.version.to_json(), "created": self.created}
        if not self.created:
            body["matched"] = self.version.ref  # the version whose content it repeats
        return body

    @classmethod
    def from_json(cls, d: Any) -> CommitResult:
        try:
            return cls(VersionInfo.from_json(d["version"]), bool(d["created"]))
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"malformed commit result: {e}") from None
