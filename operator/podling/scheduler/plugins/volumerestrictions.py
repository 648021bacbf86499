"""VolumeRestrictions: disks that only one read-write user may mount, and ReadWriteOncePod claims.

Disk conflicts (the seed's NoDiskConflict): two pods on one node may not use the same GCE
persistent disk, iSCSI target or RBD image unless both mount it read-only, nor the same AWS
EBS volume at all. A claim with access mode ReadWriteOncePod already used by a pod anywhere
in the cluster rejects every node. A claim that does not exist turns the pod away before
any node is tried, with the API's not-found message.
"""

from __future__ import annotations

from collections.abc import Sequence

from podling.scheduler.framework import (CLAIM_CHANGE, NODE_ADD, POD_DELETE, SKIP, CycleState, Handle, Status,
                                         unresolvable, unschedulable)
from podling.scheduler.info import NodeInfo, PodInfo

ERR_DISK_CONFLICT = "node(s) had no available disk"
ERR_READ_WRITE_ONCE_POD = "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"
_CONFLICT = "VolumeRestrictions/rwop-conflict"


class VolumeRestrictions:
    name = "VolumeRestrictions"
    events = frozenset({NODE_ADD, POD_DELETE, CLAIM_CHANGE})

    def __init__(self, handle: Handle) -> None:
        self.cache = handle.cache
        self.claim = handle.claim

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        conflict = False
        for key in pod.claims:
            claim = self.claim(key)
            if claim is None:
                return unresolvable(f'persistentvolumeclaim "{key.partition("/")[2]}" not found')
            modes = (claim.get("spec") or {}).get("accessModes") or ()
            if "ReadWriteOncePod" in modes and self.cache.claims_in_use.get(key):
                conflict = True
        if not pod.disks and not conflict:
            return SKIP
        state[_CONFLICT] = conflict
        return None

    def filter(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[Status | None]:
        claim_conflict = unschedulable(ERR_READ_WRITE_ONCE_POD) if state[_CONFLICT] else None
        return [fits(pod, node) or claim_conflict for node in nodes]


def fits(pod: PodInfo, node: NodeInfo) -> Status | None:
    """The disk conflicts of ``pod`` with the pods on ``node``."""
    for other in node.disk_pods.values():
        if other.key != pod.key and any(mine.conflicts(theirs) for mine in pod.disks for theirs in other.disks):
            return unschedulable(ERR_DISK_CONFLICT)
    return None
