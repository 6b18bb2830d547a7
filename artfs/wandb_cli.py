"""``artfs import wandb DIR project/artifact`` and ``artfs export wandb REF DIR``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from . import config
from .client.base import RegistryClient
from .progress import human_bytes, plural

Wrap = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def cmd_import_wandb(args: argparse.Namespace) -> int:
    from .cli import _metadata, _with_client
    from .names import alias_name, parse_artifact_id
    from .wandb_xfer import import_wandb

    target = parse_artifact_id(args.artifact)

    async def run(client: RegistryClient) -> int:
        done = await import_wandb(
            client,
            Path(args.dir),
            target.project,
            target.artifact,
            manifest_file=Path(args.manifest) if args.manifest else None,
            type=args.type,
            aliases=tuple(alias_name(a) for a in args.alias),
            metadata=_metadata(args.metadata),
            description=args.description or "",
            creator=config.creator(),
        )
        v = done.result.version
        print(v.ref)
        said = "new version" if done.result.created else "unchanged: identical to an existing one"
        print(
            f"{said}: {v.file_count} files, {human_bytes(v.total_size)}, every md5 checked"
            + (
                f" except {plural(done.unchecked, 'reference')} W&B gave no md5 for"
                if done.unchecked
                else ""
            )
            + f", uploaded {human_bytes(done.uploaded)}",
            file=sys.stderr,
        )
        return 0

    return trio.run(_with_client, args, run)


def cmd_export_wandb(args: argparse.Namespace) -> int:
    from .cli import _with_client
    from .names import parse_ref
    from .wandb_xfer import export_wandb

    ref = parse_ref(args.ref)

    async def run(client: RegistryClient) -> int:
        count, size = await export_wandb(
            client,
            config.cache_dir_from(args.cache_dir),
            ref,
            Path(args.dest),
            manifest_file=Path(args.manifest) if args.manifest else None,
        )
        print(f"{ref}: {count} files, {human_bytes(size)} -> {args.dest}", file=sys.stderr)
        return 0

    return trio.run(_with_client, args, run)


def add_parsers(sub: Any, with_registry: Wrap, with_cache: Wrap) -> None:
    """``import`` and ``export``, each with a ``wandb`` kind."""
    s = sub.add_parser("import", help="publish a directory another tool downloaded")
    kinds = s.add_subparsers(dest="kind", required=True, metavar="KIND", help="wandb")
    w = with_registry(
        kinds.add_parser(
            "wandb",
            help="a W&B artifact directory with its wandb_manifest.json",
            description="Publish a directory downloaded by the W&B SDK or CLI as a new "
            "version: every file's md5 is checked against wandb_manifest.json, references "
            "become artfs external refs (read once, md5 checked where W&B gives one), and "
            "the manifest's storage config and per-file 'extra' are kept in the metadata.",
        )
    )
    w.add_argument("dir", help="the downloaded artifact directory")
    w.add_argument("artifact", metavar="project/artifact", help="where to publish it")
    w.add_argument("--manifest", help="the W&B manifest (default: DIR/wandb_manifest.json)")
    w.add_argument("--type", help="artifact type when it is created (default: dataset)")
    w.add_argument("--alias", action="append", default=[], help="alias to set (repeatable)")
    w.add_argument("--metadata", help="JSON object merged into the version's metadata")
    w.add_argument("--description", help="the version's description")
    w.set_defaults(fn=cmd_import_wandb)

    s = sub.add_parser("export", help="write a version out in another tool's layout")
    kinds = s.add_subparsers(dest="kind", required=True, metavar="KIND", help="wandb")
    w = with_cache(
        with_registry(
            kinds.add_parser(
                "wandb",
                help="files plus a wandb_manifest.json W&B's SDK reads",
                description="Download a version through the shared cache into DEST (absent "
                "or empty) and write DEST/wandb_manifest.json: base64 md5 digests and sizes, "
                "external refs as W&B references, metadata kept at import restored.",
            )
        )
    )
    w.add_argument("ref", metavar="REF", help="project/artifact[:vN|:alias]")
    w.add_argument("dest", help="directory to write (absent or empty)")
    w.add_argument("--manifest", help="write the W&B manifest here instead of in DEST")
    w.set_defaults(fn=cmd_export_wandb)
