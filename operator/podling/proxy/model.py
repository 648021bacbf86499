"""What the proxy programs: one :class:`ServicePort` per port of every proxied Service.

Invariants:

* :func:`service_ports` is a pure function of a Service and its Endpoints (read-only dicts,
  possibly an informer's): the same inputs give equal values, endpoints deduplicated and
  sorted, so a sync that sees nothing new renders byte-identical rules.
* Only ready addresses (``subsets[].addresses``) receive traffic; ``notReadyAddresses`` never
  do. An endpoint port belongs to a service port when its name and protocol match (how
  Kubernetes pairs them: the endpoints controller copies the service port's name).
* Services that are not proxied give nothing: ExternalName, headless (``clusterIP: None``),
  and ports of a Service with neither a cluster IP nor a node port.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

Obj = Mapping[str, Any]

DEFAULT_AFFINITY_SECONDS = 10800  # Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServicePort:
    namespace: str
    name: str
    port_name: str  # "" for a Service's single unnamed port
    protocol: str  # TCP, UDP or SCTP
    cluster_ip: str  # "" when the Service has none (yet)
    port: int
    node_port: int  # 0 when none
    load_balancer_ips: tuple[str, ...]  # status.loadBalancer.ingress[].ip of a LoadBalancer Service
    affinity_seconds: int  # sessionAffinity ClientIP timeout; 0 for no affinity
    endpoints: tuple[Endpoint, ...]  # ready ones, sorted

    @property
    def service(self) -> str:
        """``namespace/name``: the label metrics carry."""
        return f"{self.namespace}/{self.name}"

    @property
    def key(self) -> str:
        """``namespace/name:port`` (kube-proxy's ServicePortName; ``namespace/name`` for an unnamed
        port): unique per node, since a Service's port names are unique."""
        return f"{self.service}:{self.port_name}" if self.port_name else self.service


def _ready_endpoints(endpoints: Obj | None, *, port_name: str, protocol: str) -> tuple[Endpoint, ...]:
    found: set[Endpoint] = set()
    for subset in (endpoints or {}).get("subsets") or ():
        numbers = [p.get("port") for p in subset.get("ports") or ()
                   if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == protocol]
        for number in numbers:
            if not isinstance(number, int) or isinstance(number, bool):
                continue
            found.update(Endpoint(address["ip"], number) for address in subset.get("addresses") or ()
                         if address.get("ip"))
    return tuple(sorted(found))


def service_ports(service: Obj, endpoints: Obj | None) -> list[ServicePort]:
    """The ServicePorts of ``service``, with the ready endpoints ``endpoints`` lists for each."""
    metadata = service.get("metadata") or {}
    spec = service.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"
    cluster_ip = spec.get("clusterIP") or ""
    if kind == "ExternalName" or cluster_ip == "None":
        return []
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(config.get("timeoutSeconds") or DEFAULT_AFFINITY_SECONDS)
    lb_ips: tuple[str, ...] = ()
    if kind == "LoadBalancer":
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
        lb_ips = tuple(sorted({entry["ip"] for entry in ingress if entry.get("ip")}))
    ports = []
    for port in spec.get("ports") or ():
        protocol = port.get("protocol") or "TCP"
        node_port = int(port.get("nodePort") or 0) if kind in ("NodePort", "LoadBalancer") else 0
        if not cluster_ip and not node_port:
            continue
        port_name = port.get("name") or ""
        ports.append(ServicePort(
            namespace=metadata.get("namespace") or "", name=metadata.get("name") or "", port_name=port_name,
            protocol=protocol, cluster_ip=cluster_ip, port=int(port["port"]), node_port=node_port,
            load_balancer_ips=lb_ips, affinity_seconds=affinity,
            endpoints=_ready_endpoints(endpoints, port_name=port_name, protocol=protocol)))
    return ports


def node_ingress_ips(nodes: list[Obj]) -> list[str]:
    """The addresses a LoadBalancer Service gets (k3s's service load balancer's choice): each
    Ready node's ExternalIP, or its InternalIP when it has none; sorted, without repeats."""
    found: set[str] = set()
    for node in nodes:
        status = node.get("status") or {}
        ready = next((c for c in status.get("conditions") or () if c.get("type") == "Ready"), None)
        if ready is None or ready.get("status") != "True":
            continue
        addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or ()}
        if ip := addresses.get("ExternalIP") or addresses.get("InternalIP"):
            found.add(ip)
    return sorted(found)
