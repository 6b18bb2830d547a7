"""Clients of the registry: over HTTP (``http.py``) or in-process (``local.py``)."""

from __future__ import annotations

from .base import RegistryClient


def open_client(
    registry: str, *, timeout: float = 10.0, token: str | None = None
) -> RegistryClient:
    """A client for ``registry``: an ``http(s)://`` URL, or a local registry directory."""
    if registry.startswith(("http://", "https://")):
        from .http import HttpRegistryClient

        return HttpRegistryClient(registry, timeout=timeout, token=token)
    from .local import LocalRegistryClient

    return LocalRegistryClient(registry)


__all__ = ["RegistryClient", "open_client"]
