"""The ``artfs`` command line (SPEC §3).

Each command is a small function over the client, the cache and the mount;
every failure becomes one line on stderr and a non-zero exit (``main``).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from . import config
from .cache.settings import CacheTuning
from .client import open_client
from .client.base import UNSET, Expect, RegistryClient
from .errors import ArtfsError, InvalidInput, NotFound
from .fs.siblings import SiblingTuning
from .lineage import add_input_option, parse_inputs
from .names import alias_name, parse_artifact_id, parse_ref, parse_version
from .progress import human_bytes
from .registry.stores import add_store_arguments

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


def cmd_serve(args: argparse.Namespace) -> int:
    import functools

    from .heap import freeze_startup_heap
    from .registry.stores import store_options
    from .server import auth_options, integrity_options, limit_options, run_server
    from .server.limits import return_freed_memory

    data = Path(args.data).expanduser().absolute()
    freeze_startup_heap()
    return_freed_memory()
    try:
        trio.run(
            functools.partial(
                run_server,
                data,
                args.host,
                args.port,
                args.blob_port,
                stores=store_options(args),
                auth=auth_options(args),
                limits=limit_options(args),
                integrity=integrity_options(args),
            )
        )
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise InvalidInput(
                f"cannot listen on {args.host}:{args.port} or its blob port: address in use "
                "(another artfs serve running? choose --port/--blob-port)"
            ) from None
        raise
    return 0


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def cmd_fsck(args: argparse.Namespace) -> int:
    """``artfs fsck``: re-hash the store on the server's host (registry/fsck.py); exit 1 when
    a blob is damaged or missing."""
    from .registry.fsck import Fsck, format_report
    from .registry.stores import open_registry

    def progress(message: str) -> None:
        print(f"artfs fsck: {message}", file=sys.stderr, flush=True)

    rate = config.parse_size(args.rate)
    registry = open_registry(
        Path(args.data).expanduser().absolute(),
        db=args.db,
        blobs=args.blobs,
        s3_endpoint=args.s3_endpoint,
        db_pool=args.db_pool,
    )
    try:
        report = Fsck(registry, rate=rate, progress=progress).run(dry_run=args.dry_run)
    finally:
        registry.close()
    print("\n".join(format_report(report)))
    return 0 if report.clean else 1


def cmd_token(args: argparse.Namespace) -> int:
    """``artfs token create|list|revoke``: on the server's host, straight on its metadata store."""
    from .auth import make_grants
    from .registry.stores import open_meta
    from .registry.tokens import Tokens

    meta = open_meta(Path(args.data).expanduser().absolute(), db=args.db)
    try:
        tokens = Tokens(meta)
        if args.token_cmd == "create":
            lifetime = config.parse_duration(args.expires) if args.expires else None
            grants = make_grants(args.read, args.write)
            info, secret = tokens.create(args.name, grants, lifetime=lifetime)
            print(secret)
            until = "" if info.expires is None else f", expires {_when(info.expires)}"
            print(
                f"created token {info.name!r} ({info.describe_grants()}{until}); this is the "
                "only time its secret is shown: give it to its user as ARTFS_TOKEN",
                file=sys.stderr,
            )
        elif args.token_cmd == "list":
            if args.json:
                print(json.dumps([t.to_json() for t in tokens.list()], indent=2))
            else:
                now = time.time()
                for t in tokens.list():
                    if t.revoked is not None:
                        state = f"revoked {_when(t.revoked)}"
                    elif t.expires is not None:
                        verb = "expired" if t.expired(now) else "active, expires"
                        state = f"{verb} {_when(t.expires)}"
                    else:
                        state = "active"
                    print(f"{t.name}\t{_when(t.created)}\t{state}\t{t.describe_grants()}")
        else:
            info = tokens.revoke(args.name)
            print(
                f"revoked token {info.name!r}; running servers refuse it within their "
                "--auth-ttl (default 5 s)",
                file=sys.stderr,
            )
    finally:
        meta.close()
    return 0


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def cmd_gc(args: argparse.Namespace) -> int:
    """``artfs gc``: on the server's host, straight on its stores (like ``artfs token``)."""
    from .registry.stores import open_registry

    grace = config.parse_duration(args.grace)

    def progress(message: str) -> None:
        print(f"artfs gc: {message}", file=sys.stderr, flush=True)

    registry = open_registry(
        Path(args.data).expanduser().absolute(),
        db=args.db,
        blobs=args.blobs,
        s3_endpoint=args.s3_endpoint,
        db_pool=args.db_pool,
        spend_reserve=not args.dry_run,  # marking blobs doomed must fit on a full disk
    )
    try:
        report = registry.gc(grace, dry_run=args.dry_run, progress=progress)
    finally:
        registry.close()
    kept = (
        f"{report.scanned} blob(s) scanned, {report.referenced} referenced by "
        f"{report.versions} live version(s), {report.young} younger than the grace "
        f"({_duration(grace)})"
    )
    uploads = (
        f"; {'would remove' if report.dry_run else 'removed'} {report.uploads} abandoned "
        f"upload(s), {human_bytes(report.uploads_bytes)}"
        if report.uploads
        else ""
    )
    if report.dry_run:
        for sha, size in report.doomed:
            print(f"{sha}\t{size}")
        print(
            f"dry run: would free {len(report.doomed)} blob(s), "
            f"{human_bytes(report.doomed_bytes)}; {kept}{uploads}; nothing changed"
        )
    else:
        resumed = (
            f"; finished {report.resumed} left by an interrupted run" if report.resumed else ""
        )
        print(
            f"freed {report.freed} blob(s), {human_bytes(report.freed_bytes)} in "
            f"{report.seconds:.1f} s; {kept}{resumed}{uploads}"
        )
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    from .publish import put_tree

    target = parse_artifact_id(args.artifact)
    source = Path(args.path)

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
        )
        v = result.version
        print(v.ref)
        if not result.created:
            # Bytes uploaded for an unchanged version repaired blobs the registry had lost.
            healed = f"; uploaded {human_bytes(uploaded)} it lacked" if uploaded else ""
            print(
                f"unchanged: content identical to {target}:latest, no new version made{healed}",
                file=sys.stderr,
            )
        else:
            print(
                f"{v.file_count} files, {human_bytes(v.total_size)}, uploaded {human_bytes(uploaded)}",
                file=sys.stderr,
            )
        return 0

    return trio.run(_with_client, args, run)


def cmd_ls(args: argparse.Namespace) -> int:
    async def run(client: RegistryClient) -> int:
        target: str | None = args.target
        if not target:
            for p in await client.list_projects():
                print(p.name)
            return 0
        if "/" not in target:
            for a in await client.list_artifacts(target):
                print(f"{a.name}\t{a.type}\t{len(a.versions)} versions")
            return 0
        ref = parse_ref(target, default_latest=False)
        if ref.version is None and ref.alias is None:
            art = await client.get_artifact(ref.project, ref.artifact)
            by_number: dict[int, list[str]] = {}
            for alias, n in art.aliases.items():
                by_number.setdefault(n, []).append(alias)
            for v in art.versions:
                names = ",".join(sorted(by_number.get(v.number, [])))
                bad = f"\tDAMAGED: {v.damaged} blob(s) (artfs fsck)" if v.damaged else ""
                print(
                    f"v{v.number}\t{v.file_count} files\t{human_bytes(v.total_size)}\t{names}{bad}"
                )
            return 0
        number = await _resolve_number(client, ref.project, ref.artifact, ref.selector)
        manifest = await client.get_manifest(ref.project, ref.artifact, number)
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
            print(f"{ref.project}/{ref.artifact}:{alias} -> v{number}")
        else:
            aid = parse_artifact_id(args.artifact)
            alias = alias_name(args.alias)
            await client.delete_alias(aid.project, aid.artifact, alias, expect=expect)
            print(f"removed {aid}:{alias}")
        return 0

    return trio.run(_with_client, args, run)


def _expect_number(text: str) -> int:
    n = parse_version(text)
    if n is None:
        raise InvalidInput(f"--expect takes vN or 'none', not {text!r}")
    return n


def cmd_info(args: argparse.Namespace) -> int:
    from .mountinfo import locate, mount_facts

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
            "created": info.created,
            "creator": info.creator,
            "description": info.description,
            "aliases": list(info.aliases),
            "metadata": info.metadata,
            "parent": info.parent,
            "inputs": [i.ref for i in info.inputs],
            "used_by": [
                u.ref for u in await client.used_by(ref.project, ref.artifact, info.number)
            ],
            "files": info.file_count,
            "size": info.total_size,
            "damaged": info.damaged,  # blobs the server found damaged or missing
        }
        if sub_path:
            manifest = await client.get_manifest(ref.project, ref.artifact, info.number)
            if sub_path in manifest:
                entry = manifest[sub_path]
                facts = {
                    "ref": info.ref,
                    "path": sub_path,
                    "size": entry.size,
                    "sha256": entry.sha256,
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
    from .download import download_version

    ref = parse_ref(args.ref)

    async def run(client: RegistryClient) -> int:
        count, size = await download_version(
            client,
            config.cache_dir_from(args.cache_dir),
            ref,
            Path(args.dest),
            cache_size=config.parse_size(args.cache_size) if args.cache_size else None,
        )
        print(f"{ref}: {count} files, {human_bytes(size)} -> {args.dest}", file=sys.stderr)
        return 0

    return trio.run(_with_client, args, run)


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
                f"{where}: {count} files, {human_bytes(size)} cached in {cache_dir}",
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
        print(f"cache:          {root}")
        print(f"complete blobs: {len(complete)} ({human_bytes(sum(e.held for e in complete))})")
        print(f"partial blobs:  {len(partial)} ({human_bytes(sum(e.held for e in partial))} held)")
        return 0
    to = config.parse_size(args.to) if args.to else 0
    freed, held = eviction.evict_to(layout, to)
    print(f"freed {human_bytes(freed)}; {human_bytes(held)} held (blobs open in a mount are kept)")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="artfs", description="Versioned artifact registry, mounted as a filesystem."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    s = sub.add_parser("serve", help="run the registry server")
    s.add_argument(
        "--data",
        default="./artfs-data",
        help="data directory (SQLite + blobs), default %(default)s",
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument(
        "--blob-port", type=int, default=None, help="port of the blob data server (default: PORT+1)"
    )
    add_store_arguments(s)
    from .server import add_auth_arguments, add_integrity_arguments, add_limit_arguments

    add_auth_arguments(s)
    add_limit_arguments(s)
    add_integrity_arguments(s)
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser(
        "token", help="manage access tokens (on the server's host, with its --data/--db)"
    )
    tsub = s.add_subparsers(dest="token_cmd", required=True)

    def with_store(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument(
            "--data",
            default="./artfs-data",
            help="the registry's data directory, as given to artfs serve (default %(default)s)",
        )
        sp.add_argument(
            "--db", default=None, help="the registry's database, as given to artfs serve --db"
        )
        return sp

    t = with_store(tsub.add_parser("create", help="create a token and print its secret once"))
    t.add_argument("name")
    t.add_argument(
        "--read",
        nargs="+",
        action="extend",
        default=[],
        metavar="PROJECT",
        help="projects it may read ('*': every project)",
    )
    t.add_argument(
        "--write",
        nargs="+",
        action="extend",
        default=[],
        metavar="PROJECT",
        help="projects it may read and write ('*': every project)",
    )
    t.add_argument(
        "--expires",
        metavar="DURATION",
        help="refuse the token this long from now, e.g. 90d, 12h (default: never)",
    )
    t.set_defaults(fn=cmd_token)
    t = with_store(tsub.add_parser("list", help="list tokens (never their secrets)"))
    t.add_argument("--json", action="store_true", help="print JSON records")
    t.set_defaults(fn=cmd_token)
    t = with_store(tsub.add_parser("revoke", help="revoke a token"))
    t.add_argument("name")
    t.set_defaults(fn=cmd_token)

    s = sub.add_parser(
        "gc",
        help="delete blobs no live version references (on the server's host, with the "
        "options given to artfs serve)",
    )
    s.add_argument(
        "--data",
        default="./artfs-data",
        help="the registry's data directory, as given to artfs serve (default %(default)s)",
    )
    add_store_arguments(s)
    s.add_argument(
        "--grace",
        default="1h",
        metavar="DURATION",
        help="keep unreferenced blobs younger than this (e.g. 90m, 2h, 1d; plain numbers are "
        "seconds); must exceed the longest upload-to-commit time; unfinished uploads idle this "
        "long are removed too (default %(default)s)",
    )
    s.add_argument(
        "--dry-run", action="store_true", help="list what would be freed; change nothing"
    )
    s.set_defaults(fn=cmd_gc)

    s = sub.add_parser(
        "fsck",
        help="re-hash every stored blob, quarantine damaged ones and report missing ones (on "
        "the server's host, with the options given to artfs serve)",
    )
    s.add_argument(
        "--data",
        default="./artfs-data",
        help="the registry's data directory, as given to artfs serve (default %(default)s)",
    )
    add_store_arguments(s)
    s.add_argument(
        "--rate",
        default="0",
        metavar="BYTES/S",
        help="re-hash at most this fast, e.g. 200M (default: no limit)",
    )
    s.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    s.set_defaults(fn=cmd_fsck)

    s = with_cache(with_registry(sub.add_parser("mount", help="mount the registry")))
    s.add_argument("mountpoint")
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
    s.add_argument("--debug", action="store_true", help="log every request")
    s.set_defaults(fn=cmd_mount)

    s = sub.add_parser("umount", help="unmount cleanly")
    s.add_argument("mountpoint")
    s.set_defaults(fn=cmd_umount)

    s = with_registry(sub.add_parser("put", help="publish a file or directory as a new version"))
    s.add_argument("path")
    s.add_argument("artifact", metavar="project/artifact")
    s.add_argument("--type", help="artifact type when it is created (default: dataset)")
    s.add_argument(
        "--alias",
        action="append",
        default=[],
        help="alias to point at the new version (repeatable)",
    )
    s.add_argument("--metadata", help="JSON object stored with the version")
    s.add_argument("--description")
    add_input_option(s)
    s.set_defaults(fn=cmd_put)

    s = with_cache(
        with_registry(sub.add_parser("get", help="download a version through the shared cache"))
    )
    s.add_argument("ref", metavar="REF")
    s.add_argument("dest")
    s.add_argument("--cache-size", help="bound the cache while downloading")
    s.set_defaults(fn=cmd_get)

    s = with_cache(with_registry(sub.add_parser("prefetch", help="fill the cache ahead of a job")))
    s.add_argument("targets", nargs="+", metavar="REF_OR_PATH", help="p/a[:v] or a path in a mount")
    s.set_defaults(fn=cmd_prefetch)

    s = with_registry(sub.add_parser("ls", help="list projects, artifacts, versions or files"))
    s.add_argument("target", nargs="?", metavar="p[/a[:v]]")
    s.set_defaults(fn=cmd_ls)

    s = sub.add_parser("alias", help="move or remove an alias")
    asub = s.add_subparsers(dest="alias_cmd", required=True)
    a = with_registry(asub.add_parser("set", help="point ALIAS at REF's version"))
    a.add_argument("ref", metavar="REF")
    a.add_argument("alias")
    a.add_argument(
        "--expect",
        help="only if the alias now points at this vN ('none': only if it does not exist)",
    )
    a.set_defaults(fn=cmd_alias)
    a = with_registry(asub.add_parser("rm", help="remove an alias"))
    a.add_argument("artifact", metavar="project/artifact")
    a.add_argument("alias")
    a.add_argument("--expect", help="only if the alias now points at this vN")
    a.set_defaults(fn=cmd_alias)

    s = with_cache(
        with_registry(sub.add_parser("info", help="facts about a reference or a path in a mount"))
    )
    s.add_argument("target", metavar="REF_OR_PATH")
    s.set_defaults(fn=cmd_info)

    from .drafts.cli_cmds import add_parsers as add_draft_parsers

    add_draft_parsers(sub, with_registry)

    s = sub.add_parser("cache", help="inspect or shrink the local cache")
    csub = s.add_subparsers(dest="cache_cmd", required=True)
    c = with_cache(csub.add_parser("stats"))
    c.set_defaults(fn=cmd_cache)
    c = with_cache(csub.add_parser("prune"))
    c.add_argument("--to", help="shrink to at most this size (default: evict everything not open)")
    c.set_defaults(fn=cmd_cache)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except ArtfsError as e:
        print(f"artfs {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        print(f"artfs {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
