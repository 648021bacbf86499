"""ResourceQuota admission: a create that would take a namespace past a quota's hard limits is refused.

As Kubernetes' ResourceQuota plugin, with its messages (403 Forbidden):

* ``failed quota: NAME: must specify limits.cpu for: app; requests.memory for: app`` when
  a quota limits cpu or memory (requests or limits) and a container of the new pod does not
  say how much it wants;
* ``exceeded quota: NAME, requested: pods=1, used: pods=2, limited: pods=2`` when what the
  new object uses (:func:`podling.api.quota.usage`), added to what the namespace uses now,
  exceeds ``spec.hard`` for some resource (only those named, sorted).

ResourceQuota objects themselves are validated (422): every hard limit a quantity, none
negative.

Where Kubernetes keeps a running total in each quota's ``status.used`` and admission bumps
it with a compare-and-swap, podling counts: the namespace's current usage is read from the
store (a consistent list, so nothing written before is missed), so admission needs no
controller to have filled in the status, and a failed or dry-run create leaves nothing to
undo. Consistency under concurrency comes from two things in this API server process:

* quota admission is serialized per namespace (one lock each), so two creates are never
  judged on the same count;
* each admitted create leaves a reservation of its usage until the request that made it has
  finished (its asyncio task is done, the store write having succeeded or failed); a count
  adds the reservations of requests still in flight whose objects it did not read. The
  reservations in flight are taken *before* the store is listed, so an object whose request
  finishes during the list is either in the list or still reserved: never missed.

The serialization does not span processes: two API servers sharing one etcd each serialize
only their own creates (Kubernetes' compare-and-swap on the quota's status does span them).
Only creates are judged; updates that change usage (a service's type) are not.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from podling.api import errors, meta, quota
from podling.api.quantity import Quantity, parse_quantity
from podling.api.resources import Resource
from podling.apiserver import codec
from podling.apiserver.objectcache import ObjectCache
from podling.store.base import Store

if TYPE_CHECKING:
    from podling.apiserver.admission import Attributes

Obj = dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class _Reservation:
    key: str  # the store key of the object being created
    usage: quota.ResourceList


@dataclasses.dataclass(slots=True)
class _Namespace:
    """One namespace's quota admission state; dropped when no admission needs it."""

    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    users: int = 0  # admissions waiting for or holding the lock
    reserved: list[_Reservation] = dataclasses.field(default_factory=list)  # creates in flight


class ResourceQuotaAdmission:
    def __init__(self, *, store: Store, resource_quotas: ObjectCache) -> None:
        self._store = store
        self._quotas = resource_quotas
        self._namespaces: dict[str, _Namespace] = {}

    async def admit(self, attrs: Attributes) -> None:
        resource = attrs.resource
        if resource.kind == "ResourceQuota":
            causes = validate_quota(attrs.obj)
            if causes:
                raise errors.invalid(resource, attrs.name, causes)
        if attrs.operation != "CREATE" or attrs.subresource or not resource.namespaced:
            return
        namespace = attrs.namespace or ""
        quotas = [(meta.name(q), hard) for q in self._quotas.in_namespace(namespace)
                  if quota.tracks(resource, hard := hard_of(q))]
        if not quotas:
            return
        if resource.kind == "Pod":
            for name, hard in quotas:
                missing = quota.missing_per_container(attrs.obj.get("spec") or {}, hard)
                if missing:
                    raise errors.forbidden(resource, attrs.name, f"failed quota: {name}: {missing}")
        delta = quota.usage(resource, attrs.obj)
        if not any(name in hard for _, hard in quotas for name in delta):
            return
        state = self._namespaces.setdefault(namespace, _Namespace())
        state.users += 1
        try:
            async with state.lock:
                used = await self._used(resource, namespace, state)
                for name, hard in quotas:
                    requested = {r: amount for r, amount in delta.items() if r in hard}
                    exceeded = [r for r, amount in requested.items() if used.get(r, _ZERO) + amount > hard[r]]
                    if exceeded:
                        raise errors.forbidden(resource, attrs.name, quota.exceeded_message(
                            quota=name, requested=requested, used={r: used.get(r, _ZERO) for r in hard},
                            hard=hard, exceeded=exceeded))
                self._reserve(namespace, state, _Reservation(key=resource.key(namespace, attrs.name), usage=delta))
        finally:
            state.users -= 1
            self._forget_if_idle(namespace, state)

    def _reserve(self, namespace: str, state: _Namespace, reservation: _Reservation) -> None:
        """Hold ``reservation`` until the request admitting it (this task) has finished."""
        request = asyncio.current_task()
        assert request is not None
        state.reserved.append(reservation)

        def release(_: asyncio.Task[Any]) -> None:
            state.reserved.remove(reservation)
            self._forget_if_idle(namespace, state)

        request.add_done_callback(release)

    def _forget_if_idle(self, namespace: str, state: _Namespace) -> None:
        if not state.users and not state.reserved and self._namespaces.get(namespace) is state:
            del self._namespaces[namespace]

    async def _used(self, resource: Resource, namespace: str, state: _Namespace) -> quota.ResourceList:
        """What the namespace's objects of ``resource`` use: stored ones plus creates still in flight."""
        prefix = resource.key_prefix(namespace)
        in_flight = [r for r in state.reserved if r.key.startswith(prefix)]  # taken before the list: see above
        kvs, _, _ = await self._store.list(prefix)
        stored = {kv.key for kv in kvs}
        total: quota.ResourceList = {}
        for kv in kvs:
            total = quota.add(total, quota.usage(resource, codec.from_kv(kv)))
        for reservation in in_flight:
            if reservation.key not in stored:
                total = quota.add(total, reservation.usage)
        return total


_ZERO = parse_quantity(0)


def hard_of(resource_quota: Obj) -> dict[str, Quantity]:
    """A quota's ``spec.hard``, parsed (a stored quota was validated on the way in)."""
    hard: dict[str, Quantity] = {}
    for name, value in ((resource_quota.get("spec") or {}).get("hard") or {}).items():
        try:
            hard[name] = parse_quantity(value)
        except ValueError:
            continue
    return hard


def validate_quota(resource_quota: Obj) -> list[dict[str, str]]:
    """The causes of a 422 for a ResourceQuota: hard limits that are not quantities, or negative."""
    causes: list[dict[str, str]] = []
    for name, value in ((resource_quota.get("spec") or {}).get("hard") or {}).items():
        try:
            amount = quota.parse_resources({name: value}, field="spec.hard")[name]
        except quota.InvalidQuantity as err:
            causes.append(err.cause())
            continue
        if amount.value < 0:
            causes.append({"reason": "FieldValueInvalid", "field": f"spec.hard[{name}]",
                           "message": f'Invalid value: "{value}": must be greater than or equal to 0'})
    return causes
