"""Blob garbage collection (``Registry.gc``, ``artfs gc``) over SQLite + a blob directory and
PostgreSQL + S3 (tests/backends.py): what it frees and keeps, the doomed state seen by
commits, ``missing_blobs`` and uploads, interrupted runs, and the gc-vs-commit exclusion
under concurrency."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from artfs.client.http import HttpRegistryClient
from artfs.config import parse_duration
from artfs.errors import BeingCollected, Conflict, InvalidInput, StorageFull, from_code
from artfs.hashing import BLOCK_SIZE
from artfs.manifest import Manifest
from artfs.publish import put_tree
from artfs.registry import Registry
from artfs.registry.blobs import store_bytes
from artfs.registry.gc import GarbageCollector, GcReport
from artfs.registry.refset import ReferenceSet
from artfs.registry.s3 import S3BlobStore

from .backends import (
    POSTGRES,
    SQLITE,
    RegistrySpec,
    backend_params,
    make_spec,
    release,
    s3_keys,
)
from .conftest_server import start_spec_server, stop_server
from .e2e import Server, run_cli, small_tmpfs

pytestmark = pytest.mark.timeout(300)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=backend_params())
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> RegistrySpec:
    return make_spec(request.param, tmp_path / "reg")


@pytest.fixture
def reg(spec: RegistrySpec) -> Iterator[Registry]:
    r = spec.open()
    r.create_project("p")
    r.create_artifact("p", "a", type="dataset")
    yield r
    r.close()


def manifest(reg: Registry, files: dict[str, bytes], *, upload: bool = True) -> Manifest:
    if upload:
        for data in files.values():
            store_bytes(reg.blobs, data)
    return Manifest.build((path, len(data), sha(data)) for path, data in files.items())


def read_blob(reg: Registry, digest: str) -> bytes:
    """A blob's bytes as the registry serves them (its file, or its presigned URL)."""
    path = reg.blobs.local_path(digest)
    if path is not None:
        return path.read_bytes()
    signed = reg.blobs.presign(digest, 60)
    assert signed is not None
    resp = httpx.get(signed[0], timeout=30)
    assert resp.status_code == 200, resp.status_code
    return resp.content


def blob_keys(spec: RegistrySpec, reg: Registry, digest: str) -> set[str]:
    """What the store holds for a blob: its bytes and its sidecar, as names."""
    if spec.backend == SQLITE:
        shard = Path(spec.data_dir) / "blobs" / digest[:2]
        return {p.name for p in shard.glob(f"{digest}*")}
    return {k.rsplit("/", 1)[-1] for k in s3_keys(spec, f"blobs/{digest[:2]}/{digest}")}


def mark_only(reg: Registry, grace: float = 0) -> list[str]:
    """Steps 1-3 of a collection, stopping before anything is deleted (a crash there)."""
    gc = GarbageCollector(reg)
    report = GcReport(dry_run=False, grace=grace)
    candidates, seen = gc.candidates(report, grace)
    return gc.mark(candidates, seen, dry_run=False)


# --------------------------------------------------------------------------- pure parts


def test_reference_set_is_a_set_on_disk(tmp_path: Path) -> None:
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(1_500)]
    with ReferenceSet(str(tmp_path)) as refs:
        (path,) = list(tmp_path.iterdir())  # its temporary file
        refs.add(digests[:1_000])
        refs.add(digests[500:1_000])  # duplicates are fine
        assert len(refs) == 1_000
        # lookups cross the 500-per-query boundary and keep the caller's order irrelevant
        assert refs.referenced(digests[::-1]) == set(digests[:1_000])
        assert refs.referenced([]) == set()
        with pytest.raises(InvalidInput):
            refs.add(["not-a-digest"])
        assert len(refs) == 1_000  # a bad batch adds nothing
        refs.add(digests[1_000:])
        assert refs.referenced(digests[999:1_001]) == set(digests[999:1_001])
    assert not path.exists()


def test_reference_set_on_a_full_disk_says_so(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "256k") as point:
        with ReferenceSet(str(point)) as refs, pytest.raises(StorageFull, match="TMPDIR"):
            refs.add(hashlib.sha256(str(i).encode()).hexdigest() for i in range(50_000))
        assert list(point.iterdir()) == []  # removed all the same


def test_parse_duration() -> None:
    assert parse_duration("1h") == 3600
    assert parse_duration("90m") == 5400
    assert parse_duration("1.5h") == 5400
    assert parse_duration("2d") == 172800
    assert parse_duration("45") == 45
    assert parse_duration("0") == 0
    assert parse_duration(" 10S ") == 10
    for bad in ("", "h", "-1h", "1y", "1h30m"):
        with pytest.raises(InvalidInput, match="duration"):
            parse_duration(bad)


def test_invalid_grace_is_refused(tmp_path: Path) -> None:
    reg = Registry.open(tmp_path / "r")
    try:
        for bad in (-1, float("nan"), "1h", True):
            with pytest.raises(InvalidInput, match="grace"):
                reg.gc(bad)  # type: ignore[arg-type]
    finally:
        reg.close()


# --------------------------------------------------------------------------- what is freed


def test_gc_frees_only_unreferenced_blobs(spec: RegistrySpec, reg: Registry) -> None:
    only_v0 = os.urandom(3 * BLOCK_SIZE + 5)  # several blocks: it has a sidecar
    shared = os.urandom(2 * BLOCK_SIZE)
    only_v1 = b"v1 only"
    reg.commit("p", "a", manifest(reg, {"x.bin": only_v0, "s.bin": shared}))
    reg.commit("p", "a", manifest(reg, {"y.bin": only_v1, "s.bin": shared}))
    reg.create_artifact("p", "b", type="model")
    reg.commit("p", "b", manifest(reg, {"copy.bin": only_v1}))
    assert blob_keys(spec, reg, sha(only_v0)) == {sha(only_v0), f"{sha(only_v0)}.blocks"}

    nothing = reg.gc(0)  # nothing is unreferenced yet
    assert (nothing.scanned, nothing.freed, nothing.doomed) == (3, 0, [])
    assert nothing.referenced == 3 and nothing.versions == 3

    reg.delete_version("p", "a", 0)
    report = reg.gc(0)
    assert report.doomed == [(sha(only_v0), len(only_v0))]
    assert (report.freed, report.freed_bytes, report.scanned) == (1, len(only_v0), 3)
    assert report.referenced == 2 and report.versions == 2 and not report.dry_run
    assert blob_keys(spec, reg, sha(only_v0)) == set()  # the blob and its sidecar
    assert reg.missing_blobs([sha(only_v0), sha(shared), sha(only_v1)]) == {sha(only_v0)}
    assert read_blob(reg, sha(shared)) == shared
    assert read_blob(reg, sha(only_v1)) == only_v1
    assert len(reg.blob_blocks(sha(shared))) == 2 * 32
    assert reg.meta.doomed_blobs() == []

    again = reg.gc(0)
    assert (again.scanned, again.freed, again.doomed) == (2, 0, [])

    # The deleted version's blob can come back: upload it and commit it again.
    reg.commit("p", "a", manifest(reg, {"x.bin": only_v0}))
    assert read_blob(reg, sha(only_v0)) == only_v0


def test_blobs_younger_than_the_grace_are_kept(reg: Registry) -> None:
    gone = b"deleted long ago"
    reg.commit("p", "a", manifest(reg, {"f": gone}))
    reg.delete_version("p", "a", 0)
    pending = b"uploaded, commit not yet made"
    store_bytes(reg.blobs, pending)

    report = reg.gc(3600)
    assert (report.freed, report.young, report.referenced) == (0, 2, 0)
    assert reg.missing_blobs([sha(gone), sha(pending)]) == set()

    # The commit the upload was for arrives later and finds its blob.
    reg.commit("p", "a", manifest(reg, {"g": pending}, upload=False))
    # An hour later (a registry clock an hour ahead) only the deleted version's blob goes.
    later = Registry(reg.meta, reg.blobs, clock=lambda: time.time() + 3601)
    report = later.gc(3600)
    assert [d for d, _ in report.doomed] == [sha(gone)]
    assert reg.missing_blobs([sha(gone), sha(pending)]) == {sha(gone)}


def test_dry_run_changes_nothing(spec: RegistrySpec, reg: Registry) -> None:
    data = os.urandom(1000)
    reg.commit("p", "a", manifest(reg, {"f": data}))
    reg.delete_version("p", "a", 0)
    epoch = reg.meta.gc_epoch()
    report = reg.gc(0, dry_run=True)
    assert report.dry_run and report.doomed == [(sha(data), 1000)]
    assert (report.freed, report.freed_bytes, report.doomed_bytes) == (0, 0, 1000)
    assert reg.meta.doomed_blobs() == [] and reg.meta.gc_epoch() == epoch
    assert read_blob(reg, sha(data)) == data
    assert reg.missing_blobs([sha(data)]) == set()


# --------------------------------------------------------------------------- the doomed state


def test_doomed_blob_refuses_commits_and_uploads(spec: RegistrySpec, reg: Registry) -> None:
    data = os.urandom(5000)
    m = manifest(reg, {"f": data})
    reg.commit("p", "a", m)
    reg.delete_version("p", "a", 0)
    assert mark_only(reg) == [sha(data)]

    assert reg.missing_blobs([sha(data)]) == {sha(data)}  # clients will upload it again
    with pytest.raises(Conflict, match="being garbage-collected; upload it again and retry"):
        reg.commit("p", "a", m)
    assert reg.get_artifact("p", "a").versions == ()
    with pytest.raises(Conflict, match=r"garbage-collected.*retry the upload in a moment"):
        reg.blob_writer(sha(data), len(data))
    if isinstance(reg.blobs, S3BlobStore):
        with pytest.raises(Conflict, match="garbage-collected"):
            reg.begin_upload(sha(data), len(data))
        with pytest.raises(Conflict, match="garbage-collected"):
            reg.complete_upload(sha(data), len(data), f"{sha(data)}.{'0' * 24}", None, [])

    report = reg.gc(0)  # finishes the doomed blob, finds nothing new
    assert report.resumed == 1 and report.freed == 0
    assert reg.missing_blobs([sha(data)]) == {sha(data)}
    with pytest.raises(InvalidInput, match="not in the registry"):
        reg.commit("p", "a", m)

    store_bytes(reg.blobs, data)  # upload again, commit again: works
    res = reg.commit("p", "a", m)
    assert res.created and res.version.number == 1
    assert read_blob(reg, sha(data)) == data


def test_stale_size_cache_of_another_server_is_not_trusted(spec: RegistrySpec) -> None:
    """Server B saw the blob before a whole collection ran on another host: its commit must
    not trust what it saw (S3 sizes are cached per server), whether the collection ran before
    B's commit started or between B's existence check and B's transaction."""
    a, b = spec.open(), spec.open()
    try:
        a.create_project("p")
        a.create_artifact("p", "a", type="dataset")
        real_commit = b.meta.commit

        def commit_after_gc(*args: Any) -> Any:
            assert a.gc(0).freed == 1  # after B's existence check, before its transaction
            return real_commit(*args)

        for when in ("before", "during"):
            data = os.urandom(2000) + when.encode()
            m = manifest(a, {"f": data})
            version = a.commit("p", "a", m).version.number
            a.delete_version("p", "a", version)
            assert b.missing_blobs([sha(data)]) == set()  # B now knows (caches) its size
            if when == "before":
                assert a.gc(0).freed == 1
            else:
                b.meta.commit = commit_after_gc  # type: ignore[method-assign]
            try:
                with pytest.raises(InvalidInput, match="not in the registry"):
                    b.commit("p", "a", m)
            finally:
                b.meta.commit = real_commit  # type: ignore[method-assign]
            assert b.missing_blobs([sha(data)]) == {sha(data)}
    finally:
        a.close()
        b.close()


def test_interrupted_gc_is_finished_by_the_next(spec: RegistrySpec, reg: Registry) -> None:
    one, two = os.urandom(300_000), os.urandom(700)
    reg.commit("p", "a", manifest(reg, {"1": one, "2": two}))
    reg.delete_version("p", "a", 0)
    assert sorted(mark_only(reg)) == sorted([sha(one), sha(two)])
    reg.blobs.delete(sha(one))  # crashed after deleting one blob, before un-dooming any
    assert reg.meta.doomed_blobs() == sorted([sha(one), sha(two)])

    again = spec.open()  # a new process
    try:
        progress: list[str] = []
        report = again.gc(3600, progress=progress.append)
        assert report.resumed == 2 and report.freed == 0
        assert any("interrupted" in line for line in progress)
    finally:
        again.close()
    assert reg.meta.doomed_blobs() == []
    assert blob_keys(spec, reg, sha(one)) == set() and blob_keys(spec, reg, sha(two)) == set()
    assert reg.missing_blobs([sha(one), sha(two)]) == {sha(one), sha(two)}


def test_one_collection_at_a_time(spec: RegistrySpec, reg: Registry) -> None:
    other = spec.open()
    try:
        with other.meta.gc_run_lock():
            with pytest.raises(Conflict, match="another artfs gc is running"):
                reg.gc(0)
            assert reg.gc(0, dry_run=True).freed == 0  # a dry run needs no exclusivity
        assert reg.gc(0).freed == 0
    finally:
        other.close()


# --------------------------------------------------------------------------- exclusion


def test_commit_waits_for_marking_and_sees_the_doomed_state(spec: RegistrySpec) -> None:
    """A commit started while the collector holds its lock waits, then is refused."""
    gc_side, committer = spec.open(), spec.open()
    try:
        gc_side.create_project("p")
        gc_side.create_artifact("p", "a", type="dataset")
        data = os.urandom(1500)
        m = manifest(gc_side, {"f": data})
        gc_side.commit("p", "a", m)
        gc_side.delete_version("p", "a", 0)

        marking = threading.Event()
        release = threading.Event()

        def hold_lock() -> None:
            # mark_doomed's transaction, held open: the commit must wait for it.
            meta: Any = gc_side.meta
            with meta._write() as c:
                meta._lock_gc(c, exclusive=True)
                marking.set()
                release.wait(30)
                meta._q(
                    c, "INSERT INTO doomed_blobs (sha256, marked) VALUES (?, ?)", sha(data), 1.0
                )

        holder = threading.Thread(target=hold_lock)
        holder.start()
        assert marking.wait(30)
        outcome: list[BaseException | str] = []

        def commit() -> None:
            try:
                committer.commit("p", "a", m)
                outcome.append("committed")
            except BaseException as e:
                outcome.append(e)

        t = threading.Thread(target=commit)
        t.start()
        time.sleep(0.5)
        assert outcome == []  # waiting for the collector
        release.set()
        holder.join(30)
        t.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], Conflict), outcome
        assert "garbage-collected" in str(outcome[0])
    finally:
        gc_side.close()
        committer.close()


def test_marking_waits_for_a_commit_and_sees_its_references(spec: RegistrySpec) -> None:
    """A marking started while a commit holds the lock waits, then keeps its blobs."""
    gc_side, committer = spec.open(), spec.open()
    try:
        gc_side.create_project("p")
        gc_side.create_artifact("p", "a", type="dataset")
        data = os.urandom(1500)
        m = manifest(gc_side, {"f": data})
        gc_side.commit("p", "a", m)
        gc_side.delete_version("p", "a", 0)

        in_commit = threading.Event()
        release = threading.Event()
        real_commit = committer.meta.commit

        def slow_commit(
            project: str, artifact: str, new: Any, aliases: Any, verify: Callable[[int], None]
        ) -> Any:
            def held(epoch: int) -> None:  # inside the commit's transaction
                verify(epoch)
                in_commit.set()
                release.wait(30)

            return real_commit(project, artifact, new, aliases, held)

        committer.meta.commit = slow_commit  # type: ignore[method-assign]
        t = threading.Thread(target=lambda: committer.commit("p", "a", m))
        t.start()
        assert in_commit.wait(30)
        reports: list[GcReport] = []
        g = threading.Thread(target=lambda: reports.append(gc_side.gc(0)))
        g.start()
        time.sleep(0.5)
        assert reports == []  # the marking waits for the commit
        release.set()
        t.join(30)
        g.join(30)
        assert reports[0].doomed == [] and reports[0].freed == 0
        assert read_blob(gc_side, sha(data)) == data
        assert gc_side.get_version("p", "a", "latest").number == 1
    finally:
        gc_side.close()
        committer.close()


@pytest.mark.timeout(600)
def test_concurrent_commits_and_collections_lose_nothing(spec: RegistrySpec) -> None:
    """Committers reuse blobs of deleted versions and upload new ones while collections with
    no grace run in a loop, every party on its own registry instance (its own "server").
    Every blob of every live version must stay readable."""
    setup = spec.open()
    setup.create_project("p")
    pool = [os.urandom(random.randint(100, 3000)) for _ in range(24)]
    for i, data in enumerate(pool):  # every pool blob starts out unreferenced
        setup.create_artifact("p", f"seed{i}", type="dataset")
        setup.commit("p", f"seed{i}", manifest(setup, {"f": data}))
        setup.delete_version("p", f"seed{i}", 0)
    workers, commits_each = 3, 6 if spec.backend == POSTGRES else 8
    for w in range(workers):
        setup.create_artifact("p", f"w{w}", type="dataset")
    done = threading.Event()
    errors: list[BaseException] = []
    retries = [0]
    collections: list[GcReport] = []

    def committer(w: int) -> None:
        reg = spec.open()
        rng = random.Random(w)
        try:
            n = -1
            stop_at = time.monotonic() + 90
            # At least commits_each commits, and on until a few collections have run meanwhile.
            while (n := n + 1) < commits_each or (
                len(collections) < 4 and time.monotonic() < stop_at
            ):
                # A breath between commits: SQLite's write lock is not fair, and three
                # committers in a tight loop could starve the collector's marking.
                time.sleep(rng.random() / 200)
                files = {f"{k}.bin": d for k, d in enumerate(rng.sample(pool, 4))}
                files["own.bin"] = f"worker {w} commit {n}".encode() + os.urandom(64)
                m = manifest(reg, files, upload=False)
                by_sha = {sha(d): d for d in files.values()}
                deadline = time.monotonic() + 120
                while True:  # with no grace, a collection may take blobs before the commit
                    try:
                        for digest in reg.missing_blobs(by_sha):
                            w_ = reg.blob_writer(digest, len(by_sha[digest]))
                            w_.write(by_sha[digest])
                            w_.finish()
                        reg.commit("p", f"w{w}", m)
                        break
                    except (Conflict, InvalidInput) as e:  # doomed or collected: again
                        assert "garbage-collected" in str(e) or "not in the registry" in str(e)
                        retries[0] += 1
                        assert time.monotonic() < deadline, "commit never got through"
                        time.sleep(rng.random() / 100)
                versions = reg.get_artifact("p", f"w{w}").versions
                if n % 2 == 1 and len(versions) > 1:  # more garbage for the collector
                    reg.delete_version("p", f"w{w}", versions[0].number)
        except BaseException as e:
            errors.append(e)
        finally:
            reg.close()

    def collector() -> None:
        reg = spec.open()
        try:
            while not done.is_set():
                collections.append(reg.gc(0))
                time.sleep(random.random() / 50)  # leave commits a chance: there is no grace
        except BaseException as e:
            errors.append(e)
        finally:
            reg.close()

    threads = [threading.Thread(target=committer, args=(w,)) for w in range(workers)]
    gc_thread = threading.Thread(target=collector)
    gc_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(500)
    done.set()
    gc_thread.join(120)
    assert not errors, errors
    assert len(collections) >= 4
    assert sum(r.freed for r in collections) > 0  # the collector really did delete things

    setup.gc(0)  # and once more with everything quiet
    live = 0
    for art in setup.list_artifacts("p"):
        for v in art.versions:
            for entry in setup.get_manifest("p", art.name, v.number).values():
                assert sha(read_blob(setup, entry.sha256)) == entry.sha256
                live += 1
    assert live >= workers * (commits_each // 2) * 5
    setup.close()


# --------------------------------------------------------------------------- the CLI


def test_cli_end_to_end(tmp_path: Path) -> None:
    data_dir = tmp_path / "registry"
    server = Server(data_dir)
    server.start()
    try:
        env = {"ARTFS_REGISTRY": server.url, "ARTFS_CACHE_DIR": str(tmp_path / "cache")}
        one, two = tmp_path / "one", tmp_path / "two"
        one.mkdir()
        two.mkdir()
        shared = os.urandom(400_000)
        (one / "shared.bin").write_bytes(shared)
        (two / "shared.bin").write_bytes(shared)
        (one / "old.bin").write_bytes(os.urandom(300_000))
        (two / "new.txt").write_text("the remaining version\n")
        run_cli("put", str(one), "p/a", env=env)
        run_cli("put", str(two), "p/a", env=env)
        old_sha = sha((one / "old.bin").read_bytes())
        old_file = data_dir / "blobs" / old_sha[:2] / old_sha
        assert old_file.exists() and old_file.with_name(f"{old_sha}.blocks").exists()

        run_cli("delete", "p/a:v0", env=env)
        dry = run_cli("gc", "--data", str(data_dir), "--grace", "0", "--dry-run")
        assert dry.stdout.splitlines()[0] == f"{old_sha}\t300000"
        assert "dry run: would free 1 blob," in dry.stdout and old_file.exists()

        kept = run_cli("gc", "--data", str(data_dir))  # default grace: 1 hour
        assert "freed 0 blobs" in kept.stdout and "younger than the grace (1h)" in kept.stdout
        assert old_file.exists()

        done = run_cli("gc", "--data", str(data_dir), "--grace", "0s")
        assert done.stdout.startswith("freed 1 blob, 293.0 KiB"), done.stdout
        assert "scanned" in done.stderr
        assert not old_file.exists() and not old_file.with_name(f"{old_sha}.blocks").exists()

        dest = tmp_path / "got"
        run_cli("get", "p/a:v1", str(dest), env=env)
        assert (dest / "shared.bin").read_bytes() == shared
        assert (dest / "new.txt").read_text() == "the remaining version\n"

        # Uploads of a doomed blob are refused over HTTP too (API and data port).
        reg = Registry.open(data_dir)
        try:
            (one / "old.bin").write_bytes((one / "old.bin").read_bytes())
            run_cli("put", str(one), "p/a", env=env)  # old.bin is back, in v2
            reg.delete_version("p", "a", 2)
            assert mark_only(reg) == [old_sha]
            body = (one / "old.bin").read_bytes()
            for url in (
                f"{server.url}/v1/blobs/{old_sha}",
                f"http://127.0.0.1:{server.blob_port}/blobs/{old_sha}",
            ):
                resp = httpx.put(url, content=body, timeout=30)
                assert resp.status_code == 409, (url, resp.status_code, resp.text)
                assert resp.json()["error"]["code"] == "being_collected"
            resp = httpx.post(
                f"{server.url}/v1/blobs/missing", json={"digests": [old_sha]}, timeout=30
            )
            assert resp.json()["missing"] == [old_sha]
        finally:
            reg.close()

        # `artfs put` now meets the doomed blob: it waits for the collection, which an
        # `artfs gc` run (finishing the interrupted one) completes meanwhile, then uploads
        # the blob again and commits.
        def collect_later() -> subprocess.CompletedProcess[str]:
            time.sleep(1.5)
            return run_cli("gc", "--data", str(data_dir), "--grace", "1h")

        with ThreadPoolExecutor(1) as pool:
            finished = pool.submit(collect_later)
            waited = run_cli("put", str(one), "p/a", env=env)
            assert "finished 1 left by an interrupted run" in finished.result().stdout
        assert waited.stdout.strip() == "p/a:v3"
        run_cli("get", "p/a:v3", str(tmp_path / "got3"), env=env)
        assert (tmp_path / "got3" / "old.bin").read_bytes() == body

        bad = run_cli("gc", "--data", str(data_dir), "--grace", "soon", check=False)
        assert bad.returncode == 1
        assert bad.stderr.strip().splitlines() == [
            "artfs gc: invalid duration 'soon': use a number with an optional unit s, m, h, "
            "d or w, e.g. 1h or 90m"
        ]
    finally:
        server.stop()


@pytest.mark.parametrize("backend", backend_params())
def test_put_retries_while_a_collection_deletes_its_blob(backend: str, tmp_path: Path) -> None:
    """A blob that existed unreferenced when `artfs put` asked `missing` may be doomed and
    deleted by a collection before the commit; the client waits, uploads again and commits
    (BeingCollected over HTTP), instead of failing."""
    assert isinstance(from_code("being_collected", "x"), BeingCollected)
    spec = make_spec(backend, tmp_path / "data", for_servers=True)
    server = start_spec_server(spec)
    reg = spec.open()
    try:
        data = os.urandom(300_000)
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "f.bin").write_bytes(data)

        async def put() -> Any:
            async with HttpRegistryClient(server.url, timeout=10.0) as client:
                result, _ = await put_tree(client, tmp_path / "src", "p", "a", show_progress=False)
                return result

        first = trio.run(put)
        reg.delete_version("p", "a", first.version.number, force=True)
        assert mark_only(reg) == [sha(data)]  # doomed, not deleted yet: a collection running

        def finish_later() -> None:
            time.sleep(1.5)
            assert reg.gc(0).resumed == 1  # deletes it and un-dooms it

        collector = threading.Thread(target=finish_later)
        collector.start()
        started = time.monotonic()
        again = trio.run(put)
        collector.join()
        assert time.monotonic() - started >= 1.0  # it waited for the collection
        assert again.created and again.version.number == 1
        assert read_blob(reg, sha(data)) == data
    finally:
        reg.close()
        stop_server(server.proc)
        release(spec)
