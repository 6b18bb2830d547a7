"""Every version of a project that carries a tag (``artfs ls PROJECT --tag x``), page by page.

The registry answers a page per request (``GET /v1/projects/{project}/versions?tag=x``,
docs/api.md, "Versions with a tag"), ordered by artifact name (bytewise) then version
number, so a cursor is the last row's ``artifact:vN`` and a page picks up exactly after it
however many tags change meanwhile (keyset paging, no offset to shift). A project-wide
search is one request per ``limit`` rows, not one per artifact (``artfs ls p/a --tag x``
filters one artifact's listing: it had a listing already).

Clients offer it through ``TagSearch`` (a protocol of its own, like ``editing.py``'s), which
``tag_search`` finds on any client of artfs; ``all_tagged`` follows the pages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import InvalidInput, ProtocolError, Unsupported
from .models import VersionSummary
from .names import artifact_name, parse_version, version_label

DEFAULT_PAGE = 200
"""Rows per page unless asked otherwise: one page holds a typical project's tagged
versions, and a page of 200 summaries is about 40 KB of JSON."""
MAX_PAGE = 1000
"""Rows per page at most: bounds one request's work and response (about 200 KB of JSON)."""


@dataclass(frozen=True, slots=True)
class TaggedVersion:
    """One version that carries the tag: its artifact, and its summary (all its tags)."""

    project: str
    artifact: str
    summary: VersionSummary

    @property
    def ref(self) -> str:
        return f"{self.project}/{self.artifact}:{version_label(self.summary.number)}"

    def to_json(self) -> dict[str, Any]:
        return {"artifact": self.artifact, **self.summary.to_json()}

    @classmethod
    def from_json(cls, project: str, d: Any) -> TaggedVersion:
        try:
            return cls(project, str(d["artifact"]), VersionSummary.from_json(d))
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"malformed tagged version: {e}") from None


@dataclass(frozen=True, slots=True)
class TaggedPage:
    versions: list[TaggedVersion]
    next: str | None  # the cursor of the next page; None: this was the last

    def to_json(self) -> dict[str, Any]:
        return {"versions": [v.to_json() for v in self.versions], "next": self.next}

    @classmethod
    def from_json(cls, project: str, d: Any) -> TaggedPage:
        try:
            rows, after = d["versions"], d.get("next")
            if not isinstance(rows, list) or not (after is None or isinstance(after, str)):
                raise TypeError("'versions' must be a list and 'next' a string or null")
            return cls([TaggedVersion.from_json(project, r) for r in rows], after)
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"malformed page of tagged versions: {e}") from None


def cursor(artifact: str, number: int) -> str:
    return f"{artifact}:{version_label(number)}"


def parse_cursor(text: str) -> tuple[str, int]:
    """``artifact:vN`` -> (artifact, N): where a page starts (after that version)."""
    name, sep, label = text.rpartition(":")
    number = parse_version(label) if sep else None
    if number is None:
        raise InvalidInput(f"invalid cursor {text!r}: the 'next' of the previous page")
    return artifact_name(name), number


def page_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"invalid page size {limit!r}: 1 to {MAX_PAGE}")
    return limit


class TagSearch(Protocol):
    async def tagged_versions(
        self, project: str, tag: str, *, after: str | None = None, limit: int = DEFAULT_PAGE
    ) -> TaggedPage:
        """One page of the project's live versions with ``tag``, after cursor ``after``."""
        ...


def tag_search(client: object) -> TagSearch:
    """The client's tag search (every client of artfs has it)."""
    from .client.http import HttpRegistryClient
    from .client.local import LocalRegistryClient
    from .client.memory import MemoryRegistryClient
    from .refs.client import RefReadingClient

    if isinstance(client, RefReadingClient):  # reads refs; searches go to the registry's
        client = client.inner
    if isinstance(client, HttpRegistryClient | LocalRegistryClient | MemoryRegistryClient):
        return client
    raise Unsupported("this registry client cannot search tags")


async def all_tagged(
    client: object, project: str, tag: str, *, limit: int = DEFAULT_PAGE
) -> AsyncIterator[TaggedVersion]:
    """Every version of ``project`` with ``tag``, following the pages."""
    search = tag_search(client)
    after: str | None = None
    while True:
        page = await search.tagged_versions(project, tag, after=after, limit=limit)
        for version in page.versions:
            yield version
        if page.next is None:
            return
        after = page.next
