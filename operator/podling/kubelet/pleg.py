"""The pod lifecycle event generator: the runtime's state, relisted into a cache.

Invariants:

* The cache is the runtime's state as of the last completed relist; readers never talk to
  the runtime themselves, so 110 pod workers cost one list, not 110.
* ``refresh()`` returns only after a relist that *started after the call* has completed, so
  a pod worker that just started a container sees it. Concurrent calls share relists: at most
  one runs and at most one more is pending.
* After every relist, each pod whose sandboxes or containers changed (appeared, went away,
  changed state) is reported through ``on_change(pod_uid)`` exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable

from podling.kubelet.runtime.base import Runtime
from podling.kubelet.status import PodRuntime

log = logging.getLogger("podling.kubelet.pleg")

_Fingerprint = frozenset[tuple[str, str, int]]


def _fingerprint(pod: PodRuntime) -> _Fingerprint:
    return frozenset({*((s.id, "ready" if s.ready else "notready", 0) for s in pod.sandboxes),
                      *((c.id, c.state, c.exit_code) for c in pod.containers)})


class RuntimeCache:
    def __init__(self, *, runtime: Runtime, on_change: Callable[[str], None]) -> None:
        self.runtime = runtime
        self.on_change = on_change
        self._pods: dict[str, PodRuntime] = {}
        self._fingerprints: dict[str, _Fingerprint] = {}
        self._pending: asyncio.Future[None] | None = None  # the next relist, not started yet
        self._worker: asyncio.Task[None] | None = None
        self.relisted = asyncio.Event()  # set once the first relist is in
        self._poked = asyncio.Event()

    def pod(self, uid: str) -> PodRuntime:
        return self._pods.get(uid) or PodRuntime()

    def uids(self) -> list[str]:
        return [*self._pods]

    async def refresh(self) -> None:
        """Wait for a relist that starts after now."""
        if self._pending is None:
            self._pending = asyncio.get_running_loop().create_future()
        pending = self._pending
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="pleg relist")
        await asyncio.shield(pending)

    def poke(self) -> None:
        """Relist now rather than at the next period (the runtime reported a change)."""
        self._poked.set()

    async def run_periodically(self, *, period: float) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as err:  # the runtime is down: keep trying, the kubelet stays up
                log.warning("relisting the runtime failed: %s", err)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._poked.wait(), period)
            self._poked.clear()

    async def _run(self) -> None:
        while self._pending is not None:
            pending, self._pending = self._pending, None
            try:
                await self._relist()
            except Exception as err:
                pending.set_exception(err)
                pending.exception()  # retrieved: callers that left do not leave a warning behind
            else:
                pending.set_result(None)

    async def _relist(self) -> None:
        sandboxes, containers = await asyncio.gather(self.runtime.list_sandboxes(), self.runtime.list_containers())
        grouped_sandboxes = collections.defaultdict(list)
        grouped_containers = collections.defaultdict(list)
        for sandbox in sandboxes:
            grouped_sandboxes[sandbox.pod_uid].append(sandbox)
        for container in containers:
            grouped_containers[container.pod_uid].append(container)
        pods = {uid: PodRuntime(tuple(grouped_sandboxes.get(uid, ())), tuple(grouped_containers.get(uid, ())))
                for uid in {*grouped_sandboxes, *grouped_containers}}
        fingerprints = {uid: _fingerprint(pod) for uid, pod in pods.items()}
        changed = [uid for uid in {*fingerprints, *self._fingerprints}
                   if fingerprints.get(uid) != self._fingerprints.get(uid)]
        self._pods, self._fingerprints = pods, fingerprints
        self.relisted.set()
        for uid in changed:
            self.on_change(uid)
