"""NodeName: a pod that names its node fits only there.

Pods that name a node are bound already and never reach the queue; the plugin exists, as in
Kubernetes, so a profile's filters mean the same wherever they are evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence

from podling.scheduler.framework import NODE_ADD, SKIP, CycleState, Handle, Status, unresolvable
from podling.scheduler.info import NodeInfo, PodInfo

ERR_REASON = "node(s) didn't match the requested node name"


class NodeName:
    name = "NodeName"
    events = frozenset({NODE_ADD})

    def __init__(self, handle: Handle) -> None:
        pass

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        return SKIP if not pod.node_name else None

    def filter(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[Status | None]:
        return [None if node.name == pod.node_name else unresolvable(ERR_REASON) for node in nodes]
