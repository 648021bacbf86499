"""Each filter plugin against real NodeInfos from the cache: fits, and the reason when not."""

from __future__ import annotations

from typing import Any

import pytest

from podling.scheduler.cache import Cache
from podling.scheduler.framework import SKIP, Code, Handle
from podling.scheduler.info import NodeInfo, pod_info
from podling.scheduler.plugins import (NodeAffinity, NodeName, NodePorts, NodeResourcesFit, NodeUnschedulable,
                                       TaintToleration, VolumeRestrictions)
from scheduler_objects import cluster, container, node, pod

Obj = dict[str, Any]


def verdict(plugin_class: type, pod_obj: Obj, node_obj: Obj, *, bound: tuple[Obj, ...] = (),
            claims: dict[str, Obj] | None = None) -> str | None:
    """None if the node fits, "SKIP" if the plugin had nothing to check, else the reasons joined."""
    cache, handle = cluster(node_obj, pods=bound, claims=claims)
    plugin = plugin_class(handle)
    state: dict[str, Any] = {}
    info = pod_info(pod_obj)
    pre = plugin.pre_filter(state, info)
    if pre is SKIP:
        return "SKIP"
    if pre is not None:
        return f"pre: {pre.message}"
    node_info = cache.node(node_obj["metadata"]["name"])
    assert isinstance(node_info, NodeInfo)
    (status,) = plugin.filter(state, info, [node_info])
    return None if status is None else status.message


# ---- NodeUnschedulable ---------------------------------------------------------------------------


def test_cordoned_node_refuses_pods_unless_they_tolerate_the_unschedulable_taint() -> None:
    cordoned = node("n1", unschedulable=True)
    assert verdict(NodeUnschedulable, pod("p"), cordoned) == "node(s) were unschedulable"
    tolerant = pod("p", tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                                      "effect": "NoSchedule"}])
    assert verdict(NodeUnschedulable, tolerant, cordoned) is None


@pytest.mark.parametrize(("ready", "taint"), [("False", "node.kubernetes.io/not-ready"),
                                              (None, "node.kubernetes.io/not-ready"),
                                              ("Unknown", "node.kubernetes.io/unreachable")])
def test_a_node_that_is_not_ready_refuses_pods_that_do_not_tolerate_its_condition(ready: str | None,
                                                                                  taint: str) -> None:
    sick = node("n1", ready=ready)
    assert verdict(NodeUnschedulable, pod("p"), sick) == f"node(s) had untolerated taint {{{taint}: }}"
    tolerant = pod("p", tolerations=[{"key": taint, "operator": "Exists", "effect": "NoSchedule"}])
    assert verdict(NodeUnschedulable, tolerant, sick) is None
    # the NoExecute tolerations every pod gets by default do not let it onto a NoSchedule-tainted node
    default = pod("p", tolerations=[{"key": taint, "operator": "Exists", "effect": "NoExecute",
                                     "tolerationSeconds": 300}])
    assert verdict(NodeUnschedulable, default, sick) is not None


def test_node_unschedulable_is_skipped_while_every_node_is_ready_and_uncordoned() -> None:
    assert verdict(NodeUnschedulable, pod("p"), node("n1")) == "SKIP"


# ---- NodeName ------------------------------------------------------------------------------------


def test_node_name_fits_only_the_named_node() -> None:
    assert verdict(NodeName, pod("p"), node("n1")) == "SKIP"
    assert verdict(NodeName, pod("p", nodeName="n1"), node("n1")) is None
    assert verdict(NodeName, pod("p", nodeName="n2"), node("n1")) == "node(s) didn't match the requested node name"


# ---- NodeResourcesFit ----------------------------------------------------------------------------


def test_resources_fit_next_to_what_the_node_runs_already() -> None:
    small = node("n1", cpu="2", memory="4Gi")
    running = (pod("a", node_name="n1", cpu="1500m", memory="1Gi"),)
    assert verdict(NodeResourcesFit, pod("p", cpu="500m", memory="3Gi"), small, bound=running) is None
    assert verdict(NodeResourcesFit, pod("p", cpu="501m"), small, bound=running) == "Insufficient cpu"
    assert verdict(NodeResourcesFit, pod("p", cpu="1", memory="4Gi"), small, bound=running) == \
        "Insufficient cpu, Insufficient memory"


def test_a_pod_that_requests_nothing_fits_an_overcommitted_node() -> None:
    full = node("n1", cpu="1", memory="1Gi")
    over = (pod("a", node_name="n1", cpu="2", memory="2Gi"),)
    assert verdict(NodeResourcesFit, pod("p"), full, bound=over) is None
    assert verdict(NodeResourcesFit, pod("p", cpu="1m"), full, bound=over) == "Insufficient cpu"


def test_too_many_pods() -> None:
    tiny = node("n1", pods="2")
    two = (pod("a", node_name="n1"), pod("b", node_name="n1"))
    assert verdict(NodeResourcesFit, pod("p"), tiny, bound=two[:1]) is None
    assert verdict(NodeResourcesFit, pod("p", cpu="100"), tiny, bound=two) == "Too many pods, Insufficient cpu"


def test_finished_pods_hold_nothing() -> None:
    done = (pod("a", node_name="n1", cpu="4", phase="Succeeded"),)
    assert verdict(NodeResourcesFit, pod("p", cpu="4"), node("n1", cpu="4"), bound=done) is None


def test_requests_are_the_larger_of_app_containers_and_any_init_container_plus_overhead() -> None:
    two_cpus = node("n1", cpu="2")
    apps = [container("a", cpu="500m"), container("b", cpu="500m")]
    inits = [container("init", cpu="1500m")]
    assert pod_info(pod("p", containers=apps, initContainers=inits)).cpu == 1500
    assert verdict(NodeResourcesFit, pod("p", containers=apps, initContainers=inits), two_cpus) is None
    heavy_init = [container("init", cpu="2100m")]
    assert verdict(NodeResourcesFit, pod("p", containers=apps, initContainers=heavy_init), two_cpus) == \
        "Insufficient cpu"
    overhead = pod("p", containers=apps, initContainers=inits, overhead={"cpu": "600m"})
    assert pod_info(overhead).cpu == 2100
    assert verdict(NodeResourcesFit, overhead, two_cpus) == "Insufficient cpu"


def test_sidecars_add_to_the_pod_and_to_every_later_init_container() -> None:
    sidecar = container("proxy", cpu="200m", restartPolicy="Always")
    spec = pod("p", containers=[container("a", cpu="1")],
               initContainers=[container("first", cpu="100m"), sidecar, container("last", cpu="1200m")])
    # running: 1 + 0.2 = 1.2; while "last" initialises: 1.2 + 0.2 = 1.4
    assert pod_info(spec).cpu == 1400


def test_non_zero_requests_count_empty_containers_for_scoring_only() -> None:
    info = pod_info(pod("p", containers=[container("a"), container("b", cpu="250m", memory="1Gi")]))
    assert (info.cpu, info.memory) == (250, 1024 ** 3)
    assert (info.nonzero_cpu, info.nonzero_memory) == (350, 1024 ** 3 + 200 * 1024 * 1024)


# ---- NodePorts -----------------------------------------------------------------------------------


def with_port(name: str, port: int, *, protocol: str = "TCP", ip: str = "", node_name: str = "") -> Obj:
    spec_port: Obj = {"containerPort": 80, "hostPort": port, "protocol": protocol}
    if ip:
        spec_port["hostIP"] = ip
    return pod(name, node_name=node_name, containers=[container(ports=[spec_port])])


@pytest.mark.parametrize(("used", "wanted", "clash"), [
    (with_port("a", 8080, node_name="n1"), with_port("p", 8080), True),
    (with_port("a", 8080, node_name="n1"), with_port("p", 8081), False),
    (with_port("a", 8080, protocol="UDP", node_name="n1"), with_port("p", 8080), False),
    (with_port("a", 8080, ip="10.0.0.1", node_name="n1"), with_port("p", 8080, ip="10.0.0.2"), False),
    (with_port("a", 8080, ip="10.0.0.1", node_name="n1"), with_port("p", 8080, ip="10.0.0.1"), True),
    (with_port("a", 8080, ip="10.0.0.1", node_name="n1"), with_port("p", 8080), True),  # 0.0.0.0 takes every address
    (with_port("a", 8080, node_name="n1"), with_port("p", 8080, ip="10.0.0.2"), True),
])
def test_host_ports_clash_by_protocol_port_and_address(used: Obj, wanted: Obj, clash: bool) -> None:
    result = verdict(NodePorts, wanted, node("n1"), bound=(used,))
    assert result == ("node(s) didn't have free ports for the requested pod ports" if clash else None)


def test_node_ports_is_skipped_for_pods_without_host_ports() -> None:
    assert verdict(NodePorts, pod("p", containers=[container(ports=[{"containerPort": 80}])]), node("n1")) == "SKIP"


def test_a_deleted_pod_frees_its_port() -> None:
    cache, handle = cluster(node("n1"), pods=(with_port("a", 8080, node_name="n1"),))
    cache.remove_pod("default/a")
    info = pod_info(with_port("p", 8080))
    plugin = NodePorts(handle)
    state: dict[str, Any] = {}
    assert plugin.pre_filter(state, info) is None
    node_info = cache.node("n1")
    assert node_info is not None and plugin.filter(state, info, [node_info]) == [None]


# ---- NodeAffinity --------------------------------------------------------------------------------

AFFINITY_ERR = "node(s) didn't match Pod's node affinity/selector"


def required(*terms: Obj) -> Obj:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}


def expr(key: str, operator: str, *values: str) -> Obj:
    return {"key": key, "operator": operator, **({"values": list(values)} if values else {})}


def test_node_selector_needs_every_label() -> None:
    ssd = node("n1", labels={"disk": "ssd", "zone": "a"})
    assert verdict(NodeAffinity, pod("p", nodeSelector={"disk": "ssd"}), ssd) is None
    assert verdict(NodeAffinity, pod("p", nodeSelector={"disk": "ssd", "zone": "b"}), ssd) == AFFINITY_ERR
    assert verdict(NodeAffinity, pod("p"), ssd) == "SKIP"


@pytest.mark.parametrize(("expression", "fits"), [
    (expr("disk", "In", "ssd", "nvme"), True),
    (expr("disk", "In", "hdd"), False),
    (expr("disk", "NotIn", "hdd"), True),
    (expr("gpu", "NotIn", "yes"), True),  # NotIn matches a node without the label
    (expr("disk", "Exists"), True),
    (expr("gpu", "Exists"), False),
    (expr("gpu", "DoesNotExist"), True),
    (expr("cores", "Gt", "8"), True),
    (expr("cores", "Gt", "16"), False),
    (expr("cores", "Lt", "32"), True),
    (expr("disk", "Gt", "1"), False),  # not an integer: no match
])
def test_required_node_affinity_operators(expression: Obj, fits: bool) -> None:
    labelled = node("n1", labels={"disk": "ssd", "cores": "16"})
    result = verdict(NodeAffinity, pod("p", affinity=required({"matchExpressions": [expression]})), labelled)
    assert result == (None if fits else AFFINITY_ERR)


def test_terms_are_alternatives_and_expressions_within_a_term_all_hold() -> None:
    labelled = node("n1", labels={"disk": "ssd", "zone": "a"})
    both = {"matchExpressions": [expr("disk", "In", "ssd"), expr("zone", "In", "b")]}
    assert verdict(NodeAffinity, pod("p", affinity=required(both)), labelled) == AFFINITY_ERR
    either = required(both, {"matchExpressions": [expr("zone", "In", "a")]})
    assert verdict(NodeAffinity, pod("p", affinity=either), labelled) is None
    assert verdict(NodeAffinity, pod("p", affinity=required({})), labelled) == AFFINITY_ERR  # an empty term: nothing


def test_match_fields_on_the_node_name() -> None:
    by_name = required({"matchFields": [expr("metadata.name", "In", "n1")]})
    assert verdict(NodeAffinity, pod("p", affinity=by_name), node("n1")) is None
    assert verdict(NodeAffinity, pod("p", affinity=by_name), node("n2")) == AFFINITY_ERR


def test_node_selector_and_affinity_must_both_hold() -> None:
    spec = pod("p", nodeSelector={"disk": "ssd"}, affinity=required({"matchExpressions": [expr("zone", "In", "a")]}))
    assert verdict(NodeAffinity, spec, node("n1", labels={"disk": "ssd", "zone": "a"})) is None
    assert verdict(NodeAffinity, spec, node("n1", labels={"disk": "hdd", "zone": "a"})) == AFFINITY_ERR


def test_an_unparsable_affinity_rejects_the_pod_before_any_node() -> None:
    bad = required({"matchExpressions": [expr("cores", "Gt", "many")]})
    assert verdict(NodeAffinity, pod("p", affinity=bad), node("n1")).startswith("pre: ")
    bad_field = required({"matchFields": [expr("metadata.labels", "In", "x")]})
    assert "metadata.labels" in verdict(NodeAffinity, pod("p", affinity=bad_field), node("n1"))


# ---- TaintToleration -----------------------------------------------------------------------------


def taint(key: str, effect: str, value: str = "") -> Obj:
    return {"key": key, "value": value, "effect": effect}


@pytest.mark.parametrize(("tolerations", "fits"), [
    ([], False),
    ([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}], True),
    ([{"key": "dedicated", "value": "db"}], True),  # no operator is Equal; no effect tolerates every effect
    ([{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}], False),
    ([{"key": "dedicated", "operator": "Exists"}], True),
    ([{"operator": "Exists"}], True),  # an empty key with Exists tolerates everything
    ([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}], False),
])
def test_no_schedule_taints_need_a_matching_toleration(tolerations: list[Obj], fits: bool) -> None:
    tainted = node("n1", taints=[taint("dedicated", "NoSchedule", "db")])
    result = verdict(TaintToleration, pod("p", tolerations=tolerations), tainted)
    assert result == (None if fits else "node(s) had untolerated taint {dedicated: db}")


def test_no_execute_taints_filter_and_prefer_no_schedule_ones_do_not() -> None:
    assert verdict(TaintToleration, pod("p"), node("n1", taints=[taint("evict", "NoExecute")])) == \
        "node(s) had untolerated taint {evict: }"
    assert verdict(TaintToleration, pod("p"), node("n1", taints=[taint("soft", "PreferNoSchedule")])) == "SKIP"


def test_the_first_untolerated_taint_is_the_reason() -> None:
    tainted = node("n1", taints=[taint("a", "NoSchedule"), taint("b", "NoExecute")])
    tolerant = pod("p", tolerations=[{"key": "a", "operator": "Exists"}])
    assert verdict(TaintToleration, tolerant, tainted) == "node(s) had untolerated taint {b: }"


# ---- VolumeRestrictions --------------------------------------------------------------------------


def with_volume(name: str, source: str, spec: Obj, *, node_name: str = "") -> Obj:
    return pod(name, node_name=node_name, volumes=[{"name": "data", source: spec}])


@pytest.mark.parametrize(("source", "mine", "theirs", "clash"), [
    ("gcePersistentDisk", {"pdName": "d1"}, {"pdName": "d1"}, True),
    ("gcePersistentDisk", {"pdName": "d1", "readOnly": True}, {"pdName": "d1", "readOnly": True}, False),
    ("gcePersistentDisk", {"pdName": "d1", "readOnly": True}, {"pdName": "d1"}, True),
    ("gcePersistentDisk", {"pdName": "d1"}, {"pdName": "d2"}, False),
    ("awsElasticBlockStore", {"volumeID": "v1", "readOnly": True}, {"volumeID": "v1", "readOnly": True}, True),
    ("awsElasticBlockStore", {"volumeID": "v1"}, {"volumeID": "v2"}, False),
    ("iscsi", {"iqn": "iqn.1", "targetPortal": "a", "lun": 0}, {"iqn": "iqn.1", "targetPortal": "b", "lun": 1}, True),
    ("iscsi", {"iqn": "iqn.1", "readOnly": True}, {"iqn": "iqn.1", "readOnly": True}, False),
    ("rbd", {"monitors": ["m1", "m2"], "image": "i"}, {"monitors": ["m2"], "pool": "rbd", "image": "i"}, True),
    ("rbd", {"monitors": ["m1"], "image": "i"}, {"monitors": ["m2"], "image": "i"}, False),
    ("rbd", {"monitors": ["m1"], "pool": "a", "image": "i"}, {"monitors": ["m1"], "pool": "b", "image": "i"}, False),
])
def test_disks_only_one_read_write_user_may_mount(source: str, mine: Obj, theirs: Obj, clash: bool) -> None:
    used = with_volume("a", source, theirs, node_name="n1")
    result = verdict(VolumeRestrictions, with_volume("p", source, mine), node("n1"), bound=(used,))
    assert result == ("node(s) had no available disk" if clash else None)


def claim(name: str, *modes: str) -> Obj:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": list(modes)}}


def test_a_read_write_once_pod_claim_in_use_anywhere_rejects_every_node() -> None:
    claims = {"default/data": claim("data", "ReadWriteOncePod"), "default/shared": claim("shared", "ReadWriteOnce")}
    user = with_volume("a", "persistentVolumeClaim", {"claimName": "data"}, node_name="other")
    wanting = with_volume("p", "persistentVolumeClaim", {"claimName": "data"})
    assert verdict(VolumeRestrictions, wanting, node("n1"), bound=(user,), claims=claims) == \
        "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"
    assert verdict(VolumeRestrictions, wanting, node("n1"), claims=claims) == "SKIP"
    shared_user = with_volume("a", "persistentVolumeClaim", {"claimName": "shared"}, node_name="other")
    shared = with_volume("p", "persistentVolumeClaim", {"claimName": "shared"})
    assert verdict(VolumeRestrictions, shared, node("n1"), bound=(shared_user,), claims=claims) == "SKIP"


def test_a_missing_claim_rejects_the_pod_before_any_node() -> None:
    wanting = with_volume("p", "persistentVolumeClaim", {"claimName": "nope"})
    assert verdict(VolumeRestrictions, wanting, node("n1")) == 'pre: persistentvolumeclaim "nope" not found'


def test_a_shortage_is_unschedulable_where_a_mismatch_is_unresolvable() -> None:
    cache = Cache()
    cache.set_node(node("n1", cpu="1"))
    handle = Handle(cache=cache, claim=lambda key: None)
    info = pod_info(pod("p", cpu="2"))
    node_info = cache.node("n1")
    assert node_info is not None
    (status,) = NodeResourcesFit(handle).filter({}, info, [node_info])
    assert status is not None and status.code is Code.UNSCHEDULABLE
    selective = pod_info(pod("p", nodeSelector={"disk": "ssd"}))
    (status,) = NodeAffinity(handle).filter({}, selective, [node_info])
    assert status is not None and status.code is Code.UNRESOLVABLE
