"""Presigned uploads: clients put blob bytes straight into the object store.

A store that supports them (``s3.S3BlobStore``) hands out an ``UploadPlan``: URLs
for one PUT, or for the parts of a multipart upload, all to a *temporary* key. The
client uploads (parts in parallel) and asks the server to complete; only then does
the server read the object once, check its sha256 and size, compute the block
digests, and copy it to the blob's final key. Clients can never write a final key,
so a blob that exists has always been verified. See docs/design.md, "Beyond one machine".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import InvalidInput


@dataclass(frozen=True, slots=True)
class PartUrl:
    number: int  # 1-based, as S3 counts parts
    offset: int
    length: int
    url: str

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "offset": self.offset,
            "length": self.length,
            "url": self.url,
        }


@dataclass(frozen=True, slots=True)
class UploadPlan:
    sha256: str
    size: int
    key: str  # the temporary object's name (store-relative), echoed back on completion
    multipart_id: str | None  # None: a single PUT to parts[0].url
    parts: tuple[PartUrl, ...]
    expires: float

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "key": self.key,
            "multipart_id": self.multipart_id,
            "parts": [p.to_json() for p in self.parts],
            "expires": self.expires,
        }


@runtime_checkable
class PresignedUploads(Protocol):
    presigned_upload_min: int
    """Blobs at least this large should go through ``begin_upload``; smaller ones are cheaper
    streamed through the server (one request instead of three)."""

    def begin_upload(self, sha256: str, size: int) -> UploadPlan: ...

    def complete_upload(
        self,
        sha256: str,
        size: int,
        key: str,
        multipart_id: str | None,
        etags: list[tuple[int, str]],
    ) -> bool:
        """Verify the uploaded object and store it as the blob; True if the blob is new.
        IntegrityError (and nothing stored) when the bytes don't match."""
        ...


def parse_etags(value: Any) -> list[tuple[int, str]]:
    """The ``parts`` list of a completion request: ``[{"number": N, "etag": "..."}, ...]``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput("'parts' must be a list of {number, etag}")
    out: list[tuple[int, str]] = []
    for item in value:
        if not isinstance(item, dict):
            raise InvalidInput("'parts' must be a list of {number, etag}")
        number, etag = item.get("number"), item.get("etag")
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 10_000:
            raise InvalidInput(f"invalid part number {number!r}")
        if not isinstance(etag, str) or not 0 < len(etag) <= 256:
            raise InvalidInput(f"invalid etag for part {number}")
        out.append((number, etag))
    return out
