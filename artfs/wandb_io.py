"""W&B artifact manifests (``wandb_manifest.json``): read, check, write. Pure except hashing.

The format (W&B's ``ArtifactManifestV1``, as its SDK writes and reads it)::

    {"version": 1,
     "storagePolicy": "wandb-storage-policy-v1",
     "storagePolicyConfig": {"storageLayout": "V2"},
     "contents": {"path/in/artifact": {"digest": "<base64 md5>", "size": 123,
                                        "ref": "s3://bucket/key",      (references only)
                                        "birthArtifactID": "...", "extra": {...}}}}

A file's ``digest`` is the base64 of its md5 (unless ``extra.alg`` names another
algorithm, which is refused here); a reference's is the md5 too for ``file://`` and
content-checked refs, or an S3 ETag (hex md5 for single-part uploads), or the URL itself
when W&B was told not to checksum. artfs checks every digest that is an md5, and says how
many it could not (docs/design.md, "W&B interoperability").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import IntegrityError, InvalidInput
from .hashing import BlobHasher
from .manifest import Manifest
from .names import manifest_path
from .refs.model import check_url

MANIFEST_NAME = "wandb_manifest.json"
VERSION = 1
POLICY = "wandb-storage-policy-v1"
DEFAULT_POLICY_CONFIG: dict[str, Any] = {"storageLayout": "V2"}
META_KEY = "wandb"  # version metadata: {"wandb": {"storagePolicy", "storagePolicyConfig", "extra"}}


@dataclass(frozen=True, slots=True)
class WandbEntry:
    path: str
    digest: str
    size: int | None
    ref: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WandbManifest:
    entries: list[WandbEntry]
    policy_config: dict[str, Any]


def md5_b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def md5_of(entry_digest: str) -> bytes | None:
    """The md5 a W&B digest states: base64 (files, file:// refs) or a plain hex ETag
    (single-part S3 uploads); None when it is no md5 (a multipart ETag, a URL)."""
    text = entry_digest.strip('"')
    if len(text) == 32:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    if len(text) == 24 and text.endswith("=="):
        try:
            raw = base64.b64decode(text, validate=True)
        except binascii.Error:
            return None
        return raw if len(raw) == 16 else None
    return None


def parse_manifest(data: Any) -> WandbManifest:
    """Check a ``wandb_manifest.json`` document; every path must also be an artfs path."""
    if not isinstance(data, dict):
        raise InvalidInput(f"{MANIFEST_NAME}: expected a JSON object")
    if data.get("version") != VERSION:
        raise InvalidInput(f"{MANIFEST_NAME}: version {data.get('version')!r}; only 1 is known")
    if data.get("storagePolicy") != POLICY:
        raise InvalidInput(
            f"{MANIFEST_NAME}: storage policy {data.get('storagePolicy')!r}; only {POLICY!r}"
        )
    config = data.get("storagePolicyConfig", {})
    contents = data.get("contents")
    if not isinstance(config, dict) or not isinstance(contents, dict):
        raise InvalidInput(f"{MANIFEST_NAME}: 'contents' and 'storagePolicyConfig' are objects")
    entries = []
    for path, item in contents.items():
        where = f"{MANIFEST_NAME}: entry {path!r}"
        if not isinstance(item, dict) or not isinstance(item.get("digest"), str):
            raise InvalidInput(f"{where}: needs a 'digest'")
        manifest_path(path)
        size = item.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise InvalidInput(f"{where}: invalid size {size!r}")
        extra = item.get("extra", {})
        if not isinstance(extra, dict):
            raise InvalidInput(f"{where}: 'extra' must be an object")
        alg = extra.get("alg")
        if alg is not None and "md5" not in str(alg).lower():
            raise InvalidInput(f"{where}: digest algorithm {alg!r}; artfs checks md5 only")
        ref = item.get("ref")
        if ref is not None:
            try:
                check_url(ref)
            except InvalidInput as e:
                raise InvalidInput(f"{where}: reference {ref!r} unsupported: {e}") from None
        entries.append(WandbEntry(path, item["digest"], size, ref, extra))
    return WandbManifest(entries, config)


def hash_local(path: Path) -> tuple[int, str, bytes]:
    """(size, sha256, md5) of a file, read once."""
    hasher = BlobHasher()
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
            md5.update(chunk)
    return hasher.size, hasher.hexdigest(), md5.digest()


def check_md5(entry: WandbEntry, size: int, md5: bytes) -> bool:
    """Refuse bytes that are not what the manifest says; False when its digest is no md5
    (a reference W&B did not checksum): nothing to compare."""
    if entry.size is not None and entry.size != size:
        raise IntegrityError(
            f"{entry.path}: {MANIFEST_NAME} says {entry.size} bytes, the data has {size}"
        )
    stated = md5_of(entry.digest)
    if stated is None and entry.ref is not None:
        return False
    if stated != md5:
        raise IntegrityError(
            f"{entry.path}: md5 mismatch: {MANIFEST_NAME} says {entry.digest}, "
            f"the data has {md5_b64(md5)}"
        )
    return True


def import_metadata(manifest: WandbManifest) -> dict[str, Any]:
    """What a version keeps of a W&B manifest beyond its files: the storage policy config
    and each entry's ``extra`` (so an export writes them back)."""
    extras = {e.path: e.extra for e in manifest.entries if e.extra}
    return {META_KEY: {"storagePolicyConfig": manifest.policy_config, "extra": extras}}


def export_manifest(
    manifest: Manifest, md5s: Mapping[str, bytes], metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``wandb_manifest.json`` of a version whose files have these md5s."""
    kept = metadata.get(META_KEY, {}) if isinstance(metadata.get(META_KEY), dict) else {}
    extras = kept.get("extra", {}) if isinstance(kept.get("extra"), dict) else {}
    config = kept.get("storagePolicyConfig")
    contents: dict[str, Any] = {}
    for path, entry in manifest.items():
        item: dict[str, Any] = {"digest": md5_b64(md5s[path]), "size": entry.size}
        ref = manifest.refs.get(entry.sha256)
        if ref is not None:
            item["ref"] = ref.url
        if isinstance(extras.get(path), dict) and extras[path]:
            item["extra"] = extras[path]
        contents[path] = item
    return {
        "version": VERSION,
        "storagePolicy": POLICY,
        "storagePolicyConfig": config if isinstance(config, dict) else DEFAULT_POLICY_CONFIG,
        "contents": contents,
    }
