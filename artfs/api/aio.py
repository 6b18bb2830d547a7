"""Async twins of the Python API for trio and asyncio programs (``artfs.aio.Registry``).

What comes for free, and what it is: each method runs the synchronous call in a worker
thread (``anyio.to_thread.run_sync``; anyio is already there under httpx), which waits on
the shared loop thread of ``sync.py``. So the caller's event loop never blocks, under trio
or asyncio alike, and the work itself happens once, in artfs's own loop, whatever the
caller's loop is: there is one blob cache per process, and it lives there. The price is a
thread hop per call (tens of microseconds), nothing for bulk work (put, download, commit).
Reading file bytes is a synchronous ``Version.open`` in both worlds: wrap it the same way
(``await areg.read(version, path, offset, length)``) where a read may wait on the network.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio.to_thread

from ..lineage_graph import LineageGraph
from .draft import Draft
from .registry import Registry as SyncRegistry
from .version import File, Version

T = TypeVar("T")


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


class Registry:
    """``artfs.Registry`` with awaitable methods; same arguments. ``.sync`` is the
    synchronous registry underneath (its ``Version`` and ``Draft`` objects are returned)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sync = SyncRegistry(*args, **kwargs)

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await _run(self.sync.close)

    async def version(self, ref: str) -> Version:
        return await _run(self.sync.version, ref)

    async def versions(self, artifact: str) -> list[Version]:
        return await _run(self.sync.versions, artifact)

    async def artifacts(self, project: str) -> list[str]:
        return await _run(self.sync.artifacts, project)

    async def projects(self) -> list[str]:
        return await _run(self.sync.projects)

    async def lineage(
        self, ref: str, *, up: int | None = None, down: int | None = None
    ) -> LineageGraph:
        return await _run(self.sync.lineage, ref, up=up, down=down)

    async def put(
        self, path: str | os.PathLike[str] | None, artifact: str, **kwargs: Any
    ) -> Version:
        return await _run(self.sync.put, path, artifact, **kwargs)

    async def draft(self, artifact: str, base: str | int | Version | None = None) -> Draft:
        return await _run(self.sync.draft, artifact, base)

    async def commit(self, draft: Draft, **kwargs: Any) -> Version:
        return await _run(draft.commit, **kwargs)

    async def files(self, version: Version) -> list[File]:
        return await _run(version.files)

    async def read(
        self, version: Version, path: str, offset: int = 0, length: int | None = None
    ) -> bytes:
        """Bytes of a file of ``version`` (all of it, or ``length`` from ``offset``)."""

        def go() -> bytes:
            with version.open(path) as f:
                f.seek(offset)
                return f.read(-1 if length is None else length)

        return await _run(go)

    async def download(self, version: Version, dest: str | os.PathLike[str] | None = None) -> Path:
        return await _run(version.download, dest)

    async def verify(self, version: Version, directory: str | os.PathLike[str]) -> None:
        await _run(version.verify, directory)


__all__ = ["Registry"]
