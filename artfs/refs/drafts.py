"""External refs in draft commits: ``NAME.artfs-ref`` files, and refs a draft inherits.

A draft file ``NAME.artfs-ref`` holding a URL (``model.parse_ref_file``) commits as the
entry ``NAME`` whose bytes stay at that URL, read once at commit. A file inherited from
a base version that was a ref stays one: its bytes are not in the registry, so when the
registry reports it missing the base's manifest is asked for its ref (only then: a draft
without refs costs no extra request).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from ..client.base import RegistryClient
from ..manifest import Manifest
from .model import REF_SUFFIX, BlobRef, parse_ref_file
from .publish import HashedRef, hash_refs
from .sources import Sources


def is_ref_file(path: str, source: Path | None) -> bool:
    return source is not None and path.endswith(REF_SUFFIX) and len(path) > len(REF_SUFFIX)


def ref_pair(path: str, source: Path) -> tuple[str, str]:
    """``(entry path, url)`` of a draft's ``.artfs-ref`` file."""
    return path[: -len(REF_SUFFIX)], parse_ref_file(source.read_bytes())


async def hash_draft_refs(
    pairs: Sequence[tuple[str, str]], tmp: Path
) -> tuple[list[HashedRef], dict[str, Path]]:
    reader = Sources(file_roots=None)  # the committer's own refs
    try:
        return await hash_refs(pairs, reader, tmp)
    finally:
        await reader.aclose()


async def inherited_refs(
    client: RegistryClient, project: str, artifact: str, base: int, lost: Iterable[str]
) -> dict[str, BlobRef]:
    """The refs of ``base`` among blobs the registry does not hold."""
    base_manifest = await client.get_manifest(project, artifact, base)
    return {sha: base_manifest.refs[sha] for sha in lost if sha in base_manifest.refs}


def with_refs(manifest: Manifest, refs: dict[str, BlobRef]) -> Manifest:
    entries = ((p, e.size, e.sha256) for p, e in manifest.items())
    return Manifest.build(entries, refs={**manifest.refs, **refs})
