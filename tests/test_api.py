"""The registry API against a real server process, through both real clients.

Tests taking ``client`` run over HTTP (``HttpRegistryClient`` against
``python -m artfs.server``) and in-process (``LocalRegistryClient``); the server runs
once per registry configuration (SQLite + blob directory, PostgreSQL + S3: see
tests/backends.py). The rest speak HTTP directly to check routes, status codes, the
blob data server (SQLite configuration) and presigned URLs (S3 configuration).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from artfs.client.base import RegistryClient
from artfs.client.http import HttpRegistryClient
from artfs.errors import (
    AlreadyExists,
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    NotPermitted,
    PreconditionFailed,
    ProtocolError,
    Unavailable,
)
from artfs.hashing import BLOCK_SIZE, BlobHasher
from artfs.manifest import Manifest
from artfs.manifest_stream import MEDIA_TYPE, CanonicalParser

from .backends import SQLITE
from .conftest_server import RunningServer


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def upload(client: RegistryClient, tmp_path: Path, data: bytes) -> str:
    digest = sha(data)
    path = tmp_path / f"blob-{digest[:12]}"
    path.write_bytes(data)
    if await client.missing_blobs([digest]):
        await client.upload_blob(digest, path)
    return digest


async def publish(
    client: RegistryClient, tmp_path: Path, project: str, files: dict[str, bytes], **kw: Any
) -> Any:
    await client.create_project(project, exist_ok=True)
    await client.create_artifact(project, "data", type="dataset", exist_ok=True)
    entries = [
        (path, len(data), await upload(client, tmp_path, data)) for path, data in files.items()
    ]
    return await client.commit(project, "data", Manifest.build(entries), **kw)


class Collect:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


# --- both clients ------------------------------------------------------------------------
async def test_project_and_artifact_lifecycle(client: RegistryClient, unique_project: str) -> None:
    p = unique_project
    assert len(await client.registry_id()) == 36
    created = await client.create_project(p)
    assert created.name == p
    with pytest.raises(AlreadyExists):
        await client.create_project(p)
    assert (await client.create_project(p, exist_ok=True)).name == p
    assert p in [x.name for x in await client.list_projects()]
    art = await client.create_artifact(p, "model", type="model", description="weights")
    assert (art.name, art.type, art.description, art.versions) == ("model", "model", "weights", ())
    with pytest.raises(AlreadyExists):
        await client.create_artifact(p, "model", type="model")
    with pytest.raises(Conflict):
        await client.create_artifact(p, "model", type="dataset", exist_ok=True)
    assert [a.name for a in await client.list_artifacts(p)] == ["model"]
    assert (await client.get_artifact(p, "model")).description == "weights"
    with pytest.raises(NotFound):
        await client.get_artifact(p, "nope")
    with pytest.raises(NotFound):
        await client.list_artifacts("no-such-project")
    with pytest.raises(NotFound):
        await client.create_artifact("no-such-project", "x", type="dataset")
    for bad in ["../etc", "", "a/b", "-x"]:
        with pytest.raises(InvalidInput):
            await client.create_project(bad)


async def test_commit_versions_and_manifests(
    client: RegistryClient, unique_project: str, tmp_path: Path
) -> None:
    p = unique_project
    files = {"train/a.bin": os.urandom(3 * BLOCK_SIZE + 5), "train/b.txt": b"hello", "README": b""}
    res = await publish(
        client,
        tmp_path,
        p,
        files,
        aliases=["best"],
        metadata={"acc": 0.9},
        description="first",
        creator="tester",
    )
    assert res.created and res.version.number == 0
    v = res.version
    assert (v.project, v.artifact, v.metadata, v.description, v.creator) == (
        p,
        "data",
        {"acc": 0.9},
        "first",
        "tester",
    )
    assert set(v.aliases) == {"best", "latest"} and v.file_count == 3
    assert v.total_size == sum(len(d) for d in files.values()) and v.artifact_type == "dataset"

    again = await publish(client, tmp_path, p, files, aliases=["prod"])
    assert not again.created and again.version.number == 0
    assert set(again.version.aliases) == {"best", "latest", "prod"}

    second = await publish(client, tmp_path, p, {**files, "extra": b"x"}, parent=0)
    assert second.created and second.version.number == 1 and second.version.parent == 0

    assert (await client.get_version(p, "data", "v0")).number == 0
    assert (await client.get_version(p, "data", "best")).number == 0
    assert (await client.get_version(p, "data", "latest")).number == 1
    with pytest.raises(NotFound):
        await client.get_version(p, "data", "v9")
    with pytest.raises(NotFound):
        await client.get_version(p, "data", "nosuchalias")

    m = await client.get_manifest(p, "data", 0)
    assert m.digest == v.digest and set(m) == set(files)
    assert m["train/b.txt"].sha256 == sha(b"hello")
    with pytest.raises(NotFound):
        await client.get_manifest(p, "data", 7)

    art = await client.get_artifact(p, "data")
    assert [x.number for x in art.versions] == [0, 1]
    assert art.aliases == {"best": 0, "latest": 1, "prod": 0}


async def test_commit_refuses_missing_blob(client: RegistryClient, unique_project: str) -> None:
    await client.create_project(unique_project)
    await client.create_artifact(unique_project, "data", type="dataset")
    ghost = sha(b"never uploaded " + unique_project.encode())
    with pytest.raises(InvalidInput, match=ghost):
        await client.commit(unique_project, "data", Manifest.build([("f", 1, ghost)]))
    assert (await client.get_artifact(unique_project, "data")).versions == ()


async def test_aliases(client: RegistryClient, unique_project: str, tmp_path: Path) -> None:
    p = unique_project
    await publish(client, tmp_path, p, {"f": b"0"})
    await publish(client, tmp_path, p, {"f": b"1"})
    await client.set_alias(p, "data", "best", 0, expect=None)
    with pytest.raises(PreconditionFailed):
        await client.set_alias(p, "data", "best", 1, expect=None)
    with pytest.raises(PreconditionFailed):
        await client.set_alias(p, "data", "best", 1, expect=1)
    await client.set_alias(p, "data", "best", 1, expect=0)
    assert (await client.get_version(p, "data", "best")).number == 1
    await client.set_alias(p, "data", "weird name ü%?#", 0)
    assert (await client.get_version(p, "data", "weird name ü%?#")).number == 0
    with pytest.raises(NotPermitted):
        await client.set_alias(p, "data", "latest", 0)
    with pytest.raises(NotPermitted):
        await client.delete_alias(p, "data", "latest")
    for bad in ["v1", "a/b", "x:y", "..", ""]:
        with pytest.raises(InvalidInput):
            await client.set_alias(p, "data", bad, 0)
    with pytest.raises(NotFound):
        await client.set_alias(p, "data", "best", 42)
    with pytest.raises(PreconditionFailed):
        await client.delete_alias(p, "data", "best", expect=0)
    await client.delete_alias(p, "data", "best", expect=1)
    with pytest.raises(NotFound):
        await client.delete_alias(p, "data", "best")
    assert (await client.get_artifact(p, "data")).aliases == {"latest": 1, "weird name ü%?#": 0}


async def test_delete_version(client: RegistryClient, unique_project: str, tmp_path: Path) -> None:
    p = unique_project
    for i in range(3):
        await publish(client, tmp_path, p, {"f": bytes([i])})
    await client.set_alias(p, "data", "best", 2)
    with pytest.raises(Conflict):
        await client.delete_version(p, "data", 2)  # type: ignore[attr-defined]
    await client.delete_version(p, "data", 2, force=True)  # type: ignore[attr-defined]
    art = await client.get_artifact(p, "data")
    assert [v.number for v in art.versions] == [0, 1] and art.aliases == {"latest": 1}
    res = await publish(client, tmp_path, p, {"f": b"new"})
    assert res.version.number == 3  # never reused


async def test_blobs_missing_upload_blocks_and_ranges(
    client: RegistryClient, tmp_path: Path
) -> None:
    data = os.urandom(5 * BLOCK_SIZE + 1234)
    digest = sha(data)
    other = sha(os.urandom(16))
    assert await client.missing_blobs([digest, other]) == {digest, other}
    path = tmp_path / "blob"
    path.write_bytes(data)
    await client.upload_blob(digest, path)
    await client.upload_blob(digest, path)  # idempotent
    assert await client.missing_blobs([digest, other]) == {other}
    assert await client.missing_blobs([]) == set()

    blocks = await client.blob_blocks(digest, len(data))
    assert len(blocks) == 6
    assert blocks[2] == hashlib.sha256(data[2 * BLOCK_SIZE : 3 * BLOCK_SIZE]).digest()
    with pytest.raises((InvalidInput, ProtocolError)):  # the digest list doesn't fit that size
        await client.blob_blocks(digest, len(data) * 2)

    for offset, length in [
        (0, len(data)),
        (0, 1),
        (len(data) - 1, 1),
        (BLOCK_SIZE - 3, 10),
        (12345, 3 * BLOCK_SIZE),
        (17, 0),
    ]:
        sink = Collect()
        await client.read_range(digest, len(data), offset, length, sink)
        assert sink.data == data[offset : offset + length], (offset, length)
    with pytest.raises(InvalidInput):
        await client.read_range(digest, len(data), len(data) - 1, 2, Collect())
    with pytest.raises(NotFound):
        await client.read_range(other, 16, 0, 16, Collect())


async def test_corrupt_upload_refused(client: RegistryClient, tmp_path: Path) -> None:
    data = os.urandom(2 * BLOCK_SIZE)
    claimed = sha(data)
    path = tmp_path / "corrupt"
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(IntegrityError):
        await client.upload_blob(claimed, path)
    assert await client.missing_blobs([claimed]) == {claimed}
    with pytest.raises(InvalidInput):
        await client.upload_blob(claimed, tmp_path / "does-not-exist")
    with pytest.raises(InvalidInput):
        await client.upload_blob("not-a-sha", path)


async def test_big_manifest_round_trip(
    client: RegistryClient, unique_project: str, tmp_path: Path
) -> None:
    await client.create_project(unique_project)
    await client.create_artifact(unique_project, "data", type="dataset")
    digest = await upload(client, tmp_path, b"tiny\n")
    m = Manifest.build((f"d{i // 1000:02d}/f{i:05d}.txt", 5, digest) for i in range(20_000))
    res = await client.commit(unique_project, "data", m)  # sent gzip-compressed over HTTP
    back = await client.get_manifest(unique_project, "data", res.version.number)
    assert back.digest == m.digest and len(back) == 20_000


# --- HTTP only ----------------------------------------------------------------------------
async def test_missing_blobs_is_one_request(
    http_client: HttpRegistryClient, registry_server: RunningServer
) -> None:
    digests = [sha(f"never-stored-{i}".encode()) for i in range(5000)]
    before = httpx.get(registry_server.url + "/v1/stats").json()["requests"]
    assert await http_client.missing_blobs(digests) == set(digests)
    after = httpx.get(registry_server.url + "/v1/stats").json()["requests"]
    assert after - before == 1


@pytest.mark.parametrize(
    "files",
    [
        [["../escape", 1, "SHA"]],
        [["/etc/passwd", 1, "SHA"]],
        [["a/../../b", 1, "SHA"]],
        [["a/./b", 1, "SHA"]],
        [["a//b", 1, "SHA"]],
        [["nul\u0000", 1, "SHA"]],
        [["x" * 256, 1, "SHA"]],
        [["dup", 1, "SHA"], ["dup", 1, "SHA"]],
        [["a", 1, "SHA"], ["a/b", 1, "SHA"]],
        [["a", -1, "SHA"]],
        [["a", 1, "../../etc"]],
        [["a", 1]],
        "not a list",
        [None],
    ],
)
def test_hostile_manifests_refused_over_http(registry_server: RunningServer, files: Any) -> None:
    base = registry_server.url + "/v1"
    blob = b"x"
    digest = sha(blob)
    httpx.post(base + "/projects", json={"name": "hostile", "exist_ok": True}).raise_for_status()
    httpx.post(
        base + "/projects/hostile/artifacts",
        json={"name": "a", "type": "dataset", "exist_ok": True},
    ).raise_for_status()
    httpx.put(f"{base}/blobs/{digest}", content=blob).raise_for_status()
    if isinstance(files, list):
        files = [
            [digest if v == "SHA" else v for v in e] if isinstance(e, list) else e for e in files
        ]
    r = httpx.post(
        base + "/projects/hostile/artifacts/a/versions", json={"manifest": {"files": files}}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid"
    art = httpx.get(base + "/projects/hostile/artifacts/a").json()
    assert art["versions"] == []


def test_error_bodies_and_routes(registry_server: RunningServer) -> None:
    base = registry_server.url + "/v1"
    info = httpx.get(base).json()
    assert info["block_size"] == BLOCK_SIZE and len(info["registry_id"]) == 36

    def err(r: httpx.Response) -> tuple[int, str]:
        body = r.json()
        assert set(body) == {"error"} and isinstance(body["error"]["message"], str)
        return r.status_code, body["error"]["code"]

    assert err(httpx.get(base + "/nothing")) == (404, "not_found")
    assert err(httpx.patch(base + "/projects")) == (405, "invalid")
    assert err(httpx.post(base + "/projects", content=b"{not json")) == (400, "invalid")
    assert err(httpx.post(base + "/projects", json=["list"])) == (400, "invalid")
    assert err(httpx.post(base + "/projects", json={"name": "../x"})) == (400, "invalid")
    assert err(httpx.get(base + "/projects/nope")) == (404, "not_found")
    assert err(httpx.get(base + "/projects/nope/artifacts/x")) == (404, "not_found")
    assert err(httpx.get(base + "/projects/bad..name!/artifacts")) == (400, "invalid")
    assert err(httpx.get(base + "/blobs/abc/blocks")) == (400, "invalid")
    assert err(httpx.put(base + "/blobs/xyz", content=b"1")) == (400, "invalid")
    assert err(httpx.post(base + "/blobs/missing", json={"digests": "x"})) == (400, "invalid")
    assert err(httpx.post(base + "/blobs/missing", json={"digests": ["zz"]})) == (400, "invalid")
    httpx.post(base + "/projects", json={"name": "errs", "exist_ok": True}).raise_for_status()
    r = httpx.post(base + "/projects", json={"name": "errs"})
    assert err(r) == (409, "exists")
    httpx.post(base + "/projects/errs/artifacts", json={"name": "a", "type": "t", "exist_ok": True})
    assert err(
        httpx.put(base + "/projects/errs/artifacts/a/aliases/latest", json={"version": 0})
    ) == (403, "not_permitted")
    assert err(httpx.get(base + "/projects/errs/artifacts/a/versions/latest")) == (404, "not_found")
    assert err(httpx.post(base + "/projects/errs/artifacts/a/versions", json={})) == (
        400,
        "invalid",
    )
    gz = gzip.compress(json.dumps({"manifest": {"files": [["a", 1, "0" * 64]]}}).encode())
    r = httpx.post(
        base + "/projects/errs/artifacts/a/versions",
        content=gz,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert (
        err(r) == (400, "invalid") and "0" * 64 in r.json()["error"]["message"]
    )  # gzip body parsed
    r = httpx.post(
        base + "/projects/errs/artifacts/a/versions",
        content=b"\x1f\x8bnot gzip",
        headers={"Content-Encoding": "gzip"},
    )
    assert err(r) == (400, "invalid")


def test_corrupt_upload_over_raw_http(registry_server: RunningServer) -> None:
    base = registry_server.url + "/v1"
    data = os.urandom(300_000)
    digest = sha(data)
    r = httpx.put(f"{base}/blobs/{digest}", content=data[:-1])
    assert r.status_code == 422 and r.json()["error"]["code"] == "integrity"
    assert httpx.post(base + "/blobs/missing", json={"digests": [digest]}).json()["missing"] == [
        digest
    ]

    async def chunked() -> Any:  # no Content-Length: streamed, still verified
        yield data[:100_000]
        yield data[100_000:]

    async def put_chunked() -> httpx.Response:
        async with httpx.AsyncClient() as c:
            return await c.put(f"{base}/blobs/{digest}", content=chunked())

    r = trio.run(put_chunked)
    assert r.status_code == 201 and r.json() == {
        "sha256": digest,
        "size": len(data),
        "created": True,
    }
    r = httpx.put(f"{base}/blobs/{digest}", content=data)
    assert r.status_code == 200 and r.json()["created"] is False


def test_manifest_served_gzip_or_plain(registry_server: RunningServer) -> None:
    base = registry_server.url + "/v1"
    blob = b"m"
    digest = sha(blob)
    httpx.post(base + "/projects", json={"name": "gz", "exist_ok": True})
    httpx.post(base + "/projects/gz/artifacts", json={"name": "a", "type": "t", "exist_ok": True})
    httpx.put(f"{base}/blobs/{digest}", content=blob)
    r = httpx.post(
        base + "/projects/gz/artifacts/a/versions", json={"manifest": {"files": [["m", 1, digest]]}}
    )
    number = r.json()["version"]["number"]
    url = f"{base}/projects/gz/artifacts/a/versions/v{number}/manifest"
    with httpx.Client() as c:
        zipped = c.get(url, headers={"Accept-Encoding": "gzip"})
        plain = c.get(url, headers={"Accept-Encoding": "identity"})
    assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert zipped.json() == plain.json() == {"files": [["m", 1, digest]]}
    assert plain.headers["x-artfs-digest"] == r.json()["version"]["digest"]
    assert (
        httpx.get(f"{base}/projects/gz/artifacts/a/versions/{number}/manifest").status_code == 200
    )


async def test_manifest_in_canonical_form(registry_server: RunningServer) -> None:
    """``?format=canonical``: the bytes the digest is over, parsed as they stream; a server
    that predates it answers JSON, which the client converts."""
    base = registry_server.url + "/v1"
    blob = b"c"
    digest = sha(blob)
    files = [["a\nb", 1, digest], ["données/x y", 1, digest], ["z", 0, sha(b"")]]
    async with httpx.AsyncClient() as c:
        await c.post(base + "/projects", json={"name": "cf", "exist_ok": True})
        await c.post(base + "/projects/cf/artifacts", json={"name": "a", "type": "t"})
        await c.put(f"{base}/blobs/{digest}", content=blob)
        await c.put(f"{base}/blobs/{sha(b'')}", content=b"")
        r = await c.post(
            base + "/projects/cf/artifacts/a/versions", json={"manifest": {"files": files}}
        )
        version = r.json()["version"]
        url = f"{base}/projects/cf/artifacts/a/versions/{version['number']}/manifest"
        answers = [
            await c.get(url, params={"format": "canonical"}, headers={"Accept-Encoding": enc})
            for enc in ("gzip", "identity")
        ]
        bad = await c.get(url, params={"format": "xml"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"
    zipped, plain = answers
    assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert plain.headers["content-type"] == MEDIA_TYPE
    assert zipped.content == plain.content
    assert hashlib.sha256(plain.content).hexdigest() == version["digest"]
    parser = CanonicalParser()
    assert parser.feed(plain.content) == [tuple(f) for f in sorted(files)]
    assert parser.finish() == version["digest"]

    got = bytearray()
    async with HttpRegistryClient(registry_server.url) as client:
        await client.fetch_manifest("cf", "a", version["number"], got.extend)
        assert bytes(got) == plain.content
        # an older server: no format parameter, JSON only
        old = httpx.MockTransport(
            lambda req: httpx.Response(
                200, json={"files": files}, headers={"X-Artfs-Digest": version["digest"]}
            )
        )
        await client._http.aclose()
        client._http = httpx.AsyncClient(transport=old)
        got.clear()
        await client.fetch_manifest("cf", "a", version["number"], got.extend)
        assert bytes(got) == plain.content


def test_blob_locate_and_redirect(registry_server: RunningServer) -> None:
    base = registry_server.url + "/v1"
    data = b"locate me"
    digest = sha(data)
    httpx.put(f"{base}/blobs/{digest}", content=data).raise_for_status()
    ghost = sha(b"ghost")
    loc = httpx.post(base + "/blobs/locate", json={"digests": [digest, ghost]}).json()
    assert loc["missing"] == [ghost]
    entry = loc["blobs"][digest]
    assert entry["size"] == len(data)
    if registry_server.blob_port is not None:
        assert entry["expires"] is None
        assert entry["url"] == f"{registry_server.blob_url}/blobs/{digest}"
    else:  # a presigned store URL, valid for a short while
        assert time.time() + 60 < entry["expires"] < time.time() + 3600
        assert "X-Amz-Signature=" in entry["url"]
        ranged = httpx.get(entry["url"], headers={"Range": "bytes=2-5"})
        assert ranged.status_code == 206 and ranged.content == data[2:6]
    r = httpx.get(f"{base}/blobs/{digest}")
    # the same place; a presigned URL made a second later carries another date and signature
    assert r.status_code == 307
    assert r.headers["location"].split("?")[0] == entry["url"].split("?")[0]
    assert httpx.get(f"{base}/blobs/{digest}", follow_redirects=True).content == data
    assert httpx.get(f"{base}/blobs/{ghost}").status_code == 404


# --- the blob data server -------------------------------------------------------------------
@pytest.fixture(scope="module")
def stored_blob(local_registry_server: RunningServer) -> tuple[str, bytes]:
    data = os.urandom(1_000_003)
    digest = sha(data)
    httpx.put(f"{local_registry_server.url}/v1/blobs/{digest}", content=data).raise_for_status()
    return digest, data


@pytest.mark.parametrize(
    ("header", "status", "expect"),
    [
        (None, 200, slice(None)),
        ("bytes=0-0", 206, slice(0, 1)),
        ("bytes=10-19", 206, slice(10, 20)),
        ("bytes=999990-", 206, slice(999990, None)),
        ("bytes=-7", 206, slice(-7, None)),
        ("bytes=-2000000", 206, slice(None)),  # suffix longer than the blob: all of it
        ("bytes=999999-5000000", 206, slice(999999, None)),  # end clipped
        ("bytes=1000003-", 416, None),
        ("bytes=2000000-2000010", 416, None),
        ("bytes=-0", 416, None),
        ("bytes=5-1", 200, slice(None)),  # invalid: ignored
        ("bytes=0-1,5-6", 200, slice(None)),  # several ranges: ignored, whole blob
        ("items=0-1", 200, slice(None)),
    ],
)
def test_data_server_ranges(
    local_registry_server: RunningServer,
    stored_blob: tuple[str, bytes],
    header: str | None,
    status: int,
    expect: slice | None,
) -> None:
    digest, data = stored_blob
    headers = {"Range": header} if header else {}
    r = httpx.get(f"{local_registry_server.blob_url}/blobs/{digest}", headers=headers)
    assert r.status_code == status
    assert r.headers["accept-ranges"] == "bytes"
    if status == 416:
        assert r.headers["content-range"] == f"bytes */{len(data)}"
        return
    assert expect is not None
    want = data[expect]
    assert r.content == want and int(r.headers["content-length"]) == len(want)
    assert r.headers["etag"] == f'"{digest}"'
    if status == 206:
        start = expect.indices(len(data))[0]
        assert r.headers["content-range"] == f"bytes {start}-{start + len(want) - 1}/{len(data)}"


def test_data_server_head_keepalive_and_errors(
    local_registry_server: RunningServer, stored_blob: tuple[str, bytes]
) -> None:
    digest, data = stored_blob
    url = f"{local_registry_server.blob_url}/blobs/{digest}"
    with httpx.Client() as c:
        h = c.head(url)
        assert (
            h.status_code == 200
            and h.headers["content-length"] == str(len(data))
            and h.content == b""
        )
        h = c.head(url, headers={"Range": "bytes=-10"})
        assert h.status_code == 206 and h.headers["content-length"] == "10"
        # Many requests over one kept-alive connection.
        for i in range(20):
            r = c.get(url, headers={"Range": f"bytes={i * 1000}-{i * 1000 + 99}"})
            assert r.content == data[i * 1000 : i * 1000 + 100]
        assert c.get(f"{local_registry_server.blob_url}/blobs/{sha(b'none')}").status_code == 404
        assert c.get(f"{local_registry_server.blob_url}/other").status_code == 404
        assert c.get(f"{local_registry_server.blob_url}/blobs/../../etc/passwd").status_code == 404
        assert c.post(url, content=b"x").status_code == 405
        assert c.get(url + "?token=whatever", headers={"Range": "bytes=0-3"}).content == data[:4]
    # Garbage gets a 400 and a closed connection; a client vanishing mid-body harms nothing.
    with socket.create_connection(("127.0.0.1", local_registry_server.blob_port), timeout=5) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    with socket.create_connection(("127.0.0.1", local_registry_server.blob_port), timeout=5) as s:
        s.sendall(f"GET /blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.recv(1000)
    assert httpx.get(url, headers={"Range": "bytes=0-9"}).content == data[:10]


def _put_raw(
    sock: socket.socket, digest: str, body: bytes, *extra: str, length: int | None = None
) -> None:
    length = len(body) if length is None else length
    head = f"PUT /blobs/{digest} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
    sock.sendall((head + "".join(f"{h}\r\n" for h in extra) + "\r\n").encode() + body)


def _read_response(f: Any) -> tuple[int, dict[str, Any]]:
    """One response from a socket's file: (status, JSON body); skips a 100 Continue."""
    while True:
        status = int(f.readline().split()[1])
        headers = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        if status != 100:
            return status, json.loads(f.read(int(headers["content-length"])))


def test_data_server_takes_uploads(local_registry_server: RunningServer) -> None:
    """PUT /blobs/<sha> on the data port: verified like PUT /v1/blobs, advertised in GET /v1."""
    api, blobs = local_registry_server.url, local_registry_server.blob_url
    info = httpx.get(f"{api}/v1").json()
    assert info["upload"] == {"put_url": f"{blobs}/blobs/{{sha256}}"}
    received = httpx.get(f"{api}/v1/stats").json()["blob_bytes_received"]
    data = [os.urandom(3 * BLOCK_SIZE + 5), os.urandom(7), b""]
    digests = [sha(d) for d in data]
    with socket.create_connection(("127.0.0.1", local_registry_server.blob_port), timeout=10) as s:
        f = s.makefile("rb")
        # curl's Expect: 100-continue is answered; then two more on the same connection,
        # sent back to back (pipelined)
        _put_raw(s, digests[0], b"", "Expect: 100-continue", length=len(data[0]))
        assert f.readline().startswith(b"HTTP/1.1 100")
        assert f.readline() == b"\r\n"
        s.sendall(data[0])
        assert _read_response(f) == (
            201,
            {"sha256": digests[0], "size": len(data[0]), "created": True},
        )
        _put_raw(s, digests[1], data[1])
        _put_raw(s, digests[2], data[2])
        assert _read_response(f)[0] == 201
        assert _read_response(f)[0] == 201
        _put_raw(s, digests[1], data[1])
        assert _read_response(f) == (200, {"sha256": digests[1], "size": 7, "created": False})
    for digest, blob in zip(digests, data, strict=True):
        assert httpx.get(f"{blobs}/blobs/{digest}").content == blob
    raw = httpx.get(f"{api}/v1/blobs/{digests[0]}/blocks").content
    h = BlobHasher()
    h.update(data[0])
    assert raw == h.block_digests()
    after = httpx.get(f"{api}/v1/stats").json()["blob_bytes_received"]
    assert after - received == sum(map(len, data)) + len(data[1])
    # wrong bytes: integrity, nothing stored; no Content-Length: 411; a bad digest: 404
    bad = os.urandom(1000)
    r = httpx.put(f"{blobs}/blobs/{sha(b'something else')}", content=bad)
    assert r.status_code == 422 and r.json()["error"]["code"] == "integrity"
    missing = httpx.post(f"{api}/v1/blobs/missing", json={"digests": [sha(b"something else")]})
    assert missing.json()["missing"] == [sha(b"something else")]

    def chunked() -> Any:
        yield b"abc"

    assert httpx.put(f"{blobs}/blobs/{sha(b'abc')}", content=chunked()).status_code == 411
    assert httpx.put(f"{blobs}/blobs/xyz", content=b"1").status_code == 404
    # a client vanishing mid-body leaves nothing behind and the server serving
    with socket.create_connection(("127.0.0.1", local_registry_server.blob_port), timeout=5) as s:
        s.sendall(
            f"PUT /blobs/{sha(bad)} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
        )
        s.sendall(bad[:500])
    time.sleep(0.2)
    assert httpx.put(f"{blobs}/blobs/{sha(bad)}", content=bad).status_code == 201


async def test_client_uploads_through_the_data_server(
    local_registry_server: RunningServer, tmp_path: Path
) -> None:
    data = os.urandom(5 << 20)
    src = tmp_path / "blob"
    src.write_bytes(data)
    async with HttpRegistryClient(local_registry_server.url) as client:
        before = httpx.get(f"{local_registry_server.url}/v1/stats").json()
        await client.upload_blob(sha(data), src)
        with pytest.raises(IntegrityError):
            await client.upload_blob(sha(b"not this"), src)
        after = httpx.get(f"{local_registry_server.url}/v1/stats").json()
        assert await client.missing_blobs([sha(data), sha(b"not this")]) == {sha(b"not this")}
    assert after["blob_requests"] - before["blob_requests"] == 2  # both went to the data port
    assert after["blob_bytes_received"] - before["blob_bytes_received"] == 2 * len(data)


# --- the client's failure modes ------------------------------------------------------------
async def test_unreachable_registry_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = HttpRegistryClient(f"http://127.0.0.1:{port}", timeout=2)
    try:
        with trio.fail_after(5):
            with pytest.raises(Unavailable, match=f"127.0.0.1:{port}"):
                await client.list_projects()
    finally:
        await client.aclose()


async def _serve_once(handler: Any, nursery: trio.Nursery) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def test_stalled_registry_times_out(nursery: trio.Nursery) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    port = await _serve_once(silent, nursery)
    client = HttpRegistryClient(f"http://127.0.0.1:{port}", timeout=0.5)
    try:
        with trio.fail_after(5):
            with pytest.raises(Unavailable):
                await client.get_artifact("p", "a")
    finally:
        await client.aclose()


async def test_proxy_error_page_is_unavailable(nursery: trio.Nursery) -> None:
    async def bad_gateway(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        body = b"<html>502 Bad Gateway</html>"
        await stream.send_all(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        await stream.aclose()

    port = await _serve_once(bad_gateway, nursery)
    client = HttpRegistryClient(f"http://127.0.0.1:{port}", timeout=2)
    try:
        with pytest.raises(Unavailable, match="502"):
            await client.list_projects()
    finally:
        await client.aclose()


async def test_stalled_download_times_out(
    nursery: trio.Nursery, http_client: HttpRegistryClient, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    digest = await upload(http_client, tmp_path, data)

    async def half_then_stall(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(
            b"HTTP/1.1 206 Partial Content\r\nContent-Length: 100000\r\n"
            b"Content-Range: bytes 0-99999/100000\r\n\r\n" + data[:1000]
        )
        await trio.sleep_forever()

    port = await _serve_once(half_then_stall, nursery)
    stalling = HttpRegistryClient(http_client.base_url, timeout=0.5)
    stalling._locations[digest] = (f"http://127.0.0.1:{port}/blobs/{digest}", None)
    sink = Collect()
    try:
        with trio.fail_after(5):
            with pytest.raises(Unavailable):
                await stalling.read_range(digest, len(data), 0, len(data), sink)
    finally:
        await stalling.aclose()
    assert sink.data == data[:1000]


@pytest.fixture
async def local_http_client(
    local_registry_server: RunningServer,
) -> AsyncIterator[HttpRegistryClient]:
    client = HttpRegistryClient(local_registry_server.url, timeout=10.0)
    try:
        yield client
    finally:
        await client.aclose()


async def test_stale_location_is_refreshed(
    local_http_client: HttpRegistryClient, local_registry_server: RunningServer, tmp_path: Path
) -> None:
    http_client = local_http_client
    data = os.urandom(50_000)
    digest = await upload(http_client, tmp_path, data)
    # A location that now answers 404 (an expired presigned URL looks the same).
    http_client._locations[digest] = (
        f"{local_registry_server.blob_url}/blobs/{sha(b'moved')}",
        None,
    )
    sink = Collect()
    await http_client.read_range(digest, len(data), 100, 1000, sink)
    assert sink.data == data[100:1100]
    assert http_client._locations[digest][0].endswith(digest)


async def test_read_cut_mid_body_resumes_where_it_was(
    nursery: trio.Nursery, http_client: HttpRegistryClient, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    digest = await upload(http_client, tmp_path, data)
    asked: list[str] = []

    async def half_then_close(stream: trio.SocketStream) -> None:
        head = await stream.receive_some(65536)
        asked.append(head.decode("latin-1"))
        await stream.send_all(
            b"HTTP/1.1 206 Partial Content\r\nContent-Length: 200000\r\n"
            b"Content-Range: bytes 1000-200999/300000\r\n\r\n" + data[1000:51000]
        )
        await stream.aclose()

    port = await _serve_once(half_then_close, nursery)
    url = f"http://127.0.0.1:{port}/blobs/{digest}?X-Amz-Expires=900"
    # As if this presigned location were still valid: the cut makes the client locate again.
    http_client._locations[digest] = (url, time.time() + 900)
    sink = Collect()
    with trio.fail_after(20):
        await http_client.read_range(digest, len(data), 1000, 200_000, sink)
    assert sink.data == data[1000:201000]  # every byte once, in order
    assert len(asked) == 1 and "bytes=1000-200999" in asked[0]
    assert http_client._locations[digest][0] != url  # the fresh location served the rest


async def test_server_error_body_becomes_the_same_exception(
    http_client: HttpRegistryClient,
) -> None:
    with pytest.raises(NotFound, match="project"):
        await http_client.get_artifact("surely-missing", "a")


async def test_many_parallel_reads(http_client: HttpRegistryClient, tmp_path: Path) -> None:
    data = os.urandom(4 * BLOCK_SIZE)
    digest = await upload(http_client, tmp_path, data)
    results: dict[int, bytes] = {}

    async def read(i: int) -> None:
        sink = Collect()
        await http_client.read_range(digest, len(data), i * 1000, 70_000, sink)
        results[i] = sink.data

    async with trio.open_nursery() as n:
        for i in range(40):
            n.start_soon(read, i)
    assert all(results[i] == data[i * 1000 : i * 1000 + 70_000] for i in range(40))


def test_block_digests_match_hashing(registry_server: RunningServer) -> None:
    data = os.urandom(1_000_003)
    digest = sha(data)
    httpx.put(f"{registry_server.url}/v1/blobs/{digest}", content=data).raise_for_status()
    raw = httpx.get(f"{registry_server.url}/v1/blobs/{digest}/blocks").content
    h = BlobHasher()
    h.update(data)
    assert raw == h.block_digests()


async def test_reads_need_no_request_per_blob(
    local_http_client: HttpRegistryClient, local_registry_server: RunningServer, tmp_path: Path
) -> None:
    http_client, registry_server = local_http_client, local_registry_server
    blobs = [os.urandom(1000 + i) for i in range(30)]
    digests = [await upload(http_client, tmp_path, b) for b in blobs]
    await http_client.registry_id()  # GET /v1 once: it carries the blob URL template
    before = httpx.get(registry_server.url + "/v1/stats").json()
    for digest, data in zip(digests, blobs, strict=True):
        sink = Collect()
        await http_client.read_range(digest, len(data), 0, len(data), sink)
        assert sink.data == data
    after = httpx.get(registry_server.url + "/v1/stats").json()
    assert after["requests"] == before["requests"]  # no locate per blob
    assert after["blob_requests"] - before["blob_requests"] == 30


async def test_locate_many(http_client: HttpRegistryClient, tmp_path: Path) -> None:
    digests = [await upload(http_client, tmp_path, os.urandom(100)) for _ in range(5)]
    await http_client.locate_many(digests)
    for d in digests:
        assert d in (await http_client.locate(d)).split("?", 1)[0]
    with pytest.raises(NotFound):
        await http_client.locate_many([*digests, sha(b"absent blob")])
    with pytest.raises(NotFound):
        await http_client.locate(sha(b"absent blob"), refresh=True)


async def test_prepare_read_locates_ahead_once_and_never_fails(
    http_client: HttpRegistryClient, registry_server: RunningServer, tmp_path: Path
) -> None:
    """A cold open asks where the blob is before its first read (issue 9, first byte): one
    locate request for a presigned store, none for the data server's URL template; the
    read's own locate then makes no request; an absent blob or a dead registry raise
    nothing (the read meets them and reports)."""
    digest = await upload(http_client, tmp_path, os.urandom(3 * BLOCK_SIZE))
    await http_client.registry_id()  # GET /v1: the URL template, where there is one
    presigned = registry_server.backend != SQLITE

    def requests() -> int:
        return int(httpx.get(registry_server.url + "/v1/stats").json()["requests"])

    before = requests()
    await http_client.prepare_read(digest)
    after_prepare = requests()
    assert after_prepare - before == (1 if presigned else 0)  # (stats count none)
    assert digest in (await http_client.locate(digest)).split("?", 1)[0]
    assert requests() == after_prepare
    await http_client.prepare_read(sha(b"absent blob"))  # raises nothing
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    async with HttpRegistryClient(f"http://127.0.0.1:{dead}", timeout=2) as down:
        await down.prepare_read(digest)  # raises nothing


async def test_httpx_path_for_other_urls(http_client: HttpRegistryClient, tmp_path: Path) -> None:
    # https (presigned store) URLs go through httpx; exercise that path on the data server.
    data = os.urandom(3 * BLOCK_SIZE)
    digest = await upload(http_client, tmp_path, data)
    url = await http_client.locate(digest)
    sink = Collect()
    await http_client._fetch_httpx(url, 1000, 2 * BLOCK_SIZE, len(data), sink)
    assert sink.data == data[1000 : 1000 + 2 * BLOCK_SIZE]


def test_abandoned_upload_leaves_nothing(local_registry_server: RunningServer) -> None:
    registry_server = local_registry_server
    data = os.urandom(1_000_000)
    digest = sha(data)
    before = httpx.get(registry_server.url + "/v1/stats").json()["blob_bytes_received"]
    port = int(registry_server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"PUT /v1/blobs/{digest} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data[:300_000]
        )
    tmp = registry_server.data / "blobs" / ".tmp"
    for _ in range(100):
        if not any(tmp.iterdir()):
            break
        time.sleep(0.05)
    assert not any(tmp.iterdir())
    r = httpx.post(registry_server.url + "/v1/blobs/missing", json={"digests": [digest]})
    assert r.json()["missing"] == [digest]
    after = httpx.get(registry_server.url + "/v1/stats").json()["blob_bytes_received"]
    assert 0 < after - before <= 300_000
