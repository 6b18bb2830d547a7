"""Content digests.

A blob is named by the sha256 of its bytes. Large blobs also carry *block
digests*: the sha256 of every ``BLOCK_SIZE`` slice, so that a reader fetching a
byte range can verify each block before handing it out, long before the whole
blob is there. A blob no larger than one block has one block digest: its own
sha256, so small files need nothing extra.
"""

from __future__ import annotations

import hashlib
import os
import re

from .errors import InvalidInput

BLOCK_SIZE = 128 * 1024
DIGEST_LEN = 32
_SHA_RE = re.compile(r"[0-9a-f]{64}")


def sha256_hex(text: str) -> str:
    if not isinstance(text, str) or not _SHA_RE.fullmatch(text):
        raise InvalidInput(f"invalid sha256 {text!r}: expected 64 lowercase hex digits")
    return text


def block_count(size: int) -> int:
    return max(1, -(-size // BLOCK_SIZE))


class BlobHasher:
    """Incremental sha256 of a whole blob plus its block digests, fed in any chunk sizes."""

    def __init__(self) -> None:
        self._whole = hashlib.sha256()
        self._block = hashlib.sha256()
        self._in_block = 0
        self._blocks: list[bytes] = []
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._whole.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:
            take = min(len(view), BLOCK_SIZE - self._in_block)
            self._block.update(view[:take])
            self._in_block += take
            view = view[take:]
            if self._in_block == BLOCK_SIZE:
                self._blocks.append(self._block.digest())
                self._block = hashlib.sha256()
                self._in_block = 0

    def hexdigest(self) -> str:
        return self._whole.hexdigest()

    def block_digests(self) -> bytes:
        """Concatenated 32-byte block digests (what ``/v1/blobs/{sha}/blocks`` serves)."""
        blocks = list(self._blocks)
        if self._in_block or not blocks:
            blocks.append(self._block.digest())
        if len(blocks) == 1:
            return self._whole.digest()
        return b"".join(blocks)


def hash_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> BlobHasher:
    hasher = BlobHasher()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(chunk)
        view = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            hasher.update(view[:n])
    return hasher


def split_block_digests(raw: bytes, size: int) -> list[bytes]:
    """Check a block-digest list against the blob size and split it into digests."""
    n = block_count(size)
    if len(raw) != n * DIGEST_LEN:
        raise InvalidInput(f"block digest list has {len(raw)} bytes, expected {n * DIGEST_LEN}")
    return [raw[i * DIGEST_LEN : (i + 1) * DIGEST_LEN] for i in range(n)]
