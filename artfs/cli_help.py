"""The help side of ``artfs``'s parser tree: the files it uses (the epilog of ``--help``),
a walk over every command, a description for each and ``--debug`` everywhere.

Split from cli.py: these walk the tree cli.build_parser makes, whatever its commands."""

from __future__ import annotations

import argparse

FILES_EPILOG = """\
files:
  cache       $ARTFS_CACHE_DIR, else $XDG_CACHE_HOME/artfs or ~/.cache/artfs
  drafts      one state directory per mountpoint under $ARTFS_STATE_DIR/mounts, else
              $XDG_STATE_HOME/artfs/mounts or ~/.local/state/artfs/mounts (mount --state-dir)
  mount log   $XDG_RUNTIME_DIR/artfs-mounts/mount-NAME.log, else /tmp/artfs-UID/mount-NAME.log
              (printed by artfs mount)"""


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (name, parser) below ``parser``, depth first: ``("alias set", ...)``."""
    found: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.append((name, child))
                found.extend((f"{name} {n}", c) for n, c in subcommands(child))
    return found


def describe_commands(parser: argparse.ArgumentParser) -> None:
    """Give each command's ``--help`` a description (its one-line help, unless it has a
    longer one) and remember its parser, so a bad option is answered with that command's
    usage (``main``), not the top level's."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                if child.description is None and helps.get(name):
                    child.description = helps[name]
                child.set_defaults(_parser=child)
                describe_commands(child)


def add_debug_options(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on every command that lacks one (``mount --debug`` also logs requests):
    the traceback of a failure, besides its one line. Walks the parser so a new command
    gets it without asking."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                add_debug_options(child)
            return
    if "--debug" not in parser._option_string_actions:
        parser.add_argument(
            "--debug", action="store_true", help="print the traceback of a failure too"
        )
