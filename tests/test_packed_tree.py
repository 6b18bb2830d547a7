"""The packed version tree (``fs/packed.py``) and the canonical manifest stream it is built
from (``manifest_stream.py``): pure, checked against a naive tree of dicts."""

from __future__ import annotations

import errno
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artfs.errors import IntegrityError, InvalidInput
from artfs.fs.inodes import FileNode, InodeTable, TreeDirNode, VersionKey, VersionNode
from artfs.fs.metastore import MetaStore
from artfs.fs.packed import ROOT, PackedTree, pack, pack_canonical, walk
from artfs.manifest import Manifest
from artfs.manifest_stream import CanonicalParser, canonical_chunks
from artfs.models import VersionSummary


def sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def packed(paths: list[str]) -> tuple[Manifest, PackedTree]:
    manifest = Manifest.build((p, i, sha(i)) for i, p in enumerate(paths))
    return manifest, pack((p, e.size, e.sha256) for p, e in manifest.items())


def names(tree: PackedTree, index: int) -> list[str]:
    return [tree.name(c) for c in tree.children(index)]


def test_lookup_readdir_and_parents() -> None:
    _, tree = packed(["b/c", "a", "b.txt/x", "b/d/e", "b0", "é/ü"])
    assert names(tree, ROOT) == ["a", "b", "b.txt", "b0", "é"]  # by name, not path order
    b = tree.lookup(ROOT, "b")
    assert b is not None and tree.is_dir(b)
    assert names(tree, b) == ["c", "d"]
    e = tree.lookup(tree.lookup(b, "d") or 0, "e")
    assert e is not None and tree.path(e) == "b/d/e"
    assert tree.size(e) == 3 and tree.sha256(e) == sha(3)
    assert tree.parent(tree.parent(e)) == b and tree.parent(b) == ROOT
    assert tree.lookup(ROOT, "missing") is None
    assert tree.lookup(e, "x") is None  # a file has no children
    assert tree.lookup(ROOT, "\udcff") is None  # a name the kernel gave that is not UTF-8
    assert tree.children(e) == ()
    assert [tree.path(i) for i in tree.files_of(b)] == ["b/c"]
    assert len(tree) == 10 and tree.files == 6


def test_rejects_what_a_manifest_may_not_hold() -> None:
    with pytest.raises(InvalidInput, match="out of order"):
        pack([("b", 1, sha(1)), ("a", 1, sha(1))])
    with pytest.raises(InvalidInput, match="out of order"):
        pack([("a", 1, sha(1)), ("a", 1, sha(1))])
    with pytest.raises(InvalidInput, match="is a file and a directory"):
        pack([("a", 1, sha(1)), ("a.txt", 1, sha(1)), ("a/b", 1, sha(1))])
    with pytest.raises(InvalidInput, match="sha256"):
        pack([("a", 1, "AB" * 32)])
    with pytest.raises(InvalidInput):
        pack([("a/../b", 1, sha(1))])


def test_deep_paths_need_no_recursion() -> None:
    depth = sys.getrecursionlimit() * 3
    path = "/".join(["d"] * depth) + "/f"
    tree = pack([(path, 7, sha(7))])
    index = ROOT
    for _ in range(depth):
        index = tree.lookup(index, "d") or -1
    leaf = tree.lookup(index, "f")
    assert leaf is not None and tree.path(leaf) == path
    assert len(list(walk(tree))) == depth + 1


def version_node(ino: int = 10) -> VersionNode:
    summary = VersionSummary(0, "0" * 64, 1.0, 0, 0)
    return VersionNode(ino, 2, VersionKey("p", "a", 0), summary)


def test_inode_numbers_are_stable_across_rebuilds() -> None:
    _, tree = packed([f"d{i % 7}/f{i}" for i in range(50)])
    table = InodeTable(0.0)
    version = table.new_local(lambda ino: version_node(ino))
    table.build_version(version, tree)
    first = {tree.path(i): version.ino_of(i) for i in walk(tree)}
    assert len(set(first.values())) == len(first) == len(tree)
    node = table.get(first["d3/f10"])
    assert isinstance(node, FileNode) and node.sha256 == sha(10) and node.size == 10
    assert table.path_in_version(node) == "d3/f10"
    parent = table.get(node.parent)
    assert isinstance(parent, TreeDirNode) and parent.name == "d3"
    assert table.get(parent.parent) is version
    # the kernel looks up one file and forgets it: the tree goes, its numbers stay reserved
    table.remember(node)
    other = table.new_local(lambda ino: version_node(ino))
    table.forget(node.ino, 1)
    assert not version.built and table.find(node.ino) is None
    _, again = packed([f"d{i % 7}/f{i}" for i in range(50)])
    table.build_version(version, again)
    assert {again.path(i): version.ino_of(i) for i in walk(again)} == first
    assert other.ino not in first.values()
    assert table.find(first["d3/f10"]) is not None


def test_canonical_stream_in_any_chunks() -> None:
    manifest = Manifest.build(
        [("a\nb", 5, sha(1)), ("a/x y", 0, sha(2)), ("ü/z", 123456789012, sha(3))]
    )
    raw = b"".join(canonical_chunks(manifest))
    assert hashlib.sha256(raw).hexdigest() == manifest.digest
    for size in (1, 2, 7, 64, 1000):
        parser = CanonicalParser()
        got = []
        for k in range(0, len(raw), size):
            got += parser.feed(raw[k : k + size])
        assert parser.finish() == manifest.digest
        assert got == [(p, e.size, e.sha256) for p, e in manifest.items()]
    tree = pack_canonical([raw[:10], raw[10:]], manifest.digest, "p/a:v0")
    assert tree.path(tree.lookup(ROOT, "a\nb") or 0) == "a\nb"
    with pytest.raises(IntegrityError):
        pack_canonical([raw], "0" * 64, "p/a:v0")
    with pytest.raises(InvalidInput, match="ends inside"):
        pack_canonical([raw[:-1]], manifest.digest, "p/a:v0")
    with pytest.raises(InvalidInput, match="size"):
        CanonicalParser().feed(b"a\x0007\x00" + sha(1).encode() + b"\n")
    with pytest.raises(InvalidInput, match="LF"):
        CanonicalParser().feed(b"a\x007\x00" + sha(1).encode() + b"X")
    with pytest.raises(InvalidInput, match="over"):
        CanonicalParser().feed(b"x" * (1 << 17))


# --- property: the packed tree answers like a naive tree of dicts --------------------------

component = st.text(alphabet=st.sampled_from(list("ab.-_/ é\n")), min_size=1, max_size=4).filter(
    lambda s: "/" not in s and s not in (".", "..")
)
paths = st.lists(st.lists(component, min_size=1, max_size=4).map("/".join), min_size=0, max_size=40)


def naive(manifest: Manifest) -> dict[str, object]:
    root: dict[str, object] = {}
    for path, entry in manifest.items():
        *dirs, name = path.split("/")
        node = root
        for d in dirs:
            child = node.setdefault(d, {})
            assert isinstance(child, dict)
            node = child
        node[name] = entry
    return root


@settings(max_examples=300, deadline=None)
@given(paths)
def test_packed_tree_agrees_with_a_dict_tree(candidates: list[str]) -> None:
    try:
        manifest = Manifest.build((p, i, sha(i)) for i, p in enumerate(dict.fromkeys(candidates)))
    except InvalidInput:
        return  # a file and a directory of the same name: the manifest refuses it too
    raw = b"".join(canonical_chunks(manifest, chunk=16))
    tree = pack_canonical([raw[k : k + 5] for k in range(0, len(raw), 5)], manifest.digest, "x")
    stack: list[tuple[int, dict[str, object], str]] = [(ROOT, naive(manifest), "")]
    seen = 0
    while stack:
        index, expected, prefix = stack.pop()
        assert names(tree, index) == sorted(expected, key=lambda n: n.encode())
        for name, value in expected.items():
            child = tree.lookup(index, name)
            assert child is not None and tree.parent(child) == index
            path = prefix + name
            assert tree.path(child) == path
            seen += 1
            if isinstance(value, dict):
                assert tree.is_dir(child)
                stack.append((child, value, path + "/"))
            else:
                assert not tree.is_dir(child)
                assert (tree.size(child), tree.sha256(child)) == (
                    manifest[path].size,
                    manifest[path].sha256,
                )
        assert tree.lookup(index, "zz-none") is None
    assert seen == len(tree) and tree.files == len(manifest)
    again = pack((p, e.size, e.sha256) for p, e in manifest.items())
    assert [again.path(i) for i in range(1, len(again) + 1)] == [
        tree.path(i) for i in range(1, len(tree) + 1)
    ]


# --- the manifest on its way to disk ---------------------------------------------------------


class _FullDisk:
    """A file that takes ``room`` bytes (the last write partly) and then fails like a full
    disk."""

    def __init__(self, inner: Any, room: int) -> None:
        self.inner, self.room = inner, room

    def write(self, data: memoryview) -> int:
        if not self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = int(self.inner.write(data[: self.room]))
        self.room -= n
        return n

    def close(self) -> None:
        self.inner.close()


def test_manifest_writer_keeps_the_file_only_when_the_digest_matches(tmp_path: Path) -> None:
    manifest = Manifest.build((f"d/f{i}", i, sha(i)) for i in range(100))
    raw = b"".join(canonical_chunks(manifest))
    store = MetaStore(tmp_path)
    key = VersionKey("p", "a", 0)

    writer = store.manifest_writer(key, "0" * 64)
    writer.write(raw)
    with pytest.raises(IntegrityError):
        writer.finish()
    writer.close()
    assert store.load_tree(key, "0" * 64) is None
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no temp file left behind

    writer = store.manifest_writer(key, manifest.digest)
    for k in range(0, len(raw), 1000):
        writer.write(raw[k : k + 1000])
    tree = writer.finish()
    writer.close()
    assert tree.files == 100 and tree.path(tree.lookup(tree.lookup(ROOT, "d") or 0, "f7") or 0)
    again = store.load_tree(key, manifest.digest)  # from disk, no registry
    assert again is not None and [again.path(i) for i in walk(again)] == [
        tree.path(i) for i in walk(tree)
    ]
    # damage on disk is noticed, and the file is dropped so that it is fetched again
    (disk,) = [p for p in tmp_path.rglob("*.manifest")]
    disk.write_bytes(raw.replace(b"d/f7\x00", b"d/f8\x00"))
    assert store.load_tree(key, manifest.digest) is None and not disk.exists()


def test_a_full_disk_costs_memory_not_the_build(tmp_path: Path) -> None:
    manifest = Manifest.build((f"f{i}", i, sha(i)) for i in range(300))
    raw = b"".join(canonical_chunks(manifest))
    key = VersionKey("p", "a", 0)
    writer = MetaStore(tmp_path).manifest_writer(key, manifest.digest)
    assert writer._file is not None
    writer._file = _FullDisk(writer._file, 5000)  # type: ignore[assignment]
    for k in range(0, len(raw), 3000):
        writer.write(raw[k : k + 3000])
    tree = writer.finish()
    writer.close()
    assert tree.files == 300 and tree.sha256(tree.lookup(ROOT, "f299") or 0) == sha(299)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    # a metadata directory that cannot even be made
    (tmp_path / "blocked").write_text("a file where a directory should be")
    writer = MetaStore(tmp_path / "blocked").manifest_writer(key, manifest.digest)
    writer.write(raw)
    assert writer.finish().files == 300
    writer.close()


def test_a_manifest_an_older_mount_kept_as_json_is_still_read(tmp_path: Path) -> None:
    manifest = Manifest.build((f"d{i % 3}/f{i}", i, sha(i)) for i in range(30))
    store = MetaStore(tmp_path)
    key = VersionKey("p", "a", 4)
    old = store._version_file(key, manifest.digest, "manifest")  # <N>-<digest>.manifest.json
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps(manifest.to_json()))
    tree = store.load_tree(key, manifest.digest)
    assert tree is not None and tree.files == 30
    assert {tree.path(i) for i in walk(tree) if not tree.is_dir(i)} == set(manifest)
    assert store.load_tree(key, "f" * 64) is None  # another digest: not this file
