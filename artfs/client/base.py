"""The registry as the mount, the cache and the CLI see it.

Two implementations share this protocol: ``HttpRegistryClient`` (a server URL)
and ``LocalRegistryClient`` (a registry directory used in-process). Blob bytes
are reached through ``read_range``: the HTTP client asks the server where a blob
lives (a URL it hands out: its own sendfile data port today, a presigned S3 URL
later) and fetches byte ranges from there, so the mount never cares which.

Every method raises only ``artfs.errors`` exceptions; every remote call has a
deadline and raises ``Unavailable`` when it passes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..lineage_graph import LineageGraph
from ..manifest import Manifest
from ..models import ArtifactInfo, CommitResult, ProjectInfo, VersionInfo, VersionInput
from ..runs import DECLARED, DEFAULT_LEASE, RunInfo, VersionRuns


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET
"""``expect=UNSET``: move unconditionally. ``expect=None``: the alias must not exist yet.
``expect=N``: the alias must currently point at version N."""

Expect = int | None | _Unset

DataSink = Callable[[bytes], None]
"""Receives the bytes of a range in order, in chunks of any size."""


class RegistryClient(Protocol):
    async def registry_id(self) -> str:
        """A stable id of this registry (cache metadata is kept per registry)."""
        ...

    async def list_projects(self) -> list[ProjectInfo]: ...

    async def create_project(self, name: str, *, exist_ok: bool = False) -> ProjectInfo: ...

    async def list_artifacts(self, project: str) -> list[ArtifactInfo]:
        """Artifacts of a project, each with its versions and aliases."""
        ...

    async def get_artifact(self, project: str, artifact: str) -> ArtifactInfo: ...

    async def create_artifact(
        self,
        project: str,
        artifact: str,
        *,
        type: str,
        description: str = "",
        exist_ok: bool = False,
    ) -> ArtifactInfo: ...

    async def get_version(self, project: str, artifact: str, selector: str) -> VersionInfo:
        """``selector`` is ``vN`` or an alias name (``latest`` included)."""
        ...

    async def get_manifest(self, project: str, artifact: str, number: int) -> Manifest: ...

    async def fetch_manifest(
        self, project: str, artifact: str, number: int, sink: DataSink
    ) -> None:
        """Stream a version's manifest in canonical form (``manifest_stream.py``) to ``sink``,
        chunk by chunk: the mount's way to a million-file manifest without holding it.
        The caller checks the digest of what arrived."""
        ...

    async def missing_blobs(self, digests: Iterable[str]) -> set[str]:
        """Which of these sha256 the registry does not hold (one request for the lot)."""
        ...

    async def upload_blob(self, sha256: str, path: Path) -> None:
        """Upload a file's bytes; the registry verifies them against ``sha256``."""
        ...

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
        """Register a version atomically; every blob must already be in the registry.

        ``inputs``: references of the versions it was made from (lineage), resolved by the
        registry to concrete versions when it commits. ``observed_inputs``: those a mount
        saw the writers read, recorded as observed; ones gone or unreadable are skipped.
        ``tags``; ``ttl``: gc deletes it that long after (unless an alias holds it). Content
        identical to a live version makes no new version (the result is that version,
        ``created`` False) unless ``allow_duplicate``. ``create_type``: create the artifact
        (and its project) with this type in the same transaction if it does not exist, so an
        artifact never exists without a version."""
        ...

    async def used_by(self, project: str, artifact: str, number: int) -> list[VersionInput]:
        """Live versions that list this version among their lineage inputs."""
        ...

    async def lineage(
        self, project: str, artifact: str, number: int, *, up: int | None, down: int | None
    ) -> LineageGraph:
        """The lineage graph around a live version, ``up`` hops of inputs and ``down`` of
        consumers (None: all), in one request: what this client's token may read of it."""
        ...

    async def set_alias(
        self, project: str, artifact: str, alias: str, number: int, *, expect: Expect = UNSET
    ) -> None: ...

    async def delete_alias(
        self, project: str, artifact: str, alias: str, *, expect: Expect = UNSET
    ) -> None: ...

    async def delete_version(
        self, project: str, artifact: str, number: int, *, force: bool = False
    ) -> None:
        """Delete ``vN`` (its number is never reused); refused (``Conflict``) while aliases other
        than ``latest`` point at it, unless ``force``. ``latest`` moves to the newest remaining."""
        ...

    async def blob_blocks(self, sha256: str, size: int) -> list[bytes]:
        """The 32-byte block digests of a blob (see ``artfs.hashing``)."""
        ...

    async def report_damage(self, sha256: str, detail: str = "") -> str:
        """Tell the registry that bytes it served for this blob did not match its digests.

        The registry re-checks the stored blob (at once, if its rate limits allow) and
        quarantines it if damaged, so the next upload of the right bytes heals it. Returns
        what the registry did ("started", "running", "recent", "limited"); never needed for
        correctness: callers bound it with a short deadline and ignore failures."""
        ...

    async def prepare_read(self, sha256: str) -> None:
        """A read of this blob starts now: ask for what it needs from the registry (its
        presigned URL) at once, beside the caller's own work, so the read finds it ready.
        Never fails (the read asks again and reports); a no-op where locating is free."""
        ...

    def hint_blobs(self, digests: Sequence[str]) -> None:
        """These blobs are likely to be read soon (the files of a directory being listed).

        Never blocks and never fails: a client that must ask where blobs live (presigned
        URLs) adds them to the next locate request it makes anyway, so a directory of small
        files costs one request per batch instead of one per file. A no-op where locating
        costs nothing (a URL template, a local registry).
        """
        ...

    async def read_range(
        self, sha256: str, size: int, offset: int, length: int, sink: DataSink
    ) -> None:
        """Deliver ``length`` bytes of the blob from ``offset`` to ``sink``, in order.

        Bytes are not verified here (the cache verifies blocks). Raises ``Unavailable``
        if the data source stalls longer than the client's timeout.
        """
        ...

    # --- runs (artfs/runs.py; docs/api.md, "Runs") -----------------------------------------
    async def create_run(
        self,
        project: str,
        *,
        name: str,
        job_type: str = "",
        host: str = "",
        user: str = "",
        config: dict[str, Any] | None = None,
        lease: float = DEFAULT_LEASE,
    ) -> RunInfo:
        """A new run of ``project``, running, with a fresh id."""
        ...

    async def get_run(self, run_id: str) -> RunInfo:
        """One run with its inputs and outputs (those in unreadable projects hidden)."""
        ...

    async def list_runs(self, project: str, *, limit: int = 100) -> list[RunInfo]:
        """A project's runs, newest first, without their inputs and outputs (counts only)."""
        ...

    async def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        exit_code: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> RunInfo:
        """A heartbeat; with ``config``, keys merged into the config; with ``status``, the end."""
        ...

    async def add_run_inputs(
        self, run_id: str, refs: Sequence[str], *, kind: str = DECLARED
    ) -> RunInfo:
        """Versions the run used (``declared`` or ``observed``), resolved now."""
        ...

    async def add_run_outputs(self, run_id: str, refs: Sequence[str]) -> RunInfo:
        """Versions the run logged."""
        ...

    async def version_runs(self, project: str, artifact: str, number: int) -> VersionRuns:
        """The runs that logged and that used a live version (those this token may read)."""
        ...

    async def aclose(self) -> None: ...
