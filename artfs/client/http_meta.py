"""``HttpRegistryClient``'s calls for what changes after a commit (``editing.py``), and its
commit (which carries tags, a time to live and ``allow_duplicate``): a mixin, so http.py
stays the size it is. Routes: docs/api.md, "Editing versions"."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import httpx

from ..errors import ProtocolError
from ..lineage import input_lists
from ..manifest import Manifest
from ..models import ArtifactInfo, CommitResult, VersionInfo
from ..names import alias_name
from ..versionmeta import MERGE, MetaEdit, parse_ttl, tag_set


def _q(segment: str) -> str:
    return quote(segment, safe="")


class HttpMetaCalls:
    """Mixed into ``HttpRegistryClient`` (its ``_json``/``_request``/``_art_path``)."""

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        raise NotImplementedError

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
        timeout: httpx.Timeout | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        raise NotImplementedError

    @staticmethod
    def _art_path(project: str, artifact: str) -> str:
        raise NotImplementedError

    async def commit(
        self,
        project: str,
        artifact: str,
        manifest: Manifest,
        *,
        metadata: dict[str, Any] | None = None,
        description: str = "",
        aliases: Iterable[str] = (),
        parent: int | None = None,
        creator: str = "",
        inputs: Iterable[str] = (),
        observed_inputs: Iterable[str] = (),
        tags: Iterable[str] = (),
        ttl: float | str | None = None,
        allow_duplicate: bool = False,
        create_type: str | None = None,
    ) -> CommitResult:
        body: dict[str, Any] = {
            "manifest": manifest.to_json(),
            "metadata": metadata or {},
            "description": description,
            "aliases": [alias_name(a, allow_latest=True) for a in aliases],
            "parent": parent,
            "creator": creator,
            **input_lists(inputs, observed_inputs),
            "create_type": create_type,
        }
        if tags := tag_set(tags):
            body["tags"] = list(tags)
        if ttl is not None:
            body["ttl"] = parse_ttl(ttl)
        if allow_duplicate:
            body["allow_duplicate"] = True
        data = await self._json(
            "POST", f"{self._art_path(project, artifact)}/versions", json_body=body
        )
        return CommitResult.from_json(data)

    def _version_path(self, project: str, artifact: str, number: int) -> str:
        return f"{self._art_path(project, artifact)}/versions/{int(number)}"

    async def edit_version(
        self,
        project: str,
        artifact: str,
        number: int,
        *,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        mode: str = MERGE,
        editor: str = "",
    ) -> VersionInfo:
        body: dict[str, Any] = {"mode": mode, "editor": editor}
        if description is not None:
            body["description"] = description
        if metadata is not None:
            body["metadata"] = metadata
        path = self._version_path(project, artifact, number)
        return VersionInfo.from_json(await self._json("PATCH", path, json_body=body))

    async def edit_artifact(
        self,
        project: str,
        artifact: str,
        *,
        description: str | None = None,
        type: str | None = None,
        editor: str = "",
    ) -> ArtifactInfo:
        body: dict[str, Any] = {"editor": editor}
        if description is not None:
            body["description"] = description
        if type is not None:
            body["type"] = type
        path = self._art_path(project, artifact)
        return ArtifactInfo.from_json(await self._json("PATCH", path, json_body=body))

    async def edit_history(self, project: str, artifact: str, number: int | None) -> list[MetaEdit]:
        if number is None:
            path = f"{self._art_path(project, artifact)}/history"
        else:
            path = f"{self._version_path(project, artifact, number)}/history"
        data = await self._json("GET", path)
        try:
            return [MetaEdit.from_json(e) for e in data["edits"]]
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"malformed edit history: {e}") from None

    async def change_tags(
        self,
        project: str,
        artifact: str,
        number: int,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> tuple[str, ...]:
        body = {"add": list(tag_set(add)), "remove": list(tag_set(remove))}
        path = f"{self._version_path(project, artifact, number)}/tags"
        data = await self._json("POST", path, json_body=body)
        try:
            return tag_set(data["tags"])
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"malformed tags answer: {e}") from None

    async def set_ttl(
        self, project: str, artifact: str, number: int, ttl: float | str | None
    ) -> float | None:
        path = f"{self._version_path(project, artifact, number)}/ttl"
        data = await self._json("PUT", path, json_body={"ttl": parse_ttl(ttl)})
        try:
            expires = data["expires"]
            return None if expires is None else float(expires)
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"malformed ttl answer: {e}") from None

    async def protect_alias(
        self, project: str, artifact: str, alias: str, *, protect: bool = True
    ) -> None:
        path = f"{self._art_path(project, artifact)}/aliases/{_q(alias_name(alias))}/protection"
        await self._request("PUT" if protect else "DELETE", path)

    async def delete_artifact(self, project: str, artifact: str, *, force: bool = False) -> int:
        params = {"force": "true" if force else "false"}
        data = await self._json("DELETE", self._art_path(project, artifact), params=params)
        try:
            return int(data["deleted"])
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"malformed delete answer: {e}") from None
