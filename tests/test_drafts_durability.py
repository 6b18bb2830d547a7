"""Drafts survive a SIGKILL of the process that owns them; a full state dir gives ENOSPC."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from artfs.drafts.model import DraftKey
from artfs.drafts.store import DraftStore
from artfs.errors import StorageFull

from .drafts_helpers import PathDraft
from .e2e import small_tmpfs as mount_small_tmpfs

KEY = DraftKey("reg", "proj", "art", "work")

WRITER = textwrap.dedent(
    """
    import hashlib, os, sys
    from pathlib import Path
    from artfs.drafts.model import DraftKey
    from artfs.drafts.store import DraftStore

    def content(i):
        return hashlib.sha256(str(i).encode()).digest() * (1 + i % 50)

    store = DraftStore(Path(sys.argv[1]))
    draft = store.create_draft(DraftKey("reg", "proj", "art", "work"))
    root = draft.root
    ckpts = store.mkdir(root, "ckpt", 0o755).id
    # an fsync'd file that is never closed
    synced, _ = store.create(root, "synced.bin", 0o644, os.O_WRONLY)
    synced.pwrite(0, b"S" * 100000)
    synced.fsync()
    # a file being written when the kill comes (no promise about its bytes)
    loose, _ = store.create(root, "loose.bin", 0o644, os.O_WRONLY)
    i = 0
    while True:
        # write-then-rename, like a checkpoint writer
        h, _ = store.create(ckpts, "next.tmp", 0o644, os.O_WRONLY)
        data = content(i)
        for off in range(0, len(data), 1000):
            h.pwrite(off, data[off:off + 1000])
        h.release()
        store.rename(ckpts, "next.tmp", ckpts, f"ckpt-{i}")
        if i >= 3:
            store.unlink(ckpts, f"ckpt-{i - 3}")
        loose.pwrite(i * 10, b"0123456789")
        print(i, flush=True)
        i += 1
    """
)


def _content(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (1 + i % 50)


@pytest.mark.parametrize("delay", [0.2, 0.5])
def test_acknowledged_writes_survive_sigkill(tmp_path: Path, delay: float) -> None:
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(state)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.strip() == "0", first
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    last = int([first, *out.split()][-1])

    store = DraftStore(state)
    try:
        (draft,) = store.drafts()
        d = PathDraft(store, draft)
        tree = d.tree()
        assert tree["synced.bin"] == b"S" * 100000
        ckpts = {p: b for p, b in tree.items() if p.startswith("ckpt/ckpt-")}
        numbers = sorted(int(p.rsplit("-", 1)[1]) for p in ckpts)
        # the last acknowledged checkpoints are there (the writer may have gone one step
        # further, unacknowledged), and each one is whole
        assert {max(0, last - 1), last} <= set(numbers) <= set(range(last - 2, last + 2))
        for n in numbers:
            assert ckpts[f"ckpt/ckpt-{n}"] == _content(n)
        loose = tree["loose.bin"]
        assert loose is not None and loose[: (last + 1) * 10] == b"0123456789" * (last + 1)
        # no data file is left that the tree does not own
        owned = {str(store.data_path(d.node(p))) for p, b in tree.items() if b is not None}
        on_disk = {str(p) for p in (state / "data" / str(draft.id)).iterdir()}
        assert on_disk == owned
    finally:
        store.close()


# --- a full state directory -------------------------------------------------------------------
@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mount_small_tmpfs(tmp_path / "small", "2m") as point:
        yield point


def test_full_state_dir_gives_enospc_and_keeps_what_was_there(small_tmpfs: Path) -> None:
    store = DraftStore(small_tmpfs / "state")
    d = PathDraft(store, store.create_draft(KEY))
    d.write("kept.bin", b"K" * 100_000)
    chunk = os.urandom(64 * 1024)
    errors: list[StorageFull] = []
    written = 0
    for i in range(200):  # 12.5 MiB: far more than fits
        try:
            d.write(f"fill-{i}", chunk)
            written += 1
        except StorageFull as e:
            errors.append(e)
            if len(errors) >= 3:
                break
    assert errors, "the tmpfs never filled up"
    assert all(e.errno == errno.ENOSPC for e in errors)
    assert "full" in str(errors[0])
    assert d.read("kept.bin") == b"K" * 100_000
    assert d.read("fill-0") == chunk
    # room again after removing something; the store still works and reopens
    for i in range(written):
        d.unlink(f"fill-{i}")
    d.write("after.bin", b"ok")
    tree = d.tree()
    store.close()
    store2 = DraftStore(small_tmpfs / "state")
    try:
        d2 = PathDraft(store2, store2.drafts()[0])
        assert d2.tree() == tree
        assert d2.read("kept.bin") == b"K" * 100_000
    finally:
        store2.close()
