"""Checking bearer tokens in the server: ``Authenticator`` turns an ``Authorization`` header
into a ``Principal`` (artfs/auth.py), for the JSON API and the blob data server alike.

Tokens live in the metadata store (only their secret's sha256). Looking one up for every
request would put a database query in front of every blob GET, so each server process
keeps a small cache: secret hash -> token (or "unknown"), trusted for ``ttl`` seconds
(default 5). A revoke or a new grant therefore takes effect on every server within
``ttl``. Concurrent requests with the same uncached token share one lookup. Everything
runs on the server's trio thread (the API and the data server share one trio loop); only
the database query goes to a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio
from cachetools import TTLCache

from ..auth import EVERYONE, Principal, TokenInfo, bearer_secret, hash_secret, principal_of

DEFAULT_TTL = 5.0
CACHE_ENTRIES = 10_000  # tokens (known or not) remembered per server process

Lookup = Callable[[str], TokenInfo | None]
"""secret sha256 -> the stored token or None (blocking: a database query)."""


class Authenticator:
    def __init__(
        self,
        lookup: Lookup,
        *,
        enabled: bool = True,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.enabled = enabled
        self._wall = wall  # expiry is a date: checked on every request, cached token or not
        self.ttl = ttl
        self._lookup = lookup
        self._cache: TTLCache[str, TokenInfo | None] = TTLCache(
            CACHE_ENTRIES, max(ttl, 1e-6), timer=clock
        )
        self._inflight: dict[str, trio.Event] = {}
        self.lookups = 0  # database lookups made (tests check the cache works)

    async def principal(self, authorization: str | None) -> Principal:
        """Who the request is; ``Unauthorized`` without a valid (known, unrevoked, unexpired)
        token.
        With auth off everyone may do everything and the header is ignored."""
        if not self.enabled:
            return EVERYONE
        key = hash_secret(bearer_secret(authorization))
        return principal_of(await self._token(key), self._wall())

    async def _token(self, key: str) -> TokenInfo | None:
        while True:
            if self.ttl > 0:
                try:
                    return self._cache[key]
                except KeyError:
                    pass
            pending = self._inflight.get(key)
            if pending is None:
                break
            await pending.wait()  # another request is looking this token up: use its answer
            if self.ttl <= 0:
                break
        done = self._inflight[key] = trio.Event()
        try:
            self.lookups += 1
            token = await trio.to_thread.run_sync(self._lookup, key)
            if self.ttl > 0:
                self._cache[key] = token
            return token
        finally:
            del self._inflight[key]
            done.set()
