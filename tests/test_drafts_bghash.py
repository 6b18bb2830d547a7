"""The background sha256 of files being written: same digest as hashlib, in order, bounded."""

from __future__ import annotations

import hashlib
import os
import threading

from artfs.drafts.bghash import HashWorker


def test_digest_matches_hashlib_in_order_across_interleaved_files() -> None:
    worker = HashWorker(backlog_bytes=1 << 20)  # small: writers wait for the thread
    try:
        pieces = {n: [os.urandom(100_000 + i) for i in range(40)] for n in ("a", "b")}
        hashers = {n: worker.hasher() for n in pieces}
        for i in range(40):
            for n, hasher in hashers.items():
                hasher.update(memoryview(pieces[n][i]))
        for n, hasher in hashers.items():
            assert hasher.hexdigest() == hashlib.sha256(b"".join(pieces[n])).hexdigest()
    finally:
        worker.close()


def test_reused_buffers_are_hashed_before_they_change() -> None:
    worker = HashWorker()
    try:
        hasher = worker.hasher()
        buf = bytearray(b"x" * 1000)
        hasher.update(memoryview(buf))
        buf[:] = b"y" * 1000
        hasher.update(b"z" * 10)
        assert hasher.hexdigest() == hashlib.sha256(b"x" * 1000 + b"z" * 10).hexdigest()
    finally:
        worker.close()


def test_close_finishes_queued_work_and_stops_the_thread() -> None:
    worker = HashWorker()
    hasher = worker.hasher()
    hasher.update(b"a" * 5_000_000)
    before = threading.active_count()
    worker.close()
    assert threading.active_count() == before - 1
    assert hasher.pending == 0
    assert hasher.sha.hexdigest() == hashlib.sha256(b"a" * 5_000_000).hexdigest()
    worker.close()  # idempotent
