"""NodePorts: a pod's hostPorts must be free on the node, per protocol and host IP.

``0.0.0.0`` (a hostPort without hostIP) clashes with the same protocol and port on any
address; a specific address clashes with itself and with ``0.0.0.0``.
"""

from __future__ import annotations

from collections.abc import Sequence

from podling.scheduler.framework import NODE_ADD, POD_DELETE, SKIP, CycleState, Handle, Status, unschedulable
from podling.scheduler.info import NodeInfo, PodInfo

ERR_REASON = "node(s) didn't have free ports for the requested pod ports"


class NodePorts:
    name = "NodePorts"
    events = frozenset({NODE_ADD, POD_DELETE})

    def __init__(self, handle: Handle) -> None:
        pass

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        return None if pod.host_ports else SKIP

    def filter(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[Status | None]:
        return [fits(pod, node) if node.used_ports else None for node in nodes]


def fits(pod: PodInfo, node: NodeInfo) -> Status | None:
    if any(node.port_conflict(port) for port in pod.host_ports):
        return unschedulable(ERR_REASON)
    return None
