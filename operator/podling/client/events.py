"""Recording Kubernetes Events about objects, for ``kubectl get events`` and ``kubectl describe``.

Invariants:

* An event is a core/v1 Event shaped as Kubernetes' own recorder writes it: named
  ``<object name>.<hex nanoseconds>``, in the object's namespace (``default`` for
  cluster-scoped objects), with ``involvedObject``, ``source``, ``reportingComponent``,
  ``firstTimestamp``, ``lastTimestamp`` and ``count``.
* The same event again (same object, type, reason and message from this recorder) within
  ten minutes of its last occurrence is not a new Event: the existing one gets ``count``
  + 1 and a new ``lastTimestamp``, so a controller retrying in a loop shows one line
  "(x12)" rather than twelve. Events from one recorder are written one at a time, so two
  repeats can never race into two Events.
* Recording never fails the caller: an event is a side note to a reconcile, so every
  failure (the API unreachable, a rejected event) is logged and swallowed.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from typing import Any, Literal

from podling.api import meta
from podling.api.resources import find
from podling.client.http import ApiClient, is_not_found

log = logging.getLogger("podling.client.events")

Obj = dict[str, Any]

_EVENTS = find(group="", version="v1", plural="events")
assert _EVENTS is not None
_REPEAT_WINDOW = 600.0  # seconds: a repeat within this of the last occurrence counts up
_REMEMBERED = 4096  # distinct events remembered for counting (client-go's LRU size)


@dataclasses.dataclass(slots=True)
class _Recorded:
    namespace: str
    name: str
    count: int
    at: float  # time.monotonic() of the last occurrence


class EventRecorder:
    def __init__(self, api: ApiClient, *, component: str, host: str = "") -> None:
        self.api = api
        self.component = component
        self.host = host
        self._recorded: collections.OrderedDict[tuple[str, ...], _Recorded] = collections.OrderedDict()
        self._lock = asyncio.Lock()

    async def event(
        self,
        obj: Obj,
        *,
        type: Literal["Normal", "Warning"] = "Normal",
        reason: str,
        message: str,
    ) -> None:
        """Record that ``reason``/``message`` happened to ``obj``; logs (never raises) on failure."""
        try:
            if type not in ("Normal", "Warning"):
                raise ValueError(f"event type must be Normal or Warning, not {type!r}")
            async with self._lock:
                await self._record(obj, type=type, reason=reason, message=message)
        except Exception as err:
            log.warning("%s: could not record event %s %s on %s %s: %s", self.component, type, reason,
                        obj.get("kind", "object"), meta.object_key(obj), err)

    async def _record(self, obj: Obj, *, type: str, reason: str, message: str) -> None:
        involved = _reference(obj)
        key = (involved.get("apiVersion", ""), involved.get("kind", ""), involved.get("namespace", ""),
               involved["name"], involved.get("uid", ""), type, reason, message)
        now = meta.now_rfc3339()
        recorded = self._recorded.get(key)
        if recorded is not None and time.monotonic() - recorded.at < _REPEAT_WINDOW:
            try:
                await self.api.patch(_EVENTS, namespace=recorded.namespace, name=recorded.name,
                                     body={"count": recorded.count + 1, "lastTimestamp": now})
            except Exception as err:
                if not is_not_found(err):
                    raise
                # The Event was deleted (by a user, or expired): record it anew below.
            else:
                recorded.count += 1
                recorded.at = time.monotonic()
                self._recorded.move_to_end(key)
                return
        namespace = involved.get("namespace") or "default"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{involved['name']}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": involved,
            "type": type,
            "reason": reason,
            "message": message,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "reportingComponent": self.component,
            "reportingInstance": self.host,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        created = await self.api.create(_EVENTS, event, namespace=namespace)
        self._recorded[key] = _Recorded(namespace=namespace, name=meta.name(created), count=1, at=time.monotonic())
        self._recorded.move_to_end(key)
        while len(self._recorded) > _REMEMBERED:
            self._recorded.popitem(last=False)


def _reference(obj: Obj) -> Obj:
    """The ``involvedObject`` of an event about ``obj``."""
    metadata = obj.get("metadata") or {}
    if not metadata.get("name"):
        raise ValueError("the object has no metadata.name")
    reference = {
        "kind": obj.get("kind"),
        "namespace": metadata.get("namespace"),
        "name": metadata["name"],
        "uid": metadata.get("uid"),
        "apiVersion": obj.get("apiVersion"),
        "resourceVersion": metadata.get("resourceVersion"),
    }
    return {field: value for field, value in reference.items() if value}
