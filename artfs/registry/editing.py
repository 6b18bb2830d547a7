"""What changes after a commit, as the registry core validates it (issue 12): edits of a
version's description and metadata (merge or replace, each kept in a history), an
artifact's own description and type, tags, time to live, protected aliases, deleting a
whole artifact, and the expiry ``artfs gc`` runs.

A mixin of ``Registry`` (core.py), which it needs only for ``meta`` and ``clock``; the
field checks it shares with commits (descriptions, metadata, types) are core's, imported
when first called because core imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import InvalidInput
from ..models import ArtifactInfo, VersionInfo
from ..names import artifact_name, project_name
from ..versionmeta import MERGE, MetaEdit, edit_mode, edited_metadata, parse_ttl, tag_set
from .meta import MetaStore

MAX_EDITOR = 256


def _number(number: Any) -> int:
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise InvalidInput(f"invalid version number {number!r}")
    return number


class EditingOps:
    meta: MetaStore
    clock: Callable[[], float]

    def edit_version(
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
        """Change a version's description and/or metadata (``mode``: ``merge`` its top-level
        keys, null removing one; ``replace`` the whole object). Its content never changes.
        The change is recorded (who, when, before and after) unless it changes nothing."""
        from .core import MAX_DESCRIPTION, _text, metadata_json

        mode = edit_mode(mode)
        if description is None and metadata is None:
            raise InvalidInput("an edit needs a description or metadata (or both)")
        new_description = (
            None if description is None else _text(description, "description", MAX_DESCRIPTION)
        )
        if metadata is not None:
            metadata_json(metadata)  # the change itself must be valid JSON
        editor = _text(editor, "editor", MAX_EDITOR)

        def edit(old_description: str, old_metadata: dict[str, Any]) -> tuple[str, str]:
            merged = (
                old_metadata if metadata is None else edited_metadata(old_metadata, metadata, mode)
            )
            chosen = old_description if new_description is None else new_description
            return chosen, metadata_json(merged)  # (the result within the size limit too)

        return self.meta.edit_version(
            project_name(project),
            artifact_name(artifact),
            _number(number),
            edit,
            editor,
            self.clock(),
        )

    def edit_artifact(
        self,
        project: str,
        artifact: str,
        *,
        description: str | None = None,
        type: str | None = None,
        editor: str = "",
    ) -> ArtifactInfo:
        """Change an artifact's own description and/or type (recorded like version edits)."""
        from .core import MAX_DESCRIPTION, _text, artifact_type

        if description is None and type is None:
            raise InvalidInput("an artifact edit needs a description or a type (or both)")
        return self.meta.edit_artifact(
            project_name(project),
            artifact_name(artifact),
            None if description is None else _text(description, "description", MAX_DESCRIPTION),
            None if type is None else artifact_type(type),
            _text(editor, "editor", MAX_EDITOR),
            self.clock(),
        )

    def edit_history(self, project: str, artifact: str, number: int | None) -> list[MetaEdit]:
        """The edits of a version (``number`` None: of the artifact), oldest first."""
        return self.meta.edit_history(
            project_name(project),
            artifact_name(artifact),
            None if number is None else _number(number),
        )

    def change_tags(
        self,
        project: str,
        artifact: str,
        number: int,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> tuple[str, ...]:
        """Add and remove tags of a live version; its tags after."""
        added, removed = tag_set(add), tag_set(remove)
        if not added and not removed:
            raise InvalidInput("no tag to add or remove")
        return self.meta.change_tags(
            project_name(project), artifact_name(artifact), _number(number), added, removed
        )

    def set_ttl(
        self, project: str, artifact: str, number: int, ttl: float | str | None
    ) -> float | None:
        """Let gc delete a live version ``ttl`` from now (unless an alias holds it then);
        None keeps it for good. Returns when it expires."""
        seconds = parse_ttl(ttl)
        expires = None if seconds is None else self.clock() + seconds
        self.meta.set_expiry(
            project_name(project), artifact_name(artifact), _number(number), expires
        )
        return expires

    def protect_alias(
        self, project: str, artifact: str, alias: str, *, protect: bool = True, who: str = ""
    ) -> None:
        """Mark an existing alias protected (only admin tokens move or remove it), or not."""
        from .core import settable_alias

        self.meta.protect_alias(
            project_name(project),
            artifact_name(artifact),
            settable_alias(alias),
            bool(protect),
            who,
            self.clock(),
        )

    def delete_artifact(
        self, project: str, artifact: str, *, force: bool = False, admin: bool = True
    ) -> int:
        """Delete every version of an artifact and the artifact; how many versions. Refused
        (Conflict) while aliases other than ``latest`` exist unless ``force``; protected ones
        need ``admin`` as well. Numbers are never reused, even if it is created again."""
        return self.meta.delete_artifact(
            project_name(project),
            artifact_name(artifact),
            force=force,
            admin=admin,
            when=self.clock(),
        )

    def expire(self, *, dry_run: bool = False) -> list[str]:
        """Delete the versions whose time to live has passed and that no alias (but
        ``latest``) holds; their refs. ``artfs gc`` runs it first, so their blobs go in
        the same collection."""
        return self.meta.delete_expired(self.clock(), dry_run=dry_run)
