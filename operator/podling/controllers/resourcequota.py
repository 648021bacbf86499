"""The ResourceQuota controller: every quota's ``status`` says what it limits and what is used.

Invariants:

* ``status.hard`` is ``spec.hard`` (quantities in canonical form) and ``status.used`` has one
  entry per hard resource: the sum over the namespace's objects of what each uses, counted
  by :func:`podling.api.quota.usage`, the very function quota admission counts with (so
  ``kubectl describe quota`` and the admission's ``used:`` agree); ``0`` where nothing is.
* Level-triggered: a quota is recalculated when it changes, when any object of a kind it
  counts changes in its namespace (pods come, finish, go), and every ``_RESYNC`` seconds
  anyway (a pod past its deletion grace period stops counting without any event). The status
  is written only when it differs, with the quota's resourceVersion (409: recalculated again).
* The kinds counted by the usual names (pods, services, configmaps, secrets,
  replicationcontrollers, persistentvolumeclaims, resourcequotas) are watched from the start;
  a kind named only by ``count/<plural>.<group>`` is watched from the first quota naming it,
  and counted once its informer has synced.

Enforcement is the API server's (ResourceQuota admission); this controller only reports.
"""

from __future__ import annotations

import asyncio
import copy
import logging

from podling.api import meta, quota
from podling.api.quantity import parse_quantity
from podling.api.resources import Resource, all_resources, find
from podling.client.informer import Informer, Obj
from podling.client.workqueue import run_workers
from podling.controllers.base import Context

log = logging.getLogger("podling.controllers.resourcequota")

_QUOTAS = find(group="", version="v1", plural="resourcequotas")
assert _QUOTAS is not None

_RESYNC = 300.0  # seconds between full recalculations (kube-controller-manager's --resource-quota-sync-period)
_BY_NAMESPACE = "resourcequota/namespace"
_WATCHED_FROM_START = ("pods", "services", "configmaps", "secrets", "replicationcontrollers",
                       "persistentvolumeclaims", "resourcequotas")
_ZERO = parse_quantity(0)


class ResourceQuotaController:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.queue = context.metrics.queue("resourcequota")
        self.quotas = context.informers.informer(_QUOTAS)
        self.quotas.add_handlers(on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new))
        self._counted: dict[tuple[str, str], Informer] = {}
        for plural in _WATCHED_FROM_START:
            resource = find(group="", version="v1", plural=plural)
            assert resource is not None
            self._count(resource)

    def _enqueue(self, resource_quota: Obj) -> None:
        self.queue.add(meta.object_key(resource_quota))

    def _count(self, resource: Resource) -> Informer:
        """The informer of a counted kind, indexed by namespace; a change requeues its namespace's quotas."""
        informer = self._counted.get((resource.group, resource.plural))
        if informer is None:
            informer = self.context.informers.informer(resource)
            self._counted[(resource.group, resource.plural)] = informer
            informer.add_index(_BY_NAMESPACE, lambda obj: [meta.namespace(obj)])
            informer.add_handlers(on_add=self._namespace_changed, on_delete=self._namespace_changed,
                                  on_update=lambda old, new: self._namespace_changed(new))
        return informer

    def _namespace_changed(self, obj: Obj) -> None:
        for resource_quota in self.quotas.by_index(_BY_NAMESPACE, meta.namespace(obj)):
            self._enqueue(resource_quota)

    async def run(self, *, workers: int) -> None:
        resync = asyncio.get_running_loop().create_task(self._resync(), name="resourcequota resync")
        try:
            await run_workers(self.queue, self.context.reconciler("resourcequota", self.reconcile), workers=workers)
        finally:
            resync.cancel()
            self.queue.shutdown()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(_RESYNC)
            for resource_quota in self.quotas.list():
                self._enqueue(resource_quota)

    async def reconcile(self, key: str) -> None:
        resource_quota = self.quotas.get(key)
        if resource_quota is None:
            return
        namespace = meta.namespace(resource_quota)
        hard: dict[str, str] = {}
        for name, value in ((resource_quota.get("spec") or {}).get("hard") or {}).items():
            try:
                hard[name] = str(parse_quantity(value))
            except ValueError:
                continue  # admission refuses such quotas; one stored before is ignored
        used: dict[str, str] = {}
        for resource, names in _by_kind(hard).items():
            total = await self._usage(resource, namespace) if resource is not None else {}
            for name in names:
                used[name] = str(total.get(name, _ZERO))
        status = {**(resource_quota.get("status") or {}), "hard": hard, "used": used}
        if status == resource_quota.get("status"):
            return
        updated = copy.deepcopy(resource_quota)
        updated["status"] = status
        await self.context.api.update_status(_QUOTAS, updated, namespace=namespace)
        log.info("resource quota %s: used %s", key, quota.pretty({n: parse_quantity(v) for n, v in used.items()}))

    async def _usage(self, resource: Resource, namespace: str) -> quota.ResourceList:
        informer = self._count(resource)
        await informer.wait_synced()
        total: quota.ResourceList = {}
        for obj in informer.by_index(_BY_NAMESPACE, namespace):
            total = quota.add(total, quota.usage(resource, obj))
        return total


def _by_kind(hard: dict[str, str]) -> dict[Resource | None, list[str]]:
    """Hard resource names grouped by the kind whose objects they count (None: a name nothing counts)."""
    kinds: dict[Resource | None, list[str]] = {}
    for name in sorted(hard):
        tracked = quota.tracked_by(name)
        resource = None
        if tracked is not None:
            resource = next((r for r in all_resources() if (r.group, r.plural) == tracked and r.namespaced
                             and "list" in r.verbs), None)
        kinds.setdefault(resource, []).append(name)
    return kinds
