"""The scheduling queue: order, backoff, and which events wake which rejected pods."""

from __future__ import annotations

import asyncio

import pytest

from podling.scheduler.framework import NODE_ADD, NODE_UPDATE, POD_DELETE
from podling.scheduler.queue import MAX_IN_UNSCHEDULABLE, QueuedPod, SchedulingQueue
from scheduler_objects import pod

EVENTS = {"NodeResourcesFit": frozenset({NODE_ADD, NODE_UPDATE, POD_DELETE}),
          "NodeAffinity": frozenset({NODE_ADD, NODE_UPDATE})}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_queue(clock: Clock) -> SchedulingQueue:
    return SchedulingQueue(initial_backoff=1.0, max_backoff=10.0, plugin_events=EVENTS, clock=clock)


async def pop(queue: SchedulingQueue) -> QueuedPod:
    queued = await asyncio.wait_for(queue.pop(), 1)
    assert queued is not None
    return queued


def test_backoff_doubles_from_one_second_to_ten() -> None:
    queue = make_queue(Clock())
    assert [queue.backoff_duration(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


async def test_higher_priority_first_then_oldest_first() -> None:
    clock = Clock()
    queue = make_queue(clock)
    for name, priority in (("low", 0), ("high", 100), ("low2", 0)):
        queue.add(pod(name, priority=priority))
        clock.now += 1
    assert [(await pop(queue)).key for _ in range(3)] == ["default/high", "default/low", "default/low2"]


async def test_an_unschedulable_pod_waits_for_an_event_its_rejecting_plugin_cares_about() -> None:
    clock = Clock()
    queue = make_queue(clock)
    queue.add(pod("p"))
    queued = await pop(queue)
    queue.unschedulable(queued, rejected_by=frozenset({"NodeAffinity"}))
    assert queue.counts()["unschedulable"] == 1
    queue.move_all(POD_DELETE)  # a freed pod slot does not help a node affinity mismatch
    assert queue.counts()["unschedulable"] == 1
    clock.now += 5  # past its 1 s backoff
    queue.move_all(NODE_ADD)
    assert queue.counts() == {"active": 1, "backoff": 0, "unschedulable": 0, "gated": 0}
    assert (await pop(queue)).attempts == 2


async def test_a_woken_pod_still_serves_its_backoff() -> None:
    clock = Clock()
    queue = make_queue(clock)
    queue.add(pod("p"))
    queue.unschedulable(await pop(queue), rejected_by=frozenset({"NodeResourcesFit"}))
    queue.move_all(NODE_ADD)
    assert queue.counts()["backoff"] == 1
    clock.now += 1.01
    queue._flush_backoff()  # what its timer does when the backoff is over
    assert queue.counts()["active"] == 1


async def test_backoff_ends_by_itself() -> None:
    queue = SchedulingQueue(initial_backoff=0.05, max_backoff=0.05, plugin_events=EVENTS)
    queue.add(pod("p"))
    queue.retry(await pop(queue))
    assert queue.counts()["backoff"] == 1
    again = await pop(queue)  # about 50 ms later
    assert again.attempts == 2
    queue.close()


async def test_an_event_while_the_pod_is_in_flight_sends_it_to_backoff_not_to_wait() -> None:
    clock = Clock()
    queue = make_queue(clock)
    queue.add(pod("p"))
    queued = await pop(queue)
    queue.move_all(NODE_UPDATE)  # the node it needed may have changed during the attempt
    queue.unschedulable(queued, rejected_by=frozenset({"NodeResourcesFit"}))
    assert queue.counts()["backoff"] == 1


async def test_a_change_to_the_pods_own_spec_wakes_it_but_a_status_change_does_not() -> None:
    clock = Clock()
    queue = make_queue(clock)
    original = pod("p", uid="u1")
    queue.add(original)
    queue.unschedulable(await pop(queue), rejected_by=frozenset({"NodeAffinity"}))
    clock.now += 5
    status_only = {**original, "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled"}]}}
    queue.update(status_only)
    assert queue.counts()["unschedulable"] == 1
    relabelled = {**original, "metadata": {**original["metadata"], "labels": {"tier": "web"}}}
    queue.update(relabelled)
    assert queue.counts()["active"] == 1
    assert (await pop(queue)).pod is relabelled


async def test_gated_pods_wait_until_their_gates_are_gone() -> None:
    queue = make_queue(Clock())
    gated = pod("p", uid="u1", schedulingGates=[{"name": "example.com/quota"}])
    queue.add(gated)
    assert queue.counts()["gated"] == 1
    queue.update({**gated, "spec": {**gated["spec"], "schedulingGates": []}})
    assert (await pop(queue)).key == "default/p"


async def test_deleted_pods_leave_wherever_they_are() -> None:
    queue = make_queue(Clock())
    first, second = pod("a"), pod("b")
    queue.add(first)
    queue.add(second)
    queue.delete(first)
    assert (await pop(queue)).key == "default/b"
    flying = pod("c")
    queue.add(flying)
    queued = await pop(queue)
    queue.delete(flying)
    queue.unschedulable(queued, rejected_by=frozenset({"NodeAffinity"}))  # comes back: dropped
    assert queue.counts() == {"active": 0, "backoff": 0, "unschedulable": 0, "gated": 0}


async def test_pods_waiting_too_long_are_tried_anyway() -> None:
    clock = Clock()
    queue = make_queue(clock)
    queue.add(pod("p"))
    queue.unschedulable(await pop(queue), rejected_by=frozenset({"NodeAffinity"}))
    clock.now += MAX_IN_UNSCHEDULABLE / 2
    queue.flush_unschedulable()
    assert queue.counts()["unschedulable"] == 1
    clock.now += MAX_IN_UNSCHEDULABLE
    queue.flush_unschedulable()
    assert queue.counts()["active"] == 1


async def test_a_new_pod_under_an_old_name_replaces_the_old_one() -> None:
    queue = make_queue(Clock())
    queue.add(pod("p", uid="old"))
    queue.update(pod("p", uid="new"))
    queued = await pop(queue)
    assert queued.pod["metadata"]["uid"] == "new" and queued.attempts == 1
    assert queue.counts()["active"] == 0


async def test_close_ends_pop() -> None:
    queue = make_queue(Clock())
    waiter = asyncio.ensure_future(queue.pop())
    await asyncio.sleep(0)
    queue.close()
    assert await asyncio.wait_for(waiter, 1) is None


@pytest.mark.parametrize("where", ["done", "retry"])
async def test_done_and_retry(where: str) -> None:
    clock = Clock()
    queue = make_queue(clock)
    queue.add(pod("p"))
    queued = await pop(queue)
    if where == "done":
        queue.done(queued)
        assert queue.counts() == {"active": 0, "backoff": 0, "unschedulable": 0, "gated": 0}
    else:
        queue.retry(queued)
        assert queue.counts()["backoff"] == 1
