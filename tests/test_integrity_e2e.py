"""Blob integrity end to end (issue 10, item 1), on both configurations: a real server over
HTTP, real mounts and the real CLI.

- "Why" 1 exactly: a blob damaged on the server made reads fail, yet ``artfs put`` of the
  right bytes uploaded 0 B ("already present") and the blob could never be repaired. Now
  the mount's read fails cleanly (EIO, never wrong bytes), the server gets the report and
  quarantines the blob, the version is listed as damaged, and ``artfs put`` uploads the bytes
  and heals it.
- ``artfs fsck`` finds a damaged and a missing blob and names the versions; ``artfs put``
  heals both; the collector runs in between without harm.
- Damage reports are rate-limited: a client repeating or flooding them makes the server
  re-hash a bounded number of times.
- The background scrub (``--scrub-rate``) finds damage nobody read.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trio

from artfs.client.http import HttpRegistryClient
from artfs.hashing import BlobHasher

from .backends import S3_ENDPOINT, SQLITE, RegistrySpec, backend_params, make_spec, release
from .e2e import Server, mounted, run_cli

MiB = 1 << 20


def sha_of(data: bytes) -> str:
    h = BlobHasher()
    h.update(data)
    return h.hexdigest()


@pytest.fixture(params=backend_params())
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistrySpec]:
    spec = make_spec(request.param, tmp_path / "registry", for_servers=True)
    try:
        yield spec
    finally:
        release(spec)


def start(spec: RegistrySpec, *extra: str) -> Server:
    server = Server(Path(spec.data_dir), extra_args=(*spec.serve_args(), *extra))
    server.start()
    return server


@pytest.fixture
def server(spec: RegistrySpec) -> Iterator[Server]:
    s = start(spec)
    try:
        yield s
    finally:
        s.stop()


def store_args(spec: RegistrySpec) -> list[str]:
    """``artfs fsck`` / ``gc`` options for this registry (as given to ``artfs serve``)."""
    return ["--data", spec.data_dir, *spec.serve_args()]


def _s3(spec: RegistrySpec) -> tuple[object, str, str]:
    import boto3

    assert spec.blobs is not None
    bucket, prefix = spec.blobs[len("s3://") :].split("/", 1)
    return boto3.client("s3", endpoint_url=S3_ENDPOINT), bucket, prefix


def overwrite_blob(spec: RegistrySpec, sha: str, data: bytes) -> None:
    """Damage a stored blob behind the server's back (same size: only a re-hash tells)."""
    if spec.backend == SQLITE:
        path = Path(spec.data_dir) / "blobs" / sha[:2] / sha
        os.chmod(path, 0o600)
        path.write_bytes(data)
        return
    s3, bucket, prefix = _s3(spec)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/blobs/{sha[:2]}/{sha}", Body=data)  # type: ignore[attr-defined]


def remove_blob(spec: RegistrySpec, sha: str) -> None:
    if spec.backend == SQLITE:
        (Path(spec.data_dir) / "blobs" / sha[:2] / sha).unlink()
        return
    s3, bucket, prefix = _s3(spec)
    s3.delete_object(Bucket=bucket, Key=f"{prefix}/blobs/{sha[:2]}/{sha}")  # type: ignore[attr-defined]


def quarantined(spec: RegistrySpec, sha: str) -> bool:
    if spec.backend == SQLITE:
        aside = Path(spec.data_dir) / "blobs" / ".quarantine"
        return aside.is_dir() and any(p.name.startswith(sha) for p in aside.iterdir())
    s3, bucket, prefix = _s3(spec)
    resp = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/quarantine/{sha}")  # type: ignore[attr-defined]
    return bool(resp.get("KeyCount"))


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def info(server: Server, ref: str) -> dict[str, object]:
    out = run_cli("info", ref, env={"ARTFS_REGISTRY": server.url}).stdout
    return dict(json.loads(out))


def put(server: Server, src: Path, target: str) -> str:
    """``artfs put``; its output (the ref, and "N files, SIZE, uploaded BYTES" on stderr)."""
    done = run_cli("put", str(src), target, env={"ARTFS_REGISTRY": server.url})
    return done.stdout + done.stderr


def test_why_1_damaged_blob_is_reported_quarantined_and_healed_by_put(
    spec: RegistrySpec, server: Server, tmp_path: Path
) -> None:
    """Regression, "Why" 1: a blob damaged on the server can be repaired, and no new version
    reuses it."""
    src = tmp_path / "src"
    src.mkdir()
    good = os.urandom(3 * MiB + 1234)
    (src / "weights.bin").write_bytes(good)
    (src / "README").write_text("intact\n")
    put(server, src, "p/model")
    sha = sha_of(good)
    overwrite_blob(spec, sha, good[: 2 * MiB] + b"\0" * 4096 + good[2 * MiB + 4096 :])

    with mounted(server.url, tmp_path / "mnt", tmp_path / "cache") as mnt:
        path = mnt / "p" / "model" / "v0" / "weights.bin"
        with pytest.raises(OSError) as failed, open(path, "rb") as f:
            f.read()  # the damaged block: EIO, never wrong bytes
        assert failed.value.errno == errno.EIO
        assert (mnt / "p" / "model" / "v0" / "README").read_text() == "intact\n"

        # The mount reported it; the server re-checked and quarantined the blob.
        wait_for("the server to quarantine the blob", lambda: quarantined(spec, sha))
        wait_for("v0 to be listed as damaged", lambda: info(server, "p/model:v0")["damaged"] == 1)
        assert server.stats()["integrity_found"] == 1
        listing = run_cli("ls", "p/model", env={"ARTFS_REGISTRY": server.url}).stdout
        assert "DAMAGED: 1 blob (artfs fsck)" in listing

        # The fix for "Why" 1: put uploads the bytes (not 0 B) and commits no new version
        # on a bad blob; v0 is whole again.
        out = put(server, src, "p/model")
        assert "uploaded 3.0 MiB" in out, out
        assert info(server, "p/model:latest")["ref"] == "p/model:v0"
        assert info(server, "p/model:v0")["damaged"] == 0
        # A reader sees the right bytes now (the cache kept only verified blocks).
        with open(path, "rb") as f:
            assert f.read() == good
    got = tmp_path / "got"
    run_cli("get", "p/model:v0", str(got), env={"ARTFS_REGISTRY": server.url})
    assert (got / "weights.bin").read_bytes() == good


def test_fsck_finds_damaged_and_missing_blobs_put_heals_them(
    spec: RegistrySpec, server: Server, tmp_path: Path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    a, b = os.urandom(700_000), os.urandom(300_000)
    (one / "a.bin").write_bytes(a)
    (two / "b.bin").write_bytes(b)
    put(server, one, "p/one")
    put(server, two, "p/two")
    overwrite_blob(spec, sha_of(a), os.urandom(len(a)))
    remove_blob(spec, sha_of(b))

    dry = run_cli("fsck", *store_args(spec), "--dry-run", check=False)
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert "would quarantine" in dry.stdout and not quarantined(spec, sha_of(a))

    out = run_cli("fsck", *store_args(spec), check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(
        ln.startswith(f"damaged\t{sha_of(a)}\tquarantined") and "used by p/one:v0" in ln
        for ln in lines
    ), out.stdout
    assert f"missing\t{sha_of(b)}\tused by p/two:v0" in lines, out.stdout
    assert "1 damaged, 1 missing" in lines[-1] and "artfs put" in lines[-1]
    assert quarantined(spec, sha_of(a))
    assert info(server, "p/one:v0")["damaged"] == 1
    assert info(server, "p/two:v0")["damaged"] == 1

    # Never wrong bytes: the damaged blob is not served, the lost one neither.
    with pytest.raises(AssertionError, match=r"missing on the registry|damaged"):
        run_cli("get", "p/one:v0", str(tmp_path / "g1"), env={"ARTFS_REGISTRY": server.url})

    # The collector is not confused by quarantined or missing blobs.
    gc = run_cli("gc", *store_args(spec), "--grace", "0")
    assert gc.stdout.startswith("freed 0 blobs"), gc.stdout

    assert "uploaded 683.6 KiB" in put(server, one, "p/one")
    assert "uploaded 293.0 KiB" in put(server, two, "p/two")
    assert info(server, "p/one:v0")["damaged"] == 0 and info(server, "p/two:v0")["damaged"] == 0
    clean = run_cli("fsck", *store_args(spec))
    assert "0 damaged, 0 missing" in clean.stdout
    got = tmp_path / "got"
    run_cli("get", "p/one:v0", str(got), env={"ARTFS_REGISTRY": server.url})
    assert (got / "a.bin").read_bytes() == a


def test_damage_reports_are_rate_limited(
    spec: RegistrySpec, server: Server, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(os.urandom(500_000))
    put(server, src, "p/a")
    sha = sha_of((src / "f.bin").read_bytes())
    with httpx.Client(base_url=server.url, timeout=10) as http:
        answers = [
            http.post(f"/v1/blobs/{sha}/damage", json={"detail": "x"}).json()["check"]
            for _ in range(30)
        ]
        assert answers[0] == "started" and set(answers[1:]) <= {"running", "recent"}
        flood = [
            http.post(f"/v1/blobs/{os.urandom(32).hex()}/damage").json()["check"] for _ in range(40)
        ]
        assert flood.count("limited") >= 30  # a burst of 5, then 0.2/s
        bad = http.post(f"/v1/blobs/{sha}/damage", json={"detail": 5})
        assert bad.status_code == 400
    wait_for("the checks to finish", lambda: server.stats()["integrity_checks"] >= 1)
    time.sleep(0.5)
    checks = server.stats()["integrity_checks"]
    assert 1 <= checks <= 1 + 5 + 2, checks
    assert server.stats()["integrity_found"] == 0
    assert info(server, "p/a:v0")["damaged"] == 0  # an intact blob reported is left alone

    async def report() -> str:  # what the mount and `artfs get` send, answered 202
        client = HttpRegistryClient(server.url)
        try:
            return await client.report_damage(sha, "bad block")
        finally:
            await client.aclose()

    assert trio.run(report) in {"started", "running", "recent"}


def test_scrub_finds_damage_nobody_read(spec: RegistrySpec, tmp_path: Path) -> None:
    first = start(spec)
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(2 * MiB)
    (src / "cold.bin").write_bytes(data)
    try:
        put(first, src, "p/cold")
    finally:
        first.stop()
    overwrite_blob(spec, sha_of(data), os.urandom(len(data)))
    scrubbing = start(spec, "--scrub-rate", "4M")
    try:
        wait_for("the scrub to find it", lambda: scrubbing.stats()["integrity_found"] == 1)
        assert quarantined(spec, sha_of(data))
        assert info(scrubbing, "p/cold:v0")["damaged"] == 1
        assert scrubbing.stats()["scrub_bytes"] >= len(data)
        assert "uploaded 2.0 MiB" in put(scrubbing, src, "p/cold")
        assert info(scrubbing, "p/cold:v0")["damaged"] == 0
    finally:
        scrubbing.stop()
