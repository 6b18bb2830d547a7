"""The metadata side of what changes after a commit (schema 10, ``versionmeta.py``): edits of
descriptions and metadata with their history, tags, retention (expiry), protected aliases,
deleted artifacts, and the lookup that makes identical content no new version.

A mixin of ``SqlMetaStore`` (its ``_q``/``_read``/``_write``/``_artifact_row``), in tables of
its own so the upgrade stays idempotent DDL (no ``ALTER``):

- ``version_tags``: one row per (version, tag); ``version_tags_by_tag`` answers "which
  versions carry tag x" from the index.
- ``version_expiry``: a version with a row here is deleted by ``artfs gc`` from ``expires``
  on, unless an alias holds it (``expired_versions``/``delete_expired``).
- ``meta_edits``: the history, one row per edit: who, when, and each changed field's
  before and after (JSON). ``number`` NULL: an edit of the artifact itself.
- ``protected_aliases``: aliases only an admin token moves or removes; checked inside every
  transaction that moves or removes aliases (set, remove, commit, delete), so no path skips
  it.
- ``deleted_artifacts``: an artifact deleted whole. Its row stays (lineage of other
  versions names it, and its version numbers must never be reused: a mount caches a
  version's manifest forever under its number), hidden from every lookup; creating it again
  revives the row, and numbering goes on where it stopped.
- ``versions_by_digest``: an index, so "does any live version hold this content" is one
  lookup however many versions an artifact has.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from ..errors import NotFound, ProtectedAlias
from ..models import ArtifactInfo, VersionInfo
from ..names import LATEST
from ..versionmeta import MetaEdit

EDITS_SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS version_tags (
    artifact_id {int} NOT NULL,
    number      {int} NOT NULL,
    tag         TEXT NOT NULL,
    PRIMARY KEY (artifact_id, number, tag)
){without_rowid};
CREATE INDEX IF NOT EXISTS version_tags_by_tag ON version_tags (artifact_id, tag);
CREATE TABLE IF NOT EXISTS version_expiry (
    artifact_id {int} NOT NULL,
    number      {int} NOT NULL,
    expires     {real} NOT NULL,
    PRIMARY KEY (artifact_id, number)
){without_rowid};
CREATE INDEX IF NOT EXISTS version_expiry_by_time ON version_expiry (expires);
CREATE TABLE IF NOT EXISTS meta_edits (
    id          {id},
    artifact_id {int} NOT NULL,
    number      {int},
    edited      {real} NOT NULL,
    editor      TEXT NOT NULL,
    changes     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS meta_edits_by_target ON meta_edits (artifact_id, number);
CREATE TABLE IF NOT EXISTS protected_aliases (
    artifact_id {int} NOT NULL,
    name        TEXT NOT NULL,
    protected   {real} NOT NULL,
    protector   TEXT NOT NULL,
    PRIMARY KEY (artifact_id, name)
){without_rowid};
CREATE TABLE IF NOT EXISTS deleted_artifacts (
    artifact_id {int} PRIMARY KEY,
    deleted     {real} NOT NULL
){without_rowid};
CREATE INDEX IF NOT EXISTS versions_by_digest ON versions (artifact_id, digest);
"""

LIVE_ARTIFACT = "NOT EXISTS (SELECT 1 FROM deleted_artifacts d WHERE d.artifact_id = a.id)"
"""Appended to artifact lookups (alias ``a``): a deleted artifact is not found."""

C = TypeVar("C")
EditFn = Callable[[str, dict[str, Any]], tuple[str, str]]
"""(description, metadata) now -> (description, metadata JSON) after the edit."""


class EditQueries(Generic[C]):
    """Edits, tags, expiry, protected aliases, deleted artifacts (mixed into SqlMetaStore)."""

    _COLLATE: str

    def _read(self) -> AbstractContextManager[C]:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[C]:
        raise NotImplementedError

    def _q(self, c: C, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    def _artifact_row(
        self, c: C, project: str, artifact: str, *, lock: bool = False
    ) -> tuple[Any, ...]:
        raise NotImplementedError

    def _live_number(self, c: C, artifact_id: int, number: int, label: str) -> None:
        raise NotImplementedError

    def _version(self, c: C, project: str, artifact: str, number: int) -> VersionInfo:
        raise NotImplementedError

    def _artifact_infos(self, c: C, project: str, name: str | None) -> list[ArtifactInfo]:
        raise NotImplementedError

    # --- helpers for sqlbase's queries ------------------------------------------------------
    def _tags_of(self, c: C, aid: int, number: int) -> tuple[str, ...]:
        rows = self._q(
            c,
            f"SELECT tag FROM version_tags WHERE artifact_id=? AND number=? "
            f"ORDER BY tag{self._COLLATE}",
            aid,
            number,
        )
        return tuple(str(r[0]) for r in rows)

    def _expiry_of(self, c: C, aid: int, number: int) -> float | None:
        row = self._q(
            c, "SELECT expires FROM version_expiry WHERE artifact_id=? AND number=?", aid, number
        ).fetchone()
        return None if row is None else float(row[0])

    def _listing_extras(
        self, c: C, where: str, wid: int
    ) -> tuple[
        dict[tuple[int, int], list[str]], dict[tuple[int, int], float], dict[int, list[str]]
    ]:
        """Tags and expiry of each version, protected aliases of each artifact, for a listing
        (``where`` on ``artifacts a``, as ``_artifact_infos`` builds it)."""
        tags: dict[tuple[int, int], list[str]] = defaultdict(list)
        for aid, number, tag in self._q(
            c,
            "SELECT t.artifact_id, t.number, t.tag FROM version_tags t "
            f"JOIN artifacts a ON a.id = t.artifact_id WHERE {where} "
            f"ORDER BY t.tag{self._COLLATE}",
            wid,
        ):
            tags[(int(aid), int(number))].append(str(tag))
        expiry = {
            (int(aid), int(number)): float(expires)
            for aid, number, expires in self._q(
                c,
                "SELECT e.artifact_id, e.number, e.expires FROM version_expiry e "
                f"JOIN artifacts a ON a.id = e.artifact_id WHERE {where}",
                wid,
            )
        }
        protected: dict[int, list[str]] = defaultdict(list)
        for aid, name in self._q(
            c,
            "SELECT p.artifact_id, p.name FROM protected_aliases p "
            f"JOIN artifacts a ON a.id = p.artifact_id WHERE {where} "
            f"ORDER BY p.name{self._COLLATE}",
            wid,
        ):
            protected[int(aid)].append(str(name))
        return tags, expiry, protected

    def _guard_protected(
        self, c: C, aid: int, label: str, names: Any, admin: bool, what: str
    ) -> None:
        """ProtectedAlias unless ``admin`` when any of ``names`` is protected."""
        if admin:
            return
        wanted = sorted(set(names))
        if not wanted:
            return
        marks = ",".join("?" * len(wanted))
        rows = self._q(
            c,
            f"SELECT name FROM protected_aliases WHERE artifact_id=? AND name IN ({marks}) "
            f"ORDER BY name{self._COLLATE}",
            aid,
            *wanted,
        ).fetchall()
        if rows:
            shown = ", ".join(f"{label}:{r[0]}" for r in rows)
            raise ProtectedAlias(
                f"alias {shown} is protected: only an admin token may {what} it "
                "(artfs token create --admin PROJECT; or artfs alias unprotect)"
            )

    def _aliases_at(self, c: C, aid: int, number: int | None) -> list[str]:
        """Aliases other than ``latest`` at ``number`` (None: at any version)."""
        query = "SELECT name FROM aliases WHERE artifact_id=? AND name<>?"
        args: list[Any] = [aid, LATEST]
        if number is not None:
            query += " AND number=?"
            args.append(number)
        return [str(r[0]) for r in self._q(c, f"{query} ORDER BY name{self._COLLATE}", *args)]

    def _duplicate_of(self, c: C, aid: int, digest: str) -> int | None:
        """The newest live version with this content, if any."""
        row = self._q(
            c,
            "SELECT max(number) FROM versions WHERE artifact_id=? AND digest=? AND NOT deleted",
            aid,
            digest,
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _add_tags(self, c: C, aid: int, number: int, tags: Any) -> None:
        for tag in tags:
            self._q(
                c,
                "INSERT INTO version_tags (artifact_id, number, tag) VALUES (?, ?, ?) "
                "ON CONFLICT (artifact_id, number, tag) DO NOTHING",
                aid,
                number,
                tag,
            )

    def _set_expiry(self, c: C, aid: int, number: int, expires: float | None) -> None:
        self._q(c, "DELETE FROM version_expiry WHERE artifact_id=? AND number=?", aid, number)
        if expires is not None:
            self._q(
                c,
                "INSERT INTO version_expiry (artifact_id, number, expires) VALUES (?, ?, ?)",
                aid,
                number,
                expires,
            )

    def _record_edit(self, c: C, aid: int, number: int | None, edit: MetaEdit) -> None:
        self._q(
            c,
            "INSERT INTO meta_edits (artifact_id, number, edited, editor, changes) "
            "VALUES (?, ?, ?, ?, ?)",
            aid,
            number,
            edit.edited,
            edit.editor,
            edit.changes_json(),
        )

    def _revive_artifact(self, c: C, aid: int, type: str, description: str, now: float) -> bool:
        """Create a deleted artifact again (its row, its numbering); False if not deleted."""
        if not self._q(c, "DELETE FROM deleted_artifacts WHERE artifact_id=?", aid).rowcount:
            return False
        self._q(
            c,
            "UPDATE artifacts SET type=?, description=?, created=? WHERE id=?",
            type,
            description,
            now,
            aid,
        )
        return True

    # --- MetaStore ----------------------------------------------------------------------------
    def edit_version(
        self,
        project: str,
        artifact: str,
        number: int,
        edit: EditFn,
        editor: str,
        when: float,
    ) -> VersionInfo:
        with self._write() as c:
            aid = int(self._artifact_row(c, project, artifact, lock=True)[0])
            row = self._q(
                c,
                "SELECT description, metadata FROM versions "
                "WHERE artifact_id=? AND number=? AND NOT deleted",
                aid,
                number,
            ).fetchone()
            if row is None:
                raise NotFound(f"version {project}/{artifact}:v{number} not found")
            old_description, old_text = str(row[0]), str(row[1])
            old_metadata = json.loads(old_text)
            description, meta_text = edit(old_description, old_metadata)
            changes: dict[str, list[Any]] = {}
            if description != old_description:
                changes["description"] = [old_description, description]
            new_metadata = json.loads(meta_text)
            if new_metadata != old_metadata:
                changes["metadata"] = [old_metadata, new_metadata]
            if changes:
                self._q(
                    c,
                    "UPDATE versions SET description=?, metadata=? WHERE artifact_id=? AND number=?",
                    description,
                    meta_text,
                    aid,
                    number,
                )
                self._record_edit(c, aid, number, MetaEdit(when, editor, changes))
            return self._version(c, project, artifact, number)

    def edit_artifact(
        self,
        project: str,
        artifact: str,
        description: str | None,
        type: str | None,
        editor: str,
        when: float,
    ) -> ArtifactInfo:
        with self._write() as c:
            aid, old_type, old_description, *_ = self._artifact_row(c, project, artifact, lock=True)
            changes: dict[str, list[Any]] = {}
            if description is not None and description != old_description:
                changes["description"] = [old_description, description]
            if type is not None and type != old_type:
                changes["type"] = [old_type, type]
            if changes:
                self._q(
                    c,
                    "UPDATE artifacts SET description=?, type=? WHERE id=?",
                    changes.get("description", [None, old_description])[1],
                    changes.get("type", [None, old_type])[1],
                    aid,
                )
                self._record_edit(c, int(aid), None, MetaEdit(when, editor, changes))
            return self._artifact_infos(c, project, artifact)[0]

    def edit_history(self, project: str, artifact: str, number: int | None) -> list[MetaEdit]:
        with self._read() as c:
            aid = int(self._artifact_row(c, project, artifact)[0])
            args: tuple[int, ...] = ()
            if number is None:
                where = "number IS NULL"
            else:
                self._live_number(c, aid, number, f"{project}/{artifact}")
                where, args = "number=?", (number,)
            rows = self._q(
                c,
                f"SELECT edited, editor, changes FROM meta_edits WHERE artifact_id=? AND {where} "
                "ORDER BY id",
                aid,
                *args,
            )
            return [MetaEdit(float(e), str(who), json.loads(ch)) for e, who, ch in rows]

    def change_tags(
        self, project: str, artifact: str, number: int, add: Any, remove: Any
    ) -> tuple[str, ...]:
        with self._write() as c:
            aid = int(self._artifact_row(c, project, artifact, lock=True)[0])
            self._live_number(c, aid, number, f"{project}/{artifact}")
            self._add_tags(c, aid, number, add)
            for tag in remove:
                self._q(
                    c,
                    "DELETE FROM version_tags WHERE artifact_id=? AND number=? AND tag=?",
                    aid,
                    number,
                    tag,
                )
            return self._tags_of(c, aid, number)

    def set_expiry(self, project: str, artifact: str, number: int, expires: float | None) -> None:
        with self._write() as c:
            aid = int(self._artifact_row(c, project, artifact, lock=True)[0])
            self._live_number(c, aid, number, f"{project}/{artifact}")
            self._set_expiry(c, aid, number, expires)

    def protect_alias(
        self, project: str, artifact: str, alias: str, protect: bool, who: str, when: float
    ) -> None:
        label = f"{project}/{artifact}"
        with self._write() as c:
            aid = int(self._artifact_row(c, project, artifact, lock=True)[0])
            if protect:
                exists = self._q(
                    c, "SELECT 1 FROM aliases WHERE artifact_id=? AND name=?", aid, alias
                ).fetchone()
                if exists is None:
                    raise NotFound(f"alias {label}:{alias} not found")
                self._q(
                    c,
                    "INSERT INTO protected_aliases (artifact_id, name, protected, protector) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (artifact_id, name) DO NOTHING",
                    aid,
                    alias,
                    when,
                    who,
                )
            elif not self._q(
                c, "DELETE FROM protected_aliases WHERE artifact_id=? AND name=?", aid, alias
            ).rowcount:
                raise NotFound(f"alias {label}:{alias} is not protected")
