"""Committing drafts: only missing blobs move, at most one version per draft, failures keep it."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from artfs.cache.blobcache import BlobCache
from artfs.client.base import RegistryClient
from artfs.client.local import LocalRegistryClient
from artfs.client.memory import FaultyClient, MemoryRegistryClient
from artfs.drafts.cli_cmds import delete_version, request_commit
from artfs.drafts.commit import commit_draft
from artfs.drafts.cow import Materializer
from artfs.drafts.model import DraftKey
from artfs.drafts.requests import CommitRequest, RequestFiles
from artfs.drafts.serve import handle_commit_request
from artfs.drafts.store import DraftStore
from artfs.errors import Conflict, InvalidInput, NotFound, Unavailable
from artfs.hashing import BlobHasher
from artfs.manifest import Manifest
from artfs.models import CommitResult

from .drafts_helpers import PathDraft

KEY = DraftKey("memory", "proj", "art", "work")


def sha(data: bytes) -> str:
    h = BlobHasher()
    h.update(data)
    return h.hexdigest()


class Env:
    def __init__(self, tmp: Path, registry: MemoryRegistryClient, cache: BlobCache) -> None:
        self.tmp = tmp
        self.registry = registry
        self.cache = cache
        self.store = DraftStore(tmp / "state")

    def draft(self, base: int | None = None, name: str = "work") -> PathDraft:
        manifest = None
        if base is not None:
            manifest = self.registry.versions[("proj", "art", base)][1]
        key = DraftKey("memory", "proj", "art", name)
        return PathDraft(self.store, self.store.create_draft(key, base=base, manifest=manifest))

    def reopen(self) -> None:
        self.store.close()
        self.store = DraftStore(self.tmp / "state")


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    registry = MemoryRegistryClient()
    async with BlobCache(tmp_path / "cache", registry) as cache:
        e = Env(tmp_path, registry, cache)
        yield e
        e.store.close()


async def test_commit_creates_artifact_and_fills_cache(env: Env) -> None:
    d = env.draft()
    big = os.urandom(700_000)
    d.mkdir("sub")
    d.write("sub/big.bin", big)
    d.write("small.txt", b"hello")
    d.write("empty", b"")
    d.mkdir("empty-dir")  # directories without files are not part of a version
    phases: list[str] = []
    outcome = await commit_draft(
        env.registry,
        env.cache,
        env.store,
        d.draft.id,
        aliases=["best"],
        metadata={"epochs": 3},
        description="first",
        type="model",
        creator="me",
        progress=lambda phase, done, total: phases.append(phase),
    )
    v = outcome.result.version
    assert outcome.ref == "proj/art:v0" and outcome.result.created and not outcome.recovered
    assert outcome.uploaded == len(big) + 5
    assert v.metadata == {"epochs": 3} and v.description == "first" and v.creator == "me"
    assert set(v.aliases) == {"best", "latest"}
    assert (await env.registry.get_artifact("proj", "art")).type == "model"
    manifest = await env.registry.get_manifest("proj", "art", 0)
    assert sorted(manifest) == ["empty", "small.txt", "sub/big.bin"]
    assert manifest["sub/big.bin"].sha256 == sha(big)
    assert "uploading" in phases
    # the draft is gone, with its data
    assert env.store.drafts() == []
    assert not (env.store.data_dir / str(d.draft.id)).exists()
    # reading the new version moves nothing over the network
    served = env.registry.bytes_served
    reader = await env.cache.open(sha(big), len(big))
    try:
        assert await reader.read(0, len(big)) == big
    finally:
        await reader.aclose()
    assert env.registry.bytes_served == served


async def test_commit_from_base_uploads_only_what_changed(env: Env) -> None:
    files = {"a.bin": os.urandom(300_000), "b.bin": os.urandom(200_000), "c.txt": b"c"}
    env.registry.publish("proj", "art", files)
    d = env.draft(base=0)
    cow = Materializer(env.store, env.cache)
    node = d.node("a.bin")
    h = env.store.open(node, os.O_RDWR)
    await cow.ensure_local(node)
    h.pwrite(0, b"CHANGED")
    h.release()
    d.write("new.txt", b"brand new")
    d.unlink("c.txt")
    outcome = await commit_draft(env.registry, env.cache, env.store, d.draft.id)
    assert outcome.ref == "proj/art:v1"
    assert outcome.uploaded == 300_000 + len(b"brand new")
    assert outcome.result.version.parent == 0
    manifest = await env.registry.get_manifest("proj", "art", 1)
    assert sorted(manifest) == ["a.bin", "b.bin", "new.txt"]
    assert manifest["b.bin"].sha256 == sha(files["b.bin"])
    assert manifest["a.bin"].sha256 == sha(b"CHANGED" + files["a.bin"][7:])


async def test_unchanged_draft_is_the_existing_version(env: Env) -> None:
    env.registry.publish("proj", "art", {"x": b"x" * 1000})
    d = env.draft(base=0)
    outcome = await commit_draft(env.registry, env.cache, env.store, d.draft.id)
    assert not outcome.result.created and outcome.ref == "proj/art:v0"
    assert outcome.uploaded == 0
    assert env.store.drafts() == []
    assert len((await env.registry.get_artifact("proj", "art")).versions) == 1


class LosesCommitResponse:
    """The commit reaches the registry, but its answer never comes back."""

    def __init__(self, inner: MemoryRegistryClient) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def commit(self, *args: Any, **kwargs: Any) -> CommitResult:
        await self.inner.commit(*args, **kwargs)
        raise Unavailable("connection reset while waiting for the commit response")


async def test_retry_after_lost_response_and_crash_makes_one_version(env: Env) -> None:
    env.registry.publish("proj", "art", {"x": b"first"})
    d = env.draft()
    d.write("model.pt", b"weights" * 1000)
    lossy: Any = LosesCommitResponse(env.registry)
    with pytest.raises(Unavailable):
        await commit_draft(lossy, env.cache, env.store, d.draft.id, aliases=["best"])
    assert env.store.drafts()[0].pending is not None  # the attempt was recorded first
    # someone else commits in between: identical-to-latest alone would not see our v1
    env.registry.publish("proj", "art", {"x": b"someone else"})
    env.reopen()  # and the daemon restarts
    (draft,) = env.store.drafts()
    assert PathDraft(env.store, draft).tree() == {"model.pt": b"weights" * 1000}
    outcome = await commit_draft(env.registry, env.cache, env.store, draft.id)
    assert outcome.recovered and outcome.ref == "proj/art:v1"
    art = await env.registry.get_artifact("proj", "art")
    assert [v.number for v in art.versions] == [0, 1, 2]
    assert art.aliases["best"] == 1
    assert env.store.drafts() == []


async def test_file_open_for_writing_refuses_the_commit(env: Env) -> None:
    d = env.draft()
    parent, name = d.split("busy.bin")
    h, _ = env.store.create(parent, name, 0o644, os.O_WRONLY)
    h.pwrite(0, b"partial")
    with pytest.raises(Conflict, match=r"busy\.bin"):
        await commit_draft(env.registry, env.cache, env.store, d.draft.id, writer_grace=0.1)
    h.pwrite(7, b" and more")  # the draft is writable again
    h.release()
    assert d.tree() == {"busy.bin": b"partial and more"}
    assert env.registry.versions == {}


async def test_writer_closing_within_the_grace_is_waited_for(env: Env) -> None:
    d = env.draft()
    parent, name = d.split("late.bin")
    h, _ = env.store.create(parent, name, 0o644, os.O_WRONLY)
    h.pwrite(0, b"done")

    async def close_soon() -> None:
        await trio.sleep(0.1)
        h.release()  # RELEASE arrives after close(2) returned

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_soon)
        outcome = await commit_draft(env.registry, env.cache, env.store, d.draft.id)
    assert outcome.ref == "proj/art:v0"


async def test_failed_commit_leaves_the_draft_intact(env: Env) -> None:
    d = env.draft()
    d.write("f", b"data")
    faulty = FaultyClient(env.registry)
    faulty.down = True
    client: Any = faulty
    with pytest.raises(Unavailable):
        await commit_draft(client, env.cache, env.store, d.draft.id)
    assert d.tree() == {"f": b"data"}
    d.write("g", b"more")  # writable again
    with pytest.raises(InvalidInput):
        await commit_draft(env.registry, env.cache, env.store, d.draft.id, aliases=["v7"])
    faulty.down = False
    outcome = await commit_draft(client, env.cache, env.store, d.draft.id)
    assert outcome.ref == "proj/art:v0"
    assert len(env.registry.versions) == 1


async def test_commit_request_files_and_cli_side(env: Env) -> None:
    d = env.draft()
    d.write("f", b"data")
    files = RequestFiles(env.store.state_dir)
    request = CommitRequest(aliases=("best",), metadata={"k": 1}, request="ab" * 16)
    outcome = await handle_commit_request(
        request.encode(), client=env.registry, cache=env.cache, store=env.store, draft_id=d.draft.id
    )
    assert outcome.ref == "proj/art:v0"
    result = files.read_result("ab" * 16)
    assert result is not None and result["ok"] and result["ref"] == "proj/art:v0"

    d2 = env.draft(name="second")
    bad = json.dumps({"aliases": ["latest"], "request": "cd" * 16}).encode()
    with pytest.raises(InvalidInput):
        await handle_commit_request(
            bad, client=env.registry, cache=env.cache, store=env.store, draft_id=d2.draft.id
        )
    failure = files.read_result("cd" * 16)
    assert failure is not None and not failure["ok"] and "latest" in failure["message"]

    # the CLI side: the daemon's answer comes back through the result file
    def fake_setxattr(path: Path, name: str, value: bytes) -> None:
        rid = CommitRequest.parse(value).request
        assert rid is not None and name == "user.artfs.commit"
        files.write_failure(rid, Conflict("cannot commit: still open for writing: x"))
        raise OSError(errno.EBUSY, "busy")

    with pytest.raises(Conflict, match="still open for writing"):
        request_commit(
            Path("/nowhere"), CommitRequest(request="ef" * 16), files, setxattr=fake_setxattr
        )
    assert files.read_result("ef" * 16) is None  # cleaned up


def test_commit_request_parsing() -> None:
    assert CommitRequest.parse(b"") == CommitRequest()
    req = CommitRequest.parse(b'{"aliases": "best", "description": "d", "type": "model"}')
    assert req.aliases == ("best",) and req.type == "model"
    for bad in (b"[1]", b"{", b'{"what": 1}', b'{"metadata": 3}', b'{"request": "x"}'):
        with pytest.raises(InvalidInput):
            CommitRequest.parse(bad)


async def test_delete_version_never_reuses_numbers() -> None:
    registry = MemoryRegistryClient()
    registry.publish("proj", "art", {"a": b"1"})
    registry.publish("proj", "art", {"a": b"2"}, aliases=["best"])
    with pytest.raises(Conflict):
        await delete_version(registry, "proj/art:v1", force=False)
    with pytest.raises(InvalidInput):
        await delete_version(registry, "proj/art:best", force=False)
    assert await delete_version(registry, "proj/art:v1", force=True) == "proj/art:v1"
    art = await registry.get_artifact("proj", "art")
    assert art.aliases == {"latest": 0}
    assert registry.publish("proj", "art", {"a": b"3"}).number == 2
    with pytest.raises(NotFound):
        await delete_version(registry, "proj/art:v1", force=True)


async def test_commit_to_a_local_registry(tmp_path: Path) -> None:
    async with LocalRegistryClient(tmp_path / "registry") as local:
        client: RegistryClient = local
        registry_id = await client.registry_id()
        store = DraftStore(tmp_path / "state")
        try:
            d = PathDraft(store, store.create_draft(DraftKey(registry_id, "p", "a", "d")))
            d.write("x.bin", b"x" * 500_000)
            d.write("y.txt", b"y")
            async with BlobCache(tmp_path / "cache", client) as cache:
                first = await commit_draft(client, cache, store, d.draft.id, aliases=["best"])
                assert first.ref == "p/a:v0" and first.uploaded == 500_001
                d2 = PathDraft(store, store.create_draft(DraftKey(registry_id, "p", "a", "e")))
                d2.write("x.bin", b"x" * 500_000)
                d2.write("z.txt", b"z")
                second = await commit_draft(client, cache, store, d2.draft.id)
                assert second.ref == "p/a:v1" and second.uploaded == 1  # x.bin was there
            manifest = await client.get_manifest("p", "a", 1)
            assert isinstance(manifest, Manifest) and sorted(manifest) == ["x.bin", "z.txt"]
            info = await client.get_version("p", "a", "best")
            assert info.number == 0
        finally:
            store.close()


async def test_manifest_digests_match_the_bytes(env: Env) -> None:
    """Whatever mix of sequential, random, truncating and appending writes: exact digests."""
    d = env.draft()
    store = env.store
    contents: dict[str, bytes] = {}
    for i, pattern in enumerate(["seq", "overwrite", "extend", "shrink", "append", "reopen"]):
        path = f"{pattern}.bin"
        data = os.urandom(150_000 + i)
        parent, name = d.split(path)
        h, _ = store.create(parent, name, 0o644, os.O_WRONLY)
        for off in range(0, len(data), 40_000):
            h.pwrite(off, data[off : off + 40_000])
        if pattern == "overwrite":
            h.pwrite(5, b"#####")
            data = data[:5] + b"#####" + data[10:]
        elif pattern == "extend":
            store.setattr(h.node_id, size=len(data) + 100)
            data += b"\0" * 100
        elif pattern == "shrink":
            store.setattr(h.node_id, size=1000)
            data = data[:1000]
        elif pattern == "append":
            h.pwrite(len(data), b"tail")
            data += b"tail"
        h.release()
        if pattern == "reopen":  # hashed on the way, then changed after closing
            d.write(path, b"!", 0)
            data = b"!" + data[1:]
        contents[path] = data
    outcome = await commit_draft(env.registry, env.cache, env.store, d.draft.id)
    manifest = await env.registry.get_manifest("proj", "art", outcome.result.version.number)
    assert {p: (e.size, e.sha256) for p, e in manifest.items()} == {
        p: (len(b), sha(b)) for p, b in contents.items()
    }


class FailsCommit:
    """Uploads work; registering the version does not (the server went away)."""

    def __init__(self, inner: MemoryRegistryClient) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def commit(self, *args: Any, **kwargs: Any) -> CommitResult:
        raise Unavailable("registry unreachable")


async def test_failed_commit_leaves_no_staged_bytes_and_a_writable_draft(env: Env) -> None:
    d = env.draft()
    data = os.urandom(300_000)
    d.write("model.pt", data)
    node = d.node("model.pt")
    failing: Any = FailsCommit(env.registry)
    with pytest.raises(Unavailable):
        await commit_draft(failing, env.cache, env.store, d.draft.id)
    h = env.store.open(node, os.O_WRONLY)  # the same file, still writable in place
    h.pwrite(0, b"X")
    h.release()
    assert d.read("model.pt") == b"X" + data[1:]
    # staged cache files may be hard links to the draft's files: all gone again
    assert list(env.cache.layout.tmp_dir.iterdir()) == []
    assert env.cache.cached_bytes(sha(data), len(data)) == 0
    d.unlink("model.pt")
    d.write("model.pt", b"rewritten")  # writable, and the cache is not affected by it
    assert d.tree() == {"model.pt": b"rewritten"}
    outcome = await commit_draft(env.registry, env.cache, env.store, d.draft.id)
    manifest = await env.registry.get_manifest("proj", "art", outcome.result.version.number)
    assert manifest["model.pt"].sha256 == sha(b"rewritten")
    assert env.cache.cached_bytes(sha(b"rewritten"), 9) == 9
    assert env.cache.cached_bytes(sha(data), len(data)) == 0


async def test_committed_bytes_are_in_the_cache_after_the_draft_is_gone(env: Env) -> None:
    d = env.draft()
    files = {f"f{i}.bin": os.urandom(200_000 + i) for i in range(5)}
    for name, data in files.items():
        d.write(name, data)
    state_data = env.store.data_dir
    await commit_draft(env.registry, env.cache, env.store, d.draft.id)
    assert not any(p.is_file() for p in state_data.rglob("*"))  # the draft's data is gone
    assert list(env.cache.layout.tmp_dir.iterdir()) == []
    for data in files.values():
        path = env.cache.layout.complete(sha(data))
        assert path.read_bytes() == data
        assert os.stat(path).st_mode & 0o777 == 0o444
        async with await env.cache.open(sha(data), len(data)) as reader:
            assert await reader.read(0, len(data)) == data
