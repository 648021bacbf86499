"""The cluster domain's answers, from Services and Endpoints (Kubernetes' DNS specification).

Records served, as in kubernetes/dns docs/specification.md (and CoreDNS's kubernetes plugin):

* ``SVC.NS.svc.DOMAIN`` A: the Service's ClusterIP; for a headless Service (clusterIP None)
  the ready addresses of its Endpoints, NXDOMAIN when it has none; for an ExternalName
  Service a CNAME to its ``externalName`` (not followed: that name is outside the cluster).
* ``_PORT._PROTO.SVC.NS.svc.DOMAIN`` SRV for each named port: ``0 100 PORT
  SVC.NS.svc.DOMAIN.`` with the ClusterIP as additional A record; for a headless Service
  one SRV per ready address, on the endpoint's port, aimed at ``HOST.SVC.NS.svc.DOMAIN.``.
* ``HOST.SVC.NS.svc.DOMAIN`` A for a headless Service's ready address, HOST being the
  endpoint's ``hostname`` or its IP with dashes (``10-88-0-5``).
* ``A-B-C-D.NS.pod.DOMAIN`` A: A.B.C.D (CoreDNS's ``pods insecure`` mode).

Invariants:

* :meth:`Zone.answer` is a pure function of the query and what the lookups hold at that
  moment; lookups are read-only (informer caches, or dicts in tests).
* Names outside the cluster domain, and classes other than IN, are REFUSED: nothing is ever
  forwarded, so no query leaves the machine.
* Inside the domain, a name that does not exist is NXDOMAIN and one that exists without
  records of the asked type (AAAA of a Service, the domain's own intermediate names) is
  NOERROR with no answer; both carry the domain's SOA, so resolvers cache the negative
  answer for ``ttl`` seconds. Every answer is authoritative; recursion is not available.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from typing import Any, Protocol

from dnslib import CLASS, CNAME, QTYPE, RCODE, RR, SOA, SRV, A, DNSRecord

Obj = Mapping[str, Any]
TTL = 5  # seconds, CoreDNS's default for cluster records


class Lookup(Protocol):
    """Objects by ``namespace/name`` key: an Informer, or a dict."""

    def get(self, key: str) -> Any: ...


@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    rcode: int
    answers: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()


_NXDOMAIN = _Answer(RCODE.NXDOMAIN)
_NODATA = _Answer(RCODE.NOERROR)


class Zone:
    def __init__(self, *, domain: str = "cluster.local", services: Lookup, endpoints: Lookup, ttl: int = TTL) -> None:
        self.domain = domain.strip(".").lower()
        self.services = services
        self.endpoints = endpoints
        self.ttl = ttl
        self._soa = RR(self.domain + ".", QTYPE.SOA, ttl=ttl, rdata=SOA(
            f"ns.dns.{self.domain}.", f"hostmaster.{self.domain}.", (1, 7200, 1800, 86400, ttl)))

    def answer(self, query: DNSRecord) -> DNSRecord:
        """The reply to one query (its rcode says how it went)."""
        question = query.q
        labels = [label.decode("ascii", "replace").lower() for label in question.qname.label]
        domain = self.domain.split(".")
        inside = labels[len(labels) - len(domain):] == domain and len(labels) >= len(domain)
        if question.qclass != CLASS.IN or not inside:
            reply = query.reply(ra=0, aa=0)
            reply.header.rcode = RCODE.REFUSED
            return reply
        reply = query.reply(ra=0, aa=1)
        result = self._resolve(labels[:len(labels) - len(domain)], qname=str(question.qname), qtype=question.qtype)
        reply.header.rcode = result.rcode
        for record in result.answers:
            reply.add_answer(record)
        if not result.answers:
            reply.add_auth(self._soa)
        for record in result.additional:
            reply.add_ar(record)
        return reply

    # ---- names -------------------------------------------------------------------------

    def _resolve(self, labels: list[str], *, qname: str, qtype: int) -> _Answer:
        """``labels`` are the query name's, less the domain, in order (``["web", "ns", "svc"]``)."""
        if not labels:
            if qtype in (QTYPE.SOA, QTYPE.ANY):
                return _Answer(RCODE.NOERROR, (self._soa,))
            return _NODATA
        if labels[-1] == "pod":
            if len(labels) == 1 or len(labels) == 2:
                return _NODATA
            if len(labels) == 3 and (ip := _dashed_ip(labels[0])):
                return self._a(qname, qtype, [ip])
            return _NXDOMAIN
        if labels[-1] != "svc":
            return _NXDOMAIN
        if len(labels) <= 2:  # svc.DOMAIN and NS.svc.DOMAIN: names with no records of their own
            return _NODATA
        if len(labels) == 3:
            return self._service(labels[0], labels[1], qname=qname, qtype=qtype)
        if len(labels) == 4:
            return self._endpoint(labels[0], labels[1], labels[2], qname=qname, qtype=qtype)
        if len(labels) == 5 and labels[0].startswith("_") and labels[1].startswith("_"):
            return self._srv(labels[0][1:], labels[1][1:], labels[2], labels[3], qname=qname, qtype=qtype)
        return _NXDOMAIN

    def _service(self, name: str, namespace: str, *, qname: str, qtype: int) -> _Answer:
        service = self.services.get(f"{namespace}/{name}")
        if service is None:
            return _NXDOMAIN
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName":
            target = str(spec.get("externalName") or "").rstrip(".")
            if not target:
                return _NODATA
            return _Answer(RCODE.NOERROR, (RR(qname, QTYPE.CNAME, ttl=self.ttl, rdata=CNAME(target + ".")),))
        if _is_headless(spec):
            ips = sorted({ip for ip, _, _ in self._ready(namespace, name)}, key=ipaddress.IPv4Address)
            return self._a(qname, qtype, ips) if ips else _NXDOMAIN
        ip = spec.get("clusterIP") or ""
        return self._a(qname, qtype, [ip] if _is_ipv4(ip) else [])

    def _endpoint(self, host: str, name: str, namespace: str, *, qname: str, qtype: int) -> _Answer:
        service = self.services.get(f"{namespace}/{name}")
        if service is None or not _is_headless(service.get("spec") or {}):
            return _NXDOMAIN
        ips = sorted({ip for ip, hostname, _ in self._ready(namespace, name) if hostname == host})
        return self._a(qname, qtype, ips) if ips else _NXDOMAIN

    def _srv(self, port_name: str, protocol: str, name: str, namespace: str, *, qname: str, qtype: int) -> _Answer:
        service = self.services.get(f"{namespace}/{name}")
        if service is None:
            return _NXDOMAIN
        spec = service.get("spec") or {}
        port = next((p for p in spec.get("ports") or () if (p.get("name") or "") == port_name
                     and (p.get("protocol") or "TCP").lower() == protocol), None)
        if port is None or not port_name:
            return _NXDOMAIN
        service_name = f"{name}.{namespace}.svc.{self.domain}."
        if _is_headless(spec):
            targets = sorted({(f"{hostname}.{service_name}", number, ip)
                              for ip, hostname, ports in self._ready(namespace, name)
                              for number in ports.get((port_name, protocol.upper()), ())})
        else:
            ip = spec.get("clusterIP") or ""
            targets = [(service_name, int(port.get("port") or 0), ip)] if _is_ipv4(ip) else []
        if not targets:
            return _NXDOMAIN
        if qtype not in (QTYPE.SRV, QTYPE.ANY):
            return _NODATA
        weight = max(1, 100 // len(targets))
        answers = tuple(RR(qname, QTYPE.SRV, ttl=self.ttl, rdata=SRV(0, weight, number, target))
                        for target, number, _ in targets)
        additional = tuple(RR(target, QTYPE.A, ttl=self.ttl, rdata=A(ip))
                           for target, ip in sorted({(target, ip) for target, _, ip in targets}))
        return _Answer(RCODE.NOERROR, answers, additional)

    # ---- records -----------------------------------------------------------------------

    def _a(self, qname: str, qtype: int, ips: list[str]) -> _Answer:
        if qtype not in (QTYPE.A, QTYPE.ANY):
            return _NODATA
        return _Answer(RCODE.NOERROR, tuple(RR(qname, QTYPE.A, ttl=self.ttl, rdata=A(ip)) for ip in ips))

    def _ready(self, namespace: str, name: str) -> list[tuple[str, str, dict[tuple[str, str], set[int]]]]:
        """(ip, hostname, {(port name, PROTOCOL): port numbers}) of each ready endpoint address."""
        endpoints = self.endpoints.get(f"{namespace}/{name}") or {}
        ready = []
        for subset in endpoints.get("subsets") or ():
            ports: dict[tuple[str, str], set[int]] = {}
            for port in subset.get("ports") or ():
                ports.setdefault((port.get("name") or "", port.get("protocol") or "TCP"), set()).add(
                    int(port.get("port") or 0))
            for address in subset.get("addresses") or ():
                ip = address.get("ip") or ""
                if _is_ipv4(ip):
                    ready.append((ip, (address.get("hostname") or ip.replace(".", "-")).lower(), ports))
        return ready


def _is_headless(spec: Obj) -> bool:
    return spec.get("clusterIP") == "None"


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _dashed_ip(label: str) -> str:
    """``10-88-0-5`` → ``10.88.0.5`` ("" when the label is not an IPv4 address with dashes)."""
    ip = label.replace("-", ".")
    return ip if label.count("-") == 3 and _is_ipv4(ip) else ""
