"""Every version of a project with a tag (issue 12 item 2: ``artfs ls PROJECT --tag x``),
over a real server with ``--auth on`` in both configurations: the CLI's lines and JSON,
the route's pages and cursors, one request per page, the read right, live versions only;
then the Python API, and the in-memory twin against the in-process registry."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import artfs
from artfs.client.local import LocalRegistryClient
from artfs.client.memory import MemoryRegistryClient
from artfs.manifest import Manifest
from artfs.tagsearch import all_tagged

from .backends import backend_params, make_spec, release
from .conftest_server import RunningServer, start_spec_server, stop_server
from .e2e import run_cli

pytestmark = pytest.mark.timeout(300)


@dataclass
class Reg:
    server: RunningServer
    tokens: dict[str, str]  # writer: '*'; reader: the project only; outsider: another project
    project: str

    def cli(self, who: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(
            *args, "--registry", self.server.url, env={"ARTFS_TOKEN": self.tokens[who]}, check=check
        )

    def page(self, who: str, project: str, **params: Any) -> httpx.Response:
        return httpx.get(
            f"{self.server.url}/v1/projects/{project}/versions",
            params=params,
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            timeout=30,
        )

    def requests(self) -> int:
        return int(
            httpx.get(
                f"{self.server.url}/v1/stats",
                headers={"Authorization": f"Bearer {self.tokens['writer']}"},
                timeout=30,
            ).json()["requests"]
        )


def put(reg: Reg, root: Path, target: str, *tags: str) -> None:
    src = root / hashlib.sha256(target.encode() + str(tags).encode()).hexdigest()[:12]
    src.mkdir(parents=True)
    (src / "f.txt").write_text(f"{target} {tags}\n")
    reg.cli("writer", "put", str(src), target, *(a for t in tags for a in ("--tag", t)))


@pytest.fixture(scope="module", params=backend_params())
def reg(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reg]:
    root = tmp_path_factory.mktemp("tagsearch")
    spec = make_spec(request.param, root / "data", for_servers=True)
    project = f"t{uuid.uuid4().hex[:8]}"
    try:
        store = ["--data", spec.data_dir, *(["--db", spec.db] if spec.db else [])]

        def token(name: str, *grant: str) -> str:
            return run_cli("token", "create", name, *grant, *store).stdout.strip()

        tokens = {
            "writer": token("writer", "--write", "*"),
            "reader": token("reader", "--read", project),
            "outsider": token("outsider", "--read", "elsewhere"),
        }
        server = start_spec_server(spec, "--auth", "on")
        try:
            reg = Reg(server, tokens, project)
            src = root / "src"
            # artifacts put in an order other than their names'; v1 of "b" has no tag
            put(reg, src, f"{project}/c", "x")
            put(reg, src, f"{project}/b", "x", "y")
            put(reg, src, f"{project}/b")
            put(reg, src, f"{project}/b", "x")
            put(reg, src, f"{project}/a", "y")
            put(reg, src, f"{project}/a-2", "x")
            put(reg, src, f"{project}/gone", "x")
            put(reg, src, f"{project}/d", "x")
            put(reg, src, "elsewhere/e", "x")  # another project: never listed
            reg.cli("writer", "delete", f"{project}/gone", "--force")
            reg.cli("writer", "delete", f"{project}/d:v0")
            yield reg
        finally:
            stop_server(server.proc)
    finally:
        release(spec)


def expected(project: str) -> list[str]:
    return [f"{project}/a-2:v0", f"{project}/b:v0", f"{project}/b:v2", f"{project}/c:v0"]


def test_ls_project_tag_lists_every_tagged_version_by_full_ref(reg: Reg) -> None:
    p = reg.project
    lines = reg.cli("reader", "ls", p, "--tag", "x").stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == expected(p)
    assert lines[1].split("\t")[2:] == ["1 file", lines[1].split("\t")[3], "tags: x,y"]
    rows = json.loads(reg.cli("reader", "ls", p, "--tag", "x", "--json").stdout)
    assert [r["ref"] for r in rows] == expected(p)
    assert [r["tags"] for r in rows] == [["x"], ["x", "y"], ["x"], ["x"]]
    assert all(r["files"] == 1 and r["size"] > 0 for r in rows)
    assert all(datetime.fromisoformat(r["created"]).year >= 2024 for r in rows)
    y = json.loads(reg.cli("reader", "ls", p, "--tag", "y", "--json").stdout)
    assert [r["ref"] for r in y] == [f"{p}/a:v0", f"{p}/b:v0"]
    assert reg.cli("reader", "ls", p, "--tag", "none").stdout == ""
    # the artifact form still filters one artifact's versions
    assert reg.cli("reader", "ls", f"{p}/b", "--tag", "x").stdout.count("\n") == 2


def test_one_request_per_page(reg: Reg) -> None:
    before = reg.requests()
    reg.cli("reader", "ls", reg.project, "--tag", "x")
    # one page (4 rows < 200); a listing per artifact would be 5 (a, a-2, b, c, d) + 1
    assert reg.requests() - before <= 2  # the page, and the stats call reading the count


def test_pages_follow_the_cursor_and_end(reg: Reg) -> None:
    refs: list[str] = []
    sizes: list[int] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"tag": "x", "limit": 3}
        if after is not None:
            params["after"] = after
        resp = reg.page("reader", reg.project, **params)
        assert resp.status_code == 200, resp.text
        assert resp.headers["cache-control"] == "no-store"
        body = resp.json()
        sizes.append(len(body["versions"]))
        refs += [f"{reg.project}/{v['artifact']}:v{v['number']}" for v in body["versions"]]
        after = body["next"]
        if after is None:
            break
    assert refs == expected(reg.project) and sizes == [3, 1]
    # a page that ends exactly at the last row says so (no empty extra page)
    body = reg.page("reader", reg.project, tag="x", limit=4).json()
    assert len(body["versions"]) == 4 and body["next"] is None
    # the cursor is the last row's artifact:vN: a page starts after it
    body = reg.page("reader", reg.project, tag="x", after="b:v0").json()
    assert [(v["artifact"], v["number"]) for v in body["versions"]] == [("b", 2), ("c", 0)]


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({}, 400, "'tag' query parameter is required"),
        ({"tag": "bad tag"}, 400, "invalid tag"),
        ({"tag": "x", "limit": "0"}, 400, "invalid page size"),
        ({"tag": "x", "limit": "many"}, 400, "invalid page size"),
        ({"tag": "x", "limit": "1001"}, 400, "invalid page size"),
        ({"tag": "x", "after": "b"}, 400, "invalid cursor"),
    ],
)
def test_bad_requests_say_why(reg: Reg, params: dict[str, str], status: int, says: str) -> None:
    resp = reg.page("reader", reg.project, **params)
    assert resp.status_code == status and says in resp.json()["error"]["message"], resp.text


def test_only_within_what_the_token_may_read(reg: Reg) -> None:
    resp = reg.page("outsider", reg.project, tag="x")
    assert resp.status_code == 403
    proc = reg.cli("outsider", "ls", reg.project, "--tag", "x", check=False)
    assert proc.returncode == 1 and "no read right" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert reg.page("writer", "nosuchproject", tag="x").status_code == 404
    assert reg.page("reader", "elsewhere", tag="x").status_code == 403


def test_python_api_tagged(reg: Reg, tmp_path: Path) -> None:
    with artfs.Registry(
        reg.server.url, token=reg.tokens["reader"], cache_dir=tmp_path / "cache"
    ) as r:
        assert r.tagged(reg.project, "x") == expected(reg.project)
        assert r.tagged(reg.project, "nothing") == []


async def test_the_memory_twin_pages_like_the_registry(tmp_path: Path) -> None:
    local = LocalRegistryClient(tmp_path / "reg")
    twin = MemoryRegistryClient()
    try:
        commits = [("zz", ["x"]), ("B", ["x"]), ("a", ["x", "y"]), ("a", []), ("a", ["x"])]
        commits += [("a-2", ["x"])]
        for n, (art, tags) in enumerate(commits):
            data = f"{n}\n".encode()
            path = tmp_path / f"blob{n}"
            path.write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            for client in (local, twin):
                await client.create_project("p", exist_ok=True)
                await client.upload_blob(digest, path)
                manifest = Manifest.build([("f", len(data), digest)])
                await client.commit("p", art, manifest, tags=tags, create_type="dataset")
        want = ["p/B:v0", "p/a:v0", "p/a:v2", "p/a-2:v0", "p/zz:v0"]
        for limit in (1, 2, 5, 200):
            for client in (local, twin):
                got = [v async for v in all_tagged(client, "p", "x", limit=limit)]
                assert [v.ref for v in got] == want, (client, limit)
                assert got[1].summary.tags == ("x", "y")
        with pytest.raises(artfs.NotFound):
            await twin.tagged_versions("nope", "x")
        with pytest.raises(artfs.NotFound):
            await local.tagged_versions("nope", "x")
    finally:
        await local.aclose()
        await twin.aclose()
