"""The registry: pure, synchronous logic over a ``MetaStore`` and a ``BlobStore``.

Everything that reaches the stores is validated here first (names, aliases,
metadata, blob presence and sizes), whoever the caller: the HTTP server, the
in-process client or a tool. The stores own atomicity; this layer owns rules.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..auth import TokenInfo
from ..client.base import UNSET, Expect
from ..errors import InvalidInput, NotPermitted
from ..hashing import sha256_hex
from ..manifest import FileEntry, Manifest
from ..models import ArtifactInfo, CommitResult, ProjectInfo, VersionInfo
from ..names import LATEST, alias_name, artifact_name, parse_version, project_name
from .blobs import BlobStore, BlobWriter, LocalBlobStore
from .meta import MetaStore, NewVersion
from .sqlite import SqliteMetaStore
from .tokens import Tokens
from .uploads import PresignedUploads, UploadPlan

MAX_TYPE_LEN = 128
MAX_DESCRIPTION = 64 * 1024
MAX_CREATOR = 256
MAX_METADATA_BYTES = 1 << 20
MAX_ALIASES_PER_COMMIT = 64


def encode_manifest(manifest: Manifest) -> bytes:
    """gzip of the compact JSON wire form; stored as is and served with Content-Encoding: gzip."""
    body = json.dumps(manifest.to_json(), separators=(",", ":"), ensure_ascii=False).encode()
    return gzip.compress(body, compresslevel=1, mtime=0)


def decode_manifest(data: bytes, digest: str) -> Manifest:
    """Rebuild a manifest this registry stored (validated at commit; not re-checked)."""
    files = {p: FileEntry(size, sha) for p, size, sha in json.loads(gzip.decompress(data))["files"]}
    return Manifest(files, digest)


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


class Registry:
    def __init__(
        self, meta: MetaStore, blobs: BlobStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.meta = meta
        self.blobs = blobs
        self.clock = clock
        self.tokens = Tokens(meta, clock=clock)

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
    ) -> CommitResult:
        project_name(project)
        artifact_name(artifact)
        if not isinstance(manifest, Manifest):
            raise InvalidInput("commit needs a Manifest")
        alias_list = sorted({alias_name(a) for a in aliases if a != LATEST})
        if len(alias_list) > MAX_ALIASES_PER_COMMIT:
            raise InvalidInput(f"too many aliases in one commit (max {MAX_ALIASES_PER_COMMIT})")
        creator = _text(creator, "creator", MAX_CREATOR)
        description = _text(description, "description", MAX_DESCRIPTION)
        meta_text = metadata_json(metadata)
        parent = None if parent is None else _number(parent)
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
        )
        version, created = self.meta.commit(project, artifact, new, alias_list)
        return CommitResult(version, created)

    def _check_blobs(self, manifest: Manifest) -> None:
        wanted = manifest.blobs()
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
        for path, entry in manifest.items():
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

    def manifest_gz(self, project: str, artifact: str, number: int) -> tuple[str, bytes]:
        """(digest, gzip JSON) of a version's manifest, as stored."""
        return self.meta.get_manifest_gz(
            project_name(project), artifact_name(artifact), _number(number)
        )

    def get_manifest(self, project: str, artifact: str, number: int) -> Manifest:
        digest, data = self.manifest_gz(project, artifact, number)
        return decode_manifest(data, digest)

    def delete_version(
        self, project: str, artifact: str, number: int, *, force: bool = False
    ) -> None:
        self.meta.delete_version(
            project_name(project), artifact_name(artifact), _number(number), force=force
        )

    # --- aliases ----------------------------------------------------------------
    def set_alias(
        self, project: str, artifact: str, alias: str, number: int, *, expect: Expect = UNSET
    ) -> None:
        self.meta.set_alias(
            project_name(project),
            artifact_name(artifact),
            settable_alias(alias),
            _number(number),
            _expect(expect),
        )

    def delete_alias(
        self, project: str, artifact: str, alias: str, *, expect: Expect = UNSET
    ) -> None:
        self.meta.delete_alias(
            project_name(project), artifact_name(artifact), settable_alias(alias), _expect(expect)
        )

    # --- blobs --------------------------------------------------------------------
    def missing_blobs(self, digests: Iterable[str]) -> set[str]:
        wanted = {sha256_hex(d) for d in digests}
        return wanted - set(self.blobs.sizes(wanted))

    def blob_size(self, sha256: str) -> int:
        return self.blobs.size(sha256_hex(sha256))

    def blob_blocks(self, sha256: str) -> bytes:
        return self.blobs.block_digests(sha256_hex(sha256))

    def blob_writer(self, sha256: str, size: int | None = None) -> BlobWriter:
        return self.blobs.writer(sha256_hex(sha256), size)

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

    def begin_upload(self, sha256: str, size: int) -> UploadPlan:
        return self._uploads().begin_upload(sha256_hex(sha256), _size(size))

    def complete_upload(
        self,
        sha256: str,
        size: int,
        key: str,
        multipart_id: str | None,
        etags: list[tuple[int, str]],
    ) -> bool:
        if not isinstance(key, str) or not (multipart_id is None or isinstance(multipart_id, str)):
            raise InvalidInput("'key' must be a string and 'multipart_id' a string or null")
        return self._uploads().complete_upload(
            sha256_hex(sha256), _size(size), key, multipart_id, etags
        )
