"""The public names of ``artfs`` (docs/python.md): adding or removing one is a decision."""

from __future__ import annotations

import artfs

EXPECTED = [
    "AlreadyExists",
    "ArtfsError",
    "Conflict",
    "Draft",
    "File",
    "Forbidden",
    "IntegrityError",
    "InvalidInput",
    "NotFound",
    "Registry",
    "Run",
    "Unauthorized",
    "Unavailable",
    "Version",
    "VersionFile",
    "__version__",
    "run",
]


def test_all_is_exactly_the_public_api() -> None:
    assert artfs.__all__ == EXPECTED
    for name in EXPECTED:
        assert hasattr(artfs, name), name
    public = {n for n in vars(artfs) if not n.startswith("_")} - {"api", "errors"}
    # submodules imported as a side effect are not API; every other public name is listed
    modules = {n for n in public if type(getattr(artfs, n)).__name__ == "module"}
    # (artfs.run is a function that shares its name with no module: artfs/api/run.py is
    # artfs.api.run, never artfs.run)
    assert public - modules == set(EXPECTED) - {"__version__"}


def test_errors_are_the_one_hierarchy() -> None:
    from artfs import errors

    for name in EXPECTED:
        obj = getattr(artfs, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert obj is getattr(errors, name)
            assert issubclass(obj, artfs.ArtfsError)


def test_version_is_the_package_version() -> None:
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert artfs.__version__ == pyproject["project"]["version"]
