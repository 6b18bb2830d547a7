"""Whether a failed request may be sent again on a fresh connection: one rule, every path.

A keep-alive connection idle in a pool can be closed by the peer at any moment (the data
server after its idle timeout, Hypercorn after ``keep_alive_timeout``, a proxy, a load
balancer). A request written onto such a connection just as the peer closes it fails with
an EOF or a reset before any byte of an answer (httpx: ``RemoteProtocolError: Server
disconnected without sending a response``). The server never processed it, so an
idempotent request is simply sent again, once, on a new connection; anything else is not,
because "no answer" does not prove "not processed": a POST that committed and then lost
its connection must surface as an error, not be committed twice.

Every client path asks ``may_resend``: the httpx calls of ``http.py`` (metadata, https
ranges, ``locations.py``'s locate requests), the trio socket fetcher of ``ranges.py`` and the
fetch threads' blocking connections (``cache/fetchpool.py`` uses ``ranges.RangeConnections``).
Pure: it looks at the exception and at what the caller knows, and does no I/O.
"""

from __future__ import annotations

import h11
import httpx
import trio

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RESENDS = 1  # a request is sent at most 1 + RESENDS times


class PeerClosed(Exception):
    """The peer closed the connection before the first byte of an answer (raw paths)."""


def peer_closed(exc: BaseException) -> bool:
    """Whether ``exc`` is what a connection closed or reset by the peer looks like, as
    opposed to a timeout (the peer is slow or hung: sending again would only wait again)
    or a refusal to connect (nothing was pooled)."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError | trio.TooSlowError):
        return False
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return True
    if isinstance(exc, httpx.ConnectError | ConnectionRefusedError):
        return False
    return isinstance(
        exc,
        PeerClosed
        | trio.BrokenResourceError
        | trio.ClosedResourceError
        | ConnectionError  # reset, aborted, broken pipe
        | h11.RemoteProtocolError
        | OSError,
    )


def idempotent(method: str, declared: bool | None = None) -> bool:
    """GET/HEAD/OPTIONS are; a caller may declare a read-only POST (``/v1/blobs/locate``)
    idempotent, or any request not (``declared``)."""
    if declared is not None:
        return declared
    return method.upper() in IDEMPOTENT_METHODS


def may_resend(
    exc: BaseException,
    method: str,
    *,
    reused: bool,
    answered: bool,
    attempt: int,
    declared_idempotent: bool | None = None,
    sent: bool = True,
) -> bool:
    """Send the request again, on a fresh connection?

    Only when the connection was a reused (pooled) one, it failed the way a closed
    connection does (``peer_closed``) before any byte of the answer (``answered`` False),
    this is the first attempt, and sending twice is harmless: the request is idempotent, or
    none of it reached the peer (``sent`` False)."""
    if attempt >= RESENDS or not reused or answered or not peer_closed(exc):
        return False
    return not sent or idempotent(method, declared_idempotent)


class ConnectionTrace:
    """httpcore's ``trace`` hook for one attempt of an httpx request: whether it opened a
    connection (else it ran on a pooled one) and whether the head of an answer arrived."""

    __slots__ = ("answered", "attempt", "reused")

    def __init__(self, attempt: int = 0) -> None:
        self.attempt = attempt
        self.reused = True
        self.answered = False

    async def __call__(self, name: str, info: dict[str, object]) -> None:
        if name.endswith(".connect_tcp.started") or name.endswith(".connect_unix_socket.started"):
            self.reused = False
        elif name.endswith(".receive_response_headers.complete"):
            self.answered = True

    def resend(self, exc: BaseException, method: str, idempotent: bool | None = None) -> bool:
        return may_resend(
            exc,
            method,
            reused=self.reused,
            answered=self.answered,
            attempt=self.attempt,
            declared_idempotent=idempotent,
        )
