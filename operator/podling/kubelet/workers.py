"""Pod workers: one task per pod, so a pod's operations never overlap and updates coalesce.

Invariants:

* At most one sync of a pod runs at a time; updates that arrive meanwhile collapse into one
  more sync after it. Different pods sync concurrently.
* A sync may ask to run again after a delay (a back-off, a retry); the earliest request wins.
  A sync that raises is logged and retried after ``retry`` seconds: a pod never stops its
  worker by failing.
* A worker ends when its pod is no longer ``alive`` and nothing is pending.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("podling.kubelet.workers")


class _Worker:
    def __init__(self) -> None:
        self.dirty = asyncio.Event()
        self.timer: asyncio.TimerHandle | None = None
        self.due = float("inf")
        self.task: asyncio.Task[None] | None = None


class PodWorkers:
    def __init__(
        self,
        *,
        sync: Callable[[str], Awaitable[float | None]],
        alive: Callable[[str], bool],
        observe: Callable[[float], None] = lambda seconds: None,
        retry: float = 5.0,
    ) -> None:
        self._sync = sync
        self._alive = alive
        self._observe = observe
        self._retry = retry
        self._workers: dict[str, _Worker] = {}

    def __len__(self) -> int:
        return len(self._workers)

    def update(self, uid: str) -> None:
        worker = self._workers.get(uid)
        if worker is None:
            worker = self._workers[uid] = _Worker()
            worker.task = asyncio.get_running_loop().create_task(self._run(uid, worker), name=f"pod worker {uid}")
        worker.dirty.set()

    def update_after(self, uid: str, delay: float) -> None:
        worker = self._workers.get(uid)
        if worker is None:
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        if worker.timer is not None and worker.due <= due:
            return
        if worker.timer is not None:
            worker.timer.cancel()
        worker.due = due
        worker.timer = loop.call_at(due, self._fire, uid, worker)

    def _fire(self, uid: str, worker: _Worker) -> None:
        worker.timer, worker.due = None, float("inf")
        worker.dirty.set()

    async def _run(self, uid: str, worker: _Worker) -> None:
        try:
            while True:
                await worker.dirty.wait()
                worker.dirty.clear()
                started = time.perf_counter()
                try:
                    delay = await self._sync(uid)
                except Exception:
                    log.exception("syncing pod %s failed; retrying in %.0fs", uid, self._retry)
                    delay = self._retry
                self._observe(time.perf_counter() - started)
                if delay is not None:
                    self.update_after(uid, delay)
                if not worker.dirty.is_set() and worker.timer is None and not self._alive(uid):
                    return
        finally:
            if worker.timer is not None:
                worker.timer.cancel()
            if self._workers.get(uid) is worker:
                del self._workers[uid]

    async def stop(self) -> None:
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
