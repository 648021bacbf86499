"""A profile at work: filters in order, the fit error's message, sampling of nodes, weighted scores."""

from __future__ import annotations

import random

import pytest

from podling.scheduler.config import Profile, default_profile
from podling.scheduler.framework import FitError, Placement, num_feasible_nodes_to_find, unschedulable
from podling.scheduler.info import pod_info
from podling.scheduler.scheduler import build_framework
from scheduler_objects import cluster, node, pod


def test_the_message_counts_reasons_sorted_as_kubernetes_sorts_them() -> None:
    error = FitError(nodes=3, statuses={
        "n1": unschedulable("Insufficient cpu"), "n2": unschedulable("Insufficient cpu"),
        "n3": unschedulable("node(s) didn't match Pod's node affinity/selector")})
    assert error.message == ("0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
                             "2 Insufficient cpu.")


def test_a_node_can_give_several_reasons() -> None:
    error = FitError(nodes=2, statuses={"n1": unschedulable("Insufficient cpu", "Insufficient memory"),
                                        "n2": unschedulable("Insufficient memory")})
    assert error.message == "0/2 nodes are available: 1 Insufficient cpu, 2 Insufficient memory."


def test_a_pre_filter_rejection_is_the_whole_message() -> None:
    error = FitError(nodes=4, pre_filter=unschedulable('persistentvolumeclaim "data" not found'))
    assert error.message == '0/4 nodes are available: persistentvolumeclaim "data" not found.'


def test_no_nodes_at_all() -> None:
    assert FitError(nodes=0).message == "no nodes available to schedule pods"


@pytest.mark.parametrize(("percentage", "nodes", "expected"), [
    (0, 50, 50), (0, 100, 100), (0, 500, 230), (0, 1000, 420), (0, 5000, 500), (0, 6000, 300), (0, 20000, 1000),
    (0, 150, 100),  # never fewer than 100
    (10, 1000, 100), (30, 1000, 300), (100, 1000, 1000),
])
def test_how_many_feasible_nodes_to_find(percentage: int, nodes: int, expected: int) -> None:
    assert num_feasible_nodes_to_find(percentage, nodes) == expected


def test_impossible_pod_gets_every_nodes_first_rejection() -> None:
    cache, handle = cluster(node("small", cpu="1"), node("tainted", taints=[{"key": "k", "effect": "NoSchedule"}]),
                            node("cordoned", unschedulable=True), node("other", labels={"disk": "hdd"}, cpu="1"))
    framework = build_framework(default_profile(), handle=handle, percentage=0)
    result = framework.schedule(pod_info(pod("p", cpu="2", nodeSelector={"disk": "hdd"})), cache.nodes)
    assert isinstance(result, FitError)
    # each node reports the first plugin that turns it away: "small" fails NodeAffinity before NodeResourcesFit
    assert result.message == ("0/4 nodes are available: 1 Insufficient cpu, "
                              "1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint "
                              "{k: }, 1 node(s) were unschedulable.")
    assert result.plugins == {"NodeUnschedulable", "TaintToleration", "NodeAffinity", "NodeResourcesFit"}


def test_the_best_node_wins() -> None:
    cache, handle = cluster(node("busy"), node("idle"), node("half"),
                            pods=(pod("a", node_name="busy", cpu="3"), pod("b", node_name="half", cpu="2")))
    framework = build_framework(default_profile(), handle=handle, percentage=0)
    result = framework.schedule(pod_info(pod("p", cpu="1")), cache.nodes)
    assert isinstance(result, Placement) and result.node == "idle" and result.feasible == 3


def test_many_pods_of_one_size_fill_the_emptiest_nodes_first() -> None:
    cache, handle = cluster(node("a", cpu="4", memory="4Gi"), node("b", cpu="4", memory="4Gi"))
    framework = build_framework(default_profile(), handle=handle, percentage=0)
    for i in range(8):  # what nodes remember between cycles must follow each placement
        info = pod_info(pod(f"p{i}", cpu="1", memory="1Gi"))
        result = framework.schedule(info, cache.nodes)
        assert isinstance(result, Placement)
        cache.assume(info, result.node)
    assert [len(n.pods) for n in cache.nodes] == [4, 4]
    result = framework.schedule(pod_info(pod("extra", cpu="1", memory="1Gi")), cache.nodes)
    assert isinstance(result, FitError) and result.message == (
        "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory.")


def test_weights_decide_between_plugins() -> None:
    preferred = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}
    cache, handle = cluster(node("ssd", labels={"disk": "ssd"}), node("empty"),
                            pods=(pod("a", node_name="ssd", cpu="3", memory="6Gi"),))
    spec = pod_info(pod("p", cpu="100m", affinity=preferred))
    affinity_heavy = Profile(scheduler_name="s", filters=("NodeResourcesFit",),
                             scores=(("NodeAffinity", 10), ("NodeResourcesFit", 1)))
    resources_heavy = Profile(scheduler_name="s", filters=("NodeResourcesFit",),
                              scores=(("NodeAffinity", 1), ("NodeResourcesFit", 10)))
    assert build_framework(affinity_heavy, handle=handle, percentage=0).schedule(spec, cache.nodes).node == "ssd"
    assert build_framework(resources_heavy, handle=handle, percentage=0).schedule(spec, cache.nodes).node == "empty"


def test_ties_are_broken_at_random() -> None:
    cache, handle = cluster(*(node(f"n{i}") for i in range(4)))
    framework = build_framework(default_profile(), handle=handle, percentage=0, rng=random.Random(7))
    chosen = {framework.schedule(pod_info(pod("p")), cache.nodes).node for _ in range(200)}
    assert chosen == {"n0", "n1", "n2", "n3"}


def test_a_large_cluster_scores_a_sample_starting_where_the_last_cycle_stopped() -> None:
    cache, handle = cluster(*(node(f"n{i:03d}") for i in range(300)))
    framework = build_framework(default_profile(), handle=handle, percentage=0)
    limit = num_feasible_nodes_to_find(0, 300)  # 48% of 300
    assert limit == 144
    first = framework.schedule(pod_info(pod("p")), cache.nodes, start=0)
    assert isinstance(first, Placement) and first.evaluated == limit == first.feasible
    assert int(first.node[1:]) < limit
    second = framework.schedule(pod_info(pod("p")), cache.nodes, start=250)
    assert isinstance(second, Placement) and (int(second.node[1:]) >= 250 or int(second.node[1:]) < limit - 50)


def test_filtering_goes_on_past_rejected_nodes_until_enough_fit() -> None:
    nodes = [node(f"n{i:03d}", cpu="1" if i % 2 else "4") for i in range(300)]
    cache, handle = cluster(*nodes)
    framework = build_framework(default_profile(), handle=handle, percentage=0)
    result = framework.schedule(pod_info(pod("p", cpu="2")), cache.nodes)
    assert isinstance(result, Placement)
    limit = num_feasible_nodes_to_find(0, 300)
    assert result.feasible == limit and result.evaluated == 2 * limit - 1  # every other node is too small
    assert int(result.node[1:]) % 2 == 0


def test_a_profile_without_score_plugins_takes_any_feasible_node() -> None:
    cache, handle = cluster(node("n1", cpu="1"), node("n2"), node("n3"))
    framework = build_framework(Profile(scheduler_name="s", filters=("NodeResourcesFit",), scores=()),
                                handle=handle, percentage=0, rng=random.Random(1))
    assert {framework.schedule(pod_info(pod("p", cpu="2")), cache.nodes).node for _ in range(50)} == {"n2", "n3"}
