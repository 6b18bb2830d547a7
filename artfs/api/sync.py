"""The bridge from synchronous callers to artfs's trio code: one loop in a background thread.

Why one loop per process rather than one per ``Registry``: the shared blob cache may be open
only once per process (``BlobCache`` keeps POSIX range locks, which cannot tell two opens in
one process apart), and a notebook commonly holds a ``Registry`` *and* an fsspec filesystem
for the same registry. So every ``Registry`` with the same (registry, token, cache dir)
shares one ``Session`` (a client and a ``BlobCache``) living in a service task of the
process's ``Portal``; the portal thread starts on first use and stops when the last session
is released (``Registry.close()``) or at interpreter exit. A child made by ``fork`` (a
PyTorch DataLoader worker) has no such thread: it starts its own on first use.

Every call has a deadline (``Portal.call(timeout=...)``); an interrupt (Ctrl-C) in the
calling thread cancels the call in the loop too.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from ..cache.blobcache import BlobCache, forget_open_roots_after_fork
from ..client import open_client
from ..client.base import RegistryClient
from ..errors import InvalidInput, Unavailable

T = TypeVar("T")
PORTAL_THREAD = "artfs-portal"
# Signals the portal thread (and every thread it starts: they inherit its mask) leaves to the
# calling threads. A process-directed signal goes to any thread not blocking it; delivered
# to this one, a Ctrl-C would not wake a caller waiting for its result (seen on a loaded
# machine: the call ran on to its timeout), as Python runs handlers in the main thread only.
CALLER_SIGNALS = frozenset(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM")
    if hasattr(signal, name)
)


class Portal:
    """A trio loop running in a daemon thread, with a nursery for long-lived service tasks."""

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=PORTAL_THREAD, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, CALLER_SIGNALS)
        try:
            trio.run(self._main)
        except BaseException as e:  # reported to the thread that started us, or lost at exit
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None) -> T:
        """Run ``await fn(*args)`` in the loop and return its result (or raise its error).

        ``timeout``: seconds the whole call may take (None: no bound on the whole; every
        remote request inside still has the client's own deadline)."""
        if threading.current_thread() is self._thread:
            raise InvalidInput("the synchronous artfs API was called from its own loop")
        scopes: list[trio.CancelScope] = []

        async def bounded() -> T:
            with trio.CancelScope() as scope:
                scopes.append(scope)
                if timeout is not None:
                    scope.deadline = trio.current_time() + timeout
                return await fn(*args)
            raise Unavailable(f"artfs call did not finish within {timeout:g} s")

        try:
            return trio.from_thread.run(bounded, trio_token=self._token)
        except trio.RunFinishedError:
            raise Unavailable("the artfs background loop has stopped") from None
        except BaseException:
            if scopes and self.alive:  # e.g. KeyboardInterrupt while waiting: stop it there too
                assert self._token is not None
                try:
                    self._token.run_sync_soon(scopes[0].cancel)
                except trio.RunFinishedError:
                    pass
            raise

    def call_soon(self, fn: Callable[[], Awaitable[Any]]) -> None:
        """Start ``fn()`` in the loop without waiting for it, from any thread (the loop's own
        included: a file closed by the garbage collector there must not wait on itself)."""
        if not self.alive:
            return
        assert self._token is not None
        try:
            self._token.run_sync_soon(trio.lowlevel.spawn_system_task, fn)
        except trio.RunFinishedError:
            pass

    def start_service(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Start ``fn(*args, task_status=...)`` in the portal's nursery; return what it
        passes to ``task_status.started``."""

        async def start() -> Any:
            assert self._nursery is not None
            return await self._nursery.start(fn, *args)

        return self.call(start, timeout=None)

    def close(self) -> None:
        if not self.alive:
            return
        assert self._token is not None and self._stop is not None
        try:
            self._token.run_sync_soon(self._stop.set)
        except trio.RunFinishedError:
            pass
        self._thread.join(timeout=60)


@dataclass
class Session:
    """A registry client and the shared blob cache, open in the portal's loop."""

    registry: str
    cache_dir: Path
    client: RegistryClient
    cache: BlobCache
    generation: int
    stop: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    refs: int = 0


@dataclass(frozen=True)
class SessionKey:
    registry: str
    token: str | None
    cache_dir: Path
    cache_size: int | None
    timeout: float


def normalize_registry(registry: str) -> str:
    """URLs without a trailing slash, directories absolute (as the mount records them)."""
    if registry.startswith(("http://", "https://")):
        return registry.rstrip("/")
    return str(Path(registry).expanduser().absolute())


async def _serve(key: SessionKey, generation: int, task_status: Any) -> None:
    client = open_client(key.registry, timeout=key.timeout, token=key.token)
    try:
        async with BlobCache(key.cache_dir, client, max_bytes=key.cache_size) as cache:
            session = Session(key.registry, key.cache_dir, client, cache, generation)
            try:
                task_status.started(session)
                await session.stop.wait()
            finally:
                session.done.set()
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


class _Runtime:
    """The process's portal and its sessions, reference counted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.portal: Portal | None = None
        self.sessions: dict[SessionKey, Session] = {}
        self.generation = 0

    def acquire(self, key: SessionKey) -> tuple[Portal, Session]:
        with self.lock:
            if self.portal is None or not self.portal.alive:
                self.portal = Portal()
                self.sessions.clear()
            session = self.sessions.get(key)
            if session is None:
                for other_key in self.sessions:
                    if other_key.cache_dir == key.cache_dir:
                        raise InvalidInput(
                            f"cache {key.cache_dir} is already used in this process for "
                            f"{other_key.registry} with other options (registry, token, "
                            "cache size or timeout); pass another cache_dir="
                        )
                session = self.portal.start_service(_serve, key, self.generation)
                self.sessions[key] = session
            session.refs += 1
            return self.portal, session

    def release(self, key: SessionKey, session: Session) -> None:
        with self.lock:
            if self.sessions.get(key) is not session:
                return  # already gone (a fork, or interpreter exit)
            session.refs -= 1
            if session.refs > 0:
                return
            del self.sessions[key]
            portal = self.portal
            assert portal is not None

            async def stop() -> None:
                session.stop.set()
                await session.done.wait()

            if portal.alive:
                portal.call(stop, timeout=120)
            if not self.sessions:
                portal.close()
                self.portal = None

    def shutdown(self) -> None:
        with self.lock:
            portal, self.portal = self.portal, None
            self.sessions.clear()
        if portal is not None:
            portal.close()

    def after_fork(self) -> None:
        """In a forked child: the parent's thread does not exist here; start afresh."""
        forget_open_roots_after_fork()
        self.lock = threading.Lock()
        self.portal = None
        self.sessions = {}
        self.generation += 1


RUNTIME = _Runtime()
atexit.register(RUNTIME.shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=RUNTIME.after_fork)
