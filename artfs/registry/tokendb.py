"""The metadata side of access tokens (schemas 2 and 5, ``tokens.py``): tokens, their grants
and expiry; secrets are stored only as their sha256.

A mixin of ``SqlMetaStore`` (its ``_q``/``_read``/``_write``), kept apart so the query module
stays readable.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from ..auth import TokenInfo
from ..errors import AlreadyExists, NotFound

C = TypeVar("C")


class TokenQueries(Generic[C]):
    """Access tokens over a SQL store (mixed into ``SqlMetaStore``)."""

    _COLLATE = ""  # (the store's: bytewise ORDER BY of names)

    def _read(self) -> AbstractContextManager[C]:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[C]:
        raise NotImplementedError

    def _q(self, c: C, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    def _token_grants(self, c: C, ids: list[int]) -> dict[int, dict[str, str]]:
        grants: dict[int, dict[str, str]] = {i: {} for i in ids}
        if ids:
            marks = ",".join("?" * len(ids))
            for tid, project, right in self._q(
                c,
                f"SELECT token_id, project, rights FROM token_grants WHERE token_id IN ({marks})",
                *ids,
            ):
                grants[int(tid)][str(project)] = str(right)
        return grants

    _TOKEN_COLS = (
        "t.id, t.name, t.created, t.revoked, e.expires "
        "FROM tokens t LEFT JOIN token_expiry e ON e.token_id = t.id"
    )

    def _token_infos(self, c: C, rows: Sequence[Any]) -> list[TokenInfo]:
        """TokenInfos from rows of ``_TOKEN_COLS``."""
        grants = self._token_grants(c, [int(r[0]) for r in rows])
        return [
            TokenInfo(
                str(name),
                float(created),
                None if revoked is None else float(revoked),
                dict(grants[int(tid)]),
                None if expires is None else float(expires),
            )
            for tid, name, created, revoked, expires in rows
        ]

    def create_token(
        self,
        name: str,
        secret_sha256: str,
        created: float,
        grants: dict[str, str],
        expires: float | None = None,
    ) -> TokenInfo:
        with self._write() as c:
            live = self._q(
                c, "SELECT 1 FROM tokens WHERE name=? AND revoked IS NULL", name
            ).fetchone()
            if live is not None:
                raise AlreadyExists(
                    f"token {name} already exists: revoke it first ('artfs token revoke {name}') "
                    "or choose another name"
                )
            row = self._q(
                c,
                "INSERT INTO tokens (name, secret_sha256, created) VALUES (?, ?, ?) RETURNING id",
                name,
                secret_sha256,
                created,
            ).fetchone()
            tid = int(row[0])
            for project, right in sorted(grants.items()):
                self._q(
                    c,
                    "INSERT INTO token_grants (token_id, project, rights) VALUES (?, ?, ?)",
                    tid,
                    project,
                    right,
                )
            if expires is not None:
                self._q(
                    c, "INSERT INTO token_expiry (token_id, expires) VALUES (?, ?)", tid, expires
                )
        return TokenInfo(name, created, None, dict(grants), expires)

    def list_tokens(self) -> list[TokenInfo]:
        with self._read() as c:
            rows = self._q(
                c, f"SELECT {self._TOKEN_COLS} ORDER BY t.name{self._COLLATE}, t.id"
            ).fetchall()
            return self._token_infos(c, rows)

    def revoke_token(self, name: str, revoked: float) -> TokenInfo:
        with self._write() as c:
            row = self._q(
                c,
                "UPDATE tokens SET revoked=? WHERE name=? AND revoked IS NULL RETURNING id",
                revoked,
                name,
            ).fetchone()
            if row is None:
                raise NotFound(f"no active token named {name} (see 'artfs token list')")
            rows = self._q(c, f"SELECT {self._TOKEN_COLS} WHERE t.id=?", int(row[0])).fetchall()
            return self._token_infos(c, rows)[0]

    def find_token(self, secret_sha256: str) -> TokenInfo | None:
        with self._read() as c:
            rows = self._q(
                c, f"SELECT {self._TOKEN_COLS} WHERE t.secret_sha256=?", secret_sha256
            ).fetchall()
            infos = self._token_infos(c, rows)
        return infos[0] if infos else None
