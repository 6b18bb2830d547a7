"""``LocalRegistryClient``: a registry directory used in-process, with no server.

Same protocol and same records as ``HttpRegistryClient``; every blocking
``Registry`` call runs in a worker thread so the caller's trio loop never
stalls. ``read_range`` reads the blob file directly, in large chunks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from ..errors import InvalidInput, NotFound
from ..hashing import sha256_hex, split_block_digests
from ..lineage_graph import LineageGraph
from ..manifest import Manifest
from ..manifest_stream import canonical_chunks
from ..models import ArtifactInfo, CommitResult, ProjectInfo, VersionInfo, VersionInput
from ..registry import Registry
from ..runs import DECLARED, RunInfo, VersionRuns
from ..versionmeta import MERGE, MetaEdit
from .base import UNSET, DataSink, Expect
from .tags_search import LocalTagSearch

T = TypeVar("T")
READ_CHUNK = 4 << 20


class LocalRegistryClient(LocalTagSearch):
    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self._registry: Registry | None = None
        self._opening = trio.Lock()

    async def _reg(self) -> Registry:
        if self._registry is None:
            async with self._opening:
                if self._registry is None:
                    self._registry = await trio.to_thread.run_sync(Registry.open, self.data_dir)
        return self._registry

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs))

    async def registry_id(self) -> str:
        return (await self._reg()).registry_id()

    async def list_projects(self) -> list[ProjectInfo]:
        return await self._run((await self._reg()).list_projects)

    async def create_project(self, name: str, *, exist_ok: bool = False) -> ProjectInfo:
        return await self._run((await self._reg()).create_project, name, exist_ok=exist_ok)

    async def list_artifacts(self, project: str) -> list[ArtifactInfo]:
        return await self._run((await self._reg()).list_artifacts, project)

    async def get_artifact(self, project: str, artifact: str) -> ArtifactInfo:
        return await self._run((await self._reg()).get_artifact, project, artifact)

    async def create_artifact(
        self,
        project: str,
        artifact: str,
        *,
        type: str,
        description: str = "",
        exist_ok: bool = False,
    ) -> ArtifactInfo:
        return await self._run(
            (await self._reg()).create_artifact,
            project,
            artifact,
            type=type,
            description=description,
            exist_ok=exist_ok,
        )

    async def get_version(self, project: str, artifact: str, selector: str) -> VersionInfo:
        return await self._run((await self._reg()).get_version, project, artifact, selector)

    async def get_manifest(self, project: str, artifact: str, number: int) -> Manifest:
        return await self._run((await self._reg()).get_manifest, project, artifact, number)

    async def fetch_manifest(
        self, project: str, artifact: str, number: int, sink: DataSink
    ) -> None:
        for chunk in canonical_chunks(await self.get_manifest(project, artifact, number)):
            sink(chunk)

    async def missing_blobs(self, digests: Iterable[str]) -> set[str]:
        return await self._run((await self._reg()).missing_blobs, list(digests))

    async def upload_blob(self, sha256: str, path: Path) -> None:
        reg = await self._reg()
        await self._run(reg.put_file, sha256_hex(sha256), path)

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
        return await self._run(
            (await self._reg()).commit,
            project,
            artifact,
            manifest,
            metadata=metadata,
            description=description,
            aliases=list(aliases),
            parent=parent,
            creator=creator,
            inputs=list(inputs),
            observed_inputs=list(observed_inputs),
            tags=list(tags),
            ttl=ttl,
            allow_duplicate=allow_duplicate,
            create_type=create_type,
        )

    async def used_by(self, project: str, artifact: str, number: int) -> list[VersionInput]:
        return await self._run((await self._reg()).used_by, project, artifact, number)

    async def lineage(
        self, project: str, artifact: str, number: int, *, up: int | None, down: int | None
    ) -> LineageGraph:
        reg = await self._reg()
        return await self._run(partial(reg.lineage, up=up, down=down), project, artifact, number)

    async def set_alias(
        self, project: str, artifact: str, alias: str, number: int, *, expect: Expect = UNSET
    ) -> None:
        await self._run(
            (await self._reg()).set_alias, project, artifact, alias, number, expect=expect
        )

    async def delete_alias(
        self, project: str, artifact: str, alias: str, *, expect: Expect = UNSET
    ) -> None:
        await self._run((await self._reg()).delete_alias, project, artifact, alias, expect=expect)

    async def delete_version(
        self, project: str, artifact: str, number: int, *, force: bool = False
    ) -> None:
        await self._run((await self._reg()).delete_version, project, artifact, number, force=force)

    async def report_damage(self, sha256: str, detail: str = "") -> str:
        """In process there is no server to defer to: the blob is checked at once, in a thread
        the caller may stop waiting for (its deadline); the check then finishes alone."""
        check = partial((await self._reg()).check_blob, sha256_hex(sha256), detail=detail)
        await trio.to_thread.run_sync(check, abandon_on_cancel=True)
        return "started"

    async def blob_blocks(self, sha256: str, size: int) -> list[bytes]:
        raw = await self._run((await self._reg()).blob_blocks, sha256)
        return split_block_digests(raw, size)

    async def prepare_read(self, sha256: str) -> None:
        """Nothing to prepare: blobs are files in the registry directory."""

    def hint_blobs(self, digests: Sequence[str]) -> None:
        """Nothing to prepare: blobs are files in the registry directory."""

    async def read_range(
        self, sha256: str, size: int, offset: int, length: int, sink: DataSink
    ) -> None:
        sha256_hex(sha256)
        if offset < 0 or length < 0 or offset + length > size:
            raise InvalidInput(f"range {offset}+{length} outside blob {sha256} of {size} bytes")
        if length == 0:
            return
        reg = await self._reg()

        def open_blob() -> int:
            path = reg.blobs.local_path(sha256)
            if path is None:
                raise NotFound(f"blob {sha256} is not in a local store")
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

        fd = await trio.to_thread.run_sync(open_blob)
        try:
            pos, end = offset, offset + length
            while pos < end:
                data = await trio.to_thread.run_sync(os.pread, fd, min(READ_CHUNK, end - pos), pos)
                if not data:
                    raise NotFound(f"blob {sha256} is shorter than {size} bytes in the local store")
                pos += len(data)
                sink(data)
        finally:
            os.close(fd)

    # --- runs: the registry's own methods, in a worker thread --------------------------------
    async def create_run(self, project: str, **kwargs: Any) -> RunInfo:
        return await self._run((await self._reg()).create_run, project, **kwargs)

    async def get_run(self, run_id: str) -> RunInfo:
        return await self._run((await self._reg()).get_run, run_id)

    async def list_runs(self, project: str, *, limit: int = 100) -> list[RunInfo]:
        return await self._run((await self._reg()).list_runs, project, limit=limit)

    async def update_run(self, run_id: str, **kwargs: Any) -> RunInfo:
        return await self._run((await self._reg()).update_run, run_id, **kwargs)

    async def add_run_inputs(
        self, run_id: str, refs: Sequence[str], *, kind: str = DECLARED
    ) -> RunInfo:
        return await self._run((await self._reg()).add_run_inputs, run_id, list(refs), kind=kind)

    async def add_run_outputs(self, run_id: str, refs: Sequence[str]) -> RunInfo:
        return await self._run((await self._reg()).add_run_outputs, run_id, list(refs))

    async def version_runs(self, project: str, artifact: str, number: int) -> VersionRuns:
        return await self._run((await self._reg()).version_runs, project, artifact, number)

    # --- what changes after a commit (editing.RegistryEditor; in-process: admin) ---------------
    async def edit_version(
        self,
        project: str,
        artifact: str,
        number: int,
        *,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        mode: str = MERGE,
        editor: str = "",
    ) -> VersionInfo:
        reg = await self._reg()
        edit = partial(
            reg.edit_version, description=description, metadata=metadata, mode=mode, editor=editor
        )
        return await self._run(edit, project, artifact, number)

    async def edit_artifact(
        self,
        project: str,
        artifact: str,
        *,
        description: str | None = None,
        type: str | None = None,
        editor: str = "",
    ) -> ArtifactInfo:
        reg = await self._reg()
        edit = partial(reg.edit_artifact, description=description, type=type, editor=editor)
        return await self._run(edit, project, artifact)

    async def edit_history(self, project: str, artifact: str, number: int | None) -> list[MetaEdit]:
        return await self._run((await self._reg()).edit_history, project, artifact, number)

    async def change_tags(
        self,
        project: str,
        artifact: str,
        number: int,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> tuple[str, ...]:
        reg = await self._reg()
        change = partial(reg.change_tags, add=list(add), remove=list(remove))
        return await self._run(change, project, artifact, number)

    async def set_ttl(
        self, project: str, artifact: str, number: int, ttl: float | str | None
    ) -> float | None:
        return await self._run((await self._reg()).set_ttl, project, artifact, number, ttl)

    async def protect_alias(
        self, project: str, artifact: str, alias: str, *, protect: bool = True
    ) -> None:
        reg = await self._reg()
        await self._run(partial(reg.protect_alias, protect=protect), project, artifact, alias)

    async def delete_artifact(self, project: str, artifact: str, *, force: bool = False) -> int:
        reg = await self._reg()
        return await self._run(partial(reg.delete_artifact, force=force), project, artifact)

    async def aclose(self) -> None:
        if self._registry is not None:
            reg, self._registry = self._registry, None
            await trio.to_thread.run_sync(reg.close)

    async def __aenter__(self) -> LocalRegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
