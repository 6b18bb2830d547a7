"""When and how far to read ahead, as pure state (fed offsets, returns byte ranges to prefetch).

A reader that keeps reading where it stopped is sequential; its window starts at
``initial`` and doubles each time it is extended, up to ``maximum``. The window is
extended when less than half of it remains ahead of the reader, so the registry
sees few large requests, well before the reader needs them. Any jump resets the
window: random readers fetch only the blocks they ask for.
"""

from __future__ import annotations

from ..hashing import BLOCK_SIZE

SLACK = BLOCK_SIZE  # reads may arrive slightly reordered; this much overlap/gap still counts


class ReadAhead:
    def __init__(self, size: int, initial: int, maximum: int) -> None:
        self.size = size
        self.initial = initial
        self.maximum = max(initial, maximum)
        self.window = 0
        self.ahead = 0  # end of the range already handed out for prefetch
        self._last_start = -1
        self._next = -1
        self.sequential = False  # whether the last read continued the one before it

    def on_read(self, offset: int, end: int) -> tuple[int, int] | None:
        """Note a read of ``[offset, end)``; return a byte range to prefetch, or None."""
        if offset == 0:  # (re)starting at the beginning is the strongest hint there is
            sequential, self.window = True, 0
        else:
            sequential = self._next >= 0 and self._last_start <= offset <= self._next + SLACK
        self._last_start = offset
        self._next = max(end, self._next) if sequential else end
        self.sequential = sequential
        if not sequential:
            self.window = 0
            self.ahead = end
            return None
        if self.window == 0:
            self.window = self.initial
            self.ahead = end
        if self.ahead - end >= self.window // 2:
            return None
        start = max(self.ahead, end)
        target = min(end + self.window, self.size)
        self.window = min(self.window * 2, self.maximum)
        if target <= start:
            return None
        self.ahead = target
        return start, target
