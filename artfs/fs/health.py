"""Is the registry answering? The mount's back-off state, pure and synchronous (clock injected).

A hung registry (SIGSTOPped, a dead proxy, a black-holed route) accepts connections and
never answers; each call then waits out its whole deadline. Before this state existed,
every stale listing paid that deadline again: ``md5sum`` of a cached file took 30 s
(three listings on its path, 10 s each), ``ls`` of an artifact over 120 s.

The rule: one failure (a deadline passed, the registry unreachable, or a refresh that did
not answer within the grace a caller waits) puts the registry *down*. While down, nobody
waits on it: metadata the mount knows is served as it is, metadata it does not know fails at
once (``Unavailable``, EIO), and one probe at a time asks the registry in the background,
after ``first_backoff`` seconds, then twice as long after each failed probe, up to
``max_backoff``. Any answer (a listing, a 404: anything but a failure to answer) puts it
*up* again at once.
"""

from __future__ import annotations

from collections.abc import Callable

FIRST_BACKOFF = 1.0  # seconds from a failure to the first probe
MAX_BACKOFF = 10.0  # the longest wait between probes: recovery within this of an answer


class RegistryHealth:
    """Whether callers may wait on the registry, and when the next probe is due."""

    __slots__ = (
        "_answered_at",
        "_clock",
        "_down_since",
        "_failures",
        "_next_probe",
        "first",
        "maximum",
    )

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        first_backoff: float = FIRST_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        if not 0 < first_backoff <= max_backoff:
            raise ValueError("back-off must be positive and first <= maximum")
        self._clock = clock
        self.first = first_backoff
        self.maximum = max_backoff
        self._failures = 0
        self._down_since: float | None = None
        self._next_probe = 0.0
        self._answered_at: float | None = None

    @property
    def up(self) -> bool:
        """Callers may wait on the registry (it answered last time it was asked)."""
        return self._failures == 0

    @property
    def failures(self) -> int:
        return self._failures

    def answered(self) -> None:
        """The registry answered something: up again, back-off forgotten."""
        self._failures = 0
        self._down_since = None
        self._next_probe = 0.0
        self._answered_at = self._clock()

    def failed(self, started: float | None = None) -> None:
        """A call did not get an answer in time: down, next probe after the back-off.

        ``started``: when that call was made. A call older than the last answer says nothing
        new (a request sent while the registry was hung, timing out after it recovered)."""
        now = self._clock()
        if started is not None and self._answered_at is not None and started < self._answered_at:
            return
        if self._down_since is None:
            self._down_since = now
        self._failures += 1
        self._next_probe = now + self.backoff()

    def backoff(self) -> float:
        """The current wait between probes (after ``failures`` failures in a row)."""
        if self._failures == 0:
            return 0.0
        return min(self.first * 2.0 ** min(self._failures - 1, 30), self.maximum)

    def probe_in(self) -> float:
        """Seconds until the next probe is due (0: now; only meaningful while down)."""
        return max(0.0, self._next_probe - self._clock())

    def describe(self) -> str:
        """For error messages: how long the registry has been down and the next probe."""
        if self._down_since is None:
            return "the registry is answering"
        return (
            f"the registry has not answered for {self._clock() - self._down_since:.0f} s "
            f"(asking again in the background in {self.probe_in():.0f} s)"
        )
