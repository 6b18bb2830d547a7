"""Blob integrity on the server (issue 10, item 1): the pure rules (gate, pacer, verdict),
then a registry's stores on both configurations: a damaged or missing blob is found,
quarantined, recorded against its versions, never reported present, and healed by an
upload of the right bytes; ``fsck`` finds both kinds; the collector is not confused.

The end-to-end cases (a mount, ``artfs put``, the server's reports) are in
tests/test_integrity_e2e.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from artfs.errors import NotFound
from artfs.hashing import BLOCK_SIZE, BlobHasher
from artfs.manifest import Manifest
from artfs.registry import Registry
from artfs.registry.blobs import LocalBlobStore, store_bytes
from artfs.registry.fsck import Fsck, format_report
from artfs.registry.integrity import Admission, CheckGate, Pacer, Verdict, judge
from artfs.registry.sqlbase import SCHEMA_VERSION

from .backends import SQLITE, RegistrySpec, backend_params, make_spec

MiB = 1 << 20


# --- pure rules --------------------------------------------------------------------------
def test_pacer_keeps_the_average_rate() -> None:
    pacer = Pacer(1000.0, now=0.0)
    now, waited = 0.0, 0.0
    for _ in range(50):  # 50 chunks of 100 bytes at 1000 B/s: 5 s of budget
        wait = pacer.delay(100, now)
        waited += wait
        now += wait
    assert 4.0 <= now <= 5.0  # one second of burst at most
    assert Pacer(0.0).delay(10**12, 0.0) == 0.0  # 0: unlimited
    idle = Pacer(1000.0, now=0.0)
    assert idle.delay(1000, 100.0) == 0.0  # after a long idle: one second's burst is free
    assert idle.delay(1000, 100.0) == pytest.approx(1.0)


def test_gate_one_check_per_blob_and_bounded_overall() -> None:
    gate = CheckGate(recheck_after=60.0, per_second=1.0, burst=3)
    a, b = "a" * 64, "b" * 64
    assert gate.admit(a, 0.0) is Admission.STARTED
    assert gate.admit(a, 0.1) is Admission.RUNNING  # one at a time per blob
    gate.done(a, Verdict.OK, 1.0)
    assert gate.admit(a, 2.0) is Admission.RECENT  # judged intact a moment ago
    assert gate.admit(a, 62.0) is Admission.STARTED  # the window passed
    gate.done(a, Verdict.DAMAGED, 62.0)
    assert gate.admit(a, 62.5) is Admission.RECENT  # quarantined: nothing more to find
    assert gate.admit(a, 130.0) is Admission.STARTED
    gate.done(a, None, 130.0)  # the check failed (store down): the next report may retry
    assert gate.admit(a, 130.5) is Admission.STARTED
    gate.done(a, None, 131.0)
    # A flood of distinct blobs: the burst, then one per second.
    flood = [f"{i:064x}" for i in range(100)]
    started = [gate.admit(s, 200.0) for s in flood].count(Admission.STARTED)
    assert started == 3
    assert gate.admit(b, 200.0) is Admission.LIMITED
    assert gate.admit(b, 201.0) is Admission.STARTED


def test_verdicts() -> None:
    data = os.urandom(3 * 128 * 1024 + 5)
    h = BlobHasher()
    h.update(data)
    sha = h.hexdigest()
    assert judge(sha, None, None) is Verdict.MISSING
    assert judge(sha, h, h.block_digests()) is Verdict.OK
    assert judge(sha, h, None) is Verdict.SIDECAR
    assert judge(sha, h, b"\0" * 96) is Verdict.SIDECAR
    bad = BlobHasher()
    bad.update(data[:-1] + b"X")
    assert judge(sha, bad, h.block_digests()) is Verdict.DAMAGED


# --- a registry's stores, both configurations --------------------------------------------
@pytest.fixture(params=backend_params())
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> RegistrySpec:
    return make_spec(request.param, tmp_path / "data")


@pytest.fixture
def registry(spec: RegistrySpec) -> Iterator[Registry]:
    reg = spec.open()
    try:
        yield reg
    finally:
        reg.close()


def overwrite_blob(spec: RegistrySpec, registry: Registry, sha: str, data: bytes) -> None:
    """Damage a stored blob behind the registry's back: a rotten disk, a hand edit, an S3
    object overwritten."""
    if spec.backend == SQLITE:
        assert isinstance(registry.blobs, LocalBlobStore)
        path = registry.blobs.path(sha)
        os.chmod(path, 0o600)
        path.write_bytes(data)
        return
    import boto3

    from .backends import S3_ENDPOINT

    assert spec.blobs is not None
    bucket, prefix = spec.blobs[len("s3://") :].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=S3_ENDPOINT)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/blobs/{sha[:2]}/{sha}", Body=data)


def remove_blob(spec: RegistrySpec, registry: Registry, sha: str) -> None:
    """Lose a stored blob (and its sidecar) behind the registry's back."""
    if spec.backend == SQLITE:
        assert isinstance(registry.blobs, LocalBlobStore)
        registry.blobs.path(sha).unlink()
        return
    import boto3

    from .backends import S3_ENDPOINT

    assert spec.blobs is not None
    bucket, prefix = spec.blobs[len("s3://") :].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=S3_ENDPOINT)
    s3.delete_object(Bucket=bucket, Key=f"{prefix}/blobs/{sha[:2]}/{sha}")


def quarantined(spec: RegistrySpec, registry: Registry, sha: str) -> bool:
    return bool(registry.blobs.quarantined(sha))  # type: ignore[attr-defined]


def publish(registry: Registry, files: dict[str, bytes]) -> tuple[int, dict[str, str]]:
    registry.create_project("p", exist_ok=True)
    registry.create_artifact("p", "a", type="dataset", exist_ok=True)
    shas = {path: store_bytes(registry.blobs, data) for path, data in files.items()}
    manifest = Manifest.build((p, len(files[p]), sha) for p, sha in shas.items())
    return registry.commit("p", "a", manifest).version.number, shas


def test_damaged_blob_is_quarantined_recorded_and_healed(
    spec: RegistrySpec, registry: Registry
) -> None:
    good = os.urandom(MiB + 77)
    number, shas = publish(registry, {"big.bin": good, "small.txt": b"fine"})
    sha = shas["big.bin"]
    overwrite_blob(spec, registry, sha, b"rot" + good[3:])
    # Before any check the store still looks complete: this is what "Why" 1 hit.
    assert registry.missing_blobs([sha]) == set()

    assert registry.check_blob(sha, detail="client saw a bad block") == "damaged"
    assert quarantined(spec, registry, sha)
    assert registry.missing_blobs([sha]) == {sha}  # an upload is asked for, not skipped
    info = registry.get_version("p", "a", f"v{number}")
    assert info.damaged == 1
    [summary] = [v for v in registry.get_artifact("p", "a").versions if v.number == number]
    assert summary.damaged == 1
    [record] = registry.damaged_blobs()
    assert (record.sha256, record.state, record.versions) == (sha, "damaged", (f"p/a:v{number}",))
    assert "client saw a bad block" in record.detail
    with pytest.raises(NotFound):
        registry.blob_size(sha)  # never served: not found (quarantined)

    # The right bytes heal it: stored as new ("created"), the record goes.
    w = registry.blob_writer(sha, len(good))
    w.write(good)
    assert w.finish() is True
    assert registry.get_version("p", "a", f"v{number}").damaged == 0
    assert registry.damaged_blobs() == []
    assert registry.check_blob(sha) == "ok"
    # Wrong bytes never heal: the upload is refused and nothing changes.
    assert registry.check_blob(shas["small.txt"]) == "ok"


def test_a_second_check_of_a_healthy_blob_changes_nothing(
    spec: RegistrySpec, registry: Registry
) -> None:
    _, shas = publish(registry, {"x": os.urandom(300_000)})
    assert registry.check_blob(shas["x"]) == "ok"
    assert registry.damaged_blobs() == []
    assert registry.missing_blobs(shas.values()) == set()


def test_fsck_finds_damaged_and_missing_blobs_and_reports_versions(
    spec: RegistrySpec, registry: Registry
) -> None:
    v0, s0 = publish(registry, {"one.bin": os.urandom(400_000), "same.txt": b"shared"})
    v1, s1 = publish(registry, {"two.bin": os.urandom(200_000), "same.txt": b"shared"})
    overwrite_blob(spec, registry, s0["one.bin"], b"garbage")
    remove_blob(spec, registry, s1["two.bin"])

    dry = Fsck(registry).run(dry_run=True)
    assert set(dry.damaged) == {s0["one.bin"]} and dry.missing == [s1["two.bin"]]
    assert not quarantined(spec, registry, s0["one.bin"])  # dry run: nothing moved
    assert registry.damaged_blobs() == []

    report = Fsck(registry).run()
    assert not report.clean
    assert set(report.damaged) == {s0["one.bin"]}
    assert report.missing == [s1["two.bin"]]
    assert report.users[s0["one.bin"]] == [f"p/a:v{v0}"]
    assert report.users[s1["two.bin"]] == [f"p/a:v{v1}"]
    lines = format_report(report)
    assert any(s0["one.bin"] in ln and "quarantined" in ln and "p/a:v0" in ln for ln in lines)
    assert any(ln.startswith("missing") and s1["two.bin"] in ln for ln in lines)
    assert quarantined(spec, registry, s0["one.bin"])
    assert registry.get_version("p", "a", f"v{v0}").damaged == 1
    assert registry.get_version("p", "a", f"v{v1}").damaged == 1
    states = {d.sha256: d.state for d in registry.damaged_blobs()}
    assert states == {s0["one.bin"]: "damaged", s1["two.bin"]: "missing"}

    # The collector is not confused: it deletes nothing referenced, and the quarantined copy
    # (outside the store's namespace) stays for inspection.
    gc = registry.gc(0.0)
    assert gc.doomed == []
    assert quarantined(spec, registry, s0["one.bin"])
    assert registry.missing_blobs([s0["same.txt"]]) == set()

    # A second fsck says the same (the quarantined blob is still "damaged", not "missing").
    again = Fsck(registry).run()
    assert again.damaged == {} and set(again.missing) == {s0["one.bin"], s1["two.bin"]}
    assert again.quarantined == {s0["one.bin"]}
    assert {d.sha256: d.state for d in registry.damaged_blobs()} == states


def test_an_s3_store_keeps_block_digests_and_a_rewritten_sidecar_replaces_them(
    spec: RegistrySpec, registry: Registry
) -> None:
    """Block digests read or written by an S3 store are kept in memory (a cold read's digest
    request then makes no store round trip: issue 9, first byte); a sidecar rewritten by a
    repair replaces them, and a deleted blob is not answered from them."""
    from artfs.registry.s3 import S3BlobStore

    store = registry.blobs
    if not isinstance(store, S3BlobStore):
        pytest.skip("a local store reads its sidecar from its own disk")
    data = os.urandom(3 * BLOCK_SIZE + 5)
    _, shas = publish(registry, {"f": data})
    sha = shas["f"]
    h = BlobHasher()
    h.update(data)
    right = h.block_digests()
    assert registry.blob_blocks(sha) == right
    store.client.delete_object(Bucket=store.bucket, Key=store.key(sha) + ".blocks")
    assert registry.blob_blocks(sha) == right  # kept: no store round trip
    wrong = b"\0" * 32 * 4
    store.write_sidecar(sha, wrong)  # (what a repair does, with the right ones)
    assert registry.blob_blocks(sha) == wrong
    assert registry.check_blob(sha) == "sidecar"  # repaired: the right ones again
    assert registry.blob_blocks(sha) == right
    store.delete(sha)
    with pytest.raises(NotFound):
        registry.blob_blocks(sha)


def test_fsck_rebuilds_a_damaged_canonical_manifest_and_reports_a_lost_one(
    spec: RegistrySpec, registry: Registry
) -> None:
    """Step 4: a stored canonical form (what mounts fetch) that does not match its version's
    digest is rebuilt from the JSON form; with both forms damaged the version is reported as
    lost, and the rest of fsck still runs."""
    import gzip
    import hashlib

    number, _ = publish(registry, {"x.bin": b"x" * 1000, "y.bin": b"y"})
    number2, _ = publish(registry, {"z.bin": b"z"})
    digest, _, good = registry.manifest_canonical_gz("p", "a", number)
    keys = {k[1]: k for k, *_ in registry.meta.manifest_forms_after(None, 10)}
    key = keys[number]
    junk = gzip.compress(b"not/a/manifest\x000\x00" + b"0" * 64 + b"\n")
    assert registry.meta.replace_canonical_gz(key, digest, False, junk)
    dry = Fsck(registry).run(dry_run=True)
    assert dry.manifests_rebuilt == [f"p/a:v{number}"] and dry.manifests_lost == []
    assert registry.manifest_canonical_gz("p", "a", number)[2] == junk  # dry run: unchanged
    assert any(line.startswith("manifest\tp/a:v") for line in format_report(dry))
    report = Fsck(registry).run()
    assert report.manifests_rebuilt == [f"p/a:v{number}"] and report.clean
    rebuilt = gzip.decompress(registry.manifest_canonical_gz("p", "a", number)[2])
    assert hashlib.sha256(rebuilt).hexdigest() == digest
    assert rebuilt == gzip.decompress(good)
    assert Fsck(registry).run().manifests_rebuilt == []  # repaired for good
    # Both forms of the second version damaged: lost, reported, the run completes.
    key2 = keys[number2]
    digest2 = registry.manifest_canonical_gz("p", "a", number2)[0]
    assert registry.meta.replace_canonical_gz(key2, digest2, False, junk)
    with registry.meta._write() as c:  # type: ignore[attr-defined]
        registry.meta._q(  # type: ignore[attr-defined]
            c, "UPDATE manifests SET data=? WHERE artifact_id=? AND number=?", b"junk", *key2
        )
    report = Fsck(registry).run()
    assert report.manifests_lost == [f"p/a:v{number2}"] and not report.clean
    assert "1 manifest lost" in format_report(report)[-1]


def test_fsck_rewrites_a_wrong_sidecar_and_clears_healed_records(
    spec: RegistrySpec, registry: Registry
) -> None:
    data = os.urandom(500_000)
    _, shas = publish(registry, {"f": data})
    sha = shas["f"]
    registry.blobs.write_sidecar(sha, b"\0" * 32 * 4)
    assert registry.check_blob(sha) == "sidecar"
    h = BlobHasher()
    h.update(data)
    assert registry.blobs.read_sidecar(sha) == h.block_digests()
    remove_blob(spec, registry, sha)
    assert Fsck(registry).run().missing == [sha]
    store_bytes(registry.blobs, data)  # healed behind the registry's back (not via upload)
    report = Fsck(registry).run()
    assert report.clean and report.cleared == [sha]
    assert registry.damaged_blobs() == []


def test_schema_7_upgrades_an_older_sqlite_registry(tmp_path: Path) -> None:
    """A registry of schema 6 (project isolation, before the damage tables) gains them."""
    import sqlite3

    reg = Registry.open(tmp_path)
    reg.close()
    db = sqlite3.connect(tmp_path / "registry.db")
    db.execute("DROP TABLE damaged_versions")
    db.execute("DROP TABLE damaged_blobs")
    db.execute("PRAGMA user_version=6")
    db.commit()
    db.close()
    reg = Registry.open(tmp_path)
    try:
        assert reg.damaged_blobs() == []
    finally:
        reg.close()
    db = sqlite3.connect(tmp_path / "registry.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 7
    db.close()


# --- the cache's reports, against the in-memory twin ---------------------------------------
@pytest.mark.parametrize("size", [5000, 3 * 128 * 1024 + 9])  # one block, several blocks
async def test_cache_reports_damage_and_an_upload_heals(tmp_path: Path, size: int) -> None:
    """The mount's and ``artfs get``'s cache: a blob whose stored bytes rotted fails with
    IntegrityError (never wrong bytes) and is reported once; the registry then lists it
    missing (so ``artfs put`` uploads it) and the version damaged; the upload heals it."""
    from artfs.cache import BlobCache
    from artfs.client.memory import MemoryRegistryClient
    from artfs.errors import IntegrityError
    from artfs.publish import upload_missing

    client = MemoryRegistryClient()
    good = os.urandom(size)
    info = client.publish("p", "a", {"f.bin": good})
    sha = next(iter(client.versions[("p", "a", info.number)][1].blobs()))
    client.corrupt_blob(sha, good[:-1] + bytes([good[-1] ^ 1]))

    async with BlobCache(tmp_path / "cache", client) as cache:
        with pytest.raises(IntegrityError):
            async with await cache.open(sha, size) as reader:
                await reader.read(0, size)
    assert client.reports == [sha]
    assert await client.missing_blobs([sha]) == {sha}
    assert (await client.get_version("p", "a", "v0")).damaged == 1
    assert [v.damaged for v in (await client.get_artifact("p", "a")).versions] == [1]

    src = tmp_path / "f.bin"
    src.write_bytes(good)
    manifest = client.versions[("p", "a", info.number)][1]
    assert await upload_missing(client, manifest, {sha: src}) == size
    assert (await client.get_version("p", "a", "v0")).damaged == 0
    async with (
        BlobCache(tmp_path / "cache2", client) as cache,
        await cache.open(sha, size) as reader,
    ):
        assert await reader.read(0, size) == good


async def test_in_process_client_checks_a_reported_blob_at_once(tmp_path: Path) -> None:
    """``--registry DIR`` (no server): a report re-checks the blob in process."""
    from artfs.client.local import LocalRegistryClient

    reg = Registry.open(tmp_path / "reg")
    try:
        _, shas = publish(reg, {"f": os.urandom(200_000)})
        sha = shas["f"]
        assert isinstance(reg.blobs, LocalBlobStore)
        path = reg.blobs.path(sha)
    finally:
        reg.close()
    os.chmod(path, 0o600)
    path.write_bytes(os.urandom(200_000))
    async with LocalRegistryClient(tmp_path / "reg") as client:
        assert await client.missing_blobs([sha]) == set()
        assert await client.report_damage(sha, "bad block") == "started"
        assert await client.missing_blobs([sha]) == {sha}
        assert (await client.get_version("p", "a", "v0")).damaged == 1
