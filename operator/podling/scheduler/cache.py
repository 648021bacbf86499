"""The scheduler's cache: every node with the aggregates of its pods, including assumed pods.

Invariants:

* Every pod that holds resources on a node is counted on exactly one NodeInfo: a pod bound
  (``spec.nodeName`` set) and not finished, or a pod *assumed* on a node by this scheduler
  the moment it chose that node, before the binding is even sent. An assumed pod counts
  at once, so the next scheduling cycle sees the node's resources taken although the
  watch has not echoed the binding yet; that is what makes many bindings in flight safe.
* An assumed pod stops being assumed when the informer shows it bound (``add_pod``: it
  then counts as the bound pod, on the node the API says), when its binding fails
  (``forget``), or when it is deleted (``remove_pod``).
* ``nodes`` is the list scheduling walks, in a stable order (the order nodes were added);
  a NodeInfo for a node the informer has not shown (pods bound to an unknown node) or no
  longer shows is kept for its pods but is not in the list.
* Cluster-wide counters (nodes that can turn a pod away as unschedulable or not ready,
  nodes with NoSchedule/NoExecute or PreferNoSchedule taints, nodes in zones, claims in
  use) let plugins skip work for a cycle when no node could make a difference.
* Spreading groups of a pod are its controller's uid and every Service in its namespace
  whose selector matches it; when a Service changes, the groups of the bound pods of its
  namespace are computed again.
"""

from __future__ import annotations

import collections
from typing import Any

from podling.api import meta, selectors
from podling.scheduler.info import NodeInfo, PodInfo, is_terminal, pod_info

Obj = dict[str, Any]


class Cache:
    def __init__(self) -> None:
        self._infos: dict[str, NodeInfo] = {}  # node name -> info, including nodes not (or no longer) seen
        self.nodes: list[NodeInfo] = []  # the nodes the informer shows, in a stable order
        self._pod_nodes: dict[str, str] = {}  # pod key -> node name, for every counted pod
        self._assumed: dict[str, str] = {}  # pod key -> uid, of pods counted before the API shows them bound
        self._by_namespace: dict[str, set[str]] = collections.defaultdict(set)  # counted pod keys
        self._services: dict[str, dict[str, selectors.LabelSelector]] = collections.defaultdict(dict)
        self.claims_in_use: collections.Counter[str] = collections.Counter()  # ns/claim -> counted pods using it
        self.unschedulable_nodes = 0  # spec.unschedulable or not Ready
        self.hard_tainted_nodes = 0
        self.prefer_tainted_nodes = 0
        self.zoned_nodes = 0  # nodes with a zone or region label

    # ---- nodes ---------------------------------------------------------------------------

    def node(self, name: str) -> NodeInfo | None:
        """The NodeInfo of a node the informer shows, or None."""
        info = self._infos.get(name)
        return info if info is not None and info.node is not None else None

    def set_node(self, node: Obj) -> None:
        name = meta.name(node)
        info = self._infos.get(name)
        if info is None:
            info = self._infos[name] = NodeInfo(name)
        if info.node is None:
            self.nodes.append(info)
        else:
            self._count_node(info, -1)
        info.set_node(node)
        self._count_node(info, +1)

    def remove_node(self, name: str) -> None:
        info = self._infos.get(name)
        if info is None or info.node is None:
            return
        self._count_node(info, -1)
        self.nodes.remove(info)
        info.set_node(None)
        if not info.pods:
            del self._infos[name]

    def _count_node(self, info: NodeInfo, sign: int) -> None:
        self.unschedulable_nodes += sign * (info.unschedulable or info.condition_taint is not None)
        self.hard_tainted_nodes += sign * bool(info.hard_taints)
        self.prefer_tainted_nodes += sign * bool(info.prefer_taints)
        self.zoned_nodes += sign * bool(info.zone)

    # ---- pods ----------------------------------------------------------------------------

    def add_pod(self, pod: Obj) -> None:
        """A bound pod as the API shows it (a new one, a change, or the echo of our binding)."""
        key = meta.object_key(pod)
        if is_terminal(pod):
            self.remove_pod(key)
            return
        info = pod_info(pod)
        self._assumed.pop(key, None)
        self._count(info)

    def assume(self, pod: PodInfo, node_name: str) -> None:
        """Count ``pod`` (this cycle's own PodInfo) on ``node_name`` now, before its binding is sent."""
        pod.node_name = node_name
        self._assumed[pod.key] = pod.uid
        self._count(pod)

    def is_assumed(self, pod: Obj) -> bool:
        """True while this pod (this uid) is counted on a node the API does not show yet."""
        uid = self._assumed.get(meta.object_key(pod))
        return uid is not None and uid == (pod.get("metadata") or {}).get("uid", "")

    def forget(self, pod: PodInfo) -> None:
        """The binding of an assumed pod failed: it no longer counts anywhere."""
        if self._assumed.get(pod.key) == pod.uid:
            del self._assumed[pod.key]
            self.remove_pod(pod.key)

    def remove_pod(self, key: str) -> bool:
        """Stop counting a pod (deleted, or finished); True if it was counted."""
        self._assumed.pop(key, None)
        return self._drop(key)

    def _drop(self, key: str) -> bool:
        node_name = self._pod_nodes.pop(key, None)
        if node_name is None:
            return False
        info = self._infos[node_name]
        removed = info.remove(key)
        if removed is not None:
            self._count_claims(removed, -1)
            self._by_namespace[removed.namespace].discard(key)
        if info.node is None and not info.pods:
            del self._infos[node_name]
        return True

    def counted(self, key: str) -> bool:
        return key in self._pod_nodes

    def _count(self, pod: PodInfo) -> None:
        self._drop(pod.key)
        pod.groups = self.groups(pod)
        info = self._infos.get(pod.node_name)
        if info is None:
            info = self._infos[pod.node_name] = NodeInfo(pod.node_name)
        info.add(pod)
        self._pod_nodes[pod.key] = pod.node_name
        self._by_namespace[pod.namespace].add(pod.key)
        self._count_claims(pod, +1)

    def _count_claims(self, pod: PodInfo, sign: int) -> None:
        for claim in pod.claims:
            self.claims_in_use[claim] += sign
            if self.claims_in_use[claim] <= 0:
                del self.claims_in_use[claim]

    # ---- spreading groups ----------------------------------------------------------------

    def set_service(self, service: Obj) -> None:
        namespace, key = meta.namespace(service), meta.object_key(service)
        selector = (service.get("spec") or {}).get("selector") or {}
        try:
            parsed = selectors.from_map({str(k): str(v) for k, v in selector.items()}) if selector else None
        except selectors.ParseError:
            parsed = None
        services = self._services[namespace]
        if parsed is None:
            if services.pop(key, None) is None:
                return
        else:
            if services.get(key) == parsed:
                return
            services[key] = parsed
        self._regroup(namespace)

    def remove_service(self, service: Obj) -> None:
        if self._services[meta.namespace(service)].pop(meta.object_key(service), None) is not None:
            self._regroup(meta.namespace(service))

    def groups(self, pod: PodInfo) -> frozenset[str]:
        """The spreading groups of a pod: its controller, and the Services that select it."""
        if pod.terminating:
            return frozenset()
        services = self._services.get(pod.namespace)
        found = [f"service:{key}" for key, selector in services.items() if selector.matches(pod.labels)] \
            if services else []
        if pod.owner_uid:
            found.append(f"owner:{pod.owner_uid}")
        return frozenset(found)

    def _regroup(self, namespace: str) -> None:
        for key in list(self._by_namespace.get(namespace, ())):
            info = self._infos[self._pod_nodes[key]]
            pod = info.pods[key]
            groups = self.groups(pod)
            if groups != pod.groups:
                info.remove(key)
                pod.groups = groups
                info.add(pod)
