"""``artfs edit``, ``artfs tag``, ``artfs ttl``, ``artfs alias protect|unprotect``, and the
options ``put`` and ``commit`` share for them (``--tag``, ``--ttl``, ``--allow-duplicate``):
what changes after a commit (issue 12). Wired into ``cli.py`` by one line each.

Every failure is an ``ArtfsError`` that ``cli.main`` prints as one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import trio

from . import config
from .client import open_client
from .client.base import RegistryClient
from .client.editing import editor_of
from .errors import InvalidInput
from .models import CommitResult, VersionInfo
from .names import parse_artifact_id, parse_ref
from .versionmeta import MERGE, REPLACE, parse_ttl, tag_name, tag_set

WithRegistry = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def iso(epoch: float | None) -> str | None:
    """``2026-12-05T01:02:03Z`` (None stays None): how the CLI shows times."""
    if epoch is None:
        return None
    return (
        datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def _run(args: argparse.Namespace, fn: Callable[[RegistryClient], Awaitable[int]]) -> int:
    async def main() -> int:
        client = open_client(config.registry_from(args.registry), timeout=args.timeout)
        try:
            return await fn(client)
        finally:
            await client.aclose()

    return trio.run(main)


async def _number(client: RegistryClient, text: str) -> tuple[str, str, int]:
    ref = parse_ref(text, default_latest=True)
    number = ref.version
    if number is None:
        number = (await client.get_version(ref.project, ref.artifact, ref.selector)).number
    return ref.project, ref.artifact, number


def _json_object(text: str, flag: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{flag} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{flag} must be a JSON object, e.g. '{{\"epochs\": 3}}'")
    return value


# --------------------------------------------------------------------------- put / commit options


def add_commit_options(parser: argparse.ArgumentParser) -> None:
    """``--tag``, ``--ttl``, ``--allow-duplicate`` on ``put`` and ``commit``."""
    parser.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="tag the version (repeatable)"
    )
    parser.add_argument(
        "--ttl",
        metavar="DURATION",
        help="let 'artfs gc' delete the version this long after, e.g. 30d, 12h, unless an "
        "alias other than latest holds it then (default: keep)",
    )
    parser.add_argument(
        "--allow-duplicate",
        action="store_true",
        help="make a new version even if a live one has exactly this content",
    )


def commit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``commit``/``put_tree`` for the options above, checked."""
    return {
        "tags": tag_set(args.tag),
        "ttl": parse_ttl(args.ttl) if args.ttl is not None else None,
        "allow_duplicate": bool(args.allow_duplicate),
    }


def unchanged_note(ref: str, healed: str = "") -> str:
    """What put and commit say when the content matched a live version (``ref``)."""
    return (
        f"unchanged: content identical to {ref}, no new version made{healed} "
        "(--allow-duplicate makes one)"
    )


def matched(result: CommitResult) -> str:
    return result.version.ref


# --------------------------------------------------------------------------- info


async def info_facts(client: RegistryClient, info: VersionInfo, history: bool) -> dict[str, Any]:
    """What ``artfs info`` adds about a version: tags, expiry, the artifact's own
    description, and (``--history``) every edit of the version and of the artifact."""
    art = await client.get_artifact(info.project, info.artifact)
    facts: dict[str, Any] = {
        "tags": list(info.tags),
        "expires": iso(info.expires),
        "artifact": {
            "type": art.type,
            "description": art.description,
            "protected_aliases": list(art.protected),
        },
    }
    if history:
        editor = editor_of(client)
        edits = await editor.edit_history(info.project, info.artifact, info.number)
        art_edits = await editor.edit_history(info.project, info.artifact, None)
        facts["history"] = [
            {"edited": iso(e.edited), "editor": e.editor, "changes": e.changes} for e in edits
        ]
        facts["artifact"]["history"] = [
            {"edited": iso(e.edited), "editor": e.editor, "changes": e.changes} for e in art_edits
        ]
    return facts


# --------------------------------------------------------------------------- commands


def cmd_edit(args: argparse.Namespace) -> int:
    """``artfs edit p/a:vN ...`` edits a version; ``artfs edit p/a ...`` (no ':') the artifact."""
    whole = ":" not in args.target
    if args.history:
        return _show_history(args, whole)
    if whole:
        if args.metadata is not None or args.replace:
            raise InvalidInput(
                "an artifact has a description and a type; --metadata edits a version "
                f"({args.target}:vN)"
            )
        if args.description is None and args.type is None:
            raise InvalidInput("nothing to change: give --description and/or --type")
    elif args.type is not None:
        raise InvalidInput(
            f"--type belongs to the artifact: artfs edit {args.target.split(':')[0]}"
        )
    elif args.description is None and args.metadata is None:
        raise InvalidInput("nothing to change: give --description and/or --metadata")
    metadata = None if args.metadata is None else _json_object(args.metadata, "--metadata")

    async def run(client: RegistryClient) -> int:
        editor = editor_of(client)
        if whole:
            aid = parse_artifact_id(args.target)
            art = await editor.edit_artifact(
                aid.project,
                aid.artifact,
                description=args.description,
                type=args.type,
                editor=config.creator(),
            )
            print(
                json.dumps({"artifact": str(aid), "type": art.type, "description": art.description})
            )
            return 0
        project, artifact, number = await _number(client, args.target)
        info = await editor.edit_version(
            project,
            artifact,
            number,
            description=args.description,
            metadata=metadata,
            mode=REPLACE if args.replace else MERGE,
            editor=config.creator(),
        )
        shown = {"ref": info.ref, "description": info.description, "metadata": info.metadata}
        print(json.dumps(shown, indent=2, ensure_ascii=False))
        return 0

    return _run(args, run)


def _show_history(args: argparse.Namespace, whole: bool) -> int:
    async def run(client: RegistryClient) -> int:
        if whole:
            aid = parse_artifact_id(args.target)
            project, artifact, number = aid.project, aid.artifact, None
        else:
            project, artifact, found = await _number(client, args.target)
            number = found
        edits = await editor_of(client).edit_history(project, artifact, number)
        for e in edits:
            changes = json.dumps(e.changes, ensure_ascii=False, sort_keys=True)
            print(f"{iso(e.edited)}\t{e.editor}\t{changes}")
        if not edits:
            print("no edits", file=sys.stderr)
        return 0

    return _run(args, run)


def cmd_tag(args: argparse.Namespace) -> int:
    tags = [tag_name(t) for t in args.tags]

    async def run(client: RegistryClient) -> int:
        project, artifact, number = await _number(client, args.ref)
        change = {"add": tags} if args.tag_cmd == "add" else {"remove": tags}
        now = await editor_of(client).change_tags(project, artifact, number, **change)
        print(f"{project}/{artifact}:v{number}\t{','.join(now)}")
        return 0

    return _run(args, run)


def cmd_ttl(args: argparse.Namespace) -> int:
    ttl = parse_ttl(args.duration)

    async def run(client: RegistryClient) -> int:
        project, artifact, number = await _number(client, args.ref)
        expires = await editor_of(client).set_ttl(project, artifact, number, ttl)
        when = "never (kept for good)" if expires is None else iso(expires)
        print(f"{project}/{artifact}:v{number} expires {when}")
        return 0

    return _run(args, run)


def cmd_protect(args: argparse.Namespace) -> int:
    aid = parse_artifact_id(args.artifact)
    protect = args.alias_cmd == "protect"

    async def run(client: RegistryClient) -> int:
        await editor_of(client).protect_alias(
            aid.project, aid.artifact, args.alias, protect=protect
        )
        print(f"{aid}:{args.alias} {'protected' if protect else 'no longer protected'}")
        return 0

    return _run(args, run)


async def delete_artifact(client: RegistryClient, target: str, force: bool) -> str:
    """``artfs delete p/a``: every version and the artifact."""
    aid = parse_artifact_id(target)
    count = await editor_of(client).delete_artifact(aid.project, aid.artifact, force=force)
    return f"{aid} ({count} version{'s' if count != 1 else ''})"


# --------------------------------------------------------------------------- parsers


def add_parsers(sub: Any, with_registry: WithRegistry) -> None:
    s = with_registry(
        sub.add_parser(
            "edit",
            help="change a version's description or metadata, or an artifact's (content never)",
            description="Edit p/a:vN (or :alias): --description, --metadata (merged into the "
            "version's, a null value removing a key; --replace replaces it). Edit p/a (no "
            "':'): the artifact's own --description and --type. Every edit is kept: "
            "--history shows them (also artfs info --history).",
        )
    )
    s.add_argument("target", metavar="p/a:vN|p/a", help="a version, or an artifact without ':'")
    s.add_argument("--description", help="the new description")
    s.add_argument("--metadata", metavar="JSON", help="a JSON object merged into the metadata")
    s.add_argument("--replace", action="store_true", help="--metadata replaces, not merges")
    s.add_argument("--type", help="the artifact's new type (artifact edits only)")
    s.add_argument("--history", action="store_true", help="show the edits instead")
    s.set_defaults(fn=cmd_edit)

    s = sub.add_parser("tag", help="add or remove tags of a version")
    tsub = s.add_subparsers(dest="tag_cmd", required=True, help="add or rm")
    for name, what in (("add", "add tags to"), ("rm", "remove tags from")):
        t = with_registry(tsub.add_parser(name, help=f"{what} REF's version"))
        t.add_argument("ref", metavar="REF", help="p/a:vN or p/a:alias")
        t.add_argument("tags", nargs="+", metavar="TAG", help="tag names ([A-Za-z0-9._+=-])")
        t.set_defaults(fn=cmd_tag)

    s = with_registry(
        sub.add_parser(
            "ttl",
            help="let artfs gc delete a version after a while (or keep it)",
            description="artfs gc deletes a version whose time to live has passed, unless an "
            "alias other than latest points at it then.",
        )
    )
    s.add_argument("ref", metavar="REF", help="p/a:vN or p/a:alias")
    s.add_argument("duration", metavar="DURATION|none", help="e.g. 30d, 12h, 90m; none: keep")
    s.set_defaults(fn=cmd_ttl)


def add_alias_parsers(asub: Any, with_registry: WithRegistry) -> None:
    """``artfs alias protect|unprotect`` (under ``artfs alias``)."""
    for name, what in (
        ("protect", "only admin tokens may then move or remove ALIAS"),
        ("unprotect", "let write tokens move ALIAS again"),
    ):
        a = with_registry(asub.add_parser(name, help=f"{what} (needs an admin token)"))
        a.add_argument("artifact", metavar="project/artifact", help="the artifact of the alias")
        a.add_argument("alias", help="the alias (e.g. production)")
        a.set_defaults(fn=cmd_protect)
