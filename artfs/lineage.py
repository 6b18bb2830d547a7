"""Lineage inputs of a commit, as typed references (pure: parsing and checks only).

A version records the versions it was made from (SPEC §1, "its lineage inputs"). The
committer names them as references (``p/a:v3``, ``p/a:best``, ``p/a`` for latest); the
registry resolves each to a concrete version *at commit time*, so moving an alias later
never rewrites history, and keeps that version's digest, so the lineage still says which
bytes were used after the input version is deleted.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from .errors import InvalidInput
from .models import HIDDEN_INPUT, VersionInfo
from .names import Ref, parse_ref

MAX_INPUTS = 1000  # inputs of one version


def parse_inputs(value: Any) -> list[Ref]:
    """Validate a list of reference strings (from a request body, a CLI, a setfattr)."""
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise InvalidInput("'inputs' must be a list of references like project/artifact:v3")
    if len(value) > MAX_INPUTS:
        raise InvalidInput(f"too many lineage inputs ({len(value)}; at most {MAX_INPUTS})")
    refs: list[Ref] = []
    for item in value:
        if not isinstance(item, str):
            raise InvalidInput(f"invalid lineage input {item!r}: expected a reference string")
        refs.append(parse_ref(item))
    return refs


def input_lists(inputs: Iterable[str], observed: Iterable[str]) -> dict[str, list[str]]:
    """A commit body's lineage: ``inputs`` (declared) and, if any, ``observed_inputs`` (what
    a mount saw the writers read; a server before schema 9 ignores the key)."""
    body = {"inputs": [str(ref) for ref in parse_inputs(list(inputs))]}
    seen = [str(ref) for ref in parse_inputs(list(observed))]
    if seen:
        body["observed_inputs"] = seen
    return body


def visible_lineage(info: VersionInfo, can_read: Callable[[str], bool]) -> VersionInfo:
    """``info`` as a reader who may read only the projects ``can_read`` accepts sees it:
    inputs in other projects become ``HIDDEN_INPUT`` (no project, artifact, number or
    digest: those would tell what another project holds; docs/api.md, "Isolation model")."""
    if all(i.hidden or can_read(i.project) for i in info.inputs):
        return info
    shown = tuple(i if i.hidden or can_read(i.project) else HIDDEN_INPUT for i in info.inputs)
    return dataclasses.replace(info, inputs=shown)


def add_input_option(parser: argparse.ArgumentParser) -> None:
    """``--input REF`` (repeatable), as ``artfs put`` and ``artfs commit`` spell lineage."""
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="REF",
        help="a version this one was made from, e.g. proj/data:v3 (lineage; repeatable)",
    )


def unique_in_order(items: list[Any]) -> list[Any]:
    """The items without repeats, first occurrence kept (resolved inputs, deduplicated)."""
    seen: set[Any] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
