"""Access control (SPEC §4): bearer tokens with read or write rights per project.

Pure and synchronous: token names and grants, the secret's format and hash, parsing the
``Authorization`` header, and ``Principal`` (what a request may do). The server's cache
of tokens is ``server/auth.py``; storage is the metadata store (``registry/sqlbase.py``),
which only ever holds ``hash_secret(secret)``; the CLI commands are ``artfs token ...``.

Rights: ``read`` (list, stat, download) and ``write`` (create projects and artifacts,
commit, move or remove aliases, delete versions, upload blobs), per project name or for
every project (``*``, including projects created later). ``write`` implies ``read``;
``admin`` implies ``write`` and may also move or remove protected aliases.
Blobs are content-addressed and shared by all projects, so blob routes ask for a right
on *any* project (docs/decisions.md, "Access control").
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import Forbidden, InvalidInput, ProtocolError, Unauthorized
from .names import project_name

READ = "read"
WRITE = "write"
# admin: write, and moving or removing protected aliases (``artfs alias protect``); the
# one right above write, granted per project like the others (docs/api.md).
ADMIN = "admin"
RIGHTS = (READ, WRITE, ADMIN)
_RANK = {READ: 1, WRITE: 2, ADMIN: 3}
ANY_PROJECT = "*"
SECRET_PREFIX = "artfs_"
MAX_SECRET_LEN = 512  # longer Authorization values are refused before hashing

_TOKEN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SECRET_RE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what fits in a header value

MISSING_TOKEN = (
    "no token (set ARTFS_TOKEN, or send 'Authorization: Bearer <token>'; "
    "tokens are made with 'artfs token create' on the registry's host)"
)
UNKNOWN_TOKEN = (
    "unknown token (check ARTFS_TOKEN: it must be a secret printed by 'artfs token create' "
    "for this registry)"
)


def token_name(name: Any) -> str:
    if not isinstance(name, str) or not _TOKEN_NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid token name {name!r}: use 1-64 of [A-Za-z0-9._-], starting with a letter or digit"
        )
    return name


def grant_target(project: Any) -> str:
    """A project name, or ``*`` for every project."""
    if project == ANY_PROJECT:
        return ANY_PROJECT
    return project_name(project)


def make_grants(
    read: Iterable[str] = (), write: Iterable[str] = (), admin: Iterable[str] = ()
) -> dict[str, str]:
    """``{project_or_*: right}`` from ``--read``/``--write``/``--admin`` lists; the
    strongest right given for a project wins."""
    grants: dict[str, str] = {}
    for project in read:
        grants[grant_target(project)] = READ
    for project in write:
        grants[grant_target(project)] = WRITE
    for project in admin:
        grants[grant_target(project)] = ADMIN
    if not grants:
        raise InvalidInput(
            "a token needs at least one right: --read PROJECT or --write PROJECT ('*': every project)"
        )
    return grants


def check_grants(grants: Any) -> dict[str, str]:
    """Validate a ``{project_or_*: right}`` mapping (from a caller or the database)."""
    if not isinstance(grants, Mapping) or not grants:
        raise InvalidInput("a token needs at least one grant")
    out: dict[str, str] = {}
    for project, right in grants.items():
        if right not in RIGHTS:
            raise InvalidInput(f"invalid right {right!r}: 'read', 'write' or 'admin'")
        out[grant_target(project)] = right
    return out


def new_secret() -> str:
    """A fresh token secret: ``artfs_`` and 256 random bits, URL-safe base64."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """What the registry stores and looks tokens up by: the hex sha256 of the secret.
    (The secret has 256 random bits: a plain hash is enough, no slow KDF needed.)"""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def bearer_secret(header: str | None) -> str:
    """The token in an ``Authorization: Bearer <token>`` header; Unauthorized if absent
    or malformed."""
    if header is None or not header.strip():
        raise Unauthorized(MISSING_TOKEN)
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise Unauthorized(
            "malformed Authorization header: expected 'Bearer <token>' (set ARTFS_TOKEN)"
        )
    if len(value) > MAX_SECRET_LEN or not _SECRET_RE.fullmatch(value):
        raise Unauthorized(UNKNOWN_TOKEN)
    return value


def client_secret(value: str | None) -> str | None:
    """A token given to a client (``ARTFS_TOKEN``): None when unset or empty; InvalidInput
    when it can't be sent in a header."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > MAX_SECRET_LEN or not _SECRET_RE.fullmatch(value):
        raise InvalidInput(
            "ARTFS_TOKEN is not a valid token: it must be the secret printed by 'artfs token "
            "create' (visible ASCII, no spaces)"
        )
    return value


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A stored token, without its secret."""

    name: str
    created: float
    revoked: float | None
    grants: Mapping[str, str] = field(default_factory=dict)  # project or "*" -> right
    expires: float | None = None  # refused from then on (epoch seconds); None: never

    @property
    def active(self) -> bool:
        """Not revoked (an expired token is still listed as active: see ``expired``)."""
        return self.revoked is None

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def describe_grants(self) -> str:
        """``vision:write nlp:read *:read`` (sorted, ``*`` last)."""
        keys = sorted(self.grants, key=lambda p: (p == ANY_PROJECT, p))
        return " ".join(f"{p}:{self.grants[p]}" for p in keys)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "created": self.created,
            "revoked": self.revoked,
            "expires": self.expires,
            "grants": dict(self.grants),
        }

    @classmethod
    def from_json(cls, d: Any) -> TokenInfo:
        try:
            revoked, expires = d["revoked"], d.get("expires")
            return cls(
                str(d["name"]),
                float(d["created"]),
                None if revoked is None else float(revoked),
                check_grants(d["grants"]),
                None if expires is None else float(expires),
            )
        except (KeyError, TypeError, ValueError, InvalidInput) as e:
            raise ProtocolError(f"malformed token record: {e}") from None


def _stronger(a: str | None, b: str | None) -> str | None:
    return max((a, b), key=lambda r: _RANK.get(r or "", 0))


@dataclass(frozen=True, slots=True)
class Principal:
    """What one request may do: a token's grants, or everything (``EVERYONE``: auth off)."""

    name: str | None
    grants: Mapping[str, str] = field(default_factory=dict)
    unrestricted: bool = False

    def right_on(self, project: str) -> str | None:
        """The strongest right this principal has on ``project`` (None: none)."""
        if self.unrestricted:
            return ADMIN
        return _stronger(self.grants.get(project), self.grants.get(ANY_PROJECT))

    def can(self, right: str, project: str) -> bool:
        return _RANK.get(self.right_on(project) or "", 0) >= _RANK[right]

    def can_any(self, right: str) -> bool:
        """Whether this principal has ``right`` on at least one project."""
        if self.unrestricted:
            return True
        return any(_RANK.get(r, 0) >= _RANK[right] for r in self.grants.values())

    def require(self, right: str, project: str) -> None:
        if not self.can(right, project):
            raise Forbidden(
                f"token {self.name!r} has no {right} right on project {project!r} "
                f"(ask for a token with --{right} {project})"
            )

    def require_any(self, right: str, what: str) -> None:
        """Blob routes: ``right`` on some project, whichever (``what``: the operation)."""
        if not self.can_any(right):
            raise Forbidden(
                f"token {self.name!r} has no {right} right on any project, which {what} needs"
            )

    def readable(self, projects: Iterable[str]) -> list[str]:
        return [p for p in projects if self.can(READ, p)]

    def read_scope(self) -> list[str] | None:
        """The projects this principal may read, for blob visibility (docs/api.md,
        "Isolation model"); None: every project (``*`` or unrestricted)."""
        if self.unrestricted or ANY_PROJECT in self.grants:
            return None
        return sorted(self.grants)


EVERYONE = Principal(None, unrestricted=True)
"""Every right on every project: the principal of every request when auth is off."""


def principal_of(token: TokenInfo | None, now: float) -> Principal:
    """The principal a looked-up token stands for at ``now`` (epoch seconds); Unauthorized
    if unknown, revoked or expired."""
    if token is None:
        raise Unauthorized(UNKNOWN_TOKEN)
    if token.revoked is not None:
        raise Unauthorized(
            f"token {token.name!r} has been revoked (ask the registry's operator for a new one)"
        )
    if token.expired(now):
        assert token.expires is not None
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(token.expires))
        raise Unauthorized(
            f"token {token.name!r} expired at {when} (ask the registry's operator for a new one)"
        )
    return Principal(token.name, dict(token.grants))
