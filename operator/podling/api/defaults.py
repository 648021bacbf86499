"""Defaulting: the fields Kubernetes fills in when a client leaves them out.

``apply_defaults(kind, obj)`` mutates ``obj`` in place and is idempotent: defaulting a
defaulted object changes nothing, so it runs on every create and update (as Kubernetes'
defaulters do) and a re-apply never shows a diff. Only fields that are absent are set; a
value the client chose is never replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]

_NOT_READY_TOLERATIONS = (
    ("node.kubernetes.io/not-ready", 300),
    ("node.kubernetes.io/unreachable", 300),
)


def _set(obj: Obj, key: str, value: Any) -> Any:
    if obj.get(key) is None:
        obj[key] = value
    return obj[key]


def pull_policy(image: str) -> str:
    """Always for ``:latest`` or an untagged image, else IfNotPresent (digests included)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def _probe(probe: Obj | None) -> None:
    if not probe:
        return
    _set(probe, "timeoutSeconds", 1)
    _set(probe, "periodSeconds", 10)
    _set(probe, "successThreshold", 1)
    _set(probe, "failureThreshold", 3)
    if probe.get("httpGet"):
        _set(probe["httpGet"], "path", "/")
        _set(probe["httpGet"], "scheme", "HTTP")


def _container(c: Obj) -> None:
    if isinstance(c.get("image"), str):
        _set(c, "imagePullPolicy", pull_policy(c["image"]))
    _set(c, "terminationMessagePath", "/dev/termination-log")
    _set(c, "terminationMessagePolicy", "File")
    _set(c, "resources", {})
    for port in c.get("ports") or ():
        _set(port, "protocol", "TCP")
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(c.get(name))
    resources = c["resources"]
    if resources.get("limits") and resources.get("requests") is None:
        # Kubernetes: requests default to limits when only limits are given.
        resources["requests"] = dict(resources["limits"])


def pod_spec(spec: Obj) -> None:
    _set(spec, "restartPolicy", "Always")
    _set(spec, "terminationGracePeriodSeconds", 30)
    _set(spec, "dnsPolicy", "ClusterFirst")
    _set(spec, "schedulerName", "default-scheduler")
    _set(spec, "securityContext", {})
    _set(spec, "enableServiceLinks", True)
    _set(spec, "serviceAccountName", spec.get("serviceAccount") or "default")
    _set(spec, "serviceAccount", spec["serviceAccountName"])
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        if isinstance(c, dict):
            _container(c)
    for volume in spec.get("volumes") or ():
        for source in ("configMap", "secret"):
            if isinstance(volume.get(source), dict):
                _set(volume[source], "defaultMode", 0o644)


def _pod_template(owner_spec: Obj) -> None:
    template = owner_spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        pod_spec(template["spec"])


def _qos_class(spec: Obj) -> str:
    containers = [c for c in (spec.get("containers") or []) + (spec.get("initContainers") or []) if isinstance(c, dict)]
    requests = [c.get("resources", {}).get("requests") or {} for c in containers]
    limits = [c.get("resources", {}).get("limits") or {} for c in containers]
    if not any(requests) and not any(limits):
        return "BestEffort"
    guaranteed = all(
        lim.get(r) is not None and str(lim.get(r)) == str(req.get(r, lim.get(r)))
        for req, lim in zip(requests, limits, strict=True)
        for r in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _pod(obj: Obj) -> None:
    spec = _set(obj, "spec", {})
    pod_spec(spec)
    tolerations = _set(spec, "tolerations", [])
    for key, seconds in _NOT_READY_TOLERATIONS:
        if not any(t.get("key") == key for t in tolerations if isinstance(t, dict)):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds})
    status = _set(obj, "status", {})
    _set(status, "phase", "Pending")
    _set(status, "qosClass", _qos_class(spec))


def _deployment(obj: Obj) -> None:
    spec = _set(obj, "spec", {})
    _set(spec, "replicas", 1)
    strategy = _set(spec, "strategy", {})
    _set(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _set(strategy, "rollingUpdate", {})
        _set(rolling, "maxUnavailable", "25%")
        _set(rolling, "maxSurge", "25%")
    _set(spec, "revisionHistoryLimit", 10)
    _set(spec, "progressDeadlineSeconds", 600)
    _pod_template(spec)


def _replica_set(obj: Obj) -> None:
    spec = _set(obj, "spec", {})
    _set(spec, "replicas", 1)
    _pod_template(spec)


def _replication_controller(obj: Obj) -> None:
    spec = _set(obj, "spec", {})
    _set(spec, "replicas", 1)
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
    if template_labels:
        _set(spec, "selector", dict(template_labels))
        metadata = obj.setdefault("metadata", {})
        if not metadata.get("labels"):
            metadata["labels"] = dict(template_labels)
    _pod_template(spec)


def _stateful_set(obj: Obj) -> None:
    spec = _set(obj, "spec", {})
    _set(spec, "replicas", 1)
    _set(spec, "podManagementPolicy", "OrderedReady")
    strategy = _set(spec, "updateStrategy", {})
    _set(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        _set(_set(strategy, "rollingUpdate", {}), "partition", 0)
    _set(spec, "revisionHistoryLimit", 10)
    _pod_template(spec)


def _daemon_set(obj: Obj) -> None:
    spec = _set(obj, "spec", {})
    strategy = _set(spec, "updateStrategy", {})
    _set(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _set(strategy, "rollingUpdate", {})
        _set(rolling, "maxUnavailable", 1)
        _set(rolling, "maxSurge", 0)
    _set(spec, "revisionHistoryLimit", 10)
    _pod_template(spec)


def _service(obj: Obj) -> None:
    spec = _set(obj, "spec", {})
    _set(spec, "type", "ClusterIP")
    _set(spec, "sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        _set(spec, "internalTrafficPolicy", "Cluster")
        _set(spec, "ipFamilyPolicy", "SingleStack")
        _set(spec, "ipFamilies", ["IPv4"])
    for port in spec.get("ports") or ():
        if isinstance(port, dict):
            _set(port, "protocol", "TCP")
            if port.get("port") is not None:
                _set(port, "targetPort", port["port"])
    if spec["type"] in ("NodePort", "LoadBalancer"):
        _set(spec, "externalTrafficPolicy", "Cluster")


def _secret(obj: Obj) -> None:
    _set(obj, "type", "Opaque")


def _namespace(obj: Obj) -> None:
    spec = _set(obj, "spec", {})
    _set(spec, "finalizers", ["kubernetes"])
    _set(_set(obj, "status", {}), "phase", "Active")
    name = (obj.get("metadata") or {}).get("name")
    if name:
        _set(obj["metadata"], "labels", {})["kubernetes.io/metadata.name"] = name


def _pvc(obj: Obj) -> None:
    spec = _set(obj, "spec", {})
    _set(spec, "volumeMode", "Filesystem")
    _set(_set(obj, "status", {}), "phase", "Pending")


def _application(obj: Obj) -> None:
    spec = _set(obj, "spec", {})
    source = _set(spec, "source", {})
    _set(source, "targetRevision", "HEAD")
    _set(source, "path", ".")
    _set(spec, "interval", "60s")


_DEFAULTERS: dict[str, Callable[[Obj], None]] = {
    "Pod": _pod,
    "Deployment": _deployment,
    "ReplicaSet": _replica_set,
    "ReplicationController": _replication_controller,
    "StatefulSet": _stateful_set,
    "DaemonSet": _daemon_set,
    "Service": _service,
    "Secret": _secret,
    "Namespace": _namespace,
    "PersistentVolumeClaim": _pvc,
    "Application": _application,
}


def apply_defaults(*, kind: str, obj: Obj) -> None:
    """Fill in ``obj``'s defaulted fields in place (see the module docstring)."""
    defaulter = _DEFAULTERS.get(kind)
    if defaulter is not None:
        defaulter(obj)
