"""Signed data-server URLs: the data port's answer to "may this request read blob X".

With tokens required, the API decides who may read which blob (``POST /v1/blobs/locate``
answers only for blobs a project the token can read references: docs/api.md, "Isolation
model") and hands out URLs of the form::

    http://host:port/blobs/<sha256>?expires=<epoch seconds>&sig=<hex HMAC-SHA256>

like an object store's presigned URLs. The data server then needs no token and no
database query per request: it checks the HMAC of ``"<sha256> <expires>"`` under the
registry's URL secret and the expiry, and refuses anything else with 403 and the API's
JSON error body. The secret is made once and kept in the metadata store
(``Registry.url_secret``), so any server on that store accepts any other's URLs.

A URL is good for ``lifetime`` seconds (``--blob-url-lifetime``, default one hour); the
clients re-locate a blob shortly before its URL expires, and once more if a read is
refused (a mount reads for days through URLs that last an hour). With ``--auth off``
everyone may read everything: the data port serves unsigned requests too, and ``GET /v1``
keeps handing out the URL template that needs no locate request.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from ..errors import Forbidden

DEFAULT_LIFETIME = 3600.0

ReadGate = Callable[[str, str], Awaitable[None]]
"""(sha256, the request target's query string) -> None, or raise Forbidden."""


class UrlSigner:
    def __init__(
        self,
        secret: bytes,
        lifetime: float = DEFAULT_LIFETIME,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("a URL-signing secret needs at least 16 bytes")
        self._secret = secret
        self.lifetime = lifetime
        self._clock = clock

    def _mac(self, sha256: str, expires: int) -> str:
        message = f"{sha256} {expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, sha256: str) -> tuple[str, float]:
        """(the query string for ``/blobs/<sha256>``, when it expires)."""
        expires = int(self._clock() + self.lifetime) + 1
        return f"expires={expires}&sig={self._mac(sha256, expires)}", float(expires)

    def check(self, sha256: str, query: str) -> None:
        """Forbidden unless ``query`` carries an unexpired signature for exactly this blob."""
        params = parse_qs(query, keep_blank_values=True)
        expires_text, sig = params.get("expires", [""])[0], params.get("sig", [""])[0]
        if not expires_text or not sig:
            raise Forbidden(
                f"unsigned request for blob {sha256}: this registry requires tokens, and its "
                "data port serves only URLs handed out by POST /v1/blobs/locate"
            )
        try:
            expires = int(expires_text)
        except ValueError:
            raise Forbidden(f"malformed expiry {expires_text[:32]!r} in a blob URL") from None
        given = sig.encode("utf-8", "surrogateescape")  # (compare_digest refuses non-ASCII str)
        if not hmac.compare_digest(given, self._mac(sha256, expires).encode()):
            raise Forbidden(
                f"bad signature on the URL of blob {sha256}: URLs can't be edited or reused "
                "for another blob; locate the blob again"
            )
        now = self._clock()
        if now >= expires:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires))
            raise Forbidden(f"the URL of blob {sha256} expired at {when}: locate the blob again")


def read_gate(signer: UrlSigner | None) -> ReadGate:
    """What the data server asks before a GET/HEAD: a valid signature when ``signer`` is
    given (tokens required), nothing otherwise (auth off: everyone may read everything)."""

    async def gate(sha256: str, query: str) -> None:
        if signer is not None:
            signer.check(sha256, query)

    return gate
