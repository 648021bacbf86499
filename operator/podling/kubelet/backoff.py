"""Back-off between restarts of a crashing container (CrashLoopBackOff) or pulls of an image.

Invariant: the first failure of a key is retried at once; each later one waits twice the
previous delay, from ``initial`` up to ``maximum``, counted from when the failure happened.
A key untouched for ``reset`` seconds (a container that ran for ten minutes) starts over.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable


@dataclasses.dataclass(slots=True)
class _Entry:
    delay: float
    touched: float


class Backoff:
    def __init__(self, *, initial: float = 10.0, maximum: float = 300.0, reset: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.initial = initial
        self.maximum = maximum
        self.reset = reset
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def _entry(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry.touched > self.reset:
            del self._entries[key]
            return None
        return entry

    def remaining(self, key: str, *, since: float) -> float:
        """Seconds still to wait before retrying ``key``, which last failed at ``since`` (epoch seconds)."""
        entry = self._entry(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.delay - (self._clock() - since))

    def delay(self, key: str) -> float:
        """The current delay of ``key`` (0 before its first retry)."""
        entry = self._entry(key)
        return entry.delay if entry is not None else 0.0

    def next(self, key: str) -> None:
        """``key`` is retried now: the next failure waits longer."""
        entry = self._entry(key)
        now = self._clock()
        if entry is None:
            self._entries[key] = _Entry(self.initial, now)
        else:
            entry.delay, entry.touched = min(entry.delay * 2, self.maximum), now

    def forget_prefix(self, prefix: str) -> None:
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]
