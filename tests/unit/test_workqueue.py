"""The work queue: dedupe, one worker per key, rate-limited retries, delays and shutdown."""

from __future__ import annotations

import asyncio
import logging

import pytest

from podling.client.workqueue import RateLimiter, WorkQueue, run_workers


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_pending_keys_are_deduplicated() -> None:
    queue = WorkQueue()
    for key in ("a", "b", "a", "a", "c", "b"):
        queue.add(key)
    assert len(queue) == 3
    assert [await queue.get() for _ in range(3)] == ["a", "b", "c"]


async def test_a_key_in_process_is_not_handed_out_again_until_done() -> None:
    queue = WorkQueue()
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")  # changed while a worker holds it
    queue.add("a")
    assert len(queue) == 0  # not given to a second worker
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    assert not second.done()
    queue.done("a")  # ... but queued again, once, when the first is done
    assert await asyncio.wait_for(second, 1) == "a"
    queue.done("a")
    assert len(queue) == 0


async def test_get_waits_for_an_add() -> None:
    queue = WorkQueue()
    waiting = [asyncio.create_task(queue.get()) for _ in range(2)]
    await asyncio.sleep(0.01)
    queue.add("x")
    queue.add("y")
    assert sorted(await asyncio.wait_for(asyncio.gather(*waiting), 1)) == ["x", "y"]


def test_backoff_doubles_per_key_up_to_the_cap_and_forget_resets() -> None:
    limiter = RateLimiter(qps=1e9, burst=10**9)  # only the per-key backoff
    delays = [limiter.when("a") for _ in range(20)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert all(later == min(2 * earlier, 1000.0) for earlier, later in zip(delays, delays[1:]))
    assert delays[-1] == 1000.0  # 5 ms * 2^18 > 1000 s: capped
    assert limiter.num_requeues("a") == 20
    assert limiter.when("b") == 0.005  # keys back off independently
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0 and limiter.when("a") == 0.005
    for _ in range(500):
        limiter.when("a")
    assert limiter.when("a") == 1000.0  # a key failing for ever does not overflow


def test_overall_token_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    delays = [limiter.when(f"k{i}") for i in range(102)]
    assert delays[:100] == [0.005] * 100  # the burst of 100 costs nothing extra
    assert delays[100] == pytest.approx(0.1) and delays[101] == pytest.approx(0.2)  # then 10 per second
    clock.now += 10.0  # tokens come back at 10 qps, up to the burst
    assert limiter.when("later") == 0.005


async def test_add_rate_limited_delays_and_counts() -> None:
    queue = WorkQueue(rate_limiter=RateLimiter(base_delay=0.02))
    assert queue.add_rate_limited("a") == 0.02
    assert len(queue) == 0 and queue.num_requeues("a") == 1
    assert await asyncio.wait_for(queue.get(), 1) == "a"
    queue.done("a")
    queue.forget("a")
    assert queue.num_requeues("a") == 0


async def test_add_after_keeps_the_earliest_time() -> None:
    queue = WorkQueue()
    loop = asyncio.get_running_loop()
    start = loop.time()
    queue.add_after("a", 0.05)
    queue.add_after("a", 10)  # later: ignored, the key is already due sooner
    queue.add_after("b", 10)
    queue.add_after("b", 0.02)  # earlier: wins
    assert await asyncio.wait_for(queue.get(), 1) == "b"
    assert await asyncio.wait_for(queue.get(), 1) == "a"
    assert 0.05 <= loop.time() - start < 1
    queue.add_after("now", 0)
    assert len(queue) == 1


async def test_shutdown_drains_then_ends_and_drops_delayed_keys() -> None:
    queue = WorkQueue()
    queue.add("a")
    queue.add_after("later", 0.01)
    idle = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert await idle == "a"
    another = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.add("b")
    queue.shutdown()
    queue.add("c")  # refused after shutdown
    assert await asyncio.wait_for(another, 1) == "b"
    assert await asyncio.wait_for(queue.get(), 1) is None
    await asyncio.sleep(0.02)
    assert len(queue) == 0 and await queue.get() is None


async def test_run_workers_retries_with_backoff_and_never_overlaps_a_key(caplog: pytest.LogCaptureFixture) -> None:
    queue = WorkQueue(name="test", rate_limiter=RateLimiter(base_delay=0.001))
    running: set[str] = set()
    calls: list[str] = []

    async def reconcile(key: str) -> None:
        assert key not in running, f"{key} reconciled twice at once"
        running.add(key)
        try:
            calls.append(key)
            await asyncio.sleep(0.005)
            if key == "steady" and calls.count(key) == 1:
                queue.add(key)  # changed while being processed
            if key == "flaky" and calls.count(key) < 4:
                raise RuntimeError("not yet")
        finally:
            running.discard(key)

    for key in ("flaky", "steady"):
        queue.add(key)
    caplog.set_level(logging.WARNING, logger="podling.client.workqueue")
    workers = asyncio.create_task(run_workers(queue, reconcile, workers=4))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if calls.count("flaky") >= 4 and len(queue) == 0 and not running:
            break
    queue.shutdown()
    await asyncio.wait_for(workers, 2)
    assert calls.count("steady") == 2  # once, and once more for the change made meanwhile
    assert calls.count("flaky") == 4
    assert queue.num_requeues("flaky") == 0  # forgotten after its success
    failures = [r for r in caplog.records if "reconcile flaky failed" in r.getMessage()]
    assert [r.getMessage().split("(")[1][:9] for r in failures] == ["attempt 1", "attempt 2", "attempt 3"]
    assert failures[0].exc_info and not any(r.exc_info for r in failures[1:])  # one traceback, not one per retry
