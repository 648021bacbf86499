"""The pure decisions of the ReplicaSet and Deployment controllers, against Kubernetes' own cases.

Fenceposts (surge rounds up, unavailability down), which pods go first, template hashes, which
ReplicaSet is new and what revision it gets, each rolling-update step, proportional scaling
(cases from Kubernetes' deployment sync tests), statuses and conditions, expectations and
slow-start batches.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from podling.controllers import deployment as dep
from podling.controllers import replicaset as rsc

Obj = dict[str, Any]

OLDER, OLD, NEW = "2024-05-20T00:00:00Z", "2024-05-21T00:00:00Z", "2024-05-22T00:00:00Z"
TEMPLATE = {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "podling/busybox:1.35"}]}}


def deployment(replicas: int = 10, *, surge: int | str | None = 0, unavailable: int | str | None = 0,
               strategy: str = "RollingUpdate", generation: int = 1, status: Obj | None = None,
               annotations: dict[str, str] | None = None, **spec: Any) -> Obj:
    strategy_obj: Obj = {"type": strategy}
    if strategy == "RollingUpdate":
        strategy_obj["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "foo", "namespace": "ns", "uid": "d-uid", "generation": generation,
                         "annotations": annotations or {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "strategy": strategy_obj,
                     "template": copy.deepcopy(TEMPLATE), "progressDeadlineSeconds": 600, **spec},
            "status": status or {}}


def replica_set(name: str, replicas: int, *, created: str = NEW, available: int | None = None,
                status_replicas: int | None = None, annotations: dict[str, str] | None = None,
                template: Obj | None = None, generation: int = 1, observed: int = 1) -> Obj:
    available = replicas if available is None else available
    status_replicas = replicas if status_replicas is None else status_replicas
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "creationTimestamp": created,
                         "generation": generation, "annotations": annotations or {}},
            "spec": {"replicas": replicas, "template": copy.deepcopy(template or TEMPLATE)},
            "status": {"replicas": status_replicas, "availableReplicas": available, "readyReplicas": available,
                       "observedGeneration": observed}}


def annotated(rs: Obj, old_deployment: Obj) -> Obj:
    """The replicas annotations the controller put on ``rs`` when the Deployment was ``old_deployment``."""
    rs["metadata"]["annotations"].update(dep.replicas_annotations(old_deployment))
    return rs


# ---- fenceposts ----------------------------------------------------------------------------


@pytest.mark.parametrize("surge, unavailable, desired, expected", [
    ("25%", "25%", 3, (1, 0)),  # surge rounds up, unavailability down
    ("25%", "25%", 10, (3, 2)),
    ("25%", "25%", 4, (1, 1)),
    (None, None, 100, (25, 25)),  # both default to 25%
    (2, 1, 10, (2, 1)),
    ("5", "1", 10, (5, 1)),  # a number in a string is a number
    (0, 0, 10, (0, 1)),  # both zero: unavailability 1, or nothing could ever move
    ("0%", "10%", 5, (0, 1)),  # 10% of 5 rounds down to 0: the same rescue
    ("50%", "0%", 3, (2, 0)),
])
def test_fenceposts_round_surge_up_and_unavailability_down(surge: Any, unavailable: Any, desired: int,
                                                          expected: tuple[int, int]) -> None:
    assert dep.resolve_fenceposts(surge, unavailable, desired) == expected


def test_a_fencepost_that_is_neither_int_nor_percent_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid value for IntOrString"):
        dep.scaled_value("ten%", total=10, round_up=True)


def test_max_unavailable_is_capped_at_replicas_and_zero_for_recreate() -> None:
    assert dep.max_unavailable(deployment(2, surge=0, unavailable=5)) == 2
    assert dep.max_unavailable(deployment(0, surge=1, unavailable=1)) == 0
    assert dep.max_unavailable(deployment(4, strategy="Recreate")) == 0
    assert dep.max_surge(deployment(4, strategy="Recreate")) == 0


# ---- which pods go first -------------------------------------------------------------------


def pod(name: str, *, node: str = "n1", phase: str = "Running", ready: bool = True, ready_since: str = OLD,
        created: str = OLDER, restarts: int = 0, cost: int | None = None, owner: str = "uid-rs") -> Obj:
    conditions = [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": ready_since}]
    annotations = {rsc.DELETION_COST: str(cost)} if cost is not None else {}
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created, "annotations": annotations,
                         "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": owner, "controller": True}]},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": conditions,
                       "containerStatuses": [{"name": "c", "restartCount": restarts}]}}


def names(pods: list[Obj]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


@pytest.mark.parametrize("first, second", [
    (pod("unscheduled", node=""), pod("scheduled")),
    (pod("pending", phase="Pending", ready=False), pod("unknown", phase="Unknown", ready=False)),
    (pod("unknown", phase="Unknown"), pod("running")),
    (pod("not-ready", ready=False), pod("ready")),
    (pod("cheap", cost=-5), pod("dear", cost=10)),
    (pod("ready-lately", ready_since=NEW), pod("ready-long", ready_since=OLDER)),
    (pod("crashy", restarts=7), pod("steady", restarts=1)),
    (pod("newer", created=NEW), pod("older", created=OLDER)),
])
def test_deletion_order_follows_kubernetes_ranking(first: Obj, second: Obj) -> None:
    assert names(rsc.deletion_order([second, first])) == names([first, second])
    assert names(rsc.deletion_order([first, second])) == names([first, second])


def test_deletion_prefers_nodes_crowded_with_the_family() -> None:
    lonely, crowded = pod("lonely", node="a"), pod("crowded", node="b")
    family = [lonely, crowded, pod("sibling-1", node="b", owner="uid-other"), pod("sibling-2", node="b")]
    assert names(rsc.deletion_order([lonely, crowded], related=family)) == ["crowded", "lonely"]


def test_deletion_rank_is_outweighed_by_readiness() -> None:
    unready = pod("unready", node="a", ready=False)
    crowded = pod("crowded", node="b")
    family = [unready, crowded, pod("x", node="b"), pod("y", node="b")]
    assert names(rsc.deletion_order([crowded, unready], related=family)) == ["unready", "crowded"]


def test_terminating_and_finished_pods_are_not_active() -> None:
    assert rsc.is_active(pod("p"))
    assert not rsc.is_active(pod("p", phase="Succeeded")) and not rsc.is_active(pod("p", phase="Failed"))
    going = pod("p")
    going["metadata"]["deletionTimestamp"] = NEW
    assert not rsc.is_active(going)


# ---- ReplicaSet status ---------------------------------------------------------------------


def owner_rs(replicas: int = 3, min_ready: int = 0) -> Obj:
    return {"kind": "ReplicaSet", "metadata": {"name": "rs", "namespace": "ns", "uid": "uid-rs", "generation": 4},
            "spec": {"replicas": replicas, "minReadySeconds": min_ready,
                     "template": {"metadata": {"labels": {"app": "web", "tier": "front"}}}},
            "status": {"replicas": 1, "observedGeneration": 3}}


def test_replica_set_status_counts_labels_readiness_and_availability() -> None:
    now = rsc.meta.parse_time("2024-05-22T00:01:00Z").timestamp()
    fully = pod("a", ready_since="2024-05-22T00:00:00Z")
    fully["metadata"]["labels"] = {"app": "web", "tier": "front"}
    partly = pod("b", ready_since="2024-05-22T00:00:50Z")
    partly["metadata"]["labels"] = {"app": "web"}
    unready = pod("c", ready=False)
    status = rsc.calculate_status(owner_rs(min_ready=30), [fully, partly, unready], now=now, failure=None)
    assert status == {"replicas": 3, "fullyLabeledReplicas": 1, "readyReplicas": 2, "availableReplicas": 1,
                      "observedGeneration": 4}
    # b turns available 30 s after it turned ready: the controller looks again just then.
    assert rsc.next_availability(owner_rs(min_ready=30), [fully, partly, unready], now=now) == pytest.approx(20.05)
    assert rsc.next_availability(owner_rs(min_ready=0), [partly], now=now) is None


def test_replica_set_status_records_and_clears_a_replica_failure() -> None:
    owner = owner_rs()
    failed = rsc.calculate_status(owner, [], now=0, failure=("FailedCreate", 'pods "x" is forbidden: quota'))
    condition = rsc.meta.get_condition(failed, "ReplicaFailure")
    assert condition is not None and (condition["status"], condition["reason"]) == ("True", "FailedCreate")
    assert failed["replicas"] == 0 and "readyReplicas" not in failed
    owner["status"] = failed
    assert rsc.calculate_status(owner, [], now=0, failure=("FailedCreate", "again"))["conditions"] == [condition]
    assert "conditions" not in rsc.calculate_status(owner, [], now=0, failure=None)


# ---- expectations and slow start -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_expectations_wait_for_every_create_and_each_deleted_pod_once() -> None:
    clock = Clock()
    expectations = rsc.Expectations(timeout=300, clock=clock)
    assert expectations.satisfied("ns/rs")
    expectations.expect_creations("ns/rs", 2)
    expectations.creation_observed("ns/rs")
    assert not expectations.satisfied("ns/rs")
    expectations.creation_observed("ns/rs")
    assert expectations.satisfied("ns/rs")
    expectations.expect_deletions("ns/rs", ["ns/a", "ns/b"])
    expectations.deletion_observed("ns/rs", "ns/a")
    expectations.deletion_observed("ns/rs", "ns/a")  # seen going twice (terminating, then deleted)
    assert not expectations.satisfied("ns/rs")
    clock.now = 301  # an event was lost: give up waiting
    assert expectations.satisfied("ns/rs")


async def test_slow_start_doubles_batches_and_stops_at_the_first_failing_one() -> None:
    started: list[int] = []

    async def create() -> None:
        index = len(started)
        started.append(index)
        await asyncio.sleep(0)
        if index >= 5:
            raise RuntimeError("quota exceeded")

    successes, error = await rsc.slow_start_batch(100, initial=1, call=create)
    # Batches of 1, 2 and 4 (two of which fail): 7 calls, no batch of 8.
    assert (len(started), successes, str(error)) == (7, 5, "quota exceeded")
    assert await rsc.slow_start_batch(7, initial=1, call=lambda: asyncio.sleep(0)) == (7, None)


@pytest.mark.parametrize("module", [rsc, dep])
def test_own_writes_hold_a_reconcile_until_the_cache_shows_them(module: Any) -> None:
    writes = module.OwnWrites()
    v1 = {"metadata": {"uid": "u", "resourceVersion": "1"}}
    v2 = {"metadata": {"uid": "u", "resourceVersion": "2"}}
    v3 = {"metadata": {"uid": "u", "resourceVersion": "3"}}
    assert not writes.behind(v1)
    writes.wrote(v1, v2)
    writes.wrote(v2, v3)  # two writes in one reconcile
    assert writes.behind(v1) and writes.behind(v2)  # the cache still shows what we replaced
    assert not writes.behind(v3) and not writes.behind(v1)  # caught up: forgotten
    writes.wrote(v1, v1)  # a write that changed nothing sends no event: nothing to wait for
    assert not writes.behind(v1)


# ---- hashes, templates, revisions ----------------------------------------------------------


def test_template_hash_is_stable_safe_and_moved_by_collisions() -> None:
    first = dep.template_hash(TEMPLATE)
    assert first == dep.template_hash(copy.deepcopy(TEMPLATE))
    assert set(first) <= set("bcdfghjklmnpqrstvwxz2456789") and 1 <= len(first) <= 10
    assert dep.template_hash(TEMPLATE, collision_count=1) != first
    other = copy.deepcopy(TEMPLATE)
    other["spec"]["containers"][0]["image"] = "podling/busybox:latest"
    assert dep.template_hash(other) != first
    # Meaning is what counts: an empty map or null where a field is missing hashes alike.
    padded = copy.deepcopy(TEMPLATE)
    padded["metadata"]["creationTimestamp"] = None
    padded["spec"]["containers"][0]["resources"] = {}
    assert dep.template_hash(padded) == first and dep.equal_ignore_hash(padded, TEMPLATE)


def test_templates_compare_without_the_hash_label() -> None:
    labelled = copy.deepcopy(TEMPLATE)
    labelled["metadata"]["labels"][dep.HASH_LABEL] = "abc"
    assert dep.equal_ignore_hash(labelled, TEMPLATE)
    labelled["metadata"]["labels"]["extra"] = "x"
    assert not dep.equal_ignore_hash(labelled, TEMPLATE)


def test_the_new_replica_set_is_the_oldest_with_the_template() -> None:
    changed = copy.deepcopy(TEMPLATE)
    changed["spec"]["containers"][0]["image"] = "other"
    old = replica_set("foo-old", 1, created=OLDER, template=changed)
    twin_newer, twin_older = replica_set("foo-b", 1, created=NEW), replica_set("foo-a", 1, created=OLD)
    assert dep.find_new_replica_set(deployment(), [old, twin_newer, twin_older]) is twin_older
    assert dep.find_new_replica_set(deployment(), [old]) is None


def test_new_replica_set_annotations_number_revisions_and_keep_history_on_rollback() -> None:
    d = deployment(3, surge=1, annotations={"team": "a", dep.REVISION: "4",
                                            "kubectl.kubernetes.io/last-applied-configuration": "{}"})
    created = dep.new_rs_annotations(d, {}, 5, exists=False)
    assert created == {"team": "a", dep.REVISION: "5", dep.DESIRED_REPLICAS: "3", dep.MAX_REPLICAS: "4"}
    # Rolling back to the ReplicaSet of revision 2 (it once was 1): it becomes 5, 1 and 2 go to history.
    rolled = dep.new_rs_annotations(d, {dep.REVISION: "2", dep.REVISION_HISTORY: "1"}, 5, exists=True)
    assert rolled[dep.REVISION] == "5" and rolled[dep.REVISION_HISTORY] == "1,2"
    assert dep.DESIRED_REPLICAS not in rolled
    # Already the newest: nothing moves.
    assert dep.new_rs_annotations(d, {dep.REVISION: "5", "team": "a"}, 5, exists=True) == {dep.REVISION: "5",
                                                                                         "team": "a"}
    assert dep.max_revision([replica_set("a", 0, annotations={dep.REVISION: "3"}),
                             replica_set("b", 0, annotations={dep.REVISION: "x"}), replica_set("c", 0)]) == 3


# ---- rolling update steps ------------------------------------------------------------------


@pytest.mark.parametrize("replicas_, surge, new, olds, expected", [
    (3, "25%", 0, [3], 1),  # the seed walkthrough: one surge pod first
    (10, 3, 0, [10], 3),
    (10, 3, 2, [10], 3),  # 12 pods already, 13 allowed: one more
    (10, 0, 0, [10], 0),  # no surge: wait for old pods to go
    (10, 2, 9, [3], 9),  # at the limit already
    (5, 2, 4, [0], 5),  # never above the Deployment's own replicas
])
def test_new_replica_set_grows_within_max_surge(replicas_: int, surge: Any, new: int, olds: list[int],
                                               expected: int) -> None:
    d = deployment(replicas_, surge=surge, unavailable=1)
    new_rs = replica_set("foo-new", new)
    old_rss = [replica_set(f"foo-{i}", n, created=OLD) for i, n in enumerate(olds)]
    assert dep.new_rs_replicas(d, [*old_rss, new_rs], new_rs) == expected


def test_recreate_wants_every_replica_in_the_new_replica_set_at_once() -> None:
    d = deployment(4, strategy="Recreate")
    assert dep.new_rs_replicas(d, [replica_set("old", 4, created=OLD)], replica_set("new", 0)) == 4


@pytest.mark.parametrize("replicas_, unavailable, old, new, old_ready, new_ready, expected", [
    # Kubernetes' reconcileOldReplicaSets cases (maxSurge 0).
    (10, 0, 10, 0, 10, 0, {"old": 9}),
    (10, 2, 10, 0, 10, 0, {"old": 8}),
    (10, 2, 8, 2, 8, 0, {}),  # two new pods not ready yet: the budget is spent
    (10, 2, 8, 2, 8, 2, {"old": 6}),
    (10, 2, 8, 2, 6, 2, {"old": 6}),  # the two unavailable old pods go first, then none
    # 5 of 10 old pods unavailable, 1 may be: the budget (10 - 9) takes one unavailable pod, no more.
    (10, 0, 10, 0, 5, 0, {"old": 9}),
])
def test_old_replica_sets_shrink_without_breaking_availability(replicas_: int, unavailable: int, old: int,
                                                              new: int, old_ready: int, new_ready: int,
                                                              expected: dict[str, int]) -> None:
    d = deployment(replicas_, surge=0, unavailable=unavailable)
    old_rs = replica_set("old", old, created=OLD, available=old_ready)
    new_rs = replica_set("new", new, available=new_ready)
    shrink = dep.old_scale_down(d, [old_rs], new_rs)
    assert {k.removeprefix("uid-"): v for k, v in shrink.items()} == expected


def test_unhealthy_old_pods_go_first_oldest_replica_set_first() -> None:
    d = deployment(10, surge=0, unavailable=3)
    older = replica_set("older", 5, created=OLDER, available=3)
    old = replica_set("old", 5, created=OLD, available=5)
    shrink = dep.old_scale_down(d, [old, older], replica_set("new", 0))
    # Budget 10 - 7 = 3: the 2 unavailable pods of "older", then 1 available pod (8 available,
    # 7 needed), taken from the oldest ReplicaSet that still has any.
    assert shrink == {"uid-older": 2}


def test_the_seed_rolling_update_never_drops_below_three_available() -> None:
    """3 replicas at 25%/25%: surge 1, unavailable 0; play the rollout to its end."""
    d = deployment(3, surge="25%", unavailable="25%")
    old = replica_set("old", 3, created=OLD)
    new = replica_set("new", 0)
    for _ in range(10):
        target = dep.new_rs_replicas(d, [old, new], new)
        if target != new["spec"]["replicas"]:
            new = replica_set("new", target, available=new["status"]["availableReplicas"])
        assert old["spec"]["replicas"] + new["spec"]["replicas"] <= 4
        new = replica_set("new", new["spec"]["replicas"])  # the kubelet makes them available
        shrink = dep.old_scale_down(d, [old], new)
        if shrink:
            old = replica_set("old", shrink["uid-old"], created=OLD)
        assert old["status"]["availableReplicas"] + new["status"]["availableReplicas"] >= 3
    assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (0, 3)


# ---- scaling in the middle of a rollout (Kubernetes' TestScale cases, maxSurge 0) ---------


@pytest.mark.parametrize("case, replicas_, old_replicas, surge, old_surge, new, olds, expected_new, expected_olds", [
    ("proportional scaling: 5 -> 10", 10, 5, 0, 0, 2, [3], 4, [6]),
    ("proportional scaling: 5 -> 3", 3, 5, 0, 0, 2, [3], 1, [2]),
    ("proportional scaling: 9 -> 4", 4, 9, 0, 0, 8, [1], 4, [0]),
    ("proportional scaling: 7 -> 10", 10, 7, 0, 0, 2, [3, 2], 3, [4, 3]),
    ("proportional scaling: 13 -> 8", 8, 13, 0, 0, 2, [8, 3], 1, [5, 2]),
    ("leftover distribution: 3 -> 4", 4, 3, 0, 0, 1, [1, 1], 2, [1, 1]),
    ("leftover distribution: 3 -> 2", 2, 3, 0, 0, 1, [1, 1], 1, [1, 0]),
    ("proportional scaling: 6 -> 0", 0, 6, 0, 0, 3, [2, 1], 0, [0, 0]),
    ("deployment with surge pods", 20, 10, 2, 2, 6, [6], 11, [11]),
    ("change both surge and size", 50, 10, 6, 3, 5, [8], 22, [34]),
])
def test_proportional_scaling(case: str, replicas_: int, old_replicas: int, surge: int, old_surge: int, new: int,
                              olds: list[int], expected_new: int, expected_olds: list[int]) -> None:
    d = deployment(replicas_, surge=surge)
    before = deployment(old_replicas, surge=old_surge)
    new_rs = annotated(replica_set("foo-v9", new, created=NEW), before)
    stamps = [OLD, OLDER]
    old_rss = [annotated(replica_set(f"foo-v{i}", n, created=stamps[i]), before) for i, n in enumerate(olds)]
    assert dep.is_scaling_event(d, [new_rs, *old_rss])
    assert dep.find_active_or_latest(new_rs, old_rss) is None
    _, sizes, _ = dep.proportional_sizes(d, [new_rs, *old_rss])
    got = [sizes.get(dep._uid(rs), rs["spec"]["replicas"]) for rs in (new_rs, *old_rss)]
    assert got == [expected_new, *expected_olds], case


def test_one_active_replica_set_takes_the_whole_scale() -> None:
    new_rs = replica_set("foo-v2", 0)
    old_rs = replica_set("foo-v1", 3, created=OLD)
    assert dep.find_active_or_latest(new_rs, [old_rs]) is old_rs
    assert dep.find_active_or_latest(replica_set("n", 0), [replica_set("o", 0, created=OLD)])["metadata"][
        "name"] == "n"
    d = deployment(3)
    assert not dep.is_scaling_event(d, [annotated(replica_set("x", 3), d)])


def test_a_saturated_new_replica_set_needs_its_annotation_and_available_pods() -> None:
    d = deployment(3)
    assert dep.is_saturated(d, annotated(replica_set("n", 3), d))
    assert not dep.is_saturated(d, replica_set("n", 3))
    assert not dep.is_saturated(d, annotated(replica_set("n", 3, available=2), d))


def test_history_cleanup_keeps_the_limit_and_never_deletes_a_busy_replica_set() -> None:
    d = deployment(3, revisionHistoryLimit=1)
    rss = [replica_set(f"r{i}", 0, annotations={dep.REVISION: str(i)}, created=OLDER) for i in (3, 1, 2)]
    assert [rs["metadata"]["name"] for rs in dep.replica_sets_to_delete(d, rss)] == ["r1", "r2"]
    busy = replica_set("busy", 0, status_replicas=1, annotations={dep.REVISION: "1"})
    unobserved = replica_set("unobserved", 0, generation=3, observed=2, annotations={dep.REVISION: "2"})
    newest = replica_set("r5", 0, annotations={dep.REVISION: "5"})
    assert dep.replica_sets_to_delete(d, [busy, unobserved, newest]) == []
    assert dep.replica_sets_to_delete(deployment(3, revisionHistoryLimit=None), rss) == []


# ---- Deployment status and conditions ------------------------------------------------------


def test_deployment_status_sums_its_replica_sets() -> None:
    d = deployment(3, surge="25%", unavailable="25%", generation=7)
    old = replica_set("old", 2, created=OLD, available=2)
    new = replica_set("new", 2, available=1, status_replicas=2)
    status = dep.calculate_status(d, [old, new], new, now=NEW)
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 7, "replicas": 4, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3,
        "unavailableReplicas": 1}
    available = rsc.meta.get_condition(status, "Available")
    assert (available["status"], available["reason"]) == ("True", dep.MIN_AVAILABLE)
    short = dep.calculate_status(d, [replica_set("new", 3, available=2)], None, now=NEW)
    assert rsc.meta.get_condition(short, "Available")["reason"] == dep.MIN_UNAVAILABLE


def test_progressing_condition_through_a_rollout() -> None:
    now = rsc.meta.parse_time(NEW).timestamp()
    new = replica_set("foo-abc", 3, available=1)
    d = deployment(3, status={"replicas": 3, "updatedReplicas": 3, "availableReplicas": 0, "observedGeneration": 1,
                              "conditions": [dep.new_condition("Progressing", "True", dep.NEW_RS_CREATED, "m",
                                                               now=OLD)]})
    base = dep.calculate_status(d, [new], new, now=NEW)
    progressing = rsc.meta.get_condition(dep.rollout_status(d, base, [new], new, now=now), "Progressing")
    assert (progressing["reason"], progressing["message"]) == (dep.RS_UPDATED, 'ReplicaSet "foo-abc" is progressing.')
    assert progressing["lastTransitionTime"] == OLD and progressing["lastUpdateTime"] == NEW

    done = replica_set("foo-abc", 3)
    base = dep.calculate_status(d, [done], done, now=NEW)
    complete = rsc.meta.get_condition(dep.rollout_status(d, base, [done], done, now=now), "Progressing")
    assert complete["reason"] == dep.NEW_RS_AVAILABLE
    assert complete["message"] == 'ReplicaSet "foo-abc" has successfully progressed.'
    assert dep.deployment_complete(d, base)


def test_no_progress_past_the_deadline_is_progress_deadline_exceeded() -> None:
    stuck = replica_set("foo-abc", 3, available=0)
    condition = dep.new_condition("Progressing", "True", dep.RS_UPDATED, "m", now="2024-05-22T00:00:00Z")
    d = deployment(3, progressDeadlineSeconds=60,
                   status={"replicas": 3, "updatedReplicas": 3, "observedGeneration": 1, "conditions": [condition]})
    base = dep.calculate_status(d, [stuck], stuck, now=NEW)
    before = rsc.meta.parse_time("2024-05-22T00:00:30Z").timestamp()
    assert rsc.meta.get_condition(dep.rollout_status(d, base, [stuck], stuck, now=before), "Progressing")[
        "reason"] == dep.RS_UPDATED
    assert dep.stuck_requeue(d, base, now=before) == pytest.approx(31.0)
    after = rsc.meta.parse_time("2024-05-22T00:01:01Z").timestamp()
    timed_out = rsc.meta.get_condition(dep.rollout_status(d, base, [stuck], stuck, now=after), "Progressing")
    assert (timed_out["status"], timed_out["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert timed_out["message"] == 'ReplicaSet "foo-abc" has timed out progressing.'


def test_replica_failures_surface_on_the_deployment() -> None:
    new = replica_set("foo-abc", 3, available=0)
    new["status"]["conditions"] = [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                    "message": "quota", "lastTransitionTime": NEW}]
    d = deployment(3)
    status = dep.rollout_status(d, dep.calculate_status(d, [new], new, now=NEW), [new], new, now=0)
    failure = rsc.meta.get_condition(status, "ReplicaFailure")
    assert (failure["reason"], failure["message"]) == ("FailedCreate", "quota")


def test_deployment_conditions_keep_their_transition_time_while_the_status_holds() -> None:
    status: Obj = {}
    dep.set_condition(status, dep.new_condition("Available", "True", "A", "m", now=OLDER))
    dep.set_condition(status, dep.new_condition("Available", "True", "A", "other", now=NEW))
    assert status["conditions"][0]["lastUpdateTime"] == OLDER  # same status and reason: unchanged
    dep.set_condition(status, dep.new_condition("Available", "True", "B", "m", now=NEW))
    assert status["conditions"][0]["lastTransitionTime"] == OLDER and status["conditions"][0]["reason"] == "B"
    dep.set_condition(status, dep.new_condition("Available", "False", "C", "m", now=NEW))
    assert status["conditions"][0]["lastTransitionTime"] == NEW
