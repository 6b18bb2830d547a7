"""The registry: pure, synchronous logic over a ``MetaStore`` and a ``BlobStore``.

Everything that reaches the stores is validated here first (names, aliases,
metadata, blob presence and sizes), whoever the caller: the HTTP server, the
in-process client or a tool. The stores own atomicity; this layer owns rules.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import manifest_extras
from ..auth import Principal, TokenInfo
from ..client.base import UNSET, Expect
from ..errors import ArtfsError, BeingCollected, Forbidden, InvalidInput, NotPermitted, Unavailable
from ..hashing import sha256_hex
from ..lineage import parse_inputs
from ..lineage_graph import LineageGraph
from ..manifest import FileEntry, Manifest, check_paths
from ..manifest_stream import canonical_from_json, encode_canonical
from ..models import ArtifactInfo, CommitResult, ProjectInfo, VersionInfo, VersionInput
from ..names import (
    LATEST,
    MAX_ALIAS_LEN,
    alias_name,
    artifact_name,
    parse_version,
    project_name,
)
from ..refs.model import refs_from_json
from ..tagsearch import DEFAULT_PAGE, TaggedPage, page_limit, parse_cursor
from ..versionmeta import parse_ttl, tag_name, tag_set
from .blobrefs import UPLOAD_PROOF_SECONDS
from .blobs import BlobStore, BlobWriter, LocalBlobStore, store_file
from .editing import EditingOps
from .meta import DamagedBlob, MetaStore, NewVersion
from .runapi import RunRegistry
from .sqlite import SqliteMetaStore
from .tokens import Tokens
from .uploads import PresignedUploads, UploadPlan

if TYPE_CHECKING:
    from .gc import GcReport

log = logging.getLogger("artfs.registry")

MAX_TYPE_LEN = 128
MAX_DESCRIPTION = 64 * 1024
MAX_CREATOR = 256
MAX_METADATA_BYTES = 1 << 20
MAX_ALIASES_PER_COMMIT = 64
DOOM_WAIT = 10.0  # an upload invisible to its sender waits out a collection this long
DOOM_POLL = 0.1


def encode_manifest(manifest: Manifest) -> bytes:
    """gzip of the compact JSON wire form; stored as is and served with Content-Encoding: gzip."""
    body = json.dumps(manifest.to_json(), separators=(",", ":"), ensure_ascii=False).encode()
    return gzip.compress(body, compresslevel=1, mtime=0)


def decode_manifest(data: bytes, digest: str) -> Manifest:
    """Rebuild a manifest this registry stored (validated at commit; not re-checked)."""
    doc = json.loads(gzip.decompress(data))
    files = {p: FileEntry(size, sha) for p, size, sha in doc["files"]}
    refs = refs_from_json(doc["refs"]) if "refs" in doc else None
    return Manifest(files, digest, refs=refs, extras=manifest_extras.stored(doc))


def manifest_blobs(data: bytes) -> set[str]:
    """The blob digests a stored manifest references (what the garbage collector keeps):
    every file's, and each external ref's block-digest list (refs/model.py)."""
    body = json.loads(gzip.decompress(data))
    blobs = {sha for _, _, sha in body["files"]}
    for ref in body.get("refs", {}).values():
        if ref.get("blocks"):
            blobs.add(ref["blocks"])
    return blobs


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    if len(value.encode("utf-8", "surrogatepass")) > limit:
        raise InvalidInput(f"{what} is longer than {limit} bytes")
    if "\x00" in value:
        raise InvalidInput(f"{what} contains NUL")
    return value


def artifact_type(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TYPE_LEN:
        raise InvalidInput(f"invalid artifact type {value!r}: must be 1-{MAX_TYPE_LEN} characters")
    if not value.isprintable():
        raise InvalidInput(f"invalid artifact type {value!r}: control characters are not allowed")
    return value


def metadata_json(metadata: Any) -> str:
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be a JSON object")
    try:
        text = json.dumps(metadata, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"metadata is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidInput("metadata is nested too deeply") from None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    return text


def settable_alias(alias: Any) -> str:
    """An alias a user may set or remove: valid, and not ``latest``."""
    if alias == LATEST:
        raise NotPermitted(
            "'latest' is maintained by the registry: it always names the newest version"
        )
    return alias_name(alias)


def _expect(expect: Any) -> Expect:
    if expect is UNSET or expect is None:
        return expect  # type: ignore[no-any-return]
    if isinstance(expect, bool) or not isinstance(expect, int) or expect < 0:
        raise InvalidInput(f"invalid expected version {expect!r}: a version number, None or UNSET")
    return expect


def _number(number: Any) -> int:
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise InvalidInput(f"invalid version number {number!r}")
    return number


def _size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInput(f"invalid blob size {size!r}")
    return size


class _HealingWriter:
    """A store's writer that tells the registry when it stored a new blob (healing)."""

    def __init__(self, inner: BlobWriter, stored: Callable[[], None]) -> None:
        self.inner = inner
        self.stored = stored

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.inner.write(data)

    def finish(self) -> bool:
        created = self.inner.finish()
        if created:
            self.stored()
        return created

    def abort(self) -> None:
        self.inner.abort()


class Registry(RunRegistry, EditingOps):
    def __init__(
        self, meta: MetaStore, blobs: BlobStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.meta = meta
        self.blobs = blobs
        self.clock = clock
        self.tokens = Tokens(meta, clock=clock)
        # The metadata store's gc epoch when this process last dropped the blob store's cached
        # sizes: a newer epoch means a collection deleted blobs since (see _sync_sizes).
        self._epoch = -1
        self._epoch_lock = threading.Lock()

    @classmethod
    def open(cls, data_dir: str | Path) -> Registry:
        """The embedded registry in ``data_dir``: ``registry.db`` (SQLite) and ``blobs/``."""
        root = Path(data_dir)
        root.mkdir(parents=True, exist_ok=True)
        return cls(SqliteMetaStore(root / "registry.db"), LocalBlobStore(root / "blobs"))

    def close(self) -> None:
        self.meta.close()
        close_blobs = getattr(self.blobs, "close", None)
        if close_blobs is not None:
            close_blobs()

    def registry_id(self) -> str:
        return self.meta.registry_id()

    def find_token(self, secret_sha256: str) -> TokenInfo | None:
        """The token with this secret hash, revoked or not (the server's token check)."""
        return self.tokens.find(secret_sha256)

    # --- projects and artifacts ---------------------------------------------
    def create_project(self, name: str, *, exist_ok: bool = False) -> ProjectInfo:
        return self.meta.create_project(project_name(name), self.clock(), exist_ok=exist_ok)

    def get_project(self, name: str) -> ProjectInfo:
        return self.meta.get_project(project_name(name))

    def list_projects(self) -> list[ProjectInfo]:
        return self.meta.list_projects()

    def create_artifact(
        self, project: str, name: str, *, type: str, description: str = "", exist_ok: bool = False
    ) -> ArtifactInfo:
        return self.meta.create_artifact(
            project_name(project),
            artifact_name(name),
            artifact_type(type),
            _text(description, "description", MAX_DESCRIPTION),
            self.clock(),
            exist_ok=exist_ok,
        )

    def get_artifact(self, project: str, name: str) -> ArtifactInfo:
        return self.meta.get_artifact(project_name(project), artifact_name(name))

    def list_artifacts(self, project: str) -> list[ArtifactInfo]:
        return self.meta.list_artifacts(project_name(project))

    def tagged_versions(
        self, project: str, tag: str, *, after: str | None = None, limit: int = DEFAULT_PAGE
    ) -> TaggedPage:
        """A page of ``project``'s live versions with ``tag`` (``artfs/tagsearch.py``)."""
        start = None if after is None else parse_cursor(after)
        return self.meta.tagged_versions(
            project_name(project), tag_name(tag), start, page_limit(limit)
        )

    # --- versions -------------------------------------------------------------
    def commit(
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
        admin: bool = True,
        create_type: str | None = None,
    ) -> CommitResult:
        """``inputs``: lineage, references resolved to versions inside the commit;
        ``observed_inputs``: lineage a mount observed (``registry/observeddb.py``). ``tags``,
        ``ttl`` (seconds or ``30d``: gc deletes it then unless an alias holds it). Content
        identical to a live version makes none (the result names it) unless
        ``allow_duplicate``. ``admin``: the caller may move protected aliases.
        ``create_type``: create the artifact (and project) with this type in the same
        transaction if it is new, so a failed first commit leaves no empty artifact."""
        project_name(project)
        artifact_name(artifact)
        create_type = None if create_type is None else artifact_type(create_type)
        input_refs = tuple(parse_inputs(list(inputs)))
        observed_refs = tuple(parse_inputs(list(observed_inputs)))
        if not isinstance(manifest, Manifest):
            raise InvalidInput("commit needs a Manifest")
        if not manifest.within_limits:  # e.g. one read back from a version stored earlier
            check_paths(manifest)
        alias_list = sorted({alias_name(a) for a in aliases if a != LATEST})
        if len(alias_list) > MAX_ALIASES_PER_COMMIT:
            raise InvalidInput(f"too many aliases in one commit (max {MAX_ALIASES_PER_COMMIT})")
        creator = _text(creator, "creator", MAX_CREATOR)
        description = _text(description, "description", MAX_DESCRIPTION)
        meta_text = metadata_json(metadata)
        parent = None if parent is None else _number(parent)
        tag_tuple = tag_set(tags)
        seconds = parse_ttl(ttl)
        if not isinstance(allow_duplicate, bool):
            raise InvalidInput("'allow_duplicate' must be true or false")
        epoch = self.meta.gc_epoch()
        self._sync_sizes(epoch)
        self._check_blobs(manifest)  # early, outside the transaction: the usual refusal

        def verify(epoch_now: int) -> None:
            # Inside the commit's transaction, with the collector's marking excluded and no
            # blob of the manifest doomed. Unchanged epoch: no collection has deleted a blob
            # since the check above (deleting needs a doomed row, removing one bumps the
            # epoch). Otherwise check again, without cached sizes.
            if epoch_now != epoch:
                self._sync_sizes(epoch_now)
                self._check_blobs(manifest)

        new = NewVersion(
            digest=manifest.digest,
            created=self.clock(),
            creator=creator,
            description=description,
            metadata_json=meta_text,
            parent=parent,
            file_count=len(manifest),
            total_size=manifest.total_size,
            manifest_gz=encode_manifest(manifest),
            canonical_gz=encode_canonical(manifest),
            has_refs=bool(manifest.refs),
            blobs=frozenset(manifest.stored_blobs()),
            inputs=input_refs,
            observed=observed_refs,
            tags=tag_tuple,
            expires=None if seconds is None else self.clock() + seconds,
            allow_duplicate=allow_duplicate,
            admin=admin,
            create_type=create_type,
        )
        version, created = self.meta.commit(project, artifact, new, alias_list, verify)
        return CommitResult(version, created)

    def _sync_sizes(self, epoch: int) -> None:
        """Drop the blob store's cached sizes if a collection finished since they were cached.
        (A lookup that began before the drop caches nothing: ``BlobStore.forget_sizes``.)"""
        with self._epoch_lock:
            if epoch > self._epoch:
                self.blobs.forget_sizes()
                self._epoch = epoch

    def _check_blobs(self, manifest: Manifest) -> None:
        wanted = manifest.stored_blobs()  # a ref's bytes stay at its URL: only its block list
        held = self.blobs.sizes(wanted)
        missing = sorted(set(wanted) - set(held))
        if missing:
            shown = ", ".join(missing[:3]) + (
                f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            )
            raise InvalidInput(
                f"{len(missing)} blob(s) of the manifest are not in the registry: {shown}; "
                "upload them first"
            )
        for sha, ref in manifest.refs.items():
            if ref.blocks is not None and held[ref.blocks] != wanted[ref.blocks]:
                raise InvalidInput(
                    f"the block list {ref.blocks} of ref {sha[:12]} has {held[ref.blocks]} "
                    f"bytes, not {wanted[ref.blocks]}"
                )
        for path, entry in manifest.items():
            if entry.sha256 in manifest.refs:
                continue
            if held[entry.sha256] != entry.size:
                raise InvalidInput(
                    f"manifest says {path!r} is {entry.size} bytes "
                    f"but blob {entry.sha256} has {held[entry.sha256]}"
                )

    def resolve(self, project: str, artifact: str, selector: str) -> int:
        """``vN`` -> N; an alias -> the number it names."""
        project_name(project)
        artifact_name(artifact)
        number = parse_version(selector) if isinstance(selector, str) else None
        if number is not None:
            return number
        return self.meta.resolve_alias(project, artifact, alias_name(selector, allow_latest=True))

    def get_version(self, project: str, artifact: str, selector: str) -> VersionInfo:
        return self.meta.get_version(project, artifact, self.resolve(project, artifact, selector))

    def get_versions(
        self, project: str, artifact: str, numbers: Iterable[int]
    ) -> list[VersionInfo]:
        """Several versions in one read (a listing page): the live ones among ``numbers``."""
        wanted = [_number(n) for n in numbers]
        return self.meta.get_versions(project_name(project), artifact_name(artifact), wanted)

    def used_by(self, project: str, artifact: str, number: int) -> list[VersionInput]:
        """Live versions made from this one (its consumers in the lineage)."""
        return self.meta.used_by(project_name(project), artifact_name(artifact), _number(number))

    def lineage(
        self,
        project: str,
        artifact: str,
        number: int,
        *,
        up: int | None = None,
        down: int | None = None,
        can_read: Callable[[str], bool] = lambda _project: True,
    ) -> LineageGraph:
        """The lineage graph around a live version: ``up``/``down`` hops of inputs and
        consumers (None: all, up to ``MAX_LINEAGE_NODES``), as ``can_read`` may see it."""
        return self.meta.lineage(
            project_name(project),
            artifact_name(artifact),
            _number(number),
            up=up,
            down=down,
            can_read=can_read,
            now=self.clock(),
        )

    def manifest_gz(self, project: str, artifact: str, number: int) -> tuple[str, bytes]:
        """(digest, gzip JSON) of a version's manifest, as stored."""
        return self.meta.get_manifest_gz(
            project_name(project), artifact_name(artifact), _number(number)
        )

    def manifest_canonical_gz(
        self, project: str, artifact: str, number: int
    ) -> tuple[str, bool, bytes]:
        """(digest, has external refs, gzip canonical form) of a version's manifest: as
        stored at commit, or, for a version committed before schema 11, converted once from
        its JSON and stored for the next reader (canonicaldb.py)."""
        p, a, n = project_name(project), artifact_name(artifact), _number(number)
        found = self.meta.get_canonical_gz(p, a, n)
        if not isinstance(found, str):
            return found
        digest, data = self.meta.get_manifest_gz(p, a, n)
        doc = json.loads(gzip.decompress(data))
        has_refs = "refs" in doc
        canonical = gzip.compress(canonical_from_json(doc), compresslevel=1, mtime=0)
        del doc
        try:
            self.meta.put_canonical_gz(p, a, n, digest, has_refs, canonical)
        except ArtfsError as e:  # (a copy for the next reader: this one has its bytes)
            log.warning("could not store the canonical manifest of %s/%s:v%d: %s", p, a, n, e)
        return digest, has_refs, canonical

    def get_manifest(self, project: str, artifact: str, number: int) -> Manifest:
        digest, data = self.manifest_gz(project, artifact, number)
        return decode_manifest(data, digest)

    def delete_version(
        self, project: str, artifact: str, number: int, *, force: bool = False, admin: bool = True
    ) -> None:
        self.meta.delete_version(
            project_name(project),
            artifact_name(artifact),
            _number(number),
            force=force,
            admin=admin,
        )

    # --- aliases ----------------------------------------------------------------
    def set_alias(
        self,
        project: str,
        artifact: str,
        alias: str,
        number: int,
        *,
        expect: Expect = UNSET,
        admin: bool = True,
    ) -> None:
        """``admin``: the caller may move a protected alias (ProtectedAlias otherwise)."""
        self.meta.set_alias(
            project_name(project),
            artifact_name(artifact),
            settable_alias(alias),
            _number(number),
            _expect(expect),
            admin,
        )

    def delete_alias(
        self, project: str, artifact: str, alias: str, *, expect: Expect = UNSET, admin: bool = True
    ) -> None:
        # An all-digit alias is no longer valid (names.alias_name) but an older registry may
        # hold one: it can still be removed.
        legacy = isinstance(alias, str) and alias.isascii() and alias.isdigit()
        name = alias if legacy and len(alias) <= MAX_ALIAS_LEN else settable_alias(alias)
        self.meta.delete_alias(
            project_name(project), artifact_name(artifact), name, _expect(expect), admin
        )

    # --- blobs --------------------------------------------------------------------
    def missing_blobs(self, digests: Iterable[str]) -> set[str]:
        """Blobs to upload: absent ones, and doomed ones (about to be deleted)."""
        wanted = {sha256_hex(d) for d in digests}
        doomed, epoch = self.meta.doomed_among(wanted)
        self._sync_sizes(epoch)
        return (wanted - set(self.blobs.sizes(wanted))) | doomed

    def _refuse_doomed(self, sha256: str, who: Principal | None = None) -> None:
        """Refuse an upload of a blob a collection is deleting (BeingCollected: the client
        waits and uploads again). Not to ``who`` when the blob is invisible to it: that answer
        would confirm that other projects once held these bytes. It waits instead, as long as
        the collection takes (one delete batch: seconds), then uploads like a new blob; still
        doomed after ``DOOM_WAIT`` (a collection died mid-way), it answers what a busy
        registry answers (Unavailable, 503)."""
        doomed, _ = self.meta.doomed_among({sha256})
        if not doomed:
            return
        if who is None or who.unrestricted or sha256 in self.visible_blobs(who, [sha256]):
            raise BeingCollected(
                f"blob {sha256[:16]}... is being garbage-collected right now; "
                "retry the upload in a moment"
            )
        deadline = time.monotonic() + DOOM_WAIT
        while time.monotonic() < deadline:
            time.sleep(DOOM_POLL)
            if not self.meta.doomed_among({sha256})[0]:
                return
        raise Unavailable("the registry is busy; retry the upload in a moment")

    def blob_size(self, sha256: str) -> int:
        return self.blobs.size(sha256_hex(sha256))

    def blob_blocks(self, sha256: str) -> bytes:
        return self.blobs.block_digests(sha256_hex(sha256))

    def blob_writer(
        self, sha256: str, size: int | None = None, who: Principal | None = None
    ) -> BlobWriter:
        self._refuse_doomed(sha256_hex(sha256), who)
        return _HealingWriter(self.blobs.writer(sha256, size), partial(self._stored, sha256))

    def put_file(self, sha256: str, source: str | Path) -> bool:
        """Store a local file's bytes, verified (the in-process client's upload); True if new."""
        self._refuse_doomed(sha256_hex(sha256))
        created = store_file(self.blobs, sha256, source)
        if created:
            self._stored(sha256)
        return created

    def _stored(self, sha256: str) -> None:
        """A verified upload stored a new blob: if it was known damaged or missing (and so
        quarantined or absent), it is healed."""
        if self.meta.clear_damage([sha256]):
            log.warning("blob %s healed: the right bytes were uploaded again", sha256)

    # --- integrity (integrity.py) -------------------------------------------------------------
    def check_blob(
        self, sha256: str, *, detail: str = "", pace: Callable[[int], None] | None = None
    ) -> str:
        """Re-hash a stored blob now; quarantine and record it if damaged. The verdict:
        "ok", "damaged", "missing" or "sidecar" (its block digests were rewritten)."""
        from .integrity import check_blob

        return check_blob(self, sha256_hex(sha256), detail=detail, pace=pace).value

    def damaged_blobs(self) -> list[DamagedBlob]:
        """Every blob known damaged or missing, with the live versions it breaks."""
        return self.meta.damage_records()

    # --- project isolation (blobrefs.py; docs/api.md, "Isolation model") --------------------
    def visible_blobs(self, who: Principal, digests: Iterable[str]) -> set[str]:
        """The digests ``who`` may learn anything about (existence, size, bytes): those a
        project it can read references, and those it uploaded itself recently. Says nothing
        about whether the store holds them."""
        wanted = {sha256_hex(d) for d in digests}
        if who.unrestricted or not wanted:
            return wanted
        since = self.clock() - UPLOAD_PROOF_SECONDS
        return self.meta.visible_blobs(wanted, who.read_scope(), who.name, since)

    def record_upload(self, who: Principal, sha256: str, created: bool) -> bool:
        """``who`` sent the bytes of ``sha256`` and they were verified: its proof of
        possession (lets it commit the blob, and read it back, for UPLOAD_PROOF_SECONDS).

        Returns the ``created`` to answer: a blob the store already held but that ``who``
        could not see is reported as created, so an upload of guessed bytes can't confirm
        what other projects hold (the store still keeps one copy)."""
        if who.unrestricted or who.name is None:
            return created
        sha = sha256_hex(sha256)
        now = self.clock()
        since = now - UPLOAD_PROOF_SECONDS
        known = created or bool(self.meta.visible_blobs({sha}, who.read_scope(), who.name, since))
        self.meta.record_upload(who.name, sha, now, since)
        return not known or created

    def require_possession(self, who: Principal, digests: Iterable[str]) -> None:
        """Forbidden unless every blob is visible to ``who``: committing a blob that only
        other projects reference needs its bytes (an upload). Checked before the store is
        asked whether it holds them, so the answer says nothing about other projects."""
        wanted = {sha256_hex(d) for d in digests}
        unproven = sorted(wanted - self.visible_blobs(who, wanted))
        if unproven:
            more = f" and {len(unproven) - 1} more" if len(unproven) > 1 else ""
            raise Forbidden(
                f"blob {unproven[0]}{more} of the manifest is neither in a project token "
                f"{who.name!r} can read nor uploaded with it: upload the bytes first "
                "(the upload proves you have them)"
            )

    def url_secret(self) -> bytes:
        """The key that signs data-server URLs (shared by every server on this store)."""
        return bytes.fromhex(self.meta.url_secret())

    # --- presigned uploads (stores that have them: uploads.PresignedUploads) --------------
    def presigned_upload_min(self) -> int | None:
        """Blob size from which clients should upload through presigned URLs; None when the
        store takes uploads only through the server (``PUT /v1/blobs/{sha}``)."""
        if isinstance(self.blobs, PresignedUploads):
            return self.blobs.presigned_upload_min
        return None

    def _uploads(self) -> PresignedUploads:
        if not isinstance(self.blobs, PresignedUploads):
            raise InvalidInput(
                "this registry's blob store takes uploads at PUT /v1/blobs/{sha256} only"
            )
        return self.blobs

    def begin_upload(self, sha256: str, size: int, who: Principal | None = None) -> UploadPlan:
        uploads = self._uploads()
        self._refuse_doomed(sha256_hex(sha256), who)
        return uploads.begin_upload(sha256, _size(size))

    def complete_upload(
        self,
        sha256: str,
        size: int,
        key: str,
        multipart_id: str | None,
        etags: list[tuple[int, str]],
        who: Principal | None = None,
    ) -> bool:
        if not isinstance(key, str) or not (multipart_id is None or isinstance(multipart_id, str)):
            raise InvalidInput("'key' must be a string and 'multipart_id' a string or null")
        uploads = self._uploads()
        self._refuse_doomed(sha256_hex(sha256), who)
        created = uploads.complete_upload(sha256, _size(size), key, multipart_id, etags)
        if created:
            self._stored(sha256)
        return created

    # --- garbage collection (gc.py) ---------------------------------------------------------
    def gc(
        self,
        grace_seconds: float = 3600.0,
        dry_run: bool = False,
        *,
        progress: Callable[[str], None] | None = None,
    ) -> GcReport:
        """Delete the blobs no live version references and older than ``grace_seconds``
        (``dry_run``: only report them). Safe against concurrent commits and uploads on any
        number of servers; one collection at a time (Conflict otherwise). See gc.py."""
        from .gc import GarbageCollector

        return GarbageCollector(self, progress=progress).run(grace_seconds, dry_run=dry_run)
