"""TaintToleration: NoSchedule and NoExecute taints keep out pods that do not tolerate them;
PreferNoSchedule taints count against a node in scoring.

Filter: the first untolerated NoSchedule/NoExecute taint, in the node's order, is the
reason. Score: the number of PreferNoSchedule taints the pod does not tolerate (with a
toleration of effect PreferNoSchedule or of no effect), reversed and normalised, so the
node with fewest scores 100.
"""

from __future__ import annotations

from collections.abc import Sequence

from podling.scheduler.framework import (NODE_ADD, NODE_UPDATE, SKIP, CycleState, Handle, Status,
                                         default_normalize, unresolvable)
from podling.scheduler.info import NodeInfo, PodInfo, tolerated
from podling.scheduler.plugins.nodeunschedulable import untolerated_taint_reason

_PREFER = "TaintToleration/prefer"


class TaintToleration:
    name = "TaintToleration"
    events = frozenset({NODE_ADD, NODE_UPDATE})

    def __init__(self, handle: Handle) -> None:
        self.cache = handle.cache

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        return SKIP if not self.cache.hard_tainted_nodes else None

    def filter(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[Status | None]:
        return [fits(pod, node) if node.hard_taints else None for node in nodes]

    def pre_score(self, state: CycleState, pod: PodInfo) -> Status | None:
        if not self.cache.prefer_tainted_nodes:
            return SKIP  # every node scores the same
        state[_PREFER] = tuple(t for t in pod.tolerations if t.effect in ("", "PreferNoSchedule"))
        return None

    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        tolerations = state[_PREFER]
        counts = [sum(1 for taint in node.prefer_taints if not tolerated(tolerations, taint)) for node in nodes]
        return default_normalize(counts, reverse=True)


def fits(pod: PodInfo, node: NodeInfo) -> Status | None:
    for taint in node.hard_taints:
        if not tolerated(pod.tolerations, taint):
            return unresolvable(untolerated_taint_reason(taint))
    return None
