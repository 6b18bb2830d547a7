"""What a newcomer tripped on (issue 12, "rough edges"), each through the real CLI, a real
server and a real FUSE mount: empty versions, the artifact a failed put left, ``artfs ls``
of an artifact without versions, ``artfs draft`` with several mounts and a bogus
``--state-dir``, a second commit of one draft, the reason of an EINVAL, mounting over
files, and the human and ``--json`` outputs."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest

from artfs.manifest import Manifest
from artfs.registry import Registry
from artfs.registry.blobs import store_bytes
from tests.conftest_server import RunningServer
from tests.e2e import Server, is_mounted, mounted, run_cli
from tests.test_e2e_publish import (  # fixtures: a private runtime dir, a server per test
    commit,
    expect_errno,
    mount_at,
    private_runtime_dir,
    server,
)

__all__ = ["private_runtime_dir", "server"]

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
    pytest.mark.timeout(300),
]

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")


def _src(tmp_path: Path, name: str = "src", data: bytes = b"first\n") -> Path:
    src = tmp_path / name
    src.mkdir(exist_ok=True)
    (src / "f.txt").write_bytes(data)
    return src


# --- empty versions, and the artifact of a failed put --------------------------------------
def test_put_of_an_empty_directory_is_refused_unless_allow_empty(
    server: Server, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("put", "--registry", server.url, str(empty), "p/a", check=False)
    assert r.returncode == 1
    assert "has no files" in r.stderr and "--allow-empty" in r.stderr
    assert run_cli("ls", "--registry", server.url).stdout == ""  # no project, no artifact
    r = run_cli("put", "--registry", server.url, str(empty), "p/a", "--allow-empty")
    assert r.stdout.strip() == "p/a:v0"
    assert "0 files" in r.stderr


def test_a_failed_put_leaves_no_artifact(
    registry_server: RunningServer, unique_project: str, tmp_path: Path
) -> None:
    """Regression: put created the artifact first, so a put failing at its commit (here a
    lineage input that does not exist) left an artifact with 0 versions. Both databases."""
    url, p = registry_server.url, unique_project
    r = run_cli(
        "put",
        "--registry",
        url,
        str(_src(tmp_path)),
        f"{p}/a",
        "--input",
        f"{p}/nope:v0",
        check=False,
    )
    assert r.returncode == 1 and "nope" in r.stderr
    r = run_cli("ls", "--registry", url, f"{p}/a", check=False)
    assert r.returncode == 1 and "not found" in r.stderr
    # The next put creates it, with its first version.
    assert run_cli("put", "--registry", url, str(_src(tmp_path)), f"{p}/a").stdout == f"{p}/a:v0\n"
    assert run_cli("ls", "--registry", url, p).stdout == "a\tdataset\t1 version\n"


def _local_registry(tmp_path: Path) -> Path:
    """A registry directory (the CLI opens it in-process) with an artifact without
    versions (made through the API, as older registries did on a failed put), and an
    artifact whose v1 has v0 as its parent."""
    root = tmp_path / "reg"
    reg = Registry.open(root)
    try:
        reg.create_project("p")
        reg.create_artifact("p", "empty", type="dataset")
        m0 = Manifest.build([("f.txt", 2, store_bytes(reg.blobs, b"a\n"))])
        m1 = Manifest.build([("f.txt", 2, store_bytes(reg.blobs, b"b\n"))])
        reg.commit("p", "a", m0, create_type="model")
        reg.commit("p", "a", m1, parent=0, aliases=["best"])
    finally:
        reg.close()
    return root


def test_ls_of_an_artifact_without_versions_says_so(tmp_path: Path) -> None:
    reg = str(_local_registry(tmp_path))
    r = run_cli("ls", "--registry", reg, "p/empty")
    assert r.stdout == "" and "p/empty has no versions" in r.stderr
    assert json.loads(run_cli("ls", "--registry", reg, "p/empty", "--json").stdout) == []
    assert run_cli("ls", "--registry", reg, "p").stdout.splitlines() == [
        "a\tmodel\t2 versions",
        "empty\tdataset\t0 versions",
    ]


def test_human_and_json_outputs_use_iso_times_and_full_refs(tmp_path: Path) -> None:
    reg = str(_local_registry(tmp_path))
    info = json.loads(run_cli("info", "--registry", reg, "p/a:v1").stdout)
    assert ISO.fullmatch(info["created"]), info["created"]
    assert info["parent"] == "p/a:v0"
    assert json.loads(run_cli("info", "--registry", reg, "p/a:v1", "--json").stdout) == info
    lines = run_cli("ls", "--registry", reg, "p/a").stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["v0", "v1"]
    assert ISO.fullmatch(lines[1].split("\t")[1]) and "\t1 file\t" in lines[1]
    versions = json.loads(run_cli("ls", "--registry", reg, "p/a", "--json").stdout)
    assert [v["ref"] for v in versions] == ["p/a:v0", "p/a:v1"]
    assert versions[1]["aliases"] == ["best", "latest"] and ISO.fullmatch(versions[1]["created"])
    arts = json.loads(run_cli("ls", "--registry", reg, "p", "--json").stdout)
    assert arts[0]["artifact"] == "p/a" and arts[0]["aliases"]["best"] == "p/a:v1"
    assert [p["name"] for p in json.loads(run_cli("ls", "--registry", reg, "--json").stdout)] == [
        "p"
    ]
    files = json.loads(run_cli("ls", "--registry", reg, "p/a:v0", "--json").stdout)
    assert files == [{"path": "f.txt", "size": 2, "sha256": files[0]["sha256"]}]
    moved = run_cli("alias", "set", "--registry", reg, "p/a:v0", "best").stdout
    assert moved == "p/a:best -> p/a:v0\n"  # full references, not "-> v0"
    stats = json.loads(
        run_cli("cache", "stats", "--cache-dir", str(tmp_path / "c"), "--json").stdout
    )
    assert stats["cache"] == str(tmp_path / "c") and stats["complete_blobs"] == 0


# --- drafts: empty, committed twice, made by path -----------------------------------------
def test_commit_of_an_empty_draft_is_refused_then_a_second_commit_names_the_version(
    server: Server, tmp_path: Path
) -> None:
    with mount_at(server, tmp_path, "m") as m:
        (m / "p" / "a").mkdir(parents=True)
        draft = m / "p" / "a" / "run1"
        draft.mkdir()
        r = commit(draft, check=False)
        assert r.returncode == 1 and "has no files" in r.stderr and "--allow-empty" in r.stderr
        assert draft.is_dir()  # the draft is kept, writable again
        (draft / "f.txt").write_bytes(b"x\n")
        assert commit(draft).stdout == "p/a:v0\n"
        r = commit(draft, check=False)  # regression: "No such file or directory"
        assert r.returncode == 1
        assert "already committed, as p/a:v0" in r.stderr, r.stderr
        empty = m / "p" / "a" / "run2"
        empty.mkdir()
        assert commit(empty, "--allow-empty").stdout == "p/a:v1\n"


def test_artfs_draft_takes_the_drafts_path_in_a_mount(server: Server, tmp_path: Path) -> None:
    run_cli("put", "--registry", server.url, str(_src(tmp_path)), "p/a")
    with mount_at(server, tmp_path, "m1") as m1, mount_at(server, tmp_path, "m2") as m2:
        out = run_cli("draft", "p/a:v0", str(m2 / "p" / "a" / "run2"))  # two mounts: no guess
        assert "from p/a:v0 (1 file, no bytes copied)" in out.stdout
        assert (m2 / "p" / "a" / "run2" / "f.txt").read_bytes() == b"first\n"
        assert not (m1 / "p" / "a" / "run2").exists()
        r = run_cli("draft", "p/a:v0", str(m1 / "p" / "b" / "x"), check=False)
        assert r.returncode == 1 and "goes at" in r.stderr


def test_a_bogus_state_dir_is_refused_and_creates_nothing(server: Server, tmp_path: Path) -> None:
    run_cli("put", "--registry", server.url, str(_src(tmp_path)), "p/a")
    bogus = tmp_path / "typo-state"
    r = run_cli(
        "draft", "--registry", server.url, "p/a:v0", "x", "--state-dir", str(bogus), check=False
    )
    assert r.returncode == 1 and "not the state directory of an artfs mount" in r.stderr
    assert not bogus.exists()


# --- the reason of an EINVAL -----------------------------------------------------------------
def test_an_einval_has_its_reason_in_the_log_and_in_artfs_info(
    server: Server, tmp_path: Path
) -> None:
    run_cli("put", "--registry", server.url, str(_src(tmp_path)), "p/a")
    with mount_at(server, tmp_path, "m") as m:
        art = m / "p" / "a"
        expect_errno(errno.EINVAL, lambda: (art / "v9").mkdir())
        refusal = json.loads(run_cli("info", str(m)).stdout)["last_refusal"]
        assert refusal["op"] == "mkdir" and "v9" in refusal["message"]
        assert ISO.fullmatch(refusal["at"])
        r = os.system(f"ln -sfn v7 {art / 'x'} 2>/dev/null")
        assert r != 0 and not os.path.lexists(art / "x")
        refusal = json.loads(run_cli("info", str(m)).stdout)["last_refusal"]
        assert "existing version" in refusal["message"] and "'v7'" in refusal["message"]
        logs = list((tmp_path / "run").rglob("mount-*.log"))
        assert len(logs) == 1
        log = logs[0].read_text()
        assert "mkdir refused:" in log and "not 'v7'" in log


# --- mounting over files ---------------------------------------------------------------------
def test_mount_over_a_non_empty_directory_is_refused_unless_nonempty(
    server: Server, tmp_path: Path
) -> None:
    point = tmp_path / "busy"
    point.mkdir()
    (point / "notes.txt").write_text("mine\n")
    r = run_cli(
        "mount",
        "--registry",
        server.url,
        str(point),
        "--cache-dir",
        str(tmp_path / "c"),
        check=False,
    )
    assert r.returncode == 1 and "not empty" in r.stderr and "--nonempty" in r.stderr
    assert not is_mounted(point)
    with mounted(
        server.url, point, tmp_path / "c", "--nonempty", "--state-dir", str(tmp_path / "s")
    ):
        assert is_mounted(point) and not (point / "notes.txt").exists()
    assert (point / "notes.txt").read_text() == "mine\n"
