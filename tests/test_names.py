"""SPEC §1 naming rules: projects, artifacts, aliases, references, paths inside a version."""

from __future__ import annotations

import pytest

from artfs.errors import InvalidInput
from artfs.names import (
    LATEST,
    alias_name,
    artifact_name,
    manifest_path,
    parse_artifact_id,
    parse_ref,
    parse_version,
    project_name,
)


@pytest.mark.parametrize("name", ["p", "P0", "0", "my-project", "a.b_c-d", "x" * 64])
def test_good_project_names(name: str) -> None:
    assert project_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-p", ".p", "_p", "x" * 65, "a/b", "a b", "a:b", "é", "p\x00", "..", ".", "a\nb", 5, None],
)
def test_bad_project_names(name: object) -> None:
    with pytest.raises(InvalidInput):
        project_name(name)  # type: ignore[arg-type]


def test_artifact_names_allow_128() -> None:
    assert artifact_name("a" * 128) == "a" * 128
    with pytest.raises(InvalidInput):
        artifact_name("a" * 129)
    for bad in ["", "-a", "a/b", "a:b", ".hidden", "a b"]:
        with pytest.raises(InvalidInput):
            artifact_name(bad)


@pytest.mark.parametrize(
    "alias",
    [
        "best",
        "production",
        "a" * 128,
        "v",
        "vx",
        "v1a",
        "x1",
        "a.b",
        "ü",
        "with space",
        "-dash",
        "V1",
    ],
)
def test_good_aliases(alias: str) -> None:
    assert alias_name(alias) == alias


@pytest.mark.parametrize(
    "alias",
    ["", "a" * 129, "a/b", "a:b", "a\x00b", ".", "..", "v0", "v1", "v12", "v007", 3, None],
)
def test_bad_aliases(alias: object) -> None:
    with pytest.raises(InvalidInput):
        alias_name(alias)  # type: ignore[arg-type]


def test_latest_is_a_name_only_the_registry_sets() -> None:
    with pytest.raises(InvalidInput):
        alias_name(LATEST)
    assert alias_name(LATEST, allow_latest=True) == LATEST


def test_parse_version() -> None:
    assert parse_version("v0") == 0
    assert parse_version("v12") == 12
    for text in ["v", "v01", "12", "V1", "v-1", "v1.0", "best"]:
        assert parse_version(text) is None


def test_parse_ref_forms() -> None:
    r = parse_ref("p/a")
    assert (r.project, r.artifact, r.version, r.alias) == ("p", "a", None, LATEST)
    assert str(r) == "p/a:latest"
    r = parse_ref("p/a:v3")
    assert (r.version, r.alias, r.selector) == (3, None, "v3")
    r = parse_ref("p/a:best")
    assert (r.version, r.alias) == (None, "best")
    assert parse_ref("p/a:latest").alias == LATEST
    assert str(parse_artifact_id("p/a")) == "p/a"


@pytest.mark.parametrize(
    "text",
    ["", "p", "/a", "p/", "p/a/b", "p/a:", "p/a:x/y", "../a", "p/..", "p/a:v01x:", "p/a:a:b"],
)
def test_bad_refs(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_ref(text)


def test_artifact_id_refuses_a_version() -> None:
    with pytest.raises(InvalidInput):
        parse_artifact_id("p/a:v1")


@pytest.mark.parametrize(
    "path",
    ["a", "a/b/c.txt", "ü/日本語.bin", "a b/c", ".hidden", "..a", "a..", "x" * 255, "é" * 127],
)
def test_good_paths(path: str) -> None:
    assert manifest_path(path) == tuple(path.split("/"))


@pytest.mark.parametrize(
    "path",
    [
        "",  # empty
        "/etc/passwd",  # absolute
        "../x",  # traversal
        "a/../../x",
        "a/..",
        "./a",  # '.'
        "a/./b",
        ".",
        "..",
        "a//b",  # empty component
        "a/",
        "/",
        "a\x00b",  # NUL
        "x" * 256,  # component over 255 bytes
        "a/" + "é" * 128,  # 256 bytes in UTF-8
        "bad\udcffsurrogate",  # not encodable as UTF-8
    ],
)
def test_bad_paths(path: str) -> None:
    with pytest.raises(InvalidInput):
        manifest_path(path)


def test_path_must_be_a_string() -> None:
    with pytest.raises(InvalidInput):
        manifest_path(b"a")  # type: ignore[arg-type]
