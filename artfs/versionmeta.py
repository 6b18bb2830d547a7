"""What may change about a version after its commit: tags, retention, and edits of its
description and metadata (issue 12). Pure and synchronous: names parsed once into typed
values, the merge/replace rule of an edit and the record of one, time-to-live text.

A version's *content* (its manifest, digest, files) never changes; these do, and each
change of a description or of metadata is kept as a ``MetaEdit`` (who, when, what) in the
registry (``registry/editsdb.py``) and shown by ``artfs info --history``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInput, ProtocolError

MAX_TAG_LEN = 64
MAX_TAGS_PER_VERSION = 64
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,63}")
_TTL_RE = re.compile(r"([1-9][0-9]{0,6})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_TTL_SECONDS = 100 * 365 * 86400  # longer than any retention anyone means: say "none"
NO_TTL = "none"

MERGE = "merge"
REPLACE = "replace"
EDIT_MODES = (MERGE, REPLACE)


def tag_name(name: Any) -> str:
    """A tag: 1-64 of ``[A-Za-z0-9._+=-]``, starting with a letter or digit. Narrower than an
    alias (tags are listed comma-separated in ``user.artfs.tags``, so no comma or space)."""
    if not isinstance(name, str) or not _TAG_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid tag {name!r}: use 1-{MAX_TAG_LEN} of [A-Za-z0-9._+=-], "
            "starting with a letter or digit"
        )
    return name


def tag_set(names: Iterable[Any]) -> tuple[str, ...]:
    """Validated, de-duplicated, sorted tags; at most ``MAX_TAGS_PER_VERSION``."""
    if isinstance(names, str):
        raise InvalidInput("tags must be a list of names, not one string")
    tags = tuple(sorted({tag_name(n) for n in names}))
    if len(tags) > MAX_TAGS_PER_VERSION:
        raise InvalidInput(f"too many tags ({len(tags)}; at most {MAX_TAGS_PER_VERSION})")
    return tags


def parse_ttl(text: Any) -> float | None:
    """``30d`` -> seconds; ``none`` -> None (keep for good). Units s, m, h, d, w."""
    if text == NO_TTL or text is None:
        return None
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str) and (m := _TTL_RE.fullmatch(text.strip())):
        seconds = float(int(m.group(1)) * _UNIT_SECONDS[m.group(2)])
    else:
        raise InvalidInput(
            f"invalid time to live {text!r}: a number and a unit (s, m, h, d, w), e.g. 30d, "
            f"or '{NO_TTL}'"
        )
    if not 0 < seconds <= MAX_TTL_SECONDS:
        raise InvalidInput(
            f"invalid time to live {text!r}: more than 0 and at most 100 years (or '{NO_TTL}')"
        )
    return seconds


def edit_mode(mode: Any) -> str:
    if mode not in EDIT_MODES:
        raise InvalidInput(f"invalid edit mode {mode!r}: 'merge' or 'replace'")
    return str(mode)


def edited_metadata(current: dict[str, Any], change: dict[str, Any], mode: str) -> dict[str, Any]:
    """``merge``: top-level keys of ``change`` replace or add to ``current``'s, and a key
    set to null is removed (JSON merge patch, one level deep); ``replace``: ``change``."""
    if mode == REPLACE:
        return dict(change)
    out = dict(current)
    for key, value in change.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class MetaEdit:
    """One edit of a version's (or, with ``number`` None, an artifact's) editable fields:
    ``changes`` maps each changed field to ``[before, after]``."""

    edited: float
    editor: str
    changes: dict[str, list[Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"edited": self.edited, "editor": self.editor, "changes": self.changes}

    @classmethod
    def from_json(cls, d: Any) -> MetaEdit:
        try:
            changes = {str(k): list(v) for k, v in dict(d["changes"]).items()}
            return cls(float(d["edited"]), str(d["editor"]), changes)
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"malformed edit record: {e}") from None

    def changes_json(self) -> str:
        return json.dumps(self.changes, ensure_ascii=False, separators=(",", ":"))
