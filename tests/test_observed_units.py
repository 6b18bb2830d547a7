"""The attribution rule and the bounds of observed lineage (fs/procs.py, fs/observe.py),
over a fake process table; and ``ProcTable`` against this machine's real /proc."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from artfs.errors import InvalidInput
from artfs.fs import observe, procs
from artfs.fs.observe import Observer
from artfs.fs.procs import ProcTable, Stat, parse_stat, related


class Procs:
    """A fake /proc: pid -> (ppid, pgid, sid, start); threads map to their process."""

    def __init__(self) -> None:
        self.table: dict[int, tuple[int, int, int, int]] = {1: (0, 1, 1, 1)}
        self.threads: dict[int, int] = {}
        self.now = 0.0
        self.stat_reads = 0

    def spawn(self, pid: int, ppid: int, *, pgid: int | None = None, sid: int | None = None) -> int:
        _, ppgid, psid, _ = self.table[ppid]
        self.table[pid] = (ppid, ppgid if pgid is None else pgid, psid if sid is None else sid, pid)
        return pid

    def exit(self, pid: int) -> None:
        del self.table[pid]

    def tgid(self, tid: int) -> int | None:
        if tid in self.threads:
            return self.threads[tid]
        return tid if tid in self.table else None

    def stat(self, pid: int) -> Stat | None:
        self.stat_reads += 1
        found = self.table.get(pid)
        return None if found is None else Stat(pid, *found)

    def proc_table(self) -> ProcTable:
        return ProcTable(lambda: self.now, tgid=self.tgid, stat=self.stat)


def shell(fake: Procs, pid: int) -> int:
    """An interactive shell: a session leader (its jobs get process groups of their own)."""
    return fake.spawn(pid, 1, pgid=pid, sid=pid)


def test_an_interactive_shells_jobs_are_unrelated_its_scripts_and_workers_are_related() -> None:
    fake = Procs()
    table = fake.proc_table()
    sh = shell(fake, 100)
    cat = fake.spawn(101, sh, pgid=101)  # `cat MOUNT/p/data/latest/x`
    cp = fake.spawn(102, sh, pgid=102)  # later, `cp y MOUNT/p/model/run1/`
    train = fake.spawn(103, sh, pgid=103)  # `python train.py`
    worker = fake.spawn(104, train)  # its DataLoader worker (same group)
    script = fake.spawn(110, sh, pgid=110)  # `bash run.sh` (no job control inside)
    reader, writer = fake.spawn(111, script), fake.spawn(112, script)
    detached = fake.spawn(120, train, pgid=120, sid=120)  # setsid'd by the trainer
    piped_a, piped_b = fake.spawn(130, sh, pgid=130), fake.spawn(131, sh, pgid=130)  # a | b
    info = {pid: table.lookup(pid) for pid in fake.table if pid != 1}
    assert all(v is not None for v in info.values())

    def rel(a: int, b: int) -> bool:
        x, y = info[a], info[b]
        assert x is not None and y is not None
        assert related(x, y) == related(y, x)
        return related(x, y)

    assert not rel(cat, cp)  # two commands of one interactive shell
    assert not rel(sh, cat)  # the shell's own builtin `echo > MOUNT/...` vs a job's reads
    assert rel(train, worker)  # the trainer and its workers
    assert rel(reader, writer)  # one script, two commands
    assert not rel(reader, cat)
    assert rel(piped_a, piped_b)  # one pipeline
    assert rel(detached, train) is False  # a new session is a new job...
    assert info[detached] is not None and info[detached].descends_from(train)  # ...but a child


def test_a_trainer_that_leads_its_own_session_keeps_its_workers() -> None:
    fake = Procs()
    table = fake.proc_table()
    trainer = fake.spawn(200, 1, pgid=200, sid=200)  # PID 1 of a container, or `setsid python`
    worker = fake.spawn(201, trainer)
    a, b = table.lookup(trainer), table.lookup(worker)
    assert a is not None and b is not None and related(a, b)


def test_threads_map_to_their_process_and_ancestry_is_captured_at_first_sight() -> None:
    fake = Procs()
    table = fake.proc_table()
    sh = shell(fake, 100)
    train = fake.spawn(103, sh, pgid=103)
    worker = fake.spawn(104, train)
    fake.threads[5000] = train  # a reading thread of the trainer
    t, w = table.lookup(5000), table.lookup(worker)
    assert t is not None and t.pid == train and w is not None
    assert w.ancestors[:2] == ((train, train), (sh, sh))
    fake.exit(worker)
    fake.exit(train)
    fake.now += 100  # long gone, re-checked: unknown now, the captured chain stays valid
    assert table.lookup(worker) is None
    assert w.descends_from(train) and related(w, t)


def test_a_reused_pid_is_another_process() -> None:
    fake = Procs()
    table = fake.proc_table()
    sh = shell(fake, 100)
    first = table.lookup(fake.spawn(300, sh, pgid=300))
    fake.exit(300)
    fake.table[300] = (sh, 300, sh, 9999)  # same pid, later start
    assert table.lookup(300) == first  # trusted for TRUST_SECONDS...
    fake.now += procs.TRUST_SECONDS
    second = table.lookup(300)
    assert second is not None and first is not None and second.key != first.key


def test_lookups_are_cached() -> None:
    fake = Procs()
    table = fake.proc_table()
    sh = shell(fake, 100)
    pid = fake.spawn(101, sh, pgid=101)
    table.lookup(pid)
    reads = fake.stat_reads
    for _ in range(1000):
        table.lookup(pid)
    assert fake.stat_reads == reads  # a thousand opens, no /proc read


def test_inputs_for_a_draft_follow_the_rule_and_exclude_the_base() -> None:
    fake = Procs()
    obs = Observer(fake.proc_table(), clock=lambda: fake.now, wall=lambda: 1000.0 + fake.now)
    sh = shell(fake, 100)
    cat = fake.spawn(101, sh, pgid=101)
    train = fake.spawn(103, sh, pgid=103)
    worker = fake.spawn(104, train)
    obs.read(cat, ("p", "data", 0))
    fake.now += 1
    obs.read(worker, ("p", "data", 1))
    fake.now += 1
    obs.read(train, ("p", "model", 2))  # the draft's own base: its parent, not an input
    obs.read(train, ("p", "extra", 0))
    fake.exit(worker)
    assert obs.inputs_for(7) == []  # nobody wrote draft 7 yet
    obs.wrote(train, 7)
    assert obs.inputs_for(7, exclude=("p", "model", 2)) == ["p/data:v1", "p/extra:v0"]
    assert obs.reads_under(train) == [
        ("p/data:v1", 1001.0),
        ("p/extra:v0", 1002.0),
        ("p/model:v2", 1002.0),
    ]
    assert obs.reads_under(train, since=1001.5) == [("p/extra:v0", 1002.0), ("p/model:v2", 1002.0)]
    assert obs.reads_under(sh) == [
        ("p/data:v0", 1000.0),
        ("p/data:v1", 1001.0),
        ("p/extra:v0", 1002.0),
        ("p/model:v2", 1002.0),
    ]
    obs.forget_draft(7)
    assert obs.inputs_for(7) == []


def test_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observe, "MAX_READERS", 8)
    monkeypatch.setattr(observe, "MAX_VERSIONS_PER_READER", 3)
    monkeypatch.setattr(observe, "MAX_WRITERS", 2)
    monkeypatch.setattr(observe, "MAX_DRAFTS", 2)
    fake = Procs()
    obs = Observer(fake.proc_table(), clock=lambda: fake.now)
    sh = shell(fake, 100)
    job = fake.spawn(101, sh, pgid=101)
    for n in range(5):
        obs.read(job, ("p", "d", n))
    obs.wrote(job, 1)
    assert obs.inputs_for(1) == ["p/d:v0", "p/d:v1", "p/d:v2"]  # the first three only
    for pid in range(200, 220):  # twenty readers: the idlest quarter goes each time it is full
        fake.now += 1
        obs.read(fake.spawn(pid, sh, pgid=pid), ("p", "x", pid))
    assert len(obs._readers) <= 8
    assert obs.reads_under(219) == [("p/x:v219", pytest.approx(obs.reads_under(219)[0][1]))]
    assert obs.reads_under(200) == []  # dropped as the idlest
    for draft in (2, 3):
        obs.wrote(job, draft)
    assert obs.writers(1) == []  # the oldest draft's writers went (MAX_DRAFTS)
    for pid in (300, 301, 302):
        obs.wrote(fake.spawn(pid, sh, pgid=pid), 3)
    assert len(obs.writers(3)) == 2


def test_keep_seconds_expire_idle_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observe, "EXPIRE_EVERY", 1)
    fake = Procs()
    obs = Observer(fake.proc_table(), clock=lambda: fake.now)
    sh = shell(fake, 100)
    obs.read(fake.spawn(101, sh, pgid=101), ("p", "old", 0))
    fake.now += observe.KEEP_SECONDS + 1
    obs.read(fake.spawn(102, sh, pgid=102), ("p", "new", 0))
    assert obs.reads_under(sh) == [("p/new:v0", pytest.approx(obs.reads_under(sh)[0][1]))]


def test_a_query_and_its_answer() -> None:
    fake = Procs()
    obs = Observer(fake.proc_table(), clock=lambda: fake.now, wall=lambda: 5.0)
    job = fake.spawn(101, shell(fake, 100), pgid=101)
    for n in range(1000):  # no 64 KiB xattr limit: the answer is a file
        obs.read(job, ("a-rather-long-project-name", "an-artifact-with-a-long-name", n))
    rid = "0123456789abcdef" * 2
    request, body = obs.answer(json.dumps({"pid": 101, "request": rid}).encode())
    assert request == rid and body["ok"] is True and len(body["reads"]) == 1000
    assert body["reads"][0] == {
        "ref": "a-rather-long-project-name/an-artifact-with-a-long-name:v0",
        "read": 5.0,
    }
    for bad in (
        b"",
        b"[]",
        b'{"pid": 0, "request": "%s"}' % rid.encode(),
        b'{"pid": 1, "request": "../x"}',
    ):
        with pytest.raises(InvalidInput):
            obs.answer(bad)


def test_parse_stat_and_the_real_proc() -> None:
    st = parse_stat("42 (a) b (c)) S 7 8 9 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0")
    assert (st.pid, st.ppid, st.pgid, st.sid, st.start) == (42, 7, 8, 9, 12345)
    table = ProcTable(lambda: 0.0)
    me = table.lookup(os.getpid())
    assert me is not None
    assert (me.pid, me.pgid, me.sid) == (os.getpid(), os.getpgid(0), os.getsid(0))
    assert me.ancestors[0][0] == os.getppid()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        info = table.lookup(child.pid)
        assert info is not None and info.descends_from(os.getpid()) and related(info, me)
    finally:
        child.communicate(b"")
    assert table.lookup(0) is None and table.lookup(2**22 + 12345) is None
