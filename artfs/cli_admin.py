"""The commands that run on the registry's host, straight on its stores: ``serve``,
``token``, ``gc`` and ``fsck`` (the rest of ``artfs`` talks to a registry over its API: cli.py).

Split from cli.py along that seam: these commands take ``--data``/``--db`` and never a
``--registry``. Errors are raised, never printed: ``cli.main`` turns them into one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import config
from .progress import human_bytes, iso_time, plural
from .registry.stores import add_store_arguments
from .server import add_serve_arguments, serve_command


def _when(t: float) -> str:
    return iso_time(t)


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
            grants = make_grants(args.read, args.write, args.admin)
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
        f"{plural(report.scanned, 'blob')} scanned, {report.referenced} referenced by "
        f"{plural(report.versions, 'live version')}, {report.young} younger than the grace "
        f"({_duration(grace)})"
    )
    uploads = (
        f"; {'would remove' if report.dry_run else 'removed'} "
        f"{plural(report.uploads, 'abandoned upload')}, {human_bytes(report.uploads_bytes)}"
        if report.uploads
        else ""
    )
    if report.proofs:
        uploads += f"; forgot {plural(report.proofs, 'expired upload proof')}"
    for ref in report.expired:  # versions whose time to live passed (artfs ttl)
        print(f"{'would delete' if report.dry_run else 'deleted'} {ref}: its time to live passed")
    if report.dry_run:
        for sha, size in report.doomed:
            print(f"{sha}\t{size}")
        print(
            f"dry run: would free {plural(len(report.doomed), 'blob')}, "
            f"{human_bytes(report.doomed_bytes)}; {kept}{uploads}; nothing changed"
        )
    else:
        resumed = (
            f"; finished {report.resumed} left by an interrupted run" if report.resumed else ""
        )
        print(
            f"freed {plural(report.freed, 'blob')}, {human_bytes(report.freed_bytes)} in "
            f"{report.seconds:.1f} s; {kept}{resumed}{uploads}"
        )
    return 0


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


def _with_data(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--data``, with the default ``artfs serve`` has ($ARTFS_DATA or ./artfs-data)."""
    sp.add_argument(
        "--data",
        default=os.environ.get("ARTFS_DATA", "./artfs-data"),
        help="the registry's data directory, as given to artfs serve (default %(default)s)",
    )
    return sp


def _store_command(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A command that opens the registry's stores like ``artfs serve`` does."""
    sp = _with_data(sub.add_parser(name, help=help))
    add_store_arguments(sp)
    return sp


def add_admin_parsers(sub: Any) -> None:
    """Register ``serve``, ``token``, ``gc`` and ``fsck`` on ``artfs``'s subparsers."""
    s = sub.add_parser("serve", help="run the registry server")
    add_serve_arguments(s)
    s.set_defaults(fn=serve_command)

    s = sub.add_parser(
        "token", help="manage access tokens (on the server's host, with its --data/--db)"
    )
    tsub = s.add_subparsers(
        dest="token_cmd", required=True, metavar="{create,list,revoke}", help="what to do"
    )

    def with_store(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        _with_data(sp).add_argument(
            "--db", default=None, help="the registry's database, as given to artfs serve --db"
        )
        return sp

    t = with_store(tsub.add_parser("create", help="create a token and print its secret once"))
    t.add_argument("name", help="a name for the token (its user, a job)")
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
        "--admin",
        nargs="+",
        action="extend",
        default=[],
        metavar="PROJECT",
        help="projects it may write and where it may move or remove protected aliases",
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
    t.add_argument("name", help="the token's name, as listed")
    t.set_defaults(fn=cmd_token)

    s = _store_command(
        sub,
        "gc",
        "delete blobs no live version references (on the server's host, with the options "
        "given to artfs serve)",
    )
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

    s = _store_command(
        sub,
        "fsck",
        "re-hash every stored blob, quarantine damaged ones and report missing ones (on the "
        "server's host, with the options given to artfs serve)",
    )
    s.add_argument(
        "--rate",
        default="0",
        metavar="BYTES/S",
        help="re-hash at most this fast, e.g. 200M (default: no limit)",
    )
    s.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    s.set_defaults(fn=cmd_fsck)
