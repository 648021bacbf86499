"""A rate-limited work queue of object keys, with client-go's workqueue semantics.

Invariants:

* A key is pending at most once: adding a key that is already pending does nothing.
* A key is handed to at most one worker at a time. Added again while a worker holds it,
  it waits (dirty) and is queued again when that worker calls ``done``: the reconcile
  that follows sees every change, and no two reconciles of one key ever overlap.
* Retries are never hidden loops: a failed key goes back through ``add_rate_limited``,
  delayed by the slower of its own exponential backoff (5 ms doubling to 1000 s, reset by
  ``forget``) and an overall token bucket (10 qps, burst 100), client-go's default
  controller rate limiter.
* After ``shutdown`` nothing new is accepted and delayed keys are dropped; ``get`` hands
  out what is still pending, then returns None.

One event loop, no threads: ``add`` and ``done`` are plain functions, so informer event
handlers (which only enqueue keys) call them directly.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("podling.client.workqueue")


class RateLimiter:
    """How long to wait before retrying a key: max(per-key backoff, overall token bucket)."""

    def __init__(
        self,
        *,
        base_delay: float = 0.005,
        max_delay: float = 1000.0,
        qps: float = 10.0,
        burst: int = 100,
        clock: Callable[[], float] = time.monotonic,  # swapped only by tests
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._tokens = float(burst)
        self._last = clock()

    def when(self, key: str) -> float:
        """The delay before ``key``'s next try; counts one more failure of ``key``."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        # The exponent is clamped so that a key failing for days cannot overflow a float.
        backoff = min(self.base_delay * 2.0 ** min(failures, 64), self.max_delay)
        return max(backoff, self._reserve())

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: str) -> int:
        return self._failures.get(key, 0)

    def _reserve(self) -> float:
        """Take a token; the wait until it is really there (tokens go negative: reservations queue up)."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps


class WorkQueue:
    def __init__(self, *, name: str = "", rate_limiter: RateLimiter | None = None) -> None:
        self.name = name
        self.rate_limiter = rate_limiter or RateLimiter()
        self._queue: collections.deque[str] = collections.deque()
        self._dirty: set[str] = set()  # pending: queued, or to be queued when its worker is done
        self._processing: set[str] = set()
        self._waiting: dict[str, tuple[float, asyncio.TimerHandle]] = {}  # add_after: (due, timer)
        self._wakeup = asyncio.Event()  # set while something may be ready for get()
        self._shutting_down = False
        self.adds = 0  # keys queued, for metrics (a key already pending is not counted again)
        self.retries = 0  # rate-limited re-adds after failures, for metrics

    def __len__(self) -> int:
        """Keys queued for a worker now (not those being processed or waiting for a delay)."""
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def add(self, key: str) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        self.adds += 1
        if key in self._processing:
            return  # done() queues it again
        self._queue.append(key)
        self._wakeup.set()

    async def get(self) -> str | None:
        """The next key, now held by the caller until ``done(key)``; None once shut down and drained."""
        while not self._queue:
            if self._shutting_down:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._wakeup.set()

    def add_after(self, key: str, delay: float) -> None:
        """Add ``key`` once ``delay`` seconds have passed; a key already waiting keeps the earlier time."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        waiting = self._waiting.get(key)
        if waiting is not None:
            if waiting[0] <= due:
                return
            waiting[1].cancel()
        self._waiting[key] = (due, loop.call_at(due, self._due, key))

    def _due(self, key: str) -> None:
        del self._waiting[key]
        self.add(key)

    def add_rate_limited(self, key: str) -> float:
        """Add ``key`` after its rate-limited delay (one more failure); the delay chosen."""
        delay = self.rate_limiter.when(key)
        self.retries += 1
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """``key`` succeeded: its next failure starts the backoff from the beginning."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: str) -> int:
        return self.rate_limiter.num_requeues(key)

    def shutdown(self) -> None:
        self._shutting_down = True
        for _, timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        self._wakeup.set()


async def run_workers(queue: WorkQueue, reconcile: Callable[[str], Awaitable[None]], *, workers: int = 1) -> None:
    """Reconcile keys from ``queue`` with ``workers`` concurrent workers until it shuts down and drains.

    A reconcile that raises is retried through ``add_rate_limited``: one log line per failed
    attempt (with the traceback only the first time in a row, so a key stuck in backoff does
    not flood the log); a reconcile that returns ``forget``s the key's backoff.
    """

    async def work() -> None:
        while (key := await queue.get()) is not None:
            try:
                await reconcile(key)
            except Exception as err:
                attempt = queue.num_requeues(key) + 1
                delay = queue.add_rate_limited(key)
                log.warning("%s: reconcile %s failed (attempt %d), retrying in %.3gs: %s",
                            queue.name or "queue", key, attempt, delay, err, exc_info=attempt == 1)
            else:
                queue.forget(key)
            finally:
                queue.done(key)

    async with asyncio.TaskGroup() as group:
        for i in range(workers):
            group.create_task(work(), name=f"{queue.name or 'queue'}-worker-{i}")
