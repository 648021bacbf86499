"""The scheduler's metrics, on a registry of its own (``SchedulerMetrics.registry``).

* ``podling_scheduler_schedule_attempts_total{result,profile}``: result is scheduled,
  unschedulable or error, as kube-scheduler's ``schedule_attempts_total``.
* ``podling_scheduler_scheduling_attempt_duration_seconds{result,profile}``: from taking the
  pod off the queue to the end of the attempt; for a scheduled pod that includes its
  binding, as in kube-scheduler.
* ``podling_scheduler_scheduling_algorithm_duration_seconds``: filtering and scoring alone.
* ``podling_scheduler_pending_pods{queue}``: active, backoff, unschedulable, gated, read
  from the queue at scrape time.
* ``podling_scheduler_plugin_execution_duration_seconds{plugin,extension_point,status}``:
  sampled cycles only (one in ten); one observation per plugin and extension point per
  cycle, the plugin's total time there (a Filter total covers every node it checked).
* ``podling_scheduler_events_dropped_total``: Events not written because too many were
  waiting (the recorder never holds up scheduling).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


def _exponential(start: float, factor: float, count: int) -> tuple[float, ...]:
    return tuple(start * factor ** i for i in range(count))


class _PendingCollector(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pending = GaugeMetricFamily("podling_scheduler_pending_pods", "Pending pods, by queue.", labels=["queue"])
        for queue, count in self._counts().items():
            pending.add_metric([queue], count)
        yield pending


class SchedulerMetrics:
    def __init__(self, *, pending: Callable[[], dict[str, int]], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.registry.register(_PendingCollector(pending))
        self.attempts = Counter(
            "podling_scheduler_schedule_attempts_total", "Scheduling attempts, by result and profile.",
            ["result", "profile"], registry=self.registry)
        self.attempt_duration = Histogram(
            "podling_scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency (binding included for scheduled pods), by result and profile.",
            ["result", "profile"], buckets=_exponential(0.001, 2, 15), registry=self.registry)
        self.algorithm_duration = Histogram(
            "podling_scheduler_scheduling_algorithm_duration_seconds", "Filtering and scoring latency.",
            buckets=_exponential(0.0001, 2, 15), registry=self.registry)
        self.plugin_duration = Histogram(
            "podling_scheduler_plugin_execution_duration_seconds",
            "Time in a plugin at an extension point during one sampled scheduling cycle.",
            ["plugin", "extension_point", "status"], buckets=_exponential(0.00001, 1.5, 20), registry=self.registry)
        self.events_dropped = Counter(
            "podling_scheduler_events_dropped_total", "Events dropped because the recorder was behind.",
            registry=self.registry)
