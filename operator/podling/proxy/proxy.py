"""The proxy component: Services and Endpoints in, the node's rules (or listeners) out.

Invariants:

* Level-triggered and whole: a sync renders every proxied service port from the informer
  caches and programs all of it (one iptables-restore, or one listener pass), so it is safe
  to run any number of times and repairs whatever drifted (a periodic resync runs every
  ``sync_period``). Event handlers only enqueue the one key ``sync`` on a work queue, after
  ``debounce`` seconds: a burst of changes is one sync, two syncs never overlap, a change
  during a sync causes one more, a failed sync is retried with the queue's backoff.
* Bounded frequency, as kube-proxy's ``minSyncPeriod``: two syncs may run back to back, then
  at most one per ``min_sync_period``. A lone change is programmed within ``debounce`` plus
  the sync's own time (tens of milliseconds); under churn (hundreds of Services applied at
  once) the proxy does not spend the machine rewriting its rules.
* Nothing is programmed before the caches are synced (a half-filled cache would drop live
  services), and ``start`` returns after the first sync, so "ready" means programmed.
* ``stop`` removes what this proxy programmed (every chain of its tag and the jumps to
  them, or its listeners) and releases the machine's shared settings (see ``host``).
* LoadBalancer Services get ``status.loadBalancer.ingress`` = the Ready nodes' addresses
  (k3s's built-in service load balancer does the same), written through the status
  subresource by a second queue keyed by Service; every node's proxy computes the same
  answer, so they agree. A Service with ``spec.loadBalancerClass`` belongs to another
  implementation and is left alone.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import subprocess
import time
from typing import Literal

from podling.api import meta
from podling.api.resources import find
from podling.client.events import EventRecorder
from podling.client.http import ApiClient
from podling.client.informer import InformerFactory, Obj
from podling.client.workqueue import WorkQueue, run_workers
from podling.proxy import iptables as ipt
from podling.proxy.host import AlreadyRunning, HostError, HostNetwork
from podling.proxy.metrics import ProxyMetrics
from podling.proxy.model import ServicePort, node_ingress_ips, service_ports
from podling.proxy.userspace import UserspaceProxy

log = logging.getLogger("podling.proxy")

SERVICES = find(group="", version="v1", plural="services")
ENDPOINTS = find(group="", version="v1", plural="endpoints")
NODES = find(group="", version="v1", plural="nodes")
assert SERVICES is not None and ENDPOINTS is not None and NODES is not None

Mode = Literal["iptables", "userspace"]
_SYNC = "sync"  # the one key of the rules queue
_STOP_GRACE = 10.0  # seconds a sync under way at shutdown may take to finish


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    node_name: str
    mode: Mode = "iptables"
    service_cidr: str = "10.88.128.0/17"
    cluster_cidr: str = "10.88.0.0/17"  # the pods' addresses
    masquerade_bit: int = 14
    sync_period: float = 30.0  # full resync, repairing drift
    min_sync_period: float = 1.0  # after a burst of two syncs, at most one per this many seconds
    debounce: float = 0.02  # seconds a change waits for more before the sync


def settings_for(config: ProxyConfig) -> ipt.Settings:
    return ipt.Settings(tag=ipt.tag_for(config.node_name), cluster_cidr=config.cluster_cidr,
                        masquerade_mark=1 << config.masquerade_bit)


class Proxy:
    def __init__(self, *, api: ApiClient, config: ProxyConfig) -> None:
        self.api = api
        self.config = config
        self.settings = settings_for(config)
        self.mode: Mode = config.mode
        self.informers = InformerFactory(api)
        self.services = self.informers.informer(SERVICES)
        self.endpoints = self.informers.informer(ENDPOINTS)
        self.nodes = self.informers.informer(NODES)
        self.queue = WorkQueue(name="proxy-rules")
        self.lb_queue = WorkQueue(name="proxy-loadbalancer")
        self.recorder = EventRecorder(api, component="podling-proxy", host=config.node_name)
        self.metrics = ProxyMetrics(endpoints=self._endpoint_counts, rules=lambda: self._rules,
                                    listeners=self._listener_count, connections=self._connections,
                                    traffic=self._traffic)
        self.host: HostNetwork | None = None
        self._iptables: ipt.Iptables | None = None
        self._userspace: UserspaceProxy | None = None
        self._synced: list[ServicePort] = []
        self._rules: dict[str, int] = {}
        self._sep_services: dict[str, str] = {}  # SEP chain -> service, for the connection counters
        self._carried: dict[str, int] = {}  # connections counted by rules a rebuild has since reset
        self._last_connections: dict[str, int] = {}
        self._syncing = False
        self._sync_budget = SyncBudget(burst=2, period=config.min_sync_period)
        self._sync_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self.mode == "iptables":
            try:
                self._iptables = ipt.Iptables.find()
                await self._iptables.check()
            except ipt.IptablesError as err:
                log.warning("iptables is not usable (%s): running in userspace mode instead", err)
                self.mode, self._iptables = "userspace", None
        else:
            await self._remove_leftover_rules()
        self.host = HostNetwork(tag=self.settings.tag, service_cidr=self.config.service_cidr,
                                cluster_cidr=self.config.cluster_cidr, route_localnet=self.mode == "iptables")
        try:
            await asyncio.to_thread(self.host.acquire)
        except AlreadyRunning:
            raise
        except HostError as err:
            if self.mode == "iptables":
                raise
            log.warning("%s: cluster IPs are not reachable in userspace mode (node ports are)", err)
        if self.mode == "userspace":
            self._userspace = UserspaceProxy(cluster_ips=self.host.route)
        try:
            await self._start_syncing()
        except BaseException:
            await self.stop()  # nothing half-programmed stays behind
            raise
        where = f"chains {self.settings.prefix}*" if self.mode == "iptables" else \
            f"listeners ({'cluster IPs and ' if self._userspace and self._userspace.cluster_ips else ''}node ports)"
        log.info("proxy ready: mode %s, node %s, %s", self.mode, self.config.node_name, where)

    async def _start_syncing(self) -> None:
        self.services.add_handlers(on_add=self._service_changed, on_update=lambda old, new: self._service_changed(new),
                                   on_delete=lambda obj: self._changed())
        self.endpoints.add_handlers(on_add=lambda obj: self._changed(), on_update=lambda old, new: self._changed(),
                                    on_delete=lambda obj: self._changed())
        self.nodes.add_handlers(on_add=self._nodes_changed, on_update=lambda old, new: self._nodes_changed(new),
                                on_delete=self._nodes_changed)
        self.informers.start()
        await self.informers.wait_synced()
        await self.sync()
        loop = asyncio.get_running_loop()
        self._sync_task = loop.create_task(run_workers(self.queue, self._reconcile_rules), name="proxy sync")
        self._tasks = [loop.create_task(run_workers(self.lb_queue, self._reconcile_load_balancer, workers=2),
                                        name="proxy load balancer status"),
                       loop.create_task(self._resync(), name="proxy resync")]

    async def stop(self) -> None:
        self.queue.shutdown()
        self.lb_queue.shutdown()
        for task in self._tasks:
            task.cancel()
        if self._sync_task is not None:  # a sync under way finishes (shut down, the queue hands out what is pending)
            try:
                await asyncio.wait_for(self._sync_task, _STOP_GRACE)
            except Exception as err:  # (wait_for cancels it on timeout)
                log.warning("the last sync did not end cleanly: %s", err or type(err).__name__)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.informers.stop()
        try:
            if self._iptables is not None:
                removed = await remove_rules(self._iptables, self.settings)
                log.info("proxy stopped: removed %d rules and every %s* chain", removed, self.settings.prefix)
            if self._userspace is not None:
                await self._userspace.close()
                log.info("proxy stopped: listeners closed")
        finally:
            if self.host is not None:
                await asyncio.to_thread(self.host.release)

    async def _remove_leftover_rules(self) -> None:
        """userspace mode: remove rules an iptables-mode run of this node left (if iptables works)."""
        try:
            iptables = ipt.Iptables.find()
            removed = await remove_rules(iptables, self.settings)
        except ipt.IptablesError:
            return
        if removed:
            log.info("removed %d iptables rules left by an earlier iptables-mode proxy of this node", removed)

    # ---- events -> keys ------------------------------------------------------------------

    def _changed(self) -> None:
        self.queue.add_after(_SYNC, self.config.debounce)

    def _service_changed(self, service: Obj) -> None:
        self._changed()
        spec = service.get("spec") or {}
        if spec.get("type") == "LoadBalancer" or ((service.get("status") or {}).get("loadBalancer") or {}).get(
                "ingress"):
            self.lb_queue.add(meta.object_key(service))

    def _nodes_changed(self, node: Obj) -> None:
        for service in self.services.list():
            if (service.get("spec") or {}).get("type") == "LoadBalancer":
                self.lb_queue.add(meta.object_key(service))

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.config.sync_period)
            self.queue.add(_SYNC)

    # ---- the sync ------------------------------------------------------------------------

    def ports(self) -> list[ServicePort]:
        """Every proxied service port, from the caches."""
        ports: list[ServicePort] = []
        for service in self.services.list():
            ports += service_ports(service, self.endpoints.get(meta.object_key(service)))
        return ports

    async def _reconcile_rules(self, key: str) -> None:
        if (wait := self._sync_budget.reserve()) > 0:
            await asyncio.sleep(wait)  # changes meanwhile are in this sync (and cause one more)
        await self.sync()

    async def sync(self) -> None:
        ports = self.ports()
        started = time.perf_counter()
        if self._iptables is not None:
            await self._sync_iptables(ports)
        elif self._userspace is not None:
            await self._userspace.sync(ports)
        elapsed = time.perf_counter() - started
        self.metrics.sync_duration.observe(elapsed)
        self._synced = ports
        log.debug("synced %d service ports in %.1f ms", len(ports), elapsed * 1000)

    async def _sync_iptables(self, ports: list[ServicePort]) -> None:
        assert self._iptables is not None and self.host is not None
        self._syncing = True
        try:
            current = await self._iptables.save()
            counted = ipt.connections(current.get("nat") or ipt.Saved(), self._sep_services)
            ruleset = ipt.render(ports, self.settings)
            await self._iptables.restore(ipt.restore_input(ruleset, current, self.settings))
            for service, count in counted.items():
                self._carried[service] = self._carried.get(service, 0) + count
            self._sep_services = ruleset.sep_services
            jumps = {table: sum(1 for jump in ipt.JUMPS if jump[0] == table) for table in ipt.TABLES}
            self._rules = {table: count + jumps[table] for table, count in ruleset.rule_count().items()}
        finally:
            self._syncing = False
        await asyncio.to_thread(self.host.set_hairpin)

    # ---- LoadBalancer status -------------------------------------------------------------

    async def _reconcile_load_balancer(self, key: str) -> None:
        service = self.services.get(key)
        if service is None:
            return
        spec = service.get("spec") or {}
        if spec.get("loadBalancerClass"):
            return
        current = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        desired = [{"ip": ip} for ip in node_ingress_ips(self.nodes.list())] if spec.get("type") == "LoadBalancer" \
            else []
        if current == desired:
            return
        body = copy.deepcopy(service)
        body.setdefault("status", {})["loadBalancer"] = {"ingress": desired} if desired else {}
        await self.api.update_status(SERVICES, body)
        if desired:
            await self.recorder.event(service, type="Normal", reason="EnsuredLoadBalancer",
                                      message=f"Ensured load balancer: {', '.join(i['ip'] for i in desired)}")

    # ---- metrics -------------------------------------------------------------------------

    def _endpoint_counts(self) -> dict[str, int]:
        addresses: dict[str, set[str]] = {}
        for port in self._synced:
            addresses.setdefault(port.service, set()).update(e.ip for e in port.endpoints)
        return {service: len(ips) for service, ips in addresses.items()}

    def _listener_count(self) -> int | None:
        return len(self._userspace.listeners()) if self._userspace is not None else None

    def _connections(self) -> dict[str, int]:
        if self._userspace is not None:
            return {service: stats.connections for service, stats in self._userspace.stats.items()}
        if self._iptables is None or self._syncing:
            return self._last_connections
        try:
            text = subprocess.run([self._iptables.save_path, "-c", "-t", "nat"], capture_output=True, text=True,
                                  timeout=5, check=True).stdout
        except (OSError, subprocess.SubprocessError) as err:
            log.warning("cannot read the iptables counters: %s", err)
            return self._last_connections
        counted = ipt.connections(ipt.parse_save(text).get("nat") or ipt.Saved(), self._sep_services)
        total = dict(self._carried)
        for service, count in counted.items():
            total[service] = total.get(service, 0) + count
        self._last_connections = total
        return total

    def _traffic(self) -> dict[str, tuple[int, int]]:
        if self._userspace is None:
            return {}
        return {service: (stats.bytes_in, stats.bytes_out) for service, stats in self._userspace.stats.items()}


class SyncBudget:
    """A token bucket: ``burst`` syncs at once, then one per ``period`` seconds."""

    def __init__(self, *, burst: int, period: float) -> None:
        if period <= 0:
            raise ValueError(f"min_sync_period must be positive, not {period}")
        self.burst = burst
        self.period = period
        self._tokens = float(burst)
        self._last = time.monotonic()

    def reserve(self) -> float:
        """Take a token; the seconds to wait until it is really there."""
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) / self.period)
        self._last = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens * self.period


async def remove_rules(iptables: ipt.Iptables, settings: ipt.Settings) -> int:
    """Remove every chain of ``settings.tag`` and the jumps to them; how many rules there were."""
    current = await iptables.save()
    count = ipt.count_rules(current, settings)
    await iptables.restore(ipt.cleanup_input(current, settings))
    return count


async def cleanup(config: ProxyConfig) -> int:
    """``podling proxy --cleanup``: what a killed proxy of this node left behind, removed."""
    settings = settings_for(config)
    removed = 0
    try:
        removed = await remove_rules(ipt.Iptables.find(), settings)
    except ipt.IptablesError as err:
        log.warning("iptables: %s", err)
    host = HostNetwork(tag=settings.tag, service_cidr=config.service_cidr, cluster_cidr=config.cluster_cidr,
                       route_localnet=False)
    await asyncio.to_thread(host.cleanup)
    return removed
