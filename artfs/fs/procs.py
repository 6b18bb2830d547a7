"""Who sent a FUSE request: a process, its group, session and ancestry, read from /proc.

The kernel tells the mount the *thread* id of each request's sender (``RequestContext.pid``,
0 when the sender is outside the mount's pid namespace). ``ProcTable`` maps it to a
``ProcInfo``: the thread group (the process), its start time (so a reused pid is another
process), its process group and session, and the chain of its ancestors, read once
from ``/proc/PID/status`` and ``/proc/PID/stat`` and cached. The chain is captured when
the process is first seen, while its parents are alive: a DataLoader worker that exits
still counts as a child of the trainer that forked it (docs/design.md, "Observed lineage").

Bounded: at most ``MAX_CACHED`` entries, each trusted for ``TRUST_SECONDS`` before its
start time is read again (a pid reused within that time is the only way to confuse two
processes; Linux hands pids out in increasing order up to ``pid_max``, 4M on 64-bit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

MAX_CACHED = 16_384  # pids remembered (about 300 bytes each)
TRUST_SECONDS = 5.0  # a cached pid is re-checked (one /proc read) after this long
MAX_DEPTH = 64  # ancestors followed, at most (a fork bomb's chain is not worth more)

V = TypeVar("V")
ProcKey = tuple[int, int]  # (pid, start time in clock ticks since boot): one process, ever


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """One process as the mount saw it when it first sent a request."""

    pid: int
    start: int
    pgid: int
    sid: int
    ancestors: tuple[ProcKey, ...]  # parent first, up to init (or MAX_DEPTH)
    scope: frozenset[ProcKey]  # itself and its ancestors below the first session leader

    @property
    def key(self) -> ProcKey:
        return (self.pid, self.start)

    def descends_from(self, pid: int) -> bool:
        """Is ``pid`` this process or one of its ancestors (as they were at capture)?"""
        return self.pid == pid or any(p == pid for p, _ in self.ancestors)


def related(a: ProcInfo, b: ProcInfo) -> bool:
    """Do two processes belong to one job (the attribution rule, docs/design.md)?

    The same process; or the same process group of one session (a pipeline, a script
    run without job control, a trainer and the DataLoader workers it forks); or a common
    ancestor that is not a session leader (a script, ``make``, a Python driver running
    one command that reads and another that writes). A session leader (an interactive
    shell, sshd's child, tmux's) is where unrelated jobs meet, so it never joins two.
    """
    if a.key == b.key:
        return True
    if a.sid == b.sid and a.pgid == b.pgid:
        return True
    return not a.scope.isdisjoint(b.scope)


@dataclass(frozen=True, slots=True)
class Stat:
    """The fields of /proc/PID/stat the rule needs."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    start: int


def parse_stat(text: str) -> Stat:
    """Parse /proc/PID/stat; ``comm`` (field 2) may hold spaces and parentheses."""
    head, _, rest = text.rpartition(")")
    fields = rest.split()
    # fields[0] is field 3 (state): ppid 4, pgrp 5, session 6, starttime 22
    return Stat(
        int(head.split("(", 1)[0]),
        int(fields[1]),
        int(fields[2]),
        int(fields[3]),
        int(fields[19]),
    )


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:  # gone (exited), or hidden from us (hidepid)
        return None


def read_tgid(tid: int) -> int | None:
    """The process (thread group) of a thread id; None if it is gone."""
    text = _read(f"/proc/{tid}/status")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("Tgid:"):
            return int(line.split()[1])
    return None


def read_stat(pid: int) -> Stat | None:
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    try:
        return parse_stat(text)
    except (ValueError, IndexError):
        return None


class ProcTable:
    """Thread id -> ``ProcInfo``, cached (see the module docstring for the bounds)."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        tgid: Callable[[int], int | None] = read_tgid,
        stat: Callable[[int], Stat | None] = read_stat,
    ) -> None:
        self._clock = clock
        self._tgid = tgid
        self._stat = stat
        self._infos: dict[int, tuple[float, ProcInfo]] = {}  # pid -> (checked, info)
        self._threads: dict[int, tuple[float, int]] = {}  # tid -> (checked, tgid)

    def __len__(self) -> int:
        return len(self._infos)

    def lookup(self, tid: int) -> ProcInfo | None:
        """The process that sent a request from thread ``tid``; None if unknown or gone."""
        if tid <= 0:
            return None
        now = self._clock()
        cached = self._threads.get(tid)
        if cached is not None and now - cached[0] < TRUST_SECONDS:
            pid = cached[1]
        else:
            found = self._tgid(tid)
            if found is None:
                return None
            pid = found
            self._remember(self._threads, tid, (now, pid))
        return self._info(pid, now)

    def _info(self, pid: int, now: float, depth: int = 0) -> ProcInfo | None:
        cached = self._infos.get(pid)
        if cached is not None and now - cached[0] < TRUST_SECONDS:
            return cached[1]
        st = self._stat(pid)
        if st is None:
            return None
        if cached is not None and cached[1].start == st.start:
            info = cached[1]  # the same process: its chain as first captured
        else:
            info = self._build(st, now, depth)
        self._remember(self._infos, pid, (now, info))
        return info

    def _build(self, st: Stat, now: float, depth: int) -> ProcInfo:
        parent = None
        if st.ppid > 0 and depth < MAX_DEPTH:
            parent = self._info(st.ppid, now, depth + 1)
        ancestors: tuple[ProcKey, ...] = ()
        scope = {(st.pid, st.start)}
        if parent is not None:
            ancestors = (parent.key, *parent.ancestors)
            # a session leader starts a new job context: nothing at or above it joins jobs
            if st.pid != st.sid and parent.pid != parent.sid:
                scope |= parent.scope
        return ProcInfo(st.pid, st.start, st.pgid, st.sid, ancestors, frozenset(scope))

    @staticmethod
    def _remember(table: dict[int, V], key: int, value: V) -> None:
        if len(table) >= MAX_CACHED and key not in table:
            table.clear()  # cheap and rare: a refill costs one /proc read per live sender
        table[key] = value
