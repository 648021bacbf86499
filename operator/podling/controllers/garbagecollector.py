"""The garbage collector: objects whose owners are gone go too (ownerReferences cascade).

Invariants:

* The owner -> dependents graph is the informers' own: every kind in the resource table that
  can be listed, watched and deleted (but Events, as Kubernetes leaves them out) is watched
  through the shared informer factory, with an index from each owner uid to its dependents.
  Informers rather than a periodic scan: the controller manager's other controllers share
  most of these watches anyway, a deletion is acted on as soon as it is seen, and a scan
  would read every object of the cluster each period to find the few that changed.
* A dependent is deleted only when none of its owners is alive ("solid"): an owner is gone
  (dangling) when the API server answers 404 for it or holds another uid under its name.
  The cache only ever suggests that an owner is gone; a live read confirms it before
  anything is deleted (the owner's watch may simply lag the dependent's), and a uid
  confirmed gone is remembered (uids are never reused). A dependent with a live owner only
  loses its references to the gone ones (and to owners being deleted in the foreground).
* Background: the owner is deleted at once; its dependents then find it dangling. Foreground:
  the owner keeps a deletionTimestamp and the ``foregroundDeletion`` finalizer while its
  dependents are deleted (a dependent with dependents of its own in the foreground too);
  the finalizer goes when no dependent with ``blockOwnerDeletion`` is left. Orphan: the owner
  keeps the ``orphan`` finalizer until every dependent has lost its reference to it.
* Every write is a JSON patch that first tests the uid (and the list entry it removes), or a
  delete with a uid precondition, so a stale cache can never change the wrong object; such a
  failure is retried with backoff once the cache has caught up.
* Keys are ``PLURAL.GROUP/namespace/name`` (``PLURAL.GROUP/name`` for cluster-scoped kinds).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import logging
from collections.abc import Mapping
from typing import Literal

from podling.api import meta
from podling.api.resources import Resource, all_resources
from podling.client.http import ApiError, is_not_found
from podling.client.informer import Obj
from podling.client.workqueue import run_workers
from podling.controllers.base import Context

log = logging.getLogger("podling.controllers.garbagecollector")

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
_IGNORED = frozenset({("", "events")})  # Kubernetes' garbage collector leaves Events out too
_BY_OWNER = "garbagecollector:owner"  # informer index names are shared per informer: ours are prefixed
_ABSENT_REMEMBERED = 10_000


def resource_id(resource: Resource) -> str:
    return f"{resource.plural}.{resource.group}"


def watched_kinds() -> list[Resource]:
    return [r for r in all_resources()
            if {"list", "watch", "get", "patch", "delete"} <= set(r.verbs) and (r.group, r.plural) not in _IGNORED]


def owner_resource(ref: Mapping[str, str]) -> Resource | None:
    """The served kind an owner reference names (any version of its group), if any."""
    group = (ref.get("apiVersion") or "").rpartition("/")[0]
    return next((r for r in all_resources() if r.group == group and r.kind == ref.get("kind") and "get" in r.verbs),
                None)


# ---- the pure part: what to do with one object --------------------------------------------


class Owner(enum.Enum):
    SOLID = "solid"  # exists, and is not being deleted in the foreground
    DANGLING = "dangling"  # gone (or another object with another uid holds its name)
    WAITING = "waiting"  # being deleted in the foreground: waits for its dependents to go


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["none", "remove_refs", "delete"]
    refs: frozenset[str] = frozenset()  # remove_refs: the owner uids whose references go
    policy: Literal["", "Background", "Foreground", "Orphan"] = ""  # delete: its propagation policy


def decide(*, dependent: Obj, owners: Mapping[str, Owner], has_dependents: bool) -> Decision:
    """Kubernetes' ``attemptToDeleteItem``, given the state of each owner (by uid)."""
    metadata = dependent.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return Decision("none")  # on its way out already; its own finalizers are handled apart
    dangling = {uid for uid, state in owners.items() if state is Owner.DANGLING}
    waiting = {uid for uid, state in owners.items() if state is Owner.WAITING}
    if not dangling and not waiting:
        return Decision("none")
    if any(state is Owner.SOLID for state in owners.values()):
        return Decision("remove_refs", refs=frozenset(dangling | waiting))
    if waiting and has_dependents:
        return Decision("delete", policy="Foreground")  # the foreground cascade goes on down
    finalizers = metadata.get("finalizers") or ()
    if ORPHAN in finalizers:
        return Decision("delete", policy="Orphan")
    if FOREGROUND in finalizers:
        return Decision("delete", policy="Foreground")
    return Decision("delete", policy="Background")


def blocks(dependent: Obj, owner_uid: str) -> bool:
    """Whether ``dependent`` holds up its owner's foreground deletion (``blockOwnerDeletion``)."""
    return any(ref.get("uid") == owner_uid and ref.get("blockOwnerDeletion") is True
               for ref in meta.owner_references(dependent))


def remove_refs_patch(obj: Obj, uids: frozenset[str]) -> list[Obj]:
    """A JSON patch taking the references to ``uids`` off ``obj``, testing each entry it removes."""
    refs = meta.owner_references(obj)
    ops: list[Obj] = [{"op": "test", "path": "/metadata/uid", "value": (obj.get("metadata") or {}).get("uid")}]
    doomed = [i for i, ref in enumerate(refs) if ref.get("uid") in uids]
    ops += [{"op": "test", "path": f"/metadata/ownerReferences/{i}/uid", "value": refs[i].get("uid")} for i in doomed]
    if len(doomed) == len(refs):
        return [*ops, {"op": "remove", "path": "/metadata/ownerReferences"}]
    return [*ops, *({"op": "remove", "path": f"/metadata/ownerReferences/{i}"} for i in reversed(doomed))]


def _gc_view(obj: Obj) -> tuple[object, ...]:
    metadata = obj.get("metadata") or {}
    return (metadata.get("uid"), metadata.get("ownerReferences"), metadata.get("deletionTimestamp"),
            metadata.get("finalizers"))


def _pending(obj: Obj) -> bool:
    """Whether the collector has something to look at in ``obj``."""
    metadata = obj.get("metadata") or {}
    finalizers = metadata.get("finalizers") or ()
    return bool(metadata.get("ownerReferences")) or (
        bool(metadata.get("deletionTimestamp")) and (ORPHAN in finalizers or FOREGROUND in finalizers))


# ---- the controller -----------------------------------------------------------------------


class GarbageCollector:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.queue = context.metrics.queue("garbagecollector")
        self.kinds = {resource_id(r): r for r in watched_kinds()}
        self.informers = {rid: context.informers.informer(r) for rid, r in self.kinds.items()}
        for rid, informer in self.informers.items():
            informer.add_index(_BY_OWNER, lambda obj: [ref["uid"] for ref in meta.owner_references(obj)
                                                       if ref.get("uid")])
            informer.add_handlers(on_add=functools.partial(self._on_add, rid),
                                  on_update=functools.partial(self._on_update, rid),
                                  on_delete=functools.partial(self._on_delete, rid))
        self._absent: collections.OrderedDict[str, None] = collections.OrderedDict()  # uids confirmed gone

    async def run(self, *, workers: int) -> None:
        try:
            await run_workers(self.queue, self.context.reconciler("garbagecollector", self.reconcile),
                              workers=workers)
        finally:
            self.queue.shutdown()

    # ---- events -> keys ------------------------------------------------------------------

    def _enqueue(self, rid: str, obj: Obj) -> None:
        self.queue.add(f"{rid}/{meta.object_key(obj)}")

    def _enqueue_owner(self, dependent: Obj, ref: Mapping[str, str]) -> None:
        resource = owner_resource(ref)
        if resource is None or resource_id(resource) not in self.kinds:
            return
        namespace = meta.namespace(dependent) if resource.namespaced else ""
        name = ref.get("name") or ""
        self.queue.add(f"{resource_id(resource)}/{namespace}/{name}" if namespace
                       else f"{resource_id(resource)}/{name}")

    def _on_add(self, rid: str, obj: Obj) -> None:
        if _pending(obj):
            self._enqueue(rid, obj)

    def _on_update(self, rid: str, old: Obj, new: Obj) -> None:
        if _gc_view(old) == _gc_view(new):
            return
        self._on_add(rid, new)
        for ref in [*meta.owner_references(old), *meta.owner_references(new)]:
            self._enqueue_owner(new, ref)  # an owner may be waiting for this one to change

    def _on_delete(self, rid: str, obj: Obj) -> None:
        for dependent_rid, dependent in self._dependents((obj.get("metadata") or {}).get("uid") or ""):
            self._enqueue(dependent_rid, dependent)
        for ref in meta.owner_references(obj):
            self._enqueue_owner(obj, ref)

    def _dependents(self, uid: str) -> list[tuple[str, Obj]]:
        if not uid:
            return []
        return [(rid, obj) for rid, informer in self.informers.items() for obj in informer.by_index(_BY_OWNER, uid)]

    # ---- reconcile -----------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        rid, _, object_key = key.partition("/")
        resource = self.kinds[rid]
        obj = self.informers[rid].get(object_key)
        if obj is None:
            return
        metadata = obj.get("metadata") or {}
        finalizers = metadata.get("finalizers") or ()
        if metadata.get("deletionTimestamp"):
            if ORPHAN in finalizers:
                await self._orphan_dependents(resource, obj)
            elif FOREGROUND in finalizers:
                await self._delete_dependents(resource, obj)
            return
        if meta.owner_references(obj):
            await self._attempt_to_delete(resource, obj)

    async def _orphan_dependents(self, resource: Resource, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        for rid, dependent in self._dependents(uid):
            await self._patch(self.kinds[rid], dependent, remove_refs_patch(dependent, frozenset({uid})))
        if await self._remove_finalizer(resource, owner, ORPHAN):
            log.info("orphaned the dependents of %s %s", resource.kind, meta.object_key(owner))

    async def _delete_dependents(self, resource: Resource, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        dependents = self._dependents(uid)
        for rid, dependent in dependents:
            self._enqueue(rid, dependent)  # each finds this owner waiting, and goes
        if any(blocks(dependent, uid) for _, dependent in dependents):
            return  # their deletions enqueue this owner again
        if await self._remove_finalizer(resource, owner, FOREGROUND):
            log.info("the blocking dependents of %s %s are gone", resource.kind, meta.object_key(owner))

    async def _attempt_to_delete(self, resource: Resource, obj: Obj) -> None:
        owners = {ref["uid"]: await self._owner_state(obj, ref) for ref in meta.owner_references(obj) if ref.get("uid")}
        decision = decide(dependent=obj, owners=owners,
                          has_dependents=bool(self._dependents(obj["metadata"].get("uid") or "")))
        if decision.action == "remove_refs":
            if await self._patch(resource, obj, remove_refs_patch(obj, decision.refs)):
                log.info("%s %s: removed owner references %s", resource.kind, meta.object_key(obj),
                         sorted(decision.refs))
        elif decision.action == "delete":
            try:
                await self.context.api.delete(resource, namespace=meta.namespace(obj) or None, name=meta.name(obj),
                                              propagation_policy=decision.policy,
                                              preconditions={"uid": obj["metadata"].get("uid") or ""})
            except ApiError as err:
                if not is_not_found(err):
                    raise
                return
            log.info("%s %s: no owner left, deleted (%s)", resource.kind, meta.object_key(obj), decision.policy)

    async def _owner_state(self, dependent: Obj, ref: Mapping[str, str]) -> Owner:
        resource = owner_resource(ref)
        if resource is None:
            return Owner.SOLID  # a kind this server does not serve: nothing can tell it is gone
        uid = ref.get("uid") or ""
        namespace = meta.namespace(dependent) if resource.namespaced else ""
        if (resource.namespaced and not namespace) or uid in self._absent:
            return Owner.DANGLING  # (a cluster-scoped object cannot have a namespaced owner)
        name = ref.get("name") or ""
        informer = self.informers.get(resource_id(resource))
        owner = informer.get(f"{namespace}/{name}" if namespace else name) if informer is not None else None
        if owner is None or (owner.get("metadata") or {}).get("uid") != uid:
            try:  # the cache suggests it is gone: only the API server can say so
                owner = await self.context.api.get(resource, namespace=namespace or None, name=name)
            except ApiError as err:
                if not is_not_found(err):
                    raise
                owner = None
            if owner is None or (owner.get("metadata") or {}).get("uid") != uid:
                self._absent[uid] = None
                while len(self._absent) > _ABSENT_REMEMBERED:
                    self._absent.popitem(last=False)
                return Owner.DANGLING
        metadata = owner.get("metadata") or {}
        if metadata.get("deletionTimestamp") and FOREGROUND in (metadata.get("finalizers") or ()):
            return Owner.WAITING
        return Owner.SOLID

    async def _remove_finalizer(self, resource: Resource, obj: Obj, finalizer: str) -> bool:
        finalizers = list((obj.get("metadata") or {}).get("finalizers") or ())
        index = finalizers.index(finalizer)
        return await self._patch(resource, obj, [
            {"op": "test", "path": "/metadata/uid", "value": obj["metadata"].get("uid")},
            {"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
            {"op": "remove", "path": f"/metadata/finalizers/{index}"},
        ])

    async def _patch(self, resource: Resource, obj: Obj, ops: list[Obj]) -> bool:
        """Apply ``ops`` to ``obj``; False when it is gone already."""
        try:
            await self.context.api.patch(resource, namespace=meta.namespace(obj) or None, name=meta.name(obj),
                                         body=ops, patch_type="json")
        except ApiError as err:
            if not is_not_found(err):
                raise
            return False
        return True
