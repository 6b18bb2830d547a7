"""Every command documents itself (issue 12, rough edges: help, usage, version).

The parser tree is walked, so a command added later without a description or an option
without a help line fails here."""

from __future__ import annotations

import argparse

import pytest

import artfs
from artfs.cli import build_parser
from artfs.cli_help import subcommands
from tests.e2e import run_cli

PARSERS = [("artfs", build_parser()), *subcommands(build_parser())]


@pytest.mark.parametrize(("name", "parser"), PARSERS, ids=[name for name, _ in PARSERS])
def test_every_command_has_a_description_and_every_argument_a_help_line(
    name: str, parser: argparse.ArgumentParser
) -> None:
    assert parser.description, f"'{name} --help' has no description"
    undocumented = [
        "/".join(a.option_strings) or a.dest
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction) and not a.help
    ]
    assert not undocumented, f"{name}: arguments without a help line: {undocumented}"


def test_the_walk_sees_nested_commands() -> None:
    names = {name for name, _ in PARSERS}
    assert {"cache stats", "cache prune", "alias set", "token list", "ls", "mount"} <= names


def test_cache_help_documents_stats_and_prune() -> None:
    out = run_cli("cache", "--help").stdout
    assert "stats" in out and "prune" in out
    assert "complete and partial blobs" in out and "evict" in out


def test_version() -> None:
    out = run_cli("--version").stdout
    assert out.strip() == f"artfs {artfs.__version__}"


def test_top_level_help_names_the_state_dir_and_the_mount_log() -> None:
    out = run_cli("--help").stdout
    assert "~/.local/state/artfs/mounts" in out and "mount-NAME.log" in out


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["ls", "ml/feats", "--bogus"], "usage: artfs ls "),
        (["alias", "set", "p/a:v0", "best", "--bogus"], "usage: artfs alias set "),
        (["cache", "stats", "--bogus"], "usage: artfs cache stats "),
    ],
)
def test_a_bad_option_prints_the_commands_usage(argv: list[str], usage: str) -> None:
    """Regression: `artfs ls ml/feats --bogus` printed the top-level usage."""
    r = run_cli(*argv, check=False)
    assert r.returncode == 2
    assert r.stderr.startswith(usage), r.stderr
    assert "unrecognized arguments: --bogus" in r.stderr
