"""The controller manager: the chosen controllers over one shared informer factory.

Invariant: informers are started and synced before any controller reconciles, so no
controller ever acts on a half-filled cache (a ReplicaSet controller that saw no pods yet
would create a second set of them).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Sequence

from podling.client.events import EventRecorder
from podling.client.http import ApiClient
from podling.client.informer import InformerFactory
from podling.controllers.base import Context, ControllerMetrics, ControllerOptions

log = logging.getLogger("podling.controllers")

# name -> "module:Class"; each class takes (context: Context) and has `async run(*, workers)`.
CONTROLLERS: dict[str, str] = {
    "replicaset": "podling.controllers.replicaset:ReplicaSetController",
    "replicationcontroller": "podling.controllers.replicaset:ReplicationControllerController",
    "deployment": "podling.controllers.deployment:DeploymentController",
    "endpoints": "podling.controllers.endpoints:EndpointsController",
    "nodelifecycle": "podling.controllers.nodelifecycle:NodeLifecycleController",
    "nodeipam": "podling.controllers.nodelifecycle:NodeIpamController",
    "namespace": "podling.controllers.namespace:NamespaceController",
    "garbagecollector": "podling.controllers.garbagecollector:GarbageCollector",
    "serviceaccount": "podling.controllers.serviceaccount:ServiceAccountController",
    "serviceaccount-token": "podling.controllers.serviceaccount:TokenController",
    "resourcequota": "podling.controllers.resourcequota:ResourceQuotaController",
}


def select(spec: str) -> list[str]:
    """``--controllers``: ``*`` for all, ``*,-name`` to leave one out, or a list of names."""
    chosen: list[str] = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        if item == "*":
            chosen += [name for name in CONTROLLERS if name not in chosen]
        elif item.startswith("-"):
            if item[1:] not in CONTROLLERS:
                raise ValueError(f"unknown controller {item[1:]!r} (known: {', '.join(CONTROLLERS)})")
            chosen = [name for name in chosen if name != item[1:]]
        elif item in CONTROLLERS:
            chosen.append(item)
        else:
            raise ValueError(f"unknown controller {item!r} (known: {', '.join(CONTROLLERS)})")
    return chosen


class ControllerManager:
    def __init__(self, *, api: ApiClient, options: ControllerOptions, controllers: Sequence[str],
                 workers: int = 5) -> None:
        self.informers = InformerFactory(api)
        self.metrics = ControllerMetrics()
        self.context = Context(api=api, informers=self.informers,
                               recorder=EventRecorder(api, component="controller-manager"),
                               metrics=self.metrics, options=options)
        self.workers = workers
        self.controllers = {}
        for name in controllers:
            module, _, cls = CONTROLLERS[name].partition(":")
            self.controllers[name] = getattr(importlib.import_module(module), cls)(self.context)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.informers.start()
        await self.informers.wait_synced()
        for name, controller in self.controllers.items():
            self._tasks.append(asyncio.get_running_loop().create_task(controller.run(workers=self.workers),
                                                                      name=f"controller {name}"))
        log.info("controller manager running: %s", ", ".join(self.controllers))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.informers.stop()
