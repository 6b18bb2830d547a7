"""Access tokens over a metadata store: what ``artfs token`` and the server's token check
use (rules in artfs/auth.py). Needs no blob store, so ``artfs token`` opens the metadata
store alone (``stores.open_meta``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..auth import TokenInfo, check_grants, hash_secret, new_secret, token_name
from ..errors import InvalidInput
from ..hashing import sha256_hex
from .meta import MetaStore

MAX_LIFETIME = 100 * 365 * 86400.0  # seconds; longer is "never", say so with no --expires


class Tokens:
    def __init__(self, meta: MetaStore, *, clock: Callable[[], float] = time.time) -> None:
        self.meta = meta
        self.clock = clock

    def create(
        self, name: str, grants: dict[str, str], *, lifetime: float | None = None
    ) -> tuple[TokenInfo, str]:
        """A new token and its secret, refused ``lifetime`` seconds from now (None: never
        expires). Only the secret's sha256 is stored: the secret can't be shown again."""
        if lifetime is not None and not 0 < lifetime <= MAX_LIFETIME:
            raise InvalidInput(
                f"a token's lifetime must be more than 0 s and at most {MAX_LIFETIME // 86400:.0f}d"
            )
        secret = new_secret()
        now = self.clock()
        info = self.meta.create_token(
            token_name(name),
            hash_secret(secret),
            now,
            check_grants(grants),
            None if lifetime is None else now + lifetime,
        )
        return info, secret

    def list(self) -> list[TokenInfo]:
        return self.meta.list_tokens()

    def revoke(self, name: str) -> TokenInfo:
        return self.meta.revoke_token(token_name(name), self.clock())

    def find(self, secret_sha256: str) -> TokenInfo | None:
        """The token with this secret hash (``auth.hash_secret``), revoked or not."""
        return self.meta.find_token(sha256_hex(secret_sha256))
