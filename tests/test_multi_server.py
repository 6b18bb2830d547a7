"""Beyond one machine: several ``artfs serve`` processes on one registry, and the S3 data path
(presigned reads and uploads, verification before a blob exists).

The two-server tests run on both configurations (SQLite processes share the data
directory; PostgreSQL ones the database and the bucket); the presigned ones need S3.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio

from artfs.client.http import HttpRegistryClient
from artfs.errors import IntegrityError, PreconditionFailed
from artfs.manifest import Manifest

from .backends import (
    HAVE_SERVICES,
    POSTGRES,
    S3_ENDPOINT,
    SKIP_REASON,
    RegistrySpec,
    backend_params,
    make_spec,
    release,
    s3_keys,
)
from .conftest_server import RunningServer, start_spec_server, stop_server

needs_s3 = pytest.mark.skipif(not HAVE_SERVICES, reason=SKIP_REASON)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Collect:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


@pytest.fixture(scope="module", params=backend_params())
def two_servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RegistrySpec, RunningServer, RunningServer]]:
    spec = make_spec(request.param, tmp_path_factory.mktemp("two") / "data", for_servers=True)
    servers: list[RunningServer] = []
    try:
        servers.append(start_spec_server(spec))
        servers.append(start_spec_server(spec))
        yield spec, servers[0], servers[1]
    finally:
        for s in servers:
            stop_server(s.proc)
        release(spec)


@pytest.fixture
async def clients(
    two_servers: tuple[RegistrySpec, RunningServer, RunningServer],
) -> AsyncIterator[list[HttpRegistryClient]]:
    _, a, b = two_servers
    cs = [HttpRegistryClient(a.url, timeout=30), HttpRegistryClient(b.url, timeout=30)]
    try:
        yield cs
    finally:
        for c in cs:
            await c.aclose()


async def test_commits_through_two_servers_get_consecutive_numbers(
    clients: list[HttpRegistryClient], tmp_path: Path
) -> None:
    a, b = clients
    assert await a.registry_id() == await b.registry_id()
    await a.create_project("multi", exist_ok=True)
    await b.create_artifact("multi", "c", type="dataset", exist_ok=True)
    blob = tmp_path / "blob"
    blob.write_bytes(b"shared\n")
    digest = sha(b"shared\n")
    await a.upload_blob(digest, blob)
    assert await b.missing_blobs([digest]) == set()  # uploaded through a, visible through b
    results: list[tuple[str, int, int]] = []

    async def worker(w: int) -> None:
        client = clients[w % 2]
        for i in range(8):
            m = Manifest.build([(f"w{w}/c{i}.txt", 7, digest)])
            res = await client.commit("multi", "c", m, creator=f"w{w}")
            assert res.created
            results.append((f"w{w}/c{i}.txt", w % 2, res.version.number))

    async with trio.open_nursery() as nursery:
        for w in range(6):
            nursery.start_soon(worker, w)
    numbers = sorted(n for _, _, n in results)
    assert numbers == list(range(48)), numbers
    assert {server for _, server, _ in results} == {0, 1}
    art = await b.get_artifact("multi", "c")
    assert [v.number for v in art.versions] == list(range(48))
    assert art.aliases["latest"] == 47
    for path, _, number in results:  # each number holds exactly the commit that got it
        assert list(await a.get_manifest("multi", "c", number)) == [path]


async def test_conditional_alias_moves_hold_across_servers(
    clients: list[HttpRegistryClient], tmp_path: Path
) -> None:
    a, b = clients
    await a.create_project("multi", exist_ok=True)
    await a.create_artifact("multi", "alias", type="model", exist_ok=True)
    blob = tmp_path / "blob"
    for i in range(2):
        blob.write_bytes(bytes([i]))
        await a.upload_blob(sha(bytes([i])), blob)
        await a.commit("multi", "alias", Manifest.build([("f", 1, sha(bytes([i])))]))
    for round_ in range(3):
        start, target = (0, 1) if round_ % 2 == 0 else (1, 0)
        await a.set_alias("multi", "alias", "best", start)
        wins: list[int] = []

        async def flip(
            w: int, start: int = start, target: int = target, wins: list[int] = wins
        ) -> None:
            try:
                await clients[w % 2].set_alias("multi", "alias", "best", target, expect=start)
                wins.append(w)
            except PreconditionFailed:
                pass

        async with trio.open_nursery() as nursery:
            for w in range(10):
                nursery.start_soon(flip, w)
        assert len(wins) == 1, wins  # compare-and-set: exactly one mover, whichever server
        assert (await b.get_artifact("multi", "alias")).aliases["best"] == target


# --- the S3 data path ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    if not HAVE_SERVICES:
        pytest.skip(SKIP_REASON)
    spec = make_spec(POSTGRES, tmp_path_factory.mktemp("s3") / "data", for_servers=True)
    try:
        server = start_spec_server(spec)
        try:
            yield server
        finally:
            stop_server(server.proc)
    finally:
        release(spec)


@pytest.fixture
async def s3_client(s3_server: RunningServer) -> AsyncIterator[HttpRegistryClient]:
    client = HttpRegistryClient(s3_server.url, timeout=30)
    try:
        yield client
    finally:
        await client.aclose()


def _stats(server: RunningServer) -> dict[str, int]:
    return {k: int(v) for k, v in httpx.get(server.url + "/v1/stats").json().items()}


@needs_s3
def test_s3_server_has_no_data_port(s3_server: RunningServer) -> None:
    assert s3_server.blob_port is None
    assert any("blobs presigned" in line for line in s3_server.log)
    info = httpx.get(s3_server.url + "/v1").json()
    assert info["blob_url"] is None and info["upload"]["presigned_min"] > 0


@needs_s3
async def test_large_upload_goes_straight_to_the_store(
    s3_server: RunningServer, s3_client: HttpRegistryClient, tmp_path: Path
) -> None:
    data = os.urandom(40 << 20)  # three parts of 16 MiB, uploaded in parallel
    digest = sha(data)
    path = tmp_path / "big"
    path.write_bytes(data)
    before = _stats(s3_server)
    await s3_client.upload_blob(digest, path)
    after = _stats(s3_server)
    assert after["blob_bytes_received"] == before["blob_bytes_received"]  # not through us
    assert await s3_client.missing_blobs([digest]) == set()
    for offset, length in [(0, 1000), ((16 << 20) - 10, 20), (len(data) - 5, 5)]:
        sink = Collect()
        await s3_client.read_range(digest, len(data), offset, length, sink)
        assert sink.data == data[offset : offset + length]
    blocks = await s3_client.blob_blocks(digest, len(data))
    assert blocks[7] == hashlib.sha256(data[7 << 17 : 8 << 17]).digest()
    assert s3_keys(s3_server.spec, "uploads/") == []  # type: ignore[arg-type]
    await s3_client.upload_blob(digest, path)  # again: accepted, stored once


@needs_s3
def test_presigned_upload_is_verified_before_it_exists(s3_server: RunningServer) -> None:
    base = s3_server.url + "/v1"
    data = os.urandom(300_000)
    digest = sha(data)
    plan = httpx.post(base + "/blobs/uploads", json={"sha256": digest, "size": len(data)})
    assert plan.status_code == 201, plan.text
    body = plan.json()
    assert body["multipart_id"] is None and len(body["parts"]) == 1
    # The client puts other bytes (same length) where the plan says (the last byte flipped:
    # a fixed replacement equals the random last byte once in 256 runs).
    put = httpx.put(body["parts"][0]["url"], content=data[:-1] + bytes([data[-1] ^ 1]))
    assert put.status_code == 200
    done = httpx.post(
        base + "/blobs/uploads/complete",
        json={"sha256": digest, "size": len(data), "key": body["key"], "multipart_id": None},
    )
    assert done.status_code == 422 and done.json()["error"]["code"] == "integrity"
    missing = httpx.post(base + "/blobs/missing", json={"digests": [digest]}).json()
    assert missing["missing"] == [digest]
    assert s3_keys(s3_server.spec, "uploads/") == []  # type: ignore[arg-type]
    # Completion can't name an object other than an upload of this blob.
    bad = httpx.post(
        base + "/blobs/uploads/complete",
        json={"sha256": digest, "size": len(data), "key": f"../blobs/{digest[:2]}/{digest}"},
    )
    assert bad.status_code == 400
    # The right bytes complete.
    body = httpx.post(base + "/blobs/uploads", json={"sha256": digest, "size": len(data)}).json()
    assert httpx.put(body["parts"][0]["url"], content=data).status_code == 200
    done = httpx.post(
        base + "/blobs/uploads/complete",
        json={"sha256": digest, "size": len(data), "key": body["key"], "multipart_id": None},
    )
    assert done.status_code == 201 and done.json()["created"] is True


@needs_s3
async def test_corrupt_presigned_multipart_upload_refused(
    s3_client: HttpRegistryClient, tmp_path: Path
) -> None:
    data = os.urandom(20 << 20)
    path = tmp_path / "corrupt"
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(IntegrityError):
        await s3_client.upload_blob(sha(data), path)
    assert await s3_client.missing_blobs([sha(data)]) == {sha(data)}


@needs_s3
async def test_expired_presigned_url_is_refreshed(
    s3_client: HttpRegistryClient, tmp_path: Path
) -> None:
    import boto3

    data = os.urandom(200_000)
    digest = sha(data)
    path = tmp_path / "blob"
    path.write_bytes(data)
    await s3_client.upload_blob(digest, path)
    fresh = await s3_client.locate(digest)
    # The same object, signed for one second, and the client told it is good for an hour.
    bucket = fresh.split("?", 1)[0].split("/")[3]
    key = "/".join(fresh.split("?", 1)[0].split("/")[4:])
    s3 = boto3.client("s3", endpoint_url=S3_ENDPOINT)
    short = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=1
    )
    await trio.sleep(2.5)
    assert httpx.get(short).status_code == 403
    s3_client._locations[digest] = (short, time.time() + 3600)
    sink = Collect()
    await s3_client.read_range(digest, len(data), 100, 150_000, sink)
    assert sink.data == data[100:150_100]
    assert s3_client._locations[digest][0] != short


@needs_s3
async def test_concurrent_reads_share_locate_requests(
    s3_server: RunningServer, s3_client: HttpRegistryClient, tmp_path: Path
) -> None:
    blobs = [os.urandom(1000 + i) for i in range(60)]
    for i, b in enumerate(blobs):
        path = tmp_path / f"b{i}"
        path.write_bytes(b)
        await s3_client.upload_blob(sha(b), path)
    reader = HttpRegistryClient(s3_server.url, timeout=30)
    try:
        await reader.registry_id()
        before = _stats(s3_server)["requests"]
        got: dict[int, bytes] = {}

        async def read(i: int) -> None:
            sink = Collect()
            await reader.read_range(sha(blobs[i]), len(blobs[i]), 0, len(blobs[i]), sink)
            got[i] = sink.data

        async with trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(read, i)
        locates = _stats(s3_server)["requests"] - before
    finally:
        await reader.aclose()
    assert all(got[i] == blobs[i] for i in range(60))
    assert 1 <= locates <= 4, locates  # batched, not one request per blob
