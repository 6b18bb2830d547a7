"""How ``artfs commit`` asks the mount daemon to commit a draft, and hears back.

The daemon owns the draft, so the commit runs there. The request travels as
the value of ``setxattr user.artfs.commit`` on the draft directory (what the
SPEC offers to shell users too): a JSON object

    {"aliases": ["best"], "metadata": {...}, "description": "...", "type": "model",
     "inputs": ["proj/data:v3"], "observed": false, "request": "<32 hex digits>"}

every key optional (``observed``: record the versions the draft's writers read through
the mount as observed inputs, default true; ``artfs commit --no-observed-inputs``). ``setxattr`` returns when the commit is done (0 or an
errno). Since an errno cannot say which version was made or why a commit
failed, a request carrying a ``request`` id gets files in the daemon's state
directory, found by the CLI through the mount record:

    requests/<id>.progress.json   {"phase", "done", "total"}   (rewritten while working)
    requests/<id>.result.json     {"ok": true, "ref", "created", "uploaded", "recovered"}
                                  {"ok": false, "code", "message"}

written atomically (temp + rename); the CLI deletes them after reading, and the
daemon prunes any left older than a day. A plain ``setfattr`` without an id
works the same, without the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ArtfsError, InvalidInput
from ..lineage import parse_inputs
from ..names import alias_name
from ..versionmeta import parse_ttl, tag_set

COMMIT_XATTR = "user.artfs.commit"
TYPE_XATTR = "user.artfs.type"
MAX_VALUE = 64 * 1024  # the kernel's limit for one xattr value
_ID_RE = re.compile(r"[0-9a-f]{32}")
_KEYS = {
    "aliases",
    "metadata",
    "description",
    "type",
    "inputs",
    "request",
    "observed",
    "tags",
    "ttl",
    "allow_duplicate",
    "allow_empty",
}


@dataclass(frozen=True, slots=True)
class CommitRequest:
    aliases: tuple[str, ...] = ()
    metadata: dict[str, Any] | None = None
    description: str = ""
    type: str | None = None
    request: str | None = None
    inputs: tuple[str, ...] = ()  # lineage: references of the versions it was made from
    observed: bool = True  # add the inputs the mount observed (fs/observe.py)
    tags: tuple[str, ...] = ()
    ttl: float | None = None  # seconds: gc deletes the version then unless an alias holds it
    allow_duplicate: bool = False  # a new version even if a live one has the same content
    allow_empty: bool = False  # commit a draft with no files (refused by default)

    def encode(self) -> bytes:
        body: dict[str, Any] = {}
        if self.aliases:
            body["aliases"] = list(self.aliases)
        if self.metadata is not None:
            body["metadata"] = self.metadata
        if self.description:
            body["description"] = self.description
        if self.type:
            body["type"] = self.type
        if self.inputs:
            body["inputs"] = list(self.inputs)
        if not self.observed:
            body["observed"] = False
        if self.request:
            body["request"] = self.request
        if self.tags:
            body["tags"] = list(self.tags)
        if self.ttl is not None:
            body["ttl"] = self.ttl
        if self.allow_duplicate:
            body["allow_duplicate"] = True
        if self.allow_empty:
            body["allow_empty"] = True
        data = json.dumps(body, ensure_ascii=False).encode()
        if len(data) > MAX_VALUE:
            raise InvalidInput(f"commit request is {len(data)} bytes, over {MAX_VALUE}")
        return data

    @classmethod
    def parse(cls, value: bytes) -> CommitRequest:
        """Decode an xattr value; empty means 'commit with no options'."""
        text = value.decode("utf-8", errors="strict").strip() if value else ""
        if not text:
            return cls()
        try:
            body = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{COMMIT_XATTR} value is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise InvalidInput(f"{COMMIT_XATTR} value must be a JSON object")
        unknown = set(body) - _KEYS
        if unknown:
            raise InvalidInput(f"{COMMIT_XATTR}: unknown keys {sorted(unknown)}")
        aliases = body.get("aliases", [])
        if isinstance(aliases, str):
            aliases = [aliases]
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise InvalidInput(f"{COMMIT_XATTR}: 'aliases' must be a list of names")
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidInput(f"{COMMIT_XATTR}: 'metadata' must be a JSON object")
        description = body.get("description", "")
        type_ = body.get("type")
        request = body.get("request")
        if not isinstance(description, str):
            raise InvalidInput(f"{COMMIT_XATTR}: 'description' must be a string")
        if type_ is not None and (not isinstance(type_, str) or not type_):
            raise InvalidInput(f"{COMMIT_XATTR}: 'type' must be a non-empty string")
        if request is not None and (not isinstance(request, str) or not _ID_RE.fullmatch(request)):
            raise InvalidInput(f"{COMMIT_XATTR}: 'request' must be 32 hex digits")
        try:
            inputs = tuple(str(ref) for ref in parse_inputs(body.get("inputs")))
        except InvalidInput as e:
            raise InvalidInput(f"{COMMIT_XATTR}: {e}") from None
        observed = body.get("observed", True)
        if not isinstance(observed, bool):
            raise InvalidInput(f"{COMMIT_XATTR}: 'observed' must be true or false")
        try:
            tags = tag_set(body.get("tags", []))
            ttl = parse_ttl(body.get("ttl"))
        except InvalidInput as e:
            raise InvalidInput(f"{COMMIT_XATTR}: {e}") from None
        allow_duplicate = body.get("allow_duplicate", False)
        if not isinstance(allow_duplicate, bool):
            raise InvalidInput(f"{COMMIT_XATTR}: 'allow_duplicate' must be true or false")
        allow_empty = body.get("allow_empty", False)
        if not isinstance(allow_empty, bool):
            raise InvalidInput(f"{COMMIT_XATTR}: 'allow_empty' must be true or false")
        return cls(
            tuple(alias_name(a) for a in aliases),
            metadata,
            description,
            type_,
            request,
            inputs,
            observed,
            tags,
            ttl,
            allow_duplicate,
            allow_empty,
        )

    @staticmethod
    def request_id(value: bytes) -> str | None:
        """The request id of a value that may not parse otherwise (to report why it failed)."""
        try:
            body = json.loads(value.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        request = body.get("request") if isinstance(body, dict) else None
        return request if isinstance(request, str) and _ID_RE.fullmatch(request) else None


class RequestFiles:
    """The progress/result files of commit requests, under ``<state dir>/requests``."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "requests"

    def _path(self, request: str, kind: str) -> Path:
        if not _ID_RE.fullmatch(request):
            raise InvalidInput(f"invalid request id {request!r}")
        return self.dir / f"{request}.{kind}.json"

    def _write(self, path: Path, body: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(body))
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # progress/results are best effort; the errno still counts

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def write_progress(self, request: str, phase: str, done: int, total: int) -> None:
        self._write(self._path(request, "progress"), {"phase": phase, "done": done, "total": total})

    def read_progress(self, request: str) -> dict[str, Any] | None:
        return self._read(self._path(request, "progress"))

    def write_success(
        self, request: str, ref: str, created: bool, uploaded: int, recovered: bool
    ) -> None:
        self._write(
            self._path(request, "result"),
            {
                "ok": True,
                "ref": ref,
                "created": created,
                "uploaded": uploaded,
                "recovered": recovered,
            },
        )

    def write_failure(self, request: str, exc: ArtfsError) -> None:
        self._write(
            self._path(request, "result"), {"ok": False, "code": exc.code, "message": str(exc)}
        )

    def write_body(self, request: str, body: dict[str, Any]) -> None:
        """Another request's result (``artfs/observed.py``'s queries)."""
        self._write(self._path(request, "result"), body)

    def read_result(self, request: str) -> dict[str, Any] | None:
        return self._read(self._path(request, "result"))

    def _committed_path(self, draft: str) -> Path:
        return self.dir / f"committed-{hashlib.sha256(draft.encode()).hexdigest()[:32]}.json"

    def write_committed(self, draft: str, ref: str) -> None:
        """Remember that draft ``p/a/NAME`` became ``ref`` (for a day, like results): a second
        ``artfs commit`` of the vanished draft then says so instead of ENOENT."""
        self._write(self._committed_path(draft), {"draft": draft, "ref": ref, "at": time.time()})

    def read_committed(self, draft: str) -> dict[str, Any] | None:
        body = self._read(self._committed_path(draft))
        return body if body is not None and body.get("draft") == draft else None

    def remove(self, request: str) -> None:
        for kind in ("progress", "result"):
            try:
                self._path(request, kind).unlink()
            except OSError:
                pass

    def prune(self, max_age: float = 86400.0) -> None:
        cutoff = time.time() - max_age
        try:
            entries = list(os.scandir(self.dir))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except OSError:
                pass
