"""What versions keep besides bytes (``manifest_extras.py``): executable bits, symlinks
inside the version, empty directories. Pure: manifests, their canonical bytes and digest,
the packed tree, the registry's stored form, a local tree's scan, and the cache's pins."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from artfs.cache.eviction import evict_to
from artfs.cache.layout import CacheLayout
from artfs.errors import InvalidInput
from artfs.fs.packed import ROOT, PackedTree, pack, pack_canonical
from artfs.manifest import Manifest
from artfs.manifest_stream import CanonicalParser, canonical_chunks, records
from artfs.registry.core import decode_manifest, encode_manifest
from artfs.server.requestio import canonical_manifest
from artfs.treescan import scan

EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
FILES = [("run.sh", 19, "1" * 64), ("data/a.txt", 6, "2" * 64), ("données/ü.txt", 0, EMPTY_SHA)]


def test_a_manifest_without_the_new_facts_keeps_its_digest_bytes_and_json() -> None:
    """Pinned from the code before this change: existing versions keep their digests."""
    m = Manifest.build(FILES)
    assert m.digest == "4162279a6b853ab15ca3385e5b060a62813a527a014e8e5ace0f7209724fc15b"
    assert b"".join(canonical_chunks(m)) == (
        b"data/a.txt\x006\x00" + b"2" * 64 + b"\n"
        b"donn\xc3\xa9es/\xc3\xbc.txt\x000\x00" + EMPTY_SHA.encode() + b"\n"
        b"run.sh\x0019\x00" + b"1" * 64 + b"\n"
    )
    assert m.to_json() == {"files": [[p, s, h] for p, s, h in sorted(FILES)]}
    # and a JSON manifest as old clients send it is the same manifest
    assert Manifest.from_json({"files": [list(f) for f in FILES]}).digest == m.digest


def shaped() -> Manifest:
    return Manifest.build(
        FILES,
        executable=["run.sh"],
        symlinks=[("data/current", "a.txt"), ("latest", "data"), ("bin/a", "../latest/a.txt")],
        dirs=["logs/empty", "logs", "cache"],  # 'logs' is not empty: dropped
    )


def test_the_new_facts_change_the_digest_and_round_trip_every_form() -> None:
    m = shaped()
    assert m.digest != Manifest.build(FILES).digest
    assert m.executable == {"run.sh"}
    assert dict(m.symlinks) == {
        "bin/a": "../latest/a.txt",
        "data/current": "a.txt",
        "latest": "data",
    }
    assert m.dirs == ("cache", "logs/empty")
    doc = m.to_json()
    assert doc["executable"] == ["run.sh"] and doc["dirs"] == ["cache", "logs/empty"]
    again = Manifest.from_json(json.loads(json.dumps(doc)))
    assert again.digest == m.digest and again.extras == m.extras
    # each fact is covered by the digest
    for other in (
        Manifest.build(FILES, symlinks=[("data/current", "a.txt")]),
        Manifest.build(FILES, executable=["data/a.txt"]),
        Manifest.build(FILES, dirs=["cache"]),
    ):
        assert other.digest not in (m.digest, Manifest.build(FILES).digest)
    # canonical bytes, parsed in tiny chunks (records split anywhere), hash to the digest
    raw = b"".join(canonical_chunks(m))
    parser = CanonicalParser()
    parsed = [r for i in range(0, len(raw), 7) for r in parser.feed(raw[i : i + 7])]
    assert parser.finish() == m.digest
    assert parsed == list(records(m))


def test_the_registry_stores_and_serves_them() -> None:
    m = shaped()
    stored = encode_manifest(m)
    back = decode_manifest(stored, m.digest)
    assert back.extras == m.extras and back.to_json() == m.to_json()
    assert b"".join(canonical_chunks(m)) == canonical_manifest(stored, False)
    plain = Manifest.build(FILES)  # an old stored manifest: served exactly as before
    assert canonical_manifest(encode_manifest(plain), False) == b"".join(canonical_chunks(plain))


def test_the_packed_tree_shows_executables_links_and_empty_dirs() -> None:
    m = shaped()
    for tree in (
        pack_canonical(canonical_chunks(m, chunk=16), m.digest, "p/a:v0"),
        pack(records(m)),
    ):

        def at(path: str, tree: PackedTree = tree) -> int:
            index = ROOT
            for name in path.split("/"):
                found = tree.lookup(index, name)
                assert found is not None, path
                index = found
            return index

        assert tree.is_exec(at("run.sh")) and not tree.is_exec(at("data/a.txt"))
        assert tree.is_link(at("latest")) and tree.link_target(at("latest")) == "data"
        assert tree.link_target(at("bin/a")) == "../latest/a.txt"
        assert tree.size(at("bin/a")) == len("../latest/a.txt")
        assert tree.is_dir(at("logs/empty")) and list(tree.children(at("logs/empty"))) == []
        assert tree.is_dir(at("cache")) and list(tree.children(at("cache"))) == []
        assert at("data/current") not in tree.files_of(at("data"))  # no read-ahead of links
        assert [tree.name(i) for i in tree.children(at("data"))] == ["a.txt", "current"]


@pytest.mark.parametrize(
    ("links", "why"),
    [
        ([("l", "../x")], "points outside"),
        ([("a/b/l", "../../../x")], "points outside"),
        ([("a/l", "x/../../..")], "points outside"),
        ([("l", "/etc/passwd")], "is absolute"),
        # through another link: s is the root, so d/t's '..' after it leaves the version
        ([("s", "."), ("d/t", "../s/../x")], "points outside"),
        ([("up", ".."), ("d/t", "../x")], "points outside"),
        ([("a", "b"), ("b", "a")], "too many levels"),
        ([("l", "")], "non-empty"),
        ([("x.txt/l", "y")], "path conflict"),  # under a file
        ([("d", "x.txt"), ("d/l", "y")], "path conflict"),  # a link that is also a directory
    ],
)
def test_links_that_leave_the_version_are_refused(links: list[tuple[str, str]], why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        Manifest.build([("x.txt", 1, "1" * 64)], symlinks=links)


@pytest.mark.parametrize(
    "links",
    [
        [("l", "x.txt")],
        [("a/b/l", "../../x.txt")],
        [("l", "a/../x.txt")],
        [("s", "."), ("d/t", "../s/x.txt")],
        [("dangling", "nowhere/at/all")],  # inside, if missing: allowed as on any filesystem
    ],
)
def test_links_that_stay_inside_are_kept(links: list[tuple[str, str]]) -> None:
    m = Manifest.build([("x.txt", 1, "1" * 64)], symlinks=links)
    assert dict(m.symlinks) == dict(links)


def test_other_invalid_facts_are_refused() -> None:
    with pytest.raises(InvalidInput, match="not a file"):
        Manifest.build(FILES, executable=["nope"])
    with pytest.raises(InvalidInput, match="path conflict"):
        Manifest.build(FILES, dirs=["run.sh"])
    with pytest.raises(InvalidInput, match="symlinks"):
        Manifest.from_json({"files": [], "symlinks": [["only-a-path"]]})
    with pytest.raises(InvalidInput, match="extra record"):
        CanonicalParser().feed(b"\x00q\x00path\x00\x00\n")


def test_scan_by_symlink_policy(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "d" / "e").mkdir(parents=True)
    (root / "f").write_text("f")
    (root / "f").chmod(0o755)
    os.symlink("f", root / "in")
    os.symlink(str(tmp_path), root / "loop")  # a directory containing the tree itself
    keep = scan(root, "keep")
    assert [f.path for f in keep.files] == ["f"] and keep.executable == ["f"]
    assert sorted(keep.symlinks) == [("in", "f"), ("loop", str(tmp_path))]
    assert "d/e" in keep.dirs
    skip = scan(root, "skip")
    assert skip.symlinks == [] and skip.skipped_links == 2
    with pytest.raises(InvalidInput, match="loop"):
        scan(root, "follow")
    os.unlink(root / "loop")
    follow = scan(root, "follow")
    assert sorted(f.path for f in follow.files) == ["f", "in"] and follow.symlinks == []
    with pytest.raises(InvalidInput, match="symbolic link"):
        scan(root, None)


def test_a_blob_hard_linked_out_of_the_cache_is_never_evicted(tmp_path: Path) -> None:
    """``get --link`` leaves a second name on a cache file: evicting it frees nothing."""
    layout = CacheLayout(tmp_path / "cache")
    paths = {}
    for sha in ("a" * 64, "b" * 64):
        path = layout.complete(sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
        paths[sha] = path
    os.link(paths["a" * 64], tmp_path / "got")
    freed, held = evict_to(layout, 0)
    assert (freed, held) == (1000, 1000)
    assert paths["a" * 64].exists() and not paths["b" * 64].exists()
    os.unlink(tmp_path / "got")  # deleting the copy unpins it
    assert evict_to(layout, 0) == (1000, 0)


def test_a_gzip_json_manifest_of_an_older_registry_still_decodes() -> None:
    body = json.dumps({"files": [list(f) for f in sorted(FILES)]}).encode()
    m = decode_manifest(gzip.compress(body), Manifest.build(FILES).digest)
    assert not m.extras and m.to_json() == Manifest.build(FILES).to_json()
