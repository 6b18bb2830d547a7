"""An in-memory twin of the registry and a fault injector, for tests of the cache and the mount.

``MemoryRegistryClient`` keeps everything in dicts and counts the blob bytes it
serves; ``FaultyClient`` wraps any client and fails, stalls or corrupts on demand.
Neither is used in production; both implement ``RegistryClient`` exactly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import trio

from ..errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    NotFound,
    NotPermitted,
    PreconditionFailed,
    Unavailable,
)
from ..hashing import BlobHasher
from ..lineage import MAX_INPUTS, parse_inputs, unique_in_order
from ..lineage_graph import LineageGraph, LineageNode, version_node, walk
from ..manifest import Manifest
from ..manifest_stream import canonical_chunks
from ..models import (
    DECLARED,
    OBSERVED,
    ArtifactInfo,
    CommitResult,
    ProjectInfo,
    VersionInfo,
    VersionInput,
    VersionSummary,
)
from ..names import LATEST, Ref, alias_name, artifact_name, parse_version, project_name
from ..versionmeta import parse_ttl, tag_set
from .base import UNSET, DataSink, Expect, RegistryClient
from .memory_edits import MemoryEdits
from .memory_runs import MemoryRuns
from .tags_search import MemoryTagSearch


class MemoryRegistryClient(MemoryRuns, MemoryEdits, MemoryTagSearch):
    def __init__(self) -> None:
        self.projects: dict[str, ProjectInfo] = {}
        self.artifacts: dict[tuple[str, str], ArtifactInfo] = {}
        self.versions: dict[tuple[str, str, int], tuple[VersionInfo, Manifest]] = {}
        self.blobs: dict[str, bytes] = {}
        self.digests: dict[str, bytes] = {}  # block digests published when each blob was added
        self.damaged: set[str] = set()  # blobs found damaged (dropped: "quarantined") or lost
        self.reports: list[str] = []  # damage reports received, in order
        self.next_numbers: dict[tuple[str, str], int] = {}  # numbers are never reused
        self.bytes_served = 0
        self.requests = 0

    # --- helpers for tests -------------------------------------------------
    def add_blob(self, data: bytes) -> str:
        h = BlobHasher()
        h.update(data)
        sha = h.hexdigest()
        self.blobs[sha] = data
        self.digests[sha] = h.block_digests()
        self.damaged.discard(sha)  # healed by the right bytes
        return sha

    def corrupt_blob(self, sha256: str, data: bytes) -> None:
        """Damage a stored blob in place (its published block digests stay): a rotten disk."""
        self.blobs[sha256] = data

    def _damaged_count(self, manifest: Manifest) -> int:
        return len(self.damaged & set(manifest.blobs()))

    def publish(
        self, project: str, artifact: str, files: dict[str, bytes], **kw: Any
    ) -> VersionInfo:
        """Synchronously add a version made of these files (creating what is missing)."""
        if project not in self.projects:
            self.projects[project] = ProjectInfo(project, time.time())
        if (project, artifact) not in self.artifacts:
            self.artifacts[(project, artifact)] = ArtifactInfo(
                project, artifact, "dataset", "", time.time()
            )
            self.next_numbers[(project, artifact)] = 0
        manifest = Manifest.build((p, len(d), self.add_blob(d)) for p, d in files.items())
        return self._commit(project, artifact, manifest, **kw).version

    def _art(self, project: str, artifact: str) -> ArtifactInfo:
        try:
            return self.artifacts[(project, artifact)]
        except KeyError:
            raise NotFound(f"artifact {project}/{artifact} not found") from None

    def _commit(
        self,
        project: str,
        artifact: str,
        manifest: Manifest,
        *,
        metadata: dict[str, Any] | None = None,
        description: str = "",
        aliases: Iterable[str] = (),
        parent: int | None = None,
        creator: str = "test",
        inputs: Iterable[str] = (),
        observed_inputs: Iterable[str] = (),
        tags: Iterable[str] = (),
        ttl: float | str | None = None,
        allow_duplicate: bool = False,
        create_type: str | None = None,
    ) -> CommitResult:
        new_artifact = create_type is not None and (project, artifact) not in self.artifacts
        if not new_artifact:
            self._art(project, artifact)
        tag_tuple = tag_set(tags)
        seconds = parse_ttl(ttl)
        for sha in manifest.stored_blobs():
            if sha not in self.blobs:
                raise InvalidInput(f"blob {sha} is not in the registry")
        resolved = unique_in_order([self._resolve(ref) for ref in parse_inputs(list(inputs))])
        resolved += self._observed(parse_inputs(list(observed_inputs)), resolved)
        if new_artifact:  # with its first version, as the registry does (one transaction)
            assert create_type is not None
            self.projects.setdefault(project, ProjectInfo(project, time.time()))
            self.artifacts[(project, artifact)] = ArtifactInfo(
                project, artifact, create_type, "", time.time()
            )
        art = self._art(project, artifact)
        same = [v.number for v in art.versions if v.digest == manifest.digest]
        if same and not allow_duplicate:  # identical to a live version: that one, as is
            return CommitResult(
                self._with_aliases(self.versions[(project, artifact, same[-1])][0]), False
            )
        number = self.next_numbers.get((project, artifact), 0)
        self.next_numbers[(project, artifact)] = number + 1
        info = VersionInfo(
            project,
            artifact,
            number,
            manifest.digest,
            time.time(),
            creator,
            description,
            dict(metadata or {}),
            parent,
            len(manifest),
            manifest.total_size,
            (),
            art.type,
            tuple(resolved),
            tags=tag_tuple,
            expires=None if seconds is None else time.time() + seconds,
        )
        self.versions[(project, artifact, number)] = (info, manifest)
        new_aliases = dict(art.aliases)
        new_aliases[LATEST] = number
        for a in aliases:
            new_aliases[alias_name(a)] = number
        summary = VersionSummary(
            number,
            manifest.digest,
            info.created,
            len(manifest),
            manifest.total_size,
            tags=tag_tuple,
            expires=info.expires,
        )
        self.artifacts[(project, artifact)] = ArtifactInfo(
            art.project,
            art.name,
            art.type,
            art.description,
            art.created,
            (*art.versions, summary),
            new_aliases,
        )
        return CommitResult(self._with_aliases(info), True)

    def _resolve(self, ref: Ref) -> VersionInput:
        art = self._art(ref.project, ref.artifact)
        number = ref.version if ref.version is not None else art.aliases.get(ref.selector)
        found = None if number is None else self.versions.get((ref.project, ref.artifact, number))
        if found is None:
            raise NotFound(f"lineage input {ref} not found")
        return VersionInput(
            ref.project, ref.artifact, found[0].number, found[0].digest, kind=DECLARED
        )

    def _observed(self, refs: list[Ref], declared: list[VersionInput]) -> list[VersionInput]:
        """As the store does (``registry/observeddb.py``): gone or declared ones skipped."""
        seen = {(i.project, i.artifact, i.number) for i in declared}
        out = []
        for ref in refs:
            try:
                found = self._resolve(ref)
            except NotFound:
                continue
            if (found.project, found.artifact, found.number) not in seen:
                seen.add((found.project, found.artifact, found.number))
                out.append(dataclasses.replace(found, kind=OBSERVED))
        return out[: MAX_INPUTS - len(declared)]

    async def used_by(self, project: str, artifact: str, number: int) -> list[VersionInput]:
        self.requests += 1
        if (project, artifact, number) not in self.versions:
            raise NotFound(f"version {project}/{artifact}:v{number} not found")
        return [
            VersionInput(info.project, info.artifact, info.number, info.digest)
            for key, (info, _) in sorted(self.versions.items())
            if any(
                (i.project, i.artifact, i.number) == (project, artifact, number)
                for i in info.inputs
            )
        ]

    async def lineage(
        self, project: str, artifact: str, number: int, *, up: int | None, down: int | None
    ) -> LineageGraph:
        """The same walk as the SQL store's, runs included, over the dicts (a deleted version
        is dropped here with its inputs, so the twin's lineage ends at it where the store's
        goes on)."""
        self.requests += 1
        Key = tuple[str, str, int]
        if (project, artifact, number) not in self.versions:
            raise NotFound(f"version {project}/{artifact}:v{number} not found")

        def inputs_of(keys: Sequence[Key]) -> dict[Key, list[tuple[Key, LineageNode]]]:
            return {
                k: [
                    (
                        (i.project, i.artifact, i.number),
                        version_node(
                            i.project,
                            i.artifact,
                            i.number,
                            i.digest,
                            (i.project, i.artifact, i.number) not in self.versions,
                        ),
                    )
                    for i in self.versions[k][0].inputs
                ]
                for k in keys
                if k in self.versions
            }

        def consumers_of(keys: Sequence[Key]) -> dict[Key, list[tuple[Key, LineageNode]]]:
            wanted = set(keys)
            out: dict[Key, list[tuple[Key, LineageNode]]] = {}
            for key, (info, _) in sorted(self.versions.items()):
                for i in info.inputs:
                    if (i.project, i.artifact, i.number) in wanted:
                        node = version_node(*key, info.digest)
                        out.setdefault((i.project, i.artifact, i.number), []).append((key, node))
            return out

        digest = self.versions[(project, artifact, number)][0].digest
        return walk(
            (project, artifact, number),
            version_node(project, artifact, number, digest),
            up=up,
            down=down,
            inputs_of=lambda keys: self._with_runs(keys, inputs_of(keys), up=True),
            consumers_of=lambda keys: self._with_runs(keys, consumers_of(keys), up=False),
        )

    def _with_aliases(self, info: VersionInfo) -> VersionInfo:
        art = self._art(info.project, info.artifact)
        names = tuple(sorted(a for a, n in art.aliases.items() if n == info.number))
        return VersionInfo(**{**{f: getattr(info, f) for f in info.__slots__}, "aliases": names})

    # --- RegistryClient ----------------------------------------------------
    async def registry_id(self) -> str:
        return "memory"

    async def list_projects(self) -> list[ProjectInfo]:
        self.requests += 1
        return sorted(self.projects.values(), key=lambda p: p.name)

    async def create_project(self, name: str, *, exist_ok: bool = False) -> ProjectInfo:
        self.requests += 1
        project_name(name)
        if name in self.projects:
            if exist_ok:
                return self.projects[name]
            raise AlreadyExists(f"project {name} already exists")
        self.projects[name] = ProjectInfo(name, time.time())
        return self.projects[name]

    async def list_artifacts(self, project: str) -> list[ArtifactInfo]:
        self.requests += 1
        if project not in self.projects:
            raise NotFound(f"project {project} not found")
        return [self._marked(a) for (p, _), a in sorted(self.artifacts.items()) if p == project]

    async def get_artifact(self, project: str, artifact: str) -> ArtifactInfo:
        self.requests += 1
        return self._marked(self._art(project, artifact))

    def _marked(self, art: ArtifactInfo) -> ArtifactInfo:
        """The artifact with each version's count of damaged blobs, as a server lists it."""
        if not self.damaged:
            return art
        versions = tuple(
            dataclasses.replace(
                v,
                damaged=self._damaged_count(self.versions[(art.project, art.name, v.number)][1]),
            )
            for v in art.versions
        )
        return dataclasses.replace(art, versions=versions)

    async def create_artifact(
        self,
        project: str,
        artifact: str,
        *,
        type: str,
        description: str = "",
        exist_ok: bool = False,
    ) -> ArtifactInfo:
        self.requests += 1
        artifact_name(artifact)
        if project not in self.projects:
            raise NotFound(f"project {project} not found")
        if (project, artifact) in self.artifacts:
            if exist_ok:
                return self.artifacts[(project, artifact)]
            raise AlreadyExists(f"artifact {project}/{artifact} already exists")
        info = ArtifactInfo(project, artifact, type, description, time.time())
        self.artifacts[(project, artifact)] = info
        self.next_numbers[(project, artifact)] = 0
        return info

    async def get_version(self, project: str, artifact: str, selector: str) -> VersionInfo:
        self.requests += 1
        art = self._art(project, artifact)
        number = parse_version(selector)
        if number is None:
            if selector not in art.aliases:
                raise NotFound(f"alias {project}/{artifact}:{selector} not found")
            number = art.aliases[selector]
        try:
            info, manifest = self.versions[(project, artifact, number)]
        except KeyError:
            raise NotFound(f"version {project}/{artifact}:v{number} not found") from None
        return dataclasses.replace(self._with_aliases(info), damaged=self._damaged_count(manifest))

    async def get_manifest(self, project: str, artifact: str, number: int) -> Manifest:
        self.requests += 1
        try:
            return self.versions[(project, artifact, number)][1]
        except KeyError:
            raise NotFound(f"version {project}/{artifact}:v{number} not found") from None

    async def fetch_manifest(
        self, project: str, artifact: str, number: int, sink: DataSink
    ) -> None:
        for chunk in canonical_chunks(await self.get_manifest(project, artifact, number)):
            sink(chunk)

    async def missing_blobs(self, digests: Iterable[str]) -> set[str]:
        self.requests += 1
        return {d for d in digests if d not in self.blobs}

    async def upload_blob(self, sha256: str, path: Path) -> None:
        self.requests += 1
        data = path.read_bytes()
        if self.add_blob(data) != sha256:
            raise InvalidInput(f"uploaded bytes do not match sha256 {sha256}")

    async def commit(
        self,
        project: str,
        artifact: str,
        manifest: Manifest,
        *,
        metadata: dict[str, Any] | None = None,
        description: str = "",
        aliases: Iterable[str] = (),
        parent: int | None = None,
        creator: str = "",
        inputs: Iterable[str] = (),
        observed_inputs: Iterable[str] = (),
        tags: Iterable[str] = (),
        ttl: float | str | None = None,
        allow_duplicate: bool = False,
        create_type: str | None = None,
    ) -> CommitResult:
        self.requests += 1
        return self._commit(
            project,
            artifact,
            manifest,
            metadata=metadata,
            description=description,
            aliases=aliases,
            parent=parent,
            creator=creator,
            inputs=inputs,
            observed_inputs=observed_inputs,
            tags=tags,
            ttl=ttl,
            allow_duplicate=allow_duplicate,
            create_type=create_type,
        )

    async def set_alias(
        self, project: str, artifact: str, alias: str, number: int, *, expect: Expect = UNSET
    ) -> None:
        self.requests += 1
        if alias == LATEST:
            raise NotPermitted("'latest' is maintained by the registry")
        alias_name(alias)
        art = self._art(project, artifact)
        if (project, artifact, number) not in self.versions:
            raise NotFound(f"version {project}/{artifact}:v{number} not found")
        if expect is not UNSET and art.aliases.get(alias) != expect:
            raise PreconditionFailed(f"alias {alias} does not point at {expect}")
        art.aliases[alias] = number

    async def delete_alias(
        self, project: str, artifact: str, alias: str, *, expect: Expect = UNSET
    ) -> None:
        self.requests += 1
        if alias == LATEST:
            raise NotPermitted("'latest' is maintained by the registry")
        alias_name(alias)
        art = self._art(project, artifact)
        if alias not in art.aliases:
            raise NotFound(f"alias {alias} not found")
        if expect is not UNSET and art.aliases.get(alias) != expect:
            raise PreconditionFailed(f"alias {alias} does not point at {expect}")
        del art.aliases[alias]

    async def delete_version(
        self, project: str, artifact: str, number: int, *, force: bool = False
    ) -> None:
        self.requests += 1
        art = self._art(project, artifact)
        if (project, artifact, number) not in self.versions:
            raise NotFound(f"version {project}/{artifact}:v{number} not found")
        held = sorted(a for a, n in art.aliases.items() if n == number and a != LATEST)
        if held and not force:
            raise Conflict(
                f"version {project}/{artifact}:v{number} holds aliases {', '.join(held)}: "
                "move them first or use --force"
            )
        del self.versions[(project, artifact, number)]
        versions = tuple(v for v in art.versions if v.number != number)
        aliases = {a: n for a, n in art.aliases.items() if n != number}
        if LATEST not in aliases and versions:
            aliases[LATEST] = versions[-1].number
        self.artifacts[(project, artifact)] = ArtifactInfo(
            art.project, art.name, art.type, art.description, art.created, versions, aliases
        )

    async def blob_blocks(self, sha256: str, size: int) -> list[bytes]:
        from ..hashing import split_block_digests

        self.requests += 1
        self._blob(sha256)
        return split_block_digests(self.digests[sha256], size)

    async def report_damage(self, sha256: str, detail: str = "") -> str:
        """Re-check at once, like a server: a blob whose bytes don't hash to its name is
        dropped (quarantined) and listed damaged until uploaded again."""
        self.requests += 1
        self.reports.append(sha256)
        data = self.blobs.get(sha256)
        h = BlobHasher()
        h.update(data or b"")
        if data is None or h.hexdigest() != sha256:
            self.blobs.pop(sha256, None)
            self.damaged.add(sha256)
        return "started"

    def _blob(self, sha256: str) -> bytes:
        try:
            return self.blobs[sha256]
        except KeyError:
            raise NotFound(f"blob {sha256} not found") from None

    async def prepare_read(self, sha256: str) -> None:
        """Nothing to prepare: every blob is at hand."""

    def hint_blobs(self, digests: Sequence[str]) -> None:
        """Nothing to prepare: every blob is at hand."""

    async def read_range(
        self, sha256: str, size: int, offset: int, length: int, sink: DataSink
    ) -> None:
        self.requests += 1
        data = self._blob(sha256)[offset : offset + length]
        for i in range(0, len(data), 256 * 1024):
            await trio.sleep(0)
            piece = data[i : i + 256 * 1024]
            self.bytes_served += len(piece)
            sink(piece)

    async def aclose(self) -> None:
        pass


class FaultyClient:
    """Wraps a client; tests flip ``down``, ``stall`` or ``corrupt`` to inject faults."""

    def __init__(self, inner: RegistryClient) -> None:
        self.inner = inner
        self.down = False
        self.stall = False  # calls hang until cancelled (to test deadlines)
        self.corrupt = False  # read_range flips a byte of every chunk

    async def _gate(self) -> None:
        if self.stall:
            await trio.sleep_forever()
        if self.down:
            raise Unavailable("registry unreachable (injected fault)")

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            await self._gate()
            return await attr(*args, **kwargs)

        return call

    async def prepare_read(self, sha256: str) -> None:
        await self.inner.prepare_read(sha256)  # (a no-op there: no fault to inject)

    def hint_blobs(self, digests: Sequence[str]) -> None:
        self.inner.hint_blobs(digests)  # a hint makes no request: no fault to inject

    async def fetch_range(self, *args: Any, **kwargs: Any) -> bool:
        """Never by fetch threads (whose bytes would bypass the injected faults): the cache
        falls back to ``read_range``."""
        await self._gate()
        return False

    async def read_range(
        self, sha256: str, size: int, offset: int, length: int, sink: DataSink
    ) -> None:
        await self._gate()

        def bad_sink(data: bytes) -> None:
            if data:
                b = bytearray(data)
                b[0] ^= 0xFF
                data = bytes(b)
            sink(data)

        await self.inner.read_range(
            sha256, size, offset, length, bad_sink if self.corrupt else sink
        )
