"""Read-ahead across the files of one directory, as pure state (fed opens, returns files).

``cat dir/*``, ``cp -r`` and most data loaders open the files of a directory one after
another in name order. For small files the time goes into one round trip to the store
per file, not into bytes, so the way to go fast is the one a sequential reader of one
big file gets: fetch the next files before they are opened, several at once.

A directory's files are numbered in name order (what a shell glob and ``sorted(listdir)``
give). An open of file ``i`` is *sequential* when ``i`` follows the previous open of
that directory closely (``0 < i - last <= SLACK``), or is file 0 (a walk starting over).
Then a window of files ahead is handed out for prefetching; it starts at ``initial``
files and doubles with each extension up to ``maximum`` files (one extension hands out
at most ``max_bytes``), and it is extended once at most half of it remains ahead of the reader. Any other
open resets the window: a reader jumping around gets nothing it did not ask for.
Files up to ``file_max`` are prefetched whole. Of a larger file only its head is
(``BlobCache.prefetch_soon`` decides: its block digests and first MiB), which is what its
first read waits for — two round trips per file in a walk through big shards — and its
own read-ahead takes over from there; it counts ``head_bytes`` against the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidInput

SLACK = 4  # opens may skip a few files (a filter in the loader) and still count as a walk


@dataclass(frozen=True, slots=True)
class SiblingTuning:
    initial: int = 8  # files in the first window
    maximum: int = 256  # files in the largest window
    max_bytes: int = 64 << 20  # bytes of the files handed out by one extension, at most
    file_max: int = 8 << 20  # larger files: only their head is prefetched
    head_bytes: int = 1 << 20  # what a larger file's head costs in the byte budget

    def __post_init__(self) -> None:
        if self.maximum < 0:
            raise InvalidInput("the directory read-ahead must be 0 (off) or a number of files")


class SiblingReadAhead:
    """The walk state of one directory; ``sizes`` are its files' sizes in name order."""

    __slots__ = ("_last", "ahead", "sizes", "tuning", "window")

    def __init__(self, sizes: Sequence[int], tuning: SiblingTuning) -> None:
        self.sizes = sizes
        self.tuning = tuning
        self.window = 0
        self.ahead = 0  # files before this index were already handed out (or skipped)
        self._last = -1

    def on_open(self, index: int) -> list[int]:
        """Note an open of file ``index``; return the indices of files to prefetch now."""
        if self.tuning.maximum <= 0:
            return []
        sequential = index == 0 or 0 < index - self._last <= SLACK
        self._last = index
        if not sequential:
            self.window = 0
            self.ahead = index + 1
            return []
        if self.window == 0 or index == 0:
            self.window = min(self.tuning.initial, self.tuning.maximum)
            self.ahead = index + 1
        elif self.ahead - index - 1 > self.window // 2:  # more than half still ahead
            return []
        else:
            self.window = min(self.window * 2, self.tuning.maximum)
        return self._extend(index)

    def _extend(self, index: int) -> list[int]:
        start = max(self.ahead, index + 1)
        stop = min(index + 1 + self.window, len(self.sizes))
        budget = self.tuning.max_bytes
        picked: list[int] = []
        k = start
        while k < stop:
            size = self.sizes[k]
            if size > 0:
                cost = size if size <= self.tuning.file_max else self.tuning.head_bytes
                if cost > budget:
                    break
                budget -= cost
                picked.append(k)
            k += 1
        self.ahead = max(self.ahead, k)
        return picked
