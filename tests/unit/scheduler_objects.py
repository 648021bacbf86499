"""Pods and nodes as the API serves them, for the scheduler's unit tests."""

from __future__ import annotations

import itertools
from typing import Any

from podling.scheduler.cache import Cache
from podling.scheduler.framework import Handle

Obj = dict[str, Any]
_uids = itertools.count(1)


def node(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110", labels: dict[str, str] | None = None,
         taints: list[Obj] | None = None, unschedulable: bool = False, ready: str | None = "True") -> Obj:
    allocatable = {"cpu": cpu, "memory": memory, "pods": pods}
    spec: Obj = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    status: Obj = {"capacity": dict(allocatable), "allocatable": allocatable, "conditions": []}
    if ready is not None:
        status["conditions"].append({"type": "Ready", "status": ready})
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": dict(labels or {})},
            "spec": spec, "status": status}


def container(name: str = "app", *, cpu: str | None = None, memory: str | None = None, **extra: Any) -> Obj:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    return {"name": name, "image": "busybox", "resources": {"requests": requests} if requests else {}, **extra}


def pod(name: str, *, namespace: str = "default", node_name: str = "", cpu: str | None = None,
        memory: str | None = None, containers: list[Obj] | None = None, labels: dict[str, str] | None = None,
        owner: str = "", phase: str = "Pending", uid: str = "", **spec: Any) -> Obj:
    metadata: Obj = {"name": name, "namespace": namespace, "uid": uid or f"uid-{next(_uids)}",
                     "labels": dict(labels or {})}
    if owner:
        metadata["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
                                        "uid": f"owner-{owner}", "controller": True}]
    body: Obj = {"schedulerName": "default-scheduler",
                 "containers": containers if containers is not None else [container(cpu=cpu, memory=memory)],
                 **spec}
    if node_name:
        body["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": body, "status": {"phase": phase}}


def cluster(*nodes: Obj, pods: tuple[Obj, ...] = (), claims: dict[str, Obj] | None = None) -> tuple[Cache, Handle]:
    """A cache holding these nodes and bound pods, and a plugin handle over it."""
    cache = Cache()
    for item in nodes:
        cache.set_node(item)
    for item in pods:
        cache.add_pod(item)
    found = dict(claims or {})
    return cache, Handle(cache=cache, claim=found.get)
