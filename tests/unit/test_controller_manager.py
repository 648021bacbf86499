"""The controller manager's plumbing: choosing controllers, and queue and reconcile metrics."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from podling.controllers.base import ControllerMetrics
from podling.controllers.manager import CONTROLLERS, select


def test_select_all_some_and_all_but_one() -> None:
    assert select("*") == list(CONTROLLERS)
    assert select("replicaset,deployment") == ["replicaset", "deployment"]
    assert select("*,-garbagecollector") == [name for name in CONTROLLERS if name != "garbagecollector"]


@pytest.mark.parametrize("spec", ["nosuch", "*,-nosuch"])
def test_select_names_an_unknown_controller(spec: str) -> None:
    with pytest.raises(ValueError, match="unknown controller 'nosuch'"):
        select(spec)


async def test_queue_metrics_read_depth_adds_and_retries_at_scrape_time() -> None:
    metrics = ControllerMetrics()
    queue = metrics.queue("replicaset")
    queue.add("ns/a")
    queue.add("ns/a")  # already pending: not counted again
    queue.add("ns/b")
    key = await queue.get()
    assert key is not None
    queue.add_rate_limited(key)
    queue.done(key)
    text = generate_latest(metrics.registry).decode()
    assert 'podling_controller_workqueue_depth{controller="replicaset"} 1.0' in text
    assert 'podling_controller_workqueue_adds_total{controller="replicaset"} 2.0' in text
    assert 'podling_controller_workqueue_retries_total{controller="replicaset"} 1.0' in text
    queue.shutdown()
