"""The kubelet's Prometheus metrics (``podling_kubelet_*``), on a registry of its own.

A registry per kubelet (not the process-global one), so that several kubelets in one process
never share counters. Runtime operations are timed by :class:`InstrumentedRuntime`, which
wraps any runtime without changing what it does.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from podling.kubelet.runtime.base import Runtime, RuntimeError_

T = TypeVar("T")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class KubeletMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.pod_start = Histogram(
            "podling_kubelet_pod_start_duration_seconds",
            "From a pod's creation to the kubelet seeing all its containers running and ready.",
            buckets=(0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0), registry=self.registry)
        self.container_restarts = Counter(
            "podling_kubelet_container_restarts_total", "Containers restarted (crashes, failed probes, new specs).",
            registry=self.registry)
        self.probes = Counter(
            "podling_kubelet_probe_total", "Probe runs by probe type and result.", ["probe_type", "result"],
            registry=self.registry)
        self.runtime_latency = Histogram(
            "podling_kubelet_runtime_operations_duration_seconds", "Container runtime operation latency.",
            ["operation"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.runtime_errors = Counter(
            "podling_kubelet_runtime_operations_errors_total", "Container runtime operations that failed.",
            ["operation"], registry=self.registry)
        self.running_pods = Gauge(
            "podling_kubelet_running_pods", "Pods with a running sandbox on this node.", registry=self.registry)
        self.running_containers = Gauge(
            "podling_kubelet_running_containers", "Containers running on this node.", registry=self.registry)
        self.sync_latency = Histogram(
            "podling_kubelet_pod_worker_duration_seconds", "Duration of one sync pass of a pod.",
            buckets=_LATENCY_BUCKETS, registry=self.registry)


_TIMED = ("ensure_image", "run_sandbox", "stop_sandbox", "remove_sandbox", "list_sandboxes", "create_container",
          "start_container", "stop_container", "remove_container", "list_containers", "exec_sync", "ensure_volume")


class InstrumentedRuntime(Runtime):
    """A runtime whose operations are timed and whose failures are counted."""

    def __init__(self, inner: Runtime, *, metrics: KubeletMetrics) -> None:
        self.inner = inner
        self.name = inner.name
        self._metrics = metrics
        for operation in _TIMED:
            setattr(self, operation, self._timed(operation, getattr(inner, operation)))

    def _timed(self, operation: str, call: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        latency = self._metrics.runtime_latency.labels(operation)
        errors = self._metrics.runtime_errors.labels(operation)

        async def timed(*args: Any, **kwargs: Any) -> T:
            start = time.perf_counter()
            try:
                return await call(*args, **kwargs)
            except RuntimeError_:
                errors.inc()
                raise
            finally:
                latency.observe(time.perf_counter() - start)

        return timed

    # Methods not timed (streams) or not worth timing go straight through.
    async def version(self) -> str:
        return await self.inner.version()

    async def exec_stream(self, container_id: str, command: Any, **kwargs: Any) -> int:
        return await self.inner.exec_stream(container_id, command, **kwargs)

    def logs(self, container_id: str, **kwargs: Any) -> AsyncIterator[bytes]:
        return self.inner.logs(container_id, **kwargs)

    def events(self) -> AsyncIterator[Any]:
        return self.inner.events()

    async def close(self) -> None:
        await self.inner.close()

    # The abstract methods, bound per instance in __init__.
    ensure_image = run_sandbox = stop_sandbox = remove_sandbox = list_sandboxes = None  # type: ignore[assignment]
    create_container = start_container = stop_container = remove_container = None  # type: ignore[assignment]
    list_containers = exec_sync = ensure_volume = None  # type: ignore[assignment]
