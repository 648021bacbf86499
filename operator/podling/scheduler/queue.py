"""The scheduling queue: which pending pod to try next, and when to try a rejected pod again.

Every pod this scheduler is responsible for and that has no node is in exactly one place:

* **active**: ready to be tried, highest ``spec.priority`` first, then oldest first;
* **backoff**: failed recently, waiting out its backoff (``initial × 2^(attempts−1)``, at most
  ``max``: 1 s doubling to 10 s, kube-scheduler's podInitialBackoff/podMaxBackoff), then active;
* **unschedulable**: no node fitted; it waits for a cluster event that one of the plugins that
  rejected it cares about (a node added or changed, a pod deleted, a claim changed), or for
  its own spec or labels to change, and then goes to backoff (or straight to active if its
  backoff is over). After five minutes there without such an event it is tried anyway;
* **gated**: it has ``spec.schedulingGates``; it waits until they are all removed;
* **in flight**: handed out by ``pop`` and not given back yet. An event that happens while a
  pod is in flight and could help it is remembered, so a pod that then fails goes to backoff
  rather than waiting for an event that has already passed.

A pod deleted (or bound by someone else) leaves the queue wherever it is; one in flight is
dropped when it comes back. The queue never calls the API: the scheduler feeds it informer
events and the outcome of each attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any

from podling.api import meta

Obj = dict[str, Any]
MAX_IN_UNSCHEDULABLE = 300.0  # seconds (kube-scheduler's podMaxInUnschedulablePodsDuration)
UNSCHEDULABLE_FLUSH_PERIOD = 30.0
POD_UPDATE = "PodUpdate"  # the pod's own spec or labels changed


@dataclasses.dataclass(slots=True, eq=False)
class QueuedPod:
    key: str
    pod: Obj  # the newest version the informer showed
    timestamp: float  # when it was queued (or last failed): orders the active queue, starts its backoff
    attempts: int = 0
    cycle: int = 0  # the scheduling cycle of its last pop
    where: str = ""  # active, backoff, unschedulable, gated, flight
    rejected_by: frozenset[str] = frozenset()  # plugins that turned it away last time
    seen_events: set[str] = dataclasses.field(default_factory=set)  # events while it was in flight

    @property
    def priority(self) -> int:
        return int((self.pod.get("spec") or {}).get("priority") or 0)


def _gated(pod: Obj) -> bool:
    return bool((pod.get("spec") or {}).get("schedulingGates"))


def _scheduling_view(pod: Obj) -> tuple[Any, Any, Any]:
    """What of a pod can change the scheduling answer: spec, labels, annotations (not status)."""
    metadata = pod.get("metadata") or {}
    return pod.get("spec"), metadata.get("labels"), metadata.get("annotations")


class SchedulingQueue:
    def __init__(
        self,
        *,
        initial_backoff: float = 1.0,
        max_backoff: float = 10.0,
        plugin_events: Mapping[str, frozenset[str]],  # filter plugin -> events that may make it accept
        clock: Callable[[], float] = time.monotonic,  # swapped only by tests
    ) -> None:
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.plugin_events = plugin_events
        self._clock = clock
        self._pods: dict[str, QueuedPod] = {}
        self._waiting: dict[str, QueuedPod] = {}  # the unschedulable and in-flight pods: those events concern
        self._counts = dict.fromkeys(("active", "backoff", "unschedulable", "gated"), 0)
        self._active: list[tuple[int, float, int, QueuedPod]] = []  # (-priority, timestamp, seq, pod)
        self._backoff: list[tuple[float, int, QueuedPod]] = []  # (ready at, seq, pod)
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._flush_task: asyncio.Task[None] | None = None
        self.scheduling_cycle = 0
        self._closed = False

    # ---- informer events -----------------------------------------------------------------

    def add(self, pod: Obj) -> None:
        """A pending pod appeared (or reappeared in a relist)."""
        key = meta.object_key(pod)
        queued = self._pods.get(key)
        if queued is not None:
            self.update(pod)
            return
        queued = self._pods[key] = QueuedPod(key=key, pod=pod, timestamp=self._clock())
        if _gated(pod):
            self._place(queued, "gated")
        else:
            self._to_active(queued)

    def update(self, new: Obj) -> None:
        """A newer version of a pending pod."""
        key = meta.object_key(new)
        queued = self._pods.get(key)
        if queued is None:
            self.add(new)
            return
        if (queued.pod.get("metadata") or {}).get("uid") != (new.get("metadata") or {}).get("uid"):
            self.delete(queued.pod)  # the same name, a new pod
            self.add(new)
            return
        changed = _scheduling_view(queued.pod) != _scheduling_view(new)
        queued.pod = new
        if not changed:
            return
        if queued.where == "flight":
            queued.seen_events.add(POD_UPDATE)
        elif queued.where == "gated":
            if not _gated(new):
                self._to_active(queued)
        elif queued.where == "unschedulable":
            self._wake(queued)

    def delete(self, pod: Obj) -> None:
        queued = self._pods.pop(meta.object_key(pod), None)
        if queued is not None:
            self._place(queued, "deleted")  # its stale heap entries are skipped

    def move_all(self, event: str) -> None:
        """A cluster event: wake the unschedulable pods a plugin that rejected them cares about."""
        for queued in list(self._waiting.values()):
            if queued.where == "flight":
                queued.seen_events.add(event)
            elif queued.where == "unschedulable" and self._helps(queued, {event}):
                self._wake(queued)

    # ---- the scheduler's side ------------------------------------------------------------

    async def pop(self) -> QueuedPod | None:
        """The next pod to try (now in flight), or None once the queue is closed."""
        while True:
            while self._active:
                _, _, _, queued = heapq.heappop(self._active)
                if queued.where != "active":
                    continue
                self._place(queued, "flight")
                queued.attempts += 1
                self.scheduling_cycle += 1
                queued.cycle = self.scheduling_cycle
                queued.seen_events = set()
                return queued
            if self._closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    def done(self, queued: QueuedPod) -> None:
        """The pod was bound (or is gone): it leaves the queue."""
        if self._pods.get(queued.key) is queued:
            del self._pods[queued.key]
            self._place(queued, "done")

    def unschedulable(self, queued: QueuedPod, *, rejected_by: frozenset[str]) -> None:
        """No node fitted: wait for an event that may help (or backoff, if one came in flight)."""
        if self._pods.get(queued.key) is not queued:
            return
        queued.timestamp = self._clock()
        queued.rejected_by = rejected_by
        if self._helps(queued, queued.seen_events):
            self._to_backoff(queued)
        else:
            self._place(queued, "unschedulable")

    def retry(self, queued: QueuedPod) -> None:
        """An error (not a verdict on the nodes): try again after the backoff."""
        if self._pods.get(queued.key) is not queued:
            return
        queued.timestamp = self._clock()
        self._to_backoff(queued)

    def counts(self) -> dict[str, int]:
        """Pods per place: active, backoff, unschedulable, gated (in flight ones are not pending)."""
        return dict(self._counts)

    def backoff_duration(self, attempts: int) -> float:
        if attempts <= 0:
            return 0.0
        return min(self.initial_backoff * 2.0 ** min(attempts - 1, 32), self.max_backoff)

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._flush_task = asyncio.get_running_loop().create_task(self._flush_unschedulable(),
                                                                  name="scheduler queue flush")

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._flush_task is not None:
            self._flush_task.cancel()

    # ---- moves ---------------------------------------------------------------------------

    def _helps(self, queued: QueuedPod, events: set[str]) -> bool:
        if not events:
            return False
        if POD_UPDATE in events or not queued.rejected_by:
            return True
        return any(events & self.plugin_events.get(plugin, frozenset()) for plugin in queued.rejected_by)

    def _wake(self, queued: QueuedPod) -> None:
        if self._clock() < self._backoff_until(queued):
            self._to_backoff(queued)
        else:
            self._to_active(queued)

    def _backoff_until(self, queued: QueuedPod) -> float:
        return queued.timestamp + self.backoff_duration(queued.attempts)

    def _place(self, queued: QueuedPod, where: str) -> None:
        counts = self._counts
        if queued.where in counts:
            counts[queued.where] -= 1
        if where in counts:
            counts[where] += 1
        queued.where = where
        if where in ("unschedulable", "flight"):
            self._waiting[queued.key] = queued
        elif self._waiting.get(queued.key) is queued:
            del self._waiting[queued.key]

    def _to_active(self, queued: QueuedPod) -> None:
        self._place(queued, "active")
        heapq.heappush(self._active, (-queued.priority, queued.timestamp, next(self._seq), queued))
        self._wakeup.set()

    def _to_backoff(self, queued: QueuedPod) -> None:
        until = self._backoff_until(queued)
        if until <= self._clock():
            self._to_active(queued)
            return
        self._place(queued, "backoff")
        heapq.heappush(self._backoff, (until, next(self._seq), queued))
        self._arm(until)

    def _arm(self, at: float) -> None:
        if at >= self._timer_at or self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = at
        self._timer = loop.call_later(max(at - self._clock(), 0.0), self._flush_backoff)

    def _flush_backoff(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        now = self._clock()
        while self._backoff and self._backoff[0][0] <= now:
            _, _, queued = heapq.heappop(self._backoff)
            if queued.where == "backoff" and self._pods.get(queued.key) is queued:
                self._to_active(queued)
        while self._backoff and self._backoff[0][2].where != "backoff":
            heapq.heappop(self._backoff)  # stale entries of pods that moved on
        if self._backoff:
            self._arm(self._backoff[0][0])

    def flush_unschedulable(self) -> None:
        """Wake the pods that have waited longer than ``MAX_IN_UNSCHEDULABLE`` for an event."""
        now = self._clock()
        for queued in list(self._waiting.values()):
            if queued.where == "unschedulable" and now - queued.timestamp > MAX_IN_UNSCHEDULABLE:
                self._wake(queued)

    async def _flush_unschedulable(self) -> None:
        while True:
            await asyncio.sleep(UNSCHEDULABLE_FLUSH_PERIOD)
            self.flush_unschedulable()
