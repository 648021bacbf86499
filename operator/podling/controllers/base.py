"""What every controller is made of, and the options and metrics they share.

Invariants:

* A controller is constructed from a :class:`Context` (no I/O in ``__init__``: it only asks
  the shared informer factory for the informers it needs and adds event handlers that
  enqueue keys) and then ``await controller.run(workers=N)`` reconciles keys until
  cancelled. It never imports another controller or component: it talks through the API.
* Every work queue is registered with :class:`ControllerMetrics`, which reads each queue's
  depth, adds and retries at scrape time (``podling_controller_*{controller}``); reconcile
  durations are observed by :meth:`Context.reconciler`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from podling.api.resources import Resource, find
from podling.client.events import EventRecorder
from podling.client.http import ApiClient
from podling.client.informer import InformerFactory
from podling.client.workqueue import WorkQueue


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ControllerOptions:
    """Every timeout is a flag of ``podling controller-manager`` so tests can shorten it."""

    node_monitor_period: float = 5.0  # how often node health is checked
    node_monitor_grace_period: float = 40.0  # a lease older than this: the node is Unknown
    node_startup_grace_period: float = 60.0  # a new node may take this long to post its first status
    default_toleration_seconds: int = 300  # not-ready/unreachable NoExecute tolerations added to pods
    cluster_cidr: str = "10.244.0.0/16"  # podCIDRs for nodes are carved from it
    node_cidr_mask_size: int = 24
    service_account_key_file: Path | None = None  # signs service account tokens (RS256)
    terminated_pod_gc_threshold: int = 12500


class _QueueCollector(Collector):
    def __init__(self) -> None:
        self.queues: dict[str, WorkQueue] = {}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        depth = GaugeMetricFamily("podling_controller_workqueue_depth", "Keys waiting in a controller's queue.",
                                  labels=["controller"])
        adds = CounterMetricFamily("podling_controller_workqueue_adds", "Keys added to a controller's queue.",
                                   labels=["controller"])
        retries = CounterMetricFamily("podling_controller_workqueue_retries",
                                      "Keys re-added after a failed reconcile.", labels=["controller"])
        for name, queue in self.queues.items():
            depth.add_metric([name], len(queue))
            adds.add_metric([name], queue.adds)
            retries.add_metric([name], queue.retries)
        yield from (depth, adds, retries)


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._queues = _QueueCollector()
        self.registry.register(self._queues)
        self.reconcile = Histogram(
            "podling_controller_reconcile_duration_seconds", "Duration of one reconcile, by controller.",
            ["controller"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry)

    def queue(self, name: str) -> WorkQueue:
        """A new work queue for controller ``name``, reported in the metrics."""
        queue = WorkQueue(name=name)
        self._queues.queues[name] = queue
        return queue


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    api: ApiClient
    informers: InformerFactory
    recorder: EventRecorder
    metrics: ControllerMetrics
    options: ControllerOptions

    def reconciler(self, name: str, reconcile: Callable[[str], Awaitable[None]]) -> Callable[[str], Awaitable[None]]:
        """``reconcile`` with its duration observed under ``name``."""
        histogram = self.metrics.reconcile.labels(name)

        async def timed(key: str) -> None:
            start = time.perf_counter()
            try:
                await reconcile(key)
            finally:
                histogram.observe(time.perf_counter() - start)

        return timed


def resource(group: str, version: str, plural: str) -> Resource:
    """The resource table's entry (a controller's kinds are always served)."""
    found = find(group=group, version=version, plural=plural)
    assert found is not None, plural
    return found


Obj = dict[str, Any]


class OwnWrites:
    """Objects written by this controller whose new version the informer has not shown yet.

    A reconcile reading such an object from the cache would act on the version before its own
    write (and earn a 409 Conflict). The write's watch event requeues the key, so the reconcile
    can simply wait for it. Objects are told apart by uid; versions by the resourceVersion
    before the write, compared for equality only (resourceVersions are opaque).
    """

    def __init__(self) -> None:
        self._before: dict[str, set[str]] = {}  # uid -> the resourceVersions our writes replaced

    def wrote(self, before: Obj, after: Obj) -> None:
        old, new = _resource_version(before), _resource_version(after)
        if old and new and old != new:  # a write that changed nothing brings no event to wait for
            self._before.setdefault(_uid(before), set()).add(old)

    def behind(self, cached: Obj) -> bool:
        """True while the cache holds the version this controller overwrote."""
        if not self._before:
            return False
        replaced = self._before.get(_uid(cached))
        if replaced is None:
            return False
        if _resource_version(cached) in replaced:
            return True
        del self._before[_uid(cached)]  # every version since ours is newer than all we replaced
        return False

    def forget(self, obj: Obj) -> None:
        self._before.pop(_uid(obj), None)


def _uid(obj: Obj) -> str:
    return (obj.get("metadata") or {}).get("uid") or ""


def _resource_version(obj: Obj) -> str:
    return (obj.get("metadata") or {}).get("resourceVersion") or ""


def remove_condition(status: Obj, condition_type: str) -> None:
    """Drop ``status.conditions`` of ``condition_type`` (and the list when it empties)."""
    conditions = [c for c in status.get("conditions") or () if c.get("type") != condition_type]
    if conditions:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)
