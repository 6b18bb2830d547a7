"""A registry client that also reads external refs: the cache's one source of bytes.

The blob cache asks its client for a blob's block digests and byte ranges by sha256
(``RegistryClient.blob_blocks`` / ``read_range``). ``RefReadingClient`` wraps any client
and answers those two for the blobs it was told are refs (``add``: from every manifest
the mount builds a tree of, or ``get_manifest`` returns) from the ref's URL and the
block-digest list the committer stored in the registry; everything else goes to the
registry as before. So the cache's verification (every block against its digest, the
whole against its sha256) covers refs unchanged: a source that changed is an
``IntegrityError`` (EIO at the mount), never wrong bytes.

Refs are resolved here, by the reading client, never by the server.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

from ..client.base import DataSink, RegistryClient
from ..errors import IntegrityError, ProtocolError
from ..hashing import BLOCK_SIZE, split_block_digests
from ..manifest import Manifest
from .model import BlobRef, blocks_size
from .sources import Sources, file_roots

log = logging.getLogger("artfs.refs")


class RefReadingClient:
    """Delegates every ``RegistryClient`` method to ``inner`` (``__getattr__``: methods
    other features add to the protocol pass through unchanged), except the blob reads of
    refs. Build it with ``with_refs``."""

    def __init__(self, inner: RegistryClient, sources: Sources) -> None:
        self.inner = inner
        self.sources = sources
        self.refs: dict[str, BlobRef] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def add(self, refs: Mapping[str, BlobRef]) -> None:
        """Blobs to read from their URL from now on (a manifest's ``refs``)."""
        self.refs.update(refs)

    async def get_manifest(self, project: str, artifact: str, number: int) -> Manifest:
        manifest = await self.inner.get_manifest(project, artifact, number)
        self.add(manifest.refs)
        return manifest

    async def blob_blocks(self, sha256: str, size: int) -> list[bytes]:
        ref = self.refs.get(sha256)
        if ref is None:
            return await self.inner.blob_blocks(sha256, size)
        if size <= BLOCK_SIZE or ref.blocks is None:
            return [bytes.fromhex(sha256)]
        want = blocks_size(size)
        parts: list[bytes] = []
        await self.inner.read_range(ref.blocks, want, 0, want, parts.append)
        raw = b"".join(parts)
        if hashlib.sha256(raw).hexdigest() != ref.blocks:
            raise IntegrityError(f"the block list of ref {ref.url} does not match its digest")
        try:
            return split_block_digests(raw, size)
        except Exception as e:
            raise ProtocolError(f"block list of ref {ref.url}: {e}") from None

    async def read_range(
        self, sha256: str, size: int, offset: int, length: int, sink: DataSink
    ) -> None:
        ref = self.refs.get(sha256)
        if ref is None:
            await self.inner.read_range(sha256, size, offset, length, sink)
        else:
            await self.sources.read(ref.url, size, offset, length, sink)

    async def prepare_read(self, sha256: str) -> None:
        if sha256 not in self.refs:  # (a ref is read from its source: nothing to locate)
            await self.inner.prepare_read(sha256)

    def hint_blobs(self, digests: Sequence[str]) -> None:
        """Registry locate hints for the registry's blobs only (a ref is never located)."""
        refs = self.refs
        self.inner.hint_blobs([d for d in digests if d not in refs] if refs else digests)

    async def report_damage(self, sha256: str, detail: str = "") -> str:
        if sha256 in self.refs:  # the registry does not hold it: nothing there to re-check
            log.warning(
                "external ref %s changed since it was committed: %s", self.refs[sha256].url, detail
            )
            return "ref"
        return await self.inner.report_damage(sha256, detail)

    async def aclose(self) -> None:
        try:
            await self.sources.aclose()
        finally:
            await self.inner.aclose()


class ThreadedRefReadingClient(RefReadingClient):
    """The same over a client whose blob bytes worker threads fetch (``cache/fetchpool.py``):
    those are registry URLs only, so a ref answers False and the cache uses ``read_range``."""

    async def fetch_range(
        self, sha256: str, size: int, offset: int, length: int, transfer: Any
    ) -> bool:
        if sha256 in self.refs:
            return False
        return bool(await self.inner.fetch_range(sha256, size, offset, length, transfer))  # type: ignore[attr-defined]


def with_refs(
    inner: RegistryClient, *, timeout: float = 30.0, sources: Sources | None = None
) -> RegistryClient:
    """``inner`` able to read refs; ``file://`` only under ``$ARTFS_REF_FILE_ROOTS``.
    (The cast: a ``__getattr__`` delegate satisfies the protocol at run time; mypy does
    not count ``__getattr__`` for protocol members.)"""
    made = sources if sources is not None else Sources(timeout=timeout, file_roots=file_roots())
    kind = ThreadedRefReadingClient if hasattr(inner, "fetch_range") else RefReadingClient
    return cast(RegistryClient, kind(inner, made))


def add_refs(client: RegistryClient, refs: Mapping[str, BlobRef]) -> None:
    """Tell ``client`` about refs if it reads them (the mount, after building a tree)."""
    if refs and isinstance(client, RefReadingClient):
        client.add(refs)
