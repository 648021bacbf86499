"""Pure decisions of the endpoints, node lifecycle, node IPAM, namespace and garbage collector controllers."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from podling.api import meta
from podling.api.patch import json_patch
from podling.api.resources import find
from podling.apiserver.storage import _gc_finalizers
from podling.controllers.endpoints import build_subsets, endpoints_labels, resolve_port, should_be_in_endpoints
from podling.controllers.garbagecollector import (
    Decision, Owner, blocks, decide, owner_resource, remove_refs_patch, watched_kinds,
)
from podling.controllers.namespace import Remaining, namespaced_kinds
from podling.controllers.nodelifecycle import (
    NOT_READY, UNREACHABLE, CidrAllocator, CidrExhausted, desired_taints, eviction_time, stale_reason, tolerates,
    with_default_tolerations,
)

Obj = dict[str, Any]


# ---- endpoints ------------------------------------------------------------------------------


def pod(name: str, ip: str = "10.0.0.1", *, ready: bool = True, labels: dict[str, str] | None = None,
        ports: list[Obj] | None = None, node: str = "n1", **extra: Any) -> Obj:
    obj: Obj = {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": labels or {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}]},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }
    for key, value in extra.items():
        section, _, field = key.partition("__")
        obj[section][field] = value
    return obj


def service(ports: list[Obj] | None = None, **spec: Any) -> Obj:
    return {"metadata": {"name": "web", "namespace": "ns", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, **spec,
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
                     if ports is None else ports}}


def ref(name: str) -> Obj:
    return {"kind": "Pod", "namespace": "ns", "name": name, "uid": f"uid-{name}"}


def test_ready_and_not_ready_pods_share_a_subset_with_their_port() -> None:
    subsets = build_subsets(service=service(), pods=[pod("b", "10.0.0.2"), pod("a", "10.0.0.1"),
                                                      pod("c", "10.0.0.3", ready=False)])
    assert subsets == [{
        "addresses": [
            {"ip": "10.0.0.1", "nodeName": "n1", "targetRef": ref("a")},
            {"ip": "10.0.0.2", "nodeName": "n1", "targetRef": ref("b")},
        ],
        "notReadyAddresses": [
            {"ip": "10.0.0.3", "nodeName": "n1", "targetRef": ref("c")},
        ],
        "ports": [{"port": 8080, "protocol": "TCP", "name": "http"}],
    }]


def test_pods_without_ip_terminating_or_finished_are_left_out() -> None:
    pods = [pod("noip", ""), pod("going", metadata__deletionTimestamp="2024-01-01T00:00:00Z"),
            pod("done", spec__restartPolicy="Never", status__phase="Succeeded"), pod("ok")]
    subsets = build_subsets(service=service(), pods=pods)
    assert [a["targetRef"]["name"] for s in subsets for a in s.get("addresses", [])] == ["ok"]
    assert not any("notReadyAddresses" in s for s in subsets)


def test_publish_not_ready_addresses_lists_every_pod_as_an_address_terminating_ones_too() -> None:
    pods = [pod("a", "10.0.0.1", ready=False), pod("b", "10.0.0.2", metadata__deletionTimestamp="2024-01-01T00:00:00Z")]
    subsets = build_subsets(service=service(publishNotReadyAddresses=True), pods=pods)
    assert [a["ip"] for a in subsets[0]["addresses"]] == ["10.0.0.1", "10.0.0.2"]
    assert "notReadyAddresses" not in subsets[0]


def test_named_target_ports_resolve_per_pod_and_split_subsets() -> None:
    svc = service(ports=[{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
                         {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"}])
    pods = [pod("old", "10.0.0.1", ports=[{"name": "web", "containerPort": 8080, "protocol": "TCP"}]),
            pod("new", "10.0.0.2", ports=[{"name": "web", "containerPort": 8081, "protocol": "TCP"}]),
            pod("none", "10.0.0.3", ports=[{"name": "other", "containerPort": 1, "protocol": "TCP"}])]
    subsets = build_subsets(service=svc, pods=pods)
    by_ip = {a["ip"]: sorted((p["name"], p["port"]) for p in s["ports"]) for s in subsets for a in s["addresses"]}
    assert by_ip == {"10.0.0.1": [("http", 8080), ("metrics", 9090)], "10.0.0.2": [("http", 8081), ("metrics", 9090)],
                     "10.0.0.3": [("metrics", 9090)]}
    assert len(subsets) == 3


def test_resolve_port_matches_name_and_protocol_and_defaults_to_the_service_port() -> None:
    p = pod("a", ports=[{"name": "dns", "containerPort": 53, "protocol": "UDP"}])
    assert resolve_port(p, {"port": 53, "targetPort": "dns", "protocol": "UDP"}) == 53
    assert resolve_port(p, {"port": 53, "targetPort": "dns", "protocol": "TCP"}) is None
    assert resolve_port(p, {"port": 80}) == 80


def test_headless_service_without_ports_lists_addresses_only_and_others_list_nothing() -> None:
    assert build_subsets(service=service(ports=[], clusterIP="None"), pods=[pod("a")]) == [{
        "addresses": [{"ip": "10.0.0.1", "nodeName": "n1",
                       "targetRef": ref("a")}]}]
    assert build_subsets(service=service(ports=[]), pods=[pod("a")]) == []


def test_hostname_only_for_the_services_subdomain() -> None:
    subsets = build_subsets(service=service(), pods=[pod("a", spec__hostname="a", spec__subdomain="web"),
                                                      pod("b", "10.0.0.2", spec__hostname="b", spec__subdomain="x")])
    assert [a.get("hostname") for a in subsets[0]["addresses"]] == ["a", None]


def test_endpoints_labels_mark_managed_and_headless() -> None:
    assert endpoints_labels(service()) == {"tier": "front", "endpointslice.kubernetes.io/skip-mirror": "true"}
    assert endpoints_labels(service(clusterIP="None"))["service.kubernetes.io/headless"] == ""


def test_on_failure_pods_that_failed_stay_listed() -> None:
    assert should_be_in_endpoints(pod("a", spec__restartPolicy="OnFailure", status__phase="Failed"),
                                  include_terminating=False)
    assert not should_be_in_endpoints(pod("a", spec__restartPolicy="Never", status__phase="Failed"),
                                      include_terminating=False)


# ---- node lifecycle -------------------------------------------------------------------------


def node(ready: str | None = "True", *, taints: list[Obj] | None = None, **conditions: str) -> Obj:
    conds = [{"type": t, "status": s} for t, s in conditions.items()]
    if ready is not None:
        conds.append({"type": "Ready", "status": ready})
    return {"metadata": {"name": "n1"}, "spec": {"taints": taints or []}, "status": {"conditions": conds}}


def keys(taints: list[Obj]) -> list[tuple[str, str]]:
    return [(t["key"], t["effect"]) for t in taints]


def test_stale_reason_after_the_grace_period_and_startup_grace_without_status() -> None:
    ready = {"type": "Ready", "status": "True"}
    assert stale_reason(ready=ready, silent_for=39, grace=40, startup_grace=60) is None
    assert stale_reason(ready=ready, silent_for=41, grace=40, startup_grace=60) == (
        "NodeStatusUnknown", "Kubelet stopped posting node status.")
    assert stale_reason(ready=None, silent_for=41, grace=40, startup_grace=60) is None
    assert stale_reason(ready=None, silent_for=61, grace=40, startup_grace=60)[0] == "NodeStatusNeverUpdated"


def test_taints_follow_the_ready_condition() -> None:
    now = "2024-01-01T00:00:00Z"
    assert desired_taints(node("True"), now=now) == []
    unknown = desired_taints(node("Unknown"), now=now)
    assert keys(unknown) == [(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]
    assert unknown[1]["timeAdded"] == now and "timeAdded" not in unknown[0]
    assert keys(desired_taints(node("False"), now=now)) == [(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]
    assert desired_taints(node(None), now=now) == []  # a node that has not posted yet is not judged


def test_taints_keep_others_and_timeadded_and_drop_ours_when_ready_again() -> None:
    user = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    ours = {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2020-01-01T00:00:00Z"}
    kept = desired_taints(node("Unknown", taints=[user, ours]), now="2024-01-01T00:00:00Z")
    assert kept[:2] == [user, ours] and keys(kept)[2] == (UNREACHABLE, "NoSchedule")
    switched = desired_taints(node("False", taints=[user, ours]), now="2024-01-01T00:00:00Z")
    assert keys(switched) == [("dedicated", "NoSchedule"), (NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]
    assert desired_taints(node("True", taints=[user, ours]), now="x") == [user]


def test_pressure_conditions_and_unschedulable_give_noschedule_taints() -> None:
    n = node("True", MemoryPressure="True", DiskPressure="False")
    n["spec"]["unschedulable"] = True
    assert keys(desired_taints(n, now="x")) == [("node.kubernetes.io/memory-pressure", "NoSchedule"),
                                                ("node.kubernetes.io/unschedulable", "NoSchedule")]


@pytest.mark.parametrize(("toleration", "taint", "expected"), [
    ({"key": "k", "operator": "Exists"}, {"key": "k", "effect": "NoExecute"}, True),
    ({"operator": "Exists"}, {"key": "anything", "effect": "NoSchedule"}, True),
    ({"key": "k", "value": "v"}, {"key": "k", "value": "v", "effect": "NoExecute"}, True),
    ({"key": "k", "operator": "Equal", "value": "v"}, {"key": "k", "value": "w", "effect": "NoExecute"}, False),
    ({"key": "k", "operator": "Exists", "effect": "NoSchedule"}, {"key": "k", "effect": "NoExecute"}, False),
    ({"key": "j", "operator": "Exists"}, {"key": "k", "effect": "NoExecute"}, False),
])
def test_tolerates(toleration: Obj, taint: Obj, expected: bool) -> None:
    assert tolerates(toleration, taint) is expected


def test_default_tolerations_are_added_only_when_missing() -> None:
    added = with_default_tolerations([], seconds=30)
    assert {(t["key"], t["tolerationSeconds"]) for t in added} == {(NOT_READY, 30), (UNREACHABLE, 30)}
    own = [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]
    assert [t["key"] for t in with_default_tolerations(own, seconds=30)] == [UNREACHABLE, NOT_READY]
    assert with_default_tolerations([{"operator": "Exists"}], seconds=30) == [{"operator": "Exists"}]
    # a NoSchedule toleration of the key does not cover NoExecute
    no_schedule = [{"key": NOT_READY, "operator": "Exists", "effect": "NoSchedule"}]
    assert len(with_default_tolerations(no_schedule, seconds=30)) == 3


def at(seconds: float) -> str:
    return meta.format_time(datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc))


def test_eviction_time_untolerated_now_tolerated_after_seconds_forever_never() -> None:
    now = 1_700_000_100.0
    taint = {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": at(1_700_000_000)}
    assert eviction_time(tolerations=[], taints=[taint], now=now) == now
    for_60 = [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]
    assert eviction_time(tolerations=for_60, taints=[taint], now=now) == 1_700_000_060
    for_300 = [{**for_60[0], "tolerationSeconds": 300}]
    assert eviction_time(tolerations=for_300, taints=[taint], now=now) == 1_700_000_300
    forever = [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]
    assert eviction_time(tolerations=forever, taints=[taint], now=now) is None
    assert eviction_time(tolerations=[], taints=[{**taint, "effect": "NoSchedule"}], now=now) is None
    # several matching tolerations: the shortest counts; no timeAdded: from now
    both = [*for_60, *for_300]
    assert eviction_time(tolerations=both, taints=[{"key": UNREACHABLE, "effect": "NoExecute"}], now=now) == now + 60
    # several taints: the earliest deadline; one untolerated: now
    other = {"key": "other", "effect": "NoExecute", "timeAdded": at(1_700_000_050)}
    tolerate_other = [{"key": "other", "operator": "Exists", "tolerationSeconds": 10}]
    assert eviction_time(tolerations=[*for_300, *tolerate_other], taints=[taint, other], now=now) == 1_700_000_060
    assert eviction_time(tolerations=for_300, taints=[taint, other], now=now) == now


# ---- node IPAM ------------------------------------------------------------------------------


def test_cidr_allocator_hands_out_each_subnet_once_round_robin() -> None:
    allocator = CidrAllocator(cluster_cidr="10.244.0.0/22", mask_size=24)
    assert allocator.size == 4
    assert allocator.occupy("10.244.1.0/24")
    got = [allocator.allocate() for _ in range(3)]
    assert got == ["10.244.0.0/24", "10.244.2.0/24", "10.244.3.0/24"]
    with pytest.raises(CidrExhausted):
        allocator.allocate()
    allocator.release("10.244.0.0/24")
    assert allocator.allocate() == "10.244.0.0/24"


def test_cidr_allocator_does_not_reuse_a_released_subnet_first() -> None:
    allocator = CidrAllocator(cluster_cidr="10.244.0.0/16", mask_size=24)
    first = allocator.allocate()
    allocator.release(first)
    assert allocator.allocate() == "10.244.1.0/24"


def test_cidr_allocator_ignores_foreign_cidrs_and_checks_the_mask() -> None:
    allocator = CidrAllocator(cluster_cidr="10.244.0.0/16", mask_size=24)
    assert not allocator.occupy("192.168.0.0/24")
    assert not allocator.occupy("10.244.0.0/25")
    assert not allocator.occupy("garbage")
    with pytest.raises(ValueError):
        CidrAllocator(cluster_cidr="10.244.0.0/16", mask_size=8)
    v6 = CidrAllocator(cluster_cidr="fd00::/48", mask_size=64)
    assert v6.allocate() == "fd00::/64" and v6.allocate() == "fd00:0:0:1::/64"


# ---- namespace ------------------------------------------------------------------------------


def test_namespaced_kinds_are_the_deletable_namespaced_ones() -> None:
    plurals = {r.plural for r in namespaced_kinds()}
    assert {"pods", "services", "configmaps", "replicasets", "deployments", "events", "leases"} <= plurals
    assert not plurals & {"namespaces", "nodes", "tokenreviews"}


def test_remaining_conditions_name_kinds_and_finalizers() -> None:
    remaining = Remaining(objects={"pods.": 2})
    remaining.finalizers.update(["example.com/hold"])
    conditions = {c[0]: c[1:] for c in remaining.conditions()}
    assert conditions["NamespaceContentRemaining"] == (
        "True", "SomeResourcesRemain", "Some resources are remaining: pods. has 2 resource instances")
    assert conditions["NamespaceFinalizersRemaining"][2].endswith("example.com/hold in 1 resource instances")
    assert conditions["NamespaceDeletionContentFailure"][0] == "False"
    assert not remaining.empty
    assert Remaining().empty


# ---- garbage collector ----------------------------------------------------------------------


def dependent(*owner_uids: str, **metadata: Any) -> Obj:
    refs = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"rs-{u}", "uid": u,
             "blockOwnerDeletion": u != "free"} for u in owner_uids]
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "dep", "ownerReferences": refs, **metadata}}


def test_gc_deletes_only_when_no_owner_is_solid() -> None:
    assert decide(dependent=dependent("a"), owners={"a": Owner.SOLID}, has_dependents=False) == Decision("none")
    assert decide(dependent=dependent("a"), owners={"a": Owner.DANGLING}, has_dependents=False) == Decision(
        "delete", policy="Background")
    assert decide(dependent=dependent("a", "b"), owners={"a": Owner.DANGLING, "b": Owner.SOLID},
                  has_dependents=False) == Decision("remove_refs", refs=frozenset({"a"}))
    assert decide(dependent=dependent("a", "b"), owners={"a": Owner.WAITING, "b": Owner.SOLID},
                  has_dependents=False) == Decision("remove_refs", refs=frozenset({"a"}))


def test_gc_foreground_cascades_and_finalizers_pick_the_policy() -> None:
    assert decide(dependent=dependent("a"), owners={"a": Owner.WAITING}, has_dependents=True).policy == "Foreground"
    assert decide(dependent=dependent("a"), owners={"a": Owner.WAITING}, has_dependents=False).policy == "Background"
    assert decide(dependent=dependent("a", finalizers=["orphan"]), owners={"a": Owner.DANGLING},
                  has_dependents=True).policy == "Orphan"
    assert decide(dependent=dependent("a", finalizers=["foregroundDeletion"]), owners={"a": Owner.DANGLING},
                  has_dependents=False).policy == "Foreground"


def test_gc_leaves_objects_already_being_deleted() -> None:
    going = dependent("a", deletionTimestamp="2024-01-01T00:00:00Z")
    assert decide(dependent=going, owners={"a": Owner.DANGLING}, has_dependents=False) == Decision("none")


def test_block_owner_deletion() -> None:
    assert blocks(dependent("a"), "a") and not blocks(dependent("free"), "free") and not blocks(dependent("a"), "b")


def test_remove_refs_patch_tests_what_it_removes_and_applies() -> None:
    obj = dependent("a", "b", "c")
    patched = json_patch(obj, remove_refs_patch(obj, frozenset({"a", "c"})))
    assert [r["uid"] for r in patched["metadata"]["ownerReferences"]] == ["b"]
    assert "ownerReferences" not in json_patch(obj, remove_refs_patch(obj, frozenset({"a", "b", "c"})))["metadata"]
    moved = dependent("b", "a", "c")  # the cache was stale: the entry is elsewhere now
    with pytest.raises(Exception):
        json_patch(moved, remove_refs_patch(obj, frozenset({"a"})))


def test_gc_watches_deletable_kinds_but_events_and_resolves_owner_kinds() -> None:
    plurals = {r.plural for r in watched_kinds()}
    assert {"pods", "replicasets", "deployments", "nodes", "namespaces", "leases"} <= plurals
    assert not plurals & {"events", "tokenreviews"}
    assert owner_resource({"apiVersion": "apps/v1", "kind": "ReplicaSet"}).plural == "replicasets"
    assert owner_resource({"apiVersion": "apps/v1beta2", "kind": "ReplicaSet"}).plural == "replicasets"
    assert owner_resource({"apiVersion": "v1", "kind": "Node"}).plural == "nodes"
    assert owner_resource({"apiVersion": "example.com/v1", "kind": "Widget"}) is None


# ---- the API server's side: which GC finalizer a delete sets --------------------------------

_RS = find(group="apps", version="v1", plural="replicasets")
_RC = find(group="", version="v1", plural="replicationcontrollers")


@pytest.mark.parametrize(("resource", "finalizers", "options", "expected"), [
    (_RS, [], {}, []),  # apps/v1: Background by default
    (_RC, [], {}, ["orphan"]),  # core/v1 ReplicationController: Orphan by default
    (_RC, [], {"propagationPolicy": "Background"}, []),
    (_RS, ["x"], {"propagationPolicy": "Foreground"}, ["x", "foregroundDeletion"]),
    (_RS, [], {"orphanDependents": True}, ["orphan"]),
    (_RC, [], {"orphanDependents": False}, []),
    (_RS, ["orphan"], {"propagationPolicy": "Foreground"}, ["foregroundDeletion"]),  # never both
    (_RS, ["foregroundDeletion"], {}, ["foregroundDeletion"]),  # a repeated delete keeps the first choice
    (_RC, ["foregroundDeletion"], {}, ["foregroundDeletion"]),
])
def test_delete_sets_the_gc_finalizer_of_its_propagation_policy(resource: Any, finalizers: list[str], options: Obj,
                                                                 expected: list[str]) -> None:
    assert _gc_finalizers(resource, finalizers, options) == expected
