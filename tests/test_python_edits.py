"""The Python API for what changes after a commit (issue 12): ``Registry.put(tags=, ttl=,
allow_duplicate=)``, ``Version.tags``/``expires``/``edit``/``tag``/``untag``/``set_ttl``/
``history``, against a real ``artfs serve`` in both configurations and a registry directory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import artfs
from tests.pyapi_helpers import Target, make_tree, private_dirs, target

__all__ = ["private_dirs", "target"]  # fixtures

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def reg(target: Target, tmp_path: Path) -> Iterator[artfs.Registry]:
    with artfs.Registry(target.location, cache_dir=tmp_path / "cache") as r:
        yield r


def test_python_edits_tags_ttl_and_dedupe(reg: artfs.Registry, tmp_path: Path) -> None:
    make_tree(tmp_path / "a", 1)
    make_tree(tmp_path / "b", 2)
    v0 = reg.put(tmp_path / "a", "py/m", tags=["nightly"], ttl="30d", metadata={"k": 1})
    assert v0.tags == ("nightly",)
    assert v0.expires is not None and v0.expires.timestamp() > time.time() + 29 * 86400
    reg.put(tmp_path / "b", "py/m")
    again = reg.put(tmp_path / "a", "py/m")  # identical to v0, not to latest
    assert again.ref == "py/m:v0"
    assert reg.put(tmp_path / "a", "py/m", allow_duplicate=True).ref == "py/m:v2"

    edited = v0.edit(metadata={"k": None, "j": 2}, description="better")
    assert edited.metadata == {"j": 2} and edited.description == "better"
    assert v0.metadata == {"k": 1}  # the old object keeps what it was
    assert edited.edit(metadata={"z": 0}, replace=True).metadata == {"z": 0}
    history = v0.history()
    assert [sorted(h["changes"]) for h in history] == [["description", "metadata"], ["metadata"]]
    assert history[0]["changes"]["metadata"] == [{"k": 1}, {"j": 2}]
    assert edited.read_bytes(edited.files()[0].path) == v0.read_bytes(v0.files()[0].path)

    assert v0.tag("best", "x") == ("best", "nightly", "x")
    assert v0.untag("x") == ("best", "nightly")
    assert reg.version("py/m:v0").tags == ("best", "nightly")
    assert v0.set_ttl(None) is None
    assert reg.version("py/m:v0").expires is None
    with pytest.raises(artfs.InvalidInput, match="invalid tag"):
        v0.tag("no spaces")
