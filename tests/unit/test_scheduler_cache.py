"""The cache: node sums kept exact through assume, the binding's echo, forget, deletes and node changes."""

from __future__ import annotations

from podling.scheduler.cache import Cache
from podling.scheduler.info import NodeInfo, pod_info
from scheduler_objects import node, pod


def sums(cache: Cache, name: str) -> tuple[int, int, int]:
    info = cache.node(name)
    assert isinstance(info, NodeInfo)
    return info.requested_cpu, info.requested_memory, len(info.pods)


def test_an_assumed_pod_counts_at_once_and_its_echo_does_not_count_twice() -> None:
    cache = Cache()
    cache.set_node(node("n1"))
    pending = pod("p", cpu="1", memory="1Gi", uid="u1")
    info = pod_info(pending)
    cache.assume(info, "n1")
    assert sums(cache, "n1") == (1000, 1024 ** 3, 1)
    assert cache.is_assumed(pending)
    bound = {**pending, "spec": {**pending["spec"], "nodeName": "n1"}}
    cache.add_pod(bound)
    assert sums(cache, "n1") == (1000, 1024 ** 3, 1)
    assert not cache.is_assumed(pending)
    cache.forget(info)  # a late failure report changes nothing once the API showed it bound
    assert sums(cache, "n1") == (1000, 1024 ** 3, 1)


def test_a_failed_binding_frees_the_node() -> None:
    cache = Cache()
    cache.set_node(node("n1"))
    info = pod_info(pod("p", cpu="1"))
    cache.assume(info, "n1")
    cache.forget(info)
    assert sums(cache, "n1") == (0, 0, 0)


def test_the_api_has_the_last_word_on_where_a_pod_is() -> None:
    cache = Cache()
    cache.set_node(node("n1"))
    cache.set_node(node("n2"))
    pending = pod("p", cpu="1", uid="u1")
    cache.assume(pod_info(pending), "n1")
    cache.add_pod({**pending, "spec": {**pending["spec"], "nodeName": "n2"}})  # someone else bound it
    assert sums(cache, "n1") == (0, 0, 0) and sums(cache, "n2") == (1000, 0, 1)


def test_deleting_an_assumed_pod_frees_its_node() -> None:
    cache = Cache()
    cache.set_node(node("n1"))
    cache.assume(pod_info(pod("p", cpu="1")), "n1")
    assert cache.remove_pod("default/p")
    assert sums(cache, "n1") == (0, 0, 0)
    assert not cache.remove_pod("default/p")


def test_a_pod_that_finishes_frees_its_node() -> None:
    cache = Cache()
    cache.set_node(node("n1"))
    running = pod("p", cpu="1", node_name="n1", phase="Running")
    cache.add_pod(running)
    cache.add_pod({**running, "status": {"phase": "Succeeded"}})
    assert sums(cache, "n1") == (0, 0, 0) and not cache.counted("default/p")


def test_pods_on_a_node_not_seen_yet_count_once_it_appears_and_survive_its_removal() -> None:
    cache = Cache()
    cache.add_pod(pod("p", cpu="1", node_name="late"))
    assert cache.node("late") is None and cache.nodes == []
    cache.set_node(node("late"))
    assert sums(cache, "late") == (1000, 0, 1) and [n.name for n in cache.nodes] == ["late"]
    cache.remove_node("late")
    assert cache.nodes == [] and cache.counted("default/p")
    cache.set_node(node("late"))
    assert sums(cache, "late") == (1000, 0, 1)


def test_cluster_counters_follow_node_changes() -> None:
    cache = Cache()
    cache.set_node(node("n1"))
    assert (cache.unschedulable_nodes, cache.hard_tainted_nodes, cache.prefer_tainted_nodes) == (0, 0, 0)
    cache.set_node(node("n1", unschedulable=True, taints=[{"key": "a", "effect": "NoSchedule"},
                                                          {"key": "b", "effect": "PreferNoSchedule"}]))
    assert (cache.unschedulable_nodes, cache.hard_tainted_nodes, cache.prefer_tainted_nodes) == (1, 1, 1)
    cache.set_node(node("n1", ready="False"))
    assert (cache.unschedulable_nodes, cache.hard_tainted_nodes, cache.prefer_tainted_nodes) == (1, 0, 0)
    cache.remove_node("n1")
    assert (cache.unschedulable_nodes, cache.hard_tainted_nodes, cache.prefer_tainted_nodes) == (0, 0, 0)


def test_claims_in_use_count_bound_and_assumed_pods() -> None:
    cache = Cache()
    cache.set_node(node("n1"))
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    cache.add_pod(pod("a", node_name="n1", volumes=volumes))
    cache.assume(pod_info(pod("b", volumes=volumes)), "n1")
    assert cache.claims_in_use == {"default/data": 2}
    cache.remove_pod("default/a")
    cache.remove_pod("default/b")
    assert not cache.claims_in_use


def test_host_ports_are_released_with_their_pod() -> None:
    cache = Cache()
    cache.set_node(node("n1"))
    ports = [{"name": "app", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]
    cache.add_pod(pod("a", node_name="n1", containers=ports))
    info = cache.node("n1")
    assert info is not None and len(info.used_ports) == 1
    cache.remove_pod("default/a")
    assert not info.used_ports
