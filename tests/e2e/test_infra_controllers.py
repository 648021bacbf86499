"""Endpoints, node lifecycle, node IPAM, namespace and garbage collector controllers end to end.

A real ``podling apiserver``, a real ``podling controller-manager`` running these controllers
(and the ReplicaSet controller, which makes the pods they act on) with its node timeouts
shortened by flags, a real ``podling scheduler``, one Docker-backed ``podling kubelet`` for
pods whose IPs and containers matter, and two hollow kubelets for the node that gets lost
and the one that takes over. Everything is driven and inspected with the real kubectl.

How long pods stay on a lost node is their own ``tolerationSeconds``: the API server writes
the default not-ready/unreachable tolerations (300 s) into every pod, so the test's pods
carry shorter ones.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from podling_process import ControllerManagerProcess, KubeletProcess, PodlingProcess, SchedulerProcess
from waiting import wait_for

IMAGE = "podling/busybox:1.35"
GRACE = 6  # --node-monitor-grace-period: seconds of kubelet silence before a node is Unknown
HEARTBEAT = ("--node-status-update-frequency", "1", "--node-lease-renew-interval", "1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cluster:
    api: PodlingProcess
    docker: KubeletProcess  # runs pods as Docker containers
    lost: KubeletProcess  # hollow: its kubelet gets killed
    spare: KubeletProcess  # hollow: takes the lost node's pods


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    api = PodlingProcess(data_dir=tmp_path_factory.mktemp("apiserver")).start()
    suffix = uuid.uuid4().hex[:6]
    docker = KubeletProcess(server=api, node_name=f"infra-{suffix}", root_dir=tmp_path_factory.mktemp("docker"),
                            args=("--address", "127.0.0.1", *HEARTBEAT))
    lost, spare = (KubeletProcess(server=api, node_name=f"{role}-{suffix}", root_dir=tmp_path_factory.mktemp(role),
                                  args=("--runtime", "hollow", "--address", "127.0.0.1", *HEARTBEAT))
                   for role in ("lost", "spare"))
    manager = ControllerManagerProcess(server=api, log_dir=tmp_path_factory.mktemp("controller-manager"), args=(
        "--controllers", "endpoints,nodelifecycle,nodeipam,namespace,garbagecollector,replicaset",
        "--node-monitor-period", "1", "--node-monitor-grace-period", str(GRACE),
        "--node-startup-grace-period", str(GRACE)))
    scheduler = SchedulerProcess(server=api, log_dir=tmp_path_factory.mktemp("scheduler"))
    processes = (docker, lost, spare, manager, scheduler)
    try:
        for process in processes:
            process.start()
        yield Cluster(api=api, docker=docker, lost=lost, spare=spare)
    finally:
        for process in reversed(processes):
            process.shut_down()
        docker.remove_containers()
        api.stop()



def apply(api: PodlingProcess, *objs: dict[str, Any]) -> None:
    api.kubectl("apply", "-f", "-", input="".join(f"---\n{json.dumps(obj)}\n" for obj in objs))  # JSON is YAML


def get(api: PodlingProcess, *args: str) -> dict[str, Any] | None:
    """The object (or list) as JSON, or None when it is not there."""
    result = api.kubectl("get", *args, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr or "not found" in result.stderr, result.stderr
        return None
    return json.loads(result.stdout)


def namespace(api: PodlingProcess) -> str:
    name = f"infra-{uuid.uuid4().hex[:8]}"
    api.kubectl("create", "namespace", name)
    return name


def web_pod(name: str, ns: str, node: str, *, port: int = 8080, port_name: str = "http",
            labels: dict[str, str] | None = None) -> dict[str, Any]:
    """busybox httpd, Ready while /tmp/ready exists."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": "web"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "web", "image": IMAGE,
                "command": ["sh", "-c", f"touch /tmp/ready; mkdir /www; exec httpd -f -p {port} -h /www"],
                "ports": [{"name": port_name, "containerPort": port}],
                "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1}}]}}


def replica_set(name: str, ns: str, replicas: int, *, pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"rs": name}},
                     "template": {"metadata": {"labels": {"rs": name}}, "spec": pod_spec}}}


def sleeper(node: str, *, grace: int = 1) -> dict[str, Any]:
    return {"nodeName": node, "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "app", "image": IMAGE, "command": ["sleep", "3600"]}]}


def pods_of(api: PodlingProcess, ns: str, selector: str) -> list[dict[str, Any]]:
    return (get(api, "pods", "-n", ns, "-l", selector) or {"items": []})["items"]


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


# ---- endpoints ------------------------------------------------------------------------------


def addresses(api: PodlingProcess, ns: str, name: str) -> tuple[dict[str, int], dict[str, int]]:
    """(ready pod name -> port, not-ready pod name -> port) of an Endpoints object."""
    endpoints = get(api, "endpoints", name, "-n", ns) or {}
    ready: dict[str, int] = {}
    not_ready: dict[str, int] = {}
    for subset in endpoints.get("subsets") or []:
        for into, field in ((ready, "addresses"), (not_ready, "notReadyAddresses")):
            for address in subset.get(field) or []:
                into[address["targetRef"]["name"]] = subset["ports"][0]["port"]
    return ready, not_ready


def test_endpoints_follow_pods_coming_going_and_changing_readiness(cluster: Cluster) -> None:
    api, node = cluster.api, cluster.docker.node_name
    ns = namespace(api)
    apply(api, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
                "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
          web_pod("a", ns, node), web_pod("b", ns, node, port=8081),
          web_pod("other", ns, node, labels={"app": "other"}))
    wait_for(lambda: addresses(api, ns, "web") == ({"a": 8080, "b": 8081}, {}), timeout=60,
             what="both pods ready in the endpoints, each with its own named port")
    endpoints = get(api, "endpoints", "web", "-n", ns)
    assert endpoints["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"] == "true"
    pod_ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods_of(api, ns, "app=web")}
    listed = {a["targetRef"]["name"]: (a["ip"], a["nodeName"]) for s in endpoints["subsets"] for a in s["addresses"]}
    assert listed == {name: (ip, node) for name, ip in pod_ips.items()}
    assert len(endpoints["subsets"]) == 2  # two port numbers: two subsets
    table = api.kubectl("get", "endpoints", "web", "-n", ns).stdout
    assert f"{pod_ips['a']}:8080" in table and f"{pod_ips['b']}:8081" in table

    api.kubectl("exec", "-n", ns, "a", "--", "rm", "/tmp/ready")
    wait_for(lambda: addresses(api, ns, "web") == ({"b": 8081}, {"a": 8080}), timeout=30,
             what="pod a moved to notReadyAddresses")
    api.kubectl("exec", "-n", ns, "a", "--", "touch", "/tmp/ready")
    wait_for(lambda: addresses(api, ns, "web") == ({"a": 8080, "b": 8081}, {}), timeout=30, what="pod a ready again")

    apply(api, web_pod("c", ns, node))
    wait_for(lambda: "c" in addresses(api, ns, "web")[0], timeout=60, what="a new pod added")
    api.kubectl("delete", "pod", "b", "-n", ns, "--wait=false")
    wait_for(lambda: addresses(api, ns, "web") == ({"a": 8080, "c": 8080}, {}), timeout=30,
             what="the deleted pod gone from the endpoints as soon as it terminates")
    api.kubectl("label", "pod", "c", "-n", ns, "app=moved", "--overwrite")
    wait_for(lambda: addresses(api, ns, "web") == ({"a": 8080}, {}), timeout=30, what="a relabelled pod dropped")

    api.kubectl("delete", "service", "web", "-n", ns)
    wait_for(lambda: get(api, "endpoints", "web", "-n", ns) is None, timeout=30,
             what="endpoints deleted with the service")


def test_endpoints_of_a_service_without_selector_are_left_to_the_user(cluster: Cluster) -> None:
    api = cluster.api
    ns = namespace(api)
    apply(api, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext", "namespace": ns},
                "spec": {"ports": [{"port": 5432}]}},
          {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ext", "namespace": ns},
           "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}]},
          {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "lonely", "namespace": ns},
           "subsets": [{"addresses": [{"ip": "192.0.2.11"}], "ports": [{"port": 1}]}]})
    time.sleep(2)
    assert get(api, "endpoints", "ext", "-n", ns)["subsets"][0]["addresses"] == [{"ip": "192.0.2.10"}]
    assert get(api, "endpoints", "lonely", "-n", ns) is not None


# ---- node IPAM ------------------------------------------------------------------------------


def test_every_node_gets_its_own_pod_cidr(cluster: Cluster) -> None:
    names = [cluster.docker.node_name, cluster.lost.node_name, cluster.spare.node_name]

    def cidrs() -> dict[str, str] | None:
        found = {name: (get(cluster.api, "node", name) or {}).get("spec", {}).get("podCIDR") for name in names}
        return found if all(found.values()) else None

    found = wait_for(cidrs, timeout=20, what="a podCIDR on every node")
    assert len(set(found.values())) == len(names)
    assert all(cidr.startswith("10.244.") and cidr.endswith("/24") for cidr in found.values())
    node = get(cluster.api, "node", cluster.docker.node_name)
    assert node["spec"]["podCIDRs"] == [node["spec"]["podCIDR"]]


# ---- garbage collector ----------------------------------------------------------------------


def test_gc_background_deletes_the_pods_after_their_replicaset(cluster: Cluster) -> None:
    api = cluster.api
    ns = namespace(api)
    apply(api, replica_set("bg", ns, 2, pod_spec=sleeper(cluster.docker.node_name)))
    wait_for(lambda: len(pods_of(api, ns, "rs=bg")) == 2, timeout=30, what="the ReplicaSet's two pods")
    api.kubectl("delete", "rs", "bg", "-n", ns, "--cascade=background")
    assert get(api, "rs", "bg", "-n", ns) is None  # the owner goes at once...
    wait_for(lambda: not pods_of(api, ns, "rs=bg"), timeout=30, what="its pods to be collected")  # ...then its pods


def test_gc_foreground_deletes_the_pods_before_their_replicaset(cluster: Cluster) -> None:
    api = cluster.api
    ns = namespace(api)
    apply(api, replica_set("fg", ns, 2, pod_spec={
        **sleeper(cluster.docker.node_name, grace=3),
        "containers": [{"name": "app", "image": IMAGE, "command": ["sh", "-c", "trap '' TERM; sleep 3600"]}]}))
    wait_for(lambda: [p for p in pods_of(api, ns, "rs=fg") if p["status"].get("phase") == "Running"][1:], timeout=60,
             what="the ReplicaSet's two pods running")
    api.kubectl("delete", "rs", "fg", "-n", ns, "--cascade=foreground", "--wait=false")
    owner = get(api, "rs", "fg", "-n", ns)
    assert owner is not None and owner["metadata"]["deletionTimestamp"]
    assert "foregroundDeletion" in owner["metadata"]["finalizers"]
    terminating = wait_for(lambda: all(p["metadata"].get("deletionTimestamp") for p in pods_of(api, ns, "rs=fg"))
                           and pods_of(api, ns, "rs=fg"), timeout=15, what="the pods terminating")
    assert len(terminating) == 2
    assert get(api, "rs", "fg", "-n", ns) is not None, "the owner waits for its pods"
    wait_for(lambda: get(api, "rs", "fg", "-n", ns) is None, timeout=30, what="the owner gone after its pods")
    assert not pods_of(api, ns, "rs=fg")


def test_gc_orphan_keeps_the_pods_without_owner(cluster: Cluster) -> None:
    api = cluster.api
    ns = namespace(api)
    apply(api, replica_set("or", ns, 2, pod_spec=sleeper(cluster.docker.node_name)))
    wait_for(lambda: len(pods_of(api, ns, "rs=or")) == 2, timeout=30, what="the ReplicaSet's two pods")
    api.kubectl("delete", "rs", "or", "-n", ns, "--cascade=orphan")
    assert get(api, "rs", "or", "-n", ns) is None  # kubectl waited for the orphan finalizer to go
    pods = pods_of(api, ns, "rs=or")
    assert len(pods) == 2 and not any(p["metadata"].get("ownerReferences") for p in pods)
    assert not any(p["metadata"].get("deletionTimestamp") for p in pods)


def test_gc_keeps_a_dependent_that_has_another_live_owner(cluster: Cluster) -> None:
    api = cluster.api
    ns = namespace(api)
    apply(api, *({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}}
                 for name in ("owner-a", "owner-b")))
    owners = [get(api, "configmap", name, "-n", ns) for name in ("owner-a", "owner-b")]
    refs = [{"apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]}
            for o in owners]
    apply(api, {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "shared", "namespace": ns, "ownerReferences": refs}},
          {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "only-a", "namespace": ns, "ownerReferences": refs[:1]}})
    api.kubectl("delete", "configmap", "owner-a", "-n", ns)
    wait_for(lambda: get(api, "configmap", "only-a", "-n", ns) is None, timeout=20, what="the sole dependent collected")
    shared = wait_for(lambda: (cm := get(api, "configmap", "shared", "-n", ns))
                      and len(cm["metadata"]["ownerReferences"]) == 1 and cm, timeout=20,
                      what="the dangling reference removed")
    assert shared["metadata"]["ownerReferences"][0]["name"] == "owner-b"


def test_replication_controllers_orphan_by_default_in_core_v1(cluster: Cluster) -> None:
    """A DELETE without options orphans a core/v1 ReplicationController's pods, as Kubernetes does for
    backwards compatibility; apps/v1 kinds (above) cascade."""
    api = cluster.api
    ns = namespace(api)
    apply(api, {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "old", "namespace": ns},
                "spec": {"replicas": 0, "selector": {"app": "old"},
                         "template": {"metadata": {"labels": {"app": "old"}}, "spec": sleeper("nowhere")}}})
    rc = get(api, "rc", "old", "-n", ns)
    ref = {"apiVersion": "v1", "kind": "ReplicationController", "name": "old", "uid": rc["metadata"]["uid"],
           "controller": True, "blockOwnerDeletion": True}
    apply(api, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept", "namespace": ns,
                                                                      "ownerReferences": [ref]}})
    status, marked = api.request("DELETE", f"/api/v1/namespaces/{ns}/replicationcontrollers/old")
    assert status == 200 and "orphan" in marked["metadata"].get("finalizers", [])
    wait_for(lambda: get(api, "rc", "old", "-n", ns) is None, timeout=20, what="the controller gone")
    assert not get(api, "configmap", "kept", "-n", ns)["metadata"].get("ownerReferences")


# ---- namespace ------------------------------------------------------------------------------


def test_deleting_a_namespace_removes_everything_in_it(cluster: Cluster) -> None:
    api, kubelet = cluster.api, cluster.docker
    ns = namespace(api)
    apply(api, web_pod("web", ns, kubelet.node_name),
          {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": ns},
           "data": {"a": "1"}},
          {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
          {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": ns},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "deployed"}},
                    "template": {"metadata": {"labels": {"app": "deployed"}}, "spec": sleeper(kubelet.node_name)}}})
    deployment = get(api, "deployment", "app", "-n", ns)
    rs = replica_set("app-5d4f8", ns, 1, pod_spec=sleeper(kubelet.node_name))
    rs["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "app",
                                          "uid": deployment["metadata"]["uid"], "controller": True,
                                          "blockOwnerDeletion": True}]
    apply(api, rs)
    wait_for(lambda: (get(api, "pod", "web", "-n", ns) or {}).get("status", {}).get("phase") == "Running",
             timeout=60, what="the pod running")
    wait_for(lambda: len(pods_of(api, ns, "rs=app-5d4f8")) == 1, timeout=30, what="the deployment's RS pod")
    wait_for(lambda: get(api, "endpoints", "web", "-n", ns), timeout=30, what="the service's endpoints")
    assert kubelet.containers(pod="web")

    api.kubectl("delete", "namespace", ns, "--wait=false")
    marked = get(api, "namespace", ns)
    assert marked["status"]["phase"] == "Terminating"
    refused = api.kubectl("create", "configmap", "late", "-n", ns, check=False)
    assert refused.returncode != 0 and "being terminated" in refused.stderr
    wait_for(lambda: get(api, "namespace", ns) is None, timeout=60, what="the namespace gone")
    for kind in ("pods", "configmaps", "services", "endpoints", "deployments", "replicasets"):
        assert not get(api, kind, "-n", ns)["items"], kind
    wait_for(lambda: not kubelet.containers(pod="web"), timeout=20, what="the pod's containers removed")


def test_namespace_waits_for_content_with_finalizers(cluster: Cluster) -> None:
    api = cluster.api
    ns = namespace(api)
    apply(api, {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "held", "namespace": ns, "finalizers": ["example.com/hold"]}})
    api.kubectl("delete", "namespace", ns, "--wait=false")
    held = wait_for(lambda: condition(get(api, "namespace", ns), "NamespaceFinalizersRemaining").get("status") == "True"
                    and get(api, "namespace", ns), timeout=20, what="the namespace to report the finalizer")
    assert "example.com/hold in 1 resource instances" in condition(held, "NamespaceFinalizersRemaining")["message"]
    assert condition(held, "NamespaceContentRemaining")["message"] == (
        "Some resources are remaining: configmaps. has 1 resource instances")
    time.sleep(2)
    assert get(api, "namespace", ns) is not None
    api.kubectl("patch", "configmap", "held", "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    wait_for(lambda: get(api, "namespace", ns) is None, timeout=20, what="the namespace gone once the finalizer is")


# ---- node lifecycle -------------------------------------------------------------------------


def test_a_lost_node_turns_unknown_is_tainted_and_its_pods_move(cluster: Cluster) -> None:
    api, lost, spare = cluster.api, cluster.lost, cluster.spare
    ns = namespace(api)
    for node in (lost, spare):
        api.kubectl("label", "node", node.node_name, "infra-e2e=hollow", "--overwrite")
    api.kubectl("cordon", spare.node_name)  # everything lands on the node about to be lost first
    tolerations = [{"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}
                   for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")]
    apply(api, replica_set("moving", ns, 3, pod_spec={
        "nodeSelector": {"infra-e2e": "hollow"}, "tolerations": tolerations, "terminationGracePeriodSeconds": 30,
        "containers": [{"name": "app", "image": IMAGE, "command": ["sleep", "3600"]}]}))
    before = wait_for(lambda: (pods := pods_of(api, ns, "rs=moving")) and len(pods) == 3 and all(
        p["spec"].get("nodeName") == lost.node_name and p["status"].get("phase") == "Running" for p in pods) and pods,
        timeout=60, what="three pods running on the node to be lost")
    assert condition(get(api, "node", lost.node_name), "Ready")["status"] == "True"
    api.kubectl("uncordon", spare.node_name)

    lost.kill()
    killed = time.monotonic()
    node = wait_for(lambda: (n := get(api, "node", lost.node_name)) and condition(n, "Ready")["status"] == "Unknown"
                    and n, timeout=GRACE + 10, what="the lost node Unknown")
    assert time.monotonic() - killed >= GRACE - 1
    ready = condition(node, "Ready")
    assert ready["reason"] == "NodeStatusUnknown" and ready["message"] == "Kubelet stopped posting node status."
    assert api.kubectl("get", "node", lost.node_name).stdout.split("\n")[1].split()[1] == "NotReady"
    def our_taints() -> set[tuple[str, str]]:
        taints = get(api, "node", lost.node_name)["spec"].get("taints", [])
        return {(t["key"], t["effect"]) for t in taints if t["key"].startswith("node.kubernetes.io/")}

    taints = wait_for(our_taints, timeout=10, what="taints")
    assert taints == {("node.kubernetes.io/unreachable", "NoExecute"), ("node.kubernetes.io/unreachable", "NoSchedule")}

    old = {p["metadata"]["uid"] for p in before}
    moved = wait_for(lambda: (pods := pods_of(api, ns, "rs=moving")) and len(pods) == 3 and not any(
        p["metadata"]["uid"] in old for p in pods) and all(
        p["spec"].get("nodeName") == spare.node_name and p["status"].get("phase") == "Running" for p in pods) and pods,
        timeout=60, what="the pods replaced, running on the spare node")
    assert len(moved) == 3
    events = get(api, "events", "-n", ns, "--field-selector", "reason=TaintManagerEviction")["items"]
    assert {e["message"] for e in events} == {f"Marking for deletion Pod {ns}/{p['metadata']['name']}" for p in before}
    not_ready = get(api, "events", "-n", ns, "--field-selector", "reason=NodeNotReady")["items"]
    assert {e["involvedObject"]["uid"] for e in not_ready} == old  # marked not Ready before they went

    lost.start()
    wait_for(lambda: condition(get(api, "node", lost.node_name), "Ready")["status"] == "True", timeout=20,
             what="the node Ready again")
    wait_for(lambda: not [t for t in get(api, "node", lost.node_name)["spec"].get("taints", [])
                          if t["key"].startswith("node.kubernetes.io/")], timeout=10, what="its taints removed")
