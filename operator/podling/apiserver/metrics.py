"""The API server's Prometheus metrics (``podling_apiserver_*``), on its own registry.

A registry per server (not the process-global one) so that two servers in one process, as
in tests, never share counters.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from podling.store.base import Event, KeyValue, Store

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ApiserverMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "podling_apiserver_requests_total", "API requests by verb, resource and HTTP code.",
            ["verb", "resource", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "podling_apiserver_request_duration_seconds", "API request latency (watches: until the stream opens).",
            ["verb", "resource"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.watches = Gauge(
            "podling_apiserver_open_watches", "Watch streams open now, by resource.",
            ["resource"], registry=self.registry,
        )
        self.store_latency = Histogram(
            "podling_apiserver_store_operation_duration_seconds", "Store operation latency by operation.",
            ["operation"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.objects = Gauge(
            "podling_apiserver_objects", "Objects stored, by resource (counted periodically).",
            ["resource"], registry=self.registry,
        )

    @asynccontextmanager
    async def watching(self, resource: str) -> AsyncIterator[None]:
        gauge = self.watches.labels(resource)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()



class InstrumentedStore(Store):
    """The store, with each operation's latency recorded in ``store_latency``."""

    def __init__(self, *, store: Store, metrics: ApiserverMetrics) -> None:
        self.inner = store
        self._histogram = metrics.store_latency

    @contextmanager
    def _timed(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._histogram.labels(operation).observe(time.perf_counter() - start)

    async def get(self, key: str) -> KeyValue | None:
        with self._timed("get"):
            return await self.inner.get(key)

    async def list(
        self, prefix: str, *, revision: int = 0, start_after: str | None = None, limit: int = 0
    ) -> tuple[list[KeyValue], int, bool]:
        with self._timed("list"):
            return await self.inner.list(prefix, revision=revision, start_after=start_after, limit=limit)

    async def create(self, key: str, value: bytes) -> int:
        with self._timed("create"):
            return await self.inner.create(key, value)

    async def update(self, key: str, value: bytes, *, revision: int) -> int:
        with self._timed("update"):
            return await self.inner.update(key, value, revision=revision)

    async def delete(self, key: str, *, revision: int | None = None) -> int:
        with self._timed("delete"):
            return await self.inner.delete(key, revision=revision)

    def watch(self, prefix: str, *, revision: int) -> AsyncIterator[Event]:
        return self.inner.watch(prefix, revision=revision)

    async def compact(self, revision: int) -> None:
        with self._timed("compact"):
            await self.inner.compact(revision)

    async def current_revision(self) -> int:
        return await self.inner.current_revision()

    async def compacted_revision(self) -> int:
        return await self.inner.compacted_revision()

    async def close(self) -> None:
        await self.inner.close()
