"""Service ClusterIP and NodePort allocation: the bitmaps, and the admission plugin on a real store.

The admission tests run the API server's real chain and storage over a SQLite store; each
request runs in a task of its own, as requests do, so reservations settle as they would.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from podling.api import errors
from podling.api.resources import find
from podling.apiserver.admission import Chain, default_chain
from podling.apiserver.allocator import (Bitmap, ServiceAllocator, ServiceRanges, parse_cluster_ip_range,
                                         parse_node_port_range)
from podling.apiserver.objectcache import Caches
from podling.apiserver.storage import Storage
from podling.store.sqlite import SqliteStore

SERVICES = find(group="", version="v1", plural="services")
NAMESPACES = find(group="", version="v1", plural="namespaces")
assert SERVICES is not None and NAMESPACES is not None
NS = "default"


# ---- bitmaps and ranges ----------------------------------------------------------------------------


def test_picks_prefer_the_upper_band_then_fill_the_lower_one() -> None:
    bitmap = Bitmap(size=20, static_band=16)
    rng = random.Random(7)
    picked = []
    while (offset := bitmap.pick(rng)) is not None:
        bitmap.hold(offset)
        picked.append(offset)
    assert sorted(picked[:4]) == [16, 17, 18, 19] and sorted(picked[4:]) == list(range(16))
    assert bitmap.used == 20


def test_a_number_held_twice_is_free_only_after_both_release_it() -> None:
    bitmap = Bitmap(size=4, static_band=0)
    bitmap.hold(2)
    bitmap.hold(2)
    bitmap.release(2)
    assert not bitmap.is_free(2)
    bitmap.release(2)
    assert bitmap.is_free(2) and bitmap.used == 0


def test_ranges_are_checked() -> None:
    assert parse_cluster_ip_range("10.88.128.0/17") == ipaddress.IPv4Network("10.88.128.0/17")
    assert parse_node_port_range("30000-32767") == range(30000, 32768)
    for bad in ("10.88.128.1/17", "10.0.0.0/31", "fd00::/112", "nonsense"):
        with pytest.raises(ValueError):
            parse_cluster_ip_range(bad)
    for bad in ("32767-30000", "0-10", "30000-70000", "a-b"):
        with pytest.raises(ValueError):
            parse_node_port_range(bad)


# ---- admission on a real store --------------------------------------------------------------------


class Server:
    """The API server's storage and admission chain over one SQLite file, restartable."""

    def __init__(self, path: Path, ranges: ServiceRanges) -> None:
        self.path = path
        self.ranges = ranges
        self.store: SqliteStore | None = None
        self.caches: Caches | None = None
        self.chain: Chain | None = None
        self.storage: Storage | None = None

    @property
    def allocator(self) -> ServiceAllocator:
        assert self.chain is not None
        return next(p for p in self.chain.plugins if isinstance(p, ServiceAllocator))

    async def start(self) -> Server:
        self.store = await SqliteStore.open(path=str(self.path))
        self.caches = Caches.over(self.store)
        await self.caches.start()
        self.chain = default_chain(store=self.store, caches=self.caches, service_ranges=self.ranges)
        await self.chain.start()
        self.storage = Storage(store=self.store, admission=self.chain)
        try:
            await self.storage.create(NAMESPACES, namespace=None, obj={"metadata": {"name": NS}})
        except errors.StatusError as err:
            assert err.code == 409
        return self

    async def stop(self) -> None:
        assert self.chain is not None and self.caches is not None and self.store is not None
        await self.chain.stop()
        await self.caches.stop()
        await self.store.close()

    async def create(self, name: str, *, dry_run: bool = False, **spec: Any) -> dict:
        """A Service create in a task of its own, as each request is."""
        assert self.storage is not None
        obj, _ = await asyncio.create_task(self.storage.create(
            SERVICES, namespace=NS, obj=service(name, **spec), dry_run=dry_run))
        return obj

    async def update(self, name: str, mutate: Callable[[dict], None]) -> dict:
        assert self.storage is not None
        current = await self.storage.get(SERVICES, namespace=NS, name=name)
        mutate(current)
        obj, _ = await asyncio.create_task(self.storage.update(SERVICES, namespace=NS, name=name, obj=current))
        return obj

    async def delete(self, name: str) -> None:
        assert self.storage is not None
        await asyncio.create_task(self.storage.delete(SERVICES, namespace=NS, name=name, options={}))

    async def settled(self) -> None:
        """Wait until every reservation has settled and the watch has caught up with the store."""
        allocator = self.allocator
        assert self.store is not None
        for _ in range(300):
            await asyncio.sleep(0.01)
            if not allocator._settling and not allocator._awaiting \
                    and allocator._revision >= await self.store.current_revision():
                return
        raise AssertionError("the allocator did not settle within 3s")


def service(name: str, *, ports: list[dict] | None = None, **spec: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": ports if ports is not None else [{"name": "http", "port": 80}], **spec}}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    started = await Server(tmp_path / "podling.db", ServiceRanges()).start()
    try:
        yield started
    finally:
        await started.stop()


async def refused(call: Any) -> errors.StatusError:
    with pytest.raises(errors.StatusError) as caught:
        await call
    return caught.value


async def test_cluster_ips_come_from_the_upper_band_of_the_range(server: Server) -> None:
    created = [await server.create(f"web{i}") for i in range(20)]
    ips = [s["spec"]["clusterIP"] for s in created]
    assert len(set(ips)) == 20
    for s, ip in zip(created, ips):
        assert s["spec"]["clusterIPs"] == [ip]
        address = ipaddress.IPv4Address(ip)
        assert ipaddress.IPv4Address("10.88.129.1") <= address <= ipaddress.IPv4Address("10.88.255.254")


async def test_a_chosen_cluster_ip_is_honoured_once_and_refused_when_taken_or_out_of_range(server: Server) -> None:
    dns = await server.create("kube-dns", clusterIP="10.88.128.10")
    assert dns["spec"]["clusterIP"] == "10.88.128.10" and dns["spec"]["clusterIPs"] == ["10.88.128.10"]
    taken = await refused(server.create("again", clusterIP="10.88.128.10"))
    assert taken.code == 422 and taken.message == (
        'Service "again" is invalid: spec.clusterIPs: Invalid value: []string{"10.88.128.10"}: failed to allocate '
        "IP 10.88.128.10: provided IP is already allocated")
    outside = await refused(server.create("outside", clusterIP="10.0.0.1"))
    assert outside.code == 422 and outside.message == (
        'Service "outside" is invalid: spec.clusterIPs: Invalid value: []string{"10.0.0.1"}: failed to allocate '
        "IP 10.0.0.1: provided IP is not in the valid range. The range of valid IPs is 10.88.128.0/17")
    broadcast = await refused(server.create("broadcast", clusterIP="10.88.255.255"))
    assert "not in the valid range" in broadcast.message


async def test_headless_services_keep_none_and_hold_nothing(server: Server) -> None:
    headless = await server.create("db", clusterIP="None")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["clusterIPs"] == ["None"]
    await server.settled()
    assert server.allocator.ips.bitmap.used == 0
    nodeport = await refused(server.create("np", type="NodePort", clusterIP="None"))
    assert nodeport.message.endswith("spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for "
                                     "NodePort services")


async def test_node_ports_are_allocated_shared_by_protocols_and_checked(server: Server) -> None:
    web = await server.create("web", type="NodePort", ports=[{"name": "http", "port": 80},
                                                              {"name": "dns", "port": 53, "protocol": "UDP"},
                                                              {"name": "dns-tcp", "port": 53, "protocol": "TCP"}])
    http, dns, dns_tcp = (p["nodePort"] for p in web["spec"]["ports"])
    assert 30000 + 86 <= http <= 32767 and 30000 + 86 <= dns <= 32767 and dns == dns_tcp != http
    chosen = await server.create("chosen", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
    assert chosen["spec"]["ports"][0]["nodePort"] == 30080
    taken = await refused(server.create("taken", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    assert taken.code == 422 and taken.message == (
        'Service "taken" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated')
    outside = await refused(server.create("outside", type="NodePort", ports=[{"port": 80, "nodePort": 8080}]))
    assert outside.message == ('Service "outside" is invalid: spec.ports[0].nodePort: Invalid value: 8080: provided '
                               "port is not in the valid range. The range of valid ports is 30000-32767")
    forbidden = await refused(server.create("plain", ports=[{"port": 80, "nodePort": 30090}]))
    assert forbidden.message == ('Service "plain" is invalid: spec.ports[0].nodePort: Forbidden: may not be used '
                                 "when `type` is 'ClusterIP'")
    duplicate = await refused(server.create("dup", type="NodePort", ports=[{"name": "a", "port": 80, "nodePort": 30100},
                                                                            {"name": "b", "port": 81,
                                                                             "nodePort": 30100}]))
    assert duplicate.message.endswith("spec.ports[1].nodePort: Duplicate value: 30100")


async def test_load_balancers_get_node_ports_unless_they_say_not_to(server: Server) -> None:
    balancer = await server.create("lb", type="LoadBalancer")
    assert balancer["spec"]["ports"][0]["nodePort"] in range(30000, 32768)
    assert balancer["spec"]["clusterIP"] != "None"
    bare = await server.create("bare", type="LoadBalancer", allocateLoadBalancerNodePorts=False)
    assert "nodePort" not in bare["spec"]["ports"][0]


async def test_updates_keep_allocations_and_cluster_ips_are_immutable(server: Server) -> None:
    web = await server.create("web", type="NodePort")
    ip, node_port = web["spec"]["clusterIP"], web["spec"]["ports"][0]["nodePort"]

    def replace_without_allocations(current: dict) -> None:  # what `kubectl replace -f` of the manifest sends
        current["spec"] = {"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}

    replaced = await server.update("web", replace_without_allocations)
    assert replaced["spec"]["clusterIP"] == ip and replaced["spec"]["ports"][0]["nodePort"] == node_port

    def move(current: dict) -> None:
        current["spec"]["clusterIP"] = "10.88.200.1"
        current["spec"]["clusterIPs"] = ["10.88.200.1"]

    immutable = await refused(server.update("web", move))
    assert immutable.code == 422 and immutable.message == (
        'Service "web" is invalid: spec.clusterIPs[0]: Invalid value: []string{"10.88.200.1"}: may not change once set')


async def test_leaving_node_port_releases_the_port_and_delete_releases_everything(server: Server) -> None:
    web = await server.create("web", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
    ip = web["spec"]["clusterIP"]

    def to_cluster_ip(current: dict) -> None:
        current["spec"]["type"] = "ClusterIP"

    plain = await server.update("web", to_cluster_ip)
    assert "nodePort" not in plain["spec"]["ports"][0] and plain["spec"]["clusterIP"] == ip
    await server.settled()
    reuse = await server.create("reuse", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
    assert reuse["spec"]["ports"][0]["nodePort"] == 30080

    await server.delete("web")
    await server.settled()
    again = await server.create("again", clusterIP=ip)
    assert again["spec"]["clusterIP"] == ip


async def test_racing_creates_never_share_an_address(tmp_path: Path) -> None:
    small = await Server(tmp_path / "podling.db", ServiceRanges(cluster_ip_range="10.88.128.0/29")).start()
    try:
        results = await asyncio.gather(*(small.create(f"s{i}") for i in range(10)), return_exceptions=True)
        created = [r for r in results if isinstance(r, dict)]
        full = [r for r in results if isinstance(r, errors.StatusError)]
        assert len(created) == 6 and len({s["spec"]["clusterIP"] for s in created}) == 6
        assert [(r.code, r.message) for r in full] == [
            (500, "Internal error occurred: failed to allocate a serviceIP: range is full")] * 4
        chosen = await asyncio.gather(*(small.create(f"c{i}", clusterIP=created[0]["spec"]["clusterIP"])
                                        for i in range(3)), return_exceptions=True)
        assert all(isinstance(r, errors.StatusError) and r.code == 422 for r in chosen)
    finally:
        await small.stop()


async def test_dry_runs_and_failed_writes_release_their_reservations(tmp_path: Path) -> None:
    tiny = await Server(tmp_path / "podling.db", ServiceRanges(cluster_ip_range="10.88.128.0/30")).start()
    try:  # two usable addresses
        dry = await tiny.create("a", dry_run=True)
        assert dry["spec"]["clusterIP"]
        await tiny.create("a")
        exists = await refused(tiny.create("a"))
        assert exists.code == 409
        await tiny.settled()
        assert tiny.allocator.ips.bitmap.used == 1
        await tiny.create("b")
    finally:
        await tiny.stop()


async def test_a_restarted_server_rebuilds_its_allocations_from_the_stored_services(tmp_path: Path) -> None:
    first = await Server(tmp_path / "podling.db", ServiceRanges()).start()
    web = await first.create("web", type="NodePort", clusterIP="10.88.128.20", ports=[{"port": 80, "nodePort": 30080}])
    await first.stop()
    second = await Server(tmp_path / "podling.db", ServiceRanges()).start()
    try:
        assert second.allocator.ips.bitmap.used == 1 and second.allocator.ports.bitmap.used == 1
        ip = await refused(second.create("ip", clusterIP=web["spec"]["clusterIP"]))
        assert "provided IP is already allocated" in ip.message
        port = await refused(second.create("port", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
        assert "provided port is already allocated" in port.message
    finally:
        await second.stop()
