"""sha256 of files being written, computed off the FUSE thread.

Hashing while writing (``DraftStore(hash_while_writing=True)``) saves the commit a
pass over every file written sequentially, but done inline it costs the mount's one
trio thread ~65 µs per 128 KiB write here (sha256 at ~2 GB/s), a third of what a
write request costs. ``HashWorker`` runs the updates in one background thread in
the order they were queued (hashlib releases the GIL on large buffers, so it uses
the other core); ``BackgroundSha256.hexdigest`` waits for the file's queued bytes.
A bounded backlog keeps memory in check: a writer faster than the thread waits.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque

BACKLOG_BYTES = 64 << 20


class HashWorker:
    """One thread hashing queued buffers in order. ``close`` stops it (pending work is done)."""

    def __init__(self, backlog_bytes: int = BACKLOG_BYTES) -> None:
        self.backlog_bytes = backlog_bytes
        self._queue: deque[tuple[BackgroundSha256, bytes] | None] = deque()
        self._cond = threading.Condition()
        self._queued = 0
        self._thread: threading.Thread | None = None

    def hasher(self) -> BackgroundSha256:
        return BackgroundSha256(self)

    def submit(self, hasher: BackgroundSha256, data: bytes) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="artfs-draft-hash", daemon=True
                )
                self._thread.start()
            while self._queued > self.backlog_bytes:
                self._cond.wait()
            self._queue.append((hasher, data))
            self._queued += len(data)
            hasher.pending += 1
            self._cond.notify_all()

    def wait(self, hasher: BackgroundSha256) -> None:
        with self._cond:
            while hasher.pending:
                self._cond.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                item = self._queue.popleft()
            if item is None:
                return
            hasher, data = item
            hasher.sha.update(data)
            with self._cond:
                hasher.pending -= 1
                self._queued -= len(data)
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._queue.append(None)
            self._cond.notify_all()
        thread.join()


class BackgroundSha256:
    """The part of ``hashlib.sha256`` the draft store uses, fed through a ``HashWorker``."""

    __slots__ = ("pending", "sha", "worker")

    def __init__(self, worker: HashWorker) -> None:
        self.worker = worker
        self.sha = hashlib.sha256()
        self.pending = 0

    def update(self, data: bytes | memoryview) -> None:
        # Only immutable bytes can be hashed later; anything else (a reused buffer) now.
        obj = data.obj if isinstance(data, memoryview) else data
        if isinstance(obj, bytes) and isinstance(data, memoryview) and data.nbytes == len(obj):
            self.worker.submit(self, obj)
        elif isinstance(data, bytes):
            self.worker.submit(self, data)
        else:
            self.worker.wait(self)
            self.sha.update(data)

    def hexdigest(self) -> str:
        self.worker.wait(self)
        return self.sha.hexdigest()
