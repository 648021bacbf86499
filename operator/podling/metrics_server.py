"""A plain-HTTP ``/metrics`` listener for components that have no server of their own.

The scheduler and the controller manager serve their registries here (one listener may serve
several registries, as ``podling up`` does); the API server and the kubelet serve ``/metrics``
on their own HTTPS ports. Invariant: a scrape renders each registry at that moment and
nothing else is served (every other path is 404).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class MetricsServer:
    def __init__(self, *, listen: str, registries: Sequence[CollectorRegistry]) -> None:
        self.listen = listen
        self.registries = list(registries)
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = b"".join(generate_latest(registry) for registry in self.registries)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", lambda request: web.Response(text="ok"))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, _, port = self.listen.rpartition(":")
        site = web.TCPSite(self._runner, host, int(port), reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
