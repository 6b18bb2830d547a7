"""Access control end to end: ``artfs token`` on the registry's store, ``artfs serve --auth on``
checking bearer tokens on the JSON API and on the blob data server, the HTTP client sending
``ARTFS_TOKEN`` (to the registry's own origins only), and a real FUSE mount answering EACCES
when its token is refused. Plus unit tests of the pure parts (grants, the token cache)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from artfs.auth import (
    EVERYONE,
    Principal,
    TokenInfo,
    bearer_secret,
    client_secret,
    hash_secret,
    make_grants,
    new_secret,
)
from artfs.client.http import HttpRegistryClient
from artfs.config import runtime_dir
from artfs.errors import AlreadyExists, Forbidden, InvalidInput, NotFound, Unauthorized
from artfs.fs.daemon import canonical
from artfs.manifest import Manifest
from artfs.mountinfo import read_record
from artfs.mounting import mount_key
from artfs.registry.sqlite import SCHEMA_VERSION, SqliteMetaStore
from artfs.registry.tokens import Tokens
from artfs.server import AuthOptions, auth_warning, is_loopback
from artfs.server.auth import Authenticator

from .backends import SQLITE, RegistrySpec, backend_params, make_spec, release
from .conftest_server import RunningServer, start_server, start_spec_server, stop_server
from .e2e import is_mounted, run_cli

TTL = 0.5  # --auth-ttl of the test servers: a revoke is seen within this


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- pure parts


def test_grants_write_implies_read_and_star_covers_every_project() -> None:
    grants = make_grants(read=["vision", "*"], write=["nlp", "vision"])
    assert grants == {"vision": "write", "*": "read", "nlp": "write"}
    who = Principal("ci", grants)
    assert who.can("read", "vision") and who.can("write", "vision")
    assert who.can("read", "anything-else") and not who.can("write", "anything-else")
    assert who.can_any("write") and who.can_any("read")
    reader = Principal("ci-reader", make_grants(read=["vision"]))
    assert not reader.can_any("write")
    assert reader.readable(["nlp", "vision"]) == ["vision"]
    with pytest.raises(Forbidden, match="token 'ci-reader' has no write right on project 'vision'"):
        reader.require("write", "vision")
    with pytest.raises(Forbidden, match="no read right on project 'nlp'"):
        reader.require("read", "nlp")
    with pytest.raises(Forbidden, match="no write right on any project"):
        reader.require_any("write", "uploading blobs")
    EVERYONE.require("write", "x")
    EVERYONE.require_any("write", "uploading blobs")
    with pytest.raises(InvalidInput, match="at least one right"):
        make_grants()
    with pytest.raises(InvalidInput, match="invalid project name"):
        make_grants(read=["../x"])


def test_secrets_headers_and_hashes() -> None:
    secret = new_secret()
    assert secret.startswith("artfs_") and len(secret) > 40
    assert new_secret() != secret
    assert hash_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert bearer_secret(f"Bearer {secret}") == secret
    assert bearer_secret(f"bearer   {secret} ") == secret
    for header in (None, "", "  "):
        with pytest.raises(Unauthorized, match="no token"):
            bearer_secret(header)
    for header in ("Basic dXNlcjpwdw==", "Bearer", secret):
        with pytest.raises(Unauthorized, match="malformed"):
            bearer_secret(header)
    with pytest.raises(Unauthorized, match="unknown token"):
        bearer_secret("Bearer " + "x" * 600)
    assert client_secret(None) is None and client_secret("  ") is None
    assert client_secret(f" {secret}\n") == secret
    with pytest.raises(InvalidInput, match="ARTFS_TOKEN is not a valid token"):
        client_secret("two words")


def test_loopback_default_and_warning() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert is_loopback(host) and not AuthOptions().enabled(host)
    for host in ("0.0.0.0", "::", "10.0.0.5", "registry.internal"):
        assert not is_loopback(host) and AuthOptions().enabled(host)
    assert AuthOptions("on").enabled("127.0.0.1")
    assert not AuthOptions("off").enabled("0.0.0.0")
    warning = auth_warning("0.0.0.0", AuthOptions("off"))
    assert warning is not None and "WARNING" in warning
    assert auth_warning("0.0.0.0", AuthOptions()) is None
    assert auth_warning("127.0.0.1", AuthOptions("off")) is None


async def test_token_cache_ttl_coalescing_and_revoke() -> None:
    now = [0.0]
    secret = new_secret()
    stored = {hash_secret(secret): TokenInfo("ci", 1.0, None, {"vision": "read"})}
    calls: list[str] = []

    def lookup(key: str) -> TokenInfo | None:
        calls.append(key)
        time.sleep(0.05)  # a database query: concurrent requests must share it
        return stored.get(key)

    auth = Authenticator(lookup, ttl=5.0, clock=lambda: now[0])
    header = f"Bearer {secret}"
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(auth.principal, header)
    assert len(calls) == 1
    who = await auth.principal(header)
    assert who.name == "ci" and who.can("read", "vision") and len(calls) == 1
    # Revoked in the database: still trusted until the TTL passes, refused after.
    stored[hash_secret(secret)] = TokenInfo("ci", 1.0, 2.0, {"vision": "read"})
    now[0] = 4.0
    await auth.principal(header)
    now[0] = 5.5
    with pytest.raises(Unauthorized, match="token 'ci' has been revoked"):
        await auth.principal(header)
    assert len(calls) == 2
    # Unknown tokens are remembered too (no query per request with a bad token).
    for _ in range(3):
        with pytest.raises(Unauthorized, match="unknown token"):
            await auth.principal("Bearer nope")
    assert len(calls) == 3
    # Auth off: no header needed, nothing looked up.
    off = Authenticator(lookup, enabled=False)
    assert (await off.principal(None)).unrestricted


async def test_expired_token_is_refused_even_while_cached() -> None:
    secret = new_secret()
    info = TokenInfo("nightly", 1.0, None, {"vision": "read"}, expires=1_000.0)
    calls: list[str] = []

    def lookup(key: str) -> TokenInfo | None:
        calls.append(key)
        return info if key == hash_secret(secret) else None

    wall = [999.0]
    auth = Authenticator(lookup, ttl=60.0, wall=lambda: wall[0])
    assert (await auth.principal(f"Bearer {secret}")).can("read", "vision")
    wall[0] = 1_000.0  # the expiry is a date: no need to wait for the cache's TTL
    with pytest.raises(Unauthorized, match=r"token 'nightly' expired at 1970-01-01 00:16:40 UTC"):
        await auth.principal(f"Bearer {secret}")
    assert len(calls) == 1
    assert TokenInfo.from_json(info.to_json()) == info
    legacy = {k: v for k, v in info.to_json().items() if k != "expires"}
    assert TokenInfo.from_json(legacy).expires is None  # records from before expiry existed


def test_client_sends_token_only_to_the_registry(tmp_path: Path) -> None:
    client = HttpRegistryClient("http://127.0.0.1:8765", token="artfs_secret")
    assert client._headers_for("http://127.0.0.1:8765/v1/projects") == {
        "Authorization": "Bearer artfs_secret"
    }
    for url in (
        "http://127.0.0.1:9000/bucket/blobs/ab/x?X-Amz-Signature=1",  # a presigned store URL
        "https://127.0.0.1:8765/v1",  # another scheme
        "http://evil.example:8765/v1",
    ):
        assert client._headers_for(url) == {}
    with pytest.raises(InvalidInput):
        HttpRegistryClient("http://127.0.0.1:8765", token="bad\ntoken")


# --------------------------------------------------------------------------- the store


@pytest.fixture(params=backend_params())
def tokens(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Tokens, RegistrySpec]]:
    spec = make_spec(request.param, tmp_path / "reg")
    registry = spec.open()
    try:
        yield registry.tokens, spec
    finally:
        registry.close()


def test_token_store(tokens: tuple[Tokens, RegistrySpec]) -> None:
    store, spec = tokens
    info, secret = store.create("ci", {"vision": "write", "*": "read"})
    assert info.active and info.grants == {"vision": "write", "*": "read"}
    found = store.find(hash_secret(secret))
    assert found is not None and found.name == "ci" and dict(found.grants) == dict(info.grants)
    assert store.find(hash_secret("artfs_other")) is None
    with pytest.raises(AlreadyExists, match="revoke it first"):
        store.create("ci", {"x": "read"})
    revoked = store.revoke("ci")
    assert revoked.revoked is not None
    found = store.find(hash_secret(secret))
    assert found is not None and found.revoked is not None
    with pytest.raises(NotFound, match="no active token named ci"):
        store.revoke("ci")
    _, second = store.create("ci", {"x": "read"})  # a name is free again once revoked
    assert second != secret
    listed = store.list()
    assert [(t.name, t.active) for t in listed] == [("ci", False), ("ci", True)]
    assert all(t.expires is None for t in listed)
    timed, timed_secret = store.create("timed", {"x": "read"}, lifetime=3600)
    assert timed.expires == pytest.approx(timed.created + 3600)
    found = store.find(hash_secret(timed_secret))
    assert found is not None and found.expires == pytest.approx(timed.expires)
    assert [t.expires for t in store.list() if t.name == "timed"] == [found.expires]
    assert store.revoke("timed").expires == pytest.approx(timed.expires)
    for bad in (0, -5, 1e12):
        with pytest.raises(InvalidInput, match="lifetime"):
            store.create("never-made", {"x": "read"}, lifetime=bad)
    assert "never-made" not in [t.name for t in store.list()]
    with pytest.raises(InvalidInput):
        store.create("bad name", {"x": "read"})
    with pytest.raises(InvalidInput):
        store.create("ok", {"x": "owner"})
    admin = store.create("boss", {"x": "admin"})[0]  # admin: write + protected aliases
    assert admin.grants == {"x": "admin"}
    if spec.backend == SQLITE:  # only the hash is stored, never the secret
        raw = (Path(spec.data_dir) / "registry.db").read_bytes()
        wal = Path(spec.data_dir) / "registry.db-wal"
        raw += wal.read_bytes() if wal.exists() else b""
        assert secret.encode() not in raw and second.encode() not in raw


def test_schema_1_registry_is_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    SqliteMetaStore(db).close()
    with sqlite3.connect(db) as conn:  # what a registry made before tokens looks like
        conn.execute("DROP TABLE token_grants")
        conn.execute("DROP TABLE tokens")
        conn.execute("PRAGMA user_version=1")
    meta = SqliteMetaStore(db)
    try:
        info, secret = Tokens(meta).create("ci", {"p": "read"})
        assert Tokens(meta).find(hash_secret(secret)) == info
    finally:
        meta.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# --------------------------------------------------------------------------- servers


@dataclass
class AuthRegistry:
    spec: RegistrySpec
    servers: list[RunningServer]
    writer: str  # write on vision and nlp
    reader: str  # read on vision
    nlp_reader: str  # read on nlp
    files: dict[str, bytes]

    @property
    def url(self) -> str:
        return self.servers[0].url

    def store_args(self) -> list[str]:
        args = ["--data", self.spec.data_dir]
        if self.spec.db is not None:
            args += ["--db", self.spec.db]
        return args

    def token(self, name: str, *grants: str) -> str:
        out = run_cli("token", "create", name, *grants, *self.store_args())
        return out.stdout.strip()


def _seed_files() -> dict[str, bytes]:
    return {
        "small.txt": b"hello, tokens\n",
        "dir/medium.bin": os.urandom(300_000),
        "big.bin": os.urandom(3 * 1024 * 1024 + 7),
    }


@pytest.fixture(scope="module", params=backend_params())
def authreg(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthRegistry]:
    """Two ``--auth on`` servers on one registry, three tokens, vision/data:v0 and nlp/data:v0."""
    root = tmp_path_factory.mktemp("auth")
    spec = make_spec(request.param, root / "data", for_servers=True)
    servers: list[RunningServer] = []
    try:
        for _ in range(2):
            servers.append(start_spec_server(spec, "--auth", "on", "--auth-ttl", str(TTL)))
        assert "tokens required" in "".join(servers[0].log)
        reg = AuthRegistry(spec, servers, "", "", "", _seed_files())
        reg.writer = reg.token("writer", "--write", "vision", "nlp")
        reg.reader = reg.token("ci-reader", "--read", "vision")
        reg.nlp_reader = reg.token("nlp-reader", "--read", "nlp")
        src = root / "src"
        for rel, data in reg.files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        env = {"ARTFS_TOKEN": reg.writer}
        for project in ("vision", "nlp"):
            out = run_cli("put", str(src), f"{project}/data", "--registry", reg.url, env=env)
            assert out.stdout.strip() == f"{project}/data:v0"
        yield reg
    finally:
        for s in servers:
            stop_server(s.proc)
        release(spec)


@pytest.fixture
async def reader(authreg: AuthRegistry) -> AsyncIterator[HttpRegistryClient]:
    async with HttpRegistryClient(authreg.url, token=authreg.reader) as c:
        yield c


def _error(resp: httpx.Response) -> tuple[str, str]:
    err = resp.json()["error"]
    return err["code"], err["message"]


async def test_no_token_is_401_everywhere_but_discovery(authreg: AuthRegistry) -> None:
    url = authreg.url
    assert httpx.get(f"{url}/v1").status_code == 200  # discovery stays open
    for method, path in [
        ("GET", "/v1/projects"),
        ("GET", "/v1/stats"),
        ("GET", "/v1/projects/vision/artifacts/data"),
        ("GET", "/v1/projects/vision/artifacts/data/versions/0/manifest"),
        ("POST", "/v1/blobs/locate"),
        ("POST", "/v1/blobs/missing"),
        ("PUT", f"/v1/blobs/{sha(b'x')}"),
        ("DELETE", "/v1/projects/vision/artifacts/data/versions/0"),
    ]:
        resp = httpx.request(method, url + path, content=b"x" if method == "PUT" else None)
        assert resp.status_code == 401, (method, path, resp.text)
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert _error(resp)[0] == "unauthorized"
    resp = httpx.get(f"{url}/v1/projects", headers={"Authorization": "Bearer artfs_nope"})
    assert resp.status_code == 401 and "unknown token" in _error(resp)[1]
    async with HttpRegistryClient(url) as anonymous:
        assert await anonymous.registry_id()
        with pytest.raises(Unauthorized) as e:
            await anonymous.list_projects()
        assert str(e.value).startswith(f"the registry at {url} refused the request: no token")
        assert "set ARTFS_TOKEN" in str(e.value)


async def test_data_server_checks_tokens(authreg: AuthRegistry) -> None:
    """Reads on the data port need a URL signed by the API (a token alone is refused: it
    would let a token read blobs of projects it can't read); uploads need a write token."""
    server = authreg.servers[0]
    if server.blob_port is None:
        pytest.skip("presigned store: no data server (S3 checks its own signatures)")
    data = authreg.files["small.txt"]
    blob = f"{server.blob_url}/blobs/{sha(data)}"
    for headers in ({}, {"Authorization": f"Bearer {authreg.reader}"}):
        for method in ("GET", "HEAD"):
            assert httpx.request(method, blob, headers=headers).status_code == 403
        code, message = _error(httpx.get(blob, headers=headers))
        assert code == "forbidden" and message.startswith(f"unsigned request for blob {sha(data)}")
    located = httpx.post(
        f"{authreg.url}/v1/blobs/locate",
        json={"digests": [sha(data)]},
        headers={"Authorization": f"Bearer {authreg.reader}"},
    ).json()["blobs"][sha(data)]
    assert located["url"].startswith(f"{blob}?expires=") and located["expires"] > time.time()
    resp = httpx.get(located["url"])  # no token needed with the signature
    assert resp.status_code == 200 and resp.content == data
    resp = httpx.get(located["url"], headers={"Range": "bytes=0-4"})
    assert resp.status_code == 206 and resp.content == data[:5]
    new = os.urandom(5000)
    put = f"{server.blob_url}/blobs/{sha(new)}"
    resp = httpx.put(put, content=new)
    assert resp.status_code == 401 and _error(resp)[0] == "unauthorized"
    resp = httpx.put(put, content=new, headers={"Authorization": f"Bearer {authreg.reader}"})
    assert resp.status_code == 403
    assert _error(resp) == (
        "forbidden",
        "token 'ci-reader' has no write right on any project, which uploading blobs needs",
    )
    resp = httpx.put(put, content=new, headers={"Authorization": f"Bearer {authreg.writer}"})
    assert resp.status_code == 201


async def test_read_only_token_reads_but_cannot_write(
    authreg: AuthRegistry, reader: HttpRegistryClient, tmp_path: Path
) -> None:
    assert [p.name for p in await reader.list_projects()] == ["vision"]  # nlp is hidden
    art = await reader.get_artifact("vision", "data")
    assert art.aliases == {"latest": 0}
    manifest = await reader.get_manifest("vision", "data", 0)
    assert set(manifest) == set(authreg.files)
    for rel, data in authreg.files.items():
        entry = manifest[rel]
        got: list[bytes] = []
        await reader.read_range(entry.sha256, entry.size, 0, entry.size, got.append)
        assert b"".join(got) == data
    big = manifest["big.bin"]
    got = []
    await reader.read_range(big.sha256, big.size, 1_000_000, 100_000, got.append)
    assert b"".join(got) == authreg.files["big.bin"][1_000_000:1_100_000]
    assert len(await reader.blob_blocks(big.sha256, big.size)) > 1

    message = "token 'ci-reader' has no write right on project 'vision'"
    attempts = [
        reader.commit("vision", "data", Manifest.build([("x", big.size, big.sha256)])),
        reader.set_alias("vision", "data", "best", 0),
        reader.delete_alias("vision", "data", "latest"),
        reader.delete_version("vision", "data", 0, force=True),
        reader.create_artifact("vision", "other", type="model"),
        reader.create_project("vision", exist_ok=True),
    ]
    for attempt in attempts:
        with pytest.raises(Forbidden) as e:
            await attempt
        assert str(e.value) == (
            f"the registry at {authreg.url} refused the request: {message} "
            "(ask for a token with --write vision)"
        )
    for size in (10, 2 << 20):  # through the data server (or the API) and with 100-continue
        path = tmp_path / f"blob{size}"
        path.write_bytes(os.urandom(size))
        with pytest.raises(Forbidden, match="no write right on any project"):
            await reader.upload_blob(sha(path.read_bytes()), path)
    with pytest.raises(Forbidden, match="no write right on any project"):
        await reader.missing_blobs([big.sha256])
    async with HttpRegistryClient(authreg.url, token=authreg.writer) as writer:
        assert (await writer.get_artifact("vision", "data")).aliases == {"latest": 0}


async def test_a_token_for_one_project_cannot_read_another(authreg: AuthRegistry) -> None:
    async with HttpRegistryClient(authreg.url, token=authreg.nlp_reader) as nlp:
        assert [p.name for p in await nlp.list_projects()] == ["nlp"]
        assert (await nlp.get_artifact("nlp", "data")).aliases == {"latest": 0}
        for attempt in (
            nlp.get_artifact("vision", "data"),
            nlp.list_artifacts("vision"),
            nlp.get_version("vision", "data", "latest"),
            nlp.get_manifest("vision", "data", 0),
        ):
            with pytest.raises(
                Forbidden, match="token 'nlp-reader' has no read right on project 'vision'"
            ):
                await attempt
        # Unknown projects answer the same way: no way to probe which projects exist.
        with pytest.raises(Forbidden, match="no read right on project 'secret-project'"):
            await nlp.list_artifacts("secret-project")
    async with HttpRegistryClient(authreg.url, token=authreg.writer) as writer:
        assert [p.name for p in await writer.list_projects()] == ["nlp", "vision"]
        with pytest.raises(Forbidden, match="no write right on project 'elsewhere'"):
            await writer.create_project("elsewhere")


async def test_revoked_token_refused_by_every_server_within_the_ttl(
    authreg: AuthRegistry,
) -> None:
    secret = authreg.token("short-lived", "--read", "vision")
    listed = run_cli("token", "list", "--json", *authreg.store_args()).stdout
    assert secret not in listed
    clients = [HttpRegistryClient(s.url, token=secret) for s in authreg.servers]
    try:
        for c in clients:  # each server has looked the token up and caches it
            assert [p.name for p in await c.list_projects()] == ["vision"]
        out = run_cli("token", "revoke", "short-lived", *authreg.store_args())
        assert "revoked token 'short-lived'" in out.stderr
        revoked_at = time.monotonic()
        for c in clients:
            while True:
                try:
                    await c.list_projects()
                except Unauthorized as e:
                    assert "token 'short-lived' has been revoked" in str(e)
                    break
                assert time.monotonic() - revoked_at < TTL + 2.0, "revoke not seen in time"
                await trio.sleep(0.05)
    finally:
        for c in clients:
            await c.aclose()
    records = json.loads(run_cli("token", "list", "--json", *authreg.store_args()).stdout)
    mine = [r for r in records if r["name"] == "short-lived"]
    assert len(mine) == 1 and mine[0]["revoked"] is not None


async def test_expired_token_refused_by_every_server(authreg: AuthRegistry) -> None:
    lifetime = 4.0
    made = time.time()
    secret = authreg.token("temp", "--read", "vision", "--expires", f"{lifetime:g}s")
    records = json.loads(run_cli("token", "list", "--json", *authreg.store_args()).stdout)
    (record,) = [r for r in records if r["name"] == "temp"]
    assert made + lifetime <= record["expires"] <= time.time() + lifetime
    clients = [HttpRegistryClient(s.url, token=secret) for s in authreg.servers]
    try:
        for c in clients:
            assert [p.name for p in await c.list_projects()] == ["vision"]
        await trio.sleep(max(0.0, record["expires"] + 0.1 - time.time()))
        for c in clients:  # at once, although each server still caches the token
            with pytest.raises(Unauthorized, match="token 'temp' expired at"):
                await c.list_projects()
    finally:
        for c in clients:
            await c.aclose()
    listed = run_cli("token", "list", *authreg.store_args()).stdout
    line = next(li for li in listed.splitlines() if li.startswith("temp\t"))
    assert "\texpired " in line
    bad = run_cli(
        "token",
        "create",
        "x",
        "--read",
        "a",
        "--expires",
        "soon",
        *authreg.store_args(),
        check=False,
    )
    assert bad.returncode != 0 and "invalid duration 'soon'" in bad.stderr


def test_cli_put_and_get_with_artfs_token(authreg: AuthRegistry, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"weights" * 1000)
    reg = ["--registry", authreg.url]
    proc = run_cli("put", str(src), "vision/model", *reg, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"artfs put: the registry at {authreg.url} refused the request: no token (set "
        "ARTFS_TOKEN, or send 'Authorization: Bearer <token>'; tokens are made with "
        "'artfs token create' on the registry's host)"
    )
    proc = run_cli(
        "put", str(src), "vision/model", *reg, env={"ARTFS_TOKEN": authreg.reader}, check=False
    )
    assert proc.returncode == 1
    assert "token 'ci-reader' has no write right on project 'vision'" in proc.stderr
    out = run_cli("put", str(src), "vision/model", *reg, env={"ARTFS_TOKEN": authreg.writer})
    assert out.stdout.strip() == "vision/model:v0"
    env = {"ARTFS_TOKEN": authreg.reader}
    cache = ["--cache-dir", str(tmp_path / "cache")]
    run_cli("get", "vision/model", str(tmp_path / "model"), *reg, *cache, env=env)
    assert (tmp_path / "model" / "w.bin").read_bytes() == b"weights" * 1000
    run_cli("get", "vision/data:v0", str(tmp_path / "data"), *reg, *cache, env=env)
    for rel, data in authreg.files.items():
        assert (tmp_path / "data" / rel).read_bytes() == data
    assert "vision" in run_cli("ls", *reg, env=env).stdout
    proc = run_cli("ls", "nlp", *reg, env=env, check=False)
    assert proc.returncode == 1 and "no read right on project 'nlp'" in proc.stderr
    proc = run_cli("ls", *reg, env={"ARTFS_TOKEN": "artfs_wrong"}, check=False)
    assert proc.returncode == 1 and "unknown token" in proc.stderr


# --------------------------------------------------------------------------- the mount

needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def _mount(registry: str, point: Path, cache: Path, token: str) -> None:
    point.mkdir(parents=True, exist_ok=True)
    run_cli(
        "mount",
        "--registry",
        registry,
        str(point),
        "--cache-dir",
        str(cache),
        "--timeout",
        "5",
        env={"ARTFS_TOKEN": token},
    )
    assert is_mounted(point)


def _umount(point: Path) -> None:
    if is_mounted(point):
        run_cli("umount", str(point), check=False)
        if is_mounted(point):
            subprocess.run(["fusermount3", "-u", "-z", str(point)], check=False)


@needs_fuse
def test_mount_reads_with_a_read_token_and_keeps_it_off_the_command_line(
    authreg: AuthRegistry, tmp_path: Path
) -> None:
    point = tmp_path / "mnt"
    _mount(authreg.url, point, tmp_path / "cache", authreg.reader)
    try:
        assert os.listdir(point) == ["vision"]  # nlp: not readable with this token
        for rel, data in authreg.files.items():
            assert (point / "vision" / "data" / "latest" / rel).read_bytes() == data
        with open(point / "vision" / "data" / "v0" / "big.bin", "rb") as f:
            f.seek(2_000_000)
            assert f.read(4096) == authreg.files["big.bin"][2_000_000:2_004_096]
        record = read_record(point)
        assert record is not None
        pid = int(record["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"mount" in cmdline and authreg.reader.encode() not in cmdline
        # Writing needs a write right: mkdir of a project is refused with EACCES.
        with pytest.raises(PermissionError):
            (point / "newproject").mkdir()
    finally:
        _umount(point)


@needs_fuse
def test_mount_with_a_bad_token_answers_eacces_not_a_hang(
    authreg: AuthRegistry, tmp_path: Path
) -> None:
    if authreg.spec.backend != SQLITE:
        pytest.skip("one backend is enough: the refusal happens before any blob is fetched")
    point = tmp_path / "mnt"
    _mount(authreg.url, point, tmp_path / "cache", "artfs_not-a-real-token")
    try:
        started = time.monotonic()
        proc = subprocess.run(
            ["cat", str(point / "vision" / "data" / "v0" / "small.txt")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode != 0 and "Permission denied" in proc.stderr
        assert time.monotonic() - started < 10
        with pytest.raises(OSError) as e:
            os.listdir(point)
        assert e.value.errno == errno.EACCES
    finally:
        _umount(point)
    log = runtime_dir() / f"mount-{mount_key(canonical(point))}.log"
    assert "refused the request: unknown token" in log.read_text(errors="replace")


def test_serve_on_a_public_address_without_auth_warns(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", "--host", "0.0.0.0", "--auth", "off")
    try:
        text = "".join(server.log)
        assert "WARNING: --auth off on 0.0.0.0" in text
        assert "tokens required" not in text
    finally:
        stop_server(server.proc)
    server = start_server(tmp_path / "data", "--host", "0.0.0.0")
    try:
        text = "".join(server.log)
        assert "tokens required" in text and "WARNING" not in text
        assert "tokens are required but this registry has none yet" in text
        port = server.url.rsplit(":", 1)[1]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/projects").status_code == 401
    finally:
        stop_server(server.proc)


async def test_lineage_inputs_need_read_on_their_project(authreg: AuthRegistry) -> None:
    """Naming a version as an input reveals it: a token that may not read its project may
    not name it, and used-by hides consumers in projects the token cannot read."""
    nlp_writer = authreg.token("nlp-writer", "--write", "nlp")
    async with HttpRegistryClient(authreg.url, token=nlp_writer) as nlp:
        manifest = (await nlp.get_manifest("nlp", "data", 0)).to_json()
        with pytest.raises(Forbidden, match="no read right on project 'vision'"):
            await nlp.commit("nlp", "data", Manifest.from_json(manifest), inputs=["vision/data:v0"])
    async with HttpRegistryClient(authreg.url, token=authreg.writer) as writer:
        await writer.create_artifact("nlp", "derived", type="dataset", exist_ok=True)
        made = await writer.commit(
            "nlp", "derived", Manifest.from_json(manifest), inputs=["vision/data:v0"]
        )
        assert [i.ref for i in made.version.inputs] == ["vision/data:v0"]
        assert [u.ref for u in await writer.used_by("vision", "data", 0)] == [made.version.ref]
    async with HttpRegistryClient(authreg.url, token=authreg.reader) as vision_reader:
        assert await vision_reader.used_by("vision", "data", 0) == []  # nlp is not readable
