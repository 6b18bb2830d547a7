"""The in-memory twin's side of ``editing.RegistryEditor`` (what changes after a commit),
mixed into ``MemoryRegistryClient``: the same rules as the registry (``registry/editing.py``)
for tests that need no database. In-process, so it is an admin: protection is recorded
and listed, never enforced."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

from ..errors import Conflict, InvalidInput, NotFound
from ..manifest import Manifest
from ..models import ArtifactInfo, VersionInfo
from ..names import LATEST, alias_name
from ..registry.core import MAX_DESCRIPTION, _text, artifact_type, metadata_json
from ..versionmeta import MERGE, MetaEdit, edit_mode, edited_metadata, parse_ttl, tag_set


class MemoryEdits:
    artifacts: dict[tuple[str, str], ArtifactInfo]
    versions: dict[tuple[str, str, int], tuple[VersionInfo, Manifest]]
    requests: int

    def _art(self, project: str, artifact: str) -> ArtifactInfo:
        raise NotImplementedError

    def _with_aliases(self, info: VersionInfo) -> VersionInfo:
        raise NotImplementedError

    @property
    def _edits(self) -> dict[tuple[str, str, int | None], list[MetaEdit]]:
        found: dict[tuple[str, str, int | None], list[MetaEdit]] | None = getattr(
            self, "_edit_log", None
        )
        if found is None:
            found = {}
            self._edit_log = found
        return found

    def _live(self, project: str, artifact: str, number: int) -> VersionInfo:
        self.requests += 1
        self._art(project, artifact)
        try:
            return self.versions[(project, artifact, number)][0]
        except KeyError:
            raise NotFound(f"version {project}/{artifact}:v{number} not found") from None

    def _store(self, info: VersionInfo) -> VersionInfo:
        key = (info.project, info.artifact, info.number)
        self.versions[key] = (info, self.versions[key][1])
        art = self._art(info.project, info.artifact)
        summaries = tuple(
            dataclasses.replace(v, tags=info.tags, expires=info.expires)
            if v.number == info.number
            else v
            for v in art.versions
        )
        self.artifacts[(art.project, art.name)] = dataclasses.replace(art, versions=summaries)
        return self._with_aliases(info)

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
        info = self._live(project, artifact, number)
        mode = edit_mode(mode)
        if description is None and metadata is None:
            raise InvalidInput("an edit needs a description or metadata (or both)")
        new_meta = info.metadata
        if metadata is not None:
            metadata_json(metadata)
            new_meta = edited_metadata(info.metadata, metadata, mode)
            metadata_json(new_meta)
        new_description = (
            info.description
            if description is None
            else _text(description, "description", MAX_DESCRIPTION)
        )
        changes: dict[str, list[Any]] = {}
        if new_description != info.description:
            changes["description"] = [info.description, new_description]
        if new_meta != info.metadata:
            changes["metadata"] = [info.metadata, new_meta]
        if changes:
            self._edits.setdefault((project, artifact, number), []).append(
                MetaEdit(time.time(), editor, changes)
            )
        edited = dataclasses.replace(info, description=new_description, metadata=new_meta)
        return self._store(edited)

    async def edit_artifact(
        self,
        project: str,
        artifact: str,
        *,
        description: str | None = None,
        type: str | None = None,
        editor: str = "",
    ) -> ArtifactInfo:
        self.requests += 1
        art = self._art(project, artifact)
        if description is None and type is None:
            raise InvalidInput("an artifact edit needs a description or a type (or both)")
        changes: dict[str, list[Any]] = {}
        if description is not None and description != art.description:
            changes["description"] = [art.description, _text(description, "description", 65536)]
        if type is not None and type != art.type:
            changes["type"] = [art.type, artifact_type(type)]
        if changes:
            self._edits.setdefault((project, artifact, None), []).append(
                MetaEdit(time.time(), editor, changes)
            )
            art = dataclasses.replace(
                art,
                description=changes.get("description", [None, art.description])[1],
                type=changes.get("type", [None, art.type])[1],
            )
            self.artifacts[(project, artifact)] = art
        return art

    async def edit_history(self, project: str, artifact: str, number: int | None) -> list[MetaEdit]:
        if number is not None:
            self._live(project, artifact, number)
        return list(self._edits.get((project, artifact, number), []))

    async def change_tags(
        self,
        project: str,
        artifact: str,
        number: int,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> tuple[str, ...]:
        info = self._live(project, artifact, number)
        added, removed = tag_set(add), tag_set(remove)
        if not added and not removed:
            raise InvalidInput("no tag to add or remove")
        tags = tuple(sorted((set(info.tags) | set(added)) - set(removed)))
        return self._store(dataclasses.replace(info, tags=tags)).tags

    async def set_ttl(
        self, project: str, artifact: str, number: int, ttl: float | str | None
    ) -> float | None:
        info = self._live(project, artifact, number)
        seconds = parse_ttl(ttl)
        expires = None if seconds is None else time.time() + seconds
        self._store(dataclasses.replace(info, expires=expires))
        return expires

    async def protect_alias(
        self, project: str, artifact: str, alias: str, *, protect: bool = True
    ) -> None:
        self.requests += 1
        art = self._art(project, artifact)
        alias_name(alias)
        if protect and alias not in art.aliases:
            raise NotFound(f"alias {project}/{artifact}:{alias} not found")
        if not protect and alias not in art.protected:
            raise NotFound(f"alias {project}/{artifact}:{alias} is not protected")
        names = set(art.protected) | {alias} if protect else set(art.protected) - {alias}
        self.artifacts[(project, artifact)] = dataclasses.replace(
            art, protected=tuple(sorted(names))
        )

    async def delete_artifact(self, project: str, artifact: str, *, force: bool = False) -> int:
        self.requests += 1
        art = self._art(project, artifact)
        held = sorted(a for a in art.aliases if a != LATEST)
        if held and not force:
            raise Conflict(
                f"artifact {project}/{artifact} has aliases {', '.join(held)}: remove them "
                "first or use --force"
            )
        for v in art.versions:
            del self.versions[(project, artifact, v.number)]
        del self.artifacts[(project, artifact)]  # its next number stays (never reused)
        return len(art.versions)
