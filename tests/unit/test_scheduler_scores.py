"""Each score plugin on real NodeInfos: the 0–100 scores, as kube-scheduler computes them."""

from __future__ import annotations

from typing import Any

from podling.scheduler.framework import SKIP, default_normalize
from podling.scheduler.info import pod_info
from podling.scheduler.plugins import (NodeAffinity, NodeResourcesBalancedAllocation, NodeResourcesFit,
                                       SelectorSpread, TaintToleration)
from scheduler_objects import cluster, node, pod

Obj = dict[str, Any]


def scores(plugin_class: type, pod_obj: Obj, nodes: list[Obj], *, bound: tuple[Obj, ...] = (),
           services: tuple[Obj, ...] = ()) -> list[int] | str:
    cache, handle = cluster(*nodes, pods=bound)
    for service in services:
        cache.set_service(service)
    plugin = plugin_class(handle)
    state: dict[str, Any] = {}
    info = pod_info(pod_obj)
    if plugin.pre_score(state, info) is SKIP:
        return "SKIP"
    infos = [cache.node(n["metadata"]["name"]) for n in nodes]
    return plugin.score(state, info, infos)


def test_default_normalize_scales_by_the_highest_and_can_reverse() -> None:
    assert default_normalize([0, 2, 4]) == [0, 50, 100]
    assert default_normalize([0, 2, 4], reverse=True) == [100, 50, 0]
    assert default_normalize([0, 0]) == [0, 0]
    assert default_normalize([0, 0], reverse=True) == [100, 100]


def test_least_allocated_prefers_the_emptier_node() -> None:
    nodes = [node("n1", cpu="4", memory="8Gi"), node("n2", cpu="4", memory="8Gi")]
    busy = (pod("a", node_name="n1", cpu="2", memory="4Gi"),)
    # n1: cpu (4000 − 2000 − 1000)·100/4000 = 25, memory (8 − 4 − 2)·100/8 = 25; n2: 75 and 75
    assert scores(NodeResourcesFit, pod("p", cpu="1", memory="2Gi"), nodes, bound=busy) == [25, 75]


def test_least_allocated_counts_empty_requests_as_kube_scheduler_defaults() -> None:
    nodes = [node("n1", cpu="1", memory="1000Mi")]
    # 100m of 1000m used: 90; 200Mi of 1000Mi: 80; mean 85
    assert scores(NodeResourcesFit, pod("p"), nodes) == [85]


def test_balanced_allocation_prefers_even_use_of_cpu_and_memory() -> None:
    nodes = [node("n1", cpu="4", memory="4Gi"), node("n2", cpu="4", memory="4Gi")]
    cpu_heavy = (pod("a", node_name="n1", cpu="2"),)
    # n1: cpu 3/4, memory 1/4 → 1 − 0.5/2 = 75; n2: 1/4 and 1/4 → 100
    assert scores(NodeResourcesBalancedAllocation, pod("p", cpu="1", memory="1Gi"), nodes, bound=cpu_heavy) == \
        [75, 100]
    assert scores(NodeResourcesBalancedAllocation, pod("p"), nodes) == "SKIP"  # requests nothing


def test_resource_scores_follow_the_node_as_it_fills() -> None:
    cache, handle = cluster(node("n1", cpu="4", memory="8Gi"))
    plugin = NodeResourcesFit(handle)
    info = pod_info(pod("p", cpu="1", memory="2Gi"))
    n1 = cache.node("n1")
    assert n1 is not None
    assert plugin.score({}, info, [n1]) == [75]
    cache.add_pod(pod("a", node_name="n1", cpu="2", memory="4Gi"))
    assert plugin.score({}, info, [n1]) == [25]
    cache.remove_pod("default/a")
    assert plugin.score({}, info, [n1]) == [75]


def test_selector_spread_prefers_nodes_with_fewer_pods_of_the_same_owner() -> None:
    nodes = [node("n1"), node("n2"), node("n3")]
    bound = (pod("a", node_name="n1", owner="web"), pod("b", node_name="n1", owner="web"),
             pod("c", node_name="n2", owner="web"), pod("d", node_name="n3", owner="other"),
             pod("e", node_name="n3", owner="other"))
    assert scores(SelectorSpread, pod("p", owner="web"), nodes, bound=bound) == [0, 50, 100]
    assert scores(SelectorSpread, pod("p"), nodes, bound=bound) == "SKIP"  # no owner, no service


def test_selector_spread_counts_pods_a_service_selects() -> None:
    nodes = [node("n1"), node("n2")]
    service = {"metadata": {"name": "front", "namespace": "default"}, "spec": {"selector": {"app": "web"}}}
    bound = (pod("a", node_name="n1", labels={"app": "web"}), pod("b", node_name="n2", labels={"app": "db"}))
    assert scores(SelectorSpread, pod("p", labels={"app": "web"}), nodes, bound=bound, services=(service,)) == [0, 100]


def test_selector_spread_regroups_pods_when_a_service_changes() -> None:
    cache, handle = cluster(node("n1"), node("n2"), pods=(pod("a", node_name="n1", labels={"app": "web"}),))
    n1 = cache.node("n1")
    assert n1 is not None and not n1.groups
    service = {"metadata": {"name": "front", "namespace": "default"}, "spec": {"selector": {"app": "web"}}}
    cache.set_service(service)
    assert n1.groups == {"service:default/front": 1}
    cache.remove_service(service)
    assert not n1.groups


def test_selector_spread_weighs_zones_two_thirds() -> None:
    nodes = [node("n1", labels={"topology.kubernetes.io/zone": "a"}),
             node("n2", labels={"topology.kubernetes.io/zone": "a"}),
             node("n3", labels={"topology.kubernetes.io/zone": "b"})]
    bound = (pod("x", node_name="n1", owner="web"),)
    # nodes: n1 0, n2 100, n3 100; zones: a 0, b 100 → n1 0, n2 100/3, n3 100
    assert scores(SelectorSpread, pod("p", owner="web"), nodes, bound=bound) == [0, 33, 100]


def test_selector_spread_with_the_pods_outside_any_zone() -> None:
    nodes = [node("n1", labels={"topology.kubernetes.io/zone": "a"}), node("n2")]
    bound = (pod("x", node_name="n2", owner="web"),)
    assert scores(SelectorSpread, pod("p", owner="web"), nodes, bound=bound) == [100, 0]


def test_node_affinity_scores_the_weights_of_matching_preferred_terms() -> None:
    nodes = [node("n1", labels={"disk": "ssd"}), node("n2", labels={"disk": "ssd", "zone": "a"}), node("n3")]
    preferred = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 20, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
        {"weight": 60, "preference": {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}}]}}
    assert scores(NodeAffinity, pod("p", affinity=preferred), nodes) == [25, 100, 0]
    assert scores(NodeAffinity, pod("p", nodeSelector={"disk": "ssd"}), nodes) == "SKIP"


def test_prefer_no_schedule_taints_count_against_a_node() -> None:
    soft = [{"key": "a", "value": "", "effect": "PreferNoSchedule"},
            {"key": "b", "value": "", "effect": "PreferNoSchedule"}]
    nodes = [node("n1", taints=soft), node("n2", taints=soft[:1]), node("n3")]
    assert scores(TaintToleration, pod("p"), nodes) == [0, 50, 100]
    tolerant = pod("p", tolerations=[{"key": "a", "operator": "Exists", "effect": "PreferNoSchedule"}])
    assert scores(TaintToleration, tolerant, nodes) == [0, 100, 100]
    assert scores(TaintToleration, pod("p"), [node("n1"), node("n2")]) == "SKIP"
