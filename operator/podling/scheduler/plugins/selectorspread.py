"""SelectorSpread: spread the pods of one controller, or of one Service, across nodes and zones.

A pod's groups are its controller (the owner reference with ``controller: true``) and every
Service in its namespace whose selector matches its labels. A node's count is, over those
groups, the most pods of one group it holds (the pods of a Deployment and of the Service in
front of it are the same pods: counting them twice would be wrong). Scores, as Kubernetes'
SelectorSpread normalises them: ``100 × (max − count) / max`` over the nodes scored; where
nodes carry zone labels, a third of that and two thirds of the same figure per zone.
"""

from __future__ import annotations

from collections.abc import Sequence

from podling.scheduler.framework import MAX_NODE_SCORE, SKIP, CycleState, Handle, Status
from podling.scheduler.info import NodeInfo, PodInfo

ZONE_WEIGHTING = 2.0 / 3.0
_GROUPS = "SelectorSpread/groups"


class SelectorSpread:
    name = "SelectorSpread"

    def __init__(self, handle: Handle) -> None:
        self.cache = handle.cache

    def pre_score(self, state: CycleState, pod: PodInfo) -> Status | None:
        groups = self.cache.groups(pod)
        if not groups:
            return SKIP  # nothing to spread: every node scores the same
        state[_GROUPS] = tuple(groups)
        return None

    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        groups = state[_GROUPS]
        if len(groups) == 1:
            group = groups[0]
            counts = [node.groups.get(group, 0) for node in nodes]
        else:
            counts = [max(node.groups.get(group, 0) for group in groups) for node in nodes]
        highest = max(counts)
        if not highest:
            return [MAX_NODE_SCORE] * len(counts)
        node_scores = [MAX_NODE_SCORE * (highest - count) // highest for count in counts]
        if not self.cache.zoned_nodes:
            return node_scores
        by_zone: dict[str, int] = {}
        for node, count in zip(nodes, counts):
            if node.zone:
                by_zone[node.zone] = by_zone.get(node.zone, 0) + count
        if not by_zone:
            return node_scores
        zone_highest = max(by_zone.values())
        scores = []
        for node, count in zip(nodes, counts):
            score = MAX_NODE_SCORE * (highest - count) / highest
            if node.zone:
                zone_score = (MAX_NODE_SCORE * (zone_highest - by_zone[node.zone]) / zone_highest
                              if zone_highest else float(MAX_NODE_SCORE))
                score = score * (1.0 - ZONE_WEIGHTING) + ZONE_WEIGHTING * zone_score
            scores.append(int(score))
        return scores
