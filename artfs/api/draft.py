"""``Draft``: a new version assembled from local files without a mount (``Registry.draft``).

The draft is only a plan kept in memory: the base version's files by reference plus local
files by path. Nothing is read until ``commit``, which hashes the added files, uploads the
blobs the registry lacks (``publish.upload_and_commit``, as ``artfs put`` does: a file
already in the registry, in this or any version, costs no upload) and commits the manifest
with the base as parent. A local file must stay unchanged until then.
"""

from __future__ import annotations

import os
import stat
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
        manifest = base.manifest() if base else None
        self._kept: dict[str, FileEntry] = dict(manifest.items()) if manifest else {}
        self._added: dict[str, LocalFile] = {}
        # what the base keeps besides bytes (manifest_extras.py), for the paths still kept
        self._exec: set[str] = set(manifest.executable) if manifest else set()
        self._links: dict[str, str] = dict(manifest.symlinks) if manifest else {}
        self._dirs: set[str] = set(manifest.dirs) if manifest else set()
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
        self._links.pop(path, None)
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
            self._links.pop(path, None)
            self._added[path] = LocalFile(path, f.source.absolute(), f.size)
            added.append(path)
        return added

    def remove(self, path: str) -> int:
        """Remove a file, or every file under a directory; returns how many went."""
        path = path.strip("/")
        gone = 0
        tables: tuple[dict[str, Any], ...] = (self._kept, self._added, self._links)
        for table in tables:
            for p in [p for p in table if p == path or p.startswith(path + "/") or not path]:
                del table[p]
                gone += 1
        for p in [p for p in self._dirs if p == path or p.startswith(path + "/") or not path]:
            self._dirs.discard(p)
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
    executable = {p for p in draft._exec if p in draft._kept}
    executable.update(f.path for f in added if os.stat(f.source).st_mode & stat.S_IXUSR)
    manifest = Manifest.build(
        [(p, e.size, e.sha256) for p, e in draft._kept.items()]
        + [(p, e.size, e.sha256) for p, e in new.items()],
        executable=executable,
        symlinks=draft._links.items(),
        dirs=[d for d in draft._dirs if d not in draft._kept and d not in draft._added],
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
