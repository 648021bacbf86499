"""An informer: one resource listed and watched into a local cache, with change notifications.

Invariants:

* The cache converges to the server's state, without duplicates or gaps. It is filled by a
  list, then kept current by a watch from the list's resourceVersion (with bookmarks, so
  the resourceVersion stays fresh while nothing changes). When the watch fails (410 Gone,
  an ERROR event, a dropped connection, a server restart) the informer lists again, with
  exponential backoff, and turns the difference between the new list and its cache into
  add/update/delete notifications: an object that did not change is not announced again,
  one that went away while the watch was down is announced deleted.
* Handlers see the cache already updated, are called in the order of the changes, and a
  handler that raises is logged and skipped; it cannot stop the informer. Handlers should
  only enqueue keys (see ``workqueue``): the reconcile reads the cache later.
* Objects are shared, not copied: ``get``, ``list``, ``by_index`` and handlers hand out the
  cache's own dicts, which everyone must treat as read-only (``copy.deepcopy`` before
  changing one to write it back). The informer never changes a dict it has handed out: a
  change replaces the cached object with the new one, so what a caller holds is a
  consistent snapshot. Shared rather than copied because controllers read the cache on
  every reconcile (a scheduler walks every pod for every placement) and copying each
  object each time would dominate their cost; it is client-go's contract too, and
  ``podling.api.meta`` readers are written to it.

Keys are ``namespace/name``, or ``name`` for cluster-scoped objects (``meta.object_key``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

from podling.api import meta
from podling.api.resources import Resource
from podling.client.http import ApiClient, is_gone

log = logging.getLogger("podling.client.informer")

Obj = dict[str, Any]
AddHandler = Callable[[Obj], None]
UpdateHandler = Callable[[Obj, Obj], None]  # (old, new)
DeleteHandler = Callable[[Obj], None]  # the last state seen
IndexFunc = Callable[[Obj], Iterable[str]]

_PAGE = 500  # objects per list request
_BACKOFF_BASE = 0.25  # seconds before the first re-list after a failure; doubles per failure
_BACKOFF_MAX = 30.0
_SHORT_WATCH = 1.0  # a watch ending this fast with no event is a failure (no hot loop of empty watches)


class Informer:
    def __init__(
        self,
        api: ApiClient,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        resync_period: float = 0.0,
        watch_timeout: int = 0,
    ) -> None:
        """``resync_period`` > 0 replays every cached object to update handlers that often.

        ``watch_timeout`` is each watch's timeoutSeconds; 0 picks 5 to 10 minutes at random
        per watch, as client-go's reflector does, so informers do not reconnect in lockstep.
        """
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.watch_timeout = watch_timeout
        self._items: dict[str, Obj] = {}
        self._indexers: dict[str, IndexFunc] = {}
        self._indices: dict[str, dict[str, set[str]]] = {}
        self._on_add: list[AddHandler] = []
        self._on_update: list[UpdateHandler] = []
        self._on_delete: list[DeleteHandler] = []
        self._synced = asyncio.Event()
        self._stop = asyncio.Event()
        self._started = False

    def __repr__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"<Informer {self.resource.plural}{where}>"

    # ---- the cache ---------------------------------------------------------------------

    def get(self, key: str) -> Obj | None:
        """The cached object with this key (read-only), or None."""
        return self._items.get(key)

    def list(self) -> list[Obj]:
        """Every cached object (read-only)."""
        return [*self._items.values()]

    def keys(self) -> list[str]:
        return [*self._items]

    def add_index(self, name: str, fn: IndexFunc) -> None:
        """Index the cache by the values ``fn(obj)`` returns (such as a pod's node name)."""
        if name in self._indexers:
            raise ValueError(f"{self!r} already has an index named {name!r}")
        self._indexers[name] = fn
        self._indices[name] = {}
        for key, obj in self._items.items():
            self._index_one(name, key, obj)

    def by_index(self, name: str, value: str) -> list[Obj]:
        """The cached objects for which index ``name`` gave ``value`` (read-only)."""
        if name not in self._indices:
            raise KeyError(f"{self!r} has no index named {name!r}")
        return [self._items[key] for key in self._indices[name].get(value, ())]

    # ---- notifications -----------------------------------------------------------------

    def add_handlers(
        self,
        *,
        on_add: AddHandler | None = None,
        on_update: UpdateHandler | None = None,
        on_delete: DeleteHandler | None = None,
    ) -> None:
        """Call these on changes. Objects already cached are announced to ``on_add`` now, so a
        handler added late misses nothing."""
        if on_add is not None:
            self._on_add.append(on_add)
            for obj in self.list():
                _call(on_add, obj)
        if on_update is not None:
            self._on_update.append(on_update)
        if on_delete is not None:
            self._on_delete.append(on_delete)

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def has_synced(self) -> bool:
        """True once the first list is in the cache."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def run(self) -> None:
        """List and watch (and resync) until ``stop()``."""
        if self._started:
            raise RuntimeError(f"{self!r} runs once")
        self._started = True
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._list_and_watch(), name=f"{self!r} list+watch")]
            if self.resync_period > 0:
                tasks.append(group.create_task(self._resync(), name=f"{self!r} resync"))
            await self._stop.wait()
            for task in tasks:
                task.cancel()

    def stop(self) -> None:
        self._stop.set()

    # ---- list and watch ----------------------------------------------------------------

    async def _list_and_watch(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            try:
                resource_version = await self._relist()
                while True:  # watch again from where the last watch ended
                    started, seen = loop.time(), False
                    events = self.api.watch(
                        self.resource, namespace=self.namespace, resource_version=resource_version,
                        label_selector=self.label_selector, field_selector=self.field_selector,
                        timeout_seconds=self.watch_timeout or random.randint(300, 600), allow_bookmarks=True,
                    )
                    async with contextlib.aclosing(events):
                        async for kind, obj in events:
                            failures, seen = 0, True
                            resource_version = (obj.get("metadata") or {}).get("resourceVersion") or resource_version
                            if kind != "BOOKMARK":
                                self._apply(kind, obj)
                    if not seen and loop.time() - started < _SHORT_WATCH:
                        raise ConnectionError("the watch ended at once without an event")
            except Exception as err:  # CancelledError (stop) is not an Exception
                failures += 1
                delay = min(_BACKOFF_BASE * 2 ** min(failures - 1, 16), _BACKOFF_MAX) * random.uniform(1.0, 1.5)
                if is_gone(err):
                    log.info("%r: %s; listing again", self, err)
                else:
                    log.warning("%r: list/watch failed (%s: %s); listing again in %.2fs",
                                self, type(err).__name__, err, delay)
                await asyncio.sleep(delay)

    async def _relist(self) -> str:
        """List everything; make the cache equal to it, announcing only the differences."""
        items: list[Obj] = []
        continue_ = ""
        while True:
            page, resource_version, continue_ = await self.api.list(
                self.resource, namespace=self.namespace, label_selector=self.label_selector,
                field_selector=self.field_selector, limit=_PAGE, continue_=continue_,
            )
            items += page
            if not continue_:
                break
        # No awaits from here on: nothing else on the loop sees the cache half replaced.
        listed = {meta.object_key(obj): obj for obj in items}
        for key in [key for key in self._items if key not in listed]:
            self._notify_delete(self._remove(key))
        for obj in listed.values():
            self._apply("MODIFIED", obj)
        self._synced.set()
        return resource_version

    def _apply(self, kind: str, obj: Obj) -> None:
        key = meta.object_key(obj)
        old = self._items.get(key)
        if kind == "DELETED":
            if old is not None:
                self._remove(key)
                self._notify_delete(obj)
            return
        if old is not None and _resource_version(old) == _resource_version(obj):
            return  # seen already (a re-list of an unchanged object)
        self._put(key, obj)
        if old is None:
            for on_add in self._on_add:
                _call(on_add, obj)
        else:
            for on_update in self._on_update:
                _call(on_update, old, obj)

    def _notify_delete(self, obj: Obj) -> None:
        for on_delete in self._on_delete:
            _call(on_delete, obj)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync_period)
            for obj in self.list():
                for on_update in self._on_update:
                    _call(on_update, obj, obj)

    # ---- cache and indices -------------------------------------------------------------

    def _put(self, key: str, obj: Obj) -> None:
        if key in self._items:
            self._remove(key)
        self._items[key] = obj
        for name in self._indexers:
            self._index_one(name, key, obj)

    def _remove(self, key: str) -> Obj:
        obj = self._items.pop(key)
        for name, index in self._indices.items():
            for value in self._index_values(name, obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
        return obj

    def _index_one(self, name: str, key: str, obj: Obj) -> None:
        index = self._indices[name]
        for value in self._index_values(name, obj):
            index.setdefault(value, set()).add(key)

    def _index_values(self, name: str, obj: Obj) -> Iterable[str]:
        try:
            return [*self._indexers[name](obj)]
        except Exception:
            log.exception("%r: index %r failed on %s", self, name, meta.object_key(obj))
            return ()


def _resource_version(obj: Obj) -> str:
    return (obj.get("metadata") or {}).get("resourceVersion") or ""


def _call(handler: Callable[..., None], *objs: Obj) -> None:
    try:
        handler(*objs)
    except Exception:
        log.exception("informer handler %s failed", getattr(handler, "__qualname__", handler))


class InformerFactory:
    """Shared informers: one list+watch per resource (and namespace/selectors) for a whole process.

    Every controller of a controller manager asks the factory, so ten controllers watching pods
    share one cache and one watch, as client-go's SharedInformerFactory does. ``start()`` runs
    the informers made so far (and any made later, at once); ``wait_synced()`` waits for all.
    """

    def __init__(self, api: ApiClient, *, resync_period: float = 0.0) -> None:
        self.api = api
        self.resync_period = resync_period
        self._informers: dict[tuple[str, str, str | None, str, str], Informer] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    def informer(self, resource: Resource, *, namespace: str | None = None, label_selector: str = "",
                 field_selector: str = "") -> Informer:
        key = (resource.group, resource.plural, namespace, label_selector, field_selector)
        informer = self._informers.get(key)
        if informer is None:
            informer = self._informers[key] = Informer(
                self.api, resource, namespace=namespace, label_selector=label_selector,
                field_selector=field_selector, resync_period=self.resync_period)
            if self._started:
                self._run(informer)
        return informer

    def _run(self, informer: Informer) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(informer.run(), name=f"{informer!r}"))

    def start(self) -> None:
        if not self._started:
            self._started = True
            for informer in self._informers.values():
                self._run(informer)

    async def wait_synced(self) -> None:
        await asyncio.gather(*(informer.wait_synced() for informer in self._informers.values()))

    async def stop(self) -> None:
        for informer in self._informers.values():
            informer.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
