"""``Registry``: the synchronous entry point of the Python API (``artfs.Registry``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import config, mountinfo
from ..errors import InvalidInput
from ..lineage_graph import LineageGraph
from ..manifest import Manifest
from ..models import VersionInfo
from ..names import parse_artifact_id, parse_ref, parse_version
from ..publish import put_tree
from ..tagsearch import all_tagged
from ..treescan import SymlinkPolicy
from ..versionmeta import parse_ttl, tag_set
from .sync import RUNTIME, Portal, Session, SessionKey, normalize_registry
from .version import Version

if TYPE_CHECKING:
    from .draft import Draft

METADATA_CALLS = 6  # a metadata call may take this many client timeouts (it may resend)


class Registry:
    """A registry, by URL (``http(s)://...``) or registry directory; thread-safe.

    ``url_or_dir`` defaults to ``$ARTFS_REGISTRY`` and ``token`` to ``$ARTFS_TOKEN``; file
    bytes go through the shared verified cache at ``cache_dir`` (default: the mounts' own,
    ``$ARTFS_CACHE_DIR`` or ``~/.cache/artfs``). ``timeout`` bounds each request to the
    registry; a whole metadata call or read gets ``6 x timeout``; uploads and downloads have
    no bound on the whole, only on each request.

    Use it as a context manager or call ``close()``; whatever is left open is closed at
    interpreter exit.
    """

    def __init__(
        self,
        url_or_dir: str | os.PathLike[str] | None = None,
        token: str | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_size: int | str | None = None,
        timeout: float = config.DEFAULT_TIMEOUT,
    ) -> None:
        registry = config.registry_from(os.fspath(url_or_dir) if url_or_dir is not None else None)
        size = config.parse_size(cache_size) if isinstance(cache_size, str) else cache_size
        self.url = normalize_registry(registry)
        self.cache_dir = config.cache_dir_from(os.fspath(cache_dir) if cache_dir else None)
        self.timeout = timeout
        self.read_timeout = METADATA_CALLS * timeout
        self._key = SessionKey(self.url, token, self.cache_dir, size, timeout)
        self._held: tuple[Portal, Session] | None = None
        self._lock = threading.Lock()
        self._closed = False

    # --- lifetime ----------------------------------------------------------------------
    def _session(self) -> tuple[Portal, Session]:
        held = self._held
        if held is not None and held[1].generation == RUNTIME.generation and held[0].alive:
            return held
        with self._lock:  # several threads' first calls take one session reference, not two
            if self._closed:
                raise InvalidInput("this artfs.Registry is closed")
            held = self._held
            if held is None or held[1].generation != RUNTIME.generation or not held[0].alive:
                held = self._held = RUNTIME.acquire(self._key)
            return held

    def _call(self, fn: Any, *args: Any, whole: bool = False) -> Any:
        """``await fn(*args)`` in the loop thread, bounded by ``read_timeout`` unless
        ``whole`` (uploads, downloads: each request inside is bounded instead)."""
        portal, _ = self._session()
        return portal.call(fn, *args, timeout=None if whole else self.read_timeout)

    def close(self) -> None:
        """Release the client and cache (shared with other ``Registry`` objects of the same
        registry and cache); open files of its versions must be closed first."""
        with self._lock:
            self._closed = True
            held, self._held = self._held, None
        if held is not None and held[1].generation == RUNTIME.generation:
            RUNTIME.release(self._key, held[1])

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<artfs.Registry {self.url}>"

    @property
    def client(self) -> Any:
        """The underlying async client (``artfs.client.base.RegistryClient``), for trio code
        running in the registry's own loop; most callers never need it."""
        return self._session()[1].client

    # --- reading -------------------------------------------------------------------------
    def version(self, ref: str) -> Version:
        """``project/artifact[:vN|:alias]`` (``latest`` when no selector is given)."""
        parsed = parse_ref(ref)
        _, session = self._session()
        info: VersionInfo = self._call(
            session.client.get_version, parsed.project, parsed.artifact, parsed.selector
        )
        return Version(self, info)

    def versions(self, artifact: str) -> list[Version]:
        """Every live version of ``project/artifact``, oldest first (one request per version)."""
        aid = parse_artifact_id(artifact)
        _, session = self._session()
        info = self._call(session.client.get_artifact, aid.project, aid.artifact)
        return [self.version(f"{aid}:v{v.number}") for v in info.versions]

    def artifacts(self, project: str) -> list[str]:
        """``project/artifact`` names of a project."""
        _, session = self._session()
        return [f"{project}/{a.name}" for a in self._call(session.client.list_artifacts, project)]

    def tagged(self, project: str, tag: str) -> list[str]:
        """Refs (``project/artifact:vN``) of every live version of ``project`` with ``tag``,
        by artifact then number; one request per page of 200, whatever the artifact count."""
        _, session = self._session()

        async def refs() -> list[str]:
            return [v.ref async for v in all_tagged(session.client, project, tag)]

        result: list[str] = self._call(refs)
        return result

    def projects(self) -> list[str]:
        _, session = self._session()
        return [p.name for p in self._call(session.client.list_projects)]

    def lineage(self, ref: str, *, up: int | None = None, down: int | None = None) -> LineageGraph:
        """The lineage graph around a version: ``up`` hops of inputs, ``down`` of consumers
        (None: all, up to 10,000 nodes; ``.truncated`` says when it stopped), one request."""
        parsed = parse_ref(ref, default_latest=True)
        _, session = self._session()
        number = parsed.version
        if number is None:
            number = self.version(ref).number  # an alias: resolved first
        graph: LineageGraph = self._call(
            partial(session.client.lineage, up=up, down=down),
            parsed.project,
            parsed.artifact,
            number,
        )
        return graph

    def _manifest(self, project: str, artifact: str, number: int) -> Manifest:
        _, session = self._session()
        manifest: Manifest = self._call(session.client.get_manifest, project, artifact, number)
        return manifest

    def mountpoint(self) -> Path | None:
        """A running mount of this registry on this host (its mountpoint), if any."""
        for record in mountinfo.running_records():
            if normalize_registry(str(record.get("registry", ""))) == self.url:
                return Path(str(record["mountpoint"]))
        return None

    # --- writing -------------------------------------------------------------------------
    def put(
        self,
        path: str | os.PathLike[str] | None,
        artifact: str,
        *,
        type: str | None = None,
        aliases: Sequence[str] = (),
        metadata: dict[str, Any] | None = None,
        description: str = "",
        inputs: Sequence[str | Version] = (),
        refs: Mapping[str, str] | None = None,
        tags: Sequence[str] = (),
        ttl: float | str | None = None,
        allow_duplicate: bool = False,
        allow_empty: bool = False,
        symlinks: SymlinkPolicy = "keep",
    ) -> Version:
        """Publish a file or directory as a new version of ``project/artifact`` (created if
        needed, with ``type``, default "dataset"); what the registry holds already is not
        uploaded again. Contents identical to a live version return that version (unless
        ``allow_duplicate``). An empty directory is refused unless ``allow_empty``.
        ``tags``; ``ttl`` (seconds or ``"30d"``): ``artfs gc`` deletes the version then
        unless an alias holds it. ``refs``: path in the version -> URL (``s3://``,
        ``http(s)://``, ``file://``) of files whose bytes stay there, read once now
        (``path`` may then be None). Executable bits and empty directories are kept;
        ``symlinks``: "keep" (relative links inside the tree; others are refused), "follow"
        or "skip" (``artfs put --symlinks``)."""
        aid = parse_artifact_id(artifact)
        if path is None and not refs:
            raise InvalidInput("put needs a path to publish, or refs")
        _, session = self._session()
        result, _ = self._call(
            _put,
            session,
            None if path is None else Path(path),
            aid.project,
            aid.artifact,
            dict(
                type=type,
                aliases=tuple(aliases),
                metadata=metadata,
                description=description,
                creator=config.creator(),
                show_progress=False,
                inputs=input_refs(inputs),
                refs=tuple((refs or {}).items()),
                tags=tag_set(tags),
                ttl=parse_ttl(ttl),
                allow_duplicate=allow_duplicate,
                allow_empty=allow_empty,
                symlinks=symlinks,
            ),
            whole=True,
        )
        return Version(self, result.version)

    def draft(self, artifact: str, base: str | int | Version | None = None) -> Draft:
        """A new version of ``project/artifact`` built file by file, without a mount:
        empty, or starting from ``base`` (a version number, an alias or a ``Version``)."""
        from .draft import Draft

        aid = parse_artifact_id(artifact)
        base_version: Version | None
        if base is None:
            base_version = None
        elif isinstance(base, Version):
            base_version = base
        elif isinstance(base, int):
            base_version = self.version(f"{aid}:v{base}")
        else:
            number = parse_version(base)
            base_version = self.version(f"{aid}:{base}" if number is None else f"{aid}:v{number}")
        if base_version is not None and (base_version.project, base_version.artifact) != (
            aid.project,
            aid.artifact,
        ):
            raise InvalidInput(f"a draft of {aid} must start from a version of {aid}")
        return Draft(self, aid.project, aid.artifact, base_version)


async def _put(
    session: Session, root: Path | None, project: str, artifact: str, options: dict[str, Any]
) -> Any:
    return await put_tree(session.client, root, project, artifact, **options)


def input_refs(inputs: Sequence[str | Version]) -> tuple[str, ...]:
    """Lineage inputs as references the registry resolves (``Version`` objects by number)."""
    return tuple(i.ref if isinstance(i, Version) else str(parse_ref(i)) for i in inputs)
