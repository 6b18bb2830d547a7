"""``artfs put --ref URL NAME``: the option and its parsing (kept out of cli.py)."""

from __future__ import annotations

import argparse

from ..errors import InvalidInput
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
