"""End to end: a real ``artfs serve`` process, versions published with the CLI, real FUSE mounts."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.backends import backend_params
from tests.e2e import Server, backend_server, is_mounted, mounted, run_cli

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")

LONG = "L" * 251 + ".bin"  # a 255-byte name


def tree_files() -> dict[str, bytes]:
    rng = random.Random(7)
    return {
        "empty.txt": b"",
        "a/b/c/d/e/f/g/h/i/deep.txt": b"deep\n",
        "with space/file name.txt": b"spaces ok\n",
        "données/日本語.txt": "unicode ✓\n".encode(),
        f"long/{LONG}": rng.randbytes(1000),
        "medium.bin": rng.randbytes(3 * 1024 * 1024 + 17),
        "big.bin": rng.randbytes(40 * 1024 * 1024 + 5),
        "nested/empty-too": b"",
    }


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


@pytest.fixture(params=backend_params())
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A real ``artfs serve``: SQLite + local blobs, or PostgreSQL + S3 (presigned reads)."""
    with backend_server(request.param, tmp_path / "registry") as s:
        yield s


@pytest.fixture
def local_server(tmp_path: Path) -> Iterator[Server]:
    """SQLite + local blobs only: for tests that count blob bytes at the server's data port
    (with S3 the bytes go straight from the store and the server never sees them)."""
    s = Server(tmp_path / "registry")
    s.start()
    yield s
    s.stop()


def publish_tree(server: Server, tmp_path: Path) -> dict[str, bytes]:
    files = tree_files()
    write_tree(tmp_path / "src", files)
    out = run_cli(
        "put",
        str(tmp_path / "src"),
        "proj/data",
        "--registry",
        server.url,
        "--metadata",
        '{"epochs": 3}',
        "--description",
        "first",
    )
    assert out.stdout.strip() == "proj/data:v0"
    return files


@pytest.fixture
def published(server: Server, tmp_path: Path) -> dict[str, bytes]:
    return publish_tree(server, tmp_path)


@pytest.fixture
def published_local(local_server: Server, tmp_path: Path) -> dict[str, bytes]:
    return publish_tree(local_server, tmp_path)


def disk_usage(root: Path) -> int:
    """Bytes allocated under ``root``; files the daemon renames or evicts meanwhile are skipped."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_every_file_byte_exact_and_layout(
    server: Server, published: dict[str, bytes], tmp_path: Path
) -> None:
    with mounted(server.url, tmp_path / "mnt", tmp_path / "cache") as mnt:
        version = mnt / "proj" / "data" / "v0"
        assert sorted(os.listdir(mnt)) == ["proj"]
        assert sorted(os.listdir(mnt / "proj" / "data")) == ["latest", "v0"]
        assert os.readlink(mnt / "proj" / "data" / "latest") == "v0"
        seen = {str(p.relative_to(version)) for p in version.rglob("*") if p.is_file()}
        assert seen == set(published)
        for rel, data in published.items():
            st = os.stat(version / rel)
            assert st.st_size == len(data)
            assert stat.S_IMODE(st.st_mode) == 0o444
            assert read(version / rel) == data, rel
            assert read(mnt / "proj" / "data" / "latest" / rel) == data
        assert stat.S_IMODE(os.stat(version / "a" / "b").st_mode) == 0o555


def test_version_trees_are_read_only(
    server: Server, published: dict[str, bytes], tmp_path: Path
) -> None:
    with mounted(server.url, tmp_path / "mnt", tmp_path / "cache") as mnt:
        v0 = mnt / "proj" / "data" / "v0"
        attempts = [
            lambda: open(v0 / "empty.txt", "wb"),  # noqa: SIM115
            lambda: open(v0 / "new.txt", "wb"),  # noqa: SIM115
            lambda: os.mkdir(v0 / "newdir"),
            lambda: os.unlink(v0 / "empty.txt"),
            lambda: os.rmdir(v0 / "nested"),
            lambda: os.rename(v0 / "empty.txt", v0 / "moved.txt"),
            lambda: os.truncate(v0 / "medium.bin", 0),
            lambda: os.chmod(v0 / "empty.txt", 0o644),
            lambda: os.symlink("empty.txt", v0 / "link"),
        ]
        for attempt in attempts:
            with pytest.raises(OSError) as info:
                attempt()
            assert info.value.errno == errno.EROFS, attempt


def test_aliases_are_links_and_move_within_ttl(
    server: Server, published: dict[str, bytes], tmp_path: Path
) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "only.txt").write_bytes(b"second version\n")
    assert (
        run_cli(
            "put", str(tmp_path / "v1"), "proj/data", "--registry", server.url, "--alias", "best"
        ).stdout.strip()
        == "proj/data:v1"
    )
    with mounted(server.url, tmp_path / "mnt", tmp_path / "cache", "--ttl", "1") as mnt:
        art = mnt / "proj" / "data"
        assert os.readlink(art / "latest") == "v1"
        assert os.readlink(art / "best") == "v1"
        assert read(art / "best" / "only.txt") == b"second version\n"
        held = open(art / "best" / "only.txt", "rb")  # noqa: SIM115
        run_cli("alias", "set", "proj/data:v0", "best", "--registry", server.url)
        deadline = time.monotonic() + 10
        while os.readlink(art / "best") != "v0":
            assert time.monotonic() < deadline, "alias move not seen within the TTL"
            time.sleep(0.2)
        assert read(art / "best" / "empty.txt") == b""
        assert held.read() == b"second version\n"  # opened through the old target: keeps reading it
        held.close()


def test_xattrs(server: Server, published: dict[str, bytes], tmp_path: Path) -> None:
    with mounted(server.url, tmp_path / "mnt", tmp_path / "cache", "--xattrs") as mnt:
        v0 = mnt / "proj" / "data" / "v0"
        assert os.getxattr(v0, "user.artfs.ref") == b"proj/data:v0"
        assert json.loads(os.getxattr(v0, "user.artfs.metadata")) == {"epochs": 3}
        assert os.getxattr(v0, "user.artfs.description") == b"first"
        assert os.getxattr(v0, "user.artfs.type") == b"dataset"
        assert b"latest" in os.getxattr(v0, "user.artfs.aliases")
        want = hashlib.sha256(published["medium.bin"]).hexdigest().encode()
        assert os.getxattr(v0 / "medium.bin", "user.artfs.sha256") == want
        assert int(os.getxattr(v0 / "medium.bin", "user.artfs.cached")) == 0
        read(v0 / "medium.bin")
        assert int(os.getxattr(v0 / "medium.bin", "user.artfs.cached")) == len(
            published["medium.bin"]
        )
        assert "user.artfs.sha256" in os.listxattr(v0 / "medium.bin")
        info = json.loads(
            run_cli("info", str(v0 / "medium.bin"), "--cache-dir", str(tmp_path / "cache")).stdout
        )
        assert info["sha256"] == want.decode()


def test_partial_read_moves_about_the_bytes_needed(
    local_server: Server, published_local: dict[str, bytes], tmp_path: Path
) -> None:
    server, published = local_server, published_local  # counts bytes at the data port
    big = published["big.bin"]
    with mounted(server.url, tmp_path / "mnt", tmp_path / "cache") as mnt:
        before = server.stats()["blob_bytes_sent"]
        with open(mnt / "proj" / "data" / "v0" / "big.bin", "rb") as f:
            f.seek(20 * 1024 * 1024)
            chunk = f.read(1024 * 1024)
        assert chunk == big[20 * 1024 * 1024 : 21 * 1024 * 1024]
        moved = server.stats()["blob_bytes_sent"] - before
        assert 1024 * 1024 <= moved <= 6 * 1024 * 1024, moved  # a 40 MiB file; about 1 MiB asked


def test_random_fill_completes_a_file_sampled_at_random(
    server: Server, published: dict[str, bytes], tmp_path: Path
) -> None:
    """``--random-fill``: a file sampled at random offsets (a token array a loader draws
    batches from) is fetched whole in the background while the samples are read; without
    the option the same samples move only their own blocks."""
    big = published["big.bin"]
    rng = random.Random(21)
    offsets = [rng.randrange(0, len(big) - 4096) for _ in range(40)]

    def sample(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            for off in offsets:
                assert os.pread(fd, 4096, off) == big[off : off + 4096]
        finally:
            os.close(fd)

    def cached(path: Path, cache: Path) -> int:
        return int(
            json.loads(run_cli("info", str(path), "--cache-dir", str(cache)).stdout)["cached"]
        )

    for args, whole in (((), False), (("--random-fill", "8"), True)):
        cache = tmp_path / f"cache{len(args)}"
        with mounted(server.url, tmp_path / "mnt", cache, *args) as mnt:
            path = mnt / "proj" / "data" / "v0" / "big.bin"
            sample(path)
            if whole:
                deadline = time.monotonic() + 60
                while cached(path, cache) < len(big) and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert cached(path, cache) == len(big)
                assert read(path) == big
            else:
                time.sleep(0.5)
                assert cached(path, cache) <= len(offsets) * 2 * 128 * 1024


def test_cache_survives_remount_with_server_stopped(
    server: Server, published: dict[str, bytes], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with mounted(server.url, tmp_path / "mnt", cache) as mnt:
        v0 = mnt / "proj" / "data" / "v0"
        for rel in published:
            if rel != "big.bin":
                assert read(v0 / rel) == published[rel]
    server.stop()
    with mounted(server.url, tmp_path / "mnt", cache, "--timeout", "2") as mnt:
        v0 = mnt / "proj" / "data" / "v0"
        assert os.readlink(mnt / "proj" / "data" / "latest") == "v0"
        for rel in published:
            if rel != "big.bin":
                assert read(v0 / rel) == published[rel]
        start = time.monotonic()
        with pytest.raises(OSError) as info:
            read(v0 / "big.bin")
        assert info.value.errno == errno.EIO
        assert time.monotonic() - start < 30
        assert read(v0 / "medium.bin") == published["medium.bin"]  # the mount is still up


def test_eviction_under_small_cache_size(server: Server, tmp_path: Path) -> None:
    rng = random.Random(3)
    files = {f"f{i}.bin": rng.randbytes(8 * 1024 * 1024) for i in range(5)}
    write_tree(tmp_path / "src", files)
    run_cli("put", str(tmp_path / "src"), "proj/many", "--registry", server.url)
    cache = tmp_path / "cache"
    with mounted(server.url, tmp_path / "mnt", cache, "--cache-size", "20M") as mnt:
        for rel, data in files.items():
            assert read(mnt / "proj" / "many" / "v0" / rel) == data
            held = disk_usage(cache)
            # The kernel sends RELEASE asynchronously after close(): the previous blob may
            # still be open (pinned) while this one is fetched, so allow one blob of slack.
            assert held <= (20 + 8 + 1) * 1024 * 1024, held
        for rel, data in files.items():  # evicted blobs come back byte-exact
            assert read(mnt / "proj" / "many" / "v0" / rel) == data


def test_two_mounts_share_one_cache(
    local_server: Server, published_local: dict[str, bytes], tmp_path: Path
) -> None:
    server, published = local_server, published_local  # counts bytes at the data port
    cache = tmp_path / "cache"
    big = published["big.bin"]
    with (
        mounted(server.url, tmp_path / "m1", cache) as m1,
        mounted(server.url, tmp_path / "m2", cache) as m2,
    ):
        before = server.stats()["blob_bytes_sent"]
        results: dict[str, bytes] = {}

        def reader(name: str, root: Path) -> None:
            results[name] = read(root / "proj" / "data" / "v0" / "big.bin")

        threads = [threading.Thread(target=reader, args=(n, r)) for n, r in (("a", m1), ("b", m2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert results["a"] == big and results["b"] == big
        moved = server.stats()["blob_bytes_sent"] - before
        assert moved <= len(big) * 1.15, (
            f"{moved} bytes moved for a {len(big)}-byte blob read by two mounts"
        )


def test_large_version_lists_with_bounded_requests(server: Server, tmp_path: Path) -> None:
    blob = b"tiny\n"
    sha = hashlib.sha256(blob).hexdigest()
    base = server.url + "/v1"
    httpx.post(base + "/projects", json={"name": "big"}).raise_for_status()
    httpx.post(
        base + "/projects/big/artifacts", json={"name": "tree", "type": "dataset"}
    ).raise_for_status()
    httpx.put(f"{base}/blobs/{sha}", content=blob).raise_for_status()
    files = [[f"d{i // 1000:03d}/f{i:06d}.txt", len(blob), sha] for i in range(100_000)]
    r = httpx.post(
        base + "/projects/big/artifacts/tree/versions",
        json={"manifest": {"files": files}},
        timeout=120,
    )
    r.raise_for_status()
    with mounted(server.url, tmp_path / "mnt", tmp_path / "cache") as mnt:
        before = server.stats()["requests"]
        out = subprocess.run(
            ["find", str(mnt / "big" / "tree" / "v0"), "-type", "f", "-printf", "%s\n"],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        sizes = out.stdout.split()
        assert len(sizes) == 100_000 and set(sizes) == {str(len(blob))}
        subprocess.run(
            ["ls", "-lR", str(mnt / "big" / "tree" / "v0")],
            capture_output=True,
            check=True,
            timeout=300,
        )
        assert server.stats()["requests"] - before <= 20


def test_get_through_shared_cache_and_offline(
    local_server: Server, published_local: dict[str, bytes], tmp_path: Path
) -> None:
    server, published = local_server, published_local  # counts bytes at the data port
    cache = tmp_path / "cache"
    run_cli(
        "get",
        "proj/data",
        str(tmp_path / "out"),
        "--registry",
        server.url,
        "--cache-dir",
        str(cache),
    )
    for rel, data in published.items():
        assert read(tmp_path / "out" / rel) == data
    before = server.stats()["blob_bytes_sent"]
    with mounted(server.url, tmp_path / "mnt", cache) as mnt:
        assert read(mnt / "proj" / "data" / "v0" / "big.bin") == published["big.bin"]
    assert server.stats()["blob_bytes_sent"] == before  # the mount found everything in the cache


def test_cli_errors_are_one_clear_line(server: Server, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    bad = run_cli(
        "put", str(tmp_path / "f.txt"), "proj/../etc", "--registry", server.url, check=False
    )
    assert (
        bad.returncode != 0
        and len(bad.stderr.strip().splitlines()) == 1
        and "invalid" in bad.stderr
    )
    dead = run_cli("ls", "--registry", "http://127.0.0.1:9", "--timeout", "2", check=False)
    assert dead.returncode != 0 and len(dead.stderr.strip().splitlines()) == 1
    missing = run_cli("ls", "nope/nothing", "--registry", server.url, check=False)
    assert missing.returncode != 0 and "not found" in missing.stderr


def test_killed_daemon_leaves_clear_error_and_remount_works(
    server: Server, published: dict[str, bytes], tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    cache = tmp_path / "cache"
    with mounted(server.url, mnt, cache):
        pids = subprocess.run(
            ["pgrep", "-f", f"artfs.cli mount.*{mnt}"], capture_output=True, text=True
        ).stdout
        for pid in pids.split():
            os.kill(int(pid), 9)
        time.sleep(0.5)
        with pytest.raises(OSError) as info:
            os.listdir(mnt)
        assert info.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        run_cli("umount", str(mnt))
        assert not is_mounted(mnt)
    with mounted(server.url, mnt, cache) as again:
        assert read(again / "proj" / "data" / "v0" / "medium.bin") == published["medium.bin"]


def test_local_registry_directory_without_server(tmp_path: Path) -> None:
    files = {"a.txt": b"alpha\n", "sub/b.bin": random.Random(1).randbytes(300_000)}
    write_tree(tmp_path / "src", files)
    registry = str(tmp_path / "localreg")
    assert (
        run_cli("put", str(tmp_path / "src"), "p/a", "--registry", registry).stdout.strip()
        == "p/a:v0"
    )
    assert "v0" in run_cli("ls", "p/a", "--registry", registry).stdout
    with mounted(registry, tmp_path / "mnt", tmp_path / "cache") as mnt:
        for rel, data in files.items():
            assert read(mnt / "p" / "a" / "latest" / rel) == data


def test_prefetch_fills_the_cache_ahead_of_reads(
    local_server: Server, published_local: dict[str, bytes], tmp_path: Path
) -> None:
    server, published = local_server, published_local  # counts bytes at the data port
    cache = tmp_path / "cache"
    # (no directory read-ahead: this counts exactly what the reads themselves fetch)
    with mounted(server.url, tmp_path / "mnt", cache, "--dir-readahead", "0") as mnt:
        v0 = mnt / "proj" / "data" / "v0"
        run_cli("prefetch", str(v0 / "données"), str(v0 / "big.bin"))
        before = server.stats()["blob_bytes_sent"]
        assert read(v0 / "big.bin") == published["big.bin"]
        assert read(v0 / "données" / "日本語.txt") == published["données/日本語.txt"]
        assert server.stats()["blob_bytes_sent"] == before
        run_cli("prefetch", "proj/data:v0", "--registry", server.url, "--cache-dir", str(cache))
        for rel, data in published.items():
            assert read(v0 / rel) == data
        assert (
            server.stats()["blob_bytes_sent"] - before <= len(published["medium.bin"]) + 64 * 1024
        )
    bad = run_cli(
        "prefetch", "proj/data:v9", "--registry", server.url, "--cache-dir", str(cache), check=False
    )
    assert bad.returncode == 1 and "not found" in bad.stderr
