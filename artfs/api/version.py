"""``Version``: one committed version as the Python API shows it, and what can be done with it."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..download import download_into, select_tree
from ..errors import IntegrityError, InvalidInput, IsADirectory, NotFound
from ..manifest import Manifest
from ..models import VersionInfo
from ..names import version_label
from ..refs.model import BlobRef
from ..verify import compare
from .fileobj import BlobReadFunctions, VersionFile

if TYPE_CHECKING:
    from .registry import Registry


@dataclass(frozen=True, slots=True)
class File:
    """A file of a version: its path inside the version, size and sha256; ``url``: where
    its bytes stay if it is an external reference (``Draft.add_ref``, ``artfs put --ref``),
    None when the registry holds them. Either way it reads the same (``Version.open``)."""

    path: str
    size: int
    sha256: str
    url: str | None = None

    @property
    def is_ref(self) -> bool:
        return self.url is not None


class Version:
    """A committed version (immutable). Get one from ``Registry.version``/``put``/``commit``."""

    def __init__(self, registry: Registry, info: VersionInfo) -> None:
        self._registry = registry
        self._info = info
        self._manifest: Manifest | None = None

    # --- facts ---------------------------------------------------------------------------
    @property
    def info(self) -> VersionInfo:
        """The registry's record of the version (``artfs.models.VersionInfo``)."""
        return self._info

    @property
    def ref(self) -> str:
        """``project/artifact:vN``: names this version forever (aliases move)."""
        return self._info.ref

    @property
    def project(self) -> str:
        return self._info.project

    @property
    def artifact(self) -> str:
        return self._info.artifact

    @property
    def number(self) -> int:
        return self._info.number

    @property
    def aliases(self) -> tuple[str, ...]:
        """The aliases that pointed at it when it was looked up."""
        return self._info.aliases

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._info.metadata)

    @property
    def description(self) -> str:
        return self._info.description

    @property
    def type(self) -> str:
        return self._info.artifact_type

    @property
    def digest(self) -> str:
        """The manifest's sha256: equal digests mean identical contents."""
        return self._info.digest

    @property
    def created(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._info.created, tz=dt.UTC)

    @property
    def creator(self) -> str:
        return self._info.creator

    @property
    def inputs(self) -> tuple[str, ...]:
        """References of the versions it was made from (lineage)."""
        return tuple(i.ref for i in self._info.inputs)

    @property
    def tags(self) -> tuple[str, ...]:
        """Its tags when it was looked up (sorted; ``tag``/``untag`` change them)."""
        return self._info.tags

    @property
    def expires(self) -> dt.datetime | None:
        """When ``artfs gc`` may delete it (unless an alias holds it then); None: never."""
        when = self._info.expires
        return None if when is None else dt.datetime.fromtimestamp(when, tz=dt.UTC)

    # --- what may change (content never does) ---------------------------------------------
    def edit(
        self,
        *,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        replace: bool = False,
    ) -> Version:
        """Change its description and/or metadata (merged: top-level keys set, ``None``
        values removed; ``replace``: the whole object). Kept in its ``history()``. Returns
        the version as it is now; this object keeps what it was."""
        from .. import config
        from ..versionmeta import MERGE, REPLACE

        info = self._editor_call(
            "edit_version",
            description=description,
            metadata=metadata,
            mode=REPLACE if replace else MERGE,
            editor=config.creator(),
        )
        return Version(self._registry, info)

    def tag(self, *tags: str) -> tuple[str, ...]:
        """Add tags; its tags after."""
        result: tuple[str, ...] = self._editor_call("change_tags", add=tags)
        return result

    def untag(self, *tags: str) -> tuple[str, ...]:
        """Remove tags; its tags after."""
        result: tuple[str, ...] = self._editor_call("change_tags", remove=tags)
        return result

    def set_ttl(self, ttl: float | str | None) -> dt.datetime | None:
        """Let ``artfs gc`` delete it ``ttl`` (seconds or ``"30d"``) from now unless an alias
        holds it then; None keeps it for good. When it expires."""
        when: float | None = self._editor_call("set_ttl", ttl)
        return None if when is None else dt.datetime.fromtimestamp(when, tz=dt.UTC)

    def history(self) -> list[dict[str, Any]]:
        """Every edit of its description and metadata, oldest first: ``{"edited":
        datetime, "editor": str, "changes": {field: [before, after]}}``."""
        edits = self._editor_call("edit_history")
        return [
            {
                "edited": dt.datetime.fromtimestamp(e.edited, tz=dt.UTC),
                "editor": e.editor,
                "changes": e.changes,
            }
            for e in edits
        ]

    def _editor_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from functools import partial

        from ..client.editing import editor_of

        _, session = self._registry._session()
        call = partial(getattr(editor_of(session.client), method), **kwargs)
        return self._registry._call(call, self.project, self.artifact, self.number, *args)

    @property
    def size(self) -> int:
        return self._info.total_size

    def __repr__(self) -> str:
        return f"<artfs.Version {self.ref}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and (self.ref, self.digest) == (other.ref, other.digest)

    def __hash__(self) -> int:
        return hash((self.ref, self.digest))

    # --- contents ------------------------------------------------------------------------
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = self._registry._manifest(self.project, self.artifact, self.number)
        return self._manifest

    def files(self) -> list[File]:
        """Every file, sorted by path."""
        manifest = self.manifest()
        refs = manifest.refs
        return [File(p, e.size, e.sha256, _url(refs, e.sha256)) for p, e in manifest.items()]

    def refs(self) -> list[File]:
        """The files that are external references (``File.url`` set), sorted by path."""
        return [f for f in self.files() if f.url is not None] if self.manifest().refs else []

    def file(self, path: str) -> File:
        path = path.strip("/")
        entry = self.manifest().get(path)
        if entry is None:
            if any(p.startswith(path + "/") for p in self.manifest()):
                raise IsADirectory(f"{self.ref}: {path!r} is a directory")
            raise NotFound(f"{self.ref}: no file {path!r}")
        return File(path, entry.size, entry.sha256, _url(self.manifest().refs, entry.sha256))

    def open(self, path: str, mode: str = "rb") -> VersionFile:
        """Open a file of the version for binary reading: a seekable ``io.RawIOBase`` whose
        reads come from the shared verified cache (fetching, then verifying, missing blocks)."""
        if mode not in ("r", "rb"):
            raise InvalidInput(
                f"a version is read-only and binary: open it with 'rb', not {mode!r}"
            )
        f = self.file(path)
        reg = self._registry
        portal, session = reg._session()
        reads = BlobReadFunctions(portal, session, f.sha256, f.size, reg.read_timeout)
        return VersionFile(f"{self.ref}/{f.path}", reads)

    def read_bytes(self, path: str) -> bytes:
        with self.open(path) as f:
            return f.read()

    def download(self, dest: str | os.PathLike[str] | None = None) -> Path:
        """The version as a local directory, through the shared cache.

        ``dest`` None: a running mount of the same registry answers with its own path
        (``MOUNT/project/artifact/vN``, nothing copied); without one, the version is copied
        to ``./artifacts/project/artifact/vN`` (reused if it is already there intact).
        An explicit ``dest`` must be absent or empty."""
        reg = self._registry
        label = version_label(self.number)
        if dest is None:
            mount = reg.mountpoint()
            if mount is not None:
                return mount / self.project / self.artifact / label
            target = Path("artifacts", self.project, self.artifact, label).absolute()
            if target.is_dir() and any(target.iterdir()):
                self.verify(target)
                return target
        else:
            target = Path(dest).absolute()
        portal, session = reg._session()
        manifest = self.manifest()
        portal.call(download_into, session.cache, manifest, target, False, timeout=None)
        return target

    def verify(self, directory: str | os.PathLike[str]) -> None:
        """Check that ``directory`` holds exactly this version's files with the right bytes;
        raises ``artfs.IntegrityError`` naming what differs. Hashes every file."""
        report = compare(Path(directory), select_tree(self.manifest()))
        problems = report.problems()
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise IntegrityError(
                f"{directory} does not match {self.ref}: {'; '.join(problems[:3])}{more}"
            )


def _url(refs: Mapping[str, BlobRef], sha256: str) -> str | None:
    ref = refs.get(sha256)
    return None if ref is None else ref.url
