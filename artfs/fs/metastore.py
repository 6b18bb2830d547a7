"""Registry facts kept on local disk, so a mount keeps working with the registry down.

Layout under ``<meta_root>/<registry_id>/``::

    projects.json                              last root listing
    p/<project>/artifacts.json                 last listing of the project
    p/<project>/a/<artifact>/artifact.json     last answer about the artifact
    p/<project>/a/<artifact>/v/<N>-<digest>.manifest         kept for good (canonical form)
    p/<project>/a/<artifact>/v/<N>-<digest>.manifest.json    (older mounts; still read)
    p/<project>/a/<artifact>/v/<N>-<digest>.info.json       kept for good

Versions are immutable, so their files never need refreshing; the digest in
the name guards against a ``vN`` that names other content after an artifact
was deleted and re-created. Listings are overwritten whenever the registry
says something new. Every write is temp file + rename, so a reader sees the
old or the new file, never half of one; anything unreadable counts as absent
(it is re-fetched), so a torn file after a power cut costs a request, not data.
Project and artifact names are validated (``[A-Za-z0-9._-]``, no leading dot)
before they reach here, so they are safe path components.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

from ..errors import ArtfsError, IntegrityError
from ..manifest import Manifest
from ..manifest_stream import CHUNK, records
from ..models import ArtifactInfo, ProjectInfo, VersionInfo
from .inodes import VersionKey
from .packed import PackedTree, pack, pack_canonical

log = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,63}")  # 3+: never a blob shard dir
T = TypeVar("T")


def registry_dir_name(registry_id: str) -> str:
    """A path component for a registry id (hashed when the id is not a plain name)."""
    if _SAFE_ID.fullmatch(registry_id):
        return registry_id
    return "h-" + hashlib.sha256(registry_id.encode()).hexdigest()[:32]


def _source_file(meta_root: Path, source: str) -> Path:
    return meta_root / "sources" / (hashlib.sha256(source.encode()).hexdigest()[:32] + ".json")


def remember_registry_id(meta_root: Path, source: str, registry_id: str) -> None:
    """Record which registry ``source`` (a URL or directory) leads to, for offline starts."""
    if source:
        _write_atomic(_source_file(meta_root, source), json.dumps({"id": registry_id}).encode())


def recall_registry_id(meta_root: Path, source: str) -> str | None:
    if not source:
        return None
    data = _read_json(_source_file(meta_root, source))
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return str(data["id"])
    return None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable metadata file %s: %s", path, e)
        return None


class MetaStore:
    """Reads and writes the files above for one registry. Safe to call from worker threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._written: dict[Path, bytes] = {}  # digest of the last bytes written per listing

    # --- helpers ---------------------------------------------------------------
    def _artifact_dir(self, project: str, artifact: str) -> Path:
        return self.root / "p" / project / "a" / artifact

    def _version_file(self, key: VersionKey, digest: str, suffix: str) -> Path:
        art = self._artifact_dir(key.project, key.artifact)
        return art / "v" / f"{key.number}-{digest}.{suffix}.json"

    def _save_listing(self, path: Path, data: Any) -> None:
        """Write a listing unless it is what we last wrote (refreshes are frequent)."""
        raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        fingerprint = hashlib.sha256(raw).digest()
        if self._written.get(path) == fingerprint:
            return
        try:
            _write_atomic(path, raw)
        except OSError as e:  # a full or read-only cache disk must not fail a listing
            log.warning("could not persist %s: %s", path, e)
            return
        self._written[path] = fingerprint

    @staticmethod
    def _parse(path: Path, parse: Callable[[Any], T]) -> T | None:
        data = _read_json(path)
        if data is None:
            return None
        try:
            return parse(data)
        except (ArtfsError, TypeError, KeyError, ValueError) as e:
            log.warning("ignoring malformed metadata file %s: %s", path, e)
            return None

    # --- listings ----------------------------------------------------------------
    def save_projects(self, projects: list[ProjectInfo]) -> None:
        self._save_listing(self.root / "projects.json", [p.to_json() for p in projects])

    def load_projects(self) -> list[ProjectInfo] | None:
        return self._parse(
            self.root / "projects.json", lambda d: [ProjectInfo.from_json(p) for p in d]
        )

    def save_artifacts(self, project: str, artifacts: list[ArtifactInfo]) -> None:
        """Persist a project listing, and each artifact's own record (kept the newest)."""
        path = self.root / "p" / project / "artifacts.json"
        self._save_listing(path, [a.to_json() for a in artifacts])
        for info in artifacts:
            self.save_artifact(info)

    def load_artifacts(self, project: str) -> list[ArtifactInfo] | None:
        path = self.root / "p" / project / "artifacts.json"
        return self._parse(path, lambda d: [ArtifactInfo.from_json(a) for a in d])

    def save_artifact(self, info: ArtifactInfo) -> None:
        path = self._artifact_dir(info.project, info.name) / "artifact.json"
        self._save_listing(path, info.to_json())

    def load_artifact(self, project: str, artifact: str) -> ArtifactInfo | None:
        path = self._artifact_dir(project, artifact) / "artifact.json"
        return self._parse(path, ArtifactInfo.from_json)

    # --- versions (immutable, kept for good) ----------------------------------------------
    def load_manifest(self, key: VersionKey, digest: str) -> Manifest | None:
        """A manifest an older mount kept as JSON (mounts now keep the canonical form)."""
        path = self._version_file(key, digest, "manifest")
        manifest = self._parse(path, partial(Manifest.from_json, limits=False))
        if manifest is not None and manifest.digest != digest:
            log.warning("cached manifest %s does not match its digest; refetching", path)
            return None
        return manifest

    def _canonical_file(self, key: VersionKey, digest: str) -> Path:
        art = self._artifact_dir(key.project, key.artifact)
        return art / "v" / f"{key.number}-{digest}.manifest"

    def manifest_writer(self, key: VersionKey, digest: str) -> ManifestWriter:
        """Where a fetched manifest (canonical form) streams to, on its way to a tree."""
        return ManifestWriter(self._canonical_file(key, digest), digest, key.ref)

    def load_tree(self, key: VersionKey, digest: str) -> PackedTree | None:
        """The packed tree of a version from its manifest on disk, or None if there is none
        (or it is damaged: it is removed and fetched again)."""
        path = self._canonical_file(key, digest)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, whatever happens
        except FileNotFoundError:
            manifest = self.load_manifest(key, digest)  # a file an older mount wrote
            return None if manifest is None else pack(records(manifest))
        except OSError as e:
            log.warning("ignoring unreadable manifest %s: %s", path, e)
            return None
        try:
            with f:
                return pack_canonical(_chunks(f), digest, key.ref)
        except (ArtfsError, OSError) as e:
            log.warning("ignoring damaged manifest %s: %s", path, e)
            path.unlink(missing_ok=True)
            return None

    def save_version_info(self, info: VersionInfo) -> None:
        key = VersionKey(info.project, info.artifact, info.number)
        path = self._version_file(key, info.digest, "info")
        try:
            _write_atomic(path, json.dumps(info.to_json(), sort_keys=True).encode())
        except OSError as e:
            log.warning("could not persist the record of %s: %s", info.ref, e)

    def load_version_info(self, key: VersionKey, digest: str) -> VersionInfo | None:
        path = self._version_file(key, digest, "info")
        info = self._parse(path, VersionInfo.from_json)
        if info is not None and info.digest != digest:
            return None
        return info


def _chunks(f: IO[bytes]) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk


class ManifestWriter:
    """A fetched manifest (canonical form) on its way to disk: a temp file, hashed as
    written; ``finish`` renames it into place only if the bytes hash to the version's
    digest, and builds the tree from the file. A disk that refuses (full, read-only) is
    logged and the rest is held in memory for this one build: it costs memory, never the
    open that asked."""

    def __init__(self, path: Path, digest: str, what: str) -> None:
        self.path = path
        self._digest = digest
        self._what = what
        self._hash = hashlib.sha256()
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        self._file: IO[bytes] | None = None
        self._held: list[bytes] | None = None  # the bytes, once the disk refused them
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._tmp, "wb", buffering=0)  # noqa: SIM115 - see close
        except OSError as e:
            self._to_memory(e)

    def _to_memory(self, error: OSError) -> None:
        log.warning("could not keep the manifest of %s on disk: %s", self._what, error)
        held: list[bytes] = []
        if self._file is not None:
            self._file.close()
            self._file = None
            with contextlib.suppress(OSError), open(self._tmp, "rb") as f:
                held.extend(_chunks(f))  # what reached the file so far
        with contextlib.suppress(OSError):
            self._tmp.unlink(missing_ok=True)
        self._held = held

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        rest = memoryview(chunk)
        if self._file is not None:
            try:
                while rest:  # unbuffered: a full disk fails here, not later at close
                    rest = rest[self._file.write(rest) :]
                return
            except OSError as e:
                self._to_memory(e)  # reads back what reached the file, partial write included
        assert self._held is not None
        self._held.append(bytes(rest))

    def finish(self) -> PackedTree:
        """The version's tree; ``IntegrityError`` (and nothing kept) if the digest differs."""
        if self._hash.hexdigest() != self._digest:
            self.close()
            raise IntegrityError(
                f"the manifest of {self._what} does not match its digest {self._digest[:12]}…"
            )
        if self._file is not None:
            try:
                self._file.close()
                self._file = None
                os.replace(self._tmp, self.path)
            except OSError as e:
                self._to_memory(e)
            else:
                with open(self.path, "rb") as f:
                    return pack_canonical(_chunks(f), self._digest, self._what)
        held, self._held = self._held or [], None
        return pack_canonical(held, self._digest, self._what)

    def close(self) -> None:
        """Drop what was written unless finished (safe to call after ``finish``)."""
        self._held = None
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(OSError):  # (no directory to hold it: nothing to remove)
            self._tmp.unlink(missing_ok=True)
