"""How ``artfs ls`` shows artifacts and versions: tab-separated lines for people (ISO 8601
times, counts with their noun, full references), or JSON with ``--json`` for programs.

Split from cli.py: the presentation of a listing, apart from fetching it."""

from __future__ import annotations

import json
import sys
from typing import Any

from .models import ArtifactInfo
from .progress import human_bytes, iso_time, plural
from .tagsearch import TaggedVersion


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def artifact_json(a: ArtifactInfo) -> dict[str, Any]:
    return {
        "artifact": f"{a.project}/{a.name}",
        "type": a.type,
        "description": a.description,
        "created": iso_time(a.created),
        "versions": len(a.versions),
        "aliases": {alias: f"{a.project}/{a.name}:v{n}" for alias, n in sorted(a.aliases.items())},
    }


def print_versions(art: ArtifactInfo, as_json: bool, tag: str | None = None) -> None:
    """``artfs ls p/a [--tag T]``: one line per version (with tag ``T`` only), its aliases
    and tags on it; an artifact without versions (all deleted, or left by an older
    registry) says so instead of printing nothing."""
    by_number: dict[int, list[str]] = {}
    for alias, n in art.aliases.items():
        by_number.setdefault(n, []).append(alias)
    versions = [v for v in art.versions if tag is None or tag in v.tags]
    if as_json:
        print_json(
            [
                {
                    "ref": f"{art.project}/{art.name}:v{v.number}",
                    "created": iso_time(v.created),
                    "files": v.file_count,
                    "size": v.total_size,
                    "aliases": sorted(by_number.get(v.number, [])),
                    "tags": list(v.tags),
                    "damaged": v.damaged,
                }
                for v in versions
            ]
        )
        return
    if not art.versions:
        print(f"{art.project}/{art.name} has no versions", file=sys.stderr)
    for v in versions:
        names = ",".join(sorted(by_number.get(v.number, [])))
        bad = f"\tDAMAGED: {plural(v.damaged, 'blob')} (artfs fsck)" if v.damaged else ""
        tags = f"\ttags: {','.join(v.tags)}" if v.tags else ""
        print(
            f"v{v.number}\t{iso_time(v.created)}\t{plural(v.file_count, 'file')}\t"
            f"{human_bytes(v.total_size)}\t{names}{tags}{bad}"
        )


def print_tagged(versions: list[TaggedVersion], as_json: bool) -> None:
    """``artfs ls p --tag T``: every version of the project with tag ``T``, by full ref."""
    if as_json:
        print_json(
            [
                {
                    "ref": v.ref,
                    "created": iso_time(v.summary.created),
                    "files": v.summary.file_count,
                    "size": v.summary.total_size,
                    "tags": list(v.summary.tags),
                    "damaged": v.summary.damaged,
                }
                for v in versions
            ]
        )
        return
    for v in versions:
        s = v.summary
        bad = f"\tDAMAGED: {plural(s.damaged, 'blob')} (artfs fsck)" if s.damaged else ""
        print(
            f"{v.ref}\t{iso_time(s.created)}\t{plural(s.file_count, 'file')}\t"
            f"{human_bytes(s.total_size)}\ttags: {','.join(s.tags)}{bad}"
        )
