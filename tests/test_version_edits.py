"""What changes after a commit (issue 12, items 1, 2 and 5) over a real server with
``--auth on``, on both configurations, through the ``artfs`` CLI (and the raw HTTP answer
where the wire matters): edits with their history, tags, time to live and gc, protected
aliases (admin vs write token), deleting a whole artifact, and identical content to any
live version making no new version. The in-process registry and the mount are tested at
the end of the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from artfs.config import runtime_dir
from artfs.mounting import mount_key

from .backends import SQLITE, RegistrySpec, backend_params, make_spec, release
from .conftest_server import RunningServer, start_spec_server, stop_server
from .e2e import is_mounted, run_cli

pytestmark = pytest.mark.timeout(300)


@dataclass
class Reg:
    spec: RegistrySpec
    server: RunningServer
    tokens: dict[str, str]  # reader, writer, admin: on every project

    def cli(self, who: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(
            *args,
            "--registry",
            self.server.url,
            env={"ARTFS_TOKEN": self.tokens[who]},
            check=check,
        )

    def refused(self, who: str, *args: str) -> str:
        """The one error line of a command that must fail."""
        proc = self.cli(who, *args, check=False)
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        return lines[0]

    def api(self, who: str, method: str, path: str, **kw: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.request(
            method, f"{self.server.url}/v1/projects/{path}", headers=headers, timeout=30, **kw
        )  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=backend_params())
def reg(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reg]:
    root = tmp_path_factory.mktemp("edits")
    spec = make_spec(request.param, root / "data", for_servers=True)
    try:
        store = ["--data", spec.data_dir, *(["--db", spec.db] if spec.db else [])]

        def token(name: str, right: str) -> str:
            return run_cli("token", "create", name, right, "*", *store).stdout.strip()

        tokens = {
            "reader": token("reader", "--read"),
            "writer": token("writer", "--write"),
            "admin": token("admin", "--admin"),
        }
        server = start_spec_server(spec, "--auth", "on")
        try:
            yield Reg(spec, server, tokens)
        finally:
            stop_server(server.proc)
    finally:
        release(spec)


@pytest.fixture
def project() -> str:
    return f"e{uuid.uuid4().hex[:10]}"


def tree(tmp_path: Path, content: str) -> Path:
    """A directory of two files whose bytes are ``content``'s (unique per call site)."""
    root = tmp_path / hashlib.sha256(content.encode()).hexdigest()[:12]
    (root / "sub").mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text(content)
    (root / "sub" / "b.txt").write_text(content * 2)
    return root


def put(reg: Reg, tmp_path: Path, target: str, content: str, *args: str) -> str:
    return reg.cli("writer", "put", str(tree(tmp_path, content)), target, *args).stdout.strip()


def info(reg: Reg, ref: str, *args: str) -> dict[str, object]:
    out = json.loads(reg.cli("reader", "info", ref, *args).stdout)
    assert isinstance(out, dict)
    return out


# --------------------------------------------------------------------------- edits


def test_edits_change_description_and_metadata_never_content_and_are_kept(
    reg: Reg, project: str, tmp_path: Path
) -> None:
    art = f"{project}/model"
    meta = json.dumps({"lr": 0.1, "epochs": 3})
    assert put(reg, tmp_path, art, "weights", "--metadata", meta, "--description", "first") == (
        f"{art}:v0"
    )
    before = info(reg, f"{art}:v0")

    # merge: null removes a key, others are set
    reg.cli("writer", "edit", f"{art}:v0", "--metadata", '{"epochs": null, "acc": 0.9}')
    assert info(reg, f"{art}:v0")["metadata"] == {"lr": 0.1, "acc": 0.9}
    # replace, through an alias, with a description
    reg.cli("writer", "edit", f"{art}:latest", "--metadata", '{"x": 1}', "--replace",
            "--description", "second")  # fmt: skip
    after = info(reg, f"{art}:v0", "--history")
    assert after["metadata"] == {"x": 1} and after["description"] == "second"
    assert after["digest"] == before["digest"] and after["files"] == before["files"]
    history = after["history"]
    assert isinstance(history, list) and len(history) == 2
    assert [h["editor"] for h in history] == ["writer", "writer"]  # the token's name
    assert history[0]["changes"] == {
        "metadata": [{"lr": 0.1, "epochs": 3}, {"lr": 0.1, "acc": 0.9}]
    }
    assert history[1]["changes"]["description"] == ["first", "second"]
    assert history[0]["edited"].endswith("Z")  # ISO 8601
    # the content is what was put
    dest = tmp_path / "got"
    reg.cli("reader", "get", f"{art}:v0", str(dest))
    assert (dest / "a.txt").read_text() == "weights"
    # an edit that changes nothing records nothing
    reg.cli("writer", "edit", f"{art}:v0", "--metadata", '{"x": 1}')
    assert len(reg.cli("reader", "edit", f"{art}:v0", "--history").stdout.splitlines()) == 2

    # the artifact's own description and type
    reg.cli("writer", "edit", art, "--description", "the model", "--type", "model")
    whole = info(reg, art, "--history")["artifact"]
    assert isinstance(whole, dict)
    assert whole["description"] == "the model" and whole["type"] == "model"
    assert whole["history"][0]["changes"] == {
        "description": ["", "the model"],
        "type": ["dataset", "model"],
    }

    # refusals, one line each
    assert "no write right" in reg.refused("reader", "edit", f"{art}:v0", "--description", "x")
    assert "nothing to change" in reg.refused("writer", "edit", f"{art}:v0")
    assert "belongs to the artifact" in reg.refused("writer", "edit", f"{art}:v0", "--type", "x")
    assert "not found" in reg.refused("writer", "edit", f"{art}:v9", "--description", "x")
    # over the wire: PATCH answers the version, 400 for a bad mode
    r = reg.api("writer", "PATCH", f"{project}/artifacts/model/versions/0", json={"mode": "zap"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid"
    r = reg.api(
        "writer",
        "PATCH",
        f"{project}/artifacts/model/versions/0",
        json={"metadata": {"y": 2}, "editor": "ignored-with-a-token"},
    )
    assert r.status_code == 200 and r.json()["metadata"] == {"x": 1, "y": 2}
    hist = reg.api("reader", "GET", f"{project}/artifacts/model/versions/0/history").json()
    assert hist["edits"][-1]["editor"] == "writer"


# --------------------------------------------------------------------------- tags


def test_tags_on_put_added_removed_listed_and_searched(
    reg: Reg, project: str, tmp_path: Path
) -> None:
    art = f"{project}/data"
    put(reg, tmp_path, art, "zero", "--tag", "nightly", "--tag", "exp-1")
    put(reg, tmp_path, art, "one", "--tag", "nightly")
    put(reg, tmp_path, art, "two")
    assert info(reg, f"{art}:v0")["tags"] == ["exp-1", "nightly"]
    assert reg.cli("writer", "tag", "add", f"{art}:v2", "best", "nightly").stdout.strip() == (
        f"{art}:v2\tbest,nightly"
    )
    reg.cli("writer", "tag", "rm", f"{art}:v0", "nightly")

    def listed(tag: str) -> list[str]:
        out = reg.cli("reader", "ls", art, "--tag", tag).stdout.splitlines()
        return [line.split("\t")[0] for line in out]

    assert listed("nightly") == ["v1", "v2"]
    assert listed("exp-1") == ["v0"]
    assert listed("nothing") == []
    assert "tags: best,nightly" in reg.cli("reader", "ls", art).stdout
    version = reg.api("reader", "GET", f"{project}/artifacts/data/versions/2").json()
    assert version["tags"] == ["best", "nightly"]
    assert "invalid tag 'a,b'" in reg.refused("writer", "tag", "add", f"{art}:v0", "a,b")
    assert "no write right" in reg.refused("reader", "tag", "add", f"{art}:v0", "x")


# --------------------------------------------------------------------------- identical content


def test_identical_content_to_any_live_version_makes_none_and_says_which(
    reg: Reg, project: str, tmp_path: Path
) -> None:
    art = f"{project}/ds"
    put(reg, tmp_path, art, "A")
    put(reg, tmp_path, art, "B")
    proc = reg.cli("writer", "put", str(tree(tmp_path, "A")), art, "--alias", "again")
    assert proc.stdout.strip() == f"{art}:v0"
    assert f"identical to {art}:v0, no new version made" in proc.stderr
    assert "--allow-duplicate" in proc.stderr
    assert info(reg, f"{art}:latest")["ref"] == f"{art}:v1"  # latest stays on the newest
    assert info(reg, f"{art}:again")["ref"] == f"{art}:v0"
    # the API says which one matched
    manifest = reg.api("reader", "GET", f"{project}/artifacts/ds/versions/0/manifest").json()
    r = reg.api("writer", "POST", f"{project}/artifacts/ds/versions", json={"manifest": manifest})
    assert r.status_code == 200
    assert r.json()["created"] is False and r.json()["matched"] == f"{art}:v0"
    # --allow-duplicate makes one
    forced = reg.cli("writer", "put", str(tree(tmp_path, "A")), art, "--allow-duplicate")
    assert forced.stdout.strip() == f"{art}:v2"


# --------------------------------------------------------------------------- protected aliases


def test_protected_alias_moves_only_with_an_admin_token(
    reg: Reg, project: str, tmp_path: Path
) -> None:
    art = f"{project}/m"
    put(reg, tmp_path, art, "old")
    put(reg, tmp_path, art, "new", "--alias", "production")
    assert "no admin right" in reg.refused("writer", "alias", "protect", art, "production")
    reg.cli("admin", "alias", "protect", art, "production")
    assert info(reg, art)["artifact"]["protected_aliases"] == ["production"]  # type: ignore[index]

    # every way a write token could move or remove it is refused, with the reason
    for args in (
        ("alias", "set", f"{art}:v0", "production"),
        ("alias", "rm", art, "production"),
        ("put", str(tree(tmp_path, "newer")), art, "--alias", "production"),
        ("delete", f"{art}:v1", "--force"),
        ("delete", art, "--force"),
        ("alias", "unprotect", art, "production"),
    ):
        line = reg.refused("writer", *args)
        assert "is protected" in line or "no admin right" in line, line
    assert [ln.split("\t")[0] for ln in reg.cli("reader", "ls", art).stdout.splitlines()] == [
        "v0",
        "v1",
    ]  # the refused put made no version
    r = reg.api("writer", "PUT", f"{project}/artifacts/m/aliases/production", json={"version": 0})
    assert r.status_code == 403 and r.json()["error"]["code"] == "protected"
    # pointing it where it already points moves nothing: allowed
    reg.cli("writer", "alias", "set", f"{art}:v1", "production")
    # an admin token moves it, and it stays protected
    reg.cli("admin", "alias", "set", f"{art}:v0", "production")
    assert info(reg, f"{art}:production")["ref"] == f"{art}:v0"
    assert "is protected" in reg.refused("writer", "alias", "set", f"{art}:v1", "production")
    reg.cli("admin", "alias", "unprotect", art, "production")
    reg.cli("writer", "alias", "set", f"{art}:v1", "production")
    assert info(reg, f"{art}:production")["ref"] == f"{art}:v1"


# --------------------------------------------------------------------------- deleting an artifact


def test_delete_a_whole_artifact_refused_while_aliases_exist_unless_force(
    reg: Reg, project: str, tmp_path: Path
) -> None:
    art = f"{project}/gone"
    put(reg, tmp_path, art, "g0")
    put(reg, tmp_path, art, "g1", "--alias", "best")
    put(reg, tmp_path, f"{project}/stays", "s0")
    assert "has aliases best" in reg.refused("writer", "delete", art)
    assert reg.cli("writer", "delete", art, "--force").stdout.strip() == (
        f"deleted {art} (2 versions)"
    )
    assert reg.cli("reader", "ls", project).stdout.split("\t")[0] == "stays"
    assert "not found" in reg.refused("reader", "info", art)
    assert reg.api("reader", "GET", f"{project}/artifacts/gone").status_code == 404
    # made again, its numbers go on: a cached v0 of the old one is never served for the new
    assert put(reg, tmp_path, art, "g0") == f"{art}:v2"


# --------------------------------------------------------------------------- retention


def test_expired_versions_without_aliases_are_deleted_by_gc_with_their_blobs(
    reg: Reg, project: str, tmp_path: Path
) -> None:
    art = f"{project}/tmp"
    put(reg, tmp_path, art, "expires-soon", "--ttl", "1s")  # v0: goes
    put(reg, tmp_path, art, "kept-by-none", "--ttl", "1s")  # v1: TTL removed below
    put(reg, tmp_path, art, "held", "--ttl", "1s", "--alias", "keep")  # v2: an alias holds it
    put(reg, tmp_path, art, "latest-only", "--ttl", "1s")  # v3: latest does not hold it
    assert info(reg, f"{art}:v0")["expires"] is not None
    assert "never" in reg.cli("writer", "ttl", f"{art}:v1", "none").stdout
    assert info(reg, f"{art}:v1")["expires"] is None
    assert "invalid time to live" in reg.refused("writer", "ttl", f"{art}:v1", "soon")
    time.sleep(1.2)
    if reg.spec.backend == SQLITE:  # what the operator's command says (changes nothing)
        dry = run_cli("gc", "--data", reg.spec.data_dir, "--grace", "0", "--dry-run").stdout
        assert f"would delete {art}:v0: its time to live passed" in dry
        assert f"{art}:v1" not in dry and f"{art}:v2" not in dry
    gone_sha = hashlib.sha256(b"expires-soon").hexdigest()
    registry = reg.spec.open()
    try:
        report = registry.gc(grace_seconds=0)
        assert [r for r in report.expired if r.startswith(project)] == [f"{art}:v0", f"{art}:v3"]
        assert gone_sha in {sha for sha, _ in report.doomed}
        assert registry.missing_blobs([gone_sha]) == {gone_sha}
    finally:
        registry.close()
    listed = [ln.split("\t")[0] for ln in reg.cli("reader", "ls", art).stdout.splitlines()]
    assert listed == ["v1", "v2"]
    assert info(reg, f"{art}:latest")["ref"] == f"{art}:v2"
    dest = tmp_path / "kept"
    reg.cli("reader", "get", f"{art}:v2", str(dest))
    assert (dest / "a.txt").read_text() == "held"


# --------------------------------------------------------------------------- upgrade


def test_schema_10_upgrades_a_schema_7_registry_in_place(tmp_path: Path) -> None:
    """A registry made before schema 10 keeps its versions and aliases and gains tags,
    expiry, edits, protection and deleted artifacts (the same idempotent DDL)."""
    import sqlite3

    from artfs.manifest import Manifest
    from artfs.registry import Registry
    from artfs.registry.sqlbase import SCHEMA_VERSION

    reg = Registry.open(tmp_path)
    blob = tmp_path / "blob"
    blob.write_bytes(b"old")
    sha = hashlib.sha256(b"old").hexdigest()
    reg.put_file(sha, blob)
    reg.create_project("p")
    reg.create_artifact("p", "a", type="dataset")
    reg.commit("p", "a", Manifest.build([("f", 3, sha)]), aliases=["best"])
    reg.close()
    db = sqlite3.connect(tmp_path / "registry.db")
    for table in ("version_tags", "version_expiry", "meta_edits", "protected_aliases"):
        db.execute(f"DROP TABLE {table}")
    db.execute("DROP TABLE deleted_artifacts")
    db.execute("DROP INDEX versions_by_digest")
    db.execute("PRAGMA user_version=7")
    db.commit()
    db.close()
    reg = Registry.open(tmp_path)
    try:
        assert reg.get_version("p", "a", "best").number == 0
        assert reg.change_tags("p", "a", 0, add=["kept"]) == ("kept",)
        reg.protect_alias("p", "a", "best")
        assert reg.get_artifact("p", "a").protected == ("best",)
        assert reg.commit("p", "a", Manifest.build([("f", 3, sha)])).version.number == 0
    finally:
        reg.close()
    db = sqlite3.connect(tmp_path / "registry.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 10
    db.close()


# --------------------------------------------------------------------------- local registry


def test_local_registry_cli_edits_tags_ttl_and_protection(tmp_path: Path) -> None:
    """The in-process client (a registry directory) is an admin: protection never stops it,
    but it is recorded and shown."""
    local = str(tmp_path / "registry")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--registry", local)

    cli("put", str(tree(tmp_path, "L0")), "p/a", "--tag", "x", "--ttl", "30d", "--alias", "prod")
    cli("edit", "p/a:v0", "--metadata", '{"k": 1}')
    cli("tag", "add", "p/a:v0", "y")
    cli("alias", "protect", "p/a", "prod")
    facts = json.loads(cli("info", "p/a:v0", "--history").stdout)
    assert facts["metadata"] == {"k": 1} and facts["tags"] == ["x", "y"]
    assert facts["expires"].endswith("Z") and len(facts["history"]) == 1
    assert facts["artifact"]["protected_aliases"] == ["prod"]
    assert cli("put", str(tree(tmp_path, "L0")), "p/a").stdout.strip() == "p/a:v0"
    cli("put", str(tree(tmp_path, "L1")), "p/a", "--alias", "prod")  # admin: moves it
    assert json.loads(cli("info", "p/a:prod").stdout)["ref"] == "p/a:v1"
    assert "deleted p/a (2 versions)" in cli("delete", "p/a", "--force").stdout


# --------------------------------------------------------------------------- the mount

needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def _xattr(path: Path, name: str) -> str:
    return os.getxattr(path, f"user.artfs.{name}").decode()


@needs_fuse
def test_mount_shows_edits_after_the_listing_ttl_and_refuses_moving_a_protected_alias(
    reg: Reg, project: str, tmp_path: Path
) -> None:
    if reg.spec.backend != SQLITE:
        pytest.skip("one configuration is enough: the mount sees the same API answers")
    art = f"{project}/w"
    put(reg, tmp_path, art, "m0", "--tag", "nightly", "--metadata", '{"a": 1}')
    put(reg, tmp_path, art, "m1", "--alias", "production")
    reg.cli("admin", "alias", "protect", art, "production")
    point = tmp_path / "mnt"
    point.mkdir()
    run_cli(
        "mount", "--registry", reg.server.url, str(point), "--cache-dir", str(tmp_path / "cache"),
        "--xattrs", "--ttl", "0.5", "--timeout", "5",
        env={"ARTFS_TOKEN": reg.tokens["writer"]},
    )  # fmt: skip
    try:
        v0 = point / project / "w" / "v0"
        assert _xattr(v0, "tags") == "nightly"
        assert json.loads(_xattr(v0, "metadata")) == {"a": 1}
        assert "user.artfs.tags" in os.listxattr(v0)
        reg.cli("writer", "edit", f"{art}:v0", "--metadata", '{"b": 2}', "--description", "d")
        reg.cli("writer", "tag", "add", f"{art}:v0", "best")
        deadline = time.monotonic() + 10
        while _xattr(v0, "tags") != "best,nightly" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _xattr(v0, "tags") == "best,nightly"
        assert json.loads(_xattr(v0, "metadata")) == {"a": 1, "b": 2}
        assert _xattr(v0, "description") == "d"
        assert (v0 / "a.txt").read_text() == "m0"

        link = point / project / "w" / "production"
        proc = subprocess.run(
            ["ln", "-sfn", "v0", str(link)], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode != 0 and "Operation not permitted" in proc.stderr
        assert os.readlink(link) == "v1"
        aliases = reg.api("reader", "GET", f"{project}/artifacts/w").json()["aliases"]
        assert aliases == {"latest": 1, "production": 1}  # no temporary link reached it
        # removing it is refused the same way
        with pytest.raises(PermissionError):
            os.unlink(link)

        # artfs commit of a draft takes --tag and --ttl; identical content names its match
        draft = point / project / "w" / "run1"
        draft.mkdir()
        (draft / "new.txt").write_text("from a draft")
        env = {"ARTFS_TOKEN": reg.tokens["writer"]}
        ref = run_cli("commit", str(draft), "--tag", "drafted", "--ttl", "2d", env=env)
        assert ref.stdout.strip() == f"{art}:v2"
        facts = info(reg, f"{art}:v2")
        assert facts["tags"] == ["drafted"] and facts["expires"] is not None
        again = point / project / "w" / "run2"
        again.mkdir()
        (again / "a.txt").write_text("m0")
        (again / "sub").mkdir()
        (again / "sub" / "b.txt").write_text("m0m0")
        same = run_cli("commit", str(again), env=env)
        assert same.stdout.strip() == f"{art}:v0"
        assert f"identical to {art}:v0" in same.stderr
    finally:
        run_cli("umount", str(point), check=False)
        if is_mounted(point):
            subprocess.run(["fusermount3", "-u", "-z", str(point)], check=False)
    log = runtime_dir() / f"mount-{mount_key(str(point.resolve()))}.log"
    assert "is protected: only an admin token may move it" in log.read_text(errors="replace")
