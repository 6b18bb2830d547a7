"""One line per error from every CLI command (issue 10 item 8).

Every command of the parser (enumerated, so a new command is covered without editing this
file, or fails here until it gets a scenario) runs against bad input, and each command that
talks to a registry also against a dead one (connection refused) and a hung one (a socket
that accepts and never answers, with a short ``--timeout``). Each time: exit status 1,
stderr exactly one line ``artfs COMMAND: ...``, no traceback; with ``--debug`` the
traceback too. And the regression: ``artfs get`` failing in the middle of a download
printed a 60-line traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from artfs.cli import add_debug_options, build_parser
from artfs.drafts.store import DraftStore
from tests.e2e import Server, free_port, run_cli


def leaf_commands() -> list[tuple[str, ...]]:
    """Every runnable command of ``artfs``, e.g. ('ls',), ('alias', 'set')."""
    found: list[tuple[str, ...]] = []
    stack: list[tuple[tuple[str, ...], argparse.ArgumentParser]] = [((), build_parser())]
    while stack:
        path, parser = stack.pop()
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found.append(path)
            continue
        for name, child in subs[0].choices.items():
            stack.append(((*path, name), child))
    return sorted(found)


def takes_registry(command: tuple[str, ...]) -> bool:
    parser = build_parser()
    for name in command:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return "--registry" in parser._option_string_actions


COMMANDS = leaf_commands()

# Arguments after the command name. {file}: a regular file; {missing}: a path that does not
# exist; {dest}: a fresh directory path; {state}: a fresh state directory; {long}: a file
# name over 255 bytes; {dead}: a registry URL nothing listens on; {wandb}: a W&B download.
BAD_INPUT: dict[tuple[str, ...], list[str]] = {
    ("serve",): ["--data", "{file}", "--port", "0", "--blob-port", "0"],
    ("token", "create"): ["n", "--write", "p", "--data", "{file}"],
    ("token", "list"): ["--data", "{file}"],
    ("token", "revoke"): ["n", "--data", "{file}"],
    ("gc",): ["--data", "{file}"],
    ("fsck",): ["--data", "{file}", "--rate", "fast"],
    ("mount",): ["--registry", "{dead}", "{missing}"],
    ("umount",): ["{missing}"],
    ("cache", "stats"): ["--cache-dir", "{long}"],
    ("cache", "prune"): ["--to", "many"],
    ("commit",): ["{missing}/p/a/draft"],
    ("put",): ["{file}", "no-slash"],
    ("get",): ["no-slash", "{dest}"],
    ("verify",): ["{dest}", "no-slash"],
    ("prefetch",): ["p/a:v0x"],
    ("ls",): ["p/a:"],
    ("alias", "set"): ["p/a:v1", "v2"],
    ("alias", "rm"): ["p/a", "latest"],
    ("info",): ["p/a/b"],
    ("lineage",): ["p/a:v1", "--up", "-1"],
    ("draft",): ["--state-dir", "{state}", "p", "d1"],
    ("delete",): ["p"],
    ("run",): ["p/r", "--config", "[1]", "--", "true"],
    ("import", "wandb"): ["{missing}", "p/a"],
    ("export", "wandb"): ["no-slash", "{dest}"],
    ("edit",): ["p/a:v0"],
    ("tag", "add"): ["p/a:v0", "a,b"],
    ("tag", "rm"): ["p/a:v0", ",x"],
    ("ttl",): ["p/a:v0", "soon"],
    ("alias", "protect"): ["p/a:b", "x"],
    ("alias", "unprotect"): ["p", "x"],
}

# Commands that reach the registry with these arguments (plus --registry URL).
REMOTE: dict[tuple[str, ...], list[str]] = {
    ("put",): ["{file}", "p/a"],
    ("get",): ["p/a", "{dest}"],
    ("verify",): ["{dest}", "p/a"],
    ("prefetch",): ["p/a"],
    ("ls",): ["p/a"],
    ("alias", "set"): ["p/a:v1", "best"],
    ("alias", "rm"): ["p/a", "best"],
    ("info",): ["p/a"],
    ("lineage",): ["p/a:v1"],
    ("draft",): ["--state-dir", "{state}", "p/a", "d1"],
    ("delete",): ["p/a:v1"],
    ("run",): ["p/r", "--", "true"],
    ("import", "wandb"): ["{wandb}", "p/a"],
    ("export", "wandb"): ["p/a", "{dest}"],
    ("edit",): ["p/a:v1", "--description", "x"],
    ("tag", "add"): ["p/a:v1", "x"],
    ("tag", "rm"): ["p/a:v1", "x"],
    ("ttl",): ["p/a:v1", "1d"],
    ("alias", "protect"): ["p/a", "best"],
    ("alias", "unprotect"): ["p/a", "best"],
}


@pytest.fixture
def places(tmp_path: Path) -> dict[str, str]:
    file = tmp_path / "a-file"
    file.write_bytes(b"not a directory\n")
    wandb = tmp_path / "wandb-dl"  # a W&B download with one file
    wandb.mkdir()
    (wandb / "x").write_bytes(b"")
    (wandb / "wandb_manifest.json").write_text(
        '{"version": 1, "storagePolicy": "wandb-storage-policy-v1", "contents": '
        '{"x": {"digest": "1B2M2Y8AsgTpgAmY7PhCfg==", "size": 0}}}'
    )
    DraftStore(tmp_path / "state", owner=False).close()  # a mount's state dir (artfs draft)
    return {
        "wandb": str(wandb),
        "file": str(file),
        "missing": str(tmp_path / "missing"),
        "long": str(tmp_path / ("x" * 300)),  # a name over NAME_MAX
        "dest": str(tmp_path / "dest"),
        "state": str(tmp_path / "state"),
        "dead": f"http://127.0.0.1:{free_port()}",
    }


def expect_one_line(
    command: tuple[str, ...], args: list[str], *, debug: bool = False
) -> subprocess.CompletedProcess[str]:
    # --debug right after the command: after `artfs run NAME -- CMD` it would be CMD's
    proc = run_cli(*command, *(["--debug"] if debug else []), *args, check=False, timeout=90)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith(f"artfs {command[0]}: "), proc.stderr
    if debug:
        assert "Traceback (most recent call last)" in proc.stderr, proc.stderr
    else:
        assert len(lines) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    return proc


def test_every_command_has_scenarios() -> None:
    assert ("ls",) in COMMANDS and ("alias", "set") in COMMANDS  # the walk works
    for command in COMMANDS:
        assert command in BAD_INPUT, f"artfs {' '.join(command)}: add a BAD_INPUT scenario"
        if takes_registry(command) and command != ("mount",):  # a mount starts offline
            assert command in REMOTE, f"artfs {' '.join(command)}: add a REMOTE scenario"


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_bad_input_is_one_line(command: tuple[str, ...], places: dict[str, str]) -> None:
    if command not in BAD_INPUT:
        pytest.fail(f"artfs {' '.join(command)}: add a BAD_INPUT scenario")
    args = [a.format(**places) for a in BAD_INPUT[command]]
    expect_one_line(command, args)
    expect_one_line(command, args, debug=True)


REMOTE_COMMANDS = [c for c in COMMANDS if c in REMOTE]


@pytest.mark.parametrize("command", REMOTE_COMMANDS, ids=" ".join)
def test_dead_registry_is_one_line(command: tuple[str, ...], places: dict[str, str]) -> None:
    args = ["--registry", places["dead"], *(a.format(**places) for a in REMOTE[command])]
    proc = expect_one_line(command, args)
    assert "unreachable" in proc.stderr


@pytest.fixture(scope="module")
def hung_registry() -> Iterator[str]:
    """A port that accepts connections and never answers (a stopped server seen from a
    client); connections are held open until the end of the module."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.mark.parametrize("command", REMOTE_COMMANDS, ids=" ".join)
def test_hung_registry_is_one_line(
    command: tuple[str, ...], places: dict[str, str], hung_registry: str
) -> None:
    args = [
        "--registry",
        hung_registry,
        "--timeout",
        "0.5",
        *(a.format(**places) for a in REMOTE[command]),
    ]
    proc = expect_one_line(command, args)
    assert "unreachable" in proc.stderr or "timed out" in proc.stderr.lower(), proc.stderr


def test_debug_is_on_every_command() -> None:
    parser = build_parser()
    add_debug_options(parser)
    for command in COMMANDS:
        sub = parser
        for name in command:
            action = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction))
            sub = action.choices[name]
        assert "--debug" in sub._option_string_actions, command


def test_python_m_artfs_server_is_artfs_serve(places: dict[str, str]) -> None:
    """One parser: the module entry point takes the same options and fails the same way."""
    import sys

    both = [
        subprocess.run(
            [sys.executable, "-m", module, *pre, "--data", places["file"], "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for module, pre in (("artfs.server", []), ("artfs.cli", ["serve"]))
    ]
    assert both[0].returncode == both[1].returncode == 1
    assert both[0].stderr == both[1].stderr and both[0].stderr.startswith("artfs serve: ")
    helps = [
        subprocess.run(
            [sys.executable, "-m", module, *pre, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split("options:", 1)[1]
        for module, pre in (("artfs.server", []), ("artfs.cli", ["serve"]))
    ]
    assert helps[0] == helps[1] and "--public-blob-url" in helps[0]


# --------------------------------------------------------------------------- regression


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "registry")
    s.start()
    yield s
    s.stop()


def test_get_failing_mid_download_is_one_line(server: Server, tmp_path: Path) -> None:
    """A blob lost on the server: the download's parallel fetches fail inside a nursery.
    This printed a 60-line traceback (an exception group escaped the CLI's handler)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(6):
        (tree / f"f{i}.bin").write_bytes(bytes([i]) * (1000 + i))
    run_cli("put", "--registry", server.url, str(tree), "lost/blob")
    sha = hashlib.sha256(bytes([3]) * 1003).hexdigest()
    stored = [p for p in (server.data / "blobs").rglob(f"*{sha}*") if p.is_file()]
    assert stored, "the blob's file in the registry's blob directory"
    for path in stored:
        path.unlink()
    args = ["--registry", server.url, "--cache-dir", str(tmp_path / "c"), "lost/blob"]
    proc = expect_one_line(("get",), [*args, str(tmp_path / "dest")])
    assert sha[:12] in proc.stderr or "f3.bin" in proc.stderr or "not" in proc.stderr
    expect_one_line(("get",), [*args, str(tmp_path / "dest2")], debug=True)


@pytest.mark.parametrize(
    "failure",
    [
        RecursionError("maximum recursion depth exceeded"),
        BaseExceptionGroup("download", [ValueError("one"), RuntimeError("two")]),
        ExceptionGroup("nested", [ExceptionGroup("inner", [KeyError("k")])]),
    ],
    ids=["recursion", "group", "nested-group"],
)
def test_an_unexpected_failure_in_get_is_one_line(
    failure: BaseException,
    places: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What made ``artfs get`` print 60 lines: anything but an artfs or OS error (the
    RecursionError of a deep version, an exception group from the parallel fetches) went
    past the handler. Now it is one line naming it as internal, and --debug has the rest."""
    import artfs.download
    from artfs.cli import main

    async def fail(*args: object, **kwargs: object) -> tuple[int, int]:
        raise failure

    monkeypatch.setattr(artfs.download, "download_version", fail)
    argv = ["get", "--registry", places["dead"], "p/a:v1", places["dest"]]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("artfs get: internal error: "), err
    assert main([*argv, "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1].startswith("artfs get: internal error: ")
