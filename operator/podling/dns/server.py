"""``podling dns``: the cluster DNS server, over UDP and TCP, answering from the API's Services.

Invariants:

* Answers come only from informer caches of Services and Endpoints (:class:`Zone`): a query
  costs no API request, and nothing is ever forwarded, so no query leaves the machine (names
  outside the cluster domain are REFUSED). Nothing is served before both caches have synced.
* Each ``--dns-listen`` address is served on UDP and TCP on one port. An address that cannot
  be bound yet (the bridge gateway 10.88.0.1 exists only once Docker has made the
  ``podling`` network; a port in use) is tried again every second, logged once per new error.
* Messages are answered as ``wire`` says (UDP replies within the client's size, else
  truncated). A TCP connection carries any number of length-prefixed queries until it is
  idle for 10 s.
* It keeps the Service ``kube-system/kube-dns`` (ClusterIP ``--cluster-dns``, ports ``dns``
  53/UDP and ``dns-tcp`` 53/TCP, no selector) and its Endpoints (the first listen address)
  as they should be: one key, reconciled on every change to either object, retried with
  the work queue's backoff, so pods reach this server through the ClusterIP once the proxy
  programs it.
* Metrics: ``podling_dns_queries_total{result,type}`` (result is the reply's rcode, type
  the query's type, ``other`` for rare ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter

from podling.api import meta
from podling.api.resources import Resource, find
from podling.client.http import ApiClient, ApiError, is_already_exists
from podling.client.informer import Informer, Obj
from podling.client.workqueue import WorkQueue, run_workers
from podling.dns import wire
from podling.dns.zone import Zone

log = logging.getLogger("podling.dns")

_SERVICES = find(group="", version="v1", plural="services")
_ENDPOINTS = find(group="", version="v1", plural="endpoints")
assert _SERVICES is not None and _ENDPOINTS is not None

DNS_NAMESPACE, DNS_SERVICE = "kube-system", "kube-dns"
_KEY = f"{DNS_NAMESPACE}/{DNS_SERVICE}"
_BIND_RETRY = 1.0  # seconds between attempts to bind an address that is not there yet
_TCP_IDLE = 10.0  # seconds a TCP connection may wait for its next query


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DNSConfig:
    listen: tuple[str, ...] = ("10.88.0.1:53",)  # HOST:PORT, UDP and TCP; the first is kube-dns's endpoint
    domain: str = "cluster.local"
    service_ip: str = "10.88.128.10"  # kube-system/kube-dns's ClusterIP, where pods' resolv.conf points


class DNSMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.queries = Counter("podling_dns_queries", "DNS queries answered, by result (rcode) and query type.",
                               ["result", "type"], registry=self.registry)


class ClusterDNS:
    def __init__(self, *, api: ApiClient, config: DNSConfig) -> None:
        self.api = api
        self.config = config
        self.metrics = DNSMetrics()
        self.services = Informer(api, _SERVICES)
        self.endpoints = Informer(api, _ENDPOINTS)
        self.zone = Zone(domain=config.domain, services=self.services, endpoints=self.endpoints)
        self.addresses: list[str] = []  # HOST:PORT actually served, in the order they were bound
        self._queue = WorkQueue(name="kube-dns")
        self._tasks: list[asyncio.Task[Any]] = []
        self._transports: list[asyncio.DatagramTransport] = []
        self._servers: list[asyncio.Server] = []
        for informer in (self.services, self.endpoints):
            informer.add_handlers(on_add=self._changed, on_update=lambda old, new: self._changed(new),
                                  on_delete=self._changed)

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        spawn = asyncio.get_running_loop().create_task
        self._tasks = [spawn(self.services.run(), name="dns services informer"),
                       spawn(self.endpoints.run(), name="dns endpoints informer")]
        await self.services.wait_synced()
        await self.endpoints.wait_synced()
        self._tasks.append(spawn(run_workers(self._queue, self._reconcile), name="dns kube-dns service"))
        self._queue.add(_KEY)
        self._tasks += [spawn(self._listen(address), name=f"dns listen {address}") for address in self.config.listen]
        log.info("cluster dns ready: %s on %s, kube-dns at %s", self.config.domain, ", ".join(self.config.listen),
                 self.config.service_ip)

    async def stop(self) -> None:
        self.services.stop()
        self.endpoints.stop()
        self._queue.shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for transport in self._transports:
            transport.close()
        for server in self._servers:
            server.close()
            await server.wait_closed()

    # ---- listening ---------------------------------------------------------------------

    async def _listen(self, address: str) -> None:
        host, _, port_text = address.rpartition(":")
        loop = asyncio.get_running_loop()
        last_error = ""
        while True:
            transport: asyncio.DatagramTransport | None = None
            try:
                transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self),
                                                                   local_addr=(host, int(port_text)))
                port = transport.get_extra_info("sockname")[1]
                server = await asyncio.start_server(self._serve_stream, host, port, reuse_address=True)
                break
            except OSError as err:
                if transport is not None:
                    transport.close()
                if str(err) != last_error:
                    log.warning("dns cannot listen on %s yet (%s); trying again every %.0fs", address, err, _BIND_RETRY)
                    last_error = str(err)
                await asyncio.sleep(_BIND_RETRY)
        self._transports.append(transport)
        self._servers.append(server)
        self.addresses.append(f"{host}:{port}")
        log.info("dns serving on %s:%d (udp+tcp)", host, port)

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), _TCP_IDLE), "big")
                reply = self.respond(await asyncio.wait_for(reader.readexactly(size), _TCP_IDLE), udp=False)
                if reply is None:
                    return
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def respond(self, data: bytes, *, udp: bool) -> bytes | None:
        """The reply to one message (None: nothing to send), counted in the metrics."""
        reply = wire.respond(data, zone=self.zone, udp=udp)
        self.metrics.queries.labels(reply.result, reply.qtype).inc()
        return reply.data

    # ---- the kube-dns Service and Endpoints -----------------------------------------------

    def _changed(self, obj: Obj) -> None:
        if meta.object_key(obj) == _KEY:
            self._queue.add(_KEY)

    def _endpoint(self) -> tuple[str, int]:
        """Where kube-dns's Endpoints point: the first listen address."""
        host, _, port = self.config.listen[0].rpartition(":")
        return host, int(port)

    def desired_service(self) -> Obj:
        _, port = self._endpoint()
        ip = self.config.service_ip
        return {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": DNS_SERVICE, "namespace": DNS_NAMESPACE,
                         "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                                    "kubernetes.io/name": "podling-dns"}},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port},
            ]},
        }

    def desired_subsets(self) -> list[Obj]:
        host, port = self._endpoint()
        return [{"addresses": [{"ip": host}], "ports": [{"name": "dns", "port": port, "protocol": "UDP"},
                                                         {"name": "dns-tcp", "port": port, "protocol": "TCP"}]}]

    async def _reconcile(self, key: str) -> None:
        want = self.desired_service()
        service = self.services.get(key)
        if service is None:
            await self._create(_SERVICES, want)
        elif (service.get("spec") or {}).get("clusterIP") != self.config.service_ip:
            log.warning("Service %s has clusterIP %s, not %s: deleting it to make it again", key,
                        (service.get("spec") or {}).get("clusterIP"), self.config.service_ip)
            try:
                await self.api.delete(_SERVICES, namespace=DNS_NAMESPACE, name=DNS_SERVICE,
                                      preconditions={"uid": service["metadata"]["uid"]})
            except ApiError as err:
                if err.code not in (404, 409):  # gone already, or another one now: its event brings us back
                    raise
            return
        elif _service_view(service) != _service_view(want):
            await self.api.patch(_SERVICES, namespace=DNS_NAMESPACE, name=DNS_SERVICE,
                                 body={"spec": {"type": "ClusterIP", "selector": None, "ports": want["spec"]["ports"]}})
        endpoints = self.endpoints.get(key)
        subsets = self.desired_subsets()
        if endpoints is None:
            await self._create(_ENDPOINTS, {"apiVersion": "v1", "kind": "Endpoints",
                                            "metadata": {"name": DNS_SERVICE, "namespace": DNS_NAMESPACE,
                                                         "labels": dict(want["metadata"]["labels"])},
                                            "subsets": subsets})
        elif endpoints.get("subsets") != subsets:
            updated = copy.deepcopy(endpoints)
            updated["subsets"] = subsets
            await self.api.update(_ENDPOINTS, updated)

    async def _create(self, resource: Resource, obj: Obj) -> None:
        try:
            await self.api.create(resource, obj)
        except ApiError as err:
            if not is_already_exists(err):  # already there: its event reconciles again
                raise


def _service_view(service: Obj) -> tuple[Any, ...]:
    """What of kube-dns's Service this server insists on."""
    spec = service.get("spec") or {}
    ports = tuple((p.get("name"), p.get("port"), p.get("protocol") or "TCP", p.get("targetPort"))
                  for p in spec.get("ports") or ())
    return spec.get("type") or "ClusterIP", bool(spec.get("selector")), ports


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, dns: ClusterDNS) -> None:
        self._dns = dns
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self._dns.respond(data, udp=True)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)
