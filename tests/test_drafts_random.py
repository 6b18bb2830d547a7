"""The same seeded sequence of file operations on a draft and on a local directory.

After every step both trees (names, kinds, bytes) must be equal, and an operation
that fails must fail on both sides with the same errno. The draft store is also
reopened now and then, to check that what is on disk is the same tree.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from artfs.drafts.model import DraftKey
from artfs.drafts.store import DraftStore
from artfs.errors import ArtfsError

from .drafts_helpers import PathDraft, local_tree

NAMES = ["a", "b", "c", "d"]
STEPS = 400


def _outcome(fn: Callable[[], None]) -> int:
    """0 on success, else the errno of the failure (artfs errors carry theirs)."""
    try:
        fn()
    except ArtfsError as e:
        return e.errno
    except OSError as e:
        assert e.errno is not None
        return e.errno
    return 0


def _local_write(root: Path, path: str, data: bytes, offset: int) -> None:
    fd = os.open(root / path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Step:
    op: str
    path: str
    other: str
    data: bytes
    offset: int
    size: int


def _on_draft(d: PathDraft, s: Step) -> None:
    if s.op == "create":
        d.write(s.path, s.data, 0)
    elif s.op == "write":
        d.write(s.path, s.data, s.offset)
    elif s.op == "truncate":
        d.truncate(s.path, s.size)
    elif s.op == "rename":
        d.rename(s.path, s.other)
    elif s.op == "unlink":
        d.unlink(s.path)
    elif s.op == "mkdir":
        d.mkdir(s.path)
    else:
        d.rmdir(s.path)


def _on_local(root: Path, s: Step) -> None:
    if s.op == "create":
        _local_write(root, s.path, s.data, 0)
    elif s.op == "write":
        _local_write(root, s.path, s.data, s.offset)
    elif s.op == "truncate":
        os.truncate(root / s.path, s.size)
    elif s.op == "rename":
        os.rename(root / s.path, root / s.other)
    elif s.op == "unlink":
        os.unlink(root / s.path)
    elif s.op == "mkdir":
        os.mkdir(root / s.path)
    else:
        os.rmdir(root / s.path)


def _random_path(rng: random.Random, known: list[str]) -> str:
    if known and rng.random() < 0.6:
        base = rng.choice(known)
        if rng.random() < 0.5:
            return base
        return f"{base}/{rng.choice(NAMES)}"
    depth = rng.randint(1, 3)
    return "/".join(rng.choice(NAMES) for _ in range(depth))


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_same_operations_same_tree(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    local = tmp_path / "local"
    local.mkdir()
    state = tmp_path / "state"
    store = DraftStore(state)
    d = PathDraft(store, store.create_draft(DraftKey("r", "p", "a", "draft")))
    counts: dict[str, list[int]] = {}
    try:
        for step in range(STEPS):
            known = sorted(local_tree(str(local)))
            op = rng.choice(["create", "write", "truncate", "rename", "unlink", "mkdir", "rmdir"])
            path = _random_path(rng, known)
            data = rng.randbytes(rng.randint(0, 5000))
            offset = rng.randint(0, 6000)
            size = rng.randint(0, 8000)
            other = _random_path(rng, known)
            step_args = Step(op, path, other, data, offset, size)
            expected = _outcome(lambda: _on_local(local, step_args))  # noqa: B023
            got = _outcome(lambda: _on_draft(d, step_args))  # noqa: B023
            where = f"seed {seed} step {step}: {op} {path} {other if op == 'rename' else ''}"
            assert got == expected, f"{where}: errno {got} in the draft, {expected} locally"
            counts.setdefault(op, []).append(got)
            assert d.tree() == local_tree(str(local)), where
            if step % 97 == 96:  # reopen: the state on disk is the same tree
                store.close()
                store = DraftStore(state)
                d = PathDraft(store, store.drafts()[0])
                assert d.tree() == local_tree(str(local)), f"{where} (after reopening)"
    finally:
        store.close()
    # the sequence exercised both successes and failures of the interesting operations
    for op in ("rename", "rmdir", "write", "truncate"):
        assert 0 in counts[op] and any(counts[op]), op
