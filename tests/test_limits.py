"""Limits a reader can use (issue 10 item 5): path length, depth and file count are checked
at commit with one clear error, client side before any byte is uploaded and server side in
the manifest validation; versions stored before the limits (deeper than the interpreter's
stack) stay readable through ``artfs get``, ``artfs ls`` and the mount, without recursion.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from artfs.client.base import RegistryClient
from artfs.errors import InvalidInput
from artfs.manifest import Manifest
from artfs.names import MAX_DEPTH, MAX_PATH_BYTES
from artfs.registry.core import encode_manifest, metadata_json
from artfs.registry.meta import NewVersion
from artfs.registry.stores import open_registry
from tests.e2e import Server, mounted, run_cli

SHA = "0" * 64
DEEP = "/".join(["d"] * 999 + ["f.txt"])  # 1000 components, 2003 bytes: under PATH_MAX
LONG = "/".join(["x" * 200] * 49) + "/" + "y" * 152  # 10,001 characters, components < 255


def test_the_fixture_paths_are_what_the_issue_describes() -> None:
    assert DEEP.count("/") + 1 == 1000
    assert len(LONG) == 10_001
    assert max(len(p) for p in LONG.split("/")) <= 255


@pytest.mark.parametrize(
    ("path", "words"),
    [
        (DEEP, "1000 levels deep, over the limit of 255"),
        (LONG, f"10001 bytes, over the limit of {MAX_PATH_BYTES}"),
    ],
    ids=["1000-deep", "10001-chars"],
)
async def test_commit_refuses_paths_no_reader_can_use(
    client: RegistryClient, unique_project: str, path: str, words: str
) -> None:
    """Through the HTTP API (the server's manifest validation) and the in-process registry
    (core.commit re-checks a manifest built without the limits)."""
    manifest = Manifest.build([(path, 0, SHA)], limits=False)
    assert not manifest.within_limits
    with pytest.raises(InvalidInput) as caught:
        await client.commit(unique_project, "limits", manifest)
    assert words in str(caught.value)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_limits_at_the_boundary_are_accepted() -> None:
    deepest = "/".join(["d"] * (MAX_DEPTH - 1) + ["f"])
    longest = "/".join(["x" * 254] * 14) + "/" + "y" * (MAX_PATH_BYTES - 14 * 255)
    assert len(longest.encode()) == MAX_PATH_BYTES
    assert len(Manifest.build([(deepest, 1, SHA), (longest, 2, SHA)])) == 2
    with pytest.raises(InvalidInput, match="levels deep"):
        Manifest.build([(deepest + "/g", 1, SHA)])
    with pytest.raises(InvalidInput, match="bytes, over the limit"):
        Manifest.build([(longest + "z", 1, SHA)])


def test_a_million_file_manifest_still_builds() -> None:
    """Issue 10 measured 1e6-entry manifests working: the limits must keep them working."""
    started = time.monotonic()
    manifest = Manifest.build(
        (f"shard{i // 1000:04d}/file{i:07d}.bin", i, SHA) for i in range(10**6)
    )
    assert len(manifest) == 10**6 and manifest.within_limits
    assert time.monotonic() - started < 60  # ~5 s on a loaded 2-core machine


# --------------------------------------------------------------------------- client side


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "registry")
    s.start()
    yield s
    s.stop()


def _nested(root: Path, depth: int, name: str, data: bytes) -> Path:
    """A file ``depth`` components below ``root`` (directories named 'd')."""
    directory = root.joinpath(*["d"] * (depth - 1))
    _mkdirs(directory)
    (directory / name).write_bytes(data)
    return directory / name


def _mkdirs(directory: Path) -> None:
    """``mkdir -p`` without ``Path.mkdir(parents=True)``, which recurses once per level."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        d.mkdir()


def _rm_deep(root: Path) -> None:
    """Remove a tree of any depth. pytest removes old temporary directories with
    ``shutil.rmtree``, which recurses per level in Python 3.11: a 1000-deep tree left behind
    would make a later pytest session fail at start."""
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack[-1]))
        except FileNotFoundError:
            stack.pop()
            continue
        subdirs = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                os.unlink(e.path)
        if subdirs:
            stack.extend(subdirs)
        else:
            os.rmdir(stack.pop())


@pytest.fixture
def deep_dirs() -> Iterator[list[Path]]:
    """Directories a test made 1000 levels deep, removed at its end (``_rm_deep``)."""
    made: list[Path] = []
    yield made
    for root in made:
        _rm_deep(root)


def test_put_refuses_a_deep_tree_before_uploading(
    server: Server, tmp_path: Path, deep_dirs: list[Path]
) -> None:
    tree = tmp_path / "tree"
    deep_dirs.append(tree)
    _nested(tree, 1000, "f.txt", b"deep")
    (tree / "big.bin").write_bytes(os.urandom(1 << 20))
    proc = run_cli("put", "--registry", server.url, str(tree), "lim/deep", check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("artfs put: ") and f"limit of {MAX_DEPTH} levels" in lines[0]
    assert server.stats()["blob_bytes_received"] == 0  # refused before any upload
    ok = run_cli("put", "--registry", server.url, str(tree / "big.bin"), "lim/ok", check=False)
    assert ok.returncode == 0, ok.stderr  # the server itself is fine


def test_deeply_nested_json_is_a_400_not_a_500(server: Server) -> None:
    """The server's JSON parser recurses per nesting level: 100,000 levels are refused as
    invalid input, and the server goes on answering."""
    url = f"{server.url}/v1/projects/nest/artifacts/a/versions"
    for body in (b"[" * 100_000, b'{"metadata":' * 100_000):
        resp = httpx.post(url, content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 400, resp.text
        assert "nested too deeply" in resp.text
    assert httpx.get(f"{server.url}/v1", timeout=5).status_code == 200


def test_deeply_nested_metadata_is_refused_in_process() -> None:
    nested: dict[str, object] = {}
    for _ in range(100_000):
        nested = {"m": nested}
    with pytest.raises(InvalidInput, match="nested too deeply"):
        metadata_json(nested)


# --------------------------------------------------------------------------- old versions


def _store_below_validation(data: Path, project: str, artifact: str, files: list[str]) -> int:
    """Commit a version straight through the metadata store, as a registry older than the
    limits would have: the blob of ``b'deep'`` must be stored already."""
    body = b"deep"
    sha = hashlib.sha256(body).hexdigest()
    manifest = Manifest.build([(p, len(body), sha) for p in files], limits=False)
    registry = open_registry(data)
    try:
        new = NewVersion(
            digest=manifest.digest,
            created=time.time(),
            creator="before-the-limits",
            description="",
            metadata_json=metadata_json(None),
            parent=None,
            file_count=len(manifest),
            total_size=manifest.total_size,
            manifest_gz=encode_manifest(manifest),
            blobs=frozenset(manifest.blobs()),
        )
        info, created = registry.meta.commit(project, artifact, new, [], lambda epoch: None)
        assert created
        return info.number
    finally:
        registry.close()


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
def test_a_stored_1000_deep_version_reads_through_get_ls_and_the_mount(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deep_dirs: list[Path]
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    seed = tmp_path / "seed.txt"
    seed.write_bytes(b"deep")
    run_cli("put", "--registry", server.url, str(seed), "old/deep")
    number = _store_below_validation(server.data, "old", "deep", [DEEP, "top.txt"])
    ref = f"old/deep:v{number}"

    listed = run_cli("ls", "--registry", server.url, ref)
    assert f"4\t{DEEP}" in listed.stdout.splitlines()

    dest = tmp_path / "dest"
    deep_dirs.append(dest)
    got = run_cli(
        "get", "--registry", server.url, "--cache-dir", str(tmp_path / "c"), ref, str(dest)
    )
    assert "RecursionError" not in got.stderr
    assert (dest / DEEP).read_bytes() == b"deep" and (dest / "top.txt").read_bytes() == b"deep"

    with mounted(server.url, tmp_path / "mnt", tmp_path / "mc") as mnt:
        version = mnt / "old" / "deep" / f"v{number}"
        assert (version / DEEP).read_bytes() == b"deep"
        assert os.listdir(version / DEEP.rpartition("/")[0]) == ["f.txt"]
        assert sorted(os.listdir(version)) == ["d", "top.txt"]


def test_a_recommit_of_a_stored_deep_manifest_is_refused(tmp_path: Path) -> None:
    """core.commit re-checks a manifest that was not built with the limits (one read back
    from an old version), so the limits cannot be bypassed in-process either."""
    registry = open_registry(tmp_path / "data")
    try:
        stored = Manifest.build([(DEEP, 0, hashlib.sha256(b"").hexdigest())], limits=False)
        with pytest.raises(InvalidInput, match="levels deep"):
            registry.commit("p", "a", stored)
    finally:
        registry.close()


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
def test_a_draft_too_deep_is_refused_at_commit_before_uploading(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``artfs commit`` of a draft made in a mount: one line, nothing uploaded, no version;
    the draft stays, and commits once the deep part is gone."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    state = str(tmp_path / "state")
    with mounted(server.url, tmp_path / "mnt", tmp_path / "mc", "--state-dir", state) as mnt:
        draft = mnt / "lim" / "drafted" / "wip"
        _mkdirs(draft)
        (draft / "big.bin").write_bytes(os.urandom(1 << 20))
        _nested(draft / "deep", MAX_DEPTH + 5, "f.txt", b"deep")
        proc = run_cli("commit", str(draft), check=False)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("artfs commit: "), proc.stderr
        assert f"{MAX_DEPTH + 6} levels deep, over the limit of {MAX_DEPTH}" in lines[0]
        assert server.stats()["blob_bytes_received"] == 0
        assert sorted(os.listdir(draft.parent)) == ["wip"]  # no version, the draft is kept
        run_cli("ls", "--registry", server.url)  # the registry is fine


def test_a_draft_from_a_stored_deep_version_is_made_and_walked(tmp_path: Path) -> None:
    """``artfs draft p/a:vN`` of a version stored before the limits: its rows are made and its
    snapshot walked without recursion; committing it is then refused by the limits."""
    from artfs.drafts.model import DraftKey
    from artfs.drafts.store import DraftStore
    from artfs.manifest import check_paths

    sha = hashlib.sha256(b"deep").hexdigest()
    base = Manifest.build([(DEEP, 4, sha), ("top.txt", 4, sha)], limits=False)
    store = DraftStore(tmp_path / "state")
    try:
        draft = store.create_draft(DraftKey("reg", "p", "a", "wip"), base=3, manifest=base)
        files = store.snapshot(draft.id)
        assert [f.path for f in files] == [DEEP, "top.txt"]
        assert store.path_of(store.resolve(draft.id, DEEP)) == DEEP
        with pytest.raises(InvalidInput, match="1000 levels deep"):
            check_paths(f.path for f in files)  # what _publish runs before hashing
    finally:
        store.close()
