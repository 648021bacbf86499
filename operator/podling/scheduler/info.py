"""What scheduling reads of a pod and of a node, parsed once from the API objects.

Invariants:

* A :class:`PodInfo` is built from one version of a pod and never changes, except
  ``groups`` (the spreading groups the cache assigns it, which depend on Services) and
  ``node_name`` when the scheduler assumes it on a node. The pod dict it holds is the
  informer's: read-only.
* Requests follow Kubernetes' ``PodRequests``: the sum over app containers, raised to what
  any init container needs while it runs (its own requests plus those of the sidecars
  started before it; a sidecar, an init container with ``restartPolicy: Always``, adds to
  the sum), plus ``spec.overhead``. A container without a request asks for 0 in the fit;
  the ``nonzero_*`` figures used by scoring count such a container as 100m CPU and 200 MiB,
  as kube-scheduler does, so empty pods still spread.
* Objects are read as the API client hands them out: plain dicts and lists (``isinstance``
  checks are against ``dict``, which is much cheaper than the ``Mapping`` ABC on this path).
* A :class:`NodeInfo` holds one node and the aggregates of the pods on it (requests,
  pod count, host ports, spreading groups, disks). Only :meth:`NodeInfo.add` and
  :meth:`NodeInfo.remove` change the aggregates, always together with ``pods``, so the
  sums are always those of ``pods``. The node's own part is replaced whole by
  :meth:`NodeInfo.set_node`. Each of the three empties ``memo``, where plugins keep what
  they computed from the node as it was (a score for a given pod size), so a memo is never
  stale: between two cycles usually only the node that got the last pod changes.
* A node whose Ready condition is not True carries an implied ``NoSchedule`` taint,
  ``node.kubernetes.io/not-ready`` (False, or no condition yet) or
  ``node.kubernetes.io/unreachable`` (Unknown), as the taints Kubernetes' node lifecycle
  controller puts on such nodes; a pod must tolerate it to go there.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Iterable, Mapping
from typing import Any

from podling.api import meta, quantity, selectors

Obj = dict[str, Any]

DEFAULT_MILLI_CPU = 100  # kube-scheduler's DefaultMilliCPURequest, for scoring only
DEFAULT_MEMORY = 200 * 1024 * 1024  # DefaultMemoryRequest
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
_ZONE_LABELS = (("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region"),
                ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone"))
_DISK_SOURCES = ("gcePersistentDisk", "awsElasticBlockStore", "rbd", "iscsi")


@functools.lru_cache(maxsize=4096)
def _milli(text: str) -> int:
    return quantity.cpu_millis(text)


@functools.lru_cache(maxsize=4096)
def _whole(text: str) -> int:
    return quantity.bytes_(text)


def _amount(resources: Mapping[str, Any], name: str, *, milli: bool) -> int | None:
    """A resource list's amount of ``name`` (millis for cpu), None when it is not listed."""
    value = resources.get(name)
    if value is None:
        return None
    text = str(value)
    return _milli(text) if milli else _whole(text)


# ---- taints and tolerations ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str  # NoSchedule, PreferNoSchedule, NoExecute


@dataclasses.dataclass(frozen=True, slots=True)
class Toleration:
    key: str
    operator: str  # Equal (also "") or Exists
    value: str
    effect: str  # "" tolerates every effect

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' ``ToleratesTaint``: an empty key with Exists tolerates every taint."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        return self.operator in ("", "Equal") and self.value == taint.value


def tolerated(tolerations: Iterable[Toleration], taint: Taint) -> bool:
    return any(toleration.tolerates(taint) for toleration in tolerations)


def _taints(spec: Mapping[str, Any]) -> tuple[Taint, ...]:
    return tuple(Taint(str(t.get("key") or ""), str(t.get("value") or ""), str(t.get("effect") or ""))
                 for t in spec.get("taints") or () if isinstance(t, dict))


def _tolerations(spec: Mapping[str, Any]) -> tuple[Toleration, ...]:
    return tuple(Toleration(str(t.get("key") or ""), str(t.get("operator") or ""), str(t.get("value") or ""),
                            str(t.get("effect") or ""))
                 for t in spec.get("tolerations") or () if isinstance(t, dict))


# ---- node affinity -----------------------------------------------------------------------------

_NODE_OPERATORS = {"In": selectors.Operator.IN, "NotIn": selectors.Operator.NOT_IN,
                   "Exists": selectors.Operator.EXISTS, "DoesNotExist": selectors.Operator.DOES_NOT_EXIST,
                   "Gt": selectors.Operator.GREATER_THAN, "Lt": selectors.Operator.LESS_THAN}


@dataclasses.dataclass(frozen=True, slots=True)
class NodeSelectorTerm:
    """Requirements on labels and on fields (``metadata.name``), all of which must hold.

    A term with neither matches no node (Kubernetes: "a null or empty term matches no objects").
    """

    labels: tuple[selectors.Requirement, ...]
    fields: tuple[selectors.Requirement, ...]

    def matches(self, node: NodeInfo) -> bool:
        if not self.labels and not self.fields:
            return False
        node_labels = node.labels
        if not all(r.matches(node_labels) for r in self.labels):
            return False
        return not self.fields or all(r.matches({"metadata.name": node.name}) for r in self.fields)


def _requirements(expressions: Any, *, path: str, fields: bool) -> tuple[selectors.Requirement, ...]:
    out = []
    for index, expression in enumerate(expressions or ()):
        where = f"{path}[{index}]"
        if not isinstance(expression, dict):
            raise selectors.ParseError(f"{where}: not an object")
        operator = _NODE_OPERATORS.get(expression.get("operator"))
        key = expression.get("key") or ""
        if operator is None or (fields and operator not in (selectors.Operator.IN, selectors.Operator.NOT_IN)):
            allowed = "In, NotIn" if fields else ", ".join(_NODE_OPERATORS)
            raise selectors.ParseError(f"{where}.operator: {expression.get('operator')!r} is not one of {allowed}")
        if fields and key != "metadata.name":
            raise selectors.ParseError(f"{where}.key: {key!r} is not a supported field (metadata.name)")
        values = tuple(str(v) for v in expression.get("values") or ())
        if fields and len(values) != 1:
            raise selectors.ParseError(f"{where}.values: a field requirement takes exactly one value")
        try:
            out.append(selectors.Requirement(key, operator, values))
        except selectors.ParseError as err:
            raise selectors.ParseError(f"{where}: {err}") from None
    return tuple(out)


def node_selector_term(term: Any, *, path: str) -> NodeSelectorTerm:
    if not isinstance(term, dict):
        return NodeSelectorTerm((), ())
    return NodeSelectorTerm(
        _requirements(term.get("matchExpressions"), path=f"{path}.matchExpressions", fields=False),
        _requirements(term.get("matchFields"), path=f"{path}.matchFields", fields=True))


@dataclasses.dataclass(frozen=True, slots=True)
class NodeAffinity:
    """``nodeSelector`` and required terms (a node must match the selector and one term), and
    preferred terms with their weights."""

    selector: selectors.LabelSelector | None  # from spec.nodeSelector
    required: tuple[NodeSelectorTerm, ...] | None  # None: no required node affinity
    preferred: tuple[tuple[int, NodeSelectorTerm], ...]

    def required_matches(self, node: NodeInfo) -> bool:
        if self.selector is not None and not self.selector.matches(node.labels):
            return False
        return self.required is None or any(term.matches(node) for term in self.required)


def _node_affinity(spec: Mapping[str, Any]) -> NodeAffinity | None:
    """None when the pod constrains nothing; raises ``selectors.ParseError`` on bad terms."""
    node_selector = spec.get("nodeSelector") or {}
    affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
    if not node_selector and not affinity:
        return None
    base = "spec.affinity.nodeAffinity"
    selector = selectors.from_map({str(k): str(v) for k, v in node_selector.items()}) if node_selector else None
    required = None
    if (terms := affinity.get("requiredDuringSchedulingIgnoredDuringExecution")) is not None:
        path = f"{base}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"
        required = tuple(node_selector_term(term, path=f"{path}[{i}]")
                         for i, term in enumerate(terms.get("nodeSelectorTerms") or ()))
    preferred = []
    for i, item in enumerate(affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or ()):
        path = f"{base}.preferredDuringSchedulingIgnoredDuringExecution[{i}].preference"
        if isinstance(item, dict) and int(item.get("weight") or 0):
            preferred.append((int(item["weight"]), node_selector_term(item.get("preference"), path=path)))
    return NodeAffinity(selector, required, tuple(preferred))


# ---- pods --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class HostPort:
    ip: str  # "0.0.0.0" when the container binds every address
    protocol: str
    port: int


@dataclasses.dataclass(frozen=True, slots=True)
class Disk:
    """A volume that only one read-write user may have on a node (the seed's NoDiskConflict)."""

    kind: str  # one of _DISK_SOURCES
    identity: tuple[str, ...]  # what names the disk: PD name, volume ID, pool+image, IQN
    monitors: frozenset[str]  # rbd: two images are the same if their monitors overlap
    read_only: bool

    def conflicts(self, other: Disk) -> bool:
        if self.kind != other.kind or self.identity != other.identity:
            return False
        if self.kind == "rbd" and not self.monitors & other.monitors:
            return False
        if self.kind == "awsElasticBlockStore":
            return True  # an EBS volume attaches to one instance, read-only or not
        return not (self.read_only and other.read_only)


def _disks(volumes: Iterable[Any]) -> tuple[Disk, ...]:
    disks = []
    for volume in volumes:
        if not isinstance(volume, dict):
            continue
        for kind in _DISK_SOURCES:
            source = volume.get(kind)
            if not isinstance(source, dict):
                continue
            read_only = bool(source.get("readOnly"))
            monitors: frozenset[str] = frozenset()
            if kind == "gcePersistentDisk":
                identity: tuple[str, ...] = (str(source.get("pdName") or ""),)
            elif kind == "awsElasticBlockStore":
                identity = (str(source.get("volumeID") or ""),)
            elif kind == "iscsi":
                identity = (str(source.get("iqn") or ""),)
            else:
                identity = (str(source.get("pool") or "rbd"), str(source.get("image") or ""))
                monitors = frozenset(str(m) for m in source.get("monitors") or ())
            disks.append(Disk(kind, identity, monitors, read_only))
    return tuple(disks)


@dataclasses.dataclass(slots=True, eq=False)
class PodInfo:
    pod: Obj
    key: str  # namespace/name
    uid: str
    namespace: str
    node_name: str
    scheduler_name: str
    priority: int
    labels: Mapping[str, str]
    cpu: int  # millicores requested (the fit)
    memory: int  # bytes requested
    nonzero_cpu: int  # the same with kube-scheduler's defaults for containers without requests (scoring)
    nonzero_memory: int
    host_ports: tuple[HostPort, ...]
    tolerations: tuple[Toleration, ...]
    affinity: NodeAffinity | None
    affinity_error: str  # a node affinity that cannot be parsed: the pod cannot be placed
    disks: tuple[Disk, ...]
    claims: tuple[str, ...]  # namespace/claimName of its persistentVolumeClaim volumes
    owner_uid: str  # its controller's uid, "" if none
    terminating: bool
    groups: frozenset[str] = frozenset()  # spreading groups: set by the cache


def _requests(spec: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(cpu, memory, nonzero cpu, nonzero memory) of Kubernetes' PodRequests (see the module doc)."""

    def of(container: Any) -> tuple[int, int, int, int]:
        requests = ((container.get("resources") or {}).get("requests") or {}) if isinstance(container, dict) else {}
        cpu = _amount(requests, "cpu", milli=True)
        memory = _amount(requests, "memory", milli=False)
        return (cpu or 0, memory or 0, DEFAULT_MILLI_CPU if cpu is None else cpu,
                DEFAULT_MEMORY if memory is None else memory)

    def add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, int, int, int]:
        return a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]

    total = (0, 0, 0, 0)
    for container in spec.get("containers") or ():
        total = add(total, of(container))
    sidecars = (0, 0, 0, 0)
    init_peak = (0, 0, 0, 0)
    for container in spec.get("initContainers") or ():
        own = of(container)
        if isinstance(container, dict) and container.get("restartPolicy") == "Always":
            total = add(total, own)
            sidecars = add(sidecars, own)
            running = sidecars
        else:
            running = add(own, sidecars)
        init_peak = (max(init_peak[0], running[0]), max(init_peak[1], running[1]),
                     max(init_peak[2], running[2]), max(init_peak[3], running[3]))
    total = (max(total[0], init_peak[0]), max(total[1], init_peak[1]),
             max(total[2], init_peak[2]), max(total[3], init_peak[3]))
    overhead = spec.get("overhead") or {}
    cpu = _amount(overhead, "cpu", milli=True) or 0
    memory = _amount(overhead, "memory", milli=False) or 0
    return total[0] + cpu, total[1] + memory, total[2] + cpu, total[3] + memory


def _host_ports(spec: Mapping[str, Any]) -> tuple[HostPort, ...]:
    containers = [*(spec.get("containers") or ()),
                  *(c for c in spec.get("initContainers") or () if isinstance(c, dict)
                    and c.get("restartPolicy") == "Always")]
    ports = []
    for container in containers:
        for port in (container.get("ports") or ()) if isinstance(container, dict) else ():
            host_port = int(port.get("hostPort") or 0) if isinstance(port, dict) else 0
            if host_port > 0:
                ports.append(HostPort(str(port.get("hostIP") or "0.0.0.0"), str(port.get("protocol") or "TCP"),
                                      host_port))
    return tuple(ports)


def pod_info(pod: Obj) -> PodInfo:
    spec = pod.get("spec") or {}
    metadata = pod.get("metadata") or {}
    namespace = metadata.get("namespace") or ""
    cpu, memory, nonzero_cpu, nonzero_memory = _requests(spec)
    try:
        affinity, affinity_error = _node_affinity(spec), ""
    except selectors.ParseError as err:
        affinity, affinity_error = None, str(err)
    volumes = spec.get("volumes") or ()
    claims = tuple(f"{namespace}/{v['persistentVolumeClaim'].get('claimName')}" for v in volumes
                   if isinstance(v, dict) and isinstance(v.get("persistentVolumeClaim"), dict))
    owner = meta.controller_of(pod)
    return PodInfo(
        pod=pod, key=f"{namespace}/{metadata.get('name') or ''}", uid=metadata.get("uid") or "",
        namespace=namespace, node_name=spec.get("nodeName") or "",
        scheduler_name=spec.get("schedulerName") or "default-scheduler", priority=int(spec.get("priority") or 0),
        labels=metadata.get("labels") or {}, cpu=cpu, memory=memory, nonzero_cpu=nonzero_cpu,
        nonzero_memory=nonzero_memory, host_ports=_host_ports(spec), tolerations=_tolerations(spec),
        affinity=affinity, affinity_error=affinity_error, disks=_disks(volumes), claims=claims,
        owner_uid=(owner or {}).get("uid") or "", terminating=bool(metadata.get("deletionTimestamp")),
    )


def is_terminal(pod: Obj) -> bool:
    """A pod that has finished (Succeeded or Failed) holds nothing on its node any more."""
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


# ---- nodes -------------------------------------------------------------------------------------


def _condition_taint(status: Mapping[str, Any]) -> Taint | None:
    ready = meta.get_condition(status, "Ready")
    if ready is not None and ready.get("status") == "True":
        return None
    key = UNREACHABLE if ready is not None and ready.get("status") == "Unknown" else NOT_READY
    return Taint(key, "", "NoSchedule")


def _zone(labels: Mapping[str, str]) -> str:
    region = next((labels[k] for k in _ZONE_LABELS[0] if k in labels), "")
    zone = next((labels[k] for k in _ZONE_LABELS[1] if k in labels), "")
    return f"{region}:\x00:{zone}" if region or zone else ""


class NodeInfo:
    """A node and the aggregates of its pods (assumed ones included)."""

    __slots__ = ("name", "node", "labels", "allocatable_cpu", "allocatable_memory", "allocatable_pods",
                 "unschedulable", "condition_taint", "hard_taints", "prefer_taints", "zone", "pods",
                 "requested_cpu", "requested_memory", "nonzero_cpu", "nonzero_memory", "used_ports", "groups",
                 "disk_pods", "memo")

    def __init__(self, name: str) -> None:
        self.name = name
        self.node: Obj | None = None  # None: pods are known on a node the cache has not seen (or lost)
        self.labels: Mapping[str, str] = {}
        self.allocatable_cpu = self.allocatable_memory = self.allocatable_pods = 0
        self.unschedulable = False
        self.condition_taint: Taint | None = None
        self.hard_taints: tuple[Taint, ...] = ()  # NoSchedule and NoExecute
        self.prefer_taints: tuple[Taint, ...] = ()  # PreferNoSchedule
        self.zone = ""
        self.pods: dict[str, PodInfo] = {}
        self.requested_cpu = self.requested_memory = self.nonzero_cpu = self.nonzero_memory = 0
        self.used_ports: collections.Counter[HostPort] = collections.Counter()
        self.groups: collections.Counter[str] = collections.Counter()
        self.disk_pods: dict[str, PodInfo] = {}
        self.memo: dict[Any, Any] = {}  # what plugins computed from this node as it is now; emptied on change

    def __repr__(self) -> str:
        return f"<NodeInfo {self.name} pods={len(self.pods)} cpu={self.requested_cpu}m/{self.allocatable_cpu}m>"

    def set_node(self, node: Obj | None) -> None:
        self.node = node
        self.memo = {}
        if node is None:
            return
        spec, status = node.get("spec") or {}, node.get("status") or {}
        allocatable = status.get("allocatable") or {}
        self.labels = (node.get("metadata") or {}).get("labels") or {}
        self.allocatable_cpu = _amount(allocatable, "cpu", milli=True) or 0
        self.allocatable_memory = _amount(allocatable, "memory", milli=False) or 0
        self.allocatable_pods = _amount(allocatable, "pods", milli=False) or 0
        self.unschedulable = bool(spec.get("unschedulable"))
        self.condition_taint = _condition_taint(status)
        taints = _taints(spec)
        self.hard_taints = tuple(t for t in taints if t.effect in ("NoSchedule", "NoExecute"))
        self.prefer_taints = tuple(t for t in taints if t.effect == "PreferNoSchedule")
        self.zone = _zone(self.labels)

    def add(self, pod: PodInfo) -> None:
        if pod.key in self.pods:
            self.remove(pod.key)
        self.memo = {}
        self.pods[pod.key] = pod
        self.requested_cpu += pod.cpu
        self.requested_memory += pod.memory
        self.nonzero_cpu += pod.nonzero_cpu
        self.nonzero_memory += pod.nonzero_memory
        if pod.host_ports:
            self.used_ports.update(pod.host_ports)
        if pod.groups:
            self.groups.update(pod.groups)
        if pod.disks:
            self.disk_pods[pod.key] = pod

    def remove(self, key: str) -> PodInfo | None:
        pod = self.pods.pop(key, None)
        if pod is None:
            return None
        self.memo = {}
        self.requested_cpu -= pod.cpu
        self.requested_memory -= pod.memory
        self.nonzero_cpu -= pod.nonzero_cpu
        self.nonzero_memory -= pod.nonzero_memory
        if pod.host_ports:
            self.used_ports.subtract(pod.host_ports)
            self.used_ports = +self.used_ports
        if pod.groups:
            self.groups.subtract(pod.groups)
            self.groups = +self.groups
        self.disk_pods.pop(key, None)
        return pod

    def port_conflict(self, port: HostPort) -> bool:
        """Kubernetes' ``HostPortInfo.CheckConflict``: 0.0.0.0 clashes with every address."""
        used = self.used_ports
        if not used:
            return False
        if port.ip == "0.0.0.0":
            return any(p.protocol == port.protocol and p.port == port.port for p in used)
        return (HostPort(port.ip, port.protocol, port.port) in used
                or HostPort("0.0.0.0", port.protocol, port.port) in used)
