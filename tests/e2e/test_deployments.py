"""The seed walkthrough end to end: Deployments, ReplicaSets and ReplicationControllers.

A real ``podling apiserver``, a real ``podling controller-manager`` running only the
replicaset, deployment and replicationcontroller controllers, one real ``podling kubelet`` on
the Docker engine, all driven and inspected with the real kubectl. Pod templates name their
node (``spec.nodeName``): no scheduler takes part. The tests run in order on one Deployment,
``web``, as a user would walk through it; its pods serve ``httpd`` and turn Ready by a TCP
readiness probe. The node's containers are removed when the module ends.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from podling_process import ControllerManagerProcess, KubeletProcess, PodlingProcess
from waiting import wait_for

NS = "rollouts"
IMAGE = "podling/busybox:1.35"
NEW_IMAGE = "podling/busybox:latest"


class Cluster:
    def __init__(self, *, api: PodlingProcess, kubelet: KubeletProcess) -> None:
        self.api, self.kubelet = api, kubelet

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0) -> str:
        return self.api.kubectl("-n", NS, *args, input=input, check=check, timeout=timeout).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    api = PodlingProcess(data_dir=tmp_path_factory.mktemp("apiserver")).start()
    kubelet = KubeletProcess(server=api, node_name=f"rollouts-{uuid.uuid4().hex[:6]}",
                             root_dir=tmp_path_factory.mktemp("kubelet"),
                             args=("--address", "127.0.0.1", "--node-status-update-frequency", "2",
                                   "--node-lease-renew-interval", "2"))
    manager = ControllerManagerProcess(server=api, log_dir=tmp_path_factory.mktemp("controller-manager"),
                                       args=("--controllers=replicaset,deployment,replicationcontroller",))
    try:
        kubelet.start()
        manager.start()
        api.kubectl("create", "namespace", NS)
        yield Cluster(api=api, kubelet=kubelet)
    finally:
        for process in (manager, kubelet):
            process.shut_down()
        kubelet.remove_containers()
        api.stop()



def serving_pod_spec(spec: dict[str, Any], node: str) -> None:
    """Place on ``node`` (no scheduler here), stop fast, and be Ready only once httpd listens."""
    spec["nodeName"] = node
    spec["terminationGracePeriodSeconds"] = 1
    for container in spec["containers"]:
        container["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def live_pods(cluster: Cluster, selector: str) -> list[dict[str, Any]]:
    """Pods matching ``selector`` that are not being deleted."""
    return [p for p in cluster.json("get", "pods", "-l", selector)["items"]
            if not p["metadata"].get("deletionTimestamp")]


def replica_sets(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """web's ReplicaSets by revision."""
    return {int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]): rs
            for rs in cluster.json("get", "rs", "-l", "app=web")["items"]}


def rollout_status(cluster: Cluster) -> str:
    return cluster.kubectl("rollout", "status", "deployment/web", "--timeout=90s", timeout=100)


def deployment_events(cluster: Cluster) -> list[str]:
    events = cluster.json("get", "events", "--field-selector", "involvedObject.kind=Deployment,involvedObject.name=web")
    return [e["message"] for e in sorted(events["items"], key=lambda e: e["metadata"]["creationTimestamp"])]


def image_of(obj: dict[str, Any]) -> str:
    return obj["spec"]["template"]["spec"]["containers"][0]["image"]


# ---- the walkthrough ------------------------------------------------------------------------


def test_create_deployment_makes_a_replica_set_and_a_ready_pod(cluster: Cluster) -> None:
    # What `kubectl create deployment web --image=IMG -- httpd ...` sends, placed on the node.
    manifest = json.loads(cluster.kubectl("create", "deployment", "web", f"--image={IMAGE}", "--dry-run=client",
                                          "-o", "json", "--", "httpd", "-f", "-p", "8080", "-h", "/tmp"))
    serving_pod_spec(manifest["spec"]["template"]["spec"], cluster.kubelet.node_name)
    cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
    assert 'deployment "web" successfully rolled out' in rollout_status(cluster)

    (revision, rs), = replica_sets(cluster).items()
    template_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert revision == 1 and rs["metadata"]["name"] == f"web-{template_hash}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": template_hash}
    owner = rs["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"], owner["blockOwnerDeletion"]) == \
        ("Deployment", "web", True, True)
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "1"

    pod, = live_pods(cluster, "app=web")
    assert pod["metadata"]["name"].startswith(f"web-{template_hash}-") and is_ready(pod)
    assert pod["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
    assert pod["metadata"]["labels"]["pod-template-hash"] == template_hash

    deployment = cluster.json("get", "deployment", "web")
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    status = deployment["status"]
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"], status["availableReplicas"]) == \
        (1, 1, 1, 1)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (conditions["Available"]["status"], conditions["Available"]["reason"]) == ("True",
                                                                                       "MinimumReplicasAvailable")
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert status["observedGeneration"] == deployment["metadata"]["generation"]
    reasons = {e["reason"] for e in cluster.json("get", "events", "--field-selector",
                                                 f"involvedObject.name={rs['metadata']['name']}")["items"]}
    assert "SuccessfulCreate" in reasons


def test_scale_to_three(cluster: Cluster) -> None:
    cluster.kubectl("scale", "deployment", "web", "--replicas=3")
    rollout_status(cluster)
    rs = replica_sets(cluster)[1]
    assert wait_for(lambda: len([p for p in live_pods(cluster, "app=web") if is_ready(p)]) == 3, timeout=30,
                    what="three ready pods")
    assert f"Scaled up replica set {rs['metadata']['name']} from 1 to 3" in deployment_events(cluster)
    assert cluster.json("get", "rs", rs["metadata"]["name"])["status"]["readyReplicas"] == 3


def test_set_image_rolls_out_without_dropping_below_min_available(cluster: Cluster) -> None:
    old = replica_sets(cluster)[1]["metadata"]["name"]
    ready_counts: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            ready_counts.append(sum(is_ready(p) for p in live_pods(cluster, "app=web")))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        cluster.kubectl("set", "image", "deployment/web", f"busybox={NEW_IMAGE}")
        out = rollout_status(cluster)
    finally:
        done.set()
        sampler.join()
    assert 'deployment "web" successfully rolled out' in out
    # 3 replicas at 25%/25%: maxSurge 1 (rounded up), maxUnavailable 0 (rounded down).
    assert len(ready_counts) > 5 and min(ready_counts) >= 3, ready_counts

    rss = replica_sets(cluster)
    new = rss[2]["metadata"]["name"]
    assert image_of(rss[2]) == NEW_IMAGE and rss[1]["spec"]["replicas"] == 0 and rss[2]["spec"]["replicas"] == 3
    pods = wait_for(lambda: (ps := live_pods(cluster, "app=web")) and len(ps) == 3 and ps, timeout=30,
                    what="three pods of the new template")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {NEW_IMAGE}
    events = deployment_events(cluster)
    for message in (f"Scaled up replica set {new} from 0 to 1", f"Scaled down replica set {old} from 3 to 2",
                    f"Scaled up replica set {new} from 2 to 3", f"Scaled down replica set {old} from 1 to 0"):
        assert message in events, events


def test_rollout_history_lists_the_revisions(cluster: Cluster) -> None:
    history = cluster.kubectl("rollout", "history", "deployment/web")
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    assert IMAGE in cluster.kubectl("rollout", "history", "deployment/web", "--revision=1")


def test_rollout_undo_to_revision_one_restores_its_template(cluster: Cluster) -> None:
    first = replica_sets(cluster)[1]["metadata"]["name"]
    assert "rolled back" in cluster.kubectl("rollout", "undo", "deployment/web", "--to-revision=1")
    rollout_status(cluster)
    assert image_of(cluster.json("get", "deployment", "web")) == IMAGE
    rss = replica_sets(cluster)
    # The first ReplicaSet is new again: revision 3, remembering it was 1.
    assert sorted(rss) == [2, 3] and rss[3]["metadata"]["name"] == first
    assert rss[3]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    pods = wait_for(lambda: (ps := live_pods(cluster, "app=web")) and len(ps) == 3 and ps, timeout=30,
                    what="three pods")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {IMAGE}
    history = cluster.kubectl("rollout", "history", "deployment/web")
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["2", "3"]


def test_rollout_restart_replaces_every_pod(cluster: Cluster) -> None:
    before = {p["metadata"]["name"] for p in live_pods(cluster, "app=web")}
    cluster.kubectl("rollout", "restart", "deployment/web")
    rollout_status(cluster)
    after = wait_for(lambda: (ps := live_pods(cluster, "app=web")) and len(ps) == 3 and ps, timeout=30,
                     what="three pods")
    assert not before & {p["metadata"]["name"] for p in after}
    rss = replica_sets(cluster)
    assert sorted(rss) == [2, 3, 4]
    assert "kubectl.kubernetes.io/restartedAt" in rss[4]["spec"]["template"]["metadata"]["annotations"]


def test_paused_deployment_scales_but_does_not_roll_until_resumed(cluster: Cluster) -> None:
    cluster.kubectl("rollout", "pause", "deployment/web")
    cluster.kubectl("set", "image", "deployment/web", f"busybox={NEW_IMAGE}")
    generation = cluster.json("get", "deployment", "web")["metadata"]["generation"]
    paused = wait_for(lambda: (d := cluster.json("get", "deployment", "web"))["status"].get(
        "observedGeneration") == generation and d, timeout=20, what="the paused change observed")
    progressing = {c["type"]: c for c in paused["status"]["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("Unknown", "DeploymentPaused")
    cluster.kubectl("scale", "deployment", "web", "--replicas=4")
    wait_for(lambda: len([p for p in live_pods(cluster, "app=web") if is_ready(p)]) == 4, timeout=30,
             what="four ready pods while paused")
    assert sorted(replica_sets(cluster)) == [2, 3, 4]  # no rollout while paused
    assert {p["spec"]["containers"][0]["image"] for p in live_pods(cluster, "app=web")} == {IMAGE}

    cluster.kubectl("rollout", "resume", "deployment/web")
    rollout_status(cluster)
    rss = replica_sets(cluster)
    assert image_of(rss[5]) == NEW_IMAGE and rss[5]["spec"]["replicas"] == 4
    # Revision 2 had this template already, but a restart annotation makes revision 5 a new one.
    pods = wait_for(lambda: (ps := live_pods(cluster, "app=web")) and len(ps) == 4 and ps, timeout=30,
                    what="four pods of the new template")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {NEW_IMAGE}


def test_revision_history_limit_deletes_the_oldest_empty_replica_sets(cluster: Cluster) -> None:
    assert sorted(replica_sets(cluster)) == [2, 3, 4, 5]
    cluster.kubectl("patch", "deployment", "web", "-p", '{"spec": {"revisionHistoryLimit": 1}}')
    wait_for(lambda: sorted(replica_sets(cluster)) == [4, 5], timeout=30, what="revisions 2 and 3 deleted")
    history = cluster.kubectl("rollout", "history", "deployment/web")
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["4", "5"]


# ---- ReplicationController, adoption and release -------------------------------------------


def test_replication_controller_replaces_a_deleted_pod(cluster: Cluster) -> None:
    spec: dict[str, Any] = {"containers": [{"name": "web", "image": IMAGE, "command": ["httpd", "-f", "-p", "8080",
                                                                                      "-h", "/tmp"]}]}
    serving_pod_spec(spec, cluster.kubelet.node_name)
    rc = {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "legacy"},
          "spec": {"replicas": 2, "selector": {"app": "legacy"},
                   "template": {"metadata": {"labels": {"app": "legacy"}}, "spec": spec}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(rc))
    pods = wait_for(lambda: (ps := live_pods(cluster, "app=legacy")) and len(ps) == 2 and all(map(is_ready, ps))
                    and ps, timeout=45, what="two ready pods of the RC")
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController" for p in pods)
    victim = pods[0]["metadata"]["name"]
    cluster.kubectl("delete", "pod", victim, "--wait=false")
    replaced = wait_for(lambda: (ps := live_pods(cluster, "app=legacy")) and len(ps) == 2
                        and victim not in {p["metadata"]["name"] for p in ps} and all(map(is_ready, ps)) and ps,
                        timeout=45, what="a replacement pod")
    assert len(replaced) == 2
    status = wait_for(lambda: (s := cluster.json("get", "rc", "legacy")["status"]).get("readyReplicas") == 2 and s,
                      timeout=20, what="the RC's status")
    assert status["replicas"] == 2 and status["availableReplicas"] == 2
    reasons = {e["reason"] for e in cluster.json("get", "events", "--field-selector",
                                                 "involvedObject.name=legacy")["items"]}
    assert "SuccessfulCreate" in reasons


def test_a_replica_set_adopts_matching_orphans_and_releases_pods_that_stop_matching(cluster: Cluster) -> None:
    spec: dict[str, Any] = {"containers": [{"name": "sleeper", "image": IMAGE, "command": ["sleep", "3600"]}]}
    serving_pod_spec(spec, cluster.kubelet.node_name)
    del spec["containers"][0]["readinessProbe"]
    orphan = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "labels": {"app": "adopt"}},
              "spec": spec}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(orphan))
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "adopter"},
          "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "adopt"}},
                   "template": {"metadata": {"labels": {"app": "adopt"}}, "spec": spec}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(rs))
    uid = wait_for(lambda: cluster.json("get", "rs", "adopter")["metadata"].get("uid"), timeout=10, what="the RS")
    adopted = wait_for(lambda: (p := cluster.json("get", "pod", "orphan"))["metadata"].get("ownerReferences") and p,
                       timeout=20, what="the orphan adopted")
    assert adopted["metadata"]["ownerReferences"][0]["uid"] == uid
    pods = wait_for(lambda: len(ps := live_pods(cluster, "app=adopt")) == 2 and ps, timeout=20, what="two pods")
    assert "orphan" in {p["metadata"]["name"] for p in pods}  # one adopted, one created: not three
    time.sleep(1)
    assert len(live_pods(cluster, "app=adopt")) == 2

    cluster.kubectl("label", "pod", "orphan", "app=released", "--overwrite")
    released = wait_for(lambda: not (p := cluster.json("get", "pod", "orphan"))["metadata"].get("ownerReferences")
                        and p, timeout=20, what="the pod released")
    assert released["metadata"]["labels"]["app"] == "released"
    wait_for(lambda: len(live_pods(cluster, "app=adopt")) == 2, timeout=20, what="a replacement for the released pod")
    status = wait_for(lambda: (s := cluster.json("get", "rs", "adopter")["status"]).get("replicas") == 2 and s,
                      timeout=20, what="the RS's status")
    assert status["fullyLabeledReplicas"] == 2


# ---- other strategies and deadlines --------------------------------------------------------


def sleeper_deployment(cluster: Cluster, name: str, *, replicas: int, **spec: Any) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {"containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "3600"]}]}
    serving_pod_spec(pod_spec, cluster.kubelet.node_name)
    del pod_spec["containers"][0]["readinessProbe"]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}, **spec}}


def test_recreate_stops_every_old_pod_before_starting_new_ones(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(sleeper_deployment(
        cluster, "batch", replicas=2, strategy={"type": "Recreate"})))
    cluster.kubectl("rollout", "status", "deployment/batch", "--timeout=60s")
    images_seen: list[set[str]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pods = cluster.json("get", "pods", "-l", "app=batch")["items"]  # terminating ones too
            images_seen.append({p["spec"]["containers"][0]["image"] for p in pods})
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        cluster.kubectl("set", "image", "deployment/batch", f"main={NEW_IMAGE}")
        cluster.kubectl("rollout", "status", "deployment/batch", "--timeout=60s")
        wait_for(lambda: images_seen[-1] == {NEW_IMAGE} and len(live_pods(cluster, "app=batch")) == 2, timeout=30,
                 what="two new pods")
    finally:
        done.set()
        sampler.join()
    assert not [seen for seen in images_seen if len(seen) > 1], "old and new pods at once"
    names = {image_of(rs): rs["metadata"]["name"] for rs in cluster.json("get", "rs", "-l", "app=batch")["items"]}
    events = cluster.json("get", "events", "--field-selector", "involvedObject.kind=Deployment,involvedObject.name=batch")
    messages = [e["message"] for e in sorted(events["items"], key=lambda e: e["metadata"]["creationTimestamp"])]
    down = messages.index(f"Scaled down replica set {names[IMAGE]} from 2 to 0")
    assert messages.index(f"Scaled up replica set {names[NEW_IMAGE]} from 0 to 2") > down, messages


def test_a_stuck_rollout_exceeds_its_progress_deadline(cluster: Cluster) -> None:
    manifest = sleeper_deployment(cluster, "stuck", replicas=1, progressDeadlineSeconds=3)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}  # nothing listens
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    condition = wait_for(lambda: {c["type"]: c for c in cluster.json("get", "deployment", "stuck")["status"].get(
        "conditions", [])}.get("Progressing", {}).get("status") == "False" and
        {c["type"]: c for c in cluster.json("get", "deployment", "stuck")["status"]["conditions"]}["Progressing"],
        timeout=30, what="Progressing=False")
    rs = cluster.json("get", "rs", "-l", "app=stuck")["items"][0]["metadata"]["name"]
    assert condition["reason"] == "ProgressDeadlineExceeded"
    assert condition["message"] == f'ReplicaSet "{rs}" has timed out progressing.'
    result = cluster.api.kubectl("-n", NS, "rollout", "status", "deployment/stuck", "--timeout=20s", check=False)
    assert result.returncode != 0 and 'deployment "stuck" exceeded its progress deadline' in result.stderr
