"""Where blob bytes live, for ``HttpRegistryClient`` (a mixin): locate requests and their cache.

With a ``blob_url`` template in ``GET /v1`` (the server's sendfile data port serves every
blob) a location costs nothing. Otherwise ``POST /v1/blobs/locate`` hands out URLs
(presigned store URLs), located in batches, shared by concurrent callers and cached until
they expire; directory hints (``hint_blobs``) ride along in the next request.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import trio
from cachetools import LRUCache

from ..errors import ArtfsError, InvalidInput, NotFound, ProtocolError
from ..hashing import sha256_hex

log = logging.getLogger(__name__)

LOCATE_BATCH = 10_000
LOCATIONS_KEPT = 100_000
LOCATE_SLACK = 30.0  # refresh an expiring URL this long before it expires (at most)
HINTS_PER_LOCATE = 1_000  # hinted digests added to one locate request
HINTS_KEPT = 20_000  # hinted digests remembered until a locate request takes them


class BlobLocations:
    """The locating half of ``HttpRegistryClient`` (which provides ``_json`` and
    ``_registry_info``)."""

    _info: dict[str, Any] | None

    def _init_locations(self) -> None:
        self._locations: LRUCache[str, tuple[str, float | None]] = LRUCache(LOCATIONS_KEPT)
        self._pending: set[str] = set()  # digests waiting for the next locate request
        self._hinted: OrderedDict[str, None] = OrderedDict()  # likely reads, oldest first
        self._flight: _LocateFlight | None = None

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        raise NotImplementedError

    async def _registry_info(self) -> dict[str, Any]:
        raise NotImplementedError

    async def locate(self, sha256: str, *, refresh: bool = False) -> str:
        """The URL where this blob's bytes can be fetched.

        From the registry's URL template when it has one (no request per blob), else from
        ``/v1/blobs/locate``, cached until the URL expires. Concurrent callers share one
        request: while a locate request is in flight, digests asked for meanwhile are
        collected and sent together in the next one. ``refresh`` always asks."""
        sha256_hex(sha256)
        if not refresh:
            cached = self._fresh_location(sha256)
            if cached is not None:
                return cached
            template = (await self._registry_info()).get("blob_url")
            if template:
                return str(template).replace("{sha256}", sha256)
        asked = False
        stale = self._locations.get(sha256, ("", None))[0] if refresh else None
        while True:
            cached = self._fresh_location(sha256) if asked else None
            if cached is not None and cached != stale:
                return cached  # answered by a request that left after we asked
            flight = self._flight
            if flight is not None and sha256 in flight.digests:
                await flight.done.wait()
                if flight.completed:
                    return flight.result(sha256)
                continue  # its leader was cancelled: ask again
            self._pending.add(sha256)
            asked = True
            if flight is not None:
                await flight.done.wait()
                if sha256 not in self._pending:  # taken by a flight that has since finished
                    continue
                if self._flight is not None:
                    continue
            # Lead a request for everything pending (this digest included) and hinted.
            batch = sorted(self._pending)[:LOCATE_BATCH]
            if sha256 not in batch:
                batch[-1] = sha256
            self._pending.difference_update(batch)
            batch.extend(self._take_hints(batch))
            flight = self._flight = _LocateFlight(batch)
            try:
                flight.found, flight.missing = await self._locate_batch(batch)
                flight.completed = True
            except ArtfsError as e:
                flight.error = e
                flight.completed = True
            finally:
                self._flight = None
                flight.done.set()
            return flight.result(sha256)

    async def prepare_read(self, sha256: str) -> None:
        """Locate the blob now (a read is about to need its URL); never fails."""
        try:
            await self.locate(sha256)
        except ArtfsError as e:
            log.debug("locating %s ahead of its read: %s", sha256[:12], e)
        except Exception:  # (a background task: the read that follows meets it too)
            log.exception("locating %s ahead of its read failed", sha256[:12])

    def hint_blobs(self, digests: Sequence[str]) -> None:
        """Remember blobs likely to be read soon; the next locate request carries them.

        Costs no request of its own: a listing that is never read locates nothing, and the
        first read of a directory's small files locates up to ``HINTS_PER_LOCATE`` of them
        in the request it needs anyway (the server presigns locally, a few µs per URL).
        Digests with a fresh location are skipped; with a URL template this does nothing.
        """
        if self._info is not None and self._info.get("blob_url"):
            return
        hinted = self._hinted
        for sha in digests:
            if sha not in hinted and self._fresh_location(sha) is None:
                try:
                    hinted[sha256_hex(sha)] = None  # a bad digest would fail a whole request
                except InvalidInput:
                    continue
        while len(hinted) > HINTS_KEPT:
            hinted.popitem(last=False)

    def _take_hints(self, batch: list[str]) -> list[str]:
        """Hinted digests (oldest first) to add to a locate request for ``batch``."""
        for sha in batch:
            self._hinted.pop(sha, None)
        room = min(HINTS_PER_LOCATE, LOCATE_BATCH - len(batch))
        taken: list[str] = []
        while self._hinted and len(taken) < room:
            sha = self._hinted.popitem(last=False)[0]
            if sha not in self._pending and self._fresh_location(sha) is None:
                taken.append(sha)
        return taken

    def _fresh_location(self, sha256: str) -> str | None:
        cached = self._locations.get(sha256)
        if cached is not None:
            url, renew_at = cached
            if renew_at is None or renew_at > time.time():
                return url
        return None

    async def _locate_batch(self, batch: list[str]) -> tuple[dict[str, str], set[str]]:
        """One ``/v1/blobs/locate`` request; caches and returns the URLs found and the
        digests the registry doesn't hold."""
        # read-only: resent like a GET after a closed pooled connection (client/resend.py)
        data = await self._json(
            "POST", "/v1/blobs/locate", json_body={"digests": batch}, idempotent=True
        )
        found: dict[str, str] = {}
        try:
            blobs = data["blobs"]
            for sha in batch:
                entry = blobs.get(sha)
                if entry is None:
                    continue
                expires = entry.get("expires")
                url = str(entry["url"])
                self._locations[sha] = (url, None if expires is None else _renew_at(expires))
                found[sha] = url
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProtocolError(f"malformed blob location: {e}") from None
        return found, set(batch) - set(found)

    async def locate_many(self, digests: Iterable[str]) -> None:
        """Ask where many blobs are in one request (up to 10,000) and cache the answers;
        NotFound if any of them is not in the registry."""
        wanted = sorted({sha256_hex(d) for d in digests})
        for i in range(0, len(wanted), LOCATE_BATCH):
            _, missing = await self._locate_batch(wanted[i : i + LOCATE_BATCH])
            if missing:
                raise NotFound(f"blob {min(missing)} not found in the registry")

    def _expires(self, sha256: str) -> bool:
        """Whether this blob's cached location is one that expires (a presigned URL)."""
        return self._locations.get(sha256, ("", None))[1] is not None


def _renew_at(expires: Any) -> float:
    """When to locate a blob again whose URL expires at ``expires``: ``LOCATE_SLACK`` before,
    or a quarter of the URL's remaining life before when that is shorter (short-lived URLs
    are still used for most of their life)."""
    left = float(expires) - time.time()
    return float(expires) - min(LOCATE_SLACK, max(left, 0.0) / 4)


class _LocateFlight:
    """One ``/v1/blobs/locate`` request in flight and the digests it carries."""

    def __init__(self, digests: list[str]) -> None:
        self.digests = set(digests)
        self.done = trio.Event()
        self.completed = False
        self.found: dict[str, str] = {}
        self.missing: set[str] = set()
        self.error: ArtfsError | None = None

    def result(self, sha256: str) -> str:
        if self.error is not None:
            raise self.error
        if sha256 in self.found:
            return self.found[sha256]
        raise NotFound(f"blob {sha256} not found in the registry")
