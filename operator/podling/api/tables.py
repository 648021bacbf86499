"""``meta.k8s.io/v1`` Table rendering: what ``kubectl get`` prints, from the resource table.

Columns come from each resource's ``columns``: a JSON path read off the object, or an
``@name`` computed by a function below (the ones Kubernetes' printers compute: a pod's
READY 1/2 and STATUS, a service's PORT(S) ...). Cells are strings or integers, never None:
missing values print as ``<none>`` like Kubernetes.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from podling.api import selectors
from podling.api.resources import Column, Resource

Obj = dict[str, Any]


def _path(obj: Any, path: str) -> Any:
    for part in path.strip(".").split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _age(timestamp: str | None) -> str:
    """Kubernetes' HumanDuration: 45s, 3m20s, 5h, 2d3h, 400d."""
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds())
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h{minutes % 60}m" if hours < 8 and minutes % 60 else f"{hours}h"
    days = hours // 24
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y{days % 365}d" if days < 365 * 8 else f"{days // 365}y"


def _container_statuses(pod: Obj) -> list[Obj]:
    return (pod.get("status") or {}).get("containerStatuses") or []


def _pod_ready(pod: Obj) -> str:
    statuses = _container_statuses(pod)
    total = len((pod.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(pod: Obj) -> str:
    """The STATUS column as kubectl shows it: a waiting/terminated reason beats the phase."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Pending"
    for index, s in enumerate(status.get("initContainerStatuses") or []):
        state = s.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated and terminated.get("exitCode") == 0:
            continue
        if terminated:
            reason = f"Init:{terminated.get('reason') or 'Error'}"
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            total = len((pod.get("spec") or {}).get("initContainers") or [])
            reason = f"Init:{index}/{total}"
        break
    else:
        for s in reversed(_container_statuses(pod)):
            state = s.get("state") or {}
            if (state.get("waiting") or {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif (state.get("terminated") or {}).get("reason"):
                reason = state["terminated"]["reason"]
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_restarts(pod: Obj) -> int:
    return sum(int(s.get("restartCount") or 0) for s in _container_statuses(pod))


def _pod_readiness_gates(pod: Obj) -> str:
    gates = (pod.get("spec") or {}).get("readinessGates") or []
    if not gates:
        return "<none>"
    conditions = {c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or []}
    return f"{sum(1 for g in gates if conditions.get(g.get('conditionType')) == 'True')}/{len(gates)}"


def _service_external_ip(svc: Obj) -> str:
    spec = svc.get("spec") or {}
    ips = list(spec.get("externalIPs") or [])
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ips += [i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")]
    if ips:
        return ",".join(ips)
    if spec.get("type") == "ExternalName":
        return spec.get("externalName") or "<none>"
    return "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"


def _service_ports(svc: Obj) -> str:
    ports = []
    for p in (svc.get("spec") or {}).get("ports") or []:
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        ports.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(ports) or "<none>"


def _map_text(mapping: Obj | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((mapping or {}).items())) or "<none>"


def _service_selector(svc: Obj) -> str:
    return _map_text((svc.get("spec") or {}).get("selector"))


def _endpoints(ep: Obj) -> str:
    addresses = []
    for subset in ep.get("subsets") or []:
        for address in subset.get("addresses") or []:
            for port in subset.get("ports") or [{}]:
                addresses.append(f"{address.get('ip')}:{port['port']}" if port.get("port") else address.get("ip"))
    if not addresses:
        return "<none>"
    shown = ",".join(addresses[:3])
    return shown + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")


def _node_status(node: Obj) -> str:
    """kubectl's STATUS: Ready, NotReady for any other Ready status (Unknown too, as on a lost
    node), Unknown only when there is no Ready condition at all."""
    conditions = {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}
    ready = "Unknown" if "Ready" not in conditions else "Ready" if conditions["Ready"] == "True" else "NotReady"
    if (node.get("spec") or {}).get("unschedulable"):
        ready += ",SchedulingDisabled"
    return ready


def _node_roles(node: Obj) -> str:
    roles = [
        key.removeprefix("node-role.kubernetes.io/")
        for key in ((node.get("metadata") or {}).get("labels") or {})
        if key.startswith("node-role.kubernetes.io/")
    ]
    return ",".join(sorted(roles)) or "<none>"


def _node_internal_ip(node: Obj) -> str:
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return address.get("address") or "<none>"
    return "<none>"


def _data_count(obj: Obj) -> int:
    return len(obj.get("data") or {}) + len(obj.get("binaryData") or {})


def _secrets_count(obj: Obj) -> int:
    return len(obj.get("secrets") or [])


def _event_last_seen(ev: Obj) -> str:
    return _age(ev.get("lastTimestamp") or ev.get("eventTime") or (ev.get("metadata") or {}).get("creationTimestamp"))


def _event_object(ev: Obj) -> str:
    involved = ev.get("involvedObject") or {}
    return f"{(involved.get('kind') or '').lower()}/{involved.get('name') or ''}"


def _template_containers(obj: Obj) -> list[Obj]:
    return ((((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")) or []


def _containers(obj: Obj) -> str:
    return ",".join(c.get("name", "") for c in _template_containers(obj)) or "<none>"


def _images(obj: Obj) -> str:
    return ",".join(c.get("image", "") for c in _template_containers(obj)) or "<none>"


def _selector(obj: Obj) -> str:
    selector = (obj.get("spec") or {}).get("selector")
    if obj.get("kind") == "ReplicationController":
        return _map_text(selector)
    return selectors.format_label_selector(selector or {}) or "<none>"


def _ready_replicas(obj: Obj) -> str:
    status = obj.get("status") or {}
    return f"{status.get('readyReplicas') or 0}/{(obj.get('spec') or {}).get('replicas', 0)}"


def _node_selector(obj: Obj) -> str:
    return _map_text(((((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeSelector")))


def _quota(obj: Obj, prefix: str) -> str:
    status = obj.get("status") or {}
    hard, used = status.get("hard") or {}, status.get("used") or {}
    parts = [
        f"{key}: {used.get(key, '0')}/{value}"
        for key, value in sorted(hard.items())
        if (key.startswith(prefix)) == (prefix == "limits.")
    ]
    return ", ".join(parts)


def _pvc_access_modes(pvc: Obj) -> str:
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    modes = (pvc.get("status") or {}).get("accessModes") or (pvc.get("spec") or {}).get("accessModes") or []
    return ",".join(short.get(m, m) for m in modes)


def _app_revision(app: Obj) -> str:
    revision = ((app.get("status") or {}).get("sync") or {}).get("revision") or ""
    return revision[:7] or "<none>"


_COMPUTED: dict[str, Callable[[Obj], Any]] = {
    "pod_ready": _pod_ready,
    "pod_status": _pod_status,
    "pod_restarts": _pod_restarts,
    "pod_readiness_gates": _pod_readiness_gates,
    "service_external_ip": _service_external_ip,
    "service_ports": _service_ports,
    "service_selector": _service_selector,
    "endpoints": _endpoints,
    "node_status": _node_status,
    "node_roles": _node_roles,
    "node_internal_ip": _node_internal_ip,
    "data_count": _data_count,
    "secrets_count": _secrets_count,
    "event_last_seen": _event_last_seen,
    "event_object": _event_object,
    "containers": _containers,
    "images": _images,
    "selector": _selector,
    "ready_replicas": _ready_replicas,
    "node_selector": _node_selector,
    "quota_request": lambda o: _quota(o, ""),
    "quota_limit": lambda o: _quota(o, "limits."),
    "pvc_access_modes": _pvc_access_modes,
    "app_revision": _app_revision,
}


def cell(column: Column, obj: Obj) -> Any:
    if column.path.startswith("@"):
        return _COMPUTED[column.path[1:]](obj)
    value = _path(obj, column.path)
    if column.type == "date":
        return _age(value)
    if value is None or value == "":
        return 0 if column.type == "integer" else "<none>"
    return value


def column_definitions(resource: Resource) -> list[Obj]:
    return [
        {
            "name": c.name,
            "type": c.type if c.type != "date" else "string",
            "format": c.format,
            "description": f"{c.name} of the {resource.kind}",
            "priority": c.priority,
        }
        for c in resource.columns
    ]


def row(resource: Resource, obj: Obj, *, include_object: str) -> Obj:
    result: Obj = {"cells": [cell(c, obj) for c in resource.columns]}
    if include_object == "Object":
        result["object"] = obj
    elif include_object != "None":
        result["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata") or {},
        }
    return result


def table(
    resource: Resource,
    objects: list[Obj],
    *,
    resource_version: str,
    continue_token: str = "",
    include_object: str = "Metadata",
    with_columns: bool = True,
) -> Obj:
    metadata: Obj = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(resource) if with_columns else [],
        "rows": [row(resource, obj, include_object=include_object) for obj in objects],
    }
