"""``artfs.aio.run``: the async twin of ``artfs.run`` (for trio and asyncio programs).

As for ``artfs.aio.Registry`` (``api/aio.py``): every call is the synchronous one in a
worker thread, so the caller's loop never blocks and the work happens in artfs's own loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import anyio.to_thread

from ..runs import RunInfo
from .run import Run
from .run import run as sync_run
from .version import Version

T = TypeVar("T")


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


class AsyncRun:
    """``async with artfs.aio.run(...) as run:``; ``.sync`` is the ``artfs.Run``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args, self._kwargs = args, kwargs
        self.sync: Run | None = None

    async def __aenter__(self) -> AsyncRun:
        self.sync = await _run(sync_run, *self._args, **self._kwargs)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await _run(self._started().__exit__, exc_type, exc, tb)

    def _started(self) -> Run:
        if self.sync is None:
            raise RuntimeError("use artfs.aio.run(...) as 'async with'")
        return self.sync

    @property
    def id(self) -> str:
        return self._started().id

    async def use(self, ref: str | Version) -> Version:
        return await _run(self._started().use, ref)

    async def log(self, source: str | os.PathLike[str] | Any, *args: Any, **kwargs: Any) -> Version:
        return await _run(self._started().log, source, *args, **kwargs)

    async def update_config(self, **values: Any) -> dict[str, Any]:
        return await _run(self._started().update_config, **values)

    async def refresh(self) -> RunInfo:
        return await _run(self._started().refresh)


def run(*args: Any, **kwargs: Any) -> AsyncRun:
    """``artfs.run``'s arguments; the run starts on ``async with``."""
    return AsyncRun(*args, **kwargs)
