"""The scheduler: pending pods from the queue, a node for each from its profile, a binding.

Invariants:

* One informer factory of its own watches pods, nodes, Services and PersistentVolumeClaims.
  Its handlers only update the cache (bound pods, nodes, Services) and the queue (pending
  pods of this scheduler's profiles, and the cluster events that wake rejected pods); no
  handler calls the API. Pods being deleted are not scheduled; finished pods hold nothing.
* One pod is scheduled at a time, and its scheduling cycle (filter, score, assume) runs
  without an await, so every cycle sees the cache as the previous cycle left it. The
  binding then runs in the background: up to ``BINDS_IN_FLIGHT`` at once while the next
  pods are placed. That is safe because the chosen node counts the pod from the moment it
  is assumed; a failed binding un-assumes it.
* A binding the API refuses because the pod is bound already or gone (409, 404) is
  dropped quietly: the informer will show what happened. Any other failure retries the pod
  with backoff.
* A pod nothing fits stays pending with ``PodScheduled=False``, reason Unschedulable and
  Kubernetes' message, and a FailedScheduling event; its status is written only when that
  condition changes. Events never hold up scheduling: they wait in a bounded queue, are
  written at kube-scheduler's default client rate (50/s, bursts of 100) so they never take
  the API server's capacity from bindings, and the surplus is dropped (and counted), as
  client-go's broadcaster drops it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from typing import Any

from podling.api import meta
from podling.api.resources import Resource, find
from podling.client.events import EventRecorder
from podling.client.http import ApiClient, is_conflict, is_not_found
from podling.client.informer import InformerFactory
from podling.scheduler.cache import Cache
from podling.scheduler.config import Profile, SchedulerConfig
from podling.scheduler.framework import (CLAIM_CHANGE, NODE_ADD, NODE_UPDATE, POD_DELETE, SAMPLE_PERCENT, FitError,
                                         Framework, Handle, PluginTimer)
from podling.scheduler.info import PodInfo, is_terminal, pod_info
from podling.scheduler.metrics import SchedulerMetrics
from podling.scheduler.plugins import REGISTRY
from podling.scheduler.queue import QueuedPod, SchedulingQueue

log = logging.getLogger("podling.scheduler")

Obj = dict[str, Any]
BINDS_IN_FLIGHT = 96  # the API client pools 100 connections: the rest carry events and status writes
EVENTS_QUEUED = 1000  # client-go's maxQueuedEvents
EVENTS_QPS, EVENTS_BURST = 50.0, 100  # kube-scheduler's default client rate, which its events go through
YIELD_EVERY = 0.002  # seconds of scheduling before the loop lets bindings and watches run
_STOP_GRACE = 5.0  # seconds bindings in flight may take to finish at stop


def _resource(group: str, plural: str) -> Resource:
    resource = find(group=group, version="v1", plural=plural)
    assert resource is not None
    return resource


_PODS = _resource("", "pods")
_NODES = _resource("", "nodes")
_SERVICES = _resource("", "services")
_CLAIMS = _resource("", "persistentvolumeclaims")


def _assigned(pod: Obj) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def _node_view(node: Obj) -> tuple[Any, ...]:
    """What of a node scheduling reads; a heartbeat changes none of it."""
    spec, status = node.get("spec") or {}, node.get("status") or {}
    ready = meta.get_condition(status, "Ready") or {}
    return (spec.get("unschedulable"), spec.get("taints"), meta.labels(node), status.get("allocatable"),
            ready.get("status"))


def build_framework(profile: Profile, *, handle: Handle, percentage: int,
                    rng: random.Random | None = None) -> Framework:
    """A profile's plugins, one instance per plugin serving both filter and score."""
    instances: dict[str, Any] = {}

    def plugin(name: str) -> Any:
        if name not in instances:
            instances[name] = REGISTRY[name](handle)
        return instances[name]

    return Framework(name=profile.scheduler_name, filters=[plugin(name) for name in profile.filters],
                     scores=[(plugin(name), weight) for name, weight in profile.scores],
                     percentage_of_nodes_to_score=percentage, rng=rng)


class Scheduler:
    def __init__(self, *, api: ApiClient, config: SchedulerConfig, rng: random.Random | None = None) -> None:
        self.api = api
        self.config = config
        self._rng = rng or random.Random()
        self.informers = InformerFactory(api)
        self.pods = self.informers.informer(_PODS)
        self.nodes = self.informers.informer(_NODES)
        self.services = self.informers.informer(_SERVICES)
        self.claims = self.informers.informer(_CLAIMS)
        self.cache = Cache()
        handle = Handle(cache=self.cache, claim=self.claims.get)
        self.frameworks = {profile.scheduler_name: build_framework(profile, handle=handle,
                                                                   percentage=config.percentage(profile), rng=self._rng)
                           for profile in config.profiles}
        self.recorders = {name: EventRecorder(api, component=name) for name in self.frameworks}
        plugin_events = {plugin.name: plugin.events for framework in self.frameworks.values()
                         for plugin in framework.filters}
        self.queue = SchedulingQueue(initial_backoff=config.pod_initial_backoff, max_backoff=config.pod_max_backoff,
                                     plugin_events=plugin_events)
        self.metrics = SchedulerMetrics(pending=self.queue.counts)
        self._next_start = 0  # where the next cycle starts walking the nodes
        self._bind_slots = asyncio.Semaphore(BINDS_IN_FLIGHT)
        self._background: set[asyncio.Task[None]] = set()
        self._events: asyncio.Queue[tuple[str, Obj, str, str, str]] = asyncio.Queue(maxsize=EVENTS_QUEUED)
        self._loop: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.pods.add_handlers(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)
        self.nodes.add_handlers(on_add=self._node_added, on_update=self._node_updated, on_delete=self._node_deleted)
        self.services.add_handlers(on_add=self.cache.set_service, on_update=lambda _, new: self.cache.set_service(new),
                                   on_delete=self.cache.remove_service)
        self.claims.add_handlers(on_add=lambda _: self.queue.move_all(CLAIM_CHANGE),
                                 on_update=lambda _, __: self.queue.move_all(CLAIM_CHANGE))

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Fill the caches, then schedule in the background until ``stop()``."""
        self.informers.start()
        await self.informers.wait_synced()
        # What the caches hold now lives long and holds no cycles: spare the cyclic garbage
        # collector from walking it on every full collection (with 10,000 pods cached, those
        # walks cost a busy scheduler about 5% of its time). Objects are still freed as usual.
        gc.freeze()
        self.queue.start()
        loop = asyncio.get_running_loop()
        self._loop = loop.create_task(self._run(), name="scheduler loop")
        self._writer = loop.create_task(self._write_events(), name="scheduler events")
        counts = self.queue.counts()
        log.info("scheduler ready: profiles %s; %d nodes, %d pods pending", ", ".join(self.frameworks),
                 len(self.cache.nodes), sum(counts.values()))

    async def stop(self) -> None:
        """Stop scheduling, give bindings in flight a moment to finish, then stop watching."""
        self.queue.close()
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._background:
            await asyncio.wait(self._background, timeout=_STOP_GRACE)
        rest = [*self._background, *([self._writer] if self._writer is not None else [])]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        await self.informers.stop()

    # ---- the scheduling loop -------------------------------------------------------------

    async def _run(self) -> None:
        yielded = time.perf_counter()
        while (queued := await self.queue.pop()) is not None:
            try:
                await self._schedule_one(queued)
            except Exception:  # a bug: log it, let the pod retry, keep scheduling the others
                log.exception("scheduling %s failed", queued.key)
                self.queue.retry(queued)
            if time.perf_counter() - yielded > YIELD_EVERY:
                await asyncio.sleep(0)  # let bindings and watches move
                yielded = time.perf_counter()

    async def _schedule_one(self, queued: QueuedPod) -> None:
        start = time.perf_counter()
        pod = queued.pod
        framework = self.frameworks.get((pod.get("spec") or {}).get("schedulerName") or "")
        if framework is None or not self._pending(pod) or self.cache.is_assumed(pod):
            self.queue.done(queued)
            return
        info = pod_info(pod)
        nodes = self.cache.nodes
        timer = PluginTimer() if self._rng.randrange(100) < SAMPLE_PERCENT else None
        try:
            result = framework.schedule(info, nodes, start=self._next_start, timer=timer)
        except Exception as err:
            log.exception("%s: scheduling %s failed", framework.name, queued.key)
            self.queue.retry(queued)
            self._failed(framework.name, queued, reason="SchedulerError", message=str(err), result="error",
                         start=start)
            return
        finally:
            self.metrics.algorithm_duration.observe(time.perf_counter() - start)
            if timer is not None:
                for (plugin, point, status), seconds in timer.totals.items():
                    self.metrics.plugin_duration.labels(plugin, point, status).observe(seconds)
        if isinstance(result, FitError):
            self.queue.unschedulable(queued, rejected_by=result.plugins)
            self._failed(framework.name, queued, reason="Unschedulable", message=result.message,
                         result="unschedulable", start=start)
            return
        self._next_start = (self._next_start + result.evaluated) % len(nodes)
        self.cache.assume(info, result.node)
        await self._bind_slots.acquire()
        self._spawn(self._bind(framework.name, queued, info, result.node, start=start))

    def _pending(self, pod: Obj) -> bool:
        """A pod this scheduler should place: unbound, not being deleted, not finished, one of its profiles'."""
        return (not _assigned(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp")
                and not is_terminal(pod) and ((pod.get("spec") or {}).get("schedulerName") or "") in self.frameworks)

    async def _bind(self, profile: str, queued: QueuedPod, info: PodInfo, node: str, *, start: float) -> None:
        try:
            await self.api.bind(info.pod, node)
        except Exception as err:
            self.cache.forget(info)
            if is_conflict(err) or is_not_found(err):
                log.debug("binding %s to %s: %s; dropped", info.key, node, err)
                self.queue.done(queued)
                return
            log.warning("binding %s to %s failed: %s", info.key, node, err)
            current = self.pods.get(info.key)
            if current is None or not self._pending(current):
                self.queue.done(queued)
                return
            self.queue.retry(queued)
            self._failed(profile, queued, reason="SchedulerError", message=f"Binding rejected: {err}", result="error",
                         start=start)
        else:
            self.queue.done(queued)
            self.metrics.attempts.labels("scheduled", profile).inc()
            self.metrics.attempt_duration.labels("scheduled", profile).observe(time.perf_counter() - start)
            self._event(profile, info.pod, "Normal", "Scheduled", f"Successfully assigned {info.key} to {node}")
        finally:
            self._bind_slots.release()

    # ---- failures, events ----------------------------------------------------------------

    def _failed(self, profile: str, queued: QueuedPod, *, reason: str, message: str, result: str,
                start: float) -> None:
        self.metrics.attempts.labels(result, profile).inc()
        self.metrics.attempt_duration.labels(result, profile).observe(time.perf_counter() - start)
        log.info("%s: cannot schedule %s: %s", profile, queued.key, message)
        self._event(profile, queued.pod, "Warning", "FailedScheduling", message)
        current = meta.get_condition(queued.pod.get("status"), "PodScheduled") or {}
        wanted = {"status": "False", "reason": reason, "message": message}
        if any(current.get(field) != value for field, value in wanted.items()):
            self._spawn(self._set_unscheduled(queued.pod, wanted, changed=current.get("status") != "False"))

    async def _set_unscheduled(self, pod: Obj, condition: dict[str, str], *, changed: bool) -> None:
        entry: dict[str, Any] = {"type": "PodScheduled", **condition, "lastProbeTime": None}
        if changed:
            entry["lastTransitionTime"] = meta.now_rfc3339()
        try:
            await self.api.patch(_PODS, namespace=meta.namespace(pod), name=meta.name(pod), subresource="status",
                                 patch_type="strategic", body={"status": {"conditions": [entry]}})
        except Exception as err:
            if not is_not_found(err):
                log.warning("could not set PodScheduled=False on %s: %s", meta.object_key(pod), err)

    def _event(self, profile: str, pod: Obj, type_: str, reason: str, message: str) -> None:
        try:
            self._events.put_nowait((profile, pod, type_, reason, message))
        except asyncio.QueueFull:
            self.metrics.events_dropped.inc()

    async def _write_events(self) -> None:
        """Write queued events, at most ``EVENTS_QPS`` a second after a burst of ``EVENTS_BURST``."""
        loop = asyncio.get_running_loop()
        tokens, last = float(EVENTS_BURST), loop.time()
        while True:
            profile, pod, type_, reason, message = await self._events.get()
            now = loop.time()
            tokens, last = min(float(EVENTS_BURST), tokens + (now - last) * EVENTS_QPS), now
            if tokens < 1.0:
                await asyncio.sleep((1.0 - tokens) / EVENTS_QPS)
                tokens, last = 1.0, loop.time()
            tokens -= 1.0
            await self.recorders[profile].event(pod, type=type_, reason=reason,  # type: ignore[arg-type]
                                                message=message)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- informer handlers (they only touch the cache and the queue) ---------------------

    def _pod_added(self, pod: Obj) -> None:
        if _assigned(pod):
            self.cache.add_pod(pod)
        elif self._pending(pod) and not self.cache.is_assumed(pod):
            self.queue.add(pod)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if _assigned(new):
            if not _assigned(old):
                self.queue.delete(new)  # bound: by us (the echo of a binding) or by someone else
            key = meta.object_key(new)
            counted = self.cache.counted(key)
            self.cache.add_pod(new)
            if counted and not self.cache.counted(key):
                self.queue.move_all(POD_DELETE)  # it finished: its node has room again
        elif self._pending(new):
            if not self.cache.is_assumed(new):
                self.queue.update(new)
        else:
            self.queue.delete(new)

    def _pod_deleted(self, pod: Obj) -> None:
        self.queue.delete(pod)
        if self.cache.remove_pod(meta.object_key(pod)):
            self.queue.move_all(POD_DELETE)

    def _node_added(self, node: Obj) -> None:
        self.cache.set_node(node)
        self.queue.move_all(NODE_ADD)

    def _node_updated(self, old: Obj, new: Obj) -> None:
        self.cache.set_node(new)
        if _node_view(old) != _node_view(new):
            self.queue.move_all(NODE_UPDATE)

    def _node_deleted(self, node: Obj) -> None:
        self.cache.remove_node(meta.name(node))
