"""What the registry core needs from metadata storage.

``MetaStore`` is the seam between the pure registry logic (``core.py``) and a
database. Every method is one atomic transaction; the store owns locking and
numbering, so two server processes on one database can't hand out the same
version number. ``sqlite.py`` is the embedded implementation; ``postgres.py``
implements the same methods (``SELECT ... FOR UPDATE`` on the artifact row where
SQLite uses ``BEGIN IMMEDIATE``). Both share their queries (``sqlbase.py``).

Names reaching a store are already validated; values coming back are the
records of ``artfs.models``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..auth import TokenInfo
from ..client.base import Expect
from ..models import ArtifactInfo, ProjectInfo, VersionInfo


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A version about to be committed; the store assigns its number."""

    digest: str
    created: float
    creator: str
    description: str
    metadata_json: str
    parent: int | None
    file_count: int
    total_size: int
    manifest_gz: bytes  # gzip of the manifest's compact JSON wire form (see core.encode_manifest)


class MetaStore(Protocol):
    def registry_id(self) -> str:
        """A uuid created once, when the store is first initialised."""
        ...

    def create_project(self, name: str, created: float, *, exist_ok: bool) -> ProjectInfo: ...

    def get_project(self, name: str) -> ProjectInfo: ...

    def list_projects(self) -> list[ProjectInfo]: ...

    def create_artifact(
        self,
        project: str,
        name: str,
        type: str,
        description: str,
        created: float,
        *,
        exist_ok: bool,
    ) -> ArtifactInfo:
        """``exist_ok`` returns an existing artifact of the same type; another type: Conflict."""
        ...

    def get_artifact(self, project: str, name: str) -> ArtifactInfo:
        """The artifact with its live versions (oldest first) and aliases."""
        ...

    def list_artifacts(self, project: str) -> list[ArtifactInfo]: ...

    def get_version(self, project: str, artifact: str, number: int) -> VersionInfo: ...

    def resolve_alias(self, project: str, artifact: str, alias: str) -> int: ...

    def get_manifest_gz(self, project: str, artifact: str, number: int) -> tuple[str, bytes]:
        """(digest, gzip JSON) of a live version's manifest."""
        ...

    def commit(
        self, project: str, artifact: str, new: NewVersion, aliases: list[str]
    ) -> tuple[VersionInfo, bool]:
        """Atomically: if ``new.digest`` equals latest's, apply ``aliases`` to latest and return
        (latest, False); else store the version under the next number, point ``latest`` and
        ``aliases`` at it and return (it, True)."""
        ...

    def set_alias(
        self, project: str, artifact: str, alias: str, number: int, expect: Expect
    ) -> None: ...

    def delete_alias(self, project: str, artifact: str, alias: str, expect: Expect) -> None: ...

    def delete_version(self, project: str, artifact: str, number: int, *, force: bool) -> None:
        """Mark a version deleted (its number is never reused) and drop its manifest and aliases;
        ``latest`` moves to the newest remaining version. Without ``force``, refused with
        Conflict while aliases other than ``latest`` point at it."""
        ...

    # Access tokens (artfs/auth.py): the store holds the sha256 of each secret, never the secret.
    def create_token(
        self, name: str, secret_sha256: str, created: float, grants: dict[str, str]
    ) -> TokenInfo:
        """AlreadyExists if a live (unrevoked) token has this name."""
        ...

    def list_tokens(self) -> list[TokenInfo]:
        """Every token, revoked ones included, by name."""
        ...

    def revoke_token(self, name: str, revoked: float) -> TokenInfo:
        """Revoke the live token ``name``; NotFound if there is none."""
        ...

    def find_token(self, secret_sha256: str) -> TokenInfo | None:
        """The token whose secret hashes to ``secret_sha256`` (revoked or not), or None."""
        ...

    def close(self) -> None: ...
