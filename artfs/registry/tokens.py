"""Access tokens over a metadata store: what ``artfs token`` and the server's token check
use (rules in artfs/auth.py). Needs no blob store, so ``artfs token`` opens the metadata
store alone (``stores.open_meta``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..auth import TokenInfo, check_grants, hash_secret, new_secret, token_name
from ..hashing import sha256_hex
from .meta import MetaStore


class Tokens:
    def __init__(self, meta: MetaStore, *, clock: Callable[[], float] = time.time) -> None:
        self.meta = meta
        self.clock = clock

    def create(self, name: str, grants: dict[str, str]) -> tuple[TokenInfo, str]:
        """A new token and its secret. Only the secret's sha256 is stored: the secret can't
        be shown again."""
        secret = new_secret()
        info = self.meta.create_token(
            token_name(name), hash_secret(secret), self.clock(), check_grants(grants)
        )
        return info, secret

    def list(self) -> list[TokenInfo]:
        return self.meta.list_tokens()

    def revoke(self, name: str) -> TokenInfo:
        return self.meta.revoke_token(token_name(name), self.clock())

    def find(self, secret_sha256: str) -> TokenInfo | None:
        """The token with this secret hash (``auth.hash_secret``), revoked or not."""
        return self.meta.find_token(sha256_hex(secret_sha256))
