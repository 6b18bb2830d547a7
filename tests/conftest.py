"""Shared fixtures. Server fixtures live in conftest_server.py, mount helpers in e2e.py."""

pytest_plugins = ["tests.conftest_server"]
