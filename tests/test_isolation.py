"""Project isolation (issue 10, "Why" 2): a token sees only what its projects hold.

Real ``--auth on`` servers over HTTP on both configurations. Each of the four leaks found
by the hostile-user run has a regression test here: lineage naming another project's
version, data-port reads of any blob by hash, ``blobs/locate`` (and ``blobs/missing``)
confirming that guessed content exists, and commits of another project's blob without its
bytes. Plus the signed URLs that replace token checks on the data port (expiry, tampering,
clients and mounts re-locating transparently) and cross-project deduplication.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from artfs.auth import Principal
from artfs.client.http import HttpRegistryClient
from artfs.errors import Forbidden, NotFound
from artfs.manifest import Manifest
from artfs.models import HIDDEN_INPUT, HIDDEN_REF
from artfs.registry import blobrefs
from artfs.registry.blobrefs import UPLOAD_PROOF_SECONDS
from artfs.server.signing import UrlSigner

from .backends import SQLITE, RegistrySpec, backend_params, make_spec, release
from .conftest_server import RunningServer, start_spec_server, stop_server
from .e2e import is_mounted, run_cli
from .test_auth import _umount, needs_fuse

LIFETIME = 4.0  # --blob-url-lifetime of the test server: short, so tests see URLs expire


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Isolated:
    spec: RegistrySpec
    server: RunningServer
    alpha_writer: str  # write on alpha
    alpha_reader: str  # read on alpha
    beta_writer: str  # write on beta
    beta_reader: str  # read on beta
    bridge: str  # read on alpha, write on beta: made beta/derived from alpha/data
    files: dict[str, bytes]  # alpha/data:v0, held by no other project
    derived: dict[str, bytes]  # beta/derived:v0 (lineage input: alpha/data:v0)

    @property
    def url(self) -> str:
        return self.server.url

    def store_args(self) -> list[str]:
        return ["--data", self.spec.data_dir, *(["--db", self.spec.db] if self.spec.db else [])]

    def token(self, name: str, *grants: str) -> str:
        return run_cli("token", "create", name, *grants, *self.store_args()).stdout.strip()

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


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
        "--xattrs",
        env={"ARTFS_TOKEN": token},
    )
    assert is_mounted(point)


def _put(src: Path, files: dict[str, bytes], ref: str, url: str, token: str, *extra: str) -> str:
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    out = run_cli("put", str(src), ref, "--registry", url, *extra, env={"ARTFS_TOKEN": token})
    return out.stdout.strip()


@pytest.fixture(scope="module", params=backend_params())
def iso(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Isolated]:
    root = tmp_path_factory.mktemp("isolation")
    spec = make_spec(request.param, root / "data", for_servers=True)
    server = start_spec_server(spec, "--auth", "on", "--blob-url-lifetime", str(LIFETIME))
    try:
        reg = Isolated(spec, server, "", "", "", "", "", {}, {})
        reg.alpha_writer = reg.token("alpha-writer", "--write", "alpha")
        reg.alpha_reader = reg.token("alpha-reader", "--read", "alpha")
        reg.beta_writer = reg.token("beta-writer", "--write", "beta")
        reg.beta_reader = reg.token("beta-reader", "--read", "beta")
        reg.bridge = reg.token("bridge", "--read", "alpha", "--write", "beta")
        reg.files = {
            "secret.txt": b"only alpha holds this\n" + os.urandom(16),
            "weights.bin": os.urandom(2 * 1024 * 1024 + 3),
        }
        reg.derived = {"report.txt": b"made from alpha/data\n" + os.urandom(16)}
        assert _put(root / "a", reg.files, "alpha/data", reg.url, reg.alpha_writer) == (
            "alpha/data:v0"
        )
        made = _put(
            root / "b", reg.derived, "beta/derived", reg.url, reg.bridge, "--input", "alpha/data:v0"
        )
        assert made == "beta/derived:v0"
        yield reg
    finally:
        stop_server(server.proc)
        release(spec)


# --------------------------------------------------------------------------- leak 1: lineage


async def test_lineage_into_an_unreadable_project_is_hidden(iso: Isolated) -> None:
    path = "/v1/projects/beta/artifacts/derived/versions/0"
    async with HttpRegistryClient(iso.url, token=iso.alpha_reader) as alpha:
        alpha_digest = (await alpha.get_version("alpha", "data", "v0")).digest
    raw = httpx.get(iso.url + path, headers=iso.headers(iso.beta_reader))
    assert raw.status_code == 200
    assert raw.json()["inputs"] == [{"hidden": True}]
    assert "alpha" not in raw.text and alpha_digest not in raw.text
    async with HttpRegistryClient(iso.url, token=iso.beta_reader) as beta:
        info = await beta.get_version("beta", "derived", "latest")
        assert info.inputs == (HIDDEN_INPUT,) and info.inputs[0].ref == HIDDEN_REF
    async with HttpRegistryClient(iso.url, token=iso.bridge) as bridge:  # may read alpha
        info = await bridge.get_version("beta", "derived", "v0")
        assert [i.ref for i in info.inputs] == ["alpha/data:v0"]
        assert info.inputs[0].digest == alpha_digest
    out = run_cli(
        "info", "beta/derived:v0", "--registry", iso.url, env={"ARTFS_TOKEN": iso.beta_reader}
    )
    assert json.loads(out.stdout)["inputs"] == [HIDDEN_REF] and "alpha" not in out.stdout


# --------------------------------------------------------------------------- leak 2: data port


async def test_a_token_cannot_read_blobs_of_other_projects(iso: Isolated) -> None:
    data = iso.files["secret.txt"]
    digest = sha(data)
    for token in (iso.beta_reader, iso.beta_writer):
        headers = iso.headers(token)
        if iso.server.blob_port is not None:  # the data port: a token is no longer enough
            resp = httpx.get(f"{iso.server.blob_url}/blobs/{digest}", headers=headers)
            assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"
            assert data not in resp.content
        resp = httpx.get(f"{iso.url}/v1/blobs/{digest}", headers=headers)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
        resp = httpx.get(f"{iso.url}/v1/blobs/{digest}/blocks", headers=headers)
        assert resp.status_code == 404
        async with HttpRegistryClient(iso.url, token=token) as other:
            with pytest.raises(NotFound):
                await other.read_range(digest, len(data), 0, len(data), lambda b: None)
    async with HttpRegistryClient(iso.url, token=iso.alpha_reader) as alpha:
        got: list[bytes] = []
        await alpha.read_range(digest, len(data), 0, len(data), got.append)
        assert b"".join(got) == data


# --------------------------------------------------------------------------- leak 3: locate


async def test_locate_and_missing_do_not_confirm_what_other_projects_hold(iso: Isolated) -> None:
    held = sha(iso.files["weights.bin"])  # in alpha only
    never = sha(b"never stored anywhere " + os.urandom(8))

    def ask(route: str, token: str, digest: str) -> dict[str, object]:
        resp = httpx.post(
            f"{iso.url}/v1/blobs/{route}", json={"digests": [digest]}, headers=iso.headers(token)
        )
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    for token in (iso.beta_reader, iso.beta_writer):
        assert ask("locate", token, held) == {"blobs": {}, "missing": [held]}
        assert ask("locate", token, never) == {"blobs": {}, "missing": [never]}
    assert ask("missing", iso.beta_writer, held) == {"missing": [held]}
    assert ask("missing", iso.beta_writer, never) == {"missing": [never]}
    # The projects that hold it see it.
    assert ask("missing", iso.alpha_writer, held) == {"missing": []}
    located = ask("locate", iso.alpha_reader, held)["blobs"]
    assert isinstance(located, dict) and located[held]["size"] == len(iso.files["weights.bin"])


# ------------------------------------------------------ leak 4: committing another's blob


async def test_committing_another_projects_blob_needs_its_bytes(
    iso: Isolated, tmp_path: Path
) -> None:
    data = iso.files["weights.bin"]
    digest = sha(data)
    never = os.urandom(1000)
    async with HttpRegistryClient(iso.url, token=iso.beta_writer) as beta:
        await beta.create_artifact("beta", "copied", type="dataset", exist_ok=True)
        for content in (data, never):  # held by alpha, or by nobody: the same refusal
            manifest = Manifest.build([("w.bin", len(content), sha(content))])
            with pytest.raises(Forbidden, match="neither in a project token 'beta-writer' can"):
                await beta.commit("beta", "copied", manifest)
        before = [b for b in iso.spec.open().blobs.list_blobs()]
        # Uploading the bytes proves possession: accepted, answered like a new blob, and
        # the store still keeps one copy.
        path = tmp_path / "w.bin"
        path.write_bytes(data)
        await beta.upload_blob(digest, path)
        after = [b for b in iso.spec.open().blobs.list_blobs()]
        assert len(after) == len(before)
        assert [b[1] for b in after if b[0] == digest] == [len(data)]
        made = await beta.commit("beta", "copied", Manifest.build([("w.bin", len(data), digest)]))
        assert made.version.ref == "beta/copied:v0"
    async with HttpRegistryClient(iso.url, token=iso.beta_reader) as reader:
        got: list[bytes] = []
        await reader.read_range(digest, len(data), 0, len(data), got.append)
        assert b"".join(got) == data


def test_publish_of_bytes_another_project_holds_uploads_them(iso: Isolated, tmp_path: Path) -> None:
    """``artfs put`` with a token of another project: the blob is reported missing, its bytes
    are uploaded (deduplicated by the store), the commit goes through."""
    files = {"copy-of-secret.txt": iso.files["secret.txt"]}
    out = run_cli(
        "put",
        str(_write(tmp_path / "src", files)),
        "beta/dup",
        "--registry",
        iso.url,
        env={"ARTFS_TOKEN": iso.beta_writer},
    )
    assert out.stdout.strip() == "beta/dup:v0"
    dest = tmp_path / "got"
    run_cli(
        "get",
        "beta/dup:v0",
        str(dest),
        "--registry",
        iso.url,
        "--cache-dir",
        str(tmp_path / "cache"),
        env={"ARTFS_TOKEN": iso.beta_reader},
    )
    assert (dest / "copy-of-secret.txt").read_bytes() == iso.files["secret.txt"]


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


# --------------------------------------------------------------------------- signed URLs


async def test_signed_urls_expire_and_cannot_be_edited(iso: Isolated) -> None:
    if iso.server.blob_port is None:
        pytest.skip("presigned store: blob URLs are the store's own (S3 signatures)")
    secret, weights = iso.files["secret.txt"], iso.files["weights.bin"]
    resp = httpx.post(
        f"{iso.url}/v1/blobs/locate",
        json={"digests": [sha(secret), sha(weights)]},
        headers=iso.headers(iso.alpha_reader),
    )
    located = resp.json()["blobs"]
    url = located[sha(secret)]["url"]
    expires = located[sha(secret)]["expires"]
    assert time.time() < expires <= time.time() + LIFETIME + 1
    assert httpx.get(url).content == secret
    assert httpx.head(url).status_code == 200
    base, query = url.split("?", 1)
    params = dict(p.split("=", 1) for p in query.split("&"))
    other = located[sha(weights)]["url"].split("?", 1)[0]
    tampered = [
        f"{other}?{query}",  # another blob's path with this blob's signature
        f"{base}?expires={int(params['expires']) + 3600}&sig={params['sig']}",  # a longer life
        f"{base}?expires={params['expires']}&sig={'0' * 64}",
        f"{base}?expires={params['expires']}",
        f"{base}?expires={params['expires']}&sig=%FF%C3%A9",
        base,
    ]
    for bad in tampered:
        resp = httpx.get(bad)
        assert resp.status_code == 403, bad
        assert resp.json()["error"]["code"] == "forbidden"
    await trio.sleep(max(0.0, expires - time.time()) + 0.2)
    resp = httpx.get(url)
    assert resp.status_code == 403 and "expired at" in resp.json()["error"]["message"]


async def test_client_relocates_a_url_that_expired_under_it(iso: Isolated) -> None:
    """A read through a URL that has run out (the mount reads for hours through URLs that
    last an hour) locates the blob once more and carries on."""
    data = iso.files["weights.bin"]
    digest = sha(data)
    async with HttpRegistryClient(iso.url, token=iso.alpha_reader) as alpha:
        first = await alpha.locate(digest)
        await trio.sleep(LIFETIME + 1.2)  # the URL has expired...
        alpha._locations[digest] = (first, time.time() + 3600)  # ...but the client trusts it
        got: list[bytes] = []
        await alpha.read_range(digest, len(data), 1000, 500_000, got.append)
        assert b"".join(got) == data[1000:501_000]
        assert alpha._locations[digest][0] != first


# --------------------------------------------------------------------------- the mount


@needs_fuse
def test_mount_reads_through_signed_urls_for_longer_than_they_last(
    iso: Isolated, tmp_path: Path
) -> None:
    point = tmp_path / "mnt"
    _mount(iso.url, point, tmp_path / "cache", iso.alpha_reader)
    try:
        assert os.listdir(point) == ["alpha"]
        base = point / "alpha" / "data" / "v0"
        assert (base / "secret.txt").read_bytes() == iso.files["secret.txt"]
        weights = iso.files["weights.bin"]
        deadline = time.monotonic() + 2.5 * LIFETIME
        offset, step = 0, 256 * 1024
        with open(base / "weights.bin", "rb") as f:
            while time.monotonic() < deadline or offset < len(weights):
                f.seek(offset % len(weights))
                got = f.read(4096)
                assert got == weights[offset % len(weights) : offset % len(weights) + 4096]
                offset += step
                time.sleep(0.4)
    finally:
        _umount(point)
    beta = tmp_path / "mnt-beta"
    _mount(iso.url, beta, tmp_path / "cache-beta", iso.beta_reader)
    try:
        version = beta / "beta" / "derived" / "v0"
        assert json.loads(os.getxattr(version, "user.artfs.inputs")) == [HIDDEN_REF]
        assert (version / "report.txt").read_bytes() == iso.derived["report.txt"]
    finally:
        _umount(beta)


def test_auth_off_keeps_the_url_template(tmp_path: Path) -> None:
    """With ``--auth off`` everyone may read everything: no signatures, no locate per blob."""
    spec = make_spec(SQLITE, tmp_path / "data", for_servers=True)
    server = start_spec_server(spec, "--auth", "off")
    try:
        info = httpx.get(f"{server.url}/v1").json()
        assert info["blob_url"] == f"{server.blob_url}/blobs/{{sha256}}"
        data = b"open registry"
        put = httpx.put(f"{server.blob_url}/blobs/{sha(data)}", content=data)
        assert put.status_code == 201
        assert httpx.get(f"{server.blob_url}/blobs/{sha(data)}").content == data
    finally:
        stop_server(server.proc)
        release(spec)


# --------------------------------------------------------------------------- pure and store


def test_url_signer_checks_blob_expiry_and_signature() -> None:
    now = [1_000_000.0]
    signer = UrlSigner(b"k" * 32, 60, clock=lambda: now[0])
    a, b = sha(b"a"), sha(b"b")
    query, expires = signer.sign(a)
    assert now[0] + 60 <= expires <= now[0] + 61
    signer.check(a, query)
    with pytest.raises(Forbidden, match="bad signature"):
        signer.check(b, query)  # another blob
    with pytest.raises(Forbidden, match="bad signature"):
        UrlSigner(b"x" * 32, 60, clock=lambda: now[0]).check(a, query)  # another secret
    with pytest.raises(Forbidden, match="unsigned request"):
        signer.check(a, "")
    with pytest.raises(Forbidden, match="malformed expiry"):
        signer.check(a, "expires=soon&sig=00")
    for sig in ("%C3%A9", "%FF", "\udcff", "é" * 64):  # non-ASCII: refused, never a crash
        with pytest.raises(Forbidden, match="bad signature"):
            signer.check(a, f"expires={int(expires)}&sig={sig}")
    now[0] = expires
    with pytest.raises(Forbidden, match="expired at"):
        signer.check(a, query)


@pytest.mark.parametrize("backend", backend_params())
def test_upgrade_to_schema_6_records_which_project_holds_which_blob(
    backend: str, tmp_path: Path
) -> None:
    """A registry made before project isolation: its versions' blobs stay visible to their
    projects' readers (filled from the stored manifests at the upgrade), and only to them."""
    spec = make_spec(backend, tmp_path / "reg")
    data = os.urandom(3000)
    registry = spec.open()
    try:
        writer = registry.blob_writer(sha(data), len(data))
        writer.write(data)
        writer.finish()
        for project in ("alpha", "beta"):
            registry.create_project(project)
        registry.create_artifact("alpha", "data", type="dataset")
        registry.commit("alpha", "data", Manifest.build([("f", len(data), sha(data))]))
        with registry.meta._write() as c:  # type: ignore[attr-defined]
            registry.meta._q(c, "DROP TABLE project_blobs")  # type: ignore[attr-defined]
            if backend == SQLITE:
                registry.meta._q(c, "PRAGMA user_version=5")  # type: ignore[attr-defined]
            else:
                registry.meta._q(c, "UPDATE registry SET value='5' WHERE key='schema'")  # type: ignore[attr-defined]
    finally:
        registry.close()
    registry = spec.open()
    try:
        assert registry.visible_blobs(Principal("a", {"alpha": "read"}), [sha(data)]) == {sha(data)}
        assert registry.visible_blobs(Principal("b", {"beta": "read"}), [sha(data)]) == set()
    finally:
        registry.close()


@pytest.mark.parametrize("backend", backend_params())
def test_visibility_lookups_in_several_digest_lists(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digests go to the database as one parameter per ``DIGEST_LIST_CHUNK`` (a JSON
    array for SQLite, a comma-joined string for PostgreSQL): with lists of 3, a commit of 10
    blobs and lookups of 11 cross every boundary and answer as one list would."""
    monkeypatch.setattr(blobrefs, "DIGEST_LIST_CHUNK", 3)
    spec = make_spec(backend, tmp_path / "reg")
    registry = spec.open()
    try:
        meta = registry.meta
        digests = [hashlib.sha256(bytes([i])).hexdigest() for i in range(12)]
        held, other, uploaded = digests[:10], digests[10], digests[11]
        for project in ("alpha", "beta"):
            registry.create_project(project)
        with meta._read() as c:  # type: ignore[attr-defined]
            row = meta._q(c, "SELECT id FROM projects WHERE name = ?", "alpha").fetchone()  # type: ignore[attr-defined]
        with meta._write() as c:  # type: ignore[attr-defined]
            meta._record_refs(c, int(row[0]), held)  # type: ignore[attr-defined]
            meta._record_refs(c, int(row[0]), held[:4])  # (again: nothing doubled)
        meta.record_upload("tok", uploaded, time.time(), 0.0)
        asked = [*digests, "f" * 64]
        assert meta.visible_blobs(asked, ["alpha"], None, 0.0) == set(held)
        assert meta.visible_blobs(asked, ["alpha", "beta"], "tok", 0.0) == {*held, uploaded}
        assert meta.visible_blobs(asked, ["beta"], "tok", 0.0) == {uploaded}
        assert meta.visible_blobs(asked, None, None, 0.0) == set(held)
        assert other not in meta.visible_blobs(asked, None, "tok", 0.0)
        with meta._read() as c:  # type: ignore[attr-defined]
            count = meta._q(c, "SELECT COUNT(*) FROM project_blobs").fetchone()  # type: ignore[attr-defined]
        assert int(count[0]) == 10
    finally:
        registry.close()


@pytest.mark.parametrize("backend", backend_params())
def test_gc_forgets_expired_upload_proofs(backend: str, tmp_path: Path) -> None:
    """A token's upload proofs are cleared on its next upload; those of a token that never
    uploads again are cleared by ``artfs gc``, and only once they have expired."""
    spec = make_spec(backend, tmp_path / "reg")
    registry = spec.open()
    try:
        meta = registry.meta
        now = time.time()
        meta.record_upload("gone", "a" * 64, now - UPLOAD_PROOF_SECONDS - 60, 0.0)
        meta.record_upload("active", "b" * 64, now, 0.0)

        def proofs() -> list[str]:
            with meta._read() as c:  # type: ignore[attr-defined]
                rows = meta._q(c, "SELECT token FROM blob_uploads ORDER BY token")  # type: ignore[attr-defined]
                return [str(r[0]) for r in rows]

        assert proofs() == ["active", "gone"]
        assert registry.gc(3600.0, dry_run=True).proofs == 0  # a dry run changes nothing
        assert proofs() == ["active", "gone"]
        assert registry.gc(3600.0).proofs == 1
        assert proofs() == ["active"]
    finally:
        registry.close()


# ---------------------------------------------- uploads of a blob a collection is deleting


@pytest.mark.parametrize("backend", backend_params())
def test_uploading_a_doomed_blob_confirms_nothing_to_a_token_that_cannot_see_it(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection deleting a blob refuses uploads of it (409 being_collected, the client
    retries). To a token that can't see the blob that refusal would confirm that these bytes
    were once held by another project: it waits out the collection instead and answers like
    any new upload; a doom that outlasts the wait (a collection died) answers 503, as a busy
    registry does."""
    from artfs.errors import BeingCollected, Unavailable
    from artfs.registry import core

    from .test_gc import mark_only

    spec = make_spec(backend, tmp_path / "data", for_servers=True)
    server = start_spec_server(spec, "--auth", "on")
    reg = spec.open()
    try:
        store = ["--data", spec.data_dir, *(["--db", spec.db] if spec.db else [])]
        alpha = run_cli("token", "create", "alpha-w", "--write", "alpha", *store).stdout.strip()
        beta = run_cli("token", "create", "beta-w", "--write", "beta", *store).stdout.strip()
        data = os.urandom(200_000)
        _put(tmp_path / "a", {"old.bin": data}, "alpha/data", server.url, alpha)
        reg.delete_version("alpha", "data", 0, force=True)
        assert mark_only(reg) == [sha(data)]  # a collection is deleting it now

        # The registry's own rule, per principal.
        with pytest.raises(BeingCollected):
            reg.blob_writer(sha(data), len(data))  # unrestricted (an admin, or auth off)
        with pytest.raises(BeingCollected):  # a token that uploaded it: may know
            reg.blob_writer(sha(data), len(data), Principal("alpha-w", {"alpha": "write"}))
        monkeypatch.setattr(core, "DOOM_WAIT", 0.3)
        started = time.monotonic()
        with pytest.raises(Unavailable, match="busy"):
            reg.blob_writer(sha(data), len(data), Principal("beta-w", {"beta": "write"}))
        assert time.monotonic() - started >= 0.3

        # Over HTTP, the API and the data port: the beta token waits for the collection to
        # finish, then its upload is taken as a new blob (201), nothing said about alpha.
        info = httpx.get(f"{server.url}/v1", timeout=10).json()
        put_url = info.get("upload", {}).get("put_url")
        urls = [f"{server.url}/v1/blobs/{sha(data)}"]
        if put_url:
            urls.append(put_url.replace("{sha256}", sha(data)))
        for i, url in enumerate(urls):
            # A token of its own each time: one that uploaded the bytes may see them (409).
            beta = run_cli("token", "create", f"beta-{i}", "--write", "beta", *store).stdout
            beta = beta.strip()
            if not mark_only(reg):  # doomed again for each attempt
                assert reg.meta.doomed_blobs() == [sha(data)]

            def finish_later() -> None:
                time.sleep(1.0)
                assert reg.gc(0).resumed == 1

            collector = threading.Thread(target=finish_later)
            collector.start()
            started = time.monotonic()
            resp = httpx.put(url, content=data, headers=iso_headers(beta), timeout=30)
            collector.join()
            assert resp.status_code == 201, (url, resp.status_code, resp.text)
            assert time.monotonic() - started >= 0.8  # it waited for the collection
            assert reg.meta.doomed_blobs() == []
            assert reg.blob_size(sha(data)) == len(data)
            reg.blobs.delete(sha(data))  # gone again: the next URL meets the same state
            _put(tmp_path / "a", {"old.bin": data}, "alpha/data", server.url, alpha)
            last = reg.get_artifact("alpha", "data").versions[-1].number
            reg.delete_version("alpha", "data", last, force=True)
    finally:
        reg.close()
        stop_server(server.proc)
        release(spec)


def iso_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
