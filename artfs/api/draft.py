"""``Draft``: a new version assembled from local files without a mount (``Registry.draft``).

The draft is only a plan kept in memory: the base version's files by reference plus local
files by path. Nothing is read until ``commit``, which hashes the added files, uploads the
blobs the registry lacks (``publish.upload_and_commit``, as ``artfs put`` does: a file
already in the registry, in this or any version, costs no upload) and commits the manifest
with the base as parent. A local file must stay unchanged until then.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import config
from ..errors import InvalidInput, NotFound
from ..manifest import FileEntry, Manifest
from ..models import CommitResult
from ..names import manifest_path
from ..progress import plural
from ..publish import (
    LocalFile,
    artifact_to_create,
    hash_files,
    scan_tree,
    upload_and_commit,
)
from .version import Version

if TYPE_CHECKING:
    from .registry import Registry
    from .sync import Session


class Draft:
    """A version being built; ``commit()`` publishes it. Not thread-safe."""

    def __init__(
        self, registry: Registry, project: str, artifact: str, base: Version | None
    ) -> None:
        self._registry = registry
        self.project = project
        self.artifact = artifact
        self.base = base
        self._kept: dict[str, FileEntry] = dict(base.manifest().items()) if base else {}
        self._added: dict[str, LocalFile] = {}
        self.uploaded = 0
        """Bytes the last ``commit`` uploaded (only blobs the registry did not hold)."""

    def __repr__(self) -> str:
        base = f" from {self.base.ref}" if self.base else ""
        return f"<artfs.Draft {self.project}/{self.artifact}{base}: {plural(len(self.paths()), 'file')}>"

    def paths(self) -> list[str]:
        """The paths the version will have, sorted."""
        return sorted({*self._kept, *self._added})

    def size_of(self, path: str) -> int:
        """The size the file at ``path`` will have (as it was when added)."""
        added = self._added.get(path)
        if added is not None:
            return added.size
        kept = self._kept.get(path)
        if kept is None:
            raise NotFound(f"{path!r} is not in this draft")
        return kept.size

    def add_file(self, src: str | os.PathLike[str], name: str | None = None) -> str:
        """Add (or replace) one file, as ``name`` (default: its base name); returns the path."""
        source = Path(src)
        if not source.is_file():
            raise NotFound(f"{source}: not a regular file")
        path = name.strip("/") if name is not None else source.name
        manifest_path(path)
        self._kept.pop(path, None)
        self._added[path] = LocalFile(path, source.absolute(), source.stat().st_size)
        return path

    def add_dir(self, src: str | os.PathLike[str], prefix: str = "") -> list[str]:
        """Add every file under ``src``, under ``prefix`` in the version; returns their paths."""
        prefix = prefix.strip("/")
        added = []
        for f in scan_tree(Path(src)):
            path = f"{prefix}/{f.path}" if prefix else f.path
            manifest_path(path)
            self._kept.pop(path, None)
            self._added[path] = LocalFile(path, f.source.absolute(), f.size)
            added.append(path)
        return added

    def remove(self, path: str) -> int:
        """Remove a file, or every file under a directory; returns how many went."""
        path = path.strip("/")
        gone = 0
        for table in (self._kept, self._added):
            for p in [p for p in table if p == path or p.startswith(path + "/") or not path]:
                del table[p]
                gone += 1
        if not gone:
            raise NotFound(f"{path!r} is not in this draft")
        return gone

    def commit(
        self,
        *,
        aliases: Sequence[str] = (),
        metadata: dict[str, Any] | None = None,
        description: str = "",
        inputs: Sequence[str | Version] = (),
        type: str | None = None,
    ) -> Version:
        """Publish the draft as a new version (or, if identical to ``latest``, get that one)."""
        from .registry import input_refs

        if not self._kept and not self._added:
            raise InvalidInput(f"draft of {self.project}/{self.artifact} has no files")
        _, session = self._registry._session()
        options = {
            "aliases": tuple(aliases),
            "metadata": metadata,
            "description": description,
            "inputs": input_refs(inputs),
            "type": type,
        }
        result, uploaded = self._registry._call(_commit, self, session, options, whole=True)
        self.uploaded = uploaded
        return Version(self._registry, result.version)


async def _commit(draft: Draft, session: Session, options: dict[str, Any]) -> tuple[Any, int]:
    client = session.client
    added = sorted(draft._added.values(), key=lambda f: f.path)
    new = await hash_files(added)
    manifest = Manifest.build(
        [(p, e.size, e.sha256) for p, e in draft._kept.items()]
        + [(p, e.size, e.sha256) for p, e in new.items()]
    )
    sources = {new[f.path].sha256: f.source for f in added}
    create_type = await artifact_to_create(client, draft.project, draft.artifact, options["type"])

    async def commit() -> CommitResult:
        return await client.commit(
            draft.project,
            draft.artifact,
            manifest,
            metadata=options["metadata"],
            description=options["description"],
            aliases=options["aliases"],
            parent=draft.base.number if draft.base else None,
            creator=config.creator(),
            inputs=options["inputs"],
            create_type=create_type,
        )

    return await upload_and_commit(client, manifest, sources, None, commit)
