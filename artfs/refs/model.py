"""External references: blobs a version lists but the registry does not hold (pure, no I/O).

A manifest may say that the bytes of some of its blobs stay where they are, at an
``s3://``, ``https://``, ``http://`` or ``file://`` URL (``Manifest.refs``: sha256 ->
``BlobRef``). The file entries themselves do not change (path, size, sha256), so every
reader that verifies by sha256 keeps verifying: a ref only says where to read from.

What a reader needs to verify a *range* of such a blob before the whole is there is
its block digests (``artfs.hashing``); the registry does not hold the blob, so the
committer uploads the block-digest list itself as an ordinary blob and the ref names it
(``blocks``). A blob of at most one block has no list: its one block digest is its sha256.

Canonical form (what a manifest's digest is over, ``manifest_stream.py``): after every
file record, one record per ref in sha256 order::

    NUL "ref" NUL <sha256> NUL <blocks sha256 or empty> NUL <url> LF

A record cannot be taken for a file record (a path is never empty), and a reader that
predates refs fails on it ("invalid size") rather than reading anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import InvalidInput
from ..hashing import BLOCK_SIZE, DIGEST_LEN, block_count, sha256_hex

SCHEMES = ("s3", "https", "http", "file")
MAX_URL = 4096  # bytes; S3 keys are at most 1024, URLs past a few KiB are refused by servers
REF_SUFFIX = ".artfs-ref"  # a draft file ``x.artfs-ref`` becomes the ref entry ``x``
MAX_REF_FILE = 16 * 1024


@dataclass(frozen=True, slots=True)
class BlobRef:
    """Where a blob's bytes live and (blobs over one block) which blob lists its block digests."""

    url: str
    blocks: str | None = None

    def record(self, sha256: str) -> str:
        return f"\x00ref\x00{sha256}\x00{self.blocks or ''}\x00{self.url}\n"

    def to_json(self) -> dict[str, str]:
        return {"url": self.url, **({"blocks": self.blocks} if self.blocks else {})}


def check_url(url: object) -> str:
    """A ref URL as a manifest may hold it: a known scheme, a place, no control characters."""
    if not isinstance(url, str):
        raise InvalidInput(f"invalid ref URL {url!r}: must be a string")
    if len(url.encode("utf-8", "surrogatepass")) > MAX_URL:
        raise InvalidInput(f"ref URL is longer than {MAX_URL} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise InvalidInput(f"ref URL {url!r} contains a control character")
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise InvalidInput(
            f"ref URL {url!r}: scheme must be one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise InvalidInput(f"ref URL {url!r}: a file URL is file:///absolute/path")
    elif not parts.netloc or (parts.scheme == "s3" and not parts.path.lstrip("/")):
        raise InvalidInput(f"ref URL {url!r} names no host/bucket or key")
    return url


def blocks_size(size: int) -> int:
    """Bytes of the block-digest list of a blob of ``size`` bytes."""
    return block_count(size) * DIGEST_LEN


def check_ref(sha256: str, size: int, ref: BlobRef) -> None:
    """A ref as a manifest may hold it for a blob of ``size`` bytes."""
    check_url(ref.url)
    if size > BLOCK_SIZE:
        if ref.blocks is None:
            raise InvalidInput(f"ref of blob {sha256[:12]} ({size} bytes) names no block list")
        sha256_hex(ref.blocks)
    elif ref.blocks is not None:
        raise InvalidInput(f"ref of blob {sha256[:12]} ({size} bytes) has one block: no list")


def refs_from_json(data: object) -> dict[str, BlobRef]:
    """``{sha256: {"url": ..., "blocks": ...}}`` (the manifest's ``refs`` field)."""
    if not isinstance(data, dict):
        raise InvalidInput("invalid manifest refs: expected an object of sha256 -> ref")
    refs: dict[str, BlobRef] = {}
    for sha, item in data.items():
        if not isinstance(item, dict) or "url" not in item:
            raise InvalidInput(f"invalid ref for blob {sha!r}: expected {{'url': ...}}")
        blocks = item.get("blocks")
        if blocks is not None:
            sha256_hex(blocks)
        refs[sha256_hex(sha)] = BlobRef(check_url(item["url"]), blocks)
    return refs


def parse_ref_file(text: bytes) -> str:
    """The URL a ``.artfs-ref`` file names: one URL line, or a JSON object ``{"url": ...}``."""
    if len(text) > MAX_REF_FILE:
        raise InvalidInput(f"a {REF_SUFFIX} file is at most {MAX_REF_FILE} bytes")
    try:
        body = text.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidInput(f"a {REF_SUFFIX} file must be UTF-8 text") from None
    if body.startswith("{"):
        try:
            data = json.loads(body)
        except ValueError as e:
            raise InvalidInput(f"{REF_SUFFIX} file: invalid JSON: {e}") from None
        if not isinstance(data, dict) or set(data) != {"url"}:
            raise InvalidInput(f'{REF_SUFFIX} file: a JSON one is {{"url": "..."}}')
        return check_url(data["url"])
    if "\n" in body:
        raise InvalidInput(f"{REF_SUFFIX} file: one URL line expected")
    return check_url(body)
