"""The proxy's metrics, on a registry of its own (``ProxyMetrics.registry``).

Invariant: everything but the sync histogram is read at scrape time from the proxy's own
state (what the last sync programmed, the userspace counters, or the iptables rule counters),
so a scrape shows the node as it is and no stale label outlives its service.

* ``podling_proxy_sync_rules_duration_seconds``: one sync (read the node's rules, write them).
* ``podling_proxy_endpoints{service}``: ready endpoint addresses per service, as last synced.
* ``podling_proxy_rules{table}`` (iptables mode): rules in podling's chains plus the jumps to them.
* ``podling_proxy_listeners`` (userspace mode): listening sockets.
* ``podling_proxy_connections_total{service}``: connections proxied; in iptables mode the
  packet counters of the DNAT rules (the first packet of each connection), read with
  ``iptables-save -c`` at scrape time and carried over rebuilds.
* ``podling_proxy_bytes_total{service,direction}`` (userspace mode): ``in`` from clients to
  endpoints, ``out`` back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _StateCollector(Collector):
    def __init__(self, *, endpoints: Callable[[], Mapping[str, int]], rules: Callable[[], Mapping[str, int]],
                 listeners: Callable[[], int | None], connections: Callable[[], Mapping[str, int]],
                 traffic: Callable[[], Mapping[str, tuple[int, int]]]) -> None:
        self._endpoints = endpoints
        self._rules = rules
        self._listeners = listeners
        self._connections = connections
        self._traffic = traffic

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # so registering does not collect (which may run iptables-save)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        endpoints = GaugeMetricFamily("podling_proxy_endpoints", "Ready endpoint addresses of a service, as last "
                                      "programmed.", labels=["service"])
        for service, count in sorted(self._endpoints().items()):
            endpoints.add_metric([service], count)
        yield endpoints
        rules = GaugeMetricFamily("podling_proxy_rules", "Rules in podling's iptables chains and the jumps to them.",
                                  labels=["table"])
        for table, count in sorted(self._rules().items()):
            rules.add_metric([table], count)
        yield rules
        listeners = self._listeners()
        if listeners is not None:
            yield GaugeMetricFamily("podling_proxy_listeners", "Listening sockets (userspace mode).", value=listeners)
        connections = CounterMetricFamily("podling_proxy_connections", "Connections proxied to a service's "
                                          "endpoints.", labels=["service"])
        for service, count in sorted(self._connections().items()):
            connections.add_metric([service], count)
        yield connections
        traffic = CounterMetricFamily("podling_proxy_bytes", "Bytes relayed (userspace mode): in from clients, out "
                                      "to them.", labels=["service", "direction"])
        for service, (bytes_in, bytes_out) in sorted(self._traffic().items()):
            traffic.add_metric([service, "in"], bytes_in)
            traffic.add_metric([service, "out"], bytes_out)
        yield traffic


class ProxyMetrics:
    def __init__(self, *, endpoints: Callable[[], Mapping[str, int]], rules: Callable[[], Mapping[str, int]],
                 listeners: Callable[[], int | None], connections: Callable[[], Mapping[str, int]],
                 traffic: Callable[[], Mapping[str, tuple[int, int]]],
                 registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.registry.register(_StateCollector(endpoints=endpoints, rules=rules, listeners=listeners,
                                               connections=connections, traffic=traffic))
        self.sync_duration = Histogram("podling_proxy_sync_rules_duration_seconds",
                                       "Duration of one sync of the node's service rules or listeners.",
                                       buckets=_BUCKETS, registry=self.registry)
