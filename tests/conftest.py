"""Shared fixtures. Server fixtures live in conftest_server.py, mount helpers in e2e.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.conftest_server"]


@pytest.fixture(scope="session", autouse=True)
def _private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Mounts started without ``--state-dir`` keep their drafts under ``$XDG_STATE_HOME``
    (config.state_dir_from): point it at the session's temporary directory, so the suite
    leaves nothing in the user's ~/.local/state (it left hundreds of directories there) and
    mount processes, which inherit the environment, agree with the tests."""
    old = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("XDG_STATE_HOME", None)
        else:
            os.environ["XDG_STATE_HOME"] = old


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> object:
    """A ``pytest.skip(reason)`` inside a trio test reaches pytest-trio (0.8) in an exception
    group, which it replaces with a bare ``pytest.skip()``: the summary then said
    "_pytest/python.py:187: Skipped" with neither the test nor the reason. Raise the test's own
    skip instead, so ``-rs`` shows where and why."""
    try:
        return (yield)
    except pytest.skip.Exception as bare:
        original = _only_skip(bare.__context__)
        if bare.msg or original is None:
            raise
        raise original from None


def _only_skip(exc: BaseException | None) -> BaseException | None:
    """The one skip in an exception group of exactly one leaf, else None."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, pytest.skip.Exception) else None
