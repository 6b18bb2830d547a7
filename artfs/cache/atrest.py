"""A ``BlobState``'s bytes at rest: checking cached blocks against their digests, demoting a
damaged complete blob to a partial one, and completing a blob (whole sha256, publish).

A mixin of ``BlobState`` (blobstate.py), kept apart so the fetch coordination there stays
readable; every attribute it uses is ``BlobState``'s, declared below for the type checker.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from ..errors import IntegrityError
from ..hashing import BLOCK_SIZE
from . import locks, trust
from .blockmap import ABSENT, BLOCK_SHIFT, PRESENT, block_bounds, runs_of
from .fetcher import DigestSlot, report_damage
from .filehash import hash_file_range

if TYPE_CHECKING:
    from .blobstate import StateEnv

log = logging.getLogger("artfs.cache")

_VERIFY_CHUNK_BLOCKS = 64  # read 8 MiB at a time when verifying data at rest


def verify_runs(
    fd: int, size: int, digests: Sequence[bytes], runs: Sequence[tuple[int, int]]
) -> list[int]:
    """Blocks among ``runs`` whose bytes in ``fd`` do not match their digests (thread-safe)."""
    bad: list[int] = []
    buf = memoryview(bytearray(_VERIFY_CHUNK_BLOCKS * BLOCK_SIZE))  # reused: no page faults
    for start, stop in runs:
        for chunk in range(start, stop, _VERIFY_CHUNK_BLOCKS):
            chunk_stop = min(stop, chunk + _VERIFY_CHUNK_BLOCKS)
            base = chunk << BLOCK_SHIFT
            data = buf[: os.preadv(fd, [buf[: block_bounds(chunk_stop - 1, size)[1] - base]], base)]
            for k in range(chunk, chunk_stop):
                lo, hi = block_bounds(k, size)
                piece = data[lo - base : hi - base]
                if len(piece) != hi - lo or hashlib.sha256(piece).digest() != digests[k]:
                    bad.append(k)
    return bad


def file_sha256(fd: int, size: int) -> str:
    """sha256 of the first ``size`` bytes of ``fd`` ("" if the file is shorter)."""
    h = hashlib.sha256()
    return h.hexdigest() if hash_file_range(h, fd, 0, size) else ""


def same_file(path: os.PathLike[str], fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class AtRest:
    """Verification at rest and completion of one blob (mixed into ``BlobState``)."""

    if TYPE_CHECKING:
        env: StateEnv
        sha: str
        size: int
        nblocks: int
        data_fd: int
        map_fd: int | None
        complete: bool
        verified: bytearray
        inflight: dict[int, trio.Event]
        digests: list[bytes] | None
        _stamped: bool
        _transition: trio.Lock

        def present_flags(self, first: int, stop: int) -> bytes: ...
        async def need_digests(self, slot: DigestSlot | None = None) -> list[bytes]: ...
        def _stamp_if_checked(self) -> None: ...
        def _attach(self) -> None: ...

    def read_verified_once(self, first: int, stop: int) -> bytes | None:
        """Blocks ``[first, stop)`` of a complete blob, checking those not yet verified, in
        one read; None when this does not apply (a partial blob, no digests at hand, too
        big to check inline) or a block is bad: then ``ensure`` does it the long way.

        A warm reader's first pass is bound by checking; reading the bytes once for the
        check and the answer (rather than once each) saves a copy per read.
        """
        digests = self.digests
        if not self.complete or digests is None:
            return None
        base, end = first << BLOCK_SHIFT, block_bounds(stop - 1, self.size)[1]
        if end - base > self.env.tuning.inline_verify_bytes:
            return None
        data = os.pread(self.data_fd, end - base, base)
        if len(data) != end - base:
            return None
        view = memoryview(data)
        for k in range(first, stop):
            if not self.verified[k]:
                lo, hi = block_bounds(k, self.size)
                if hashlib.sha256(view[lo - base : hi - base]).digest() != digests[k]:
                    return None
        self.verified[first:stop] = bytes([1]) * (stop - first)
        self._stamp_if_checked()
        return data

    # --- verification at rest --------------------------------------------------------------
    async def verify_all(self, max_bytes: int) -> bool:
        """Whether every block of the complete blob is verified, checking the rest first if the
        blob is at most ``max_bytes`` (damaged blocks are refetched by readers, not here)."""
        if not self.complete:
            return False
        if self.verified.find(0) < 0:
            return True
        if self.size > max_bytes:
            return False
        todo = runs_of(bytes(self.verified), 0, 0, 1 << 30)
        bad = await self._verify(todo)
        return not bad and self.complete and self.verified.find(0) < 0

    async def _verify(self, runs: Sequence[tuple[int, int]]) -> list[int]:
        """Check present, not-yet-verified blocks against their digests; return the bad ones."""
        fd = self.data_fd
        # A complete blob whose digests we lack: one whole-file hash answers for all blocks.
        if (
            self.digests is None
            and self.complete
            and await trio.to_thread.run_sync(file_sha256, fd, self.size) == self.sha
        ):
            self.verified[:] = bytes([1]) * self.nblocks
            return []
        digests = await self.need_digests()
        nbytes = sum((stop - start) << BLOCK_SHIFT for start, stop in runs)
        if nbytes > self.env.tuning.inline_verify_bytes:
            bad = await trio.to_thread.run_sync(verify_runs, fd, self.size, digests, runs)
        else:
            bad = verify_runs(fd, self.size, digests, runs)
        for start, stop in runs:
            self.verified[start:stop] = bytes([1]) * (stop - start)
        for k in bad:
            self.verified[k] = 0
        if not bad:
            self._stamp_if_checked()
        return bad

    async def _handle_damage(self, bad: Sequence[int]) -> None:
        log.warning(
            "blob %s: %d cached block(s) damaged at rest; refetching them", self.sha[:12], len(bad)
        )
        if self.complete:
            await self._demote(bad)
        elif not self._mark_absent(bad):
            await trio.sleep(self.env.tuning.poll_max)

    def _mark_absent(self, bad: Sequence[int]) -> bool:
        mfd = self.map_fd
        assert mfd is not None
        done = True
        for k in bad:
            if k in self.inflight:
                continue
            if locks.try_lock_range(mfd, k):
                try:
                    os.pwrite(mfd, bytes([ABSENT]), k)
                finally:
                    locks.unlock_range(mfd, k)
            else:
                done = False
        return done

    async def _demote(self, bad: Sequence[int]) -> None:
        """Turn a damaged complete blob back into a partial one missing just the bad blocks."""
        async with self._transition:
            if not self.complete:
                return
            layout = self.env.layout
            async with locks.exclusive_file_lock(layout.state_lock, self.env.tuning.timeout):
                complete = layout.complete(self.sha)
                trust.forget(layout, self.sha)
                self._stamped = False
                if same_file(complete, self.data_fd):
                    flags = bytearray([PRESENT]) * self.nblocks
                    for k in bad:
                        flags[k] = ABSENT
                    for leftover in (layout.partial_map(self.sha), layout.partial_data(self.sha)):
                        leftover.unlink(missing_ok=True)
                    layout.write_file(layout.partial_map(self.sha), bytes(flags), replace=True)
                    os.chmod(complete, 0o644)
                    os.rename(complete, layout.partial_data(self.sha))
                self._attach()

    # --- completion -------------------------------------------------------------------------
    async def maybe_complete(self) -> bool:
        """If every block is present, check the whole sha256 and publish the blob as complete.

        Returns whether the blob is complete. Another process completing it concurrently
        holds the whole map locked; then this returns False and the caller polls.
        """
        if self.complete:
            return True
        async with self._transition:
            mfd = self.map_fd
            if self.complete or mfd is None:
                return self.complete
            if self.present_flags(0, self.nblocks).find(bytes([ABSENT])) >= 0:
                return False
            if not locks.try_lock_range(mfd, 0, self.nblocks):
                return False
            try:
                if self.present_flags(0, self.nblocks).find(bytes([ABSENT])) >= 0:
                    return False
                fd = self.data_fd
                if await trio.to_thread.run_sync(file_sha256, fd, self.size) != self.sha:
                    await self._repair_after_bad_whole_hash(fd, mfd)
                    return False
                async with locks.exclusive_file_lock(
                    self.env.layout.state_lock, self.env.tuning.timeout
                ):
                    published = self._publish_complete()
            finally:
                locks.unlock_range(mfd, 0, self.nblocks)
        self.verified[:] = bytes([1]) * self.nblocks
        if published and self.nblocks > 1:  # every byte was just checked: stamp the file as is
            self._stamped = trust.stamp(self.env.layout, self.sha, self.data_fd)
        return True

    async def _repair_after_bad_whole_hash(self, fd: int, mfd: int) -> None:
        digests = await self.need_digests()
        whole = [(0, self.nblocks)]
        bad = await trio.to_thread.run_sync(verify_runs, fd, self.size, digests, whole)
        if not bad:
            message = (
                f"blob {self.sha[:12]}: every block matches the registry's block digests but the "
                "whole sha256 does not; the registry's digests are wrong"
            )
            await report_damage(self.env.client, self.sha, message)
            raise IntegrityError(message)
        log.warning(
            "blob %s: %d damaged block(s) found at completion; refetching", self.sha[:12], len(bad)
        )
        for k in bad:
            os.pwrite(mfd, bytes([ABSENT]), k)
            self.verified[k] = 0

    def _publish_complete(self) -> bool:
        """(Under the state lock.) Rename our verified data file to the complete path;
        True if it is now the complete file."""
        layout = self.env.layout
        complete, data = layout.complete(self.sha), layout.partial_data(self.sha)
        published = False
        if not complete.exists() and same_file(data, self.data_fd):
            complete.parent.mkdir(parents=True, exist_ok=True)
            os.fchmod(self.data_fd, 0o444)
            os.rename(data, complete)
            layout.partial_map(self.sha).unlink(missing_ok=True)
            published = True
        elif same_file(data, self.data_fd):
            # Someone published another copy meanwhile: ours is redundant on disk.
            data.unlink(missing_ok=True)
            layout.partial_map(self.sha).unlink(missing_ok=True)
        self.complete = True
        return published

    def adopt_peer_completion(self) -> bool:
        """True (and switch to complete mode) if another process published our data file."""
        if not self.complete and same_file(self.env.layout.complete(self.sha), self.data_fd):
            self.complete = True
        return self.complete
