"""Node lifecycle: node health from kubelet heartbeats, taints from conditions, NoExecute evictions;
and node IPAM (a podCIDR for every node).

:class:`NodeLifecycleController` invariants:

* A node is healthy while its kubelet's heartbeat is fresh. The controller notes, on its own
  monotonic clock, when it last saw the node's Lease ``renewTime`` or its Ready condition's
  ``lastHeartbeatTime`` change, so clock skew between machines cannot matter (Kubernetes'
  "probe timestamp"); a controller that starts gives every node a fresh clock. A node
  silent for longer than ``node_monitor_grace_period`` (``node_startup_grace_period`` if it
  never posted a Ready condition) gets its kubelet's conditions set to Unknown, "Kubelet
  stopped posting node status.", keeping their lastHeartbeatTime; the kubelet's next post
  puts them back.
* Taints follow conditions (:func:`desired_taints`, pure): Ready False gives
  ``node.kubernetes.io/not-ready`` and Ready Unknown ``node.kubernetes.io/unreachable``, each
  NoExecute and NoSchedule; pressure conditions and ``spec.unschedulable`` give their NoSchedule
  taints. Taints with other keys are kept untouched; ours go as soon as their condition does; a
  NoExecute taint keeps its ``timeAdded`` while it stays.
* NoExecute eviction (the taint manager): a pod on a node with NoExecute taints leaves at once
  if it does not tolerate one of them, else at ``timeAdded + tolerationSeconds``
  (:func:`eviction_time`, pure; timeAdded is on the node, so a restarted controller keeps
  the schedule). Leaving is a delete with a TaintManagerEviction event; on an unreachable
  node it is a force delete (grace 0), since no kubelet will confirm a graceful end and the
  owner should replace the pod at once; pods already terminating there are force-deleted
  once their grace period is over. Pods on an unreachable node are also marked not Ready, so
  Services stop sending them traffic.
* Pods without a not-ready/unreachable NoExecute toleration count as having Kubernetes'
  DefaultTolerationSeconds ones, for ``default_toleration_seconds`` (the API server's
  defaulting normally writes them into every pod on create, with 300 s).
* Every node is reconciled every ``node_monitor_period`` and on each change of it, its
  Lease, or a pod on it while it is tainted; a reconcile writes only what differs.

:class:`NodeIpamController` invariants: every node gets a ``spec.podCIDR``/``podCIDRs`` of
``node_cidr_mask_size`` bits from ``cluster_cidr``; no CIDR is ever held by two nodes (the
allocator is rebuilt from the nodes' CIDRs before anything is handed out, and a CIDR is
picked and reserved without an await in between); a deleted node's CIDR is released.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import ipaddress
import logging
import time
from collections.abc import Iterable, Sequence

from podling.api import meta
from podling.api.resources import find
from podling.client.http import is_not_found
from podling.client.informer import Obj
from podling.client.workqueue import run_workers
from podling.controllers.base import Context

log = logging.getLogger("podling.controllers.nodelifecycle")

_NODES = find(group="", version="v1", plural="nodes")
_PODS = find(group="", version="v1", plural="pods")
_LEASES = find(group="coordination.k8s.io", version="v1", plural="leases")
assert _NODES is not None and _PODS is not None and _LEASES is not None

NODE_LEASE_NAMESPACE = "kube-node-lease"
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
_PRESSURE_TAINTS = {  # condition True -> NoSchedule taint (TaintNodesByCondition)
    "MemoryPressure": "node.kubernetes.io/memory-pressure",
    "DiskPressure": "node.kubernetes.io/disk-pressure",
    "PIDPressure": "node.kubernetes.io/pid-pressure",
    "NetworkUnavailable": "node.kubernetes.io/network-unavailable",
}
MANAGED_TAINT_KEYS = frozenset({NOT_READY, UNREACHABLE, UNSCHEDULABLE, *_PRESSURE_TAINTS.values()})
_KUBELET_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
_BY_NODE = "nodelifecycle:node"  # informer index names are shared per informer: ours are prefixed


# ---- the pure part: health, taints, tolerations -------------------------------------------


def stale_reason(*, ready: Obj | None, silent_for: float, grace: float, startup_grace: float) -> tuple[str, str] | None:
    """(reason, message) when the node's conditions must turn Unknown: its kubelet is silent."""
    if ready is None:
        if silent_for > startup_grace:
            return "NodeStatusNeverUpdated", "Kubelet never posted node status."
        return None
    if silent_for > grace:
        return "NodeStatusUnknown", "Kubelet stopped posting node status."
    return None


def ready_status(node: Obj) -> str:
    """The Ready condition's status, "" while the node has none."""
    condition = meta.get_condition(node.get("status"), "Ready")
    return (condition or {}).get("status") or ""


def desired_taints(node: Obj, *, now: str) -> list[Obj]:
    """The node's taints with the ones this controller owns made to match its conditions.

    Taints with other keys keep their place; ours that still apply are kept as they are (with
    their timeAdded); new ones are appended, NoExecute ones stamped ``now``.
    """
    spec, status = node.get("spec") or {}, node.get("status") or {}
    wanted: list[tuple[str, str]] = []
    ready = ready_status(node)
    if ready in ("False", "Unknown"):
        key = NOT_READY if ready == "False" else UNREACHABLE
        wanted += [(key, "NoSchedule"), (key, "NoExecute")]
    for condition_type, key in _PRESSURE_TAINTS.items():
        if (meta.get_condition(status, condition_type) or {}).get("status") == "True":
            wanted.append((key, "NoSchedule"))
    if spec.get("unschedulable"):
        wanted.append((UNSCHEDULABLE, "NoSchedule"))
    taints = [taint for taint in spec.get("taints") or ()
              if taint.get("key") not in MANAGED_TAINT_KEYS or (taint.get("key"), taint.get("effect")) in wanted]
    present = {(taint.get("key"), taint.get("effect")) for taint in taints}
    for key, effect in wanted:
        if (key, effect) not in present:
            taints.append({"key": key, "effect": effect, **({"timeAdded": now} if effect == "NoExecute" else {})})
    return taints


def tolerates(toleration: Obj, taint: Obj) -> bool:
    """Kubernetes' ``Toleration.ToleratesTaint``: an empty key with Exists tolerates every key,
    an empty effect every effect."""
    if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
        return False
    if toleration.get("key") and toleration.get("key") != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def with_default_tolerations(tolerations: Sequence[Obj], *, seconds: int) -> list[Obj]:
    """``tolerations`` plus DefaultTolerationSeconds' not-ready and unreachable NoExecute ones,
    each added only when no toleration already covers that key for NoExecute."""
    result = list(tolerations)
    for key in (NOT_READY, UNREACHABLE):
        covered = any((t.get("key") or "") in (key, "") and (t.get("effect") or "") in ("NoExecute", "")
                      for t in tolerations)
        if not covered:
            result.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds})
    return result


def eviction_time(*, tolerations: Sequence[Obj], taints: Iterable[Obj], now: float) -> float | None:
    """When a pod must leave a node with these taints (a Unix time): ``now`` when it does not
    tolerate one of its NoExecute taints; else, per taint, its ``timeAdded`` (``now`` if it
    has none) plus the shortest ``tolerationSeconds`` among the tolerations matching it, the
    earliest of those; None when every NoExecute taint is tolerated forever."""
    due: float | None = None
    for taint in taints:
        if taint.get("effect") != "NoExecute":
            continue
        matching = [t for t in tolerations if tolerates(t, taint)]
        if not matching:
            return now
        limits = [max(int(t["tolerationSeconds"]), 0) for t in matching if t.get("tolerationSeconds") is not None]
        if not limits:
            continue
        try:
            added = meta.parse_time(taint["timeAdded"]).timestamp() if taint.get("timeAdded") else now
        except ValueError:
            added = now
        when = added + min(limits)
        due = when if due is None else min(due, when)
    return due


# ---- the node lifecycle controller --------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Heartbeat:
    stamp: tuple[str, str]  # (Ready lastHeartbeatTime, Lease renewTime) as last seen
    seen_at: float  # time.monotonic() when the stamp last changed


class NodeLifecycleController:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.options = context.options
        self.queue = context.metrics.queue("nodelifecycle")
        self.nodes = context.informers.informer(_NODES)
        self.leases = context.informers.informer(_LEASES)
        self.pods = context.informers.informer(_PODS)
        self.pods.add_index(_BY_NODE, lambda pod: [node] if (node := (pod.get("spec") or {}).get("nodeName")) else [])
        self._heartbeats: dict[str, _Heartbeat] = {}
        self._ready_seen: dict[str, str] = {}  # node -> Ready status last reconciled, for NodeReady/NodeNotReady events
        self.nodes.add_handlers(on_add=self._node_changed, on_update=lambda old, new: self._node_changed(new),
                                on_delete=self._node_changed)
        self.leases.add_handlers(on_add=self._lease_changed, on_update=lambda old, new: self._lease_changed(new))
        self.pods.add_handlers(on_add=self._pod_changed, on_update=lambda old, new: self._pod_changed(new))

    async def run(self, *, workers: int) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._monitor(), name="nodelifecycle monitor")
                group.create_task(run_workers(self.queue, self.context.reconciler("nodelifecycle", self.reconcile),
                                              workers=workers))
        finally:
            self.queue.shutdown()

    async def _monitor(self) -> None:
        """Every node_monitor_period, every node is looked at again (a silent node sends no event)."""
        while True:
            for name in self.nodes.keys():
                self.queue.add(name)
            await asyncio.sleep(self.options.node_monitor_period)

    # ---- events -> heartbeats and keys ---------------------------------------------------

    def _observe(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            self._heartbeats.pop(name, None)
            return
        ready = meta.get_condition(node.get("status"), "Ready") or {}
        lease = self.leases.get(f"{NODE_LEASE_NAMESPACE}/{name}") or {}
        stamp = (ready.get("lastHeartbeatTime") or "", (lease.get("spec") or {}).get("renewTime") or "")
        heartbeat = self._heartbeats.get(name)
        if heartbeat is None or heartbeat.stamp != stamp:
            self._heartbeats[name] = _Heartbeat(stamp=stamp, seen_at=time.monotonic())

    def _node_changed(self, node: Obj) -> None:
        self._observe(meta.name(node))
        self.queue.add(meta.name(node))

    def _lease_changed(self, lease: Obj) -> None:
        if meta.namespace(lease) == NODE_LEASE_NAMESPACE:
            self._observe(meta.name(lease))

    def _pod_changed(self, pod: Obj) -> None:
        node = self.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        if node is not None and (ready_status(node) != "True" or any(
                taint.get("effect") == "NoExecute" for taint in (node.get("spec") or {}).get("taints") or ())):
            self.queue.add(meta.name(node))

    # ---- reconcile -----------------------------------------------------------------------

    async def reconcile(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            self._ready_seen.pop(name, None)
            return
        if name not in self._heartbeats:
            self._observe(name)
        node = await self._update_health(node)
        node = await self._update_taints(node)
        ready = ready_status(node)
        previous = self._ready_seen.get(name)
        self._ready_seen[name] = ready
        if previous is not None and (previous == "True") != (ready == "True"):
            state = "NodeReady" if ready == "True" else "NodeNotReady"
            await self.context.recorder.event(node, reason=state, message=f"Node {name} status is now: {state}")
        pods = self.pods.by_index(_BY_NODE, name)
        if ready == "Unknown":
            await self._mark_pods_not_ready(pods)
        await self._evict(node, pods)

    async def _update_health(self, node: Obj) -> Obj:
        """The kubelet's conditions set to Unknown when it is silent for too long."""
        name = meta.name(node)
        ready = meta.get_condition(node.get("status"), "Ready")
        reason = stale_reason(ready=ready, silent_for=time.monotonic() - self._heartbeats[name].seen_at,
                              grace=self.options.node_monitor_grace_period,
                              startup_grace=self.options.node_startup_grace_period)
        if reason is None or (ready is not None and ready.get("status") == "Unknown"):
            return node
        updated = copy.deepcopy(node)
        status = updated.setdefault("status", {})
        for condition_type in _KUBELET_CONDITIONS:
            existing = meta.get_condition(status, condition_type)
            if existing is None:
                meta.set_condition(status, type=condition_type, status="Unknown", reason="NodeStatusNeverUpdated",
                                   message="Kubelet never posted node status.")
                created = meta.get_condition(status, condition_type)
                assert created is not None
                created["lastHeartbeatTime"] = ((node.get("metadata") or {}).get("creationTimestamp")
                                                or meta.now_rfc3339())
            else:
                meta.set_condition(status, type=condition_type, status="Unknown", reason=reason[0], message=reason[1])
        log.info("node %s: %s", name, reason[1])
        return await self.context.api.update_status(_NODES, updated)

    async def _update_taints(self, node: Obj) -> Obj:
        taints = desired_taints(node, now=meta.now_rfc3339())
        if taints == ((node.get("spec") or {}).get("taints") or []):
            return node
        updated = copy.deepcopy(node)
        spec = updated.setdefault("spec", {})
        if taints:
            spec["taints"] = taints
        else:
            spec.pop("taints", None)
        log.info("node %s: taints now %s", meta.name(node),
                 ", ".join(f"{t['key']}:{t['effect']}" for t in taints) or "none")
        return await self.context.api.update(_NODES, updated)

    async def _mark_pods_not_ready(self, pods: Iterable[Obj]) -> None:
        """An unreachable node's pods are not Ready: nobody can tell otherwise."""
        for pod in pods:
            condition = meta.get_condition(pod.get("status"), "Ready")
            if condition is None or condition.get("status") != "True":
                continue
            updated = copy.deepcopy(pod)
            meta.set_condition(updated.setdefault("status", {}), type="Ready", status="False", reason="NodeNotReady",
                               message="the pod's node is not ready")
            try:
                await self.context.api.update_status(_PODS, updated)
            except Exception as err:
                if not is_not_found(err):
                    raise
                continue
            await self.context.recorder.event(pod, type="Warning", reason="NodeNotReady", message="Node is not ready")

    async def _evict(self, node: Obj, pods: Iterable[Obj]) -> None:
        """Delete the pods whose time on this node is up; come back when the next one's is."""
        taints = [t for t in (node.get("spec") or {}).get("taints") or () if t.get("effect") == "NoExecute"]
        unreachable = ready_status(node) == "Unknown"
        now = time.time()
        next_due: float | None = None
        for pod in pods:
            deleting = (pod.get("metadata") or {}).get("deletionTimestamp")
            if deleting:
                due: float | None = meta.parse_time(deleting).timestamp() if unreachable else None
            elif taints:
                tolerations = with_default_tolerations((pod.get("spec") or {}).get("tolerations") or (),
                                                       seconds=self.options.default_toleration_seconds)
                due = eviction_time(tolerations=tolerations, taints=taints, now=now)
            else:
                continue
            if due is None:
                continue
            if due > now:
                next_due = due if next_due is None else min(next_due, due)
                continue
            if not deleting:
                await self.context.recorder.event(pod, reason="TaintManagerEviction",
                                                  message=f"Marking for deletion Pod {meta.object_key(pod)}")
            try:
                await self.context.api.delete(_PODS, namespace=meta.namespace(pod), name=meta.name(pod),
                                              grace_period_seconds=0 if unreachable else None,
                                              preconditions={"uid": (pod.get("metadata") or {}).get("uid", "")})
            except Exception as err:
                if not is_not_found(err):
                    raise
            log.info("node %s: %s pod %s", meta.name(node), "force-deleted" if unreachable else "evicted",
                     meta.object_key(pod))
        if next_due is not None:
            self.queue.add_after(meta.name(node), next_due - now + 0.05)


# ---- node IPAM ----------------------------------------------------------------------------


class CidrExhausted(Exception):
    """Every subnet of the cluster CIDR is taken."""


class CidrAllocator:
    """Subnets of ``mask_size`` bits carved from ``cluster_cidr``; each held by one owner at a time.

    Allocation goes round-robin from the last one handed out, so a released subnet is not at
    once given to the next node (what Kubernetes' range allocator does too).
    """

    def __init__(self, *, cluster_cidr: str, mask_size: int) -> None:
        self.network = ipaddress.ip_network(cluster_cidr)
        if not self.network.prefixlen <= mask_size <= self.network.max_prefixlen:
            raise ValueError(f"node CIDR mask size {mask_size} does not fit cluster CIDR {cluster_cidr} "
                             f"(want {self.network.prefixlen} to {self.network.max_prefixlen})")
        self.mask_size = mask_size
        self.size = 1 << (mask_size - self.network.prefixlen)
        self._shift = self.network.max_prefixlen - mask_size
        self._used: set[int] = set()
        self._next = 0

    def _cidr(self, index: int) -> str:
        return f"{self.network.network_address + (index << self._shift)}/{self.mask_size}"

    def _index(self, cidr: str) -> int | None:
        try:
            subnet = ipaddress.ip_network(cidr)
        except ValueError:
            return None
        if (subnet.version != self.network.version or subnet.prefixlen != self.mask_size
                or not subnet.subnet_of(self.network)):  # type: ignore[arg-type]
            return None
        return (int(subnet.network_address) - int(self.network.network_address)) >> self._shift

    def occupy(self, cidr: str) -> bool:
        """Mark ``cidr`` taken; False when it is not one of this allocator's subnets."""
        index = self._index(cidr)
        if index is None:
            return False
        self._used.add(index)
        return True

    def allocate(self) -> str:
        if len(self._used) >= self.size:
            raise CidrExhausted(f"no free /{self.mask_size} left in {self.network}")
        index = self._next
        while index in self._used:
            index = (index + 1) % self.size
        self._used.add(index)
        self._next = (index + 1) % self.size
        return self._cidr(index)

    def release(self, cidr: str) -> None:
        index = self._index(cidr)
        if index is not None:
            self._used.discard(index)

    def __len__(self) -> int:
        return len(self._used)


class NodeIpamController:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.allocator = CidrAllocator(cluster_cidr=context.options.cluster_cidr,
                                       mask_size=context.options.node_cidr_mask_size)
        self.queue = context.metrics.queue("nodeipam")
        self.nodes = context.informers.informer(_NODES)
        self._assigned: dict[str, str] = {}  # node name -> the CIDR this allocator holds for it
        self.nodes.add_handlers(on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new),
                                on_delete=self._enqueue)

    def _enqueue(self, node: Obj) -> None:
        self.queue.add(meta.name(node))

    async def run(self, *, workers: int) -> None:
        for node in self.nodes.list():  # the informers are synced: every CIDR in use is known before any is given
            self._hold(meta.name(node), (node.get("spec") or {}).get("podCIDR") or "")
        log.info("node IPAM: %d of %d /%d subnets of %s in use", len(self.allocator), self.allocator.size,
                 self.allocator.mask_size, self.allocator.network)
        try:
            await run_workers(self.queue, self.context.reconciler("nodeipam", self.reconcile), workers=workers)
        finally:
            self.queue.shutdown()

    def _hold(self, name: str, cidr: str) -> None:
        """Record that node ``name`` has ``cidr`` (a CIDR outside the cluster CIDR is not ours to track)."""
        held = self._assigned.get(name)
        if held == cidr or not cidr:
            return
        if held is not None:
            self.allocator.release(held)
            del self._assigned[name]
        if self.allocator.occupy(cidr):
            self._assigned[name] = cidr
        else:
            log.warning("node %s has podCIDR %s, outside the cluster CIDR %s", name, cidr, self.allocator.network)

    async def reconcile(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            if (cidr := self._assigned.pop(name, None)) is not None:
                self.allocator.release(cidr)
                log.info("node %s is gone: released %s", name, cidr)
            return
        current = (node.get("spec") or {}).get("podCIDR") or ""
        if current:
            self._hold(name, current)
            return
        cidr = self._assigned.get(name)  # picked before, and the write failed or is not in the cache yet
        if cidr is None:
            try:
                cidr = self.allocator.allocate()
            except CidrExhausted as err:
                await self.context.recorder.event(node, type="Warning", reason="CIDRNotAvailable",
                                                  message=f"Node {name} status is now: CIDRNotAvailable ({err})")
                raise
            self._assigned[name] = cidr
        try:
            await self.context.api.patch(_NODES, name=name, body={"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
        except Exception as err:
            if not is_not_found(err):
                raise
            return  # deleted meanwhile: its delete event releases the CIDR
        log.info("node %s: podCIDR %s", name, cidr)

