"""Observed lineage from outside the mount: what a process tree read through running mounts.

Each mount daemon records which versions every process opened (``fs/observe.py``), with
the process's ancestry captured at its first request, so a child that has already exited
still counts as a descendant of the process that started it. ``observed_reads`` asks
every running mount (``mountinfo.running_records``) the way ``artfs commit`` asks for a
commit (``drafts/requests.py``): a ``setxattr`` on the mount root, answered in a result
file of the mount's state directory, which the asker reads and deletes:

    setxattr MOUNT user.artfs.observed '{"pid": 123, "request": "<32 hex digits>"}'
    STATE/requests/<id>.result.json
    -> {"ok": true, "pid": 123, "reads": [{"ref": "p/data:v3", "read": 1733356800.5}]}

(``read``: wall-clock time of the newest open). Not a getxattr: a mount without
``--xattrs`` answers every getxattr ENOSYS, after which the kernel never sends one again,
and one xattr value holds 64 KiB at most. A mount started with ``--no-observed-inputs``
(or older than this) refuses with EPERM and is skipped.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api.sync import normalize_registry
from .drafts.requests import RequestFiles
from .mountinfo import running_records

log = logging.getLogger(__name__)

OBSERVED_XATTR = "user.artfs.observed"  # set on the mount root (the mount's side: fs/observe.py)
ASK_TIMEOUT = 10.0  # seconds one mount may take to answer (it answers from memory: < 1 ms)


@dataclass(frozen=True, slots=True)
class ObservedRead:
    ref: str  # project/artifact:vN
    read: float  # wall-clock time of the newest open by the process tree
    mountpoint: str
    registry: str  # the mount's registry (URL or directory), as its record says


def add_no_observed_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--no-observed-inputs`` (``artfs mount`` and ``artfs commit``)."""
    parser.add_argument(
        "--no-observed-inputs",
        action="store_true",
        help=f"do not record the versions read through the mount as lineage inputs: {what}",
    )


def _ask(record: dict[str, Any], pid: int) -> dict[str, Any] | None:
    point, state = str(record["mountpoint"]), record.get("state_dir")
    if not isinstance(state, str):
        return None  # an older mount: no state directory to answer in
    files = RequestFiles(Path(state))
    request = uuid.uuid4().hex
    query = json.dumps({"pid": pid, "request": request}).encode()
    failure: list[OSError] = []

    def ask() -> None:
        try:
            os.setxattr(point, OBSERVED_XATTR, query)
        except OSError as e:
            failure.append(e)

    # A hung daemon would hold the call forever: wait ASK_TIMEOUT, then leave the thread
    # (a daemon thread: it does not keep the process from exiting) and skip that mount.
    thread = threading.Thread(target=ask, name="artfs-observed", daemon=True)
    thread.start()
    thread.join(ASK_TIMEOUT)
    try:
        if thread.is_alive():
            log.warning("the mount at %s did not answer within %g s; skipped", point, ASK_TIMEOUT)
            return None
        if failure:
            if failure[0].errno not in (errno.EPERM, errno.ENOTSUP, errno.ENOSYS):
                log.warning("asking the mount at %s what pid %d read: %s", point, pid, failure[0])
            return None
        body = files.read_result(request)
    finally:
        files.remove(request)
    return body if body is not None and body.get("ok") is True else None


def observed_read_details(
    root_pid: int, since: float = 0.0, *, registry: str | None = None
) -> list[ObservedRead]:
    """Every version ``root_pid`` or its descendants opened at or after ``since`` (wall
    clock), through any running mount (of ``registry`` only, if given), oldest first."""
    found: list[ObservedRead] = []
    wanted = None if registry is None else normalize_registry(registry)
    for record in running_records():
        if wanted is not None and normalize_registry(str(record.get("registry"))) != wanted:
            continue
        point = str(record["mountpoint"])
        body = _ask(record, root_pid)
        if body is None:
            continue
        reads = body.get("reads")
        for item in reads if isinstance(reads, list) else []:
            if not isinstance(item, dict):
                continue
            ref, when = item.get("ref"), item.get("read")
            if isinstance(ref, str) and isinstance(when, int | float) and when >= since:
                found.append(ObservedRead(ref, float(when), point, str(record.get("registry"))))
    found.sort(key=lambda r: (r.read, r.ref))
    return found


def observed_reads(root_pid: int, since: float = 0.0, *, registry: str | None = None) -> list[str]:
    """The references (``p/a:vN``) ``root_pid`` and its descendants read through running
    mounts at or after ``since``, each once, in order of reading (see the module docstring)."""
    refs: list[str] = []
    for read in observed_read_details(root_pid, since, registry=registry):
        if read.ref not in refs:
            refs.append(read.ref)
    return refs
