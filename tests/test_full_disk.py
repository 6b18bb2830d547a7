"""A full disk under the registry (issue 10, "Why" 4): the commands that read still start,
gc frees space, writes answer 507 with one line, and the registry is whole once space
returns. A real tmpfs of 64 MiB holds the data directory (root only)."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from artfs.errors import StorageFull
from artfs.registry.postgres import disk_full

from .conftest_server import start_server, stop_server
from .e2e import run_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Fill the filesystem to the last byte with one file; returns it (delete to free)."""
    path = disk / "filler"
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    assert os.statvfs(disk).f_bavail == 0
    return path


def commit(base: str, project: str, files: dict[str, bytes]) -> httpx.Response:
    entries = [[path, len(blob), sha(blob)] for path, blob in files.items()]
    return httpx.post(
        f"{base}/projects/{project}/artifacts/a/versions",
        json={"manifest": {"files": entries}},
        timeout=30,
    )


def one_line_507(r: httpx.Response) -> str:
    assert r.status_code == 507, (r.status_code, r.text)
    body: dict[str, Any] = r.json()
    message: str = body["error"]["message"]
    assert body["error"]["code"] == "storage_full" and "\n" not in message, body
    return message


def test_full_disk_reads_work_gc_frees_writes_507_then_recover(small_disk: Path) -> None:
    data = small_disk / "data"
    server = start_server(data)
    base = f"{server.url}/v1"
    keep, garbage = b"kept bytes" * 1000, os.urandom(6 << 20)
    try:
        httpx.post(f"{base}/projects", json={"name": "p"}).raise_for_status()
        art = f"{base}/projects/p/artifacts"
        httpx.post(art, json={"name": "a", "type": "dataset"}).raise_for_status()
        for blob in (keep, garbage):
            httpx.put(f"{base}/blobs/{sha(blob)}", content=blob, timeout=30).raise_for_status()
        commit(base, "p", {"keep": keep}).raise_for_status()
        commit(base, "p", {"garbage": garbage}).raise_for_status()
        httpx.delete(f"{art}/a/versions/1").raise_for_status()
        assert (data / "registry.db.reserve").exists()

        filler = fill(small_disk)
        # Metadata and blob writes on the running server: 507, one line each.
        new = b"new version bytes"
        msg = one_line_507(httpx.put(f"{base}/blobs/{sha(new)}", content=new, timeout=30))
        assert "full" in msg
        assert server.blob_port is not None
        one_line_507(httpx.put(f"{server.blob_url}/blobs/{sha(new)}", content=new, timeout=30))
        one_line_507(commit(base, "p", {"again": keep}))  # a blob it has: the write is metadata
        one_line_507(httpx.put(f"{art}/a/aliases/best", json={"version": 0}))
        # Reads still answer.
        assert httpx.get(f"{art}/a/versions/0").status_code == 200
        assert httpx.get(f"{server.blob_url}/blobs/{sha(keep)}").content == keep
        # Space back: the same server takes the refused commit, which took no number.
        filler.unlink()
        r = commit(base, "p", {"again": keep})
        assert r.status_code == 201 and r.json()["version"]["number"] == 2, r.text
        filler = fill(small_disk)
    finally:
        stop_server(server.proc)

    # With no process holding the database, opening it must write its -shm index: the
    # reserve makes room. Every command that reads works.
    server = start_server(data)
    try:
        r = httpx.get(f"{server.url}/v1/projects/p/artifacts/a/versions/0/manifest")
        assert r.status_code == 200
    finally:
        stop_server(server.proc)
    tokens = run_cli("token", "list", "--data", str(data))
    assert tokens.stdout == "" and "Traceback" not in tokens.stderr
    dry = run_cli("gc", "--data", str(data), "--grace", "0", "--dry-run")
    assert sha(garbage) in dry.stdout and "would free 1 blob" in dry.stdout
    before = os.statvfs(small_disk).f_bavail
    gc = run_cli("gc", "--data", str(data), "--grace", "0")
    assert "freed 1 blob" in gc.stdout, gc.stdout + gc.stderr
    assert os.statvfs(small_disk).f_bavail > before  # gc freed space on the full disk
    assert not any(p.name == sha(garbage) for p in (data / "blobs").rglob("*"))

    # Space returns: the refused writes succeed now, and nothing half-done was left behind.
    filler.unlink()
    server = start_server(data)
    base = f"{server.url}/v1"
    try:
        httpx.put(f"{base}/blobs/{sha(new)}", content=new, timeout=30).raise_for_status()
        r = commit(base, "p", {"again": keep, "new": new})
        assert r.status_code == 201, r.text
        assert r.json()["version"]["number"] == 3
        listed = httpx.get(f"{base}/projects/p/artifacts/a").json()
        numbers = [v["number"] for v in listed["versions"]]
        assert sorted(numbers) == [0, 2, 3], listed
        manifest = httpx.get(f"{base}/projects/p/artifacts/a/versions/3/manifest").json()
        assert sorted(e[0] for e in manifest["files"]) == ["again", "new"]
        assert httpx.get(f"{server.blob_url}/blobs/{sha(new)}").content == new
    finally:
        stop_server(server.proc)
    assert (data / "registry.db.reserve").exists()  # the reserve came back with the space


def test_postgres_disk_full_is_507() -> None:
    """A full PostgreSQL disk ("could not extend file", SQLSTATE 53100) is StorageFull, 507:
    the mapping the PostgreSQL store applies to every transaction."""
    err = psycopg.errors.DiskFull(
        'could not extend file "base/16384/16397": No space left on device'
    )
    mapped = disk_full("postgresql://u:***@db/artfs", err)
    assert isinstance(mapped, StorageFull) and mapped.http_status == 507
    assert "could not extend file" in str(mapped) and "\n" not in str(mapped)


def test_postgres_store_maps_disk_full_in_transactions() -> None:
    """Through the store's own transaction wrapper, with a raising statement."""
    from artfs.registry.postgres import PostgresMetaStore

    store = PostgresMetaStore.__new__(PostgresMetaStore)
    store._where = "postgresql://test"

    class Pool:
        def connection(self) -> Any:
            from contextlib import contextmanager

            @contextmanager
            def conn() -> Iterator[object]:
                yield object()

            return conn()

    store._pool = Pool()  # type: ignore[assignment]
    with pytest.raises(StorageFull) as caught, store._write():
        raise psycopg.errors.DiskFull("could not extend file: No space left on device")
    assert "could not extend file" in str(caught.value)


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
@pytest.mark.timeout(300)
def test_full_cache_dir_fails_reads_cleanly_then_recovers(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mount's cache directory full: an uncached read fails with ENOSPC or EIO (or is
    served whole); a cached one and the draft already written are untouched; nothing read
    is ever wrong; once space returns every read and the draft's commit work."""
    from .e2e import Server, mounted

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    server = Server(tmp_path / "registry")
    server.start()
    try:
        src = tmp_path / "src"
        src.mkdir()
        big, small = os.urandom(12 << 20), b"small and cached\n"
        (src / "big.bin").write_bytes(big)
        (src / "small.txt").write_bytes(small)
        run_cli("put", "--registry", server.url, str(src), "p/a")
        cache, state = small_disk / "cache", small_disk / "state"
        with mounted(server.url, tmp_path / "m", cache, "--state-dir", str(state)) as m:
            v0 = m / "p" / "a" / "v0"
            assert (v0 / "small.txt").read_bytes() == small
            os.mkdir(m / "p" / "a" / "wip")
            (m / "p" / "a" / "wip" / "kept.txt").write_bytes(b"written before\n")
            filler = fill(small_disk)
            try:
                got = (v0 / "big.bin").read_bytes()
            except OSError as e:
                assert e.errno in (errno.ENOSPC, errno.EIO), e
            else:
                assert got == big  # served without caching: fine, never wrong bytes
            assert (v0 / "small.txt").read_bytes() == small
            with pytest.raises(OSError) as exc:
                (m / "p" / "a" / "wip" / "more.bin").write_bytes(os.urandom(1 << 20))
            assert exc.value.errno == errno.ENOSPC
            assert (m / "p" / "a" / "wip" / "kept.txt").read_bytes() == b"written before\n"
            filler.unlink()
            assert (v0 / "big.bin").read_bytes() == big
            (m / "p" / "a" / "wip" / "more.bin").write_bytes(b"after\n")
            out = run_cli("commit", str(m / "p" / "a" / "wip"))
            assert out.stdout.strip() == "p/a:v1"
            v1 = m / "p" / "a" / "v1"
            assert (v1 / "kept.txt").read_bytes() == b"written before\n"
            assert (v1 / "more.bin").read_bytes() == b"after\n"
    finally:
        server.stop()


def test_s3_store_full_is_507() -> None:
    """An S3 store out of space (MinIO's XMinioStorageFull, a plain 507) is StorageFull."""
    import botocore.exceptions

    from artfs.registry.s3 import S3BlobStore

    store = S3BlobStore.__new__(S3BlobStore)
    store.where = "s3://bucket/prefix"
    full = botocore.exceptions.ClientError(
        {
            "Error": {
                "Code": "XMinioStorageFull",
                "Message": "Storage backend has reached its limit",
            },
            "ResponseMetadata": {"HTTPStatusCode": 507},
        },
        "PutObject",
    )
    mapped = store._unavailable("storing blob ab", full)
    assert isinstance(mapped, StorageFull) and mapped.http_status == 507
    other = botocore.exceptions.ClientError(
        {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject"
    )
    assert not isinstance(store._unavailable("storing blob ab", other), StorageFull)
