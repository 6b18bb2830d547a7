"""What the registry core needs from metadata storage.

``MetaStore`` is the seam between the pure registry logic (``core.py``) and a
database. Every method is one atomic transaction; the store owns locking and
numbering, so two server processes on one database can't hand out the same
version number. ``sqlite.py`` is the embedded implementation; ``postgres.py``
implements the same methods (``SELECT ... FOR UPDATE`` on the artifact row where
SQLite uses ``BEGIN IMMEDIATE``). Both share their queries (``sqlbase.py``).

Names reaching a store are already validated; values coming back are the
records of ``artfs.models``.

Garbage collection (schema 3, ``gc.py``): blobs no live version references are first
*doomed* (a row in ``doomed_blobs``, written in a transaction that excludes commits),
then deleted from the blob store, then un-doomed. A commit whose manifest references a
doomed blob is refused inside its transaction; every removal of doomed rows bumps the *gc
epoch*, which tells servers that blob sizes they cached may be stale.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Container, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..auth import TokenInfo
from ..client.base import Expect
from ..lineage_graph import LineageGraph
from ..models import ArtifactInfo, ProjectInfo, VersionInfo, VersionInput
from ..names import Ref
from ..runs import RunInfo, VersionRuns

if TYPE_CHECKING:
    from .rundb import NewRun
from ..tagsearch import TaggedPage
from ..versionmeta import MetaEdit
from .editsdb import EditFn


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A version about to be committed; the store assigns its number."""

    digest: str
    created: float
    creator: str
    description: str
    metadata_json: str
    parent: int | None
    file_count: int
    total_size: int
    manifest_gz: bytes  # gzip of the manifest's compact JSON wire form (see core.encode_manifest)
    blobs: frozenset[str]  # the sha256 of every file: checked against doomed blobs at commit
    inputs: tuple[Ref, ...] = ()  # lineage, resolved to versions inside the commit
    observed: tuple[Ref, ...] = ()  # lineage a mount observed: kept where still there
    tags: tuple[str, ...] = ()  # validated (versionmeta.tag_set)
    expires: float | None = None  # epoch seconds from which gc may delete it (its TTL)
    allow_duplicate: bool = False  # a new version even if a live one has this content
    admin: bool = True  # the committer may move protected aliases
    # gzip of the canonical form (manifest_stream.py; schema 11, canonicaldb.py), and
    # whether the manifest has external refs; None: not stored (read lazily from the JSON)
    canonical_gz: bytes | None = None
    has_refs: bool = False
    # Create the artifact (and its project) with this type inside the commit's transaction
    # if it does not exist: an artifact never exists without a version (a failed first
    # commit leaves nothing). None: the artifact must exist.
    create_type: str | None = None


@dataclass(frozen=True, slots=True)
class DamagedBlob:
    """A blob the registry knows is damaged or missing (schema 6, ``integrity.py``), and the
    live versions that use it."""

    sha256: str
    state: str  # "damaged" (quarantined) or "missing"
    found: float
    detail: str
    versions: tuple[str, ...]  # "project/artifact:vN"


VersionKey = tuple[int, int]
"""A version's identity inside one store (artifact row id, number); never reused."""

BlobsOf = Callable[[bytes], Iterable[str]]
"""The blob digests a stored (gzip JSON) manifest references (``core.manifest_blobs``)."""


class MetaStore(Protocol):
    def registry_id(self) -> str:
        """A uuid created once, when the store is first initialised."""
        ...

    def create_project(self, name: str, created: float, *, exist_ok: bool) -> ProjectInfo: ...

    def get_project(self, name: str) -> ProjectInfo: ...

    def list_projects(self) -> list[ProjectInfo]: ...

    def create_artifact(
        self,
        project: str,
        name: str,
        type: str,
        description: str,
        created: float,
        *,
        exist_ok: bool,
    ) -> ArtifactInfo:
        """``exist_ok`` returns an existing artifact of the same type; another type: Conflict."""
        ...

    def get_artifact(self, project: str, name: str) -> ArtifactInfo:
        """The artifact with its live versions (oldest first) and aliases."""
        ...

    def list_artifacts(self, project: str) -> list[ArtifactInfo]: ...

    def get_version(self, project: str, artifact: str, number: int) -> VersionInfo: ...

    def get_versions(
        self, project: str, artifact: str, numbers: Sequence[int]
    ) -> list[VersionInfo]:
        """The live versions among ``numbers`` (at most 500), in that order; others left out."""
        ...

    def resolve_alias(self, project: str, artifact: str, alias: str) -> int: ...

    def used_by(self, project: str, artifact: str, number: int) -> list[VersionInput]:
        """Live versions whose lineage inputs include this live version."""
        ...

    def lineage(
        self,
        project: str,
        artifact: str,
        number: int,
        *,
        up: int | None,
        down: int | None,
        can_read: Callable[[str], bool],
        max_nodes: int = ...,
        now: float | None = ...,
    ) -> LineageGraph:
        """The lineage graph around a live version (and its runs), in one read transaction."""
        ...

    def get_manifest_gz(self, project: str, artifact: str, number: int) -> tuple[str, bytes]:
        """(digest, gzip JSON) of a live version's manifest."""
        ...

    def commit(
        self,
        project: str,
        artifact: str,
        new: NewVersion,
        aliases: list[str],
        verify: Callable[[int], None],
    ) -> tuple[VersionInfo, bool]:
        """Atomically: if a live version has ``new.digest`` (and not ``new.allow_duplicate``),
        apply ``aliases`` and ``new.tags`` to the newest such and return (it, False); else
        store the version under the next number, point ``latest`` and ``aliases`` at it and
        return (it, True). ProtectedAlias if ``aliases`` names a protected one and not
        ``new.admin``.

        Inside the transaction, excluding the garbage collector's marking: Conflict if any of
        ``new.blobs`` is doomed; then ``verify(gc_epoch)`` (the epoch read after the doomed
        rows), which raises to refuse the commit."""
        ...

    def set_alias(
        self,
        project: str,
        artifact: str,
        alias: str,
        number: int,
        expect: Expect,
        admin: bool = True,
    ) -> None:
        """ProtectedAlias when it moves a protected alias and not ``admin``."""
        ...

    def delete_alias(
        self, project: str, artifact: str, alias: str, expect: Expect, admin: bool = True
    ) -> None: ...

    def delete_version(
        self, project: str, artifact: str, number: int, *, force: bool, admin: bool = True
    ) -> None:
        """Mark a version deleted (its number is never reused) and drop its manifest and aliases;
        ``latest`` moves to the newest remaining version. Without ``force``, refused with
        Conflict while aliases other than ``latest`` point at it (protected ones: ``admin``)."""
        ...

    # What changes after a commit (schema 10; editsdb.py, deletedb.py).
    def edit_version(
        self, project: str, artifact: str, number: int, edit: EditFn, editor: str, when: float
    ) -> VersionInfo:
        """Apply ``edit`` to a live version's description and metadata in one transaction,
        recording what changed (nothing: no record)."""
        ...

    def edit_artifact(
        self,
        project: str,
        artifact: str,
        description: str | None,
        type: str | None,
        editor: str,
        when: float,
    ) -> ArtifactInfo: ...

    def edit_history(self, project: str, artifact: str, number: int | None) -> list[MetaEdit]:
        """Edits of a version (``number`` None: of the artifact), oldest first."""
        ...

    def change_tags(
        self,
        project: str,
        artifact: str,
        number: int,
        add: Sequence[str],
        remove: Sequence[str],
    ) -> tuple[str, ...]:
        """The version's tags after the change."""
        ...

    def tagged_versions(
        self, project: str, tag: str, after: tuple[str, int] | None, limit: int
    ) -> TaggedPage:
        """Live versions of ``project`` with ``tag`` after (artifact, number), by artifact
        name then number, ``limit`` at most (``registry/tagsearchdb.py``)."""
        ...

    def set_expiry(
        self, project: str, artifact: str, number: int, expires: float | None
    ) -> None: ...

    def protect_alias(
        self, project: str, artifact: str, alias: str, protect: bool, who: str, when: float
    ) -> None: ...

    def delete_artifact(
        self, project: str, artifact: str, *, force: bool, admin: bool, when: float
    ) -> int: ...

    def delete_expired(self, now: float, *, dry_run: bool) -> list[str]: ...

    # Access tokens (artfs/auth.py): the store holds the sha256 of each secret, never the secret.
    def create_token(
        self,
        name: str,
        secret_sha256: str,
        created: float,
        grants: dict[str, str],
        expires: float | None = None,
    ) -> TokenInfo:
        """AlreadyExists if a live (unrevoked) token has this name. ``expires``: epoch
        seconds from which the token is refused (None: never)."""
        ...

    def list_tokens(self) -> list[TokenInfo]:
        """Every token, revoked ones included, by name."""
        ...

    def revoke_token(self, name: str, revoked: float) -> TokenInfo:
        """Revoke the live token ``name``; NotFound if there is none."""
        ...

    def find_token(self, secret_sha256: str) -> TokenInfo | None:
        """The token whose secret hashes to ``secret_sha256`` (revoked or not), or None."""
        ...

    # Project isolation (schema 6; blobrefs.py).
    def visible_blobs(
        self,
        digests: Collection[str],
        projects: Sequence[str] | None,
        token: str | None,
        since: float,
    ) -> set[str]:
        """Those of ``digests`` referenced by a version of one of ``projects`` (None: any
        project), or uploaded by ``token`` at ``since`` or later."""
        ...

    def record_upload(self, token: str, sha256: str, now: float, expired_before: float) -> None:
        """``token`` uploaded (and the server verified) ``sha256`` at ``now``."""
        ...

    def drop_upload_proofs(self, before: float) -> int:
        """Forget every upload proof older than ``before`` (``artfs gc``); how many."""
        ...

    def url_secret(self) -> str:
        """The secret signing data-server URLs, made once and shared by every server."""
        ...

    # Garbage collection (schema 3; gc.py).
    def gc_epoch(self) -> int:
        """A counter bumped by every ``undoom``: blobs may have been deleted since it moved."""
        ...

    def doomed_among(self, digests: Collection[str]) -> tuple[set[str], int]:
        """(the doomed blobs among ``digests``, the gc epoch read after them)."""
        ...

    def doomed_blobs(self) -> list[str]:
        """Every doomed blob (left by a collection in progress or interrupted)."""
        ...

    def manifests_after(
        self, after: VersionKey | None, limit: int
    ) -> list[tuple[VersionKey, bytes]]:
        """Up to ``limit`` live versions' stored manifests, in key order, after ``after``."""
        ...

    def mark_doomed(
        self,
        candidates: Collection[str],
        seen: Container[VersionKey],
        blobs_of: BlobsOf,
        marked: float,
        *,
        dry_run: bool,
    ) -> list[str]:
        """In one transaction that excludes commits: drop from ``candidates`` every blob that
        a live version not in ``seen`` references, and doom the rest (unless ``dry_run``);
        returns them, sorted. The caller has already removed what ``seen`` versions reference
        (their manifests never change)."""
        ...

    def undoom(self, digests: Collection[str]) -> None:
        """Remove these doomed rows (their blobs are deleted) and bump the gc epoch."""
        ...

    def gc_run_lock(self) -> AbstractContextManager[None]:
        """Held for a whole collection: Conflict at once if another one holds it."""
        ...

    # Blob integrity (schema 6; integrity.py, damagedb.py).
    def record_damage(
        self, sha256: str, state: str, found: float, detail: str, versions: Sequence[VersionKey]
    ) -> None:
        """Record a damaged / missing blob and the live versions using it; bumps the gc epoch
        (servers drop cached blob sizes)."""
        ...

    def clear_damage(self, digests: Collection[str]) -> list[str]:
        """Forget these blobs' damage (healed); those that had a record."""
        ...

    def damage_records(self) -> list[DamagedBlob]: ...

    def version_labels(self, keys: Collection[VersionKey]) -> dict[VersionKey, str]:
        """ "project/artifact:vN" of each version key (for reports)."""
        ...

    # --- runs (schema 8, rundb.py; names and values validated by registry/runapi.py) ---
    def create_run(self, project: str, new: NewRun) -> RunInfo: ...

    def run_project(self, run_id: str) -> str: ...

    def get_run(self, run_id: str, now: float) -> RunInfo:
        """With its inputs and outputs."""
        ...

    def list_runs(self, project: str, limit: int, now: float) -> list[RunInfo]: ...

    def update_run(
        self,
        run_id: str,
        now: float,
        *,
        end: tuple[str, int | None] | None,
        config: Callable[[dict[str, Any]], str] | None,
    ) -> RunInfo: ...

    def add_run_inputs(
        self, run_id: str, refs: Sequence[Ref], kind: str, now: float
    ) -> RunInfo: ...

    def add_run_outputs(self, run_id: str, refs: Sequence[Ref], now: float) -> RunInfo: ...

    def version_runs(self, project: str, artifact: str, number: int, now: float) -> VersionRuns: ...

    # --- canonical manifests (schema 11, canonicaldb.py) ---------------------------------
    def get_canonical_gz(
        self, project: str, artifact: str, number: int
    ) -> tuple[str, bool, bytes] | str:
        """(digest, has refs, gzip canonical form) of a live version's manifest, or only its
        digest where none is stored (committed before schema 11)."""
        ...

    def put_canonical_gz(
        self, project: str, artifact: str, number: int, digest: str, has_refs: bool, data: bytes
    ) -> None:
        """Store the canonical form of an older version (no-op if stored, gone or changed)."""
        ...

    def manifest_forms_after(
        self, after: VersionKey | None, limit: int
    ) -> list[tuple[VersionKey, str, bytes, bytes | None]]:
        """``fsck``: up to ``limit`` live versions after ``after``, in key order, each as
        (key, digest, gzip JSON manifest, gzip canonical form or None where none is stored)."""
        ...

    def replace_canonical_gz(
        self, key: VersionKey, digest: str, has_refs: bool, data: bytes
    ) -> bool:
        """``fsck``: replace a version's stored canonical form (one found not to match its
        digest) with ``data``; False if the version is gone or holds other content."""
        ...

    def close(self) -> None: ...
