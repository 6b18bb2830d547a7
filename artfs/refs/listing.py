"""Which files of a version are external refs, and their URLs (``artfs info``; pure, no I/O).

The same facts from two places: a ``Manifest`` a client holds (``from_manifest``), or a
stored manifest on the server (``from_stored``, the route ``GET .../versions/N/refs``).
The route is there so ``artfs info`` need not fetch a whole manifest to say "no refs":
fetching and parsing a 1,000,000-file manifest made ``info`` take 11.0 s instead of about
1.4 s (measured, docs/decisions.md). A stored manifest with refs is written refs first
(``Manifest.to_json``), so its first bytes tell whether it has any without inflating it.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InvalidInput
from ..manifest import Manifest
from .model import BlobRef, refs_from_json

SHOWN = 10  # refs ``artfs info`` lists without --json (a version may have a million)
MAX_LIMIT = 1_000_000_000


def stored_has_refs(data_gz: bytes) -> bool:
    """Whether a stored (gzip JSON) manifest has refs, from its first bytes: microseconds,
    where inflating a 1,000,000-file manifest to look takes 1.3 s."""
    head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data_gz, 16)
    return head.startswith(b'{"refs":')


def listing(
    rows: Iterable[tuple[str, int, str]], refs: Mapping[str, BlobRef], limit: int | None
) -> dict[str, Any]:
    """``{"count", "files": [{"path", "url", "size", "sha256"}], "more"}`` over file rows
    ``(path, size, sha256)`` sorted by path: the first ``limit`` refs (None: all), and
    ``more``, how many were left out (only when some were)."""
    files: list[dict[str, Any]] = []
    count = 0
    for path, size, sha in rows:
        ref = refs.get(sha)
        if ref is None:
            continue
        count += 1
        if limit is None or len(files) < limit:
            files.append({"path": path, "url": ref.url, "size": size, "sha256": sha})
    out: dict[str, Any] = {"count": count, "files": files}
    if count > len(files):
        out["more"] = count - len(files)
    return out


def from_manifest(manifest: Manifest, limit: int | None) -> dict[str, Any]:
    if not manifest.refs:
        return listing((), {}, limit)
    rows = ((p, e.size, e.sha256) for p, e in manifest.items())
    return listing(rows, manifest.refs, limit)


def from_stored(data_gz: bytes, limit: int | None) -> dict[str, Any]:
    """The same from a stored manifest, inflated only when it has refs."""
    if not stored_has_refs(data_gz):
        return listing((), {}, limit)
    doc = json.loads(gzip.decompress(data_gz))
    rows = ((str(r[0]), int(r[1]), str(r[2])) for r in doc["files"])
    return listing(rows, refs_from_json(doc["refs"]), limit)


def parse_limit(text: str | None) -> int | None:
    """The route's ``limit`` query parameter: refs listed at most (absent: all)."""
    if text is None or text == "":
        return None
    if not text.isdigit() or int(text) > MAX_LIMIT:
        raise InvalidInput(f"invalid limit {text!r}: a whole number of refs to list, >= 0")
    return int(text)
