"""A one-line progress display for long work on a terminal (silent when stderr is not a tty),
and the small formatting rules every human output shares (sizes, counts, times)."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Counts bytes and items; redraws at most 10 times a second; ``close`` ends the line."""

    def __init__(
        self,
        label: str,
        total_bytes: int,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.label = label
        self.total = total_bytes
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._start = time.monotonic()
        self._last = 0.0

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.1:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-6)
        pct = 100.0 * self.done / self.total if self.total else 100.0
        rate = self.done / elapsed
        self.stream.write(
            f"\r{self.label}: {human_bytes(self.done)} / {human_bytes(self.total)} "
            f"({pct:.0f}%) {human_bytes(rate)}/s   "
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.total:  # a phase with nothing to do draws no "0 B / 0 B"
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 file``, ``2 files``: counts in human output agree with their noun."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def iso_time(t: float) -> str:
    """A time in human output: ISO 8601 in the local zone, with its offset, to the second
    (``2026-12-05T01:02:03+00:00``), never an epoch float."""
    return datetime.fromtimestamp(t, UTC).astimezone().isoformat(timespec="seconds")
