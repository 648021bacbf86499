"""The namespace controller: a deleted namespace is emptied, then finalized.

Invariants:

* Deleting a namespace (the API server gives it a deletionTimestamp and phase Terminating,
  and keeps it while ``spec.finalizers`` holds ``kubernetes``) makes this controller delete
  every object of every namespaced kind in the resource table inside it, with one
  deletecollection per kind (Background propagation, as Kubernetes' namespace deleter).
  Objects go the way deletes go: pods terminate gracefully, finalizers are waited for.
* Only when a list of every kind comes back empty is ``kubernetes`` removed from
  ``spec.finalizers``, through the ``finalize`` subresource; the API server then deletes the
  namespace (once its other finalizers are gone too). While content remains the key is
  looked at again shortly (``_RECHECK``): level-triggered, nothing waits inside a reconcile.
* ``status.conditions`` say what is holding the namespace, with Kubernetes' condition types
  (NamespaceDeletionContentFailure, NamespaceContentRemaining, NamespaceFinalizersRemaining,
  and the two discovery ones, always False here: the kinds come from the resource table).
  They are written only when they change.
* New objects cannot appear meanwhile: the API server's NamespaceLifecycle admission refuses
  creates in a terminating namespace.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging

from podling.api import meta
from podling.api.resources import Resource, all_resources, find
from podling.client.http import Request, is_not_found, resource_path, update_request
from podling.client.informer import Obj
from podling.client.workqueue import run_workers
from podling.controllers.base import Context

log = logging.getLogger("podling.controllers.namespace")

_NAMESPACES = find(group="", version="v1", plural="namespaces")
assert _NAMESPACES is not None

FINALIZER = "kubernetes"
_RECHECK = 1.0  # seconds until a namespace still holding content is looked at again
_PAGE = 500


def namespaced_kinds() -> list[Resource]:
    """Every kind whose objects live in namespaces and can be listed and deleted."""
    return [r for r in all_resources() if r.namespaced and {"list", "deletecollection"} <= set(r.verbs)]


@dataclasses.dataclass(slots=True)
class Remaining:
    """What is left in a namespace being emptied."""

    objects: dict[str, int] = dataclasses.field(default_factory=dict)  # "pods." -> count
    finalizers: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    failures: list[str] = dataclasses.field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.objects and not self.failures

    def conditions(self) -> list[tuple[str, str, str, str]]:
        """(type, status, reason, message) as Kubernetes' namespace controller words them."""
        objects = ", ".join(f"{kind} has {count} resource instances" for kind, count in sorted(self.objects.items()))
        finalizers = ", ".join(f"{name} in {count} resource instances"
                               for name, count in sorted(self.finalizers.items()))
        return [
            ("NamespaceDeletionDiscoveryFailure", "False", "ResourcesDiscovered",
             "All resources successfully discovered"),
            ("NamespaceDeletionGroupVersionParsingFailure", "False", "ParsedGroupVersions",
             "All legacy kube types successfully parsed"),
            ("NamespaceDeletionContentFailure", "True", "ContentDeletionFailed",
             f"Failed to delete all resource types, {len(self.failures)} remaining: {'; '.join(self.failures)}")
            if self.failures else
            ("NamespaceDeletionContentFailure", "False", "ContentDeleted",
             "All content successfully deleted, may be waiting on finalization"),
            ("NamespaceContentRemaining", "True", "SomeResourcesRemain", f"Some resources are remaining: {objects}")
            if self.objects else
            ("NamespaceContentRemaining", "False", "ContentRemoved", "All content successfully removed"),
            ("NamespaceFinalizersRemaining", "True", "SomeFinalizersRemain",
             f"Some content in the namespace has finalizers remaining: {finalizers}")
            if self.finalizers else
            ("NamespaceFinalizersRemaining", "False", "ContentHasNoFinalizers",
             "All content-preserving finalizers finished"),
        ]


class NamespaceController:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.queue = context.metrics.queue("namespace")
        self.namespaces = context.informers.informer(_NAMESPACES)
        self.namespaces.add_handlers(on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new))

    def _enqueue(self, namespace: Obj) -> None:
        if (namespace.get("metadata") or {}).get("deletionTimestamp"):
            self.queue.add(meta.name(namespace))

    async def run(self, *, workers: int) -> None:
        try:
            await run_workers(self.queue, self.context.reconciler("namespace", self.reconcile), workers=workers)
        finally:
            self.queue.shutdown()

    async def reconcile(self, name: str) -> None:
        namespace = self.namespaces.get(name)
        if namespace is None or not (namespace.get("metadata") or {}).get("deletionTimestamp"):
            return
        if FINALIZER not in ((namespace.get("spec") or {}).get("finalizers") or ()):
            return  # finalized: the API server deletes it when its metadata.finalizers are gone
        remaining = Remaining()
        for resource in namespaced_kinds():
            await self._delete_all(name, resource, remaining)
        namespace = await self._set_conditions(namespace, remaining)
        if not remaining.empty:
            log.info("namespace %s: waiting for %s", name,
                     ", ".join([*(f"{n} {kind}" for kind, n in remaining.objects.items()), *remaining.failures]))
            self.queue.add_after(name, _RECHECK)
            return
        finalized = copy.deepcopy(namespace)
        finalized["spec"]["finalizers"] = [f for f in finalized["spec"]["finalizers"] if f != FINALIZER]
        try:
            await self.context.api.send(update_request(_NAMESPACES, finalized, subresource="finalize"))
        except Exception as err:
            if not is_not_found(err):
                raise
            return  # finalized and gone already (this reconcile read a cache that had not seen it yet)
        log.info("namespace %s: content deleted, finalized", name)

    async def _delete_all(self, namespace: str, resource: Resource, remaining: Remaining) -> None:
        """Delete every ``resource`` in ``namespace``; note in ``remaining`` what is still there."""
        kind = f"{resource.plural}.{resource.group}"
        try:
            items = await self._list(namespace, resource)
            if any(not (item.get("metadata") or {}).get("deletionTimestamp") for item in items):
                await self.context.api.send(Request(
                    method="DELETE", path=resource_path(resource, namespace=namespace),
                    body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}))
                items = await self._list(namespace, resource)
        except Exception as err:
            remaining.failures.append(f"{kind}: {err}")
            return
        if items:
            remaining.objects[kind] = len(items)
            for item in items:
                remaining.finalizers.update((item.get("metadata") or {}).get("finalizers") or ())

    async def _list(self, namespace: str, resource: Resource) -> list[Obj]:
        items: list[Obj] = []
        continue_ = ""
        while True:
            page, _, continue_ = await self.context.api.list(resource, namespace=namespace, limit=_PAGE,
                                                             continue_=continue_)
            items += page
            if not continue_:
                return items

    async def _set_conditions(self, namespace: Obj, remaining: Remaining) -> Obj:
        updated = copy.deepcopy(namespace)
        status = updated.setdefault("status", {})
        changed = False
        for condition_type, value, reason, message in remaining.conditions():
            changed |= meta.set_condition(status, type=condition_type, status=value, reason=reason, message=message)
        if not changed:
            return namespace
        try:
            return await self.context.api.update_status(_NAMESPACES, updated)
        except Exception as err:
            if is_not_found(err):
                return namespace
            raise
