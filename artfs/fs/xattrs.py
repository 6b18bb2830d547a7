"""The read-only extended attributes a mount exposes (SPEC §2), and their text forms.

Values are UTF-8 text so that ``getfattr`` prints them as they are:
``created`` is ISO 8601 UTC, ``aliases`` a comma-separated sorted list,
``metadata`` compact JSON with sorted keys, sizes decimal.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

PREFIX = "user.artfs."
REF = PREFIX + "ref"
DIGEST = PREFIX + "digest"
CREATED = PREFIX + "created"
ALIASES = PREFIX + "aliases"
METADATA = PREFIX + "metadata"
DESCRIPTION = PREFIX + "description"
TYPE = PREFIX + "type"
INPUTS = PREFIX + "inputs"  # lineage: JSON list of the references it was made from
OBSERVED_INPUTS = PREFIX + "observed_inputs"  # those of them a mount observed (not declared)
TAGS = PREFIX + "tags"  # comma-separated, sorted (editable: refreshed like aliases)
SHA256 = PREFIX + "sha256"
CACHED = PREFIX + "cached"
PATH = PREFIX + "path"
SIZE = PREFIX + "size"
COMMIT = PREFIX + "commit"  # settable on drafts (not on versions)

VERSION_NAMES = (
    REF,
    DIGEST,
    CREATED,
    ALIASES,
    METADATA,
    DESCRIPTION,
    TYPE,
    INPUTS,
    OBSERVED_INPUTS,
    TAGS,
)
FILE_NAMES = (SHA256, CACHED, REF, PATH, SIZE)
SETTABLE_NAMES = (COMMIT, TYPE)


def text(value: str) -> bytes:
    return value.encode("utf-8")


def timestamp(epoch: float) -> bytes:
    """``2026-11-29T14:57:44.123456Z``: sortable, unambiguous, what ``date -d`` reads."""
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return text(moment.isoformat(timespec="microseconds").replace("+00:00", "Z"))


def alias_list(aliases: list[str]) -> bytes:
    return text(",".join(sorted(aliases)))


def ref_list(refs: list[str]) -> bytes:
    return text(json.dumps(refs, separators=(",", ":"), ensure_ascii=False))


def metadata_json(metadata: dict[str, Any]) -> bytes:
    return text(json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
