"""Tag search (``artfs/tagsearch.py``) for the clients: one mixin per client, so http.py,
local.py and memory.py each change by one class line. The in-memory twin follows the
registry's rules (order, cursor, page size, live versions only) for tests without a
database."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from ..errors import NotFound
from ..models import ArtifactInfo
from ..names import project_name
from ..tagsearch import (
    DEFAULT_PAGE,
    TaggedPage,
    TaggedVersion,
    cursor,
    page_limit,
    parse_cursor,
)
from ..versionmeta import tag_name

if TYPE_CHECKING:
    from ..registry.core import Registry

T = TypeVar("T")


class HttpTagSearch:
    """Mixed into ``HttpRegistryClient`` (its ``_json``)."""

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        raise NotImplementedError

    async def tagged_versions(
        self, project: str, tag: str, *, after: str | None = None, limit: int = DEFAULT_PAGE
    ) -> TaggedPage:
        project = project_name(project)
        params = {"tag": tag_name(tag), "limit": str(page_limit(limit))}
        if after is not None:
            params["after"] = after
        data = await self._json(
            "GET", f"/v1/projects/{quote(project, safe='')}/versions", params=params
        )
        return TaggedPage.from_json(project, data)


class LocalTagSearch:
    """Mixed into ``LocalRegistryClient`` (its ``_reg``/``_run``)."""

    async def _reg(self) -> Registry:
        raise NotImplementedError

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        raise NotImplementedError

    async def tagged_versions(
        self, project: str, tag: str, *, after: str | None = None, limit: int = DEFAULT_PAGE
    ) -> TaggedPage:
        reg = await self._reg()
        return await self._run(reg.tagged_versions, project, tag, after=after, limit=limit)


class MemoryTagSearch:
    """Mixed into ``MemoryRegistryClient`` (its ``projects``/``artifacts``/``requests``)."""

    projects: Any
    artifacts: dict[tuple[str, str], ArtifactInfo]
    requests: int

    async def tagged_versions(
        self, project: str, tag: str, *, after: str | None = None, limit: int = DEFAULT_PAGE
    ) -> TaggedPage:
        self.requests += 1
        tag, limit = tag_name(tag), page_limit(limit)
        start = None if after is None else parse_cursor(after)
        if project not in self.projects:
            raise NotFound(f"project {project} not found")
        rows = [
            TaggedVersion(project, name, v)
            for (p, name), art in sorted(
                self.artifacts.items(), key=lambda kv: kv[0][1].encode("utf-8")
            )
            if p == project
            for v in art.versions
            if tag in v.tags
            and (start is None or (name.encode(), v.number) > (start[0].encode(), start[1]))
        ]
        page = rows[:limit]
        more = len(rows) > limit
        last = page[-1] if more else None
        return TaggedPage(
            page, None if last is None else cursor(last.artifact, last.summary.number)
        )
