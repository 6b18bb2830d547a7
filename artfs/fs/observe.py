"""Observed lineage: which versions each process read through the mount, and who wrote drafts.

The mount sees every OPEN (FUSE passthrough serves the READs, never the opens), so it
records, per process (``procs.ProcInfo``: ancestry captured at its first request), the
versions whose files it opened, and per draft the processes that created, opened for
writing, renamed, removed or truncated something in it. At commit, a version read by a
process ``related`` to one of the draft's writers is an *observed input*
(docs/design.md, "Observed lineage"; the rule is ``procs.related``).

Pure bookkeeping over a ``ProcTable``; bounded (docs/decisions.md, "Observed lineage: bounds"):

* at most ``MAX_READERS`` reading processes; past it the least recently active quarter
  is dropped, and a process idle for ``KEEP_SECONDS`` is dropped at the next pass;
* at most ``MAX_VERSIONS_PER_READER`` versions per process (the registry's lineage cap);
* at most ``MAX_DRAFTS`` drafts with writers, ``MAX_WRITERS`` writers each (oldest go).

Everything lives in the daemon's memory: a remount starts with no observations.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from ..lineage import MAX_INPUTS
from .procs import ProcInfo, ProcKey, ProcTable, related

log = logging.getLogger(__name__)

MAX_READERS = 4096
MAX_VERSIONS_PER_READER = MAX_INPUTS
KEEP_SECONDS = 7 * 86400.0
MAX_DRAFTS = 1024
MAX_WRITERS = 256
EXPIRE_EVERY = 256  # new readers between two passes over the idle ones


VersionKey = tuple[str, str, int]  # (project, artifact, number)


@dataclass(slots=True)
class _Reader:
    info: ProcInfo
    active: float  # monotonic time of its last recorded open
    versions: dict[VersionKey, tuple[float, float]] = field(default_factory=dict)
    # version -> (first, last) wall-clock time of an open
    full: bool = False


def ref_of(key: VersionKey) -> str:
    return f"{key[0]}/{key[1]}:v{key[2]}"


class Observer:
    """The mount's record of reads and draft writers (see the module docstring)."""

    def __init__(
        self,
        procs: ProcTable,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.procs = procs
        self._clock = clock
        self._wall = wall
        self._readers: dict[ProcKey, _Reader] = {}
        self._writers: dict[int, dict[ProcKey, ProcInfo]] = {}  # draft id -> writers
        self._added = 0

    # --- recording -------------------------------------------------------------------------
    def read(self, tid: int, key: VersionKey) -> None:
        """Thread ``tid`` opened a file of version ``key``."""
        info = self.procs.lookup(tid)
        if info is None:
            return
        now = self._clock()
        reader = self._readers.get(info.key)
        if reader is None:
            reader = self._add_reader(info, now)
        reader.active = now
        wall = self._wall()
        seen = reader.versions.get(key)
        if seen is not None:
            reader.versions[key] = (seen[0], wall)
        elif len(reader.versions) < MAX_VERSIONS_PER_READER:
            reader.versions[key] = (wall, wall)
        elif not reader.full:
            reader.full = True
            log.warning(
                "process %d read more than %d versions; later ones are not observed",
                info.pid,
                MAX_VERSIONS_PER_READER,
            )

    def _add_reader(self, info: ProcInfo, now: float) -> _Reader:
        self._added += 1
        if self._added % EXPIRE_EVERY == 0:
            cutoff = now - KEEP_SECONDS
            for k in [k for k, r in self._readers.items() if r.active < cutoff]:
                del self._readers[k]
        if len(self._readers) >= MAX_READERS:
            by_age = sorted(self._readers.items(), key=lambda kv: kv[1].active)
            for k, _ in by_age[: MAX_READERS // 4]:
                del self._readers[k]
            log.info("observed reads: over %d processes, dropped the idlest", MAX_READERS)
        reader = self._readers[info.key] = _Reader(info, now)
        return reader

    def wrote(self, tid: int, draft_id: int) -> None:
        """Thread ``tid`` changed something in draft ``draft_id``."""
        info = self.procs.lookup(tid)
        if info is None:
            return
        writers = self._writers.get(draft_id)
        if writers is None:
            if len(self._writers) >= MAX_DRAFTS:
                del self._writers[next(iter(self._writers))]  # the oldest draft
            writers = self._writers[draft_id] = {}
        if info.key in writers:
            return
        if len(writers) >= MAX_WRITERS:
            del writers[next(iter(writers))]
        writers[info.key] = info

    def forget_draft(self, draft_id: int) -> None:
        """The draft was committed or discarded."""
        self._writers.pop(draft_id, None)

    # --- answering ---------------------------------------------------------------------------
    def writers(self, draft_id: int) -> list[ProcInfo]:
        return list(self._writers.get(draft_id, {}).values())

    def inputs_for(self, draft_id: int, exclude: VersionKey | None = None) -> list[str]:
        """The draft's observed inputs, in order of first read: the versions read by any
        process related to any of its writers (``exclude``: its base version)."""
        writers = self.writers(draft_id)
        if not writers:
            return []
        found: dict[VersionKey, float] = {}
        for reader in self._readers.values():
            if not any(related(reader.info, w) for w in writers):
                continue
            for key, (first, _) in reader.versions.items():
                if key != exclude and (key not in found or first < found[key]):
                    found[key] = first
        ordered = sorted(found.items(), key=lambda kv: (kv[1], kv[0]))
        return [ref_of(k) for k, _ in ordered[:MAX_INPUTS]]

    def reads_under(self, root_pid: int, since: float = 0.0) -> list[tuple[str, float]]:
        """(ref, last read) of every version read at or after ``since`` (wall clock) by
        ``root_pid`` or a process that descended from it when first seen."""
        found: dict[VersionKey, float] = {}
        for reader in self._readers.values():
            if not reader.info.descends_from(root_pid):
                continue
            for key, (_, last) in reader.versions.items():
                if last >= since and last > found.get(key, -1.0):
                    found[key] = last
        return sorted(((ref_of(k), t) for k, t in found.items()), key=lambda rt: (rt[1], rt[0]))

    def answer(self, value: bytes) -> tuple[str, dict[str, Any]]:
        """A query of ``artfs.observed`` (``{"pid": N, "request": ID}``): its request id and
        the result to write for it (``{"ok": true, "pid": N, "reads": [{"ref", "read"}]}``)."""
        pid, request = parse_query(value)
        reads = [{"ref": ref, "read": round(t, 6)} for ref, t in self.reads_under(pid)]
        return request, {"ok": True, "pid": pid, "reads": reads}


def parse_query(value: bytes) -> tuple[int, str]:
    try:
        body = json.loads(value)
        pid, request = body["pid"], body["request"]
    except (ValueError, TypeError, KeyError):
        raise InvalidInput('expected {"pid": N, "request": "<32 hex digits>"}') from None
    if not isinstance(pid, int) or pid <= 0 or not isinstance(request, str):
        raise InvalidInput('expected {"pid": N, "request": "<32 hex digits>"}')
    if not re.fullmatch(r"[0-9a-f]{32}", request):
        raise InvalidInput("'request' must be 32 hex digits")
    return pid, request
