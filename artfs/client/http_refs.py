"""``HttpRegistryClient``'s call for which files of a version are external refs (the route
``GET .../versions/N/refs``, docs/api.md): a mixin, so http.py stays the size it is."""

from __future__ import annotations

from typing import Any

from ..errors import ProtocolError


class RefsHttp:
    """Mixed into ``HttpRegistryClient`` (its ``_json``/``_art_path``)."""

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def _art_path(project: str, artifact: str) -> str:
        raise NotImplementedError

    async def version_refs(
        self, project: str, artifact: str, number: int, limit: int | None
    ) -> dict[str, Any]:
        """``{"count", "files": [{"path", "url", "size", "sha256"}], "more"}``: the first
        ``limit`` refs by path (None: all; ``refs/listing.py``)."""
        params = {} if limit is None else {"limit": str(limit)}
        data = await self._json(
            "GET",
            f"{self._art_path(project, artifact)}/versions/{int(number)}/refs",
            params=params,
        )
        if not isinstance(data, dict) or not isinstance(data.get("files"), list):
            raise ProtocolError(f"invalid refs listing of {project}/{artifact}:v{number}")
        return data
