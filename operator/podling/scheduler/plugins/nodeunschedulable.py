"""NodeUnschedulable: no pods on a cordoned node (``spec.unschedulable``) or a node that is not Ready.

A pod that tolerates ``node.kubernetes.io/unschedulable:NoSchedule`` may go to a cordoned
node, as in Kubernetes. A node whose Ready condition is not True carries the implied
``not-ready``/``unreachable`` NoSchedule taint (see ``info``); the rejection reads as
Kubernetes' TaintToleration message for that taint, which is what a user of a real
cluster sees for such a node.
"""

from __future__ import annotations

from collections.abc import Sequence

from podling.scheduler.framework import NODE_ADD, NODE_UPDATE, SKIP, CycleState, Handle, Status, unresolvable
from podling.scheduler.info import UNSCHEDULABLE, NodeInfo, PodInfo, Taint, tolerated

ERR_UNSCHEDULABLE = "node(s) were unschedulable"
_CORDON = Taint(UNSCHEDULABLE, "", "NoSchedule")


def untolerated_taint_reason(taint: Taint) -> str:
    return f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}"


class NodeUnschedulable:
    name = "NodeUnschedulable"
    events = frozenset({NODE_ADD, NODE_UPDATE})

    def __init__(self, handle: Handle) -> None:
        self.cache = handle.cache

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        return SKIP if not self.cache.unschedulable_nodes else None

    def filter(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[Status | None]:
        return [fits(pod, node) for node in nodes]


def fits(pod: PodInfo, node: NodeInfo) -> Status | None:
    if node.unschedulable and not tolerated(pod.tolerations, _CORDON):
        return unresolvable(ERR_UNSCHEDULABLE)
    taint = node.condition_taint
    if taint is not None and not tolerated(pod.tolerations, taint):
        return unresolvable(untolerated_taint_reason(taint))
    return None
