"""One full collection before serving, then the survivors frozen (``gc.freeze``).

The mount daemon and the server answer requests on one trio thread. A full (generation 2)
collection of the heap their imports build stops that thread for 10-23 ms here, at moments
nobody chooses (docs/decisions.md, "Long-running processes freeze their start-up heap").
Frozen objects are left out of every later collection; what is made afterwards is
collected as usual.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Call once per process, after the imports and set-up and before serving requests."""
    gc.collect()
    gc.freeze()
