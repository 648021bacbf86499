"""NodeAffinity: ``nodeSelector`` and required node affinity filter; preferred terms score.

A node fits when it has every ``nodeSelector`` label and matches at least one of the
required ``nodeSelectorTerms`` (a term's expressions and fields all hold; operators In,
NotIn, Exists, DoesNotExist, Gt, Lt; the field ``metadata.name`` with In or NotIn).
The score is the sum of the weights of the preferred terms a node matches, normalised.
An affinity that cannot be parsed turns the pod away before any node is tried.
"""

from __future__ import annotations

from collections.abc import Sequence

from podling.scheduler.framework import (NODE_ADD, NODE_UPDATE, SKIP, CycleState, Handle, Status,
                                         default_normalize, unresolvable)
from podling.scheduler.info import NodeInfo, PodInfo

ERR_REASON = "node(s) didn't match Pod's node affinity/selector"


class NodeAffinity:
    name = "NodeAffinity"
    events = frozenset({NODE_ADD, NODE_UPDATE})

    def __init__(self, handle: Handle) -> None:
        pass

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        if pod.affinity_error:
            return unresolvable(pod.affinity_error)
        affinity = pod.affinity
        if affinity is None or (affinity.selector is None and affinity.required is None):
            return SKIP
        return None

    def filter(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[Status | None]:
        affinity = pod.affinity
        assert affinity is not None
        return [None if affinity.required_matches(node) else unresolvable(ERR_REASON) for node in nodes]

    def pre_score(self, state: CycleState, pod: PodInfo) -> Status | None:
        return None if pod.affinity is not None and pod.affinity.preferred else SKIP

    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        assert pod.affinity is not None
        preferred = pod.affinity.preferred
        return default_normalize([sum(weight for weight, term in preferred if term.matches(node)) for node in nodes])
