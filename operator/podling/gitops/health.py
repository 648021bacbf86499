"""Health of live objects, per kind, and of an Application as the worst of its objects.

Pure functions of what the API says, read the way Argo CD reads it: a workload is healthy
when its controller has observed its latest spec and the rollout is complete; a Pod by its
phase, readiness and container states; a Service, PVC or Namespace by its status; any other
kind is healthy once it exists. An object that does not exist is ``Missing``; one being
deleted is ``Progressing``. ``Unknown`` means the status says something this module does
not understand, never that it failed to look.

Invariant: :func:`health` never raises on a partial object (a status not yet written reads
as "not observed yet", which is ``Progressing`` for workloads), and never mutates it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from podling.api import meta

Status = Literal["Healthy", "Progressing", "Degraded", "Missing", "Suspended", "Unknown"]

# Worst first: the rollup of an Application is its worst object.
_SEVERITY: Mapping[str, int] = {"Degraded": 5, "Missing": 4, "Progressing": 3, "Suspended": 2, "Unknown": 1,
                                "Healthy": 0}
# Container waiting reasons that will not resolve by waiting (Argo CD reads them the same).
_BROKEN_WAITING = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                   "CreateContainerConfigError", "CreateContainerError", "RunContainerError")


@dataclasses.dataclass(frozen=True, slots=True)
class Health:
    status: Status
    message: str = ""


_HEALTHY = Health("Healthy")


def health(obj: Mapping[str, Any] | None) -> Health:
    """The health of one live object (None: it does not exist)."""
    if obj is None:
        return Health("Missing", "not found in the cluster")
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return Health("Progressing", "pending deletion")
    check = _CHECKS.get(str(obj.get("kind") or ""))
    return check(obj) if check is not None else _HEALTHY


def rollup(healths: Iterable[Health]) -> Health:
    """The worst of ``healths`` (Degraded > Missing > Progressing > Suspended > Unknown > Healthy).

    Its message is the first worst object's; Healthy when there is nothing to judge.
    """
    worst = _HEALTHY
    for item in healths:
        if _SEVERITY[item.status] > _SEVERITY[worst.status]:
            worst = item
    return worst


# ---- per kind ----------------------------------------------------------------------------


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("status") or {}


def _int(mapping: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = mapping.get(key)
    return value if isinstance(value, int) else default


def _observed(obj: Mapping[str, Any]) -> bool:
    """The controller has seen the latest spec (status.observedGeneration ≥ metadata.generation)."""
    generation = _int(obj.get("metadata") or {}, "generation", 1)
    return _int(_status(obj), "observedGeneration") >= generation


def _deployment(obj: Mapping[str, Any]) -> Health:
    spec, status = _spec(obj), _status(obj)
    if spec.get("paused"):
        return Health("Suspended", "deployment is paused")
    if not _observed(obj):
        return Health("Progressing", "waiting for rollout to finish: observed deployment generation "
                                     "less than desired generation")
    progressing = meta.get_condition(status, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Health("Degraded", f"deployment {meta.name(obj)!r} exceeded its progress deadline")
    replicas = _int(spec, "replicas", 1)
    updated, total = _int(status, "updatedReplicas"), _int(status, "replicas")
    available = _int(status, "availableReplicas")
    if updated < replicas:
        return Health("Progressing", f"waiting for rollout to finish: {updated} out of {replicas} new "
                                     "replicas have been updated")
    if total > updated:
        return Health("Progressing", f"waiting for rollout to finish: {total - updated} old replicas are "
                                     "pending termination")
    if available < updated:
        return Health("Progressing", f"waiting for rollout to finish: {available} of {updated} updated "
                                     "replicas are available")
    return _HEALTHY


def _replica_set(obj: Mapping[str, Any]) -> Health:
    """ReplicaSets and ReplicationControllers: replicas available, no ReplicaFailure."""
    spec, status = _spec(obj), _status(obj)
    if not _observed(obj):
        return Health("Progressing", "waiting for rollout to finish: observed generation less than desired generation")
    failure = meta.get_condition(status, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        return Health("Degraded", str(failure.get("message") or failure.get("reason") or "replica failure"))
    replicas = _int(spec, "replicas", 1)
    available = _int(status, "availableReplicas", _int(status, "readyReplicas"))
    if available < replicas:
        return Health("Progressing", f"waiting for rollout to finish: {available} of {replicas} replicas are available")
    return _HEALTHY


def _stateful_set(obj: Mapping[str, Any]) -> Health:
    spec, status = _spec(obj), _status(obj)
    if not _observed(obj):
        return Health("Progressing", "waiting for statefulset spec update to be observed")
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type") == "OnDelete":
        return Health("Healthy", "statefulset has updateStrategy OnDelete: its pods update when deleted")
    replicas = _int(spec, "replicas", 1)
    ready = _int(status, "readyReplicas")
    if ready < replicas:
        return Health("Progressing", f"waiting for {replicas - ready} pods to be ready")
    partition = _int(strategy.get("rollingUpdate") or {}, "partition")
    updated = _int(status, "updatedReplicas")
    if updated < replicas - partition:
        return Health("Progressing", f"waiting for partitioned roll out to finish: {updated} out of "
                                     f"{replicas - partition} new pods have been updated")
    if status.get("updateRevision") and status.get("currentRevision") != status.get("updateRevision"):
        return Health("Progressing", f"waiting for rolling update to complete: {updated} of {replicas} "
                                     "pods at the update revision")
    return _HEALTHY


def _daemon_set(obj: Mapping[str, Any]) -> Health:
    spec, status = _spec(obj), _status(obj)
    if not _observed(obj):
        return Health("Progressing", "waiting for daemonset spec update to be observed")
    if (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
        return Health("Healthy", "daemonset has updateStrategy OnDelete: its pods update when deleted")
    desired = _int(status, "desiredNumberScheduled")
    updated, available = _int(status, "updatedNumberScheduled"), _int(status, "numberAvailable")
    if updated < desired:
        return Health("Progressing", f"waiting for daemonset rollout to finish: {updated} out of {desired} "
                                     "new pods have been updated")
    if available < desired:
        return Health("Progressing", f"waiting for daemonset rollout to finish: {available} of {desired} "
                                     "updated pods are available")
    return _HEALTHY


def _pod(obj: Mapping[str, Any]) -> Health:
    status = _status(obj)
    containers = [*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())]
    for container in containers:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason in _BROKEN_WAITING:
            detail = f": {waiting['message']}" if waiting.get("message") else ""
            return Health("Degraded", f"container {container.get('name')!r} is {reason}{detail}")
    phase = status.get("phase")
    if phase == "Pending":
        return Health("Progressing", str(status.get("message") or status.get("reason") or "pod is pending"))
    if phase == "Succeeded":
        return Health("Healthy", str(status.get("message") or "pod completed"))
    if phase == "Failed":
        return Health("Degraded", str(status.get("message") or status.get("reason") or "pod failed"))
    if phase == "Running":
        ready = meta.get_condition(status, "Ready")
        if ready and ready.get("status") == "True":
            return _HEALTHY
        return Health("Progressing", "pod is running but not ready")
    return Health("Unknown", f"pod phase is {phase!r}")


def _service(obj: Mapping[str, Any]) -> Health:
    if _spec(obj).get("type") == "LoadBalancer":
        ingress = (_status(obj).get("loadBalancer") or {}).get("ingress")
        if not ingress:
            return Health("Progressing", "waiting for the load balancer to get an address")
    return _HEALTHY


def _pvc(obj: Mapping[str, Any]) -> Health:
    phase = _status(obj).get("phase")
    if phase == "Bound":
        return _HEALTHY
    if phase == "Pending":
        return Health("Progressing", "waiting for the claim to be bound")
    if phase == "Lost":
        return Health("Degraded", "the claim lost its volume")
    return Health("Unknown", f"claim phase is {phase!r}")


def _namespace(obj: Mapping[str, Any]) -> Health:
    phase = _status(obj).get("phase")
    if phase in ("Active", None):
        return _HEALTHY
    if phase == "Terminating":
        return Health("Progressing", "namespace is terminating")
    return Health("Unknown", f"namespace phase is {phase!r}")


def _application(obj: Mapping[str, Any]) -> Health:
    """An Application's own rolled-up health, as its operator wrote it (app of apps)."""
    reported = _status(obj).get("health") or {}
    status = reported.get("status")
    if status not in _SEVERITY:
        return Health("Progressing", "waiting for the application's first health report")
    return Health(status, str(reported.get("message") or ""))


_CHECKS = {
    "Deployment": _deployment,
    "ReplicaSet": _replica_set,
    "ReplicationController": _replica_set,
    "StatefulSet": _stateful_set,
    "DaemonSet": _daemon_set,
    "Pod": _pod,
    "Service": _service,
    "PersistentVolumeClaim": _pvc,
    "Namespace": _namespace,
    "Application": _application,
}
