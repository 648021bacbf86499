"""Cluster DNS answers (names, SRV, headless, NXDOMAIN, refusal) and the wire protocol around them.

The zone reads its Services and Endpoints through ``get(key)``, which the server's informers
provide; here plain dicts hold the same objects.
"""

from __future__ import annotations

from typing import Any

from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from podling.dns import wire
from podling.dns.zone import Zone

SERVICES: dict[str, Any] = {
    "shop/web": {"metadata": {"name": "web", "namespace": "shop"},
                 "spec": {"type": "ClusterIP", "clusterIP": "10.88.130.5", "clusterIPs": ["10.88.130.5"],
                          "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                    {"name": "dns", "port": 53, "protocol": "UDP"},
                                    {"port": 8080, "protocol": "TCP"}]}},
    "shop/db": {"metadata": {"name": "db", "namespace": "shop"},
                "spec": {"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"],
                         "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}},
    "shop/empty": {"metadata": {"name": "empty", "namespace": "shop"},
                   "spec": {"type": "ClusterIP", "clusterIP": "None", "ports": [{"name": "x", "port": 1}]}},
    "shop/ext": {"metadata": {"name": "ext", "namespace": "shop"},
                 "spec": {"type": "ExternalName", "externalName": "db.example.com"}},
}
ENDPOINTS: dict[str, Any] = {
    "shop/db": {"subsets": [{"addresses": [{"ip": "10.88.0.7", "hostname": "db-0"}, {"ip": "10.88.0.5"}],
                             "notReadyAddresses": [{"ip": "10.88.0.9"}],
                             "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]},
}
ZONE = Zone(services=SERVICES, endpoints=ENDPOINTS)


def ask(name: str, qtype: str = "A", *, zone: Zone = ZONE, qclass: str = "IN") -> DNSRecord:
    query = DNSRecord.question(name, qtype, qclass)
    return DNSRecord.parse(zone.answer(query).pack())


def records(reply: DNSRecord, section: str = "rr") -> list[tuple[str, str, str]]:
    return [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata)) for rr in getattr(reply, section)]


def test_a_service_name_is_its_cluster_ip_in_any_case() -> None:
    reply = ask("web.shop.svc.cluster.local")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa == 1 and reply.header.ra == 0
    assert records(reply) == [("web.shop.svc.cluster.local.", "A", "10.88.130.5")]
    assert reply.rr[0].ttl == 5
    shouted = ask("WEB.Shop.SVC.cluster.LOCAL")
    assert records(shouted) == [("WEB.Shop.SVC.cluster.LOCAL.", "A", "10.88.130.5")]


def test_a_name_without_records_of_that_type_is_nodata_with_the_soa() -> None:
    for reply in (ask("web.shop.svc.cluster.local", "AAAA"), ask("shop.svc.cluster.local"), ask("svc.cluster.local")):
        assert reply.header.rcode == RCODE.NOERROR and not reply.rr
        assert [(name, kind) for name, kind, _ in records(reply, "auth")] == [("cluster.local.", "SOA")]
    soa = ask("cluster.local", "SOA")
    assert records(soa)[0][:2] == ("cluster.local.", "SOA")


def test_unknown_names_in_the_domain_are_nxdomain() -> None:
    for name in ("missing.shop.svc.cluster.local", "web.other.svc.cluster.local", "web.shop.cluster.local",
                 "a.b.c.d.e.f.svc.cluster.local", "nobody.db.shop.svc.cluster.local", "empty.shop.svc.cluster.local",
                 "_http._udp.web.shop.svc.cluster.local"):
        reply = ask(name, "SRV" if name.startswith("_") else "A")
        assert reply.header.rcode == RCODE.NXDOMAIN, name
        assert not reply.rr and records(reply, "auth")[0][1] == "SOA"


def test_a_headless_service_answers_with_its_ready_endpoints() -> None:
    reply = ask("db.shop.svc.cluster.local")
    assert [r[2] for r in records(reply)] == ["10.88.0.5", "10.88.0.7"]  # not 10.88.0.9, which is not ready
    assert records(ask("db-0.db.shop.svc.cluster.local")) == [("db-0.db.shop.svc.cluster.local.", "A", "10.88.0.7")]
    assert [r[2] for r in records(ask("10-88-0-5.db.shop.svc.cluster.local"))] == ["10.88.0.5"]
    assert ask("db-0.web.shop.svc.cluster.local").header.rcode == RCODE.NXDOMAIN  # web is not headless


def test_srv_records_for_named_ports() -> None:
    reply = ask("_http._tcp.web.shop.svc.cluster.local", "SRV")
    assert records(reply) == [("_http._tcp.web.shop.svc.cluster.local.", "SRV", "0 100 80 web.shop.svc.cluster.local.")]
    assert records(reply, "ar") == [("web.shop.svc.cluster.local.", "A", "10.88.130.5")]
    assert records(ask("_dns._udp.web.shop.svc.cluster.local", "SRV"))[0][2] == "0 100 53 web.shop.svc.cluster.local."
    assert ask("_http._tcp.web.shop.svc.cluster.local", "A").header.rcode == RCODE.NOERROR  # exists, but no A


def test_srv_records_of_a_headless_service_name_each_endpoint() -> None:
    reply = ask("_pg._tcp.db.shop.svc.cluster.local", "SRV")
    assert sorted(r[2] for r in records(reply)) == ["0 50 5432 10-88-0-5.db.shop.svc.cluster.local.",
                                                    "0 50 5432 db-0.db.shop.svc.cluster.local."]
    assert sorted(records(reply, "ar")) == [("10-88-0-5.db.shop.svc.cluster.local.", "A", "10.88.0.5"),
                                            ("db-0.db.shop.svc.cluster.local.", "A", "10.88.0.7")]


def test_external_names_are_a_cname_not_followed() -> None:
    reply = ask("ext.shop.svc.cluster.local")
    assert records(reply) == [("ext.shop.svc.cluster.local.", "CNAME", "db.example.com.")]


def test_pod_names_carry_their_address() -> None:
    assert records(ask("10-88-0-42.shop.pod.cluster.local")) == [("10-88-0-42.shop.pod.cluster.local.", "A",
                                                                   "10.88.0.42")]
    assert ask("10-88-0.shop.pod.cluster.local").header.rcode == RCODE.NXDOMAIN


def test_names_outside_the_cluster_domain_are_refused_never_forwarded() -> None:
    for name in ("example.com", "local", "xcluster.local", "web.shop.svc.cluster.local.example.com",
                 "5.130.88.10.in-addr.arpa"):
        reply = ask(name)
        assert reply.header.rcode == RCODE.REFUSED and reply.header.aa == 0 and not reply.rr, name
    assert ask("web.shop.svc.cluster.local", qclass="CH").header.rcode == RCODE.REFUSED


def test_another_cluster_domain() -> None:
    zone = Zone(domain="corp.internal.", services=SERVICES, endpoints=ENDPOINTS)
    assert records(ask("web.shop.svc.corp.internal", zone=zone))[0][2] == "10.88.130.5"
    assert ask("web.shop.svc.cluster.local", zone=zone).header.rcode == RCODE.REFUSED


# ---- the wire ------------------------------------------------------------------------------------


def test_what_does_not_parse_is_a_format_error_and_responses_are_not_answered() -> None:
    garbage = bytes([0x12, 0x34, 0x01, 0x00]) + bytes([0, 9]) + b"\xff" * 20
    reply = wire.respond(garbage, zone=ZONE, udp=True)
    assert reply.result == "FORMERR" and reply.data is not None
    header = DNSRecord.parse(reply.data).header
    assert header.id == 0x1234 and header.qr == 1 and header.rcode == RCODE.FORMERR and header.rd == 1
    assert wire.respond(b"\x00\x01", zone=ZONE, udp=True).data is None
    answered = DNSRecord.question("web.shop.svc.cluster.local").reply()
    assert wire.respond(answered.pack(), zone=ZONE, udp=True).data is None


def test_results_and_types_for_the_metrics() -> None:
    def result(name: str, qtype: str) -> tuple[str, str]:
        reply = wire.respond(DNSRecord.question(name, qtype).pack(), zone=ZONE, udp=True)
        return reply.result, reply.qtype

    assert result("web.shop.svc.cluster.local", "A") == ("NOERROR", "A")
    assert result("nope.shop.svc.cluster.local", "AAAA") == ("NXDOMAIN", "AAAA")
    assert result("example.com", "MX") == ("REFUSED", "MX")
    assert result("example.com", "NAPTR") == ("REFUSED", "other")


def headless_with(count: int) -> Zone:
    services = {"big/pool": {"spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}}}
    endpoints = {"big/pool": {"subsets": [{"addresses": [{"ip": f"10.88.1.{i}"} for i in range(1, count + 1)],
                                           "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]}}
    return Zone(services=services, endpoints=endpoints)


def test_udp_replies_fit_the_client_and_tcp_carries_everything() -> None:
    zone = headless_with(60)  # 60 A records: about 1 KiB
    query = DNSRecord.question("pool.big.svc.cluster.local")
    udp = DNSRecord.parse(wire.respond(query.pack(), zone=zone, udp=True).data or b"")
    assert udp.header.tc == 1 and not udp.rr and udp.header.rcode == RCODE.NOERROR
    assert str(udp.q.qname) == "pool.big.svc.cluster.local."
    tcp = DNSRecord.parse(wire.respond(query.pack(), zone=zone, udp=False).data or b"")
    assert tcp.header.tc == 0 and len(tcp.rr) == 60
    query.add_ar(EDNS0(udp_len=4096))
    edns = DNSRecord.parse(wire.respond(query.pack(), zone=zone, udp=True).data or b"")
    assert edns.header.tc == 0 and len(edns.rr) == 60
    assert [rr.rclass for rr in edns.ar if rr.rtype == QTYPE.OPT] == [1232]


def test_only_plain_queries_with_one_question_are_answered() -> None:
    query = DNSRecord.question("web.shop.svc.cluster.local")
    query.header.opcode = 2  # STATUS
    assert wire.respond(query.pack(), zone=ZONE, udp=True).result == "NOTIMP"
    two = DNSRecord.question("web.shop.svc.cluster.local")
    two.add_question(*DNSRecord.question("db.shop.svc.cluster.local").questions)
    assert wire.respond(two.pack(), zone=ZONE, udp=True).result == "FORMERR"
