"""``artfs get`` (one file, a subtree, ``--merge``, ``--link``) and ``artfs verify``.

``get``'s parser stays in ``cli.py``; what it does with a path inside a version and the
new options is here, with ``verify``, which compares a local directory with a version
(``verify.py``) and exits 1 when they differ.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from . import config
from .client import open_client
from .client.base import RegistryClient
from .names import Ref, manifest_path, parse_ref
from .progress import human_bytes, plural

Wrap = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def split_ref_path(text: str) -> tuple[Ref, str]:
    """``p/a:v3/path/in/version`` -> (``p/a:v3``, ``path/in/version``). A path needs the
    ``:selector`` (``p/a/x`` would be ambiguous); ``p/a`` and ``p/a:sel`` have none."""
    head, colon, rest = text.partition(":")
    if not colon:
        return parse_ref(text), ""
    selector, _, path = rest.partition("/")
    path = path.strip("/")
    if path:
        manifest_path(path, limits=False)
    return parse_ref(f"{head}:{selector}"), path


def get_options(s: argparse.ArgumentParser) -> None:
    """The options ``cli.py``'s ``get`` parser adds from here."""
    s.add_argument(
        "--merge",
        action="store_true",
        help="write into an existing non-empty directory (files of the same name are replaced, "
        "others kept)",
    )
    s.add_argument(
        "--link",
        action="store_true",
        help="share the cache's bytes instead of copying: a reflink where the filesystem can "
        "(btrfs, XFS), else a read-only hard link to the cache file, which the cache then "
        "never evicts until you delete the copy (do not modify such files; see docs/python.md)",
    )


async def run_get(client: RegistryClient, args: argparse.Namespace) -> int:
    from .download import download_version

    ref, path = split_ref_path(args.ref)
    report = await download_version(
        client,
        config.cache_dir_from(args.cache_dir),
        ref,
        Path(args.dest),
        cache_size=config.parse_size(args.cache_size) if args.cache_size else None,
        prefix=path,
        merge=args.merge,
        link=args.link,
    )
    what = f"{ref}/{path}" if path else str(ref)
    line = f"{what}: {plural(report.files, 'file')}, {human_bytes(report.size)} -> {args.dest}"
    if args.link:
        line += (
            f" ({report.reflinked} reflinked, {report.hardlinked} hard-linked read-only, "
            f"{report.copied} copied)"
        )
    print(line, file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .download import resolve_manifest, select_tree
    from .verify import compare

    ref, path = split_ref_path(args.ref)

    async def run() -> int:
        client = open_client(config.registry_from(args.registry), timeout=args.timeout)
        try:
            number, manifest = await resolve_manifest(client, ref)
        finally:
            await client.aclose()
        report = await trio.to_thread.run_sync(compare, Path(args.dir), select_tree(manifest, path))
        shown = f"{ref.project}/{ref.artifact}:v{number}" + (f"/{path}" if path else "")
        for line in report.problems():
            print(line)
        if report.ok:
            print(f"{args.dir} matches {shown} ({report.checked} entries)", file=sys.stderr)
            return 0
        print(
            f"{args.dir} differs from {shown}: {len(report.missing)} missing, "
            f"{len(report.extra)} extra, {len(report.changed)} changed",
            file=sys.stderr,
        )
        return 1

    return trio.run(run)


def add_parsers(sub: Any, with_registry: Wrap) -> None:
    s = with_registry(
        sub.add_parser(
            "verify",
            help="check that a directory holds exactly a version (exit 1 if not)",
            description="Compare DIR with a version (or the part a path in it names): every "
            "file hashed, executable bits, symlinks and empty directories. Prints one line "
            "per difference (missing, extra, changed) and exits 1 if there is any.",
        )
    )
    s.add_argument("dir", metavar="DIR", help="the local directory to check")
    s.add_argument("ref", metavar="REF", help="project/artifact[:vN|:alias][/path/in/version]")
    s.set_defaults(fn=cmd_verify)
