"""NodeResourcesFit (filter, and the LeastAllocated score) and NodeResourcesBalancedAllocation.

Fit: the node must have room for one more pod (``allocatable.pods``), and for the pod's
cpu and memory requests next to what its pods request already; a pod requesting none of
a resource fits whatever the node's use of it (Kubernetes' ``fitsRequest``). Every
shortage is a reason of its own: "Too many pods", "Insufficient cpu", "Insufficient memory".

LeastAllocated: for cpu and memory (weight 1 each), ``(allocatable − requested) × 100 /
allocatable`` with the pod added, requests counted with kube-scheduler's non-zero defaults;
the weighted mean, in integers as kube-scheduler computes it.

BalancedAllocation: ``(1 − |cpu fraction − memory fraction| / 2) × 100`` with the pod
added (fractions capped at 1, plain requests), so nodes whose cpu and memory fill evenly
win; skipped for a pod that requests nothing.

The fit and both scores depend only on the node's sums and the pod's size, so they are
kept in the node's memo: a stream of pods of one size recomputes them only for the nodes
that changed since the last cycle.
"""

from __future__ import annotations

from collections.abc import Sequence

from podling.scheduler.framework import (MAX_NODE_SCORE, NODE_ADD, NODE_UPDATE, POD_DELETE, SKIP, CycleState,
                                         Handle, Status, memoized, unschedulable)
from podling.scheduler.info import NodeInfo, PodInfo


def fits(pod: PodInfo, node: NodeInfo) -> Status | None:
    reasons = []
    if len(node.pods) + 1 > node.allocatable_pods:
        reasons.append("Too many pods")
    if pod.cpu and pod.cpu > node.allocatable_cpu - node.requested_cpu:
        reasons.append("Insufficient cpu")
    if pod.memory and pod.memory > node.allocatable_memory - node.requested_memory:
        reasons.append("Insufficient memory")
    return unschedulable(*reasons) if reasons else None


def least_allocated(requested_cpu: int, allocatable_cpu: int, requested_memory: int, allocatable_memory: int) -> int:
    score = weights = 0
    if allocatable_cpu:
        if requested_cpu <= allocatable_cpu:
            score += (allocatable_cpu - requested_cpu) * MAX_NODE_SCORE // allocatable_cpu
        weights += 1
    if allocatable_memory:
        if requested_memory <= allocatable_memory:
            score += (allocatable_memory - requested_memory) * MAX_NODE_SCORE // allocatable_memory
        weights += 1
    return score // weights if weights else 0


def balanced_allocation(requested_cpu: int, allocatable_cpu: int, requested_memory: int,
                        allocatable_memory: int) -> int:
    if not allocatable_cpu or not allocatable_memory:
        return MAX_NODE_SCORE  # fewer than two fractions: no deviation
    cpu = requested_cpu / allocatable_cpu
    memory = requested_memory / allocatable_memory
    deviation = (min(cpu, 1.0) - min(memory, 1.0)) / 2 if cpu > 1.0 or memory > 1.0 else (cpu - memory) / 2
    return int((1 - abs(deviation)) * MAX_NODE_SCORE)


class NodeResourcesFit:
    name = "NodeResourcesFit"
    events = frozenset({NODE_ADD, NODE_UPDATE, POD_DELETE})

    def __init__(self, handle: Handle) -> None:
        pass

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        return None

    def filter(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[Status | None]:
        return memoized(f"NodeResourcesFit/filter:{pod.cpu}:{pod.memory}", nodes, lambda node: fits(pod, node))

    def pre_score(self, state: CycleState, pod: PodInfo) -> Status | None:
        return None

    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        cpu, memory = pod.nonzero_cpu, pod.nonzero_memory
        return memoized(f"NodeResourcesFit/score:{cpu}:{memory}", nodes, lambda node: least_allocated(
            node.nonzero_cpu + cpu, node.allocatable_cpu, node.nonzero_memory + memory, node.allocatable_memory))


class NodeResourcesBalancedAllocation:
    name = "NodeResourcesBalancedAllocation"

    def __init__(self, handle: Handle) -> None:
        pass

    def pre_score(self, state: CycleState, pod: PodInfo) -> Status | None:
        return SKIP if not pod.cpu and not pod.memory else None

    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        cpu, memory = pod.cpu, pod.memory
        return memoized(f"{self.name}:{cpu}:{memory}", nodes, lambda node: balanced_allocation(
            node.requested_cpu + cpu, node.allocatable_cpu, node.requested_memory + memory, node.allocatable_memory))
