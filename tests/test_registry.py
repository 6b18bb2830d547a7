"""The registry core (no server), over SQLite and a local blob directory, and over
PostgreSQL and S3 (tests/backends.py)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from artfs.errors import (
    AlreadyExists,
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    NotPermitted,
    PreconditionFailed,
)
from artfs.hashing import BLOCK_SIZE, BlobHasher, hash_file, split_block_digests
from artfs.manifest import Manifest
from artfs.registry import Registry
from artfs.registry.blobs import store_bytes

from .backends import SQLITE, RegistrySpec, backend_params, make_spec, s3_keys


@pytest.fixture(params=backend_params())
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> RegistrySpec:
    return make_spec(request.param, tmp_path / "reg")


@pytest.fixture
def reg(spec: RegistrySpec) -> Iterator[Registry]:
    r = spec.open()
    r.create_project("p")
    r.create_artifact("p", "a", type="dataset", description="test data")
    yield r
    r.close()


def put(reg: Registry, data: bytes) -> str:
    return store_bytes(reg.blobs, data)


def manifest_of(reg: Registry, files: dict[str, bytes]) -> Manifest:
    return Manifest.build((path, len(data), put(reg, data)) for path, data in files.items())


# --- projects and artifacts ---------------------------------------------------------
def test_projects_and_artifacts(reg: Registry) -> None:
    assert [p.name for p in reg.list_projects()] == ["p"]
    with pytest.raises(AlreadyExists):
        reg.create_project("p")
    assert reg.create_project("p", exist_ok=True).name == "p"
    with pytest.raises(InvalidInput):
        reg.create_project("../x")
    with pytest.raises(NotFound):
        reg.create_artifact("nope", "a", type="model")
    art = reg.get_artifact("p", "a")
    assert (art.type, art.description, art.versions, art.aliases) == (
        "dataset",
        "test data",
        (),
        {},
    )
    with pytest.raises(AlreadyExists):
        reg.create_artifact("p", "a", type="dataset")
    assert reg.create_artifact("p", "a", type="dataset", exist_ok=True).name == "a"
    with pytest.raises(Conflict, match="type"):  # the type is fixed at creation
        reg.create_artifact("p", "a", type="model", exist_ok=True)
    with pytest.raises(InvalidInput):
        reg.create_artifact("p", "b", type="")
    with pytest.raises(NotFound, match="project"):
        reg.get_artifact("zzz", "a")
    with pytest.raises(NotFound, match="artifact"):
        reg.get_artifact("p", "zzz")


def test_registry_id_is_stable(spec: RegistrySpec, tmp_path: Path) -> None:
    r1 = spec.open()
    rid = r1.registry_id()
    r1.close()
    r2 = spec.open()
    assert r2.registry_id() == rid and len(rid) == 36
    r2.close()
    r3 = make_spec(spec.backend, tmp_path / "other").open()
    assert r3.registry_id() != rid
    r3.close()


# --- commits ---------------------------------------------------------------------------
def test_commit_numbering_and_latest(reg: Registry) -> None:
    for i in range(3):
        res = reg.commit(
            "p",
            "a",
            manifest_of(reg, {"f.txt": f"v{i}".encode()}),
            creator="me",
            metadata={"i": i},
            description=f"number {i}",
        )
        assert res.created and res.version.number == i
        assert res.version.aliases == ("latest",)
    art = reg.get_artifact("p", "a")
    assert [v.number for v in art.versions] == [0, 1, 2]
    assert art.aliases == {"latest": 2}
    v1 = reg.get_version("p", "a", "v1")
    assert (v1.metadata, v1.description, v1.creator, v1.artifact_type) == (
        {"i": 1},
        "number 1",
        "me",
        "dataset",
    )
    assert v1.ref == "p/a:v1" and v1.file_count == 1 and v1.total_size == 2
    assert reg.get_version("p", "a", "latest").number == 2


def test_identical_to_latest_returns_existing(reg: Registry) -> None:
    m = manifest_of(reg, {"a": b"1", "b/c": b"2"})
    first = reg.commit("p", "a", m)
    again = reg.commit("p", "a", m, aliases=["best"], description="ignored")
    assert first.created and not again.created
    assert again.version.number == first.version.number == 0
    assert set(again.version.aliases) == {"best", "latest"}  # requested aliases are still applied
    assert [v.number for v in reg.get_artifact("p", "a").versions] == [0]
    # Identical to an *older* version (not latest) is that version too (issue 12), and
    # latest stays on the newest; --allow-duplicate makes a new one.
    reg.commit("p", "a", manifest_of(reg, {"a": b"other"}))
    third = reg.commit("p", "a", m, aliases=["old"])
    assert not third.created and third.version.number == 0
    assert third.to_json()["matched"] == "p/a:v0"
    assert set(third.version.aliases) == {"best", "old"}
    assert reg.get_version("p", "a", "latest").number == 1
    forced = reg.commit("p", "a", m, allow_duplicate=True)
    assert forced.created and forced.version.number == 2
    # a deleted version is no match: the same content again is a new version
    reg.delete_version("p", "a", 0, force=True)
    reg.delete_version("p", "a", 2)
    assert reg.commit("p", "a", m).version.number == 3


def test_commit_refuses_missing_and_mismatched_blobs(reg: Registry) -> None:
    ghost = hashlib.sha256(b"never uploaded").hexdigest()
    with pytest.raises(InvalidInput, match=ghost):
        reg.commit("p", "a", Manifest.build([("x", 14, ghost)]))
    real = put(reg, b"12345")
    with pytest.raises(InvalidInput, match="bytes"):
        reg.commit("p", "a", Manifest.build([("x", 4, real)]))
    assert reg.get_artifact("p", "a").versions == ()


def test_commit_validates_everything_else(reg: Registry) -> None:
    m = manifest_of(reg, {"x": b"x"})
    with pytest.raises(InvalidInput):
        reg.commit("p", "a", m, metadata=["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        reg.commit("p", "a", m, metadata={"x": float("nan")})
    with pytest.raises(InvalidInput):
        reg.commit("p", "a", m, aliases=["v3"])
    with pytest.raises(InvalidInput):
        reg.commit("p", "a", m, parent=7)
    with pytest.raises(InvalidInput):
        reg.commit("p", "a", m, description=5)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        reg.commit("p", "zzz", m)
    assert reg.get_artifact("p", "a").versions == ()
    res = reg.commit("p", "a", m, aliases=["latest", "best"])  # 'latest' is implied, not an error
    assert set(res.version.aliases) == {"latest", "best"}
    child = reg.commit("p", "a", manifest_of(reg, {"x": b"y"}), parent=0)
    assert child.version.parent == 0


def test_manifest_round_trip(reg: Registry) -> None:
    files = {f"d{i % 7}/f{i}.bin": os.urandom(i) for i in range(50)}
    m = manifest_of(reg, files)
    reg.commit("p", "a", m)
    back = reg.get_manifest("p", "a", 0)
    assert back == m and back.digest == m.digest and dict(back) == dict(m)
    with pytest.raises(NotFound):
        reg.get_manifest("p", "a", 1)


def test_large_manifest_commits_and_loads_fast(reg: Registry) -> None:
    sha = put(reg, b"tiny\n")
    m = Manifest.build((f"d{i // 1000:03d}/f{i:06d}.txt", 5, sha) for i in range(100_000))
    t0 = time.monotonic()
    reg.commit("p", "a", m)
    t1 = time.monotonic()
    back = reg.get_manifest("p", "a", 0)
    t2 = time.monotonic()
    assert back.digest == m.digest and len(back) == 100_000
    assert t1 - t0 < 3.0, f"commit took {t1 - t0:.2f}s"
    assert t2 - t1 < 2.0, f"load took {t2 - t1:.2f}s"


# --- aliases ----------------------------------------------------------------------------
def test_aliases_move_conditionally(reg: Registry) -> None:
    for i in range(3):
        reg.commit("p", "a", manifest_of(reg, {"f": bytes([i])}))
    reg.set_alias("p", "a", "best", 0, expect=None)  # create only if absent
    with pytest.raises(PreconditionFailed):
        reg.set_alias("p", "a", "best", 1, expect=None)
    with pytest.raises(PreconditionFailed):
        reg.set_alias("p", "a", "best", 1, expect=2)
    reg.set_alias("p", "a", "best", 1, expect=0)
    reg.set_alias("p", "a", "best", 2)  # unconditional
    assert reg.get_version("p", "a", "best").number == 2
    assert reg.get_artifact("p", "a").aliases == {"best": 2, "latest": 2}
    with pytest.raises(PreconditionFailed):
        reg.delete_alias("p", "a", "best", expect=1)
    reg.delete_alias("p", "a", "best", expect=2)
    with pytest.raises(NotFound):
        reg.delete_alias("p", "a", "best")
    with pytest.raises(NotFound):
        reg.get_version("p", "a", "best")
    with pytest.raises(NotFound):
        reg.set_alias("p", "a", "best", 9)


def test_latest_and_bad_aliases_refused(reg: Registry) -> None:
    reg.commit("p", "a", manifest_of(reg, {"f": b"0"}))
    with pytest.raises(NotPermitted):
        reg.set_alias("p", "a", "latest", 0)
    with pytest.raises(NotPermitted):
        reg.delete_alias("p", "a", "latest")
    for bad in ["v0", "a/b", "", ".", "x:y", "a\x00", "0", "2024"]:
        with pytest.raises(InvalidInput):
            reg.set_alias("p", "a", bad, 0)
    with pytest.raises(InvalidInput, match="bare number"):  # bare N is version N (docs/api.md)
        reg.commit("p", "a", manifest_of(reg, {"f": b"0"}), aliases=["0"])
    with pytest.raises(NotFound, match="v5"):
        reg.get_version("p", "a", "v5")


def test_latest_of_empty_artifact(reg: Registry) -> None:
    with pytest.raises(NotFound, match="no versions"):
        reg.get_version("p", "a", "latest")


# --- deleting versions ------------------------------------------------------------------
def test_delete_version(reg: Registry) -> None:
    for i in range(3):
        reg.commit("p", "a", manifest_of(reg, {"f": bytes([i])}))
    reg.set_alias("p", "a", "best", 2)
    with pytest.raises(Conflict, match="best"):
        reg.delete_version("p", "a", 2)
    reg.delete_version("p", "a", 2, force=True)
    art = reg.get_artifact("p", "a")
    assert [v.number for v in art.versions] == [0, 1]
    assert art.aliases == {"latest": 1}  # latest moved back; best went with the version
    with pytest.raises(NotFound):
        reg.get_version("p", "a", "v2")
    reg.delete_version("p", "a", 0)  # only 'latest' elsewhere: no force needed
    # Numbers are never reused, even after deleting the newest.
    reg.delete_version("p", "a", 1)
    assert reg.get_artifact("p", "a").aliases == {}
    res = reg.commit("p", "a", manifest_of(reg, {"f": b"new"}))
    assert res.version.number == 3
    with pytest.raises(NotFound):
        reg.delete_version("p", "a", 2)


# --- blobs ----------------------------------------------------------------------------
def _leftovers(spec: RegistrySpec) -> list[str]:
    """Uploads in progress the store still holds (temporary files or objects)."""
    if spec.backend == SQLITE:
        return [p.name for p in (Path(spec.data_dir) / "blobs" / ".tmp").iterdir()]
    return s3_keys(spec, "uploads/")


def test_blob_upload_is_verified(reg: Registry, spec: RegistrySpec, tmp_path: Path) -> None:
    data = os.urandom(3 * BLOCK_SIZE + 17)
    sha = hashlib.sha256(data).hexdigest()
    assert reg.missing_blobs([sha]) == {sha}
    w = reg.blob_writer(sha, len(data))
    w.write(data[:-1] + bytes([data[-1] ^ 1]))  # other bytes, whatever the last one was
    with pytest.raises(IntegrityError):
        w.finish()
    assert reg.missing_blobs([sha]) == {sha}
    assert _leftovers(spec) == []  # nothing left behind
    w = reg.blob_writer(sha, len(data) - 1)
    with pytest.raises(IntegrityError):
        w.write(data)  # longer than declared
    w = reg.blob_writer(sha, len(data))
    w.write(data[:1000])
    w.write(data[1000:])
    assert w.finish() is True
    assert reg.missing_blobs([sha]) == set()
    again = reg.blob_writer(sha)
    again.write(data)
    assert again.finish() is False  # stored once
    src = tmp_path / "src"
    src.write_bytes(data)
    assert reg.blob_blocks(sha) == hash_file(src).block_digests()
    assert len(split_block_digests(reg.blob_blocks(sha), len(data))) == 4
    assert reg.blob_size(sha) == len(data)
    assert _leftovers(spec) == []


def test_large_blob_through_a_writer(reg: Registry, spec: RegistrySpec) -> None:
    # Over the S3 store's in-memory limit: a multipart upload to a temporary key, then a copy.
    data = os.urandom(20 << 20)
    sha = hashlib.sha256(data).hexdigest()
    bad = reg.blob_writer(sha, len(data))
    for i in range(0, len(data), 3 << 20):
        bad.write(data[i : i + (3 << 20)] if i else b"X" + data[1 : 3 << 20])
    with pytest.raises(IntegrityError):
        bad.finish()
    assert reg.missing_blobs([sha]) == {sha} and _leftovers(spec) == []
    w = reg.blob_writer(sha, len(data))
    for i in range(0, len(data), 3 << 20):
        w.write(data[i : i + (3 << 20)])
    assert w.finish() is True
    assert reg.blob_size(sha) == len(data)
    h = BlobHasher()
    h.update(data)
    assert reg.blob_blocks(sha) == h.block_digests()
    assert _leftovers(spec) == []


def test_small_blob_blocks_are_its_digest(reg: Registry) -> None:
    sha = put(reg, b"small")
    assert reg.blob_blocks(sha) == bytes.fromhex(sha)


def test_missing_blobs_checks_digests(reg: Registry) -> None:
    with pytest.raises(InvalidInput):
        reg.missing_blobs(["../../etc/passwd"])
    with pytest.raises(NotFound):
        reg.blob_blocks(hashlib.sha256(b"nope").hexdigest())


# --- concurrency ------------------------------------------------------------------------
def _commit_many(
    spec: RegistrySpec, worker: int, count: int, blob_sha: str, start_at: float = 0.0
) -> list[int]:
    reg = spec.open()
    time.sleep(max(0.0, start_at - time.time()))  # all workers start together
    numbers = []
    try:
        for i in range(count):
            # Distinct manifests (distinct paths), all over one blob.
            m = Manifest.build([(f"w{worker}/c{i}.txt", 5, blob_sha)])
            numbers.append(reg.commit("p", "a", m, creator=f"w{worker}").version.number)
    finally:
        reg.close()
    return numbers


def _check_all_committed(reg: Registry, expected: int, results: list[list[int]]) -> None:
    numbers = sorted(n for r in results for n in r)
    assert numbers == list(range(expected)), numbers
    art = reg.get_artifact("p", "a")
    assert [v.number for v in art.versions] == list(range(expected))
    assert art.aliases["latest"] == expected - 1
    paths = {path for n in range(expected) for path in reg.get_manifest("p", "a", n)}
    assert len(paths) == expected  # every commit's manifest is there, nothing lost or mixed


def test_concurrent_commits_from_threads(reg: Registry, spec: RegistrySpec) -> None:
    sha = put(reg, b"hello")
    results: list[list[int]] = [[] for _ in range(6)]

    def work(w: int) -> None:
        results[w] = _commit_many(spec, w, 15, sha)

    # Half the threads share one Registry object, the others open their own.
    def shared(w: int) -> None:
        for i in range(15):
            m = Manifest.build([(f"s{w}/c{i}.txt", 5, sha)])
            results[w].append(reg.commit("p", "a", m).version.number)

    threads = [threading.Thread(target=work if w % 2 else shared, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_all_committed(reg, 90, results)


def test_concurrent_commits_from_processes(reg: Registry, spec: RegistrySpec) -> None:
    sha = put(reg, b"hello")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        start_at = time.time() + 3.0
        results = pool.starmap(_commit_many, [(spec, w, 25, sha, start_at) for w in range(4)])
    _check_all_committed(reg, 100, results)
    creators = [reg.get_version("p", "a", f"v{n}").creator for n in range(100)]
    assert len(set(creators[:50])) > 1, "the processes never overlapped: the test proves nothing"


def test_concurrent_alias_moves_are_atomic(reg: Registry) -> None:
    for i in range(2):
        reg.commit("p", "a", manifest_of(reg, {"f": bytes([i])}))
    reg.set_alias("p", "a", "best", 0)
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def flip(w: int) -> None:
        barrier.wait()
        try:
            reg.set_alias("p", "a", "best", 1, expect=0)
            wins.append(w)
        except PreconditionFailed:
            pass

    threads = [threading.Thread(target=flip, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1  # compare-and-set: exactly one mover wins


def test_get_versions_is_get_version_for_a_page(reg: Registry) -> None:
    """The web page's batch read gives what ``get_version`` gives, row by row: aliases,
    tags, expiry, declared and observed inputs; deleted and unknown numbers left out."""
    src = reg.commit("p", "src", manifest_of(reg, {"s": b"source"}), create_type="data").version
    for i in range(5):
        files = {"x": f"version {i}".encode()}
        reg.commit(
            "p",
            "a",
            manifest_of(reg, files),
            aliases=["best"] if i == 2 else [],
            inputs=[src.ref] if i % 2 else [],
            observed_inputs=[src.ref] if i == 4 else [],
            tags=["nightly"] if i < 3 else [],
            ttl="30d" if i == 3 else None,
            create_type="model",
        )
    reg.delete_version("p", "a", 1)
    got = reg.get_versions("p", "a", [4, 3, 1, 2, 0, 99])
    assert [v.number for v in got] == [4, 3, 2, 0]
    assert got == [reg.get_version("p", "a", f"v{n}") for n in (4, 3, 2, 0)]
    assert got[2].aliases == ("best",) and got[3].tags == ("nightly",)
    assert got[1].expires is not None and got[1].inputs[0].ref == src.ref
    assert [i.kind for i in got[0].inputs] == [reg.get_version("p", "a", "v4").inputs[0].kind]
    assert reg.get_versions("p", "a", []) == []
