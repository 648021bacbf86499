"""Health per kind and the Application rollup, read as Argo CD reads them."""

from __future__ import annotations

from typing import Any

import pytest

from podling.gitops.health import Health, health, rollup

Obj = dict[str, Any]


def obj(kind: str, *, spec: Obj | None = None, status: Obj | None = None, generation: int = 1, **metadata: Any) -> Obj:
    return {"kind": kind, "metadata": {"name": "x", "generation": generation, **metadata},
            "spec": spec or {}, "status": status or {}}


def deployment(*, want: int = 3, generation: int = 2, paused: bool = False, **status: Any) -> Obj:
    complete = {"observedGeneration": generation, "replicas": want, "updatedReplicas": want,
                "availableReplicas": want, "readyReplicas": want}
    return obj("Deployment", spec={"replicas": want, "paused": paused}, status={**complete, **status},
               generation=generation)


def condition(kind: str, status: str, reason: str = "", message: str = "") -> Obj:
    return {"type": kind, "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(("live", "expected"), [
    (deployment(), "Healthy"),
    (deployment(paused=True), "Suspended"),
    (deployment(observedGeneration=1), "Progressing"),
    (obj("Deployment", spec={"replicas": 1}), "Progressing"),  # no controller has written status yet
    (deployment(updatedReplicas=1), "Progressing"),
    (deployment(replicas=5), "Progressing"),  # old replicas still terminating
    (deployment(availableReplicas=2), "Progressing"),
    (deployment(conditions=[condition("Progressing", "False", "ProgressDeadlineExceeded")]), "Degraded"),
    (deployment(want=0), "Healthy"),
])
def test_deployment(live: Obj, expected: str) -> None:
    assert health(live).status == expected


def test_deployment_messages_say_why() -> None:
    assert health(deployment(updatedReplicas=1)).message == \
        "waiting for rollout to finish: 1 out of 3 new replicas have been updated"
    assert "exceeded its progress deadline" in health(
        deployment(conditions=[condition("Progressing", "False", "ProgressDeadlineExceeded")])).message


@pytest.mark.parametrize("kind", ["ReplicaSet", "ReplicationController"])
def test_replica_sets(kind: str) -> None:
    ready = {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2}
    assert health(obj(kind, spec={"replicas": 2}, status=ready)).status == "Healthy"
    assert health(obj(kind, spec={"replicas": 2}, status={**ready, "availableReplicas": 1})).status == "Progressing"
    assert health(obj(kind, spec={"replicas": 2}, status={**ready, "observedGeneration": 0})).status == "Progressing"
    failed = {**ready, "conditions": [condition("ReplicaFailure", "True", "FailedCreate", "quota exceeded")]}
    assert health(obj(kind, spec={"replicas": 2}, status=failed)) == Health("Degraded", "quota exceeded")


def test_stateful_sets() -> None:
    spec = {"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}
    done = {"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 2, "currentRevision": "r1",
            "updateRevision": "r1"}
    assert health(obj("StatefulSet", spec=spec, status=done)).status == "Healthy"
    assert health(obj("StatefulSet", spec=spec, status={**done, "readyReplicas": 2})).status == "Progressing"
    assert health(obj("StatefulSet", spec=spec, status={**done, "updatedReplicas": 1})).status == "Progressing"
    assert health(obj("StatefulSet", spec={"replicas": 3}, status={**done, "updatedReplicas": 3,
                                                                    "updateRevision": "r2"})).status == "Progressing"
    on_delete = {"replicas": 3, "updateStrategy": {"type": "OnDelete"}}
    assert health(obj("StatefulSet", spec=on_delete, status={"observedGeneration": 1})).status == "Healthy"
    assert health(obj("StatefulSet", spec=spec)).status == "Progressing"


def test_daemon_sets() -> None:
    done = {"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 2}
    assert health(obj("DaemonSet", status=done)).status == "Healthy"
    assert health(obj("DaemonSet", status={**done, "updatedNumberScheduled": 1})).status == "Progressing"
    assert health(obj("DaemonSet", status={**done, "numberAvailable": 1})).status == "Progressing"
    assert health(obj("DaemonSet", status={**done, "observedGeneration": 0})).status == "Progressing"


def pod(phase: str, *, ready: bool = False, waiting: str = "", init_waiting: str = "") -> Obj:
    status: Obj = {"phase": phase, "conditions": [condition("Ready", "True" if ready else "False")]}
    if waiting:
        status["containerStatuses"] = [{"name": "c", "state": {"waiting": {"reason": waiting, "message": "oops"}}}]
    if init_waiting:
        status["initContainerStatuses"] = [{"name": "i", "state": {"waiting": {"reason": init_waiting}}}]
    return obj("Pod", status=status)


@pytest.mark.parametrize(("live", "expected"), [
    (pod("Running", ready=True), "Healthy"),
    (pod("Running"), "Progressing"),
    (pod("Pending"), "Progressing"),
    (pod("Pending", waiting="ContainerCreating"), "Progressing"),
    (pod("Succeeded"), "Healthy"),
    (pod("Failed"), "Degraded"),
    (pod("Running", waiting="CrashLoopBackOff"), "Degraded"),
    (pod("Pending", waiting="ImagePullBackOff"), "Degraded"),
    (pod("Pending", waiting="ErrImagePull"), "Degraded"),
    (pod("Pending", init_waiting="CrashLoopBackOff"), "Degraded"),
    (pod("Weird"), "Unknown"),
])
def test_pods(live: Obj, expected: str) -> None:
    assert health(live).status == expected


def test_pod_messages_name_the_container() -> None:
    assert health(pod("Running", waiting="CrashLoopBackOff")).message == "container 'c' is CrashLoopBackOff: oops"


def test_services_claims_namespaces_and_the_rest() -> None:
    assert health(obj("Service", spec={"type": "ClusterIP"})).status == "Healthy"
    assert health(obj("Service", spec={"type": "LoadBalancer"})).status == "Progressing"
    assert health(obj("Service", spec={"type": "LoadBalancer"},
                      status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})).status == "Healthy"
    for phase, expected in (("Bound", "Healthy"), ("Pending", "Progressing"), ("Lost", "Degraded"),
                            (None, "Unknown")):
        assert health(obj("PersistentVolumeClaim", status={"phase": phase})).status == expected
    for phase, expected in (("Active", "Healthy"), ("Terminating", "Progressing"), ("Odd", "Unknown")):
        assert health(obj("Namespace", status={"phase": phase})).status == expected
    assert health(obj("ConfigMap")).status == "Healthy"
    assert health(obj("Secret", deletionTimestamp="2026-01-01T00:00:00Z")) == Health("Progressing", "pending deletion")
    assert health(None) == Health("Missing", "not found in the cluster")
    assert health(obj("Application", status={"health": {"status": "Degraded", "message": "m"}})) == \
        Health("Degraded", "m")
    assert health(obj("Application")).status == "Progressing"


def test_health_never_raises_on_partial_objects() -> None:
    for kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "ReplicationController", "Pod", "Service",
                 "PersistentVolumeClaim", "Namespace", "Application", "ConfigMap"):
        assert health({"kind": kind}).status in {"Healthy", "Progressing", "Unknown"}


def test_rollup_is_the_worst() -> None:
    order = ["Healthy", "Unknown", "Suspended", "Progressing", "Missing", "Degraded"]
    for worse, better in zip(order[1:], order, strict=False):
        assert rollup([Health(better, "b"), Health(worse, "w"), Health(better)]) == Health(worse, "w")
    assert rollup([]) == Health("Healthy")
    assert rollup([Health("Progressing", "first"), Health("Progressing", "second")]).message == "first"
