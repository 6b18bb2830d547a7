"""What clients offer for what changes after a commit (issue 12): a protocol of its own next
to ``RegistryClient``, implemented by ``HttpRegistryClient`` (``http_meta.py``) and
``LocalRegistryClient``, and by the in-memory twin (``memory_edits.py``). The mount needs
none of it: it only reads tags and metadata, and moves aliases.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from ..errors import Unsupported
from ..models import ArtifactInfo, VersionInfo
from ..versionmeta import MERGE, MetaEdit
from .base import RegistryClient


class RegistryEditor(Protocol):
    async def edit_version(
        self,
        project: str,
        artifact: str,
        number: int,
        *,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        mode: str = MERGE,
        editor: str = "",
    ) -> VersionInfo:
        """Change a version's description and/or metadata (``merge`` or ``replace``); the
        edit is kept in its history. ``editor``: who, where the registry has no token."""
        ...

    async def edit_artifact(
        self,
        project: str,
        artifact: str,
        *,
        description: str | None = None,
        type: str | None = None,
        editor: str = "",
    ) -> ArtifactInfo: ...

    async def edit_history(self, project: str, artifact: str, number: int | None) -> list[MetaEdit]:
        """Edits of a version (None: of the artifact itself), oldest first."""
        ...

    async def change_tags(
        self,
        project: str,
        artifact: str,
        number: int,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> tuple[str, ...]: ...

    async def set_ttl(
        self, project: str, artifact: str, number: int, ttl: float | str | None
    ) -> float | None:
        """gc deletes the version ``ttl`` from now unless an alias holds it (None: never);
        returns when it expires."""
        ...

    async def protect_alias(
        self, project: str, artifact: str, alias: str, *, protect: bool = True
    ) -> None:
        """Only admin tokens may then move or remove it (and (un)protect it)."""
        ...

    async def delete_artifact(self, project: str, artifact: str, *, force: bool = False) -> int:
        """Delete every version; refused while aliases exist unless ``force``."""
        ...


def editor_of(client: RegistryClient) -> RegistryEditor:
    """The client's editing calls (every client of artfs has them)."""
    from ..refs.client import RefReadingClient
    from .http import HttpRegistryClient
    from .local import LocalRegistryClient
    from .memory import MemoryRegistryClient

    if isinstance(client, RefReadingClient):  # reads refs; edits go to the registry's client
        client = client.inner
    if isinstance(client, HttpRegistryClient | LocalRegistryClient | MemoryRegistryClient):
        return client
    raise Unsupported("this registry client cannot edit versions")
