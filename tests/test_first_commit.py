"""An artifact is created by its first commit, in the commit's transaction (issue 12: a
failed ``artfs put`` left an artifact with 0 versions). Over SQLite and a local blob
directory, and over PostgreSQL and S3 (tests/backends.py), straight on the registry core."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from artfs.errors import InvalidInput, NotFound
from artfs.manifest import Manifest
from artfs.registry import Registry
from artfs.registry.blobs import store_bytes

from .backends import RegistrySpec, backend_params, make_spec


@pytest.fixture(params=backend_params())
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    spec: RegistrySpec = make_spec(request.param, tmp_path / "reg")
    r = spec.open()
    yield r
    r.close()


def manifest_of(reg: Registry, files: dict[str, bytes]) -> Manifest:
    return Manifest.build(
        (path, len(data), store_bytes(reg.blobs, data)) for path, data in files.items()
    )


def test_the_first_commit_creates_project_and_artifact(reg: Registry) -> None:
    result = reg.commit("p", "a", manifest_of(reg, {"f": b"x"}), create_type="model")
    assert result.created and result.version.ref == "p/a:v0"
    art = reg.get_artifact("p", "a")
    assert art.type == "model" and [v.number for v in art.versions] == [0]
    # Later commits to it keep its type, whatever create_type says.
    reg.commit("p", "a", manifest_of(reg, {"f": b"y"}), create_type="dataset")
    assert reg.get_artifact("p", "a").type == "model"


def test_without_create_type_a_missing_artifact_is_not_found(reg: Registry) -> None:
    with pytest.raises(NotFound):
        reg.commit("p", "a", manifest_of(reg, {"f": b"x"}))


@pytest.mark.parametrize("failure", ["missing blob", "unknown input", "unknown parent"])
def test_a_failed_first_commit_leaves_no_artifact_and_no_project(
    reg: Registry, failure: str
) -> None:
    manifest = manifest_of(reg, {"f": b"x"})
    kwargs: dict[str, object] = {}
    if failure == "missing blob":
        manifest = Manifest.build([("f", 1, "0" * 64)])
    elif failure == "unknown input":
        kwargs["inputs"] = ["other/thing:v0"]
    else:
        kwargs["parent"] = 5
    with pytest.raises((InvalidInput, NotFound)):
        reg.commit("p", "a", manifest, create_type="dataset", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        reg.get_artifact("p", "a")
    assert [p.name for p in reg.list_projects()] == []


def test_concurrent_first_commits_make_one_artifact(reg: Registry) -> None:
    manifests = [manifest_of(reg, {"f": bytes([i])}) for i in range(4)]
    errors: list[BaseException] = []

    def one(m: Manifest) -> None:
        try:
            reg.commit("p", "a", m, create_type="dataset")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(m,)) for m in manifests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(v.number for v in reg.get_artifact("p", "a").versions) == [0, 1, 2, 3]
