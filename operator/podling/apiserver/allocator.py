"""Service ClusterIPs and NodePorts, allocated at admission, as kube-apiserver's Service storage does.

What a Service gets (pkg/registry/core/service/storage in Kubernetes, with its messages):

* Types ClusterIP, NodePort and LoadBalancer get ``spec.clusterIP`` and ``spec.clusterIPs``
  from ``--service-cluster-ip-range``: a random free address, or the one the user chose when
  it lies in the range and is free, else 422 ``spec.clusterIPs: Invalid value:
  []string{"IP"}: failed to allocate IP IP: provided IP is already allocated`` (or ``...
  provided IP is not in the valid range. The range of valid IPs is CIDR``). ``None``
  (headless) is kept and holds nothing; ExternalName Services hold no address.
* NodePort and LoadBalancer Services (unless ``allocateLoadBalancerNodePorts: false``) get
  a ``nodePort`` on every port from ``--service-node-port-range``; ports with the same port
  number (53/UDP and 53/TCP) share one. A chosen one is honoured when free and in range,
  else 422 ``spec.ports[0].nodePort: Invalid value: 30080: provided port is already
  allocated`` (or ``... provided port is not in the valid range. The range of valid ports is
  30000-32767``).
* Random picks prefer the upper part of each range: the lower band (Kubernetes' static
  subrange: min(max(16, size/16), 256) addresses, min(max(16, size/32), 128) ports) is left
  to users who choose, such as the cluster DNS Service at .10, and used only once the upper
  band is full.
* Updates keep what a Service holds: a body that leaves them out gets them back (``kubectl
  replace``); clusterIPs may not change once set (422); a type change away from
  NodePort/LoadBalancer drops the node ports the user did not change, one to ExternalName
  drops the clusterIP, and what is dropped is released.

Which numbers are taken lives in memory, one counting bitmap per range, and is always *what
the stored Services hold* plus *reservations in flight*:

* Stored holdings are listed when the API server starts (so a restart rebuilds both bitmaps
  from the stored Services) and then follow the store's watch of Services: a delete or an
  update releases what the old version held. A watch that falls behind compaction lists again.
* An admission that takes numbers leaves a reservation of everything the new object holds.
  Finding a number free and taking it happen with no ``await`` in between, so two concurrent
  requests of this process never get the same number. The reservation lives until its
  request (the asyncio task) has finished, and then until either the watch has shown the
  write (the stored Service holds the numbers from then on) or the store shows that the
  write did not happen (refused later in admission, a lost compare-and-swap, a dry run), when
  it is released. Numbers are counted per holder, so one held twice for a moment (by a
  reservation and by the stored Service) is still taken once the first lets go.

As with quota admission, this does not span processes: API servers sharing one etcd each
allocate from their own view.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from podling.api import errors
from podling.api.resources import Resource, find
from podling.apiserver import codec
from podling.store.base import Compacted, Store

if TYPE_CHECKING:
    from podling.apiserver.admission import Attributes

log = logging.getLogger("podling.apiserver.allocator")

Obj = dict[str, Any]
Cause = dict[str, str]

DEFAULT_CLUSTER_IP_RANGE = "10.88.128.0/17"
DEFAULT_NODE_PORT_RANGE = "30000-32767"
HEADLESS = "None"
_NODE_PORT_TYPES = frozenset({"NodePort", "LoadBalancer"})
_SETTLE_RETRY = 1.0  # seconds before checking again a write the store could not be asked about

_SERVICES = find(group="", version="v1", plural="services")
assert _SERVICES is not None


# ---- ranges and bitmaps ----------------------------------------------------------------------


def parse_cluster_ip_range(text: str) -> ipaddress.IPv4Network:
    """``--service-cluster-ip-range``: an IPv4 CIDR with room for at least two Services."""
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        raise ValueError(f"{text!r} is not a CIDR such as {DEFAULT_CLUSTER_IP_RANGE}: {err}") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise ValueError(f"{text!r}: only IPv4 service ranges are supported")
    if network.prefixlen > 30:
        raise ValueError(f"{text!r} is too small: a /30 or larger is needed")
    return network


def parse_node_port_range(text: str) -> range:
    """``--service-node-port-range``: ``FIRST-LAST`` (inclusive), as kube-apiserver takes it."""
    first, sep, last = text.partition("-")
    try:
        low, high = int(first), int(last if sep else first)
    except ValueError:
        raise ValueError(f"{text!r} is not a port range such as {DEFAULT_NODE_PORT_RANGE}") from None
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"{text!r}: ports must be within 1-65535, the first not above the last")
    return range(low, high + 1)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRanges:
    """The API server's flags: where ClusterIPs and NodePorts come from."""

    cluster_ip_range: str = DEFAULT_CLUSTER_IP_RANGE
    node_port_range: str = DEFAULT_NODE_PORT_RANGE


class Bitmap:
    """Which offsets of a range are taken, counted per holder, with Kubernetes' two-band random pick.

    ``pick`` starts at a random offset of the upper band (``static_band`` and above) and takes
    the first free one from there, wrapping around inside the band; only when the upper band
    is full does it do the same in the lower band.
    """

    def __init__(self, *, size: int, static_band: int) -> None:
        self.size = size
        self.static_band = static_band
        self._taken = bytearray(size)  # 1 where at least one holder has the offset (bytearray.find is fast)
        self._holders: dict[int, int] = {}

    @property
    def used(self) -> int:
        return len(self._holders)

    def is_free(self, offset: int) -> bool:
        return not self._taken[offset]

    def hold(self, offset: int) -> None:
        self._holders[offset] = self._holders.get(offset, 0) + 1
        self._taken[offset] = 1

    def release(self, offset: int) -> None:
        holders = self._holders.get(offset, 0) - 1
        if holders > 0:
            self._holders[offset] = holders
        else:
            self._holders.pop(offset, None)
            self._taken[offset] = 0

    def pick(self, rng: random.Random) -> int | None:
        """A free offset (not yet held), or None when the range is full."""
        for low, high in ((self.static_band, self.size), (0, self.static_band)):
            if low >= high:
                continue
            start = rng.randrange(low, high)
            found = self._taken.find(0, start, high)
            if found < 0:
                found = self._taken.find(0, low, start)
            if found >= 0:
                return found
        return None


def _band(size: int, *, step: int, cap: int) -> int:
    """Kubernetes' static subrange: the lower ``min(max(16, size/step), cap)`` (none in ranges of 16 or less)."""
    if size <= 16:
        return 0
    return min(max(16, size // step), cap)


class IPRange:
    """The usable addresses of a CIDR (without its network and broadcast addresses)."""

    def __init__(self, network: ipaddress.IPv4Network) -> None:
        self.network = network
        self._base = int(network.network_address) + 1
        self.bitmap = Bitmap(size=network.num_addresses - 2, static_band=_band(network.num_addresses, step=16, cap=256))

    def offset(self, ip: str) -> int | None:
        """The address's offset in the bitmap, None when it is not a usable address of the range."""
        try:
            address = ipaddress.IPv4Address(ip)
        except ValueError:
            return None
        offset = int(address) - self._base
        return offset if 0 <= offset < self.bitmap.size else None

    def address(self, offset: int) -> str:
        return str(ipaddress.IPv4Address(self._base + offset))


class PortRange:
    def __init__(self, ports: range) -> None:
        self.ports = ports
        self.bitmap = Bitmap(size=len(ports), static_band=_band(len(ports), step=32, cap=128))

    def offset(self, port: int) -> int | None:
        return port - self.ports.start if port in self.ports else None

    def describe(self) -> str:
        return f"{self.ports.start}-{self.ports.stop - 1}"


# ---- what a Service holds ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Holding:
    """The cluster IPs and node ports one Service (or one reservation) holds."""

    ips: frozenset[str] = frozenset()
    ports: frozenset[int] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.ips or self.ports)

    def within(self, other: Holding) -> bool:
        return self.ips <= other.ips and self.ports <= other.ports


def holding_of(service: Obj) -> Holding:
    """What a stored Service holds: its clusterIPs (not None; none for ExternalName) and nodePorts."""
    spec = service.get("spec") or {}
    ips: frozenset[str] = frozenset()
    if spec.get("type") != "ExternalName":
        ips = frozenset(ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")])
                        if isinstance(ip, str) and ip and ip != HEADLESS)
    ports = frozenset(port["nodePort"] for port in spec.get("ports") or ()
                      if isinstance(port, dict) and isinstance(port.get("nodePort"), int) and port["nodePort"])
    return Holding(ips=ips, ports=ports)


# ---- the Service REST semantics, before anything is allocated --------------------------------


def _needs_cluster_ip(spec: Obj) -> bool:
    return spec.get("type") != "ExternalName"


def _needs_node_ports(spec: Obj) -> bool:
    return spec.get("type") in _NODE_PORT_TYPES


def _allocates_node_ports(spec: Obj) -> bool:
    """Node ports nobody chose are allocated for NodePort, and for LoadBalancer unless it says not to."""
    return spec.get("type") == "NodePort" or (
        spec.get("type") == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is not False)


def _cluster_ips(spec: Obj) -> list[str]:
    return list(spec.get("clusterIPs") or [])


def _node_ports(spec: Obj) -> set[int]:
    return {p["nodePort"] for p in spec.get("ports") or () if isinstance(p, dict) and p.get("nodePort")}


def prepare_update(spec: Obj, old: Obj) -> None:
    """What Kubernetes' strategy does to an update before validating it (in its order).

    Values the client left out are patched in from the old version (clusterIP, clusterIPs,
    and nodePorts by port name when no other port uses them); clusterIPs follows clusterIP;
    fields the new type cannot have are dropped when the client did not change them.
    """
    if _needs_cluster_ip(old) and _needs_cluster_ip(spec):
        if not spec.get("clusterIP") and old.get("clusterIP"):
            spec["clusterIP"] = old["clusterIP"]
        if not spec.get("clusterIPs") and old.get("clusterIPs"):
            spec["clusterIPs"] = list(old["clusterIPs"])
    if _needs_node_ports(old) and _needs_node_ports(spec):
        used = _node_ports(old) & _node_ports(spec)
        by_name = {p.get("name") or "": p.get("nodePort") for p in old.get("ports") or () if isinstance(p, dict)}
        for port in spec.get("ports") or ():
            if isinstance(port, dict) and not port.get("nodePort"):
                previous = by_name.get(port.get("name") or "")
                if previous and previous not in used:
                    port["nodePort"] = previous
    normalize_cluster_ips(spec, old)
    if _needs_cluster_ip(old) and not _needs_cluster_ip(spec):
        if _cluster_ips(spec) == _cluster_ips(old) and spec.get("clusterIP") == old.get("clusterIP"):
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        for field in ("ipFamilies", "ipFamilyPolicy"):
            if spec.get(field) == old.get(field):
                spec.pop(field, None)
    if _needs_node_ports(old) and not _needs_node_ports(spec) and _node_ports(spec) <= _node_ports(old):
        for port in spec.get("ports") or ():
            if isinstance(port, dict):
                port.pop("nodePort", None)


def normalize_cluster_ips(spec: Obj, old: Obj | None) -> None:
    """Keep clusterIPs in step with clusterIP, for clients that only know the singular field."""
    ip, ips = spec.get("clusterIP") or "", _cluster_ips(spec)
    if old is None:
        if ip and not ips:
            spec["clusterIPs"] = [ip]
        return
    old_ip, old_ips = old.get("clusterIP") or "", _cluster_ips(old)
    if old_ips and not ips and old_ip == ip:
        spec["clusterIPs"] = ips = list(old_ips)
    if old_ip != ip:
        if old_ip and not ip and ips == old_ips:
            spec.pop("clusterIPs", None)
        elif ip and ips == old_ips:
            spec["clusterIPs"] = [ip]


def _go_strings(values: list[str]) -> str:
    """A []string as Go's %#v prints it in Kubernetes' messages."""
    if not values:
        return "[]string(nil)"
    return "[]string{" + ", ".join(json.dumps(v) for v in values) + "}"


def _invalid(field: str, value: str, message: str) -> Cause:
    return {"reason": "FieldValueInvalid", "field": field, "message": f"Invalid value: {value}: {message}"}


def validate(spec: Obj, old: Obj | None) -> list[Cause]:
    """The causes of a 422 in the fields allocation reads (Kubernetes' messages)."""
    causes: list[Cause] = []
    kind = spec.get("type") or "ClusterIP"
    ip, ips = spec.get("clusterIP") or "", _cluster_ips(spec)
    if kind == "ExternalName":
        if ip or ips:
            causes.append({"reason": "FieldValueForbidden", "field": "spec.clusterIPs",
                           "message": "Forbidden: may not be set for ExternalName services"})
    else:
        if ip and ips and ips[0] != ip:
            causes.append(_invalid("spec.clusterIPs", _go_strings(ips), "first value must match `clusterIP`"))
        elif not ip and ips:
            causes.append(_invalid("spec.clusterIPs", _go_strings(ips),
                                   "must be empty when `clusterIP` is not specified"))
        if len(ips) > 1:
            causes.append(_invalid("spec.ipFamilyPolicy", json.dumps(spec.get("ipFamilyPolicy") or "SingleStack"),
                                   "must be RequireDualStack or PreferDualStack when multiple 'clusterIPs' are "
                                   "specified (podling serves single-stack IPv4)"))
        for i, value in enumerate(ips):
            if value == HEADLESS:
                if i:
                    causes.append(_invalid(f"spec.clusterIPs[{i}]", json.dumps(value),
                                           "'None' must be the first and only value"))
                elif kind in _NODE_PORT_TYPES:
                    causes.append(_invalid("spec.clusterIPs[0]", json.dumps(value),
                                           f"may not be set to 'None' for {kind} services"))
                continue
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                causes.append(_invalid(f"spec.clusterIPs[{i}]", json.dumps(value),
                                       "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
        if old is not None and _needs_cluster_ip(old):
            old_ips = _cluster_ips(old)
            headless = bool(ips) and ips[0] == HEADLESS and bool(old_ips) and old_ips[0] == HEADLESS
            if old_ips and not ips:
                causes.append({"reason": "FieldValueRequired", "field": "spec.clusterIPs[0]",
                               "message": "Required value: primary clusterIP can not be unset"})
            elif old_ips and ips[:1] != old_ips[:1] and not headless:
                causes.append(_invalid("spec.clusterIPs[0]", _go_strings(ips), "may not change once set"))
    seen: set[tuple[int, str]] = set()
    for i, port in enumerate(spec.get("ports") or ()):
        if not isinstance(port, dict) or not port.get("nodePort"):
            continue
        if kind not in _NODE_PORT_TYPES:
            causes.append({"reason": "FieldValueForbidden", "field": f"spec.ports[{i}].nodePort",
                           "message": f"Forbidden: may not be used when `type` is '{kind}'"})
            continue
        key = (port["nodePort"], port.get("protocol") or "TCP")
        if key in seen:
            causes.append({"reason": "FieldValueDuplicate", "field": f"spec.ports[{i}].nodePort",
                           "message": f"Duplicate value: {port['nodePort']}"})
        seen.add(key)
    return causes


# ---- the admission plugin ----------------------------------------------------------------------


@dataclasses.dataclass(eq=False, slots=True)
class _Reservation:
    key: str  # the Service's store key
    holding: Holding


class ServiceAllocator:
    """The admission plugin that allocates; see the module docstring for its invariants."""

    def __init__(self, *, store: Store, ranges: ServiceRanges = ServiceRanges(),
                 rng: random.Random | None = None) -> None:
        self._store = store
        self.ips = IPRange(parse_cluster_ip_range(ranges.cluster_ip_range))
        self.ports = PortRange(parse_node_port_range(ranges.node_port_range))
        self._rng = rng or random.Random()
        self._stored: dict[str, Holding] = {}  # store key -> what the stored Service holds
        self._revision = 0  # the store revision the stored holdings are at
        self._awaiting: list[tuple[int, _Reservation]] = []  # dropped once the watch reaches the revision
        self._following: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()
        self._stopped = False

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self._relist()
        self._following = asyncio.create_task(self._follow(), name="service-allocator")
        log.info("service allocator: %d cluster IPs of %s and %d node ports of %s in use",
                 self.ips.bitmap.used, self.ips.network, self.ports.bitmap.used, self.ports.describe())

    async def stop(self) -> None:
        self._stopped = True
        tasks = [*self._settling, *([self._following] if self._following is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- stored Services -------------------------------------------------------------

    async def _relist(self) -> None:
        kvs, revision, _ = await self._store.list(_SERVICES.key_prefix())
        for holding in self._stored.values():
            self._release(holding)
        self._stored.clear()
        for kv in kvs:
            self._store_holding(kv.key, holding_of(codec.from_kv(kv)))
        self._advance(revision)

    async def _follow(self) -> None:
        while True:
            try:
                async for event in self._store.watch(_SERVICES.key_prefix(), revision=self._revision):
                    if event.value is None:
                        self._store_holding(event.key, Holding())
                    else:
                        self._store_holding(event.key, holding_of(codec.decode(event.value, revision=event.revision)))
                    self._advance(event.revision)
                return
            except Compacted:
                log.info("service allocator fell behind compaction; listing Services again")
                await self._relist()

    def _store_holding(self, key: str, holding: Holding) -> None:
        before = self._stored.pop(key, Holding())
        if holding:
            self._stored[key] = holding
        self._hold(holding)
        self._release(before)

    def _advance(self, revision: int) -> None:
        self._revision = revision
        done = [entry for entry in self._awaiting if entry[0] <= revision]
        if done:
            self._awaiting = [entry for entry in self._awaiting if entry[0] > revision]
            for _, reservation in done:
                self._release(reservation.holding)

    # ---- counting ---------------------------------------------------------------------

    def _hold(self, holding: Holding) -> None:
        for offset in self._offsets(holding):
            offset[0].hold(offset[1])

    def _release(self, holding: Holding) -> None:
        for offset in self._offsets(holding):
            offset[0].release(offset[1])

    def _offsets(self, holding: Holding) -> Iterable[tuple[Bitmap, int]]:
        """The bitmap offsets of a holding; numbers outside the ranges (a range changed) are not counted."""
        for ip in holding.ips:
            if (offset := self.ips.offset(ip)) is not None:
                yield self.ips.bitmap, offset
        for port in holding.ports:
            if (offset := self.ports.offset(port)) is not None:
                yield self.ports.bitmap, offset

    # ---- admission --------------------------------------------------------------------

    async def admit(self, attrs: Attributes) -> None:
        if attrs.resource.kind != "Service" or attrs.subresource:
            return
        spec = attrs.obj.get("spec")
        if not isinstance(spec, dict):
            spec = attrs.obj["spec"] = {}
        old = (attrs.old.get("spec") or {}) if attrs.old is not None else None
        if old is not None:
            prepare_update(spec, old)
        else:
            normalize_cluster_ips(spec, None)
        causes = validate(spec, old)
        if causes:
            raise errors.invalid(attrs.resource, attrs.name, causes)
        # From here to _reserve nothing awaits: what is found free is taken before any other request runs.
        held = holding_of(attrs.old) if attrs.old is not None else Holding()
        taken: list[tuple[Bitmap, int]] = []
        try:
            self._allocate_ip(attrs, spec, held, taken)
            self._allocate_ports(attrs, spec, held, taken)
        except errors.StatusError:
            for bitmap, offset in taken:
                bitmap.release(offset)
            raise
        holding = holding_of(attrs.obj)
        for bitmap, offset in taken:  # the reservation holds everything the new object holds, counted once
            bitmap.release(offset)
        if holding:
            self._reserve(resource=attrs.resource, namespace=attrs.namespace, name=attrs.name, holding=holding)

    def _allocate_ip(self, attrs: Attributes, spec: Obj, held: Holding, taken: list[tuple[Bitmap, int]]) -> None:
        if not _needs_cluster_ip(spec):
            return
        ips = _cluster_ips(spec)
        bitmap = self.ips.bitmap
        if not ips:
            offset = bitmap.pick(self._rng)
            if offset is None:
                raise errors.internal("failed to allocate a serviceIP: range is full")
            bitmap.hold(offset)
            taken.append((bitmap, offset))
            ip = self.ips.address(offset)
            spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
            return
        ip = ips[0]
        if ip == HEADLESS or ip in held.ips:
            return
        offset = self.ips.offset(ip)
        why = ""
        if offset is None:
            why = f"provided IP is not in the valid range. The range of valid IPs is {self.ips.network}"
        elif not bitmap.is_free(offset):
            why = "provided IP is already allocated"
        if why:
            raise errors.invalid(attrs.resource, attrs.name, [
                _invalid("spec.clusterIPs", _go_strings(ips), f"failed to allocate IP {ip}: {why}")])
        assert offset is not None
        bitmap.hold(offset)
        taken.append((bitmap, offset))

    def _allocate_ports(self, attrs: Attributes, spec: Obj, held: Holding, taken: list[tuple[Bitmap, int]]) -> None:
        if not _needs_node_ports(spec):
            return
        ports = [p for p in spec.get("ports") or () if isinstance(p, dict)]
        allocate = _allocates_node_ports(spec)
        bitmap = self.ports.bitmap
        mine: set[int] = set()  # node ports this request holds already (shared by one port number's protocols)
        by_number: dict[Any, int] = {}
        for i, port in enumerate(ports):
            node_port = port.get("nodePort") or 0
            if not node_port:
                if not allocate:
                    continue
                later = (p["nodePort"] for p in ports[i + 1:] if p.get("port") == port.get("port") and p.get("nodePort"))
                node_port = by_number.get(port.get("port")) or next(later, 0)
            if not node_port:
                offset = bitmap.pick(self._rng)
                if offset is None:
                    raise errors.internal("failed to allocate a nodePort: range is full")
                bitmap.hold(offset)
                taken.append((bitmap, offset))
                node_port = self.ports.ports.start + offset
                mine.add(node_port)
            elif node_port not in mine and node_port not in held.ports:
                offset = self.ports.offset(node_port) if isinstance(node_port, int) else None
                why = ""
                if offset is None:
                    why = ("provided port is not in the valid range. "
                           f"The range of valid ports is {self.ports.describe()}")
                elif not bitmap.is_free(offset):
                    why = "provided port is already allocated"
                if why:
                    raise errors.invalid(attrs.resource, attrs.name, [
                        _invalid(f"spec.ports[{i}].nodePort", str(node_port), why)])
                assert offset is not None
                bitmap.hold(offset)
                taken.append((bitmap, offset))
                mine.add(node_port)
            port["nodePort"] = node_port
            by_number.setdefault(port.get("port"), node_port)

    # ---- reservations -----------------------------------------------------------------

    def _reserve(self, *, resource: Resource, namespace: str | None, name: str, holding: Holding) -> None:
        """Hold ``holding`` until the request admitting it (this task) has finished and its write is settled."""
        reservation = _Reservation(key=resource.key(namespace, name), holding=holding)
        self._hold(holding)
        request = asyncio.current_task()
        assert request is not None
        request.add_done_callback(lambda _: self._settle_soon(reservation, delay=0.0))

    def _settle_soon(self, reservation: _Reservation, *, delay: float) -> None:
        if self._stopped:
            return
        task = asyncio.get_running_loop().create_task(self._settle(reservation, delay=delay),
                                                      name="service-allocator settle")
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, reservation: _Reservation, *, delay: float) -> None:
        """Release now if the store does not hold the reservation's numbers, else once the watch shows it."""
        await asyncio.sleep(delay)
        try:
            kv = await self._store.get(reservation.key)
        except Exception as err:  # the store is unreachable: keep the numbers and ask again
            log.warning("service allocator: cannot read %s (%s); checking again in %.0fs",
                        reservation.key, err, _SETTLE_RETRY)
            self._settle_soon(reservation, delay=_SETTLE_RETRY)
            return
        if kv is not None and kv.mod_revision > self._revision \
                and reservation.holding.within(holding_of(codec.from_kv(kv))):
            self._awaiting.append((kv.mod_revision, reservation))
        else:
            self._release(reservation.holding)
