"""The ``artfs`` command line (SPEC §3).

Each command is a small function over the client, the cache and the mount;
every failure becomes one line on stderr and a non-zero exit (``main``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from . import __version__, cli_runs, config
from .cache.settings import CacheTuning
from .cli_admin import add_admin_parsers
from .cli_help import FILES_EPILOG, add_debug_options, describe_commands
from .cli_listing import artifact_json, print_json, print_tagged, print_versions
from .cli_meta import (
    add_alias_parsers,
    add_commit_options,
    commit_options,
    info_facts,
    unchanged_note,
)
from .cli_transfer import add_parsers as add_transfer_parsers
from .cli_transfer import get_options
from .client import open_client
from .client.base import UNSET, Expect, RegistryClient
from .errors import ArtfsError, InvalidInput, NotFound
from .fs.siblings import SiblingTuning
from .lineage import add_input_option, parse_inputs
from .models import OBSERVED
from .names import alias_name, parse_artifact_id, parse_ref, parse_version
from .observed import add_no_observed_option
from .progress import human_bytes, iso_time, plural
from .refs.cli import add_ref_option, file_ref_fact, ref_facts, ref_pairs
from .tagsearch import all_tagged
from .treescan import SYMLINK_POLICIES

# --------------------------------------------------------------------------- helpers


def _metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"--metadata is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidInput("--metadata must be a JSON object, e.g. '{\"epochs\": 3}'")
    return value


def _client(args: argparse.Namespace) -> RegistryClient:
    return open_client(config.registry_from(args.registry), timeout=args.timeout)


async def _with_client(
    args: argparse.Namespace, fn: Callable[[RegistryClient], Awaitable[int]]
) -> int:
    client = _client(args)
    try:
        return await fn(client)
    finally:
        await client.aclose()


async def _resolve_number(
    client: RegistryClient, project: str, artifact: str, selector: str
) -> int:
    number = parse_version(selector)
    if number is not None:
        return number
    return (await client.get_version(project, artifact, selector)).number


# --------------------------------------------------------------------------- commands


def cmd_put(args: argparse.Namespace) -> int:
    from .publish import put_tree

    target = parse_artifact_id(args.artifact)
    refs = ref_pairs(args)
    source = Path(args.path) if args.path else None

    async def run(client: RegistryClient) -> int:
        result, uploaded = await put_tree(
            client,
            source,
            target.project,
            target.artifact,
            type=args.type,
            aliases=tuple(alias_name(a) for a in args.alias),
            metadata=_metadata(args.metadata),
            description=args.description or "",
            creator=config.creator(),
            inputs=tuple(str(ref) for ref in parse_inputs(args.input)),
            refs=refs,
            **commit_options(args),
            allow_empty=args.allow_empty,
            symlinks=args.symlinks,
        )
        v = result.version
        print(v.ref)
        if not result.created:
            # Bytes uploaded for an unchanged version repaired blobs the registry had lost.
            healed = f"; uploaded {human_bytes(uploaded)} it lacked" if uploaded else ""
            print(unchanged_note(v.ref, healed), file=sys.stderr)
        else:
            print(
                f"{plural(v.file_count, 'file')}, {human_bytes(v.total_size)}, "
                f"uploaded {human_bytes(uploaded)}",
                file=sys.stderr,
            )
        return 0

    return trio.run(_with_client, args, run)


def cmd_ls(args: argparse.Namespace) -> int:
    if args.runs:
        return cli_runs.ls_runs(args, lambda: _client(args))

    async def run(client: RegistryClient) -> int:
        target: str | None = args.target
        if not target:
            projects = await client.list_projects()
            if args.json:
                print_json([{"name": p.name, "created": iso_time(p.created)} for p in projects])
                return 0
            for p in projects:
                print(p.name)
            return 0
        if "/" not in target and args.tag is not None:  # one request per page, not per artifact
            print_tagged([v async for v in all_tagged(client, target, args.tag)], args.json)
            return 0
        if "/" not in target:
            artifacts = await client.list_artifacts(target)
            if args.json:
                print_json([artifact_json(a) for a in artifacts])
                return 0
            for a in artifacts:
                print(f"{a.name}\t{a.type}\t{plural(len(a.versions), 'version')}")
            return 0
        ref = parse_ref(target, default_latest=False)
        if ref.version is None and ref.alias is None:
            art = await client.get_artifact(ref.project, ref.artifact)
            print_versions(art, args.json, args.tag)
            return 0
        number = await _resolve_number(client, ref.project, ref.artifact, ref.selector)
        manifest = await client.get_manifest(ref.project, ref.artifact, number)
        if args.json:
            print_json(
                [{"path": p, "size": e.size, "sha256": e.sha256} for p, e in manifest.items()]
            )
            return 0
        for path, entry in manifest.items():
            print(f"{entry.size}\t{path}")
        return 0

    return trio.run(_with_client, args, run)


def cmd_alias(args: argparse.Namespace) -> int:
    async def run(client: RegistryClient) -> int:
        expect: Expect = UNSET
        if args.expect is not None:
            expect = None if args.expect == "none" else _expect_number(args.expect)
        if args.alias_cmd == "set":
            ref = parse_ref(args.ref)
            alias = alias_name(args.alias)
            number = await _resolve_number(client, ref.project, ref.artifact, ref.selector)
            await client.set_alias(ref.project, ref.artifact, alias, number, expect=expect)
            print(f"{ref.project}/{ref.artifact}:{alias} -> {ref.project}/{ref.artifact}:v{number}")
        else:
            aid = parse_artifact_id(args.artifact)
            alias = alias_name(args.alias)
            await client.delete_alias(aid.project, aid.artifact, alias, expect=expect)
            print(f"removed {aid}:{alias}")
        return 0

    return trio.run(_with_client, args, run)


def cmd_lineage(args: argparse.Namespace) -> int:
    from .lineage_graph import hops
    from .lineage_render import RENDERERS, truncation_note

    up, down = hops(args.up, "--up"), hops(args.down, "--down")

    async def run(client: RegistryClient) -> int:
        ref = parse_ref(args.ref, default_latest=True)
        number = await _resolve_number(client, ref.project, ref.artifact, ref.selector)
        graph = await client.lineage(ref.project, ref.artifact, number, up=up, down=down)
        sys.stdout.write(RENDERERS[args.format](graph))
        note = truncation_note(graph)
        if note and args.format != "text":
            print(f"artfs: {note}", file=sys.stderr)
        return 0

    return trio.run(_with_client, args, run)


def _expect_number(text: str) -> int:
    n = parse_version(text)
    if n is None:
        raise InvalidInput(f"--expect takes vN or 'none', not {text!r}")
    return n


def cmd_info(args: argparse.Namespace) -> int:
    from .mountinfo import locate, mount_facts

    if args.run:
        return cli_runs.info_run(args, lambda: _client(args))
    if not args.target:
        raise InvalidInput("artfs info REF_OR_PATH (or --run RUN_ID)")
    target: str = args.target
    registry = config.registry_from(args.registry)
    sub_path = ""
    cache_dir = config.cache_dir_from(args.cache_dir)
    if os.path.exists(target):
        mount = mount_facts(Path(target))
        if mount is not None:
            print(json.dumps(mount, indent=2, ensure_ascii=False))
            return 0
        found = locate(Path(target))
        registry, ref_text, sub_path = found.registry, found.ref, found.sub_path
        cache_dir = found.cache_dir
    else:
        ref_text = target

    async def run(client: RegistryClient) -> int:
        ref = parse_ref(ref_text, default_latest=True)
        info = await client.get_version(ref.project, ref.artifact, ref.selector)
        facts: dict[str, Any] = {
            "ref": info.ref,
            "type": info.artifact_type,
            "digest": info.digest,
            "created": iso_time(info.created),
            "creator": info.creator,
            "description": info.description,
            "aliases": list(info.aliases),
            "metadata": info.metadata,
            "parent": None
            if info.parent is None
            else f"{ref.project}/{ref.artifact}:v{info.parent}",
            "inputs": [i.ref for i in info.inputs],
            "observed_inputs": [i.ref for i in info.inputs if i.kind == OBSERVED],
            "used_by": [
                u.ref for u in await client.used_by(ref.project, ref.artifact, info.number)
            ],
            "files": info.file_count,
            "size": info.total_size,
            "damaged": info.damaged,  # blobs the server found damaged or missing
            **await info_facts(client, info, args.history),  # tags, expiry, edits
        }
        if not sub_path:
            facts.update(await cli_runs.version_run_facts(client, info))
            facts.update(await ref_facts(client, ref.project, ref.artifact, info.number, args.json))
        else:
            manifest = await client.get_manifest(ref.project, ref.artifact, info.number)
            if sub_path in manifest:
                entry = manifest[sub_path]
                facts = {
                    "ref": info.ref,
                    "path": sub_path,
                    "size": entry.size,
                    "sha256": entry.sha256,
                    **file_ref_fact(manifest, entry.sha256),  # "external_ref": its URL
                    "cached": _cached_bytes(cache_dir, client, entry.sha256, entry.size),
                }
            else:
                prefix = sub_path + "/"
                inside = [e for p, e in manifest.items() if p.startswith(prefix)]
                if not inside:
                    raise NotFound(f"{sub_path!r} is not in {info.ref}")
                facts = {
                    "ref": info.ref,
                    "path": sub_path,
                    "files": len(inside),
                    "size": sum(e.size for e in inside),
                }
        print(json.dumps(facts, indent=2, ensure_ascii=False))
        return 0

    client = open_client(registry, timeout=args.timeout)

    async def main() -> int:
        try:
            return await run(client)
        finally:
            await client.aclose()

    return trio.run(main)


def _cached_bytes(cache_dir: Path, client: RegistryClient, sha256: str, size: int) -> int:
    from .cache.blobcache import BlobCache

    return BlobCache(cache_dir, client).cached_bytes(sha256, size)  # reads the layout only


def cmd_get(args: argparse.Namespace) -> int:
    from .cli_transfer import run_get

    return trio.run(_with_client, args, lambda client: run_get(client, args))


def cmd_prefetch(args: argparse.Namespace) -> int:
    from .download import prefetch
    from .mountinfo import locate

    jobs: list[tuple[str, Path, str, str]] = []  # registry, cache dir, ref, prefix
    for target in args.targets:
        if os.path.exists(target):
            found = locate(Path(target))
            jobs.append((found.registry, found.cache_dir, found.ref, found.sub_path))
        else:
            jobs.append(
                (
                    config.registry_from(args.registry),
                    config.cache_dir_from(args.cache_dir),
                    target,
                    "",
                )
            )

    async def run() -> int:
        for registry, cache_dir, ref_text, prefix in jobs:
            client = open_client(registry, timeout=args.timeout)
            try:
                count, size = await prefetch(client, cache_dir, parse_ref(ref_text), prefix)
            finally:
                await client.aclose()
            where = f"{ref_text}/{prefix}" if prefix else ref_text
            print(
                f"{where}: {plural(count, 'file')}, {human_bytes(size)} cached in {cache_dir}",
                file=sys.stderr,
            )
        return 0

    return trio.run(run)


def cmd_mount(args: argparse.Namespace) -> int:
    from .mounting import mount_command

    return mount_command(args)


def cmd_umount(args: argparse.Namespace) -> int:
    from .mounting import umount_command

    return umount_command(args)


def cmd_cache(args: argparse.Namespace) -> int:
    from .cache import eviction
    from .cache.layout import CacheLayout

    root = config.cache_dir_from(args.cache_dir)
    layout = CacheLayout(root)
    if args.cache_cmd == "stats":
        entries = eviction.scan(layout)
        complete = [e for e in entries if e.complete]
        partial = [e for e in entries if not e.complete]
        done, held = sum(e.held for e in complete), sum(e.held for e in partial)
        if args.json:
            print_json(
                {
                    "cache": str(root),
                    "complete_blobs": len(complete),
                    "complete_bytes": done,
                    "partial_blobs": len(partial),
                    "partial_bytes": held,
                }
            )
            return 0
        print(f"cache:          {root}")
        print(f"complete blobs: {len(complete)} ({human_bytes(done)})")
        print(f"partial blobs:  {len(partial)} ({human_bytes(held)} held)")
        return 0
    to = config.parse_size(args.to) if args.to else 0
    freed, held = eviction.evict_to(layout, to)
    print(f"freed {human_bytes(freed)}; {human_bytes(held)} held (blobs open in a mount are kept)")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="artfs",
        description="Versioned artifact registry, mounted as a filesystem.",
        epilog=FILES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"artfs {__version__}")
    sub = p.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="run 'artfs COMMAND --help'"
    )

    def with_registry(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument(
            "--registry",
            help="registry URL or local registry directory (default: $ARTFS_REGISTRY "
            f"or {config.DEFAULT_REGISTRY})",
        )
        sp.add_argument(
            "--timeout",
            type=float,
            default=config.DEFAULT_TIMEOUT,
            help="seconds before a registry call is given up (default %(default)s)",
        )
        return sp

    def with_cache(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument(
            "--cache-dir", help="cache directory (default: $ARTFS_CACHE_DIR or ~/.cache/artfs)"
        )
        return sp

    add_admin_parsers(sub)

    s = with_cache(with_registry(sub.add_parser("mount", help="mount the registry")))
    s.add_argument("mountpoint", help="an existing, empty directory")
    s.add_argument(
        "--nonempty",
        action="store_true",
        help="mount over a directory that has files (they are hidden while mounted)",
    )
    s.add_argument("--cache-size", help="bound the cache, e.g. 20G (default: unbounded)")
    s.add_argument(
        "--foreground", action="store_true", help="stay in the foreground (default: daemonize)"
    )
    s.add_argument(
        "--ttl",
        type=float,
        default=config.DEFAULT_TTL,
        help="seconds alias links and listings are trusted before re-asking (default %(default)s)",
    )
    s.add_argument("--xattrs", action="store_true", help="answer user.artfs.* extended attributes")
    s.add_argument("--allow-other", action="store_true", help="let other users see the mount")
    s.add_argument(
        "--dir-readahead",
        type=int,
        default=SiblingTuning().maximum,
        metavar="FILES",
        help="when files of a directory are opened in name order, prefetch up to this many "
        "next small files (0: off; default %(default)s)",
    )
    s.add_argument(
        "--random-fill",
        type=int,
        default=CacheTuning().random_fill_after,
        metavar="MISSES",
        help="after this many reads at random offsets of one file waited for the "
        "network, fetch the rest of that file in the background: e.g. 64 for a memory-mapped "
        "dataset sampled at random (files up to a quarter of --cache-size; default "
        "%(default)s: never, random reads move only their own 128 KiB blocks)",
    )
    s.add_argument(
        "--state-dir",
        help="where drafts live (default: one directory per mountpoint under "
        "$ARTFS_STATE_DIR or ~/.local/state/artfs/mounts)",
    )
    s.add_argument(
        "--no-passthrough",
        action="store_true",
        help="serve every read and write through the daemon, never FUSE passthrough (also "
        "ARTFS_PASSTHROUGH=0); by default cached blobs and draft files are read and written "
        "by the kernel itself where it allows (Linux >= 6.9, root)",
    )
    s.add_argument(
        "--log",
        metavar="FILE",
        help="where the daemon logs (default: mount-NAME.log under $XDG_RUNTIME_DIR/artfs-mounts "
        "or /tmp/artfs-UID; printed when mounted)",
    )
    s.add_argument("--debug", action="store_true", help="log every request")
    add_no_observed_option(s, "record no reads, so no commit through this mount has any")
    s.set_defaults(fn=cmd_mount)

    s = sub.add_parser("umount", help="unmount cleanly")
    s.add_argument("mountpoint", help="where the registry is mounted")
    s.set_defaults(fn=cmd_umount)

    s = with_registry(sub.add_parser("put", help="publish a file or directory as a new version"))
    s.add_argument("path", nargs="?", help="the file or directory to publish")
    s.add_argument("artifact", metavar="project/artifact", help="created with this version if new")
    add_ref_option(s)
    s.add_argument("--type", help="artifact type when it is created (default: dataset)")
    s.add_argument(
        "--alias",
        action="append",
        default=[],
        help="alias to point at the new version (repeatable)",
    )
    s.add_argument("--metadata", help="JSON object stored with the version")
    s.add_argument("--description", help="free text stored with the version")
    s.add_argument(
        "--allow-empty",
        action="store_true",
        help="publish a directory without files (refused by default: usually a wrong path)",
    )
    add_input_option(s)
    add_commit_options(s)
    s.add_argument(
        "--symlinks",
        choices=SYMLINK_POLICIES,
        default="keep",
        help="keep: store links as links (they must be relative and stay inside the tree; a "
        "link pointing outside is refused, naming it); follow: store what they point at; "
        "skip: leave them out (default: keep)",
    )
    s.set_defaults(fn=cmd_put)

    s = with_cache(
        with_registry(sub.add_parser("get", help="download a version through the shared cache"))
    )
    s.add_argument("ref", metavar="REF", help="project/artifact[:vN|:alias][/path/in/version]")
    s.add_argument("dest", help="where to write the version's files (or the one file)")
    s.add_argument("--cache-size", help="bound the cache while downloading")
    get_options(s)
    s.set_defaults(fn=cmd_get)

    s = with_cache(with_registry(sub.add_parser("prefetch", help="fill the cache ahead of a job")))
    s.add_argument("targets", nargs="+", metavar="REF_OR_PATH", help="p/a[:v] or a path in a mount")
    s.set_defaults(fn=cmd_prefetch)

    s = with_registry(sub.add_parser("ls", help="list projects, artifacts, versions or files"))
    s.add_argument(
        "target",
        nargs="?",
        metavar="p[/a[:v]]",
        help="nothing: projects; p: its artifacts; p/a: its versions; p/a:v: its files",
    )
    s.add_argument("--json", action="store_true", help="print JSON (times in ISO 8601)")
    cli_runs.add_ls_options(s)
    s.add_argument(
        "--tag",
        help="list only the versions with this tag (p/a: of the artifact; p: of every artifact)",
    )
    s.set_defaults(fn=cmd_ls)

    s = sub.add_parser("alias", help="move or remove an alias")
    asub = s.add_subparsers(
        dest="alias_cmd", required=True, metavar="{set,rm}", help="what to do with the alias"
    )
    a = with_registry(asub.add_parser("set", help="point ALIAS at REF's version"))
    a.add_argument("ref", metavar="REF", help="project/artifact:vN or :alias")
    a.add_argument("alias", help="the alias to create or move")
    a.add_argument(
        "--expect",
        help="only if the alias now points at this vN ('none': only if it does not exist)",
    )
    a.set_defaults(fn=cmd_alias)
    a = with_registry(asub.add_parser("rm", help="remove an alias"))
    a.add_argument("artifact", metavar="project/artifact", help="the alias's artifact")
    a.add_argument("alias", help="the alias to remove")
    a.add_argument("--expect", help="only if the alias now points at this vN")
    a.set_defaults(fn=cmd_alias)
    add_alias_parsers(asub, with_registry)

    s = with_cache(
        with_registry(sub.add_parser("info", help="facts about a reference or a path in a mount"))
    )
    s.add_argument(
        "target",
        nargs="?",
        metavar="REF_OR_PATH",
        help="project/artifact[:v], or a path in a mount (a mountpoint: the mount's facts)",
    )
    s.add_argument(
        "--json",
        action="store_true",
        help="full facts for machines (info always prints JSON; --json lists every "
        "external ref, with its size and sha256, not only the first 10)",
    )
    cli_runs.add_info_options(s)
    s.add_argument("--history", action="store_true", help="also every edit of it and its artifact")
    s.set_defaults(fn=cmd_info)

    s = with_registry(sub.add_parser("lineage", help="the inputs and consumers of a version"))
    s.add_argument("ref", metavar="REF", help="project/artifact[:vN|:alias] (default :latest)")
    for flag, what in (("--up", "inputs"), ("--down", "consumers")):
        s.add_argument(flag, metavar="N", help=f"hops of {what} to walk (default: all)")
    s.add_argument(
        "--format",
        choices=("text", "json", "dot", "mermaid"),
        default="text",
        help="output format (default %(default)s)",
    )
    s.set_defaults(fn=cmd_lineage)

    from .cli_meta import add_parsers as add_meta_parsers
    from .drafts.cli_cmds import add_parsers as add_draft_parsers
    from .wandb_cli import add_parsers as add_wandb_parsers

    add_draft_parsers(sub, with_registry)
    cli_runs.add_parsers(sub, with_registry)
    add_wandb_parsers(sub, with_registry, with_cache)
    add_meta_parsers(sub, with_registry)
    add_transfer_parsers(sub, with_registry)

    s = sub.add_parser(
        "cache",
        help="inspect or shrink the local cache",
        description="inspect or shrink the local cache: 'stats' counts its blobs and bytes, "
        "'prune' evicts the least recently used blobs",
    )
    csub = s.add_subparsers(
        dest="cache_cmd", required=True, metavar="{stats,prune}", help="what to do"
    )
    c = with_cache(csub.add_parser("stats", help="complete and partial blobs, and their bytes"))
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(fn=cmd_cache)
    c = with_cache(
        csub.add_parser("prune", help="evict least recently used blobs (open ones are kept)")
    )
    c.add_argument("--to", help="shrink to at most this size (default: evict everything not open)")
    c.set_defaults(fn=cmd_cache)
    describe_commands(p)
    return p


def first_error(exc: BaseException) -> BaseException:
    """The one failure to report from what a command raised: an exception group (trio
    nurseries, parallel downloads) is searched, without recursion, for an interrupt, then
    an artfs error, then an OS error; a group of unrelated failures reports its first."""
    leaves: list[BaseException] = []
    stack = [exc]
    while stack:
        current = stack.pop()
        if isinstance(current, BaseExceptionGroup):
            stack.extend(reversed(current.exceptions))
        else:
            leaves.append(current)
    for kind in (KeyboardInterrupt, ArtfsError, OSError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if leaves else exc


def error_line(exc: BaseException) -> str:
    """One line for any failure: artfs errors and OS errors say it themselves; anything
    else is a bug, named as such, with where to find more."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror}"  # not "[Errno 17] File exists: '...'"
    elif isinstance(exc, ArtfsError | OSError):
        text = str(exc)
    else:
        text = f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)"
    return " ".join(text.split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one command. The one place where a failure becomes a line on stderr (plus the
    traceback with ``--debug`` or ``ARTFS_DEBUG=1``) and exit status 1; ^C is 130."""
    parser = build_parser()
    add_debug_options(parser)
    args, extra = parser.parse_known_args(argv)
    if extra:  # the command's usage, not the top level's (parse_args reports them there)
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.fn(args))
    except BaseException as exc:
        leaf = first_error(exc)
        if isinstance(leaf, KeyboardInterrupt):
            return 130
        if isinstance(leaf, SystemExit) and leaf is exc:
            raise
        if getattr(args, "debug", False) or os.environ.get("ARTFS_DEBUG") == "1":
            traceback.print_exception(exc, file=sys.stderr)
        print(f"artfs {args.command}: {error_line(leaf)}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
