"""userspace mode: a TCP listener per service address, relaying each connection to an endpoint.

What listens (all TCP; UDP and SCTP service ports are not proxied in this mode):

* every node port on all of the node's addresses (``0.0.0.0:NODEPORT``, so 127.0.0.1 too);
* every LoadBalancer ingress IP on the service port (the node's own address);
* every cluster IP on its port, when the service range is locally routed (see ``host``: it
  needs ``ip route``, not iptables). Then pods reach cluster IPs (ARP is answered, the
  listener owns the address) and so does the node. Without that route cluster IPs are not
  reachable in this mode: kube-proxy's userspace mode sent them to its listeners with
  iptables REDIRECT rules, which is what this mode does without.

Invariants:

* Each connection goes to one ready endpoint, chosen round-robin per service port; with
  sessionAffinity ClientIP a client address keeps its endpoint while it reconnects within
  timeoutSeconds of its last connection (and while that endpoint stays ready). A connect
  that fails moves on to the next endpoint; when none answers the client is reset.
* A sync changes listeners, not connections: endpoints are swapped in place (new
  connections see them), a listener whose service port is gone is closed, and connections
  already relayed carry on until either side ends them. Each direction's end (EOF) is passed
  on to the other side, so half-closed exchanges work.
* Flow control is end to end: when one side cannot keep up, reading from the other pauses.
  What a client sends before its endpoint answers is held for it (reading pauses past
  ``_EARLY_LIMIT``), whichever order the event loop reports the two connections in.
* Counters (connections, bytes each way per service) are plain integers read at scrape time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import socket
import struct
import time
from collections.abc import Iterable

from podling.proxy.model import Endpoint, ServicePort

log = logging.getLogger("podling.proxy.userspace")

_CONNECT_TIMEOUT = 5.0
_EARLY_LIMIT = 65536  # bytes a client may send before its endpoint answers, before reading pauses
_AFFINITY_PRUNE = 4096  # client entries before expired ones are swept


@dataclasses.dataclass(slots=True)
class Stats:
    connections: int = 0
    bytes_in: int = 0  # client -> endpoint
    bytes_out: int = 0  # endpoint -> client


class Balancer:
    """Endpoint choice for one service port: round-robin, with ClientIP affinity."""

    def __init__(self, port: ServicePort) -> None:
        self.port = port
        self._turn = itertools.count()
        self._clients: dict[str, tuple[Endpoint, float]] = {}  # client IP -> (endpoint, last use)

    def update(self, port: ServicePort) -> None:
        if port.affinity_seconds != self.port.affinity_seconds or not port.affinity_seconds:
            self._clients.clear()
        self.port = port

    def order(self, client_ip: str, *, now: float) -> list[Endpoint]:
        """Endpoints to try for a new connection, the chosen one first."""
        endpoints = self.port.endpoints
        if not endpoints:
            return []
        timeout = self.port.affinity_seconds
        chosen = None
        if timeout:
            sticky = self._clients.get(client_ip)
            if sticky is not None and now - sticky[1] <= timeout and sticky[0] in endpoints:
                chosen = sticky[0]
        if chosen is None:
            chosen = endpoints[next(self._turn) % len(endpoints)]
        if timeout:
            if len(self._clients) >= _AFFINITY_PRUNE:
                self._clients = {ip: seen for ip, seen in self._clients.items() if now - seen[1] <= timeout}
            self._clients[client_ip] = (chosen, now)
        return [chosen, *(e for e in endpoints if e != chosen)]

    def stick(self, client_ip: str, endpoint: Endpoint, *, now: float) -> None:
        """Remember the endpoint that answered (after a failover) for the client's affinity."""
        if self.port.affinity_seconds:
            self._clients[client_ip] = (endpoint, now)


class _Side(asyncio.Protocol):
    """One end of a relayed connection; ``peer`` is the other end."""

    def __init__(self, stats: Stats, *, inbound: bool) -> None:
        self.stats = stats
        self.inbound = inbound  # the client's side: what it reads goes toward the endpoint
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.eof = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.inbound:
            self.stats.bytes_in += len(data)
        else:
            self.stats.bytes_out += len(data)
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None or peer.transport is None or peer.eof:
            return False  # both directions ended: close
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            if exc is None:
                peer.transport.close()
            else:
                peer.transport.abort()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.resume_reading()


class _Client(_Side):
    """A connection accepted on a listener: pick an endpoint, connect, then relay. What the
    client sends before the endpoint answers waits here (reading pauses past _EARLY_LIMIT)."""

    def __init__(self, listener: _Listener) -> None:
        super().__init__(listener.stats(), inbound=True)
        self.listener = listener
        self._early: list[bytes] = []
        self._early_size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.stats.connections += 1
        peer = transport.get_extra_info("peername")
        self.listener.spawn(self._connect(peer[0] if peer else ""))

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            super().data_received(data)
            return
        self.stats.bytes_in += len(data)
        self._early.append(data)
        self._early_size += len(data)
        if self._early_size > _EARLY_LIMIT and self.transport is not None:
            self.transport.pause_reading()  # resumed by join()

    def eof_received(self) -> bool:
        if self.peer is not None:
            return super().eof_received()
        self.eof = True  # passed on by join()
        return True

    def join(self, backend: _Backend) -> None:
        """The endpoint answered: hand it what waited, then relay both ways."""
        assert self.transport is not None and backend.transport is not None
        self.peer = backend
        if self._early:
            backend.transport.writelines(self._early)
            if self._early_size > _EARLY_LIMIT:
                self.transport.resume_reading()
            self._early, self._early_size = [], 0
        if self.eof and backend.transport.can_write_eof():
            backend.transport.write_eof()

    async def _connect(self, client_ip: str) -> None:
        balancer = self.listener.balancer
        loop = asyncio.get_running_loop()
        for endpoint in balancer.order(client_ip, now=time.monotonic()):
            if self.closed:
                return
            backend = _Backend(self)
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT):  # (not wait_for: that costs a task per connection)
                    transport, _ = await loop.create_connection(lambda: backend, endpoint.ip, endpoint.port)
            except (OSError, TimeoutError) as err:
                log.debug("%s: endpoint %s did not answer: %s", balancer.port.key, endpoint, err)
                continue
            if self.closed:
                transport.close()
                return
            balancer.stick(client_ip, endpoint, now=time.monotonic())
            return
        if self.transport is not None and not self.closed:
            # No endpoint (answered): reset, as iptables mode's REJECT refuses. A linger of 0
            # makes the close an RST rather than a FIN, which the client would take for an answer.
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()


class _Backend(_Side):
    """The connection to the endpoint; once made, the client's bytes flow to it."""

    def __init__(self, client: _Client) -> None:
        super().__init__(client.stats, inbound=False)
        self.peer = client  # from the start: a server may speak first (a banner)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Here, not after create_connection returns: event loops differ in which comes first.
        super().connection_made(transport)
        assert isinstance(self.peer, _Client)
        if not self.peer.closed:
            self.peer.join(self)


class _Listener:
    """One listening socket for one service port at one address."""

    def __init__(self, *, balancer: Balancer, stats: dict[str, Stats]) -> None:
        self.balancer = balancer
        self._stats = stats
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def stats(self) -> Stats:
        return self._stats.setdefault(self.balancer.port.service, Stats())

    def spawn(self, coroutine: object) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def open(self, host: str, port: int) -> None:
        self.server = await asyncio.get_running_loop().create_server(
            lambda: _Client(self), host, port, reuse_address=True, backlog=1024)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


_Address = tuple[str, int]  # (host, port) a listener binds


class UserspaceProxy:
    def __init__(self, *, cluster_ips: bool) -> None:
        """``cluster_ips``: the service range is locally routed, so cluster IPs can be bound."""
        self.cluster_ips = cluster_ips
        self.stats: dict[str, Stats] = {}
        self._balancers: dict[str, Balancer] = {}
        self._listeners: dict[_Address, tuple[str, _Listener]] = {}  # address -> (port key, listener)
        self._failed: set[_Address] = set()  # logged once until it opens or is no longer wanted
        self._warned_protocols: set[str] = set()

    def listeners(self) -> list[_Address]:
        return sorted(self._listeners)

    def _addresses(self, port: ServicePort) -> list[_Address]:
        addresses = [(ip, port.port) for ip in port.load_balancer_ips]
        if port.node_port:
            addresses.append(("0.0.0.0", port.node_port))
        if port.cluster_ip and self.cluster_ips:
            addresses.append((port.cluster_ip, port.port))
        return addresses

    async def sync(self, ports: Iterable[ServicePort]) -> None:
        wanted: dict[_Address, ServicePort] = {}
        for port in ports:
            if port.protocol != "TCP":
                if port.key not in self._warned_protocols:
                    self._warned_protocols.add(port.key)
                    log.warning("%s: %s is not proxied in userspace mode (TCP only)", port.key, port.protocol)
                continue
            balancer = self._balancers.get(port.key)
            if balancer is None:
                self._balancers[port.key] = Balancer(port)
            else:
                balancer.update(port)
            for address in self._addresses(port):
                wanted.setdefault(address, port)
        for address in [a for a, (key, _) in self._listeners.items() if wanted.get(a, None) is None
                        or wanted[a].key != key]:
            self._listeners.pop(address)[1].close()
        live = {port.key for port in wanted.values()}
        for key in [k for k in self._balancers if k not in live]:
            del self._balancers[key]
        self._failed &= set(wanted)
        for address, port in wanted.items():
            if address in self._listeners:
                continue
            listener = _Listener(balancer=self._balancers[port.key], stats=self.stats)
            try:
                await listener.open(*address)
            except OSError as err:
                if address not in self._failed:
                    self._failed.add(address)
                    log.warning("%s: cannot listen on %s:%d: %s", port.key, *address, err)
                continue
            self._failed.discard(address)
            self._listeners[address] = (port.key, listener)
            log.info("%s: listening on %s:%d", port.key, *address)

    async def close(self) -> None:
        for _, listener in self._listeners.values():
            listener.close()
        self._listeners.clear()
