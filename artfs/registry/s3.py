"""A ``BlobStore`` in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO), via boto3.

Layout under ``s3://BUCKET/PREFIX``::

    PREFIX/blobs/ab/<sha256>          the bytes; written only by a server, after verification
    PREFIX/blobs/ab/<sha256>.blocks   concatenated block digests (only when > 1 block)
    PREFIX/uploads/<sha256>.<random>  uploads in progress (clients' presigned PUTs land here)
    PREFIX/quarantine/<sha256>.<time> damaged blobs moved aside (``integrity.py``)

Reads: ``presign`` hands out short-lived GET URLs; clients fetch ranges straight
from the store, so servers stay out of the data path. Presigned URLs are cached per
blob for half their lifetime (signing costs ~0.1 ms), so many clients reading one
dataset share them.

Writes, two ways, both verified before a final key is written:

- through the server (``writer``: ``PUT /v1/blobs/{sha}``): hashed while streamed;
  small blobs are buffered and put to their final key once verified; larger ones go
  to a multipart upload on a temporary key, then are copied server-side;
- presigned (``begin_upload`` / ``complete_upload``): the client PUTs to a temporary
  key; the server then reads that object once to verify sha256 and size and compute the
  block digests, writes the sidecar, copies the object to its final key and deletes
  the temporary one (``uploads.py``).

The sidecar is written before the blob, so a blob that exists has its sidecar.
Block digests read or written are kept in memory (``DIGESTS_KEPT`` bytes, least recently
used dropped): a cold read's digest request then costs no store round trip (measured on
SeaweedFS: 8-15 ms of the first byte), and the digests of a blob never change (a sidecar
rewritten by a repair replaces its entry here).
Blob existence is checked with HEAD (in parallel) or, for large batches, by listing
the affected ``ab/`` shards; sizes found are cached (blobs never change, but the garbage
collector may delete them: ``forget_sizes`` drops the cache when the registry sees a
collection finish, and a lookup that began before that drop caches nothing).
Credentials and region come from boto3's standard sources (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles, instance roles).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from cachetools import LRUCache

from ..errors import IntegrityError, InvalidInput, NotFound, StorageFull, Unavailable
from ..hashing import BlobHasher, block_count, sha256_hex
from .blobs import check_writer_args
from .uploads import PartUrl, UploadPlan

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PART_SIZE = 16 << 20  # multipart part size (S3: 5 MiB..5 GiB, at most 10,000 parts)
MAX_PARTS = 10_000
DIRECT_MAX = 8 << 20  # server-streamed uploads up to this size are buffered, then put once
PRESIGNED_UPLOAD_MIN = 8 << 20  # advice to clients: presign uploads from this size on
URL_LIFETIME = 900.0  # seconds a presigned GET URL is valid
UPLOAD_URL_MIN_LIFETIME = 3600.0
UPLOAD_URL_MAX_LIFETIME = 6 * 86400.0  # SigV4 presigned URLs live at most 7 days
UPLOAD_MIN_RATE = 1 << 20  # bytes/s: upload URLs live long enough for this slow a client
READ_CHUNK = 1 << 20
HEAD_THREADS = 16
LIST_OVER = 2_000  # more unknown blobs than this: list their shards instead of HEAD each
SIZES_KEPT = 500_000
URLS_KEPT = 50_000
DIGESTS_KEPT = 64 << 20  # bytes of block digests kept in memory (256 KiB per GiB of blob)
COPY_CONFIG = TransferConfig(
    multipart_threshold=4 << 30, multipart_chunksize=512 << 20, max_concurrency=4
)
_TEMP_KEY = re.compile(r"[0-9a-f]{64}\.[0-9a-f]{24}")
_BLOB_NAME = re.compile(r"[0-9a-f]{64}")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix/"); the prefix may be empty."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise InvalidInput(f"invalid blob store {url!r}: expected s3://BUCKET[/PREFIX]")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


def _code(e: botocore.exceptions.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _is_missing(e: botocore.exceptions.ClientError) -> bool:
    return _code(e) in ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


_FULL_CODES = ("XMinioStorageFull", "InsufficientStorage", "StorageFull", "507")


def _is_full(e: Exception) -> bool:
    """An S3 answer that the store is out of space (MinIO's code, a plain 507)."""
    if not isinstance(e, botocore.exceptions.ClientError):
        return False
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _code(e) in _FULL_CODES or status == 507


class S3BlobStore:
    presigns = True
    presigned_upload_min = PRESIGNED_UPLOAD_MIN

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        url_lifetime: float = URL_LIFETIME,
        part_size: int = PART_SIZE,
        timeout: float = 60.0,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.url_lifetime = url_lifetime
        self.part_size = part_size
        self.where = f"s3://{bucket}/{prefix}" + (f" at {endpoint_url}" if endpoint_url else "")
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"mode": "standard", "max_attempts": 4},
            connect_timeout=10,
            read_timeout=timeout,
            max_pool_connections=HEAD_THREADS * 2,
            # Plain Content-Length bodies: what every S3-compatible store understands.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client: S3Client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, config=config
        )
        self._sizes: LRUCache[str, int] = LRUCache(SIZES_KEPT)
        self._generation = 0  # bumped by forget_sizes: older lookups may not cache
        self._urls: LRUCache[str, tuple[str, float]] = LRUCache(URLS_KEPT)
        self._digests: LRUCache[str, bytes] = LRUCache(DIGESTS_KEPT, getsizeof=len)
        self._lock = threading.Lock()
        self._check_bucket()

    # --- plumbing -----------------------------------------------------------------------
    def _unavailable(self, what: str, e: Exception) -> Unavailable | StorageFull:
        if _is_full(e):  # the store's disks are full: 507 from our server too
            return StorageFull(f"blob store {self.where} is full: {what} failed: {e}")
        return Unavailable(f"blob store {self.where}: {what} failed: {e}")

    def _check_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as e:
            if _is_missing(e) or _code(e) == "NoSuchBucket":
                raise InvalidInput(f"bucket {self.bucket} does not exist ({self.where})") from None
            raise self._unavailable("checking the bucket", e) from None
        except botocore.exceptions.BotoCoreError as e:
            raise self._unavailable("checking the bucket", e) from None

    def key(self, sha256: str) -> str:
        sha256_hex(sha256)
        return f"{self.prefix}blobs/{sha256[:2]}/{sha256}"

    def _sidecar_key(self, sha256: str) -> str:
        return self.key(sha256) + ".blocks"

    def _temp_key(self, name: str) -> str:
        return f"{self.prefix}uploads/{name}"

    def _remember(self, sha256: str, size: int, generation: int) -> None:
        """Cache a size seen by a lookup that started in ``generation``; a lookup older than
        the last ``forget_sizes`` may have seen a blob the collector deleted since."""
        with self._lock:
            if generation == self._generation:
                self._sizes[sha256] = size

    def _current_generation(self) -> int:
        with self._lock:
            return self._generation

    def forget_sizes(self) -> None:
        with self._lock:
            self._generation += 1
            self._sizes.clear()

    def remove_stale_uploads(self, idle_since: float, *, dry_run: bool = False) -> tuple[int, int]:
        # Abandoned uploads are temporary objects and incomplete multipart uploads under
        # uploads/; a bucket lifecycle rule expires them (docs/deploy.md). A multipart upload
        # shows no sign of activity short of listing its parts, so none is removed here.
        return 0, 0

    def _cached_size(self, sha256: str) -> int | None:
        with self._lock:
            return self._sizes.get(sha256)

    def _head(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except botocore.exceptions.ClientError as e:
            if _is_missing(e):
                return None
            raise self._unavailable(f"HEAD {key}", e) from None
        except botocore.exceptions.BotoCoreError as e:
            raise self._unavailable(f"HEAD {key}", e) from None

    def _delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
            pass  # an abandoned temporary object: the bucket's lifecycle rule removes it

    # --- BlobStore ----------------------------------------------------------------------
    def sizes(self, digests: Iterable[str]) -> dict[str, int]:
        generation = self._current_generation()
        found: dict[str, int] = {}
        unknown: list[str] = []
        for sha in set(digests):
            size = self._cached_size(sha)
            if size is None:
                unknown.append(sha256_hex(sha))
            else:
                found[sha] = size
        if len(unknown) == 1:
            size = self._head(self.key(unknown[0]))
            if size is not None:
                found[unknown[0]] = size
                self._remember(unknown[0], size, generation)
        elif len(unknown) > LIST_OVER:
            found.update(self._list_shards(set(unknown), generation))
        elif unknown:
            with ThreadPoolExecutor(min(HEAD_THREADS, len(unknown))) as pool:
                for sha, size in zip(
                    unknown, pool.map(lambda s: self._head(self.key(s)), unknown), strict=True
                ):
                    if size is not None:
                        found[sha] = size
                        self._remember(sha, size, generation)
        return found

    def _list_shards(self, wanted: set[str], generation: int) -> dict[str, int]:
        """Sizes of the wanted blobs, by listing each ``ab/`` shard that holds any of them."""
        shards = sorted({sha[:2] for sha in wanted})

        def list_shard(shard: str) -> dict[str, int]:
            out: dict[str, int] = {}
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}blobs/{shard}/"
            )
            try:
                for page in pages:
                    for obj in page.get("Contents", []):
                        name = obj["Key"].rsplit("/", 1)[-1]
                        if name in wanted:
                            out[name] = int(obj["Size"])
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
                raise self._unavailable(f"listing shard {shard}", e) from None
            return out

        found: dict[str, int] = {}
        with ThreadPoolExecutor(min(HEAD_THREADS, len(shards))) as pool:
            for part in pool.map(list_shard, shards):
                found.update(part)
        with self._lock:
            if generation == self._generation:
                self._sizes.update(found)
        return found

    def size(self, sha256: str) -> int:
        found = self.sizes([sha256])
        if sha256 not in found:
            raise NotFound(f"blob {sha256} not found")
        return found[sha256]

    def local_path(self, sha256: str) -> None:
        return None

    def presign(self, sha256: str, expires_in: float) -> tuple[str, float]:
        now = time.time()
        with self._lock:
            cached = self._urls.get(sha256)
        if cached is not None and cached[1] - now >= expires_in / 2:
            return cached
        lifetime = min(expires_in, self.url_lifetime)
        url = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key(sha256)},
            ExpiresIn=int(lifetime),
        )
        signed = (url, now + int(lifetime))
        with self._lock:
            self._urls[sha256] = signed
        return signed

    def _keep_digests(self, sha256: str, raw: bytes) -> None:
        if len(raw) <= DIGESTS_KEPT // 8:  # (one huge blob must not empty the cache)
            with self._lock:
                self._digests[sha256] = raw

    def block_digests(self, sha256: str) -> bytes:
        size = self.size(sha256)
        if block_count(size) == 1:
            return bytes.fromhex(sha256)
        with self._lock:
            kept = self._digests.get(sha256)
        if kept is not None:
            return kept
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._sidecar_key(sha256))
            raw = bytes(body["Body"].read())
            self._keep_digests(sha256, raw)
            return raw
        except botocore.exceptions.ClientError as e:
            if not _is_missing(e):
                raise self._unavailable(f"reading block digests of {sha256}", e) from None
        except botocore.exceptions.BotoCoreError as e:
            raise self._unavailable(f"reading block digests of {sha256}", e) from None
        # Not written by artfs (e.g. copied in by hand): compute and keep it.
        hasher = self._hash_object(self.key(sha256))
        raw = hasher.block_digests()
        self.write_sidecar(sha256, raw)
        return raw

    def list_blobs(self) -> Iterator[tuple[str, int, float]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}blobs/"
        )
        start = len(self.prefix) + len("blobs/")
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    shard, _, name = obj["Key"][start:].partition("/")
                    if _BLOB_NAME.fullmatch(name) and name[:2] == shard:
                        yield name, int(obj["Size"]), obj["LastModified"].timestamp()
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            raise self._unavailable("listing blobs", e) from None

    def delete(self, sha256: str) -> None:
        # The blob first, its sidecar second: a blob that exists always has its sidecar.
        for key in (self.key(sha256), self._sidecar_key(sha256)):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
                if not (isinstance(e, botocore.exceptions.ClientError) and _is_missing(e)):
                    raise self._unavailable(f"deleting {key}", e) from None
        with self._lock:
            self._sizes.pop(sha256, None)
            self._urls.pop(sha256, None)
            self._digests.pop(sha256, None)

    # --- integrity (integrity.py) ---------------------------------------------------------
    def rehash(
        self, sha256: str, pace: Callable[[int], None] | None = None
    ) -> tuple[BlobHasher | None, object]:
        key = self.key(sha256)
        hasher = BlobHasher()
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
            for chunk in resp["Body"].iter_chunks(READ_CHUNK):
                hasher.update(chunk)
                if pace is not None:
                    pace(len(chunk))
        except botocore.exceptions.ClientError as e:
            if _is_missing(e):
                with self._lock:
                    self._sizes.pop(sha256, None)
                return None, None
            raise self._unavailable(f"reading {key}", e) from None
        except botocore.exceptions.BotoCoreError as e:
            raise self._unavailable(f"reading {key}", e) from None
        return hasher, resp.get("ETag")

    def read_sidecar(self, sha256: str) -> bytes | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._sidecar_key(sha256))
            return bytes(body["Body"].read())
        except botocore.exceptions.ClientError as e:
            if _is_missing(e):
                return None
            raise self._unavailable(f"reading block digests of {sha256}", e) from None
        except botocore.exceptions.BotoCoreError as e:
            raise self._unavailable(f"reading block digests of {sha256}", e) from None

    def write_sidecar(self, sha256: str, raw: bytes) -> None:
        with self._lock:
            self._digests.pop(sha256, None)  # (not kept if the PUT fails)
        self._put(self._sidecar_key(sha256), raw)
        self._keep_digests(sha256, raw)

    def quarantine(self, sha256: str, token: object) -> bool:
        """Copy the object under ``quarantine/`` (only if it is still the one hashed: its
        ETag), then delete it and its sidecar."""
        key = self.key(sha256)
        aside = f"{self.prefix}quarantine/{sha256}.{int(time.time())}"
        try:
            extra: dict[str, Any] = {} if token is None else {"CopySourceIfMatch": token}
            self.client.copy_object(
                Bucket=self.bucket, Key=aside, CopySource=f"{self.bucket}/{key}", **extra
            )
        except botocore.exceptions.ClientError as e:
            if _is_missing(e):
                return True  # gone already
            if _code(e) in ("PreconditionFailed", "412"):
                return False  # replaced by a verified upload meanwhile
            raise self._unavailable(f"quarantining {key}", e) from None
        except botocore.exceptions.BotoCoreError as e:
            raise self._unavailable(f"quarantining {key}", e) from None
        self.delete(sha256)
        return True

    def quarantined(self, sha256: str) -> bool:
        try:
            resp = self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=f"{self.prefix}quarantine/{sha256}", MaxKeys=1
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
            return False
        return bool(resp.get("KeyCount"))

    def writer(self, sha256: str, size: int | None = None) -> _S3Writer:
        check_writer_args(sha256, size)
        return _S3Writer(self, sha256, size)

    # --- storing verified bytes ----------------------------------------------------------
    def _put(self, key: str, data: bytes | bytearray) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            raise self._unavailable(f"PUT {key}", e) from None

    def _store_verified(
        self, sha256: str, hasher: BlobHasher, temp_key: str | None, data: bytes | bytearray | None
    ) -> bool:
        """Make a verified blob final: sidecar first, then the bytes (from memory or a
        server-side copy of ``temp_key``). False if the blob was already there."""
        generation = self._current_generation()
        final = self.key(sha256)
        if self._head(final) is not None:
            if temp_key is not None:
                self._delete(temp_key)
            self._remember(sha256, hasher.size, generation)
            return False
        if block_count(hasher.size) > 1:
            self.write_sidecar(sha256, hasher.block_digests())
        if data is not None:
            self._put(final, data)
        else:
            assert temp_key is not None
            try:
                self.client.copy(
                    {"Bucket": self.bucket, "Key": temp_key},
                    self.bucket,
                    final,
                    Config=COPY_CONFIG,
                )
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
                raise self._unavailable(f"copying {temp_key} to {final}", e) from None
            self._delete(temp_key)
        self._remember(sha256, hasher.size, generation)
        return True

    def _hash_object(self, key: str) -> BlobHasher:
        hasher = BlobHasher()
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(READ_CHUNK):
                hasher.update(chunk)
        except botocore.exceptions.ClientError as e:
            if _is_missing(e):
                raise NotFound(f"uploaded object {key} not found") from None
            raise self._unavailable(f"reading {key}", e) from None
        except botocore.exceptions.BotoCoreError as e:
            raise self._unavailable(f"reading {key}", e) from None
        return hasher

    # --- presigned uploads (uploads.PresignedUploads) -------------------------------------
    def begin_upload(self, sha256: str, size: int) -> UploadPlan:
        sha256_hex(sha256)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"invalid blob size {size!r}")
        name = f"{sha256}.{secrets.token_hex(12)}"
        key = self._temp_key(name)
        lifetime = min(
            UPLOAD_URL_MAX_LIFETIME, max(UPLOAD_URL_MIN_LIFETIME, 2 * size / UPLOAD_MIN_RATE)
        )
        expires = time.time() + int(lifetime)
        part = max(self.part_size, -(-size // MAX_PARTS))
        try:
            if size <= part:
                url = self.client.generate_presigned_url(
                    "put_object",
                    Params={"Bucket": self.bucket, "Key": key},
                    ExpiresIn=int(lifetime),
                )
                return UploadPlan(sha256, size, name, None, (PartUrl(1, 0, size, url),), expires)
            mp = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
            upload_id = mp["UploadId"]
            parts = []
            for i, offset in enumerate(range(0, size, part), start=1):
                url = self.client.generate_presigned_url(
                    "upload_part",
                    Params={
                        "Bucket": self.bucket,
                        "Key": key,
                        "UploadId": upload_id,
                        "PartNumber": i,
                    },
                    ExpiresIn=int(lifetime),
                )
                parts.append(PartUrl(i, offset, min(part, size - offset), url))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            raise self._unavailable("starting an upload", e) from None
        return UploadPlan(sha256, size, name, upload_id, tuple(parts), expires)

    def complete_upload(
        self,
        sha256: str,
        size: int,
        key: str,
        multipart_id: str | None,
        etags: list[tuple[int, str]],
    ) -> bool:
        sha256_hex(sha256)
        if not _TEMP_KEY.fullmatch(key) or not key.startswith(sha256):
            raise InvalidInput(f"invalid upload key {key!r} for blob {sha256}")
        temp = self._temp_key(key)
        try:
            if multipart_id is not None:
                if not etags:
                    raise InvalidInput("a multipart upload needs its parts' etags")
                try:
                    self.client.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=temp,
                        UploadId=multipart_id,
                        MultipartUpload={
                            "Parts": [{"PartNumber": n, "ETag": tag} for n, tag in sorted(etags)]
                        },
                    )
                except botocore.exceptions.ClientError as e:
                    if _is_missing(e) or _code(e) in ("InvalidPart", "InvalidPartOrder"):
                        raise InvalidInput(f"upload {key} can't be completed: {e}") from None
                    raise self._unavailable(f"completing upload {key}", e) from None
            hasher = self._hash_object(temp)
            got = hasher.hexdigest()
            if got != sha256 or hasher.size != size:
                raise IntegrityError(
                    f"upload does not match blob {sha256}: got {hasher.size} bytes hashing to {got}"
                )
            return self._store_verified(sha256, hasher, temp, None)
        except BaseException:
            self._delete(temp)
            raise

    def abort_upload(self, key: str, multipart_id: str | None) -> None:
        if not _TEMP_KEY.fullmatch(key):
            raise InvalidInput(f"invalid upload key {key!r}")
        if multipart_id is not None:
            try:
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self._temp_key(key), UploadId=multipart_id
                )
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
                pass
        self._delete(self._temp_key(key))


class _S3Writer:
    """A server-streamed upload: buffered in memory up to one part, then a multipart upload
    to a temporary key; verified before anything reaches the final key."""

    def __init__(self, store: S3BlobStore, sha256: str, size: int | None) -> None:
        self.store = store
        self.sha256 = sha256
        self.expected_size = size
        self.hasher = BlobHasher()
        self.buf = bytearray()
        self.temp_key: str | None = None
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            raise ValueError("blob writer is closed")
        self.hasher.update(memoryview(data))
        if self.expected_size is not None and self.hasher.size > self.expected_size:
            self.abort()
            raise IntegrityError(
                f"upload of blob {self.sha256} is longer than "
                f"its declared {self.expected_size} bytes"
            )
        self.buf += data
        limit = self.store.part_size if self.upload_id is not None else DIRECT_MAX
        if len(self.buf) > limit:
            self._flush_part()

    def _flush_part(self) -> None:
        s = self.store
        try:
            if self.upload_id is None:
                self.temp_key = s._temp_key(f"{self.sha256}.{secrets.token_hex(12)}")
                self.upload_id = s.client.create_multipart_upload(
                    Bucket=s.bucket, Key=self.temp_key
                )["UploadId"]
            number = len(self.parts) + 1
            assert self.temp_key is not None
            resp = s.client.upload_part(
                Bucket=s.bucket,
                Key=self.temp_key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=bytes(self.buf),
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            self.abort()
            raise s._unavailable(f"uploading blob {self.sha256}", e) from None
        self.parts.append({"PartNumber": number, "ETag": resp["ETag"]})
        self.buf = bytearray()

    def finish(self) -> bool:
        if self.closed:
            raise ValueError("blob writer is closed")
        got = self.hasher.hexdigest()
        if got != self.sha256 or (
            self.expected_size is not None and self.hasher.size != self.expected_size
        ):
            size = self.hasher.size
            self.abort()
            raise IntegrityError(
                f"upload does not match blob {self.sha256}: got {size} bytes hashing to {got}"
            )
        s = self.store
        try:
            if self.upload_id is None:
                return s._store_verified(self.sha256, self.hasher, None, self.buf)
            if self.buf:
                self._flush_part()
            assert self.temp_key is not None
            try:
                s.client.complete_multipart_upload(
                    Bucket=s.bucket,
                    Key=self.temp_key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": self.parts},  # type: ignore[typeddict-item]
                )
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
                raise s._unavailable(f"completing blob {self.sha256}", e) from None
            self.upload_id = None
            return s._store_verified(self.sha256, self.hasher, self.temp_key, None)
        except BaseException:
            self.abort()
            raise
        finally:
            self.closed = True
            self.buf = bytearray()

    def abort(self) -> None:
        self.closed = True
        self.buf = bytearray()
        s = self.store
        if self.upload_id is not None and self.temp_key is not None:
            try:
                s.client.abort_multipart_upload(
                    Bucket=s.bucket, Key=self.temp_key, UploadId=self.upload_id
                )
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
                pass
            self.upload_id = None
        if self.temp_key is not None:
            s._delete(self.temp_key)
            self.temp_key = None
