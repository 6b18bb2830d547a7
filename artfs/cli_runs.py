"""Runs on the command line: ``artfs run NAME -- CMD...``, ``artfs ls --runs PROJECT``,
``artfs info --run ID`` and the runs in ``artfs info REF`` (docs/python.md, "Runs").

``artfs run`` creates the run, then runs CMD with ``ARTFS_RUN_ID`` (and
``ARTFS_REGISTRY``, ``ARTFS_PROJECT``; ``ARTFS_TOKEN`` passes through) in its
environment, so ``artfs.run()`` inside CMD attaches to this run. While CMD runs it sends
the run's heartbeats and forwards signals to it; when CMD exits it records the versions
CMD was seen reading (``observed_inputs_for``) and ends the run: ``finished`` on exit
status 0, else ``failed`` with the status. Its own exit status is CMD's (128 + N when CMD
was killed by signal N, as a shell reports it; 127 when CMD could not be started).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import trio

from . import config
from .api.run import PROJECT_ENV, RUN_ID_ENV, _user, run_lease, run_project
from .api.sync import normalize_registry
from .client import open_client
from .client.base import RegistryClient
from .errors import ArtfsError, InvalidInput, NotFound
from .models import VersionInfo
from .observed import observed_reads
from .runs import FAILED, FINISHED, MAX_LIST_RUNS, OBSERVED, RunInfo, run_id

FORWARDED = (
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
END_DEADLINE = 30.0  # seconds to record the end of a run once CMD has exited


def observed_inputs_for(pid: int, since: float, registry: str) -> list[str]:
    """The versions process ``pid`` (and its descendants) read through a mount of
    ``registry`` since ``since`` (wall clock), as references ``project/artifact:vN``:
    recorded as the run's ``observed`` inputs (``observed.py``: every running mount is
    asked; one that doesn't answer in time is skipped with a warning)."""
    return observed_reads(pid, since, registry=registry)


def _config(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"--config is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidInput("--config must be a JSON object, e.g. '{\"lr\": 0.1}'")
    return value


def _terminal_delivers_sigint() -> bool:
    """Ctrl-C in a terminal reaches CMD directly when we are the terminal's foreground
    process group (CMD is in it too): forwarding SIGINT then would deliver it twice."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


def exit_status(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


async def _heartbeats(client: RegistryClient, rid: str, interval: float) -> None:
    while True:
        await trio.sleep(interval)
        try:
            await client.update_run(rid)
        except ArtfsError as e:  # the lease allows three misses; say so once per miss
            print(f"artfs run: heartbeat not recorded: {e}", file=sys.stderr)


async def _forward(proc: trio.Process, receiver: Any, skip_sigint: bool) -> None:
    async for signum in receiver:
        if signum == signal.SIGINT and skip_sigint:
            continue
        if proc.returncode is None:
            proc.send_signal(signum)


async def run_command(
    client: RegistryClient,
    registry: str,
    project: str,
    name: str,
    command: list[str],
    *,
    job_type: str,
    run_config: dict[str, Any] | None,
    observe: Callable[[int, float, str], list[str]] = observed_inputs_for,
) -> int:
    info = await client.create_run(
        project,
        name=name,
        job_type=job_type,
        host=socket.gethostname(),
        user=_user(),
        config=run_config,
        lease=run_lease(),
    )
    print(f"artfs run: {project}/{name} is run {info.id}", file=sys.stderr)
    where = normalize_registry(registry)  # a relative registry directory: absolute for CMD
    env = {**os.environ, RUN_ID_ENV: info.id, "ARTFS_REGISTRY": where, PROJECT_ENV: project}
    code: int
    proc: trio.Process | None
    since = time.time()  # reads before CMD started are not its inputs
    with trio.open_signal_receiver(*FORWARDED) as receiver:
        try:
            proc = await trio.lowlevel.open_process(command, env=env)
        except OSError as e:
            print(f"artfs run: can't run {command[0]!r}: {e.strerror or e}", file=sys.stderr)
            proc, code = None, 127
        if proc is not None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_heartbeats, client, info.id, info.lease / 4)
                nursery.start_soon(_forward, proc, receiver, _terminal_delivers_sigint())
                code = exit_status(await proc.wait())
                nursery.cancel_scope.cancel()
    with trio.move_on_after(END_DEADLINE) as scope:
        try:
            observed: list[str] = []
            if proc is not None:
                observed = await trio.to_thread.run_sync(
                    observe, proc.pid, since, where, abandon_on_cancel=True
                )
            if observed:
                await client.add_run_inputs(info.id, observed, kind=OBSERVED)
            status = FINISHED if code == 0 else FAILED
            await client.update_run(info.id, status=status, exit_code=code)
        except ArtfsError as e:  # CMD's status matters more than the record of it
            print(f"artfs run: the end of run {info.id} was not recorded: {e}", file=sys.stderr)
    if scope.cancelled_caught:
        print(f"artfs run: the end of run {info.id} was not recorded in time", file=sys.stderr)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    command = list(args.cmd)
    if "--" in command:  # NAME [options] -- CMD: the options are ours (argparse stops at NAME)
        cut = command.index("--")
        args.run_parser.parse_args([*command[:cut], args.name], namespace=args)
        command = command[cut + 1 :]
    if not command:
        raise InvalidInput("artfs run NAME -- CMD [ARGS...]: which command?")
    project, name = run_project(args.name, args.project)
    run_config = _config(args.config)
    registry = config.registry_from(args.registry)

    async def main() -> int:
        client = open_client(registry, timeout=args.timeout)
        try:
            return await run_command(
                client,
                registry,
                project,
                name,
                command,
                job_type=args.job_type,
                run_config=run_config,
            )
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()

    return trio.run(main)


# --- ls --runs, info --run, info REF ---------------------------------------------------------
def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _duration(run: RunInfo) -> str:
    seconds = int((run.ended if run.ended is not None else run.heartbeat) - run.started)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def ls_runs(args: argparse.Namespace, client_for: Callable[[], RegistryClient]) -> int:
    project: str = args.target or ""
    if not project or "/" in project:
        raise InvalidInput("artfs ls --runs PROJECT: name a project")
    if not 1 <= args.limit <= MAX_LIST_RUNS:
        raise InvalidInput(f"--limit must be between 1 and {MAX_LIST_RUNS}")

    async def main() -> int:
        client = client_for()
        try:
            runs = await client.list_runs(project, limit=args.limit)
        finally:
            await client.aclose()
        if args.json:
            print(json.dumps([r.to_json() for r in runs], indent=2, ensure_ascii=False))
            return 0
        rows = [("ID", "NAME", "JOB TYPE", "STATUS", "STARTED", "TIME", "IN", "OUT")]
        for r in runs:
            status = r.status if r.exit_code in (None, 0) else f"{r.status} ({r.exit_code})"
            rows.append(
                (
                    r.id,
                    r.name,
                    r.job_type or "-",
                    status,
                    _when(r.started),
                    _duration(r),
                    str(r.input_count),
                    str(r.output_count),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        return 0

    return trio.run(main)


def run_facts(run: RunInfo) -> dict[str, Any]:
    return {
        "run": run.id,
        "project": run.project,
        "name": run.name,
        "job_type": run.job_type,
        "status": run.status,
        "exit_code": run.exit_code,
        "host": run.host,
        "user": run.user,
        "started": run.started,
        "ended": run.ended,
        "heartbeat": run.heartbeat,
        "config": run.config,
        "inputs": [{"ref": i.ref, "kind": i.kind} for i in run.inputs],
        "outputs": [o.ref for o in run.outputs],
    }


def info_run(args: argparse.Namespace, client_for: Callable[[], RegistryClient]) -> int:
    rid = run_id(args.run)

    async def main() -> int:
        client = client_for()
        try:
            run = await client.get_run(rid)
        finally:
            await client.aclose()
        print(json.dumps(run_facts(run), indent=2, ensure_ascii=False))
        return 0

    return trio.run(main)


async def version_run_facts(client: RegistryClient, info: VersionInfo) -> dict[str, Any]:
    """What ``artfs info REF`` adds about runs: who logged it, who used it, and where the
    whole graph is (a registry without runs answers none)."""

    def brief(r: RunInfo) -> str:
        return f"{r.project}/{r.name} ({r.id}, {r.status})"

    try:
        found = await client.version_runs(info.project, info.artifact, info.number)
        produced, used = [brief(r) for r in found.produced_by], [brief(r) for r in found.used_by]
    except NotFound:
        produced, used = [], []
    return {
        "produced_by_runs": produced,
        "used_by_runs": used,
        "lineage": f"artfs lineage {info.ref}  (inputs, consumers and runs, all hops)",
    }


def add_parsers(
    sub: Any, with_registry: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
) -> None:
    s = with_registry(sub.add_parser("run", help="run a command as a run (its inputs, outputs)"))
    s.add_argument("name", metavar="NAME", help="the run's name ('project/name' names both)")
    s.add_argument("--project", help="the run's project (default: $ARTFS_PROJECT)")
    s.add_argument("--job-type", default="", help="e.g. train, eval, preprocess")
    s.add_argument("--config", metavar="JSON", help="the run's config, a JSON object")
    # dest "cmd": "command" is the name of the subcommand (cli.main's error line)
    s.add_argument(
        "cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command to run as the run"
    )
    s.set_defaults(fn=cmd_run, run_parser=s)


def add_ls_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--runs", action="store_true", help="the runs of project P, newest first")
    s.add_argument("--limit", type=int, default=100, help="with --runs: at most this many")


def add_info_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--run", metavar="RUN_ID", help="facts about a run instead")
