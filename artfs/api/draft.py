"""``Draft``: a new version assembled from local files without a mount (``Registry.draft``).

The draft is only a plan kept in memory: the base version's files by reference plus local
files by path and external refs by URL. Nothing is read until ``commit``, which hashes the
added files, reads each new ref's source once (``refs/publish.hash_refs``, as ``artfs put
--ref`` does), uploads the blobs the registry lacks (``publish.upload_and_commit``, as
``artfs put`` does: a file already in the registry, in this or any version, costs no
upload) and commits the manifest with the base as parent. A local file must stay unchanged
until then. Files kept from the base that were refs stay refs (their bytes were never in
the registry, so there is nothing else they could be).
"""

from __future__ import annotations

import os
import stat
import tempfile
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
    one_error,
    scan_tree,
    upload_and_commit,
)
from ..refs.drafts import hash_draft_refs
from ..refs.model import BlobRef, check_url
from ..refs.publish import manifest_refs
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
        self._refs: dict[str, str] = {}  # path -> URL of external refs added (add_ref)
        # the base's refs (sha256 -> where its bytes stay), for the kept files that are refs
        self._base_refs: dict[str, BlobRef] = dict(manifest.refs) if manifest else {}
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
        return sorted({*self._kept, *self._added, *self._refs})

    def size_of(self, path: str) -> int:
        """The size the file at ``path`` will have (as it was when added)."""
        added = self._added.get(path)
        if added is not None:
            return added.size
        if path in self._refs:
            raise InvalidInput(
                f"{path!r} is an external ref ({self._refs[path]}): its size is read at commit"
            )
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
        self._refs.pop(path, None)
        self._added[path] = LocalFile(path, source.absolute(), source.stat().st_size)
        return path

    def add_ref(self, url: str, name: str) -> str:
        """Add (or replace) the file ``name`` whose bytes stay at ``url`` (``s3://``,
        ``https://``, ``http://``, ``file://``): an external reference, as ``artfs put --ref
        URL NAME`` makes. Nothing is read now; ``commit`` reads the source once for its size
        and sha256, and readers then fetch it from there through the verified cache (a
        source changed after the commit is an ``IntegrityError``, never other bytes).
        Returns the path."""
        path = name.strip("/")
        manifest_path(path)
        check_url(url)
        self._kept.pop(path, None)
        self._added.pop(path, None)
        self._links.pop(path, None)
        self._refs[path] = url
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
            self._refs.pop(path, None)
            self._added[path] = LocalFile(path, f.source.absolute(), f.size)
            added.append(path)
        return added

    def remove(self, path: str) -> int:
        """Remove a file, or every file under a directory; returns how many went."""
        path = path.strip("/")
        gone = 0
        tables: tuple[dict[str, Any], ...] = (self._kept, self._added, self._links, self._refs)
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

        if not self._kept and not self._added and not self._refs:
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
    try:
        with tempfile.TemporaryDirectory(prefix="artfs-draft-") as tmp:  # refs' block lists
            return await _hash_and_commit(draft, session, options, Path(tmp))
    except BaseExceptionGroup as group:  # files hashed in parallel: one clear error
        raise one_error(group) from None


async def _hash_and_commit(
    draft: Draft, session: Session, options: dict[str, Any], tmp: Path
) -> tuple[Any, int]:
    client = session.client
    added = sorted(draft._added.values(), key=lambda f: f.path)
    new = await hash_files(added)
    hashed, lists = await hash_draft_refs(sorted(draft._refs.items()), tmp)
    executable = {p for p in draft._exec if p in draft._kept}
    executable.update(f.path for f in added if os.stat(f.source).st_mode & stat.S_IXUSR)
    sources: dict[str, Path] = {new[f.path].sha256: f.source for f in added}
    # refs: the base's for the files kept, then the new ones; a blob with a local copy
    # among the added files is uploaded instead (as ``artfs put`` does)
    kept_blobs = {e.sha256 for e in draft._kept.values()}
    refs = {sha: ref for sha, ref in draft._base_refs.items() if sha in kept_blobs}
    refs.update(manifest_refs(hashed))
    manifest = Manifest.build(
        [(p, e.size, e.sha256) for p, e in draft._kept.items()]
        + [(p, e.size, e.sha256) for p, e in new.items()]
        + [(h.path, h.size, h.sha256) for h in hashed],
        refs={sha: ref for sha, ref in refs.items() if sha not in sources},
        executable=executable,
        symlinks=draft._links.items(),
        dirs=[
            d
            for d in draft._dirs
            if d not in draft._kept and d not in draft._added and d not in draft._refs
        ],
    )
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

    return await upload_and_commit(client, manifest, {**sources, **lists}, None, commit)
