"""End to end: what versions keep besides bytes (issue 12 item 7) and the tools that write
drafts (``cp -a``, ``tar xf``, ``rsync -a``), through a real mount of a real server, in
both registry configurations; then read back through the mount and ``artfs get``.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import struct
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.backends import backend_params
from tests.e2e import Server, backend_server, named_mount, run_cli

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
    pytest.mark.timeout(300),
]


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.setenv("ARTFS_CACHE_DIR", str(tmp_path / "cli-cache"))


@pytest.fixture(params=backend_params())
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with backend_server(request.param, tmp_path / "registry") as s:
        yield s


def make_source(root: Path) -> None:
    """A tree with everything a version now keeps: an executable, a file symlink, a
    directory symlink, a link through a linked directory, and empty directories."""
    (root / "bin").mkdir(parents=True)
    (root / "data" / "sub").mkdir(parents=True)
    (root / "logs" / "empty").mkdir(parents=True)
    (root / "cache").mkdir()
    run = root / "bin" / "run.sh"
    run.write_text("#!/bin/sh\necho ran\n")
    run.chmod(0o755)
    (root / "data" / "a.txt").write_text("alpha\n")
    (root / "data" / "sub" / "b.txt").write_text("beta\n")
    os.symlink("a.txt", root / "data" / "current")
    os.symlink("data/sub", root / "latest-sub")
    os.symlink("../latest-sub/b.txt", root / "bin" / "b-via-link")


def check_shape(root: Path) -> None:
    """``root`` holds make_source's tree, modes, links and empty dirs included."""
    run = root / "bin" / "run.sh"
    assert run.stat().st_mode & 0o111, oct(run.stat().st_mode)
    assert subprocess.run([str(run)], capture_output=True, text=True).stdout == "ran\n"
    assert not (root / "data" / "a.txt").stat().st_mode & 0o111
    assert os.readlink(root / "data" / "current") == "a.txt"
    assert os.readlink(root / "latest-sub") == "data/sub"
    assert os.readlink(root / "bin" / "b-via-link") == "../latest-sub/b.txt"
    assert (root / "data" / "current").read_text() == "alpha\n"
    assert (root / "bin" / "b-via-link").read_text() == "beta\n"
    for empty in ("logs/empty", "cache"):
        assert (root / empty).is_dir() and not any((root / empty).iterdir()), empty


def mount(server: Server, tmp_path: Path, name: str) -> AbstractContextManager[Path]:
    return named_mount(server.url, tmp_path, name)


def test_cp_tar_rsync_into_drafts_keep_modes_links_and_empty_dirs(
    server: Server, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_source(src)
    archive = tmp_path / "src.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(src), "."], check=True)
    with mount(server, tmp_path, "m") as m:
        (m / "shape").mkdir()
        art = m / "shape" / "tree"
        art.mkdir()
        for draft, cmd in (
            ("by-cp", ["cp", "-a", f"{src}/.", str(art / "by-cp")]),
            ("by-tar", ["tar", "xf", str(archive), "-C", str(art / "by-tar")]),
            ("by-rsync", ["rsync", "-a", f"{src}/", str(art / "by-rsync")]),
        ):
            (art / draft).mkdir()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            assert proc.returncode == 0, (draft, proc.stderr)
            check_shape(art / draft)
        # what cp -a tried: an ACL is "not supported" (ENOTSUP), not "not permitted" (EPERM,
        # which made cp -a exit 1), and not ENOSYS, after which the kernel would refuse
        # every setxattr of the mount, the commit's user.artfs.commit included
        acl = struct.pack("<I", 2) + b"".join(  # user::rw- group::r-- other::r--
            struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in ((1, 6), (4, 4), (32, 4))
        )
        with pytest.raises(OSError) as e:
            os.setxattr(art / "by-cp" / "data" / "a.txt", "system.posix_acl_access", acl)
        assert e.value.errno == errno.EOPNOTSUPP
        run_cli("commit", str(art / "by-cp"))
        for draft in ("by-tar", "by-rsync"):  # the same tree: the same version
            proc = run_cli("commit", str(art / draft))
            assert "shape/tree:v0" in proc.stdout + proc.stderr, proc.stderr
        version = art / "v0"
        check_shape(version)
        assert stat.S_IMODE((version / "bin" / "run.sh").stat().st_mode) == 0o555
        assert stat.S_IMODE((version / "data" / "a.txt").stat().st_mode) == 0o444
    with mount(server, tmp_path, "other") as m2:  # a fresh mount: from the manifest alone
        check_shape(m2 / "shape" / "tree" / "v0")
    out = tmp_path / "got"
    run_cli("get", "--registry", server.url, "shape/tree:v0", str(out))
    check_shape(out)
    assert run_cli("verify", "--registry", server.url, str(out), "shape/tree:v0").returncode == 0
    # a draft made from the version inherits all of it, and commits it unchanged
    with mount(server, tmp_path, "m") as m:
        draft = m / "shape" / "tree" / "again"
        run_cli(
            "draft",
            "--registry",
            server.url,
            "--state-dir",
            str(tmp_path / "m-state"),
            "shape/tree:v0",
            "again",
        )
        check_shape(draft)
        proc = run_cli("commit", str(draft))
        assert "shape/tree:v0" in proc.stdout + proc.stderr


def test_a_symlink_leaving_the_version_is_refused_at_commit(server: Server, tmp_path: Path) -> None:
    with mount(server, tmp_path, "m") as m:
        (m / "p").mkdir()
        (m / "p" / "a").mkdir()
        draft = m / "p" / "a" / "d"
        draft.mkdir()
        (draft / "x.txt").write_text("x\n")
        (draft / "sub").mkdir()
        os.symlink("../../v0/secret", draft / "sub" / "escape")
        proc = run_cli("commit", str(draft), check=False)
        assert proc.returncode != 0
        assert "'sub/escape' -> '../../v0/secret' points outside the version" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        os.unlink(draft / "sub" / "escape")
        os.symlink("/etc/passwd", draft / "abs")
        proc = run_cli("commit", str(draft), check=False)
        assert proc.returncode != 0 and "is absolute" in proc.stderr
        os.unlink(draft / "abs")
        os.symlink("../x.txt", draft / "sub" / "inside")
        run_cli("commit", str(draft))
        assert (m / "p" / "a" / "v0" / "sub" / "inside").read_text() == "x\n"


def test_rmdir_of_an_artifact_made_by_mkdir_and_never_committed(
    server: Server, tmp_path: Path
) -> None:
    with mount(server, tmp_path, "m") as m:
        (m / "p").mkdir()
        (m / "p" / "mistake").mkdir()
        assert "mistake" in os.listdir(m / "p")
        os.rmdir(m / "p" / "mistake")
        assert "mistake" not in os.listdir(m / "p")
        (m / "p" / "mistake").mkdir()  # the name can be made again at once
        (m / "p" / "mistake" / "d").mkdir()
        with pytest.raises(OSError) as e:
            os.rmdir(m / "p" / "mistake")
        assert e.value.errno == 39  # ENOTEMPTY: it holds a draft
        os.rmdir(m / "p" / "mistake" / "d")
        os.rmdir(m / "p" / "mistake")
        assert "mistake" not in os.listdir(m / "p")
        os.rmdir(m / "p")  # never committed to: local too (tests/test_local_projects.py)
        assert "p" not in os.listdir(m)


def test_put_symlink_policies_and_get_path_merge_link_verify(
    server: Server, tmp_path: Path
) -> None:
    reg = ("--registry", server.url)
    src = tmp_path / "src"
    make_source(src)
    run_cli("put", *reg, str(src), "p/keep")
    os.symlink("/etc/hostname", src / "outside")
    proc = run_cli("put", *reg, str(src), "p/bad", check=False)
    assert proc.returncode == 1 and "'outside' -> '/etc/hostname' is absolute" in proc.stderr
    assert "--symlinks=follow" in proc.stderr
    run_cli("put", *reg, "--symlinks=skip", str(src), "p/skip")
    run_cli("put", *reg, "--symlinks=follow", str(src), "p/follow")
    skip, follow = tmp_path / "skip", tmp_path / "follow"
    run_cli("get", *reg, "p/skip:v0", str(skip))
    run_cli("get", *reg, "p/follow:v0", str(follow))
    assert not any(p.is_symlink() for p in skip.rglob("*"))
    assert not any(p.is_symlink() for p in follow.rglob("*"))
    assert (follow / "outside").read_bytes() == Path("/etc/hostname").read_bytes()
    assert (follow / "latest-sub" / "b.txt").read_text() == "beta\n"
    os.unlink(src / "outside")

    # one file, and a subtree
    one = tmp_path / "run.sh"
    run_cli("get", *reg, "p/keep:v0/bin/run.sh", str(one))
    assert one.read_text().startswith("#!/bin/sh") and one.stat().st_mode & 0o100
    sub = tmp_path / "sub"
    run_cli("get", *reg, "p/keep:v0/data", str(sub))
    assert sorted(os.listdir(sub)) == ["a.txt", "current", "sub"]
    assert run_cli("verify", *reg, str(sub), "p/keep:v0/data").returncode == 0

    # into a non-empty directory: refused, then --merge keeps what is there
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("mine\n")
    (dest / "data").mkdir()
    (dest / "data" / "a.txt").write_text("stale\n")
    proc = run_cli("get", *reg, "p/keep:v0", str(dest), check=False)
    assert proc.returncode == 1 and "--merge" in proc.stderr
    assert (dest / "data" / "a.txt").read_text() == "stale\n"
    run_cli("get", *reg, "--merge", "p/keep:v0", str(dest))
    assert (dest / "mine.txt").read_text() == "mine\n"
    assert (dest / "data" / "a.txt").read_text() == "alpha\n"
    proc = run_cli("verify", *reg, str(dest), "p/keep:v0", check=False)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == ["extra mine.txt"], proc.stdout
    # what verify reports: missing, extra, changed
    (dest / "mine.txt").unlink()
    (dest / "data" / "sub" / "b.txt").unlink()
    (dest / "bin" / "run.sh").chmod(0o644)
    (dest / "data" / "a.txt").write_text("ALPHA\n")
    proc = run_cli("verify", *reg, str(dest), "p/keep:v0", check=False)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "missing data/sub/b.txt",
        "changed bin/run.sh: expected executable",
        "changed data/a.txt: contents differ",
    ], proc.stdout

    # --link: hard links to the cache's read-only files (this filesystem has no reflinks),
    # kept out of eviction while they exist
    cache = tmp_path / "link-cache"
    linked = tmp_path / "linked"
    proc = run_cli("get", *reg, "--cache-dir", str(cache), "--link", "p/keep:v0", str(linked))
    check_shape(linked)
    a = linked / "data" / "a.txt"
    if "1 reflinked" in proc.stderr or "2 reflinked" in proc.stderr:
        pytest.skip("this filesystem reflinks: the hard-link path is not taken")
    assert "hard-linked read-only" in proc.stderr
    assert a.stat().st_nlink == 2 and stat.S_IMODE(a.stat().st_mode) == 0o444
    assert (linked / "bin" / "run.sh").stat().st_nlink == 1  # executables are copied
    run_cli("cache", "prune", "--cache-dir", str(cache), "--to", "0")
    assert a.stat().st_nlink == 2, "a linked blob was evicted"
    shutil.rmtree(linked)
    run_cli("cache", "prune", "--cache-dir", str(cache), "--to", "0")
    assert not list((cache / "v1" / "blobs").rglob("*")) or all(
        p.is_dir() for p in (cache / "v1" / "blobs").rglob("*")
    )


def test_python_api_put_download_verify_keep_the_shape(server: Server, tmp_path: Path) -> None:
    import artfs

    src = tmp_path / "src"
    make_source(src)
    with artfs.Registry(server.url, cache_dir=tmp_path / "api-cache") as reg:
        v = reg.put(src, "api/shape")
        m = v.manifest()
        assert m.executable == {"bin/run.sh"} and m.dirs == ("cache", "logs/empty")
        assert m.symlinks["latest-sub"] == "data/sub"
        out = v.download(tmp_path / "out")
        check_shape(out)
        v.verify(out)
        os.unlink(out / "latest-sub")
        (out / "cache").rmdir()
        with pytest.raises(artfs.IntegrityError, match="missing cache/; missing latest-sub"):
            v.verify(out)
        # a draft from it keeps what it does not change
        draft = reg.draft("api/shape", v)
        (tmp_path / "new.sh").write_text("#!/bin/sh\n")
        (tmp_path / "new.sh").chmod(0o700)
        draft.add_file(tmp_path / "new.sh", "bin/new.sh")
        draft.remove("data/current")
        m2 = draft.commit().manifest()
        assert m2.executable == {"bin/run.sh", "bin/new.sh"}
        assert "data/current" not in m2.symlinks and m2.symlinks["latest-sub"] == "data/sub"
        assert m2.dirs == m.dirs
        os.symlink("/etc/hostname", src / "outside")
        with pytest.raises(artfs.InvalidInput, match="is absolute"):
            reg.put(src, "api/shape")
        assert reg.put(src, "api/shape", symlinks="skip").number == 2
