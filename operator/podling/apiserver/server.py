"""Running the API server: open the store, bootstrap, serve, compact, shut down cleanly.

Invariants: the built-in namespaces (default, kube-system, kube-public, kube-node-lease)
exist whenever the server answers; history older than ``compaction_interval`` (5 minutes,
as kube-apiserver) is compacted away in the background; ``stop()`` closes the listener,
every watch, the admission caches and the store, in that order.

Service account tokens are verified with the RSA keys of ``service_account_key_file``
(public or private keys, or certificates, as kube-apiserver's ``--service-account-key-file``),
else with ``DATA_DIR/pki/sa.pub``, the pair ``DATA_DIR/pki/sa.key`` made on first start for
the controller manager to sign with.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path

from aiohttp import web

from podling.api import errors, tokens
from podling.api.resources import RESOURCES, find
from podling.apiserver import pki
from podling.apiserver.admission import Chain, default_chain
from podling.apiserver.allocator import DEFAULT_CLUSTER_IP_RANGE, DEFAULT_NODE_PORT_RANGE, ServiceRanges
from podling.apiserver.app import ApiServer
from podling.apiserver.auth import Authenticator, ServiceAccountTokens, TokenFile
from podling.apiserver.metrics import ApiserverMetrics, InstrumentedStore
from podling.apiserver.objectcache import Caches
from podling.apiserver.storage import Storage
from podling.store.base import Store, open_store

log = logging.getLogger("podling.apiserver")

BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    listen: str = "127.0.0.1:6443"
    store: str = "sqlite"
    data_dir: Path | None = None
    token_file: Path | None = None
    tls_cert: Path | None = None  # None: plain HTTP (kubectl will not send tokens over it)
    tls_key: Path | None = None
    service_account_key_file: Path | None = None  # None: DATA_DIR/pki/sa.pub (made with sa.key if missing)
    compaction_interval: float = 300.0
    count_interval: float = 30.0
    service_cluster_ip_range: str = DEFAULT_CLUSTER_IP_RANGE  # where Services' clusterIPs come from
    service_node_port_range: str = DEFAULT_NODE_PORT_RANGE  # where their nodePorts come from


class RunningApiserver:
    """An API server serving on ``url`` until ``stop()``."""

    def __init__(self, *, config: Config) -> None:
        self.config = config
        self.metrics = ApiserverMetrics()
        self.url = ""
        self._store: Store | None = None
        self._caches: Caches | None = None
        self._admission: Chain | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        config = self.config
        raw = await open_store(config.store, data_dir=str(config.data_dir) if config.data_dir else None)
        self._store = InstrumentedStore(store=raw, metrics=self.metrics)
        self._caches = Caches.over(self._store)
        await self._caches.start()
        self._admission = default_chain(store=self._store, caches=self._caches, service_ranges=ServiceRanges(
            cluster_ip_range=config.service_cluster_ip_range, node_port_range=config.service_node_port_range))
        await self._admission.start()
        storage = Storage(store=self._store, admission=self._admission)
        await _bootstrap(storage)
        key_file = config.service_account_key_file
        if key_file is None and config.data_dir is not None:
            _, key_file = pki.ensure_service_account_key(config.data_dir / "pki")
        server = ApiServer(storage=storage, metrics=self.metrics,
                           tokens=self._authenticator(self._caches, key_file=key_file))
        self._runner = web.AppRunner(server.application(), handler_cancellation=True, access_log=None)
        await self._runner.setup()
        host, _, port = config.listen.rpartition(":")
        ssl_context = None
        if config.tls_cert and config.tls_key:
            ssl_context = pki.server_context(cert=config.tls_cert, key=config.tls_key)
        site = web.TCPSite(self._runner, host or "127.0.0.1", int(port), reuse_address=True,
                           ssl_context=ssl_context)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://{host or '127.0.0.1'}:{bound_port}"
        self._tasks = [
            asyncio.create_task(self._compact_forever(), name="compaction"),
            asyncio.create_task(self._count_forever(), name="object-counts"),
        ]
        log.info("apiserver serving on %s (store %s)", self.url, config.store)

    def _authenticator(self, caches: Caches, *, key_file: Path | None) -> Authenticator | None:
        """Token file users and service accounts; None (no authentication) without a token file."""
        if self.config.token_file is None:
            return None
        service_accounts = None
        if key_file is not None:
            service_accounts = ServiceAccountTokens(keys=tokens.load_public_keys(key_file),
                                                    service_accounts=caches.service_accounts,
                                                    secrets=caches.token_secrets)
        return Authenticator(token_file=TokenFile.load(self.config.token_file), service_accounts=service_accounts)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._admission is not None:
            await self._admission.stop()
        if self._caches is not None:
            await self._caches.stop()
        if self._store is not None:
            await self._store.close()

    async def _compact_forever(self) -> None:
        """Every interval, compact to the revision that was current one interval ago."""
        assert self._store is not None
        previous = 0
        while True:
            await asyncio.sleep(self.config.compaction_interval)
            with contextlib.suppress(Exception):
                if previous:
                    await self._store.compact(previous)
                previous = await self._store.current_revision()

    async def _count_forever(self) -> None:
        assert self._store is not None
        while True:
            for resource in RESOURCES:
                with contextlib.suppress(Exception):
                    items, _, _ = await self._store.list(resource.key_prefix())
                    self.metrics.objects.labels(resource.plural).set(len(items))
            await asyncio.sleep(self.config.count_interval)


async def _bootstrap(storage: Storage) -> None:
    namespaces = find(group="", version="v1", plural="namespaces")
    assert namespaces is not None
    for name in BUILTIN_NAMESPACES:
        try:
            await storage.create(namespaces, namespace=None, obj={"metadata": {"name": name}})
        except errors.StatusError as err:
            if err.code != 409:
                raise
