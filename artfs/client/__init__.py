"""Clients of the registry: over HTTP (``http.py``) or in-process (``local.py``)."""

from __future__ import annotations

import os

from .base import RegistryClient


def open_client(
    registry: str, *, timeout: float = 10.0, token: str | None = None
) -> RegistryClient:
    """A client for ``registry``: an ``http(s)://`` URL, or a local registry directory.

    The token for a registry URL is ``token``, else ``$ARTFS_TOKEN``: this is the one place
    every command (and the mount daemon, which inherits the environment) takes it from.
    The client reads external refs from their URLs (``refs/client.py``)."""
    from ..refs.client import with_refs

    if registry.startswith(("http://", "https://")):
        from ..auth import client_secret
        from .http import HttpRegistryClient

        if token is None:
            token = client_secret(os.environ.get("ARTFS_TOKEN"))
        return with_refs(HttpRegistryClient(registry, timeout=timeout, token=token))
    from .local import LocalRegistryClient

    return with_refs(LocalRegistryClient(registry))


__all__ = ["RegistryClient", "open_client"]
