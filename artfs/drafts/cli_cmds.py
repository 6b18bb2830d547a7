"""``artfs draft``, ``artfs commit`` and ``artfs delete`` (wired into ``artfs/cli.py``).

``draft`` writes straight into a state directory's database (the mount picks
new drafts up with ``DraftStore.refresh``); ``commit`` asks the mount daemon
that owns the draft, through ``setxattr user.artfs.commit`` and the request
files described in ``requests.py``; ``delete`` talks to the registry.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import errno
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .. import config
from ..cli_meta import add_commit_options, commit_options, delete_artifact, unchanged_note
from ..client.base import RegistryClient
from ..errors import AlreadyExists, ArtfsError, InvalidInput, NotFound, from_code
from ..lineage import add_input_option, parse_inputs
from ..mountinfo import read_record, running_records
from ..names import alias_name, parse_ref, version_label
from ..observed import add_no_observed_option
from ..progress import Progress, human_bytes, iso_time, plural
from .model import Draft, DraftKey
from .requests import COMMIT_XATTR, CommitRequest, RequestFiles
from .store import DraftStore

POLL_INTERVAL = 0.2


# --------------------------------------------------------------------------- artfs draft


async def create_draft(
    client: RegistryClient, state_dir: Path, target: str, name: str
) -> tuple[Draft, int]:
    """Create draft ``name`` of ``p/a`` (empty) or of ``p/a:BASE`` (BASE's files by reference).

    Returns the draft and the number of files it starts with.
    """
    has_base = ":" in target
    ref = parse_ref(target, default_latest=False)
    alias_name(name)
    registry = await client.registry_id()
    manifest = None
    base: int | None = None
    try:
        info = await client.get_artifact(ref.project, ref.artifact)
    except NotFound:
        if has_base:
            raise
    else:
        taken = {version_label(v.number) for v in info.versions} | set(info.aliases)
        if name in taken:
            raise AlreadyExists(f"{ref.project}/{ref.artifact}/{name} is a version or an alias")
    if has_base:
        version = await client.get_version(ref.project, ref.artifact, ref.selector)
        base = version.number
        manifest = await client.get_manifest(ref.project, ref.artifact, base)
    key = DraftKey(registry, ref.project, ref.artifact, name)

    def make() -> Draft:
        store = DraftStore(state_dir, owner=False)
        try:
            return store.create_draft(key, base=base, manifest=manifest)
        finally:
            store.close()

    draft = await trio.to_thread.run_sync(make)
    return draft, len(manifest) if manifest is not None else 0


def draft_target(state_arg: str | None, registry_arg: str | None) -> tuple[Path, str]:
    """The state directory and registry a new draft goes to: ``--state-dir`` if given, else
    those of the one running mount (a draft is only visible through the mount owning it)."""
    if state_arg:
        return existing_state_dir(config.state_dir_from(state_arg)), config.registry_from(
            registry_arg
        )
    mounts = [r for r in running_records() if isinstance(r.get("state_dir"), str)]
    if len(mounts) != 1:
        where = ", ".join(str(r.get("mountpoint")) for r in mounts)
        raise InvalidInput(
            "no artfs mount is running; give the draft's path in a mount, or --state-dir DIR"
            if not mounts
            else f"{len(mounts)} artfs mounts are running ({where}); say which by giving the "
            "draft's path in one (artfs draft p/a:v0 MOUNT/p/a/NAME)"
        )
    record = mounts[0]
    return Path(record["state_dir"]), registry_arg or str(record["registry"])


def existing_state_dir(path: Path) -> Path:
    """``--state-dir`` must name a state directory a mount has used (its ``drafts.db``):
    a typo would otherwise create a new one that no mount shows, and the draft with it."""
    if not (path / "drafts.db").is_file():
        raise InvalidInput(
            f"--state-dir {path}: not the state directory of an artfs mount (no drafts.db); "
            "'artfs info MOUNT' shows a mount's state_dir, or give the draft's path in the mount"
        )
    return path


def draft_in_mount(path: Path, target: str) -> tuple[Path, str, str]:
    """``MOUNT/p/a/NAME`` (the draft's path in a running mount): that mount's state
    directory and registry, and NAME. ``target``'s project/artifact must be ``p/a``."""
    absolute = Path(os.path.abspath(path))
    for candidate in absolute.parents:
        record = read_record(candidate)
        if record is None or not os.path.ismount(candidate):
            continue
        rel = absolute.relative_to(candidate).parts
        ref = parse_ref(target, default_latest=False)
        if len(rel) != 3 or (rel[0], rel[1]) != (ref.project, ref.artifact):
            raise InvalidInput(
                f"{path}: a draft of {ref.project}/{ref.artifact} goes at "
                f"{candidate}/{ref.project}/{ref.artifact}/NAME"
            )
        state = record.get("state_dir")
        if not isinstance(state, str):
            raise InvalidInput(f"the mount at {candidate} does not say its state directory")
        return Path(state), str(record["registry"]), rel[2]
    raise NotFound(f"{path}: not inside an artfs mount (is it mounted?)")


def cmd_draft(args: argparse.Namespace) -> int:
    from ..client import open_client

    name: str = args.name
    if "/" in name:  # the draft's path in a mount: that mount's state dir and registry
        if args.state_dir:
            raise InvalidInput("give the draft's path in a mount or --state-dir, not both")
        state_dir, registry, name = draft_in_mount(Path(name), args.target)
        registry = args.registry or registry
    else:
        state_dir, registry = draft_target(args.state_dir, args.registry)

    async def run() -> int:
        client = open_client(registry, timeout=args.timeout)
        try:
            draft, count = await create_draft(client, state_dir, args.target, name)
        finally:
            await client.aclose()
        origin = ""
        if draft.base is not None:
            origin = f" from {draft.key.project}/{draft.key.artifact}:v{draft.base} "
            origin += f"({plural(count, 'file')}, no bytes copied)"
        print(f"draft {draft.key}{origin}")
        print(f"it appears as MOUNT/{draft.key} in mounts using --state-dir {state_dir}")
        return 0

    return trio.run(run)


# --------------------------------------------------------------------------- artfs commit


@dataclass(frozen=True, slots=True)
class DraftLocation:
    mountpoint: Path
    project: str
    artifact: str
    name: str
    state_dir: Path | None  # None: the mount record does not say (older daemon)


def locate_draft(path: Path) -> DraftLocation:
    """Map ``MOUNT/p/a/NAME`` to its mount and the mount's state directory."""
    absolute = Path(os.path.abspath(path))
    for candidate in [absolute, *absolute.parents]:
        record = read_record(candidate)
        if record is None or not os.path.ismount(candidate):
            continue
        rel = absolute.relative_to(candidate).parts
        if len(rel) != 3:
            raise InvalidInput(
                f"{path}: not a draft directory (expected MOUNT/project/artifact/draft)"
            )
        state = record.get("state_dir")
        return DraftLocation(
            candidate, rel[0], rel[1], rel[2], Path(state) if isinstance(state, str) else None
        )
    raise NotFound(f"{path}: not inside an artfs mount (is it mounted?)")


def request_commit(
    draft_dir: Path,
    request: CommitRequest,
    files: RequestFiles | None,
    *,
    show_progress: bool | None = None,
    setxattr: Callable[[Path, str, bytes], None] | None = None,
) -> dict[str, Any]:
    """Send the request and wait; returns the daemon's result (``{"ok": True, "ref": ...}``).

    Raises the daemon's error (rebuilt from the result file) when the commit fails.
    """
    do_set = setxattr or (lambda p, n, v: os.setxattr(p, n, v))
    value = request.encode()
    rid = request.request
    bars: dict[str, Progress] = {}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(do_set, draft_dir, COMMIT_XATTR, value)
        while True:
            try:
                future.result(timeout=POLL_INTERVAL)
                failure: OSError | None = None
                break
            except concurrent.futures.TimeoutError:
                if files is not None and rid is not None:
                    _draw(files.read_progress(rid), bars, show_progress)
            except OSError as e:
                failure = e
                break
    for bar in bars.values():
        bar.close()
    result = files.read_result(rid) if files is not None and rid is not None else None
    if files is not None and rid is not None:
        files.remove(rid)
    if failure is not None:
        if result is not None and not result.get("ok"):
            raise from_code(str(result.get("code")), str(result.get("message")))
        raise _errno_error(failure, draft_dir)
    return result if result is not None and result.get("ok") else {"ok": True}


def _draw(state: dict[str, Any] | None, bars: dict[str, Progress], enabled: bool | None) -> None:
    if state is None:
        return
    phase, done, total = str(state.get("phase")), state.get("done"), state.get("total")
    if not isinstance(done, int) or not isinstance(total, int):
        return
    bar = bars.get(phase)
    if bar is None:
        for other in bars.values():
            other.close()
        bars.clear()
        bar = bars[phase] = Progress(phase, total, enabled=enabled)
    bar.advance(done - bar.done)


def _errno_error(exc: OSError, path: Path) -> ArtfsError:
    reason = {
        errno.EBUSY: "a file is still open for writing or a commit is running",
        errno.EPERM: "not a draft (only drafts are committed)",
        errno.ENOTSUP: "the mount does not support commits (is it an artfs mount?)",
        errno.EIO: "the registry could not be reached or failed; see the mount's log",
        errno.ENOSPC: "no space left",
        errno.EINVAL: "the commit request was refused as invalid",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return ArtfsError(f"commit of {path} failed: {reason}")


def _no_draft(where: DraftLocation, files: RequestFiles | None) -> None:
    """A commit of a draft that is not there: if the mount committed it (recently), say as
    which version, not "No such file or directory"."""
    name = f"{where.project}/{where.artifact}/{where.name}"
    done = files.read_committed(name) if files is not None else None
    if done is not None:
        when = iso_time(float(done["at"])) if isinstance(done.get("at"), int | float) else "?"
        raise AlreadyExists(
            f"draft {name} was already committed, as {done.get('ref')} (at {when}); "
            "the draft is gone once committed"
        )
    raise NotFound(f"{where.mountpoint}/{name}: no such draft")


def cmd_commit(args: argparse.Namespace) -> int:
    draft_dir = Path(args.path)
    where = locate_draft(draft_dir)
    metadata = None
    if args.metadata is not None:
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"--metadata is not valid JSON: {e}") from None
        if not isinstance(metadata, dict):
            raise InvalidInput("--metadata must be a JSON object, e.g. '{\"epochs\": 3}'")
    request = CommitRequest(
        aliases=tuple(alias_name(a) for a in args.alias),
        metadata=metadata,
        description=args.description or "",
        type=args.type,
        request=uuid.uuid4().hex,
        inputs=tuple(str(ref) for ref in parse_inputs(args.input)),
        observed=not args.no_observed_inputs,
        **commit_options(args),
        allow_empty=args.allow_empty,
    )
    files = RequestFiles(where.state_dir) if where.state_dir is not None else None
    if not os.path.lexists(draft_dir):
        _no_draft(where, files)
    started = time.monotonic()
    result = request_commit(draft_dir, request, files)
    ref = result.get("ref")
    if not isinstance(ref, str):
        print(f"committed {where.project}/{where.artifact}/{where.name}", file=sys.stderr)
        return 0
    print(ref)
    if result.get("recovered"):
        print("an earlier attempt had already committed it; no second version", file=sys.stderr)
    elif not result.get("created"):
        print(unchanged_note(ref), file=sys.stderr)
    else:
        uploaded = int(result.get("uploaded", 0))
        print(
            f"uploaded {human_bytes(uploaded)} in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
    return 0


# --------------------------------------------------------------------------- artfs delete


async def delete_version(client: RegistryClient, target: str, force: bool) -> str:
    if ":" not in target:  # the whole artifact
        return await delete_artifact(client, target, force)
    ref = parse_ref(target, default_latest=False)
    if ref.version is None:
        raise InvalidInput(
            f"artfs delete takes project/artifact:vN or project/artifact, not {target!r}"
        )
    await client.delete_version(ref.project, ref.artifact, ref.version, force=force)
    return str(ref)


def cmd_delete(args: argparse.Namespace) -> int:
    from ..client import open_client

    async def run() -> int:
        client = open_client(config.registry_from(args.registry), timeout=args.timeout)
        try:
            print(f"deleted {await delete_version(client, args.ref, args.force)}")
        finally:
            await client.aclose()
        return 0

    return trio.run(run)


# --------------------------------------------------------------------------- parsers


def add_parsers(
    sub: Any, with_registry: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
) -> None:
    """Register the three commands on ``artfs``'s subparsers."""
    s = with_registry(sub.add_parser("draft", help="make a draft, optionally from a version"))
    s.add_argument(
        "target",
        metavar="project/artifact[:BASE]",
        help="the artifact; with :BASE the draft starts with that version's files",
    )
    s.add_argument(
        "name",
        metavar="NAME|MOUNT/project/artifact/NAME",
        help="the draft's name, or its path in a mount (which mount, when several run)",
    )
    s.add_argument(
        "--state-dir",
        help="the state directory of the mount that shows the draft (default: that of the "
        "one running mount; 'artfs info MOUNT' shows it)",
    )
    s.set_defaults(fn=cmd_draft)

    s = sub.add_parser("commit", help="publish a draft of a mount as a new version")
    s.add_argument("path", metavar="MOUNT/project/artifact/DRAFT", help="the draft's directory")
    s.add_argument("--alias", action="append", default=[], help="alias to set (repeatable)")
    add_input_option(s)
    add_no_observed_option(s, "only the --input ones are recorded")
    s.add_argument("--metadata", help="JSON object stored with the version")
    s.add_argument("--description", help="free text stored with the version")
    s.add_argument("--type", help="artifact type, if the commit creates the artifact")
    add_commit_options(s)
    s.add_argument(
        "--allow-empty",
        action="store_true",
        help="commit a draft without files (refused by default: usually a mistake)",
    )
    s.set_defaults(fn=cmd_commit)

    s = with_registry(
        sub.add_parser("delete", help="delete a version, or a whole artifact (every version)")
    )
    s.add_argument("ref", metavar="project/artifact[:vN]", help="a version, or a whole artifact")
    s.add_argument(
        "--force",
        action="store_true",
        help="delete even if aliases (other than latest) point there",
    )
    s.set_defaults(fn=cmd_delete)
