"""Manifests: every SPEC §1 path rule, the wire forms, and a stable digest."""

from __future__ import annotations

import hashlib
import json

import pytest

from artfs.errors import InvalidInput
from artfs.manifest import Manifest

SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()


def test_build_sorts_and_reports() -> None:
    m = Manifest.build([("z.txt", 1, SHA_A), ("a/b.txt", 1, SHA_B), ("a/a.txt", 1, SHA_A)])
    assert list(m) == ["a/a.txt", "a/b.txt", "z.txt"]
    assert len(m) == 3
    assert m.total_size == 3
    assert m.blobs() == {SHA_A: 1, SHA_B: 1}
    assert m["z.txt"].sha256 == SHA_A


def test_digest_is_stable_and_order_independent() -> None:
    entries = [("b", 1, SHA_B), ("a", 1, SHA_A)]
    m1 = Manifest.build(entries)
    m2 = Manifest.build(reversed(entries))
    assert m1.digest == m2.digest
    assert m1 == m2 and hash(m1) == hash(m2)
    # The canonical form is documented: "path NUL size NUL sha LF", sorted by path.
    canonical = f"a\x001\x00{SHA_A}\nb\x001\x00{SHA_B}\n".encode()
    assert m1.digest == hashlib.sha256(canonical).hexdigest()


def test_digest_changes_with_any_field() -> None:
    base = Manifest.build([("a", 1, SHA_A)]).digest
    assert Manifest.build([("b", 1, SHA_A)]).digest != base
    assert Manifest.build([("a", 2, SHA_A)]).digest != base
    assert Manifest.build([("a", 1, SHA_B)]).digest != base


def test_empty_manifest_is_allowed() -> None:
    m = Manifest.build([])
    assert len(m) == 0 and m.digest == hashlib.sha256(b"").hexdigest()


def test_json_round_trip_both_forms() -> None:
    m = Manifest.build([("d/x", 5, SHA_A), ("y", 0, SHA_B)])
    wire = json.loads(json.dumps(m.to_json()))
    assert Manifest.from_json(wire) == m
    assert Manifest.from_json(wire["files"]) == m
    mapping = {p: {"size": e.size, "sha256": e.sha256} for p, e in m.items()}
    assert Manifest.from_json(mapping) == m


@pytest.mark.parametrize(
    "path",
    [
        "/abs",
        "../up",
        "a/../b",
        "a/./b",
        ".",
        "..",
        "a//b",
        "a/",
        "",
        "a\x00b",
        "x" * 256,
        "d/" + "é" * 128,
        "\udcff",
    ],
)
def test_hostile_paths_refused(path: str) -> None:
    with pytest.raises(InvalidInput):
        Manifest.build([(path, 1, SHA_A)])


def test_duplicate_paths_refused() -> None:
    with pytest.raises(InvalidInput, match="duplicate"):
        Manifest.build([("a", 1, SHA_A), ("a", 1, SHA_A)])


@pytest.mark.parametrize(
    "entries",
    [
        [("a", 1, SHA_A), ("a/b", 1, SHA_B)],
        [("a/b/c", 1, SHA_A), ("a/b", 1, SHA_B)],
        [("x/y/z/w", 1, SHA_A), ("x", 1, SHA_B)],
    ],
)
def test_file_and_directory_conflicts_refused(entries: list[tuple[str, int, str]]) -> None:
    with pytest.raises(InvalidInput, match="conflict"):
        Manifest.build(entries)


def test_similar_prefixes_are_not_conflicts() -> None:
    Manifest.build([("a", 1, SHA_A), ("a.txt/b", 1, SHA_B), ("ab/c", 1, SHA_A), ("a-b", 1, SHA_A)])


@pytest.mark.parametrize("size", [-1, 1.5, "1", True, None])
def test_bad_sizes_refused(size: object) -> None:
    with pytest.raises(InvalidInput):
        Manifest.build([("a", size, SHA_A)])  # type: ignore[list-item]


@pytest.mark.parametrize("sha", ["", "abc", SHA_A.upper(), SHA_A[:-1] + "g", SHA_A + "0", None, 5])
def test_bad_digests_refused(sha: object) -> None:
    with pytest.raises(InvalidInput):
        Manifest.build([("a", 1, sha)])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "data",
    [
        None,
        "files",
        5,
        {"files": "x"},
        {"files": [["a", 1]]},
        {"files": [["a", 1, SHA_A, "extra"]]},
        {"files": [None]},
        {"a": {"size": 1}},
        {"a": 5},
    ],
)
def test_malformed_json_refused(data: object) -> None:
    with pytest.raises(InvalidInput):
        Manifest.from_json(data)
