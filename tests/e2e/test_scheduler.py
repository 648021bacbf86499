"""The scheduler end to end: a real API server, a real ``podling scheduler`` process with two
profiles, hollow ``podling kubelet`` processes as nodes, and Node objects made through the API
where a test needs a chosen capacity (they have no kubelet: their pods are bound, never run).

Every pod names the nodes it may use with a ``pool`` label, so tests do not disturb each other;
messages that count every node are built from the nodes the cluster has at that moment.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from podling_process import KubeletProcess, PodlingProcess, SchedulerProcess
from waiting import wait_for

Obj = dict[str, Any]
NS = "sched-e2e"
CONFIG = """\
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
- schedulerName: second-scheduler
  plugins:
    score:
      disabled: [{name: "*"}]
      enabled: [{name: NodeResourcesFit}]
"""


class Cluster:
    def __init__(self, api: PodlingProcess, scheduler: SchedulerProcess, hollow: list[str], tiny: str) -> None:
        self.api = api
        self.scheduler = scheduler
        self.hollow = hollow  # pool=hollow
        self.tiny = tiny  # pool=tiny, --max-pods 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    api = PodlingProcess(data_dir=tmp_path_factory.mktemp("apiserver")).start()
    config = tmp_path_factory.mktemp("config") / "scheduler.yaml"
    config.write_text(CONFIG)
    suffix = uuid.uuid4().hex[:6]
    kubelets: list[KubeletProcess] = []
    scheduler = SchedulerProcess(server=api, log_dir=tmp_path_factory.mktemp("scheduler"),
                                 args=("--scheduler-config", str(config)))
    try:
        for name, max_pods in ((f"hollow-a-{suffix}", 110), (f"hollow-b-{suffix}", 110), (f"hollow-c-{suffix}", 110),
                               (f"tiny-{suffix}", 1)):
            kubelets.append(KubeletProcess(
                server=api, node_name=name, root_dir=tmp_path_factory.mktemp(name),
                args=("--runtime", "hollow", "--hollow-start-delay", "0.1", "--address", "127.0.0.1",
                      "--max-pods", str(max_pods))).start())
        hollow = [k.node_name for k in kubelets[:3]]
        for name in hollow:
            api.kubectl("label", "node", name, "pool=hollow")
        api.kubectl("label", "node", kubelets[3].node_name, "pool=tiny")
        api.kubectl("create", "namespace", NS)
        scheduler.start()
        yield Cluster(api, scheduler, hollow, kubelets[3].node_name)
    finally:
        for process in [scheduler, *kubelets]:
            try:
                process.stop()
            except Exception:  # not started, or already gone: the others must still stop
                pass
        api.stop()



def create(api: PodlingProcess, obj: Obj) -> None:
    api.kubectl("create", "-f", "-", input=json.dumps(obj))


def pod(name: str, pool: str, *, cpu: str = "", host_port: int = 0, **spec: Any) -> Obj:
    container: Obj = {"name": "app", "image": "anything:1"}
    if cpu:
        container["resources"] = {"requests": {"cpu": cpu}}
    if host_port:
        container["ports"] = [{"containerPort": 80, "hostPort": host_port}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeSelector": {"pool": pool}, "terminationGracePeriodSeconds": 0, "containers": [container],
                     **spec}}


def fake_node(name: str, *, cpu: str, ready: str = "True") -> Obj:
    resources = {"cpu": cpu, "memory": "16Gi", "pods": "110"}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"pool": "fake"}},
            "status": {"capacity": resources, "allocatable": resources,
                       "conditions": [{"type": "Ready", "status": ready, "reason": "Test"}]}}


def add_node(api: PodlingProcess, obj: Obj) -> None:
    """A Node made through the API (a kubelet would post its status: here the test does)."""
    create(api, {key: value for key, value in obj.items() if key != "status"})
    status, _ = api.request("PATCH", f"/api/v1/nodes/{obj['metadata']['name']}/status", {"status": obj["status"]},
                            content_type="application/merge-patch+json")
    assert status == 200


def get_pod(api: PodlingProcess, name: str) -> Obj:
    return api.kubectl_json("get", "pod", name, "-n", NS)


def bound_to(api: PodlingProcess, name: str, *, timeout: float = 20) -> str:
    return wait_for(lambda: get_pod(api, name)["spec"].get("nodeName"), timeout=timeout, what=f"{name} to be bound")


def unschedulable_message(api: PodlingProcess, name: str, *, timeout: float = 20) -> str:
    def check() -> str:
        condition = next((c for c in get_pod(api, name).get("status", {}).get("conditions") or ()
                          if c["type"] == "PodScheduled"), {})
        ok = condition.get("status") == "False" and condition.get("reason") == "Unschedulable"
        return condition.get("message", "") if ok else ""

    return wait_for(check, timeout=timeout, what=f"{name} to be Unschedulable")


def events(api: PodlingProcess, name: str, reason: str) -> list[Obj]:
    items = api.kubectl_json("get", "events", "-n", NS, "--field-selector", f"involvedObject.name={name}")["items"]
    return [event for event in items if event["reason"] == reason]


def node_count(api: PodlingProcess) -> int:
    return len(api.kubectl_json("get", "nodes")["items"])


def fit_message(total: int, **counts: int) -> str:
    """Kubernetes' message for ``{reason: nodes}``: sorted as strings, count first."""
    return f"0/{total} nodes are available: " + ", ".join(sorted(f"{n} {reason}" for reason, n in counts.items())) + "."


SELECTOR = "node(s) didn't match Pod's node affinity/selector"
PORTS = "node(s) didn't have free ports for the requested pod ports"


# ---- tests ---------------------------------------------------------------------------------------


def test_a_pod_lands_where_its_node_selector_points_and_runs(cluster: Cluster) -> None:
    api, target = cluster.api, cluster.hollow[1]
    api.kubectl("label", "node", target, "disk=ssd")
    create(api, pod("ssd-pod", "hollow", nodeSelector={"pool": "hollow", "disk": "ssd"}))
    assert bound_to(api, "ssd-pod") == target
    wait_for(lambda: get_pod(api, "ssd-pod")["status"].get("phase") == "Running", timeout=20,
             what="the hollow kubelet to run it")
    (scheduled,) = wait_for(lambda: events(api, "ssd-pod", "Scheduled"), timeout=10, what="a Scheduled event")
    assert scheduled["message"] == f"Successfully assigned {NS}/ssd-pod to {target}"
    assert scheduled["source"]["component"] == "default-scheduler" and scheduled["type"] == "Normal"


def test_requests_fit_only_ready_nodes_with_room_and_a_new_node_takes_the_impossible_pod(cluster: Cluster) -> None:
    api = cluster.api
    add_node(api, fake_node("fake-big", cpu="8"))
    add_node(api, fake_node("fake-small", cpu="1"))
    add_node(api, fake_node("fake-sick", cpu="64", ready="False"))  # the emptiest, but not Ready
    create(api, pod("needs-four", "fake", cpu="4"))
    assert bound_to(api, "needs-four") == "fake-big"

    create(api, pod("needs-hundred", "fake", cpu="100"))
    total = node_count(api)
    expected = fit_message(total, **{"Insufficient cpu": 2, SELECTOR: total - 3,
                                     "node(s) had untolerated taint {node.kubernetes.io/not-ready: }": 1})
    assert unschedulable_message(api, "needs-hundred") == expected
    (failed,) = wait_for(lambda: events(api, "needs-hundred", "FailedScheduling"), timeout=10,
                         what="a FailedScheduling event")
    assert failed["type"] == "Warning" and failed["message"] == expected
    assert not get_pod(api, "needs-hundred")["spec"].get("nodeName")

    add_node(api, fake_node("fake-huge", cpu="128"))
    assert bound_to(api, "needs-hundred", timeout=30) == "fake-huge"
    api.kubectl("delete", "node", "fake-sick")  # so the messages of later tests count only selector mismatches


def test_host_ports_keep_pods_apart(cluster: Cluster) -> None:
    api = cluster.api
    for i in range(3):
        create(api, pod(f"port-{i}", "hollow", host_port=18080))
    assert sorted(bound_to(api, f"port-{i}") for i in range(3)) == sorted(cluster.hollow)
    create(api, pod("port-3", "hollow", host_port=18080))
    total = node_count(api)
    assert unschedulable_message(api, "port-3") == fit_message(total, **{PORTS: 3, SELECTOR: total - 3})
    create(api, pod("other-port", "hollow", host_port=18081))
    assert bound_to(api, "other-port") in cluster.hollow
    api.kubectl("delete", "pod", "port-0", "-n", NS, "--grace-period=0", "--force", "--wait=false")
    assert bound_to(api, "port-3", timeout=30) in cluster.hollow  # a deleted pod freed its port


def test_a_full_node_takes_no_more_pods(cluster: Cluster) -> None:
    api = cluster.api
    create(api, pod("tiny-1", "tiny"))
    assert bound_to(api, "tiny-1") == cluster.tiny
    create(api, pod("tiny-2", "tiny"))
    total = node_count(api)
    assert unschedulable_message(api, "tiny-2") == fit_message(total, **{"Too many pods": 1, SELECTOR: total - 1})


def test_each_scheduler_name_is_served_by_its_profile_and_others_are_left_alone(cluster: Cluster) -> None:
    api = cluster.api
    create(api, pod("second", "hollow", schedulerName="second-scheduler"))
    assert bound_to(api, "second") in cluster.hollow
    (scheduled,) = wait_for(lambda: events(api, "second", "Scheduled"), timeout=10, what="a Scheduled event")
    assert scheduled["source"]["component"] == "second-scheduler"
    create(api, pod("nobodys", "hollow", schedulerName="nobody"))
    time.sleep(3)
    left = get_pod(api, "nobodys")
    assert not left["spec"].get("nodeName") and not left.get("status", {}).get("conditions")


def test_pods_of_one_replica_set_spread_across_nodes(cluster: Cluster) -> None:
    api = cluster.api
    create(api, {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "spread", "namespace": NS},
                 "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "spread"}},
                          "template": {"metadata": {"labels": {"app": "spread"}},
                                       "spec": {"containers": [{"name": "app", "image": "anything:1"}]}}}})
    owner = api.kubectl_json("get", "replicaset", "spread", "-n", NS)
    reference = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "spread",
                 "uid": owner["metadata"]["uid"], "controller": True}
    for i in range(6):
        spec = pod(f"spread-{i}", "hollow")
        spec["metadata"].update(labels={"app": "spread"}, ownerReferences=[reference])
        create(api, spec)
    placed = [bound_to(api, f"spread-{i}") for i in range(6)]
    assert sorted(placed.count(node) for node in cluster.hollow) == [2, 2, 2]


def test_metrics_count_attempts_by_result_and_profile_and_pending_pods_by_queue(cluster: Cluster) -> None:
    families = {family.name: family for family in text_string_to_metric_families(cluster.scheduler.metrics())}

    def value(name: str, **labels: str) -> float:
        return sum(sample.value for sample in families[name].samples
                   if all(sample.labels.get(k) == v for k, v in labels.items())
                   and not sample.name.endswith("_created"))

    attempts = "podling_scheduler_schedule_attempts"
    assert value(attempts, result="scheduled", profile="default-scheduler") >= 15
    assert value(attempts, result="scheduled", profile="second-scheduler") == 1
    assert value(attempts, result="unschedulable", profile="default-scheduler") >= 3
    assert value("podling_scheduler_scheduling_attempt_duration_seconds", result="scheduled") > 0  # _sum and _count
    assert value("podling_scheduler_pending_pods", queue="unschedulable") == 1  # tiny-2 still waits
    assert {s.labels["queue"] for s in families["podling_scheduler_pending_pods"].samples} == \
        {"active", "backoff", "unschedulable", "gated"}
    assert "podling_scheduler_plugin_execution_duration_seconds" in families
    assert "podling_scheduler_scheduling_algorithm_duration_seconds" in families


def test_a_bad_configuration_is_refused_with_file_line_and_field(cluster: Cluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("NodeResourcesFit}", "NodeResourcesFit, weight: 1000}"))
    scheduler = SchedulerProcess(server=cluster.api, log_dir=tmp_path, args=("--scheduler-config", str(bad)))
    with pytest.raises(RuntimeError) as failed:
        scheduler.start(timeout=30)
    assert f"{bad}:9: profiles[1].plugins.score.enabled[0].weight: must be between 0 and 100, not 1000" in \
        str(failed.value)
