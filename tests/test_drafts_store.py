"""The draft store: every operation inside a draft, persistence, copy-on-write, freezing."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from artfs.client.memory import MemoryRegistryClient
from artfs.drafts.cow import Materializer
from artfs.drafts.model import DraftKey
from artfs.drafts.store import RENAME_EXCHANGE, RENAME_NOREPLACE, DraftStore
from artfs.errors import (
    AlreadyExists,
    Conflict,
    CrossDevice,
    InvalidInput,
    IsADirectory,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
)
from artfs.fs.testing import MemoryBlobCache
from artfs.manifest import Manifest

from .drafts_helpers import PathDraft

KEY = DraftKey("reg", "proj", "art", "work")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DraftStore]:
    s = DraftStore(tmp_path / "state")
    yield s
    s.close()


@pytest.fixture
def d(store: DraftStore) -> PathDraft:
    return PathDraft(store, store.create_draft(KEY))


def test_create_write_read_stat(d: PathDraft) -> None:
    d.mkdir("a")
    d.write("a/f.bin", b"hello")
    d.write("a/f.bin", b"J", 0)
    d.write("a/f.bin", b"!!", 7)  # a hole between 5 and 7
    assert d.read("a/f.bin") == b"Jello\0\0!!"
    st = d.store.stat(d.node("a/f.bin"))
    assert stat.S_ISREG(st.mode) and st.size == 9 and st.nlink == 1
    assert d.store.stat(d.node("a")).is_dir
    assert d.store.stat(d.draft.root).nlink == 3  # '.', parent entry, and a's '..'


def test_read_while_writing(d: PathDraft) -> None:
    parent, name = d.split("f")
    w, _ = d.store.create(parent, name, 0o644, os.O_WRONLY)
    r = d.store.open(d.node("f"), os.O_RDONLY)
    w.pwrite(0, b"abc")
    assert r.pread(0, 10) == b"abc"
    w.pwrite(3, b"def")
    assert r.pread(2, 10) == b"cdef"
    assert d.store.writers(d.draft.id) == ["f"]
    w.release()
    r.release()
    assert d.store.writers(d.draft.id) == []


def test_truncate_and_otrunc(d: PathDraft) -> None:
    d.write("f", b"0123456789")
    d.truncate("f", 4)
    assert d.read("f") == b"0123"
    d.truncate("f", 6)
    assert d.read("f") == b"0123\0\0"
    h = d.store.open(d.node("f"), os.O_WRONLY | os.O_TRUNC)
    h.release()
    assert d.read("f") == b""


def test_append_writes_at_the_end(d: PathDraft) -> None:
    d.write("log", b"one\n")
    h = d.store.open(d.node("log"), os.O_WRONLY | os.O_APPEND)
    h.pwrite(0, b"two\n")
    h.release()
    assert d.read("log") == b"one\ntwo\n"


def test_exclusive_create(d: PathDraft) -> None:
    d.write("f", b"x")
    with pytest.raises(AlreadyExists):
        d.store.create(d.draft.root, "f", 0o644, os.O_WRONLY | os.O_EXCL)
    with pytest.raises(AlreadyExists):
        d.mkdir("f")


def test_write_then_rename_over_existing(d: PathDraft) -> None:
    d.write("ckpt.pt", b"old")
    d.write("ckpt.pt.tmp", b"new contents")
    d.rename("ckpt.pt.tmp", "ckpt.pt")
    assert d.tree() == {"ckpt.pt": b"new contents"}


def test_rename_directories(d: PathDraft) -> None:
    d.mkdir("a")
    d.mkdir("a/b")
    d.write("a/b/f", b"1")
    d.mkdir("empty")
    d.rename("a", "empty")  # over an empty directory
    assert d.tree() == {"empty": None, "empty/b": None, "empty/b/f": b"1"}
    d.mkdir("full")
    d.write("full/x", b"x")
    with pytest.raises(NotEmpty):
        d.rename("empty", "full")
    with pytest.raises(InvalidInput):
        d.rename("empty", "empty/b/inside")
    with pytest.raises(IsADirectory):
        d.rename("full/x", "empty")
    with pytest.raises(NotADirectory):
        d.rename("empty", "full/x")


def test_rename_flags(d: PathDraft) -> None:
    d.write("a", b"A")
    d.write("b", b"B")
    with pytest.raises(AlreadyExists):
        d.rename("a", "b", RENAME_NOREPLACE)
    d.rename("a", "b", RENAME_EXCHANGE)
    assert d.tree() == {"a": b"B", "b": b"A"}


def test_rmdir_unlink(d: PathDraft) -> None:
    d.mkdir("dir")
    d.write("dir/f", b"x")
    with pytest.raises(NotEmpty):
        d.rmdir("dir")
    with pytest.raises(IsADirectory):
        d.unlink("dir")
    with pytest.raises(NotADirectory):
        d.rmdir("dir/f")
    d.unlink("dir/f")
    d.rmdir("dir")
    assert d.tree() == {}
    with pytest.raises(NotFound):
        d.unlink("dir")


def test_unlinked_file_stays_readable_while_open(d: PathDraft) -> None:
    d.write("f", b"still here")
    h = d.store.open(d.node("f"), os.O_RDONLY)
    d.unlink("f")
    assert h.pread(0, 100) == b"still here"
    h.release()
    assert not any((d.store.data_dir / str(d.draft.id)).iterdir())


def test_chmod_utimens(d: PathDraft) -> None:
    d.write("f", b"x")
    st = d.store.setattr(d.node("f"), mode=0o600, mtime_ns=1_000_000_000)
    assert stat.S_IMODE(st.mode) == 0o600 and st.mtime_ns == 1_000_000_000


def test_special_files_are_refused(d: PathDraft) -> None:
    with pytest.raises(NotPermitted):
        d.store.mknod(d.draft.root, "fifo", stat.S_IFIFO | 0o644)
    st = d.store.mknod(d.draft.root, "plain", stat.S_IFREG | 0o644)
    assert stat.S_ISREG(st.mode)
    assert d.store.refuse_special("symlink x").errno == 1  # EPERM


def test_bad_names(d: PathDraft) -> None:
    for bad in ("", ".", "..", "a/b", "x" * 256):
        with pytest.raises(InvalidInput):
            d.store.mkdir(d.draft.root, bad, 0o755)


def test_draft_names_and_collisions(store: DraftStore) -> None:
    store.create_draft(KEY)
    with pytest.raises(AlreadyExists):
        store.create_draft(KEY)
    for bad in ("v3", "latest", "a:b"):
        with pytest.raises(InvalidInput):
            store.create_draft(DraftKey("reg", "proj", "art", bad))


def test_rename_between_drafts_is_exdev(store: DraftStore) -> None:
    a = PathDraft(store, store.create_draft(KEY))
    b = PathDraft(store, store.create_draft(DraftKey("reg", "proj", "art", "other")))
    a.write("f", b"x")
    with pytest.raises(CrossDevice):
        store.rename(a.draft.root, "f", b.draft.root, "f")


def test_everything_survives_reopening(tmp_path: Path) -> None:
    state = tmp_path / "state"
    s1 = DraftStore(state)
    d = PathDraft(s1, s1.create_draft(KEY))
    d.mkdir("x")
    d.write("x/a", b"aaa")
    d.write("b", b"bb")
    d.rename("b", "x/b")
    s1.setattr(d.node("x/a"), mode=0o600, mtime_ns=5_000_000_000)
    tree = d.tree()
    s1.close()
    s2 = DraftStore(state)
    (draft,) = s2.drafts()
    d2 = PathDraft(s2, draft)
    assert d2.tree() == tree
    st = s2.stat(d2.node("x/a"))
    assert stat.S_IMODE(st.mode) == 0o600 and st.mtime_ns == 5_000_000_000
    s2.close()


def test_orphans_are_collected(tmp_path: Path) -> None:
    state = tmp_path / "state"
    s1 = DraftStore(state)
    d = PathDraft(s1, s1.create_draft(KEY))
    d.write("f", b"x")
    s1.close()
    stray = state / "data" / str(d.draft.id) / "99999"
    stray.write_bytes(b"left by a crash")
    (state / "data" / "777").mkdir()
    s2 = DraftStore(state)
    assert not stray.exists() and not (state / "data" / "777").exists()
    assert PathDraft(s2, s2.drafts()[0]).tree() == {"f": b"x"}
    s2.close()


def test_one_owner_per_state_dir(store: DraftStore) -> None:
    with pytest.raises(Conflict):
        DraftStore(store.state_dir)


def test_other_process_drafts_are_picked_up(store: DraftStore) -> None:
    other = DraftStore(store.state_dir, owner=False)
    other.create_draft(DraftKey("reg", "proj", "art", "from-cli"))
    other.close()
    assert [d.key.name for d in store.refresh()] == ["from-cli"]


def test_sequential_writes_are_hashed_on_the_way(d: PathDraft) -> None:
    data = os.urandom(300_000)
    parent, name = d.split("seq")
    h, _ = d.store.create(parent, name, 0o644, os.O_WRONLY)
    for i in range(0, len(data), 65536):
        h.pwrite(i, data[i : i + 65536])
    h.release()
    d.write("rand", b"xxxx")
    d.write("rand", b"y", 1)  # not an append: must be hashed at commit
    snap = {f.path: f for f in d.store.snapshot(d.draft.id)}
    assert snap["seq"].sha256 == hashlib.sha256(data).hexdigest()
    assert snap["rand"].sha256 is None


def test_recorded_digest_is_dropped_before_a_change(tmp_path: Path) -> None:
    state = tmp_path / "state"
    s1 = DraftStore(state)
    d = PathDraft(s1, s1.create_draft(KEY))
    d.write("f", b"first")
    assert s1.snapshot(d.draft.id)[0].sha256 == hashlib.sha256(b"first").hexdigest()
    h = s1.open(d.node("f"), os.O_WRONLY)
    h.pwrite(0, b"FIRST")  # not released: as if the daemon died now
    s1._db.close()  # simulate a crash: nothing else reaches disk
    for node in s1._nodes.values():
        s1._close_fd(node)
    if s1._owner_fd is not None:
        os.close(s1._owner_fd)
    s2 = DraftStore(state)
    (snap,) = s2.snapshot(s2.drafts()[0].id)
    assert snap.sha256 is None  # must be rehashed, never the stale digest
    s2.close()


def test_freeze_refuses_changes(d: PathDraft) -> None:
    d.write("f", b"x")
    d.store.begin_commit(d.draft.id)
    with pytest.raises(Conflict):
        d.write("g", b"y")
    with pytest.raises(Conflict):
        d.store.open(d.node("f"), os.O_RDWR)
    assert d.read("f") == b"x"  # reading is fine
    d.store.end_commit(d.draft.id)
    d.write("g", b"y")


def test_discard(store: DraftStore) -> None:
    d = PathDraft(store, store.create_draft(KEY))
    d.write("f", b"x")
    with pytest.raises(NotEmpty):
        store.discard_draft(d.draft.id)
    d.unlink("f")
    store.discard_draft(d.draft.id)
    assert store.drafts() == []
    assert store.find_draft(KEY) is None


# --- drafts from a base version ------------------------------------------------------------
def _base(registry: MemoryRegistryClient) -> Manifest:
    files = {"data/a.bin": os.urandom(200_000), "data/b.txt": b"bee", "top": b"t"}
    info = registry.publish("proj", "art", files)
    return registry.versions[("proj", "art", info.number)][1]


def test_base_files_are_references(store: DraftStore) -> None:
    manifest = _base(MemoryRegistryClient())
    draft = store.create_draft(KEY, base=0, manifest=manifest)
    d = PathDraft(store, draft)
    h = store.open(d.node("data/a.bin"), os.O_RDONLY)
    assert h.blob is not None and h.blob.sha256 == manifest["data/a.bin"].sha256
    h.release()
    assert store.stat(d.node("data/a.bin")).size == 200_000
    assert not (store.data_dir / str(draft.id)).exists()  # no bytes copied
    snap = store.snapshot(draft.id)
    assert [(f.path, f.sha256, f.source) for f in snap] == [
        (p, manifest[p].sha256, None) for p in manifest
    ]


async def test_copy_on_write(store: DraftStore, tmp_path: Path) -> None:
    registry = MemoryRegistryClient()
    manifest = _base(registry)
    data = registry.blobs[manifest["data/a.bin"].sha256]
    cache = MemoryBlobCache(registry, tmp_path / "cache")
    draft = store.create_draft(KEY, base=0, manifest=manifest)
    d = PathDraft(store, draft)
    cow = Materializer(store, cache)

    # O_TRUNC needs no bytes at all
    h = store.open(d.node("data/b.txt"), os.O_WRONLY | os.O_TRUNC)
    h.pwrite(0, b"new")
    h.release()
    assert cache.fetches == 0

    # a write in the middle: the file is copied once, lazily, then changed
    node = d.node("data/a.bin")
    w = store.open(node, os.O_RDWR)
    r = store.open(node, os.O_RDONLY)
    assert w.blob is not None and cache.fetches == 0  # opening copies nothing
    with pytest.raises(InvalidInput):
        w.pwrite(10, b"X")  # the mount must call ensure_local first
    await cow.ensure_local(node)
    await cow.ensure_local(node)
    assert cache.fetches == 1 and w.blob is None and r.blob is None
    w.pwrite(10, b"XYZ")
    assert r.pread(0, 20) == data[:10] + b"XYZ" + data[13:20]
    w.release()
    r.release()
    expected = data[:10] + b"XYZ" + data[13:]
    assert d.read("data/a.bin") == expected
    snap = {f.path: f for f in store.snapshot(draft.id)}
    assert snap["data/a.bin"].sha256 is None and snap["data/a.bin"].source is not None
    assert snap["top"].source is None  # untouched files stay references
