"""Property tests (hypothesis) for the pure core: names, paths inside versions, manifests.

Two kinds of property each: what is accepted round-trips and keeps every promise (a valid
relative POSIX path within the limits, the same manifest after encoding), and whatever is
refused is refused with ``InvalidInput`` (the hierarchy's error: a 400, EINVAL, one CLI
line), never with another exception. Example counts are modest (the ``artfs`` profile) so
the file runs in seconds; ``HYPOTHESIS_PROFILE=thorough`` runs 20x more.
"""

from __future__ import annotations

import os
import posixpath
from functools import partial
from pathlib import PurePosixPath
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from artfs.errors import InvalidInput
from artfs.manifest import Manifest
from artfs.names import (
    MAX_COMPONENT_BYTES,
    MAX_DEPTH,
    MAX_PATH_BYTES,
    Ref,
    alias_name,
    artifact_name,
    manifest_path,
    parse_artifact_id,
    parse_ref,
    parse_version,
    project_name,
    version_label,
)
from artfs.registry.core import decode_manifest, encode_manifest

settings.register_profile(
    "artfs", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "artfs"))

NAME_CHARS = "abcXYZ019._-"
projects = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
artifacts = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", fullmatch=True)
# Text that looks like what users type, plus the characters every rule is about.
texty = st.text(
    alphabet=st.one_of(st.sampled_from("/:.\x00v0123 -_aZ\\é"), st.characters()), max_size=80
)
aliases = st.text(
    alphabet=st.characters(blacklist_characters="/:\x00", blacklist_categories=["Cs"]),
    min_size=1,
    max_size=40,
).filter(lambda a: a not in (".", "..", "latest") and not a.isdigit())


def refused_or(fn: Any, value: Any) -> Any:
    """``fn(value)``, or None when refused: anything but InvalidInput fails the test."""
    try:
        return fn(value)
    except InvalidInput as e:
        assert str(e) and "\n" not in str(e)[:200]
        return None


# --------------------------------------------------------------------------- names


@given(texty)
def test_names_refuse_only_with_invalid_input(text: str) -> None:
    for fn in (project_name, artifact_name, alias_name, parse_ref, parse_artifact_id):
        result = refused_or(fn, text)
        if fn in (project_name, artifact_name, alias_name) and result is not None:
            assert result == text
    assert parse_version(text) is None or version_label(parse_version(text) or 0) == text


@given(projects, artifacts)
def test_valid_names_are_accepted(project: str, artifact: str) -> None:
    assert project_name(project) == project and artifact_name(artifact) == artifact


@given(projects, artifacts, st.one_of(st.integers(0, 10**12), aliases))
def test_references_round_trip(project: str, artifact: str, selector: int | str) -> None:
    if isinstance(selector, int):
        ref = Ref(project, artifact, version=selector)
    else:
        assume(refused_or(alias_name, selector) is not None)
        ref = Ref(project, artifact, alias=selector)
    text = str(ref)
    assert parse_ref(text) == ref
    assert str(parse_ref(text)) == text
    assert parse_artifact_id(f"{project}/{artifact}") == ref.artifact_id


@given(st.integers(0, 10**18))
def test_version_labels_round_trip(number: int) -> None:
    label = version_label(number)
    assert parse_version(label) == number
    assert refused_or(alias_name, label) is None  # a version label is never an alias


# --------------------------------------------------------------------------- paths

components = st.text(
    alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"]),
    min_size=1,
    max_size=30,
).filter(lambda c: c not in (".", ".."))
valid_paths = st.lists(components, min_size=1, max_size=8).map("/".join)
path_like = st.one_of(
    texty,
    valid_paths,
    st.lists(st.sampled_from(["a", "", ".", "..", "é", "x" * 256, "\x00", "b"]), max_size=6).map(
        "/".join
    ),
    st.builds(
        lambda n, w: "/".join(["d"] * n) + "/" + "y" * w, st.integers(0, 400), st.integers(0, 300)
    ),
)


def check_accepted_path(path: str, parts: tuple[str, ...], *, limits: bool = True) -> None:
    assert "/".join(parts) == path
    assert PurePosixPath(path).parts == parts  # nothing POSIX would read differently
    assert posixpath.normpath(path) == path  # already normal: no '.', '..', '//', no '/' end
    assert not path.startswith("/") and "\x00" not in path
    assert all(p not in ("", ".", "..") for p in parts)
    assert all(len(p.encode()) <= MAX_COMPONENT_BYTES for p in parts)
    joined = posixpath.normpath(posixpath.join("/version", path))
    assert joined.startswith("/version/")  # never outside its version
    if limits:
        assert len(path.encode()) <= MAX_PATH_BYTES and len(parts) <= MAX_DEPTH


@given(path_like)
def test_paths_are_accepted_whole_or_refused_with_invalid_input(path: str) -> None:
    parts = refused_or(manifest_path, path)
    loose = refused_or(lambda p: manifest_path(p, limits=False), path)
    if parts is not None:
        check_accepted_path(path, parts)
        assert loose == parts  # what a commit accepts, every reader accepts
    if loose is not None:
        check_accepted_path(path, loose, limits=False)


@given(valid_paths)
def test_valid_paths_are_accepted(path: str) -> None:
    assume(len(path.encode()) <= MAX_PATH_BYTES)
    assert manifest_path(path) == tuple(path.split("/"))


@given(st.integers(1, 3 * MAX_DEPTH), st.integers(1, 255))
def test_depth_and_length_limits(depth: int, width: int) -> None:
    path = "/".join(["a" * width] * depth)
    ok = depth <= MAX_DEPTH and len(path) <= MAX_PATH_BYTES
    assert (refused_or(manifest_path, path) is not None) == ok
    assert manifest_path(path, limits=False) == tuple(path.split("/"))


# --------------------------------------------------------------------------- manifests

shas = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
entries = st.dictionaries(valid_paths, st.tuples(st.integers(0, 2**50), shas), max_size=25)


def without_conflicts(files: dict[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    """Drop paths that are also a directory of another path (a file cannot be both)."""
    dirs = {p.rsplit("/", i)[0] for p in files for i in range(1, p.count("/") + 1)}
    return {p: e for p, e in files.items() if p not in dirs}


@given(entries, st.randoms(use_true_random=False))
def test_manifests_round_trip(files: dict[str, tuple[int, str]], rnd: Any) -> None:
    files = without_conflicts(files)
    items = [(p, size, sha) for p, (size, sha) in files.items()]
    manifest = Manifest.build(items)
    rnd.shuffle(items)
    assert Manifest.build(items).digest == manifest.digest  # order does not matter
    assert list(manifest) == sorted(files)
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest and dict(again.items()) == dict(manifest.items())
    stored = decode_manifest(encode_manifest(manifest), manifest.digest)
    assert dict(stored.items()) == dict(manifest.items()) and stored.digest == manifest.digest
    assert manifest.total_size == sum(size for size, _ in files.values())
    assert set(manifest.blobs()) == {sha for _, sha in files.values()}


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True),
        texty,
        shas,
        path_like,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.one_of(texty, path_like), inner, max_size=5)
    ),
    max_leaves=20,
)
entry_like = st.one_of(
    st.tuples(path_like, st.integers(-5, 10), st.one_of(shas, texty)).map(list),
    st.tuples(valid_paths, st.one_of(st.booleans(), st.floats(), texty, st.none()), shas).map(list),
    st.lists(json_values, max_size=4),
    json_values,
)
manifest_like = st.one_of(
    json_values,
    st.lists(entry_like, max_size=6),
    st.lists(entry_like, max_size=6).map(lambda files: {"files": files}),
    st.dictionaries(
        path_like,
        st.one_of(
            st.fixed_dictionaries({"size": st.integers(-1, 9), "sha256": shas}),
            json_values,
        ),
        max_size=5,
    ),
)


@given(manifest_like)
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_malformed_manifests_are_refused_with_invalid_input(data: Any) -> None:
    for limits in (True, False):
        manifest = refused_or(partial(Manifest.from_json, limits=limits), data)
        if manifest is not None:
            for path, entry in manifest.items():
                check_accepted_path(path, tuple(path.split("/")), limits=limits)
                assert isinstance(entry.size, int) and entry.size >= 0
                assert len(entry.sha256) == 64
            assert Manifest.from_json(manifest.to_json(), limits=limits) == manifest


@given(entries, st.sampled_from(["a", "a/b", "a/b/c"]))
def test_a_file_is_never_also_a_directory(files: dict[str, tuple[int, str]], path: str) -> None:
    items = [(p, s, h) for p, (s, h) in without_conflicts(files).items()]
    items = [(p, s, h) for p, s, h in items if p != path and not p.startswith(path + "/")]
    sha = "0" * 64
    conflicted = [*items, (path, 1, sha), (path + "/inner", 1, sha)]
    assert refused_or(Manifest.build, conflicted) is None
