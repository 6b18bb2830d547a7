"""``artfs put --ref URL NAME`` (the option and its parsing) and what ``artfs info`` says
about refs (kept out of cli.py)."""

from __future__ import annotations

import argparse
from typing import Any

from ..client.base import RegistryClient
from ..client.http_refs import RefsHttp
from ..errors import InvalidInput
from ..manifest import Manifest
from .client import RefReadingClient
from .listing import SHOWN, from_manifest
from .model import REF_SUFFIX


def add_ref_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ref",
        nargs=2,
        action="append",
        default=[],
        metavar=("URL", "NAME"),
        help="add the file NAME whose bytes stay at URL (s3://, https://, http://, file://), "
        "read once now for its size and sha256 (repeatable; alone or with PATH). "
        f"A NAME{REF_SUFFIX} file under PATH holding a URL does the same",
    )


def ref_pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``(path, url)`` of every ``--ref``; a put with neither PATH nor refs is refused."""
    pairs = [(name, url) for url, name in args.ref]
    if not pairs and not args.path:
        raise InvalidInput("put needs a PATH to publish, or --ref URL NAME")
    return pairs


# --------------------------------------------------------------------------- info


async def ref_facts(
    client: RegistryClient, project: str, artifact: str, number: int, full: bool
) -> dict[str, Any]:
    """What ``artfs info`` says about a version's external refs: ``count``, and ``files``
    with each one's path, URL, size and sha256: the first ``listing.SHOWN`` by path (``more``:
    how many were left out) unless ``full`` (``--json``: every one). Over HTTP the server
    answers from the stored manifest (``GET .../versions/N/refs``); other clients read the
    manifest itself."""
    limit = None if full else SHOWN
    inner = client.inner if isinstance(client, RefReadingClient) else client
    if isinstance(inner, RefsHttp):
        return {"external_refs": await inner.version_refs(project, artifact, number, limit)}
    manifest = await client.get_manifest(project, artifact, number)
    return {"external_refs": from_manifest(manifest, limit)}


def file_ref_fact(manifest: Manifest, sha256: str) -> dict[str, str]:
    """``{"external_ref": URL}`` for ``artfs info`` of one file that is an external ref."""
    ref = manifest.refs.get(sha256)
    return {} if ref is None else {"external_ref": ref.url}
