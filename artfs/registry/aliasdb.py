"""Alias writes of ``SqlMetaStore`` (a mixin, like ``lineagedb.py``): set, delete, and the
``expect`` precondition both take (compare-and-set, what ``ln -sfn`` relies on). Split from
sqlbase.py along this seam: aliases are the one mutable pointer of a version; protection
(``editsdb.py``) is checked inside the same transaction."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..client.base import UNSET, Expect
from ..errors import NotFound, PreconditionFailed

C = TypeVar("C")


class AliasQueries(Generic[C]):
    """Mixed into ``SqlMetaStore``, which provides what is declared here."""

    if TYPE_CHECKING:  # no stubs at runtime: they would shadow the other mixins' methods

        def _write(self) -> AbstractContextManager[C]: ...
        def _q(self, c: C, sql: str, *args: Any) -> Any: ...
        def _artifact_row(
            self, c: C, project: str, artifact: str, *, lock: bool = False
        ) -> tuple[Any, ...]: ...
        def _live_number(self, c: C, artifact_id: int, number: int, label: str) -> None: ...
        def _guard_protected(
            self, c: C, aid: int, label: str, names: Any, admin: bool, what: str
        ) -> None: ...

    def _upsert_alias(self, c: C, aid: int, alias: str, number: int) -> None:
        self._q(
            c,
            "INSERT INTO aliases (artifact_id, name, number) VALUES (?, ?, ?) "
            "ON CONFLICT (artifact_id, name) DO UPDATE SET number=excluded.number",
            aid,
            alias,
            number,
        )

    def _check_expect(self, c: C, aid: int, label: str, alias: str, expect: Expect) -> int | None:
        row = self._q(
            c, "SELECT number FROM aliases WHERE artifact_id=? AND name=?", aid, alias
        ).fetchone()
        current = None if row is None else int(row[0])
        if expect is not UNSET and current != expect:
            want = "not to exist" if expect is None else f"to point at v{expect}"
            have = "does not exist" if current is None else f"points at v{current}"
            raise PreconditionFailed(f"alias {label}:{alias} {have}; expected it {want}")
        return current

    def set_alias(
        self,
        project: str,
        artifact: str,
        alias: str,
        number: int,
        expect: Expect,
        admin: bool = True,
    ) -> None:
        label = f"{project}/{artifact}"
        with self._write() as c:
            aid = self._artifact_row(c, project, artifact, lock=True)[0]
            self._live_number(c, aid, number, label)
            current = self._check_expect(c, aid, label, alias, expect)
            if current != number:
                self._guard_protected(c, aid, label, [alias], admin, "move")
            self._upsert_alias(c, aid, alias, number)

    def delete_alias(
        self, project: str, artifact: str, alias: str, expect: Expect, admin: bool = True
    ) -> None:
        label = f"{project}/{artifact}"
        with self._write() as c:
            aid = self._artifact_row(c, project, artifact, lock=True)[0]
            current = self._check_expect(c, aid, label, alias, expect)
            if current is None:
                raise NotFound(f"alias {label}:{alias} not found")
            self._guard_protected(c, aid, label, [alias], admin, "remove")
            self._q(c, "DELETE FROM aliases WHERE artifact_id=? AND name=?", aid, alias)
            self._q(c, "DELETE FROM protected_aliases WHERE artifact_id=? AND name=?", aid, alias)
