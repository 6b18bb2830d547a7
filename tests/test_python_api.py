"""The public Python API (``artfs.Registry``; docs/python.md) against a real ``artfs serve``
in both configurations and against a local registry directory (no server)."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import artfs
from artfs.api.sync import RUNTIME
from tests.backends import SQLITE
from tests.e2e import mounted, run_cli
from tests.pyapi_helpers import Target, make_tree, private_dirs, read_dir, sha, target

__all__ = ["private_dirs", "target"]  # fixtures

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def reg(target: Target, tmp_path: Path) -> Iterator[artfs.Registry]:
    with artfs.Registry(target.location, cache_dir=tmp_path / "cache") as r:
        yield r


def test_put_then_version_facts_and_files(reg: artfs.Registry, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", 1)
    before = time.time()
    v = reg.put(
        tmp_path / "src",
        "proj/data",
        type="dataset",
        aliases=["best"],
        metadata={"rows": 4},
        description="four files",
    )
    assert v.ref == "proj/data:v0" and v.number == 0
    got = reg.version("proj/data:best")
    assert got == v
    assert got.ref == "proj/data:v0"
    assert set(got.aliases) == {"best", "latest"}
    assert got.metadata == {"rows": 4}
    assert got.description == "four files"
    assert got.type == "dataset"
    assert before - 5 <= got.created.timestamp() <= time.time() + 5
    assert [(f.path, f.size, f.sha256) for f in got.files()] == [
        (p, len(d), sha(d)) for p, d in sorted(files.items())
    ]
    # a second put with new contents and lineage: inputs name the exact version
    (tmp_path / "src" / "small.txt").write_bytes(b"changed")
    v1 = reg.put(tmp_path / "src", "proj/data", inputs=["proj/data:best"])
    assert v1.number == 1 and v1.inputs == ("proj/data:v0",)
    assert reg.version("proj/data").number == 1  # no selector: latest
    assert [x.number for x in reg.versions("proj/data")] == [0, 1]
    assert reg.artifacts("proj") == ["proj/data"]
    with pytest.raises(artfs.NotFound):
        reg.version("proj/data:v7")
    with pytest.raises(artfs.InvalidInput):
        reg.version("no-artifact-part")


def test_open_seeks_and_ranged_reads_are_verified_bytes(
    reg: artfs.Registry, tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "src", 2)
    v = reg.put(tmp_path / "src", "proj/data")
    big = files["big.bin"]
    rng = random.Random(7)
    with v.open("big.bin") as f:
        assert f.readable() and f.seekable() and not f.writable()
        assert f.seek(0, os.SEEK_END) == len(big)
        assert f.read(10) == b""
        for _ in range(40):
            offset = rng.randrange(len(big))
            length = rng.choice([1, 100, 4096, 65536, 1 << 20, 3 << 20])
            assert f.seek(offset) == offset
            assert f.read(length) == big[offset : offset + length]
            assert f.tell() == min(offset + length, len(big))
        f.seek(-100, os.SEEK_END)
        buf = bytearray(300)
        assert f.readinto(buf) == 100 and bytes(buf[:100]) == big[-100:]
        f.seek(5)
        f.seek(10, os.SEEK_CUR)
        assert f.read(5) == big[15:20]
        with pytest.raises(ValueError):
            f.seek(-1)
        assert f.pread(1000, 10) == big[1000:1010] and f.tell() == 20
    with pytest.raises(ValueError):
        f.read(1)
    with v.open("sub/b.bin") as f:
        assert sha(f.read()) == sha(files["sub/b.bin"])
    assert v.read_bytes("sub/deeper/a.json") == files["sub/deeper/a.json"]
    with pytest.raises(artfs.NotFound):
        v.open("nope")
    with pytest.raises(artfs.InvalidInput):
        v.open("sub")
    with pytest.raises(artfs.InvalidInput):
        v.open("big.bin", "wb")


def test_reads_share_the_cache_of_mounts_and_other_registries(
    target: Target, tmp_path: Path
) -> None:
    """A blob read once through the API is not fetched again by another ``Registry`` or by
    ``artfs get`` using the same cache directory (the mounts' default one)."""
    if target.spec is None or target.spec.backend != SQLITE:
        pytest.skip("counts the bytes the server sent (S3 serves presigned reads itself)")
    assert target.server is not None
    cache = tmp_path / "cache"
    files = make_tree(tmp_path / "src", 3)
    with artfs.Registry(target.location, cache_dir=cache) as reg:
        v = reg.put(tmp_path / "src", "proj/data")
        before = target.server.stats()["blob_bytes_sent"]
        with v.open("big.bin") as f:
            assert f.read() == files["big.bin"]
        first = target.server.stats()["blob_bytes_sent"] - before
        assert first >= len(files["big.bin"])
    with artfs.Registry(target.location, cache_dir=cache) as again:
        sent = target.server.stats()["blob_bytes_sent"]
        with again.version("proj/data:v0").open("big.bin") as f:
            f.seek(1 << 20)
            assert f.read(1 << 20) == files["big.bin"][1 << 20 : 2 << 20]
            assert f._reads.fd is not None  # complete and verified: read in this thread
        assert target.server.stats()["blob_bytes_sent"] == sent
    run_cli(
        "get",
        "--registry",
        target.location,
        "--cache-dir",
        str(cache),
        "proj/data:v0",
        str(tmp_path / "got"),
    )
    assert (tmp_path / "got" / "big.bin").read_bytes() == files["big.bin"]
    assert target.server.stats()["blob_bytes_sent"] - sent < len(files["big.bin"])


def test_download_and_verify(reg: artfs.Registry, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", 4)
    v = reg.put(tmp_path / "src", "proj/data")
    out = v.download(tmp_path / "out")
    assert out == tmp_path / "out"
    assert read_dir(out) == files
    v.verify(out)
    with pytest.raises(artfs.AlreadyExists):
        v.download(out)
    # the default destination, reused when already there intact
    default = v.download()
    assert default == tmp_path / "artifacts" / "proj" / "data" / "v0"
    assert read_dir(default) == files
    assert v.download() == default
    # verify names what differs
    (out / "sub" / "b.bin").write_bytes(b"tampered")
    (out / "extra.txt").write_bytes(b"x")
    (out / "small.txt").unlink()
    with pytest.raises(artfs.IntegrityError) as err:
        v.verify(out)
    message = str(err.value)
    assert "missing small.txt" in message and "sub/b.bin" in message and "extra.txt" in message
    data = bytearray(files["big.bin"])
    data[123] ^= 1  # same size, one bit off
    (default / "big.bin").write_bytes(bytes(data))
    with pytest.raises(artfs.IntegrityError, match=r"big\.bin: contents differ"):
        v.verify(default)


def test_draft_commits_an_incremental_version_uploading_only_new_bytes(
    target: Target, reg: artfs.Registry, tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "src", 5)
    base = reg.put(tmp_path / "src", "proj/model", type="model")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "weights.bin").write_bytes(b"w" * 300_000)
    (extra / "cfg").mkdir()
    (extra / "cfg" / "c.yaml").write_bytes(b"lr: 0.1\n")
    (tmp_path / "notes.txt").write_bytes(b"notes")
    (tmp_path / "copy.bin").write_bytes(files["big.bin"])  # already in the registry

    received = target.server.stats()["blob_bytes_received"] if target.server else 0
    draft = reg.draft("proj/model", base="latest")
    assert draft.base == base
    assert draft.add_file(tmp_path / "notes.txt") == "notes.txt"
    assert draft.add_file(tmp_path / "copy.bin", "sub/copy.bin") == "sub/copy.bin"
    assert sorted(draft.add_dir(extra, prefix="ckpt")) == ["ckpt/cfg/c.yaml", "ckpt/weights.bin"]
    assert draft.remove("sub/deeper") == 1
    assert draft.remove("small.txt") == 1
    with pytest.raises(artfs.NotFound):
        draft.remove("small.txt")
    v = draft.commit(aliases=["candidate"], metadata={"step": 2}, inputs=[base])
    assert v.number == base.number + 1 and v.info.parent == base.number
    assert v.inputs == (base.ref,) and "candidate" in v.aliases and v.metadata == {"step": 2}
    new_bytes = 300_000 + len(b"lr: 0.1\n") + len(b"notes")
    assert draft.uploaded == new_bytes  # big.bin, b.bin and the copy were there already
    if target.spec is not None and target.spec.backend == SQLITE:
        assert target.server is not None
        assert target.server.stats()["blob_bytes_received"] - received == new_bytes
    expect = {p: d for p, d in files.items() if p not in ("small.txt", "sub/deeper/a.json")}
    expect |= {
        "notes.txt": b"notes",
        "sub/copy.bin": files["big.bin"],
        "ckpt/weights.bin": b"w" * 300_000,
        "ckpt/cfg/c.yaml": b"lr: 0.1\n",
    }
    assert {f.path: f.sha256 for f in v.files()} == {p: sha(d) for p, d in expect.items()}
    assert read_dir(v.download(tmp_path / "got")) == expect
    # an empty draft of a new artifact, and an empty commit refused
    fresh = reg.draft("proj/other")
    with pytest.raises(artfs.InvalidInput, match="no files"):
        fresh.commit()
    fresh.add_file(tmp_path / "notes.txt", "n.txt")
    assert [f.path for f in fresh.commit().files()] == ["n.txt"]
    with pytest.raises(artfs.NotFound):
        reg.draft("proj/model", base=99)


def test_calls_have_deadlines(tmp_path: Path) -> None:
    """A registry that accepts connections and never answers: the call fails with one clear
    error within its bound, instead of hanging the training script."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with artfs.Registry(url, cache_dir=tmp_path / "cache", timeout=0.5) as reg:
            start = time.monotonic()
            with pytest.raises(artfs.Unavailable):
                reg.version("proj/data:latest")
            assert time.monotonic() - start < 20  # 6 x 0.5 s at most, on a loaded machine


def test_one_loop_thread_shared_and_stopped_on_close(target: Target, tmp_path: Path) -> None:
    def portal_threads() -> int:
        return sum(t.name == "artfs-portal" and t.is_alive() for t in threading.enumerate())

    cache = tmp_path / "cache"
    a = artfs.Registry(target.location, cache_dir=cache)
    b = artfs.Registry(target.location, cache_dir=cache)
    a.projects()
    b.projects()
    assert portal_threads() == 1
    with pytest.raises(artfs.InvalidInput, match="already used in this process"):
        artfs.Registry(str(tmp_path / "another-registry"), cache_dir=cache).projects()
    a.close()
    assert portal_threads() == 1  # b still holds it
    b.projects()
    b.close()
    assert portal_threads() == 0 and RUNTIME.portal is None
    with pytest.raises(artfs.InvalidInput, match="closed"):
        b.projects()


def _child(location: str, cache: str, queue: multiprocessing.Queue[object]) -> None:
    queue.put(
        artfs.Registry(location, cache_dir=cache).version("proj/data").read_bytes("small.txt")
    )


def test_a_forked_child_starts_its_own_loop(reg: artfs.Registry, tmp_path: Path) -> None:
    """A DataLoader worker made by fork() has no loop thread: it must start its own, not
    hang waiting for the parent's."""
    make_tree(tmp_path / "src", 6)
    v = reg.put(tmp_path / "src", "proj/data")
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[object] = ctx.Queue()
    proc = ctx.Process(target=_child, args=(reg.url, str(reg.cache_dir), queue))
    proc.start()
    try:
        assert queue.get(timeout=60) == b"small 6\n"
    finally:
        proc.join(30)
    assert proc.exitcode == 0
    assert v.read_bytes("small.txt") == b"small 6\n"  # the parent's loop is unaffected


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
def test_download_with_a_mount_running_returns_the_path_inside_it(
    target: Target, reg: artfs.Registry, tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "src", 8)
    v = reg.put(tmp_path / "src", "proj/data")
    with mounted(target.location, tmp_path / "mnt", tmp_path / "mnt-cache") as point:
        path = v.download()
        assert path == point / "proj" / "data" / "v0"
        assert (path / "sub" / "b.bin").read_bytes() == files["sub/b.bin"]
        v.verify(path)
    assert not (tmp_path / "artifacts").exists()  # nothing was copied


async def test_async_twins_under_trio(target: Target, tmp_path: Path) -> None:
    import trio

    import artfs.aio

    files = make_tree(tmp_path / "src", 9)
    ticks = 0

    async def ticker() -> None:  # the caller's loop keeps running while artfs works
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        async with artfs.aio.Registry(target.location, cache_dir=tmp_path / "cache") as reg:
            v = await reg.put(tmp_path / "src", "proj/data", aliases=["best"])
            got = await reg.version("proj/data:best")
            assert got == v
            assert [f.path for f in await reg.files(got)] == sorted(files)
            assert await reg.read(got, "big.bin", 1000, 10) == files["big.bin"][1000:1010]
            draft = await reg.draft("proj/data", base="best")
            draft.remove("small.txt")
            v1 = await reg.commit(draft)
            assert v1.number == 1
            out = await reg.download(v1, tmp_path / "out")
            await reg.verify(v1, out)
        nursery.cancel_scope.cancel()
    assert ticks > 0


def test_async_twins_under_asyncio(target: Target, tmp_path: Path) -> None:
    import asyncio

    import artfs.aio

    files = make_tree(tmp_path / "src", 10)

    async def main() -> bytes:
        async with artfs.aio.Registry(target.location, cache_dir=tmp_path / "cache") as reg:
            v = await reg.put(tmp_path / "src", "proj/data")
            return await reg.read(await reg.version(v.ref), "sub/b.bin")

    assert asyncio.run(main()) == files["sub/b.bin"]


def test_ctrl_c_cancels_the_call_in_the_loop_too(tmp_path: Path) -> None:
    """Ctrl-C in the calling thread ends the request it was waiting for (the connection to
    the registry closes at once), not only the wait: else a script that catches
    KeyboardInterrupt would keep a hung request running behind its back."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        # A script in a terminal: Ctrl-C raises KeyboardInterrupt. (Inherited from this test
        # process, an ignored or blocked SIGINT would not; the full suite failed this test,
        # both passes, while it passed alone: the state is noted below if it fails again.)
        inherited = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
        code = (
            "import signal, sys, time, artfs\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})\n"
            f"reg = artfs.Registry({url!r}, cache_dir={str(tmp_path / 'cache')!r}, timeout=60)\n"
            "try:\n"
            "    reg.version('proj/data:latest')\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted', flush=True)\n"
            "    time.sleep(60)\n"
        )
        child = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ
        )
        try:
            silent.settimeout(30)
            conn, _ = silent.accept()  # the request is on its way: the call is waiting
            with conn:
                conn.settimeout(30)
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    assert chunk, "the client closed before sending its request"
                    request += chunk
                assert request.startswith(b"GET ")
                child.send_signal(signal.SIGINT)
                assert child.stdout is not None
                said = child.stdout.readline().strip()
                assert said == "interrupted", f"{said!r}; this process's SIGINT: {inherited}"
                conn.settimeout(10)  # far below the client's 60 s timeout
                assert conn.recv(65536) == b""  # the child closed the connection
                assert child.poll() is None  # while it still runs
        finally:
            child.kill()
            child.wait()


def test_signals_reach_the_calling_thread_not_the_loop_threads(tmp_path: Path) -> None:
    """The portal thread, and the threads it starts (trio's workers), block the signals
    Python handles in the main thread: a process-directed Ctrl-C then always lands where a
    caller waits for its result (the test above failed once on a loaded machine: the signal
    went to another thread, and the call ran on to its timeout)."""
    from artfs.api.sync import CALLER_SIGNALS, PORTAL_THREAD

    src = tmp_path / "f.txt"
    src.write_text("x")
    with artfs.Registry(tmp_path / "reg", cache_dir=tmp_path / "cache") as reg:
        reg.put(src, "proj/data")
        assert reg.version("proj/data:latest").read_bytes("f.txt") == b"x"
        threads = [t for t in threading.enumerate() if t.name == PORTAL_THREAD]
        assert threads, "no loop thread"
        for t in threads:
            assert t.native_id is not None
            blocked = _blocked_signals(t.native_id)
            for sig in CALLER_SIGNALS:
                assert sig in blocked, f"{signal.Signals(sig).name} not blocked"
    main = threading.main_thread().native_id
    assert main is not None and signal.SIGINT not in _blocked_signals(main)  # callers get it


def _blocked_signals(tid: int) -> set[int]:
    """The signals thread ``tid`` of this process blocks (``SigBlk`` in its status)."""
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    raise AssertionError("no SigBlk line")


def test_threads_share_one_registry(target: Target, tmp_path: Path) -> None:
    """Sixteen threads' first calls at once, then reads of one file: every thread gets the
    right bytes, and closing the registry stops the loop thread (no reference leaked)."""
    files = make_tree(tmp_path / "src", 15)
    with artfs.Registry(target.location, cache_dir=tmp_path / "seed-cache") as seed:
        seed.put(tmp_path / "src", "proj/data")
    reg = artfs.Registry(target.location, cache_dir=tmp_path / "cache")
    start = threading.Barrier(16)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            start.wait()
            with reg.version("proj/data:v0").open("big.bin") as f:
                f.seek(i * 65536)
                results.append(f.read(65536))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(results) == sorted(
        files["big.bin"][i * 65536 : (i + 1) * 65536] for i in range(16)
    )
    reg.close()
    assert RUNTIME.portal is None
    assert not any(t.name == "artfs-portal" and t.is_alive() for t in threading.enumerate())
