"""Watch-fed caches of a few kinds inside the API server, for admission and authentication.

Service account admission and the token authenticator read ServiceAccounts and token
Secrets on every request they judge, LimitRanger and ResourceQuota admission read their
namespace's LimitRanges and ResourceQuotas on every create; a store read each time would be
the costliest step of a request. An :class:`ObjectCache` lists one resource once and then
follows the store's watch from that revision.

Invariants:

* The cache converges to the store: changes are applied in revision order, exactly once; a
  watch that falls behind compaction starts over from a fresh list (as NamespaceLifecycle's
  cache does).
* It may trail the store by a watch's latency. :meth:`ObjectCache.fetch` (one object by
  name) reads the store on a miss, so an object created an instant ago is never reported
  missing; :meth:`ObjectCache.in_namespace` answers from memory only.
* ``keep`` decides what is held (only service-account token Secrets, not every Secret);
  whatever it refuses is treated as absent by every read. Objects handed out are the
  cache's own dicts: read-only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from podling.api import tokens
from podling.api.resources import Resource, find
from podling.apiserver import codec
from podling.store.base import Compacted, Store

log = logging.getLogger("podling.apiserver.cache")

Obj = dict[str, Any]


class ObjectCache:
    def __init__(self, *, store: Store, resource: Resource, keep: Callable[[Obj], bool] | None = None) -> None:
        self.resource = resource
        self._store = store
        self._keep = keep or (lambda obj: True)
        self._by_namespace: dict[str, dict[str, Obj]] = {}
        self._following: asyncio.Task[None] | None = None

    async def start(self) -> None:
        revision = await self._relist()
        self._following = asyncio.create_task(self._follow(revision), name=f"cache-{self.resource.plural}")

    async def stop(self) -> None:
        if self._following is not None:
            self._following.cancel()
            await asyncio.gather(self._following, return_exceptions=True)

    def get(self, namespace: str, name: str) -> Obj | None:
        return self._by_namespace.get(namespace, {}).get(name)

    async def fetch(self, namespace: str, name: str) -> Obj | None:
        """The object from the cache, or from the store when the cache has not seen it (yet)."""
        cached = self.get(namespace, name)
        if cached is not None:
            return cached
        kv = await self._store.get(self.resource.key(namespace or None, name))
        if kv is None:
            return None
        obj = codec.from_kv(kv)
        return obj if self._keep(obj) else None

    def in_namespace(self, namespace: str) -> list[Obj]:
        """Every cached object of ``namespace``, in name order."""
        objects = self._by_namespace.get(namespace, {})
        return [objects[name] for name in sorted(objects)]

    async def _relist(self) -> int:
        kvs, revision, _ = await self._store.list(self.resource.key_prefix())
        self._by_namespace.clear()
        for kv in kvs:
            self._put(codec.from_kv(kv))
        return revision

    async def _follow(self, revision: int) -> None:
        while True:
            try:
                async for event in self._store.watch(self.resource.key_prefix(), revision=revision):
                    revision = event.revision
                    if event.value is None:
                        namespace, _, name = event.key.removeprefix(self.resource.key_prefix()).rpartition("/")
                        self._remove(namespace, name)
                    else:
                        self._put(codec.decode(event.value, revision=event.revision))
                return
            except Compacted:
                log.info("%s cache fell behind compaction; listing again", self.resource.plural)
                revision = await self._relist()

    def _put(self, obj: Obj) -> None:
        metadata = obj.get("metadata") or {}
        namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
        if self._keep(obj):
            self._by_namespace.setdefault(namespace, {})[name] = obj
        else:
            self._remove(namespace, name)

    def _remove(self, namespace: str, name: str) -> None:
        objects = self._by_namespace.get(namespace)
        if objects is not None:
            objects.pop(name, None)
            if not objects:
                del self._by_namespace[namespace]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Caches:
    """The caches an API server keeps: what admission and the token authenticator read."""

    service_accounts: ObjectCache
    token_secrets: ObjectCache  # only Secrets of type kubernetes.io/service-account-token
    resource_quotas: ObjectCache
    limit_ranges: ObjectCache

    @classmethod
    def over(cls, store: Store) -> Caches:
        def resource(plural: str) -> Resource:
            found = find(group="", version="v1", plural=plural)
            assert found is not None
            return found

        return cls(
            service_accounts=ObjectCache(store=store, resource=resource("serviceaccounts")),
            token_secrets=ObjectCache(store=store, resource=resource("secrets"),
                                      keep=lambda secret: secret.get("type") == tokens.SECRET_TYPE),
            resource_quotas=ObjectCache(store=store, resource=resource("resourcequotas")),
            limit_ranges=ObjectCache(store=store, resource=resource("limitranges")),
        )

    def _all(self) -> tuple[ObjectCache, ...]:
        return (self.service_accounts, self.token_secrets, self.resource_quotas, self.limit_ranges)

    async def start(self) -> None:
        await asyncio.gather(*(cache.start() for cache in self._all()))

    async def stop(self) -> None:
        await asyncio.gather(*(cache.stop() for cache in self._all()))
