"""The endpoints controller: each Service with a selector has an Endpoints object listing its pods.

Invariants:

* For a Service with a selector, the Endpoints of the same name is a pure function of the
  Service and the pods of its namespace that the selector matches (:func:`build_subsets`):
  pods with an IP, not terminating and not finished for good; ready ones under
  ``addresses``, the others under ``notReadyAddresses`` (with
  ``publishNotReadyAddresses`` every such pod is an address, terminating ones too). Each
  Service port resolves per pod (a named ``targetPort`` through the pod's container ports),
  and pods resolving to different port sets land in different subsets, as Kubernetes'
  ``RepackSubsets`` groups them. Addresses, ports and subsets are sorted, so the same
  inputs always give the same object and a reconcile writes only when something changed.
* The Endpoints this controller writes carry ``endpointslice.kubernetes.io/skip-mirror:
  "true"`` (Kubernetes' own mark for them); when their Service is gone they are deleted.
  Endpoints of a Service without a selector, and unmarked Endpoints without a Service,
  belong to users and are never touched.
* Keys are Service keys (``namespace/name``). Pod events enqueue the keys of the Services
  selecting the pod (before and after the change); Endpoints events enqueue their own key,
  so a managed Endpoints edited or deleted by hand is put back.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from podling.api import meta, selectors
from podling.api.resources import find
from podling.client.http import is_already_exists, is_conflict, is_not_found
from podling.client.informer import Obj
from podling.client.workqueue import run_workers
from podling.controllers.base import Context

log = logging.getLogger("podling.controllers.endpoints")

_SERVICES = find(group="", version="v1", plural="services")
_ENDPOINTS = find(group="", version="v1", plural="endpoints")
_PODS = find(group="", version="v1", plural="pods")
assert _SERVICES is not None and _ENDPOINTS is not None and _PODS is not None

MANAGED_LABEL = "endpointslice.kubernetes.io/skip-mirror"
HEADLESS_LABEL = "service.kubernetes.io/headless"
_BY_NAMESPACE = "endpoints:namespace"  # informer index names are shared per informer: ours are prefixed


# ---- the pure part: which addresses and ports ---------------------------------------------


def pod_is_ready(pod: Obj) -> bool:
    condition = meta.get_condition(pod.get("status"), "Ready")
    return condition is not None and condition.get("status") == "True"


def _pod_ip(pod: Obj) -> str:
    status = pod.get("status") or {}
    return status.get("podIP") or next((entry.get("ip", "") for entry in status.get("podIPs") or ()), "")


def should_be_in_endpoints(pod: Obj, *, include_terminating: bool) -> bool:
    """Kubernetes' ``ShouldPodBeInEndpoints``: an IP, not terminating, not finished for good."""
    if not _pod_ip(pod):
        return False
    if not include_terminating and (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    phase = (pod.get("status") or {}).get("phase")
    restart_policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
    if restart_policy == "Never":
        return phase not in ("Failed", "Succeeded")
    if restart_policy == "OnFailure":
        return phase != "Succeeded"
    return True


def resolve_port(pod: Obj, service_port: Mapping[str, Any]) -> int | None:
    """The pod's port number for a Service port: a numeric ``targetPort`` as is, a named one
    through the pod's container ports of the same protocol (None when the pod has no such
    port); no ``targetPort`` means the Service port itself."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    protocol = service_port.get("protocol") or "TCP"
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return port.get("containerPort")
    return None


def _address(pod: Obj, service: Obj) -> Obj:
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    address: Obj = {"ip": _pod_ip(pod)}
    if spec.get("hostname") and spec.get("subdomain") == meta.name(service):
        address["hostname"] = spec["hostname"]
    if spec.get("nodeName"):
        address["nodeName"] = spec["nodeName"]
    address["targetRef"] = {"kind": "Pod", "namespace": metadata.get("namespace", ""), "name": metadata.get("name", ""),
                            "uid": metadata.get("uid", "")}
    return address


_PortKey = tuple[str, int, str, str]  # (name, number, protocol, appProtocol) of one endpoint port
_AddressKey = tuple[str, str, str]  # (ip, pod namespace, pod name)


def _port_key(service_port: Mapping[str, Any], number: int) -> _PortKey:
    return (service_port.get("name") or "", number, service_port.get("protocol") or "TCP",
            service_port.get("appProtocol") or "")


def _endpoint_port(key: _PortKey) -> Obj:
    name, number, protocol, app_protocol = key
    port: Obj = {"port": number, "protocol": protocol}
    if name:
        port["name"] = name
    if app_protocol:
        port["appProtocol"] = app_protocol
    return port


def build_subsets(*, service: Obj, pods: Iterable[Obj]) -> list[Obj]:
    """The ``subsets`` of the Service's Endpoints, given the pods its selector matches."""
    spec = service.get("spec") or {}
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    service_ports: Sequence[Obj] = spec.get("ports") or ()
    headless = spec.get("clusterIP") == "None"
    # the ports a pod resolves to -> (ready addresses, not-ready addresses), keyed to sort and deduplicate
    groups: dict[tuple[_PortKey, ...], tuple[dict[_AddressKey, Obj], dict[_AddressKey, Obj]]] = {}
    for pod in pods:
        if not should_be_in_endpoints(pod, include_terminating=publish_not_ready):
            continue
        ports = {_port_key(sp, number) for sp in service_ports if (number := resolve_port(pod, sp)) is not None}
        if not ports and (service_ports or not headless):
            continue  # (a headless Service without ports still lists its pods' addresses)
        ready, not_ready = groups.setdefault(tuple(sorted(ports)), ({}, {}))
        address = _address(pod, service)
        ref = address["targetRef"]
        into = ready if publish_not_ready or pod_is_ready(pod) else not_ready
        into[(address["ip"], ref["namespace"], ref["name"])] = address
    subsets = []
    for ports_key in sorted(groups):
        ready, not_ready = groups[ports_key]
        subset: Obj = {}
        if ready:
            subset["addresses"] = [ready[k] for k in sorted(ready)]
        if not_ready:
            subset["notReadyAddresses"] = [not_ready[k] for k in sorted(not_ready)]
        if ports_key:
            subset["ports"] = [_endpoint_port(key) for key in ports_key]
        subsets.append(subset)
    return subsets


def endpoints_labels(service: Obj) -> dict[str, str]:
    """The Service's labels, plus the marks Kubernetes puts on the Endpoints it manages."""
    labels = {**meta.labels(service), MANAGED_LABEL: "true"}
    if (service.get("spec") or {}).get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    return labels


def _pod_view(pod: Obj) -> tuple[Any, ...]:
    """What of a pod its Endpoints depend on: a change elsewhere (most status writes) is no news."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    ports = [(p.get("name"), p.get("containerPort"), p.get("protocol"))
             for c in spec.get("containers") or () for p in c.get("ports") or ()]
    return (meta.labels(pod), _pod_ip(pod), pod_is_ready(pod),
            bool((pod.get("metadata") or {}).get("deletionTimestamp")), status.get("phase"), spec.get("nodeName"),
            spec.get("hostname"), spec.get("subdomain"), ports)


# ---- the controller -----------------------------------------------------------------------


class EndpointsController:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.queue = context.metrics.queue("endpoints")
        self.services = context.informers.informer(_SERVICES)
        self.endpoints = context.informers.informer(_ENDPOINTS)
        self.pods = context.informers.informer(_PODS)
        self.services.add_index(_BY_NAMESPACE, lambda service: [meta.namespace(service)])
        self.pods.add_index(_BY_NAMESPACE, lambda pod: [meta.namespace(pod)])
        self.services.add_handlers(on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new),
                                   on_delete=self._enqueue)
        self.endpoints.add_handlers(on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new),
                                    on_delete=self._enqueue)
        self.pods.add_handlers(on_add=self._pod_changed, on_update=self._pod_updated, on_delete=self._pod_changed)

    async def run(self, *, workers: int) -> None:
        try:
            await run_workers(self.queue, self.context.reconciler("endpoints", self.reconcile), workers=workers)
        finally:
            self.queue.shutdown()

    # ---- events -> keys ------------------------------------------------------------------

    def _enqueue(self, obj: Obj) -> None:
        self.queue.add(meta.object_key(obj))

    def _services_of(self, pod: Obj) -> list[Obj]:
        labels = meta.labels(pod)
        return [service for service in self.services.by_index(_BY_NAMESPACE, meta.namespace(pod))
                if (selector := (service.get("spec") or {}).get("selector"))
                and selectors.from_map(selector).matches(labels)]

    def _pod_changed(self, pod: Obj) -> None:
        for service in self._services_of(pod):
            self._enqueue(service)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if _pod_view(old) == _pod_view(new):
            return
        self._pod_changed(old)
        self._pod_changed(new)

    # ---- reconcile -----------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        namespace, name = meta.split_key(key)
        service = self.services.get(key)
        current = self.endpoints.get(key)
        if service is None:
            if current is not None and meta.labels(current).get(MANAGED_LABEL) == "true":
                await self._delete(current)
            return
        selector = (service.get("spec") or {}).get("selector")
        if not selector:
            return  # a Service without a selector: its Endpoints are the user's
        match = selectors.from_map(selector)
        pods = [pod for pod in self.pods.by_index(_BY_NAMESPACE, namespace) if match.matches(meta.labels(pod))]
        subsets = build_subsets(service=service, pods=pods)
        labels = endpoints_labels(service)
        if current is not None and (current.get("subsets") or []) == subsets and dict(meta.labels(current)) == labels:
            return
        if current is None:
            body: Obj = {"apiVersion": "v1", "kind": "Endpoints",
                         "metadata": {"name": name, "namespace": namespace, "labels": labels}}
        else:
            body = copy.deepcopy(current)
            body["metadata"]["labels"] = labels
        body.pop("subsets", None)
        if subsets:
            body["subsets"] = subsets
        try:
            if current is None:
                await self.context.api.create(_ENDPOINTS, body, namespace=namespace)
            else:
                await self.context.api.update(_ENDPOINTS, body)
        except Exception as err:
            if not is_conflict(err) and not is_already_exists(err):  # a stale cache: the retry sees the news
                await self.context.recorder.event(
                    service, type="Warning", reason="FailedToUpdateEndpoint",
                    message=f"Failed to update endpoint {key}: {err}")
            raise
        log.debug("wrote endpoints %s: %d subsets", key, len(subsets))

    async def _delete(self, endpoints: Obj) -> None:
        try:
            await self.context.api.delete(_ENDPOINTS, namespace=meta.namespace(endpoints), name=meta.name(endpoints),
                                          preconditions={"uid": (endpoints.get("metadata") or {}).get("uid", "")})
        except Exception as err:
            if not is_not_found(err):
                raise
