"""The proxy's pure parts: Services + Endpoints -> ServicePorts -> iptables-restore text, and
the userspace balancer's choices."""

from __future__ import annotations

import re
from typing import Any

import pytest

from podling.proxy import iptables as ipt
from podling.proxy.model import Endpoint, ServicePort, node_ingress_ips, service_ports
from podling.proxy.proxy import SyncBudget
from podling.proxy.userspace import Balancer

SETTINGS = ipt.Settings(tag="abc123", cluster_cidr="10.88.0.0/17")
P = SETTINGS.prefix


def service(name: str = "web", *, kind: str = "ClusterIP", cluster_ip: str = "10.88.128.20",
            ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"type": kind, "clusterIP": cluster_ip,
                     "ports": ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP",
                                                                 "targetPort": 8080}], **spec}}


def endpoints(*ready: str, not_ready: tuple[str, ...] = (), port: int = 8080, name: str = "http") -> dict[str, Any]:
    subset: dict[str, Any] = {"ports": [{"name": name, "port": port, "protocol": "TCP"}]}
    if ready:
        subset["addresses"] = [{"ip": ip} for ip in ready]
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": ip} for ip in not_ready]
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": "ns"},
            "subsets": [subset]}


def port(*eps: str, node_port: int = 0, affinity: int = 0, lb: tuple[str, ...] = (), cluster_ip: str = "10.88.128.20",
         protocol: str = "TCP", name: str = "web") -> ServicePort:
    return ServicePort(namespace="ns", name=name, port_name="http", protocol=protocol, cluster_ip=cluster_ip, port=80,
                       node_port=node_port, load_balancer_ips=lb, affinity_seconds=affinity,
                       endpoints=tuple(sorted(Endpoint(ip, 8080) for ip in eps)))


def rules_of(table: ipt.Table, chain: str) -> list[str]:
    return [rule[len(f"-A {chain} "):] for rule in table.rules if rule.startswith(f"-A {chain} ")]


# ---- model ------------------------------------------------------------------------------------


def test_only_ready_addresses_of_the_matching_port_are_endpoints() -> None:
    ep = endpoints("10.88.0.3", "10.88.0.2", "10.88.0.3", not_ready=("10.88.0.9",))
    ep["subsets"].append({"addresses": [{"ip": "10.88.0.7"}], "ports": [{"name": "metrics", "port": 9090}]})
    [sp] = service_ports(service(), ep)
    assert sp.endpoints == (Endpoint("10.88.0.2", 8080), Endpoint("10.88.0.3", 8080))
    assert (sp.key, sp.service, sp.cluster_ip, sp.port, sp.node_port) == ("ns/web:http", "ns/web", "10.88.128.20",
                                                                          80, 0)


def test_unnamed_port_udp_and_protocol_must_match() -> None:
    svc = service(ports=[{"port": 53, "protocol": "UDP"}])
    ep = {"subsets": [{"addresses": [{"ip": "10.88.0.1"}], "ports": [{"port": 53, "protocol": "UDP"},
                                                                     {"port": 54, "protocol": "TCP"}]}]}
    [sp] = service_ports(svc, ep)
    assert (sp.key, sp.protocol, sp.endpoints) == ("ns/web", "UDP", (Endpoint("10.88.0.1", 53),))


def test_headless_external_name_and_unallocated_services_are_not_proxied() -> None:
    assert service_ports(service(cluster_ip="None"), endpoints("10.88.0.2")) == []
    assert service_ports(service(kind="ExternalName", cluster_ip=""), None) == []
    assert service_ports(service(cluster_ip=""), endpoints("10.88.0.2")) == []


def test_node_ports_affinity_and_load_balancer_ips() -> None:
    ports = [{"name": "http", "port": 80, "nodePort": 30080}]
    assert service_ports(service(ports=ports), None)[0].node_port == 0  # a ClusterIP Service keeps no node port
    svc = service(kind="LoadBalancer", ports=ports, sessionAffinity="ClientIP")
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.2"}, {"hostname": "lb.example"}]}}
    [sp] = service_ports(svc, None)
    assert (sp.node_port, sp.load_balancer_ips, sp.affinity_seconds, sp.endpoints) == (30080, ("192.0.2.2",), 10800,
                                                                                        ())
    svc["spec"]["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 60}}
    assert service_ports(svc, None)[0].affinity_seconds == 60


def test_load_balancer_ingress_is_the_ready_nodes_addresses() -> None:
    def node(addresses: dict[str, str], ready: str = "True") -> dict[str, Any]:
        return {"status": {"conditions": [{"type": "Ready", "status": ready}],
                           "addresses": [{"type": t, "address": a} for t, a in addresses.items()]}}

    nodes = [node({"InternalIP": "10.0.0.2"}), node({"InternalIP": "10.0.0.3", "ExternalIP": "192.0.2.3"}),
             node({"InternalIP": "10.0.0.4"}, ready="Unknown"), node({"InternalIP": "10.0.0.2"})]
    assert node_ingress_ips(nodes) == ["10.0.0.2", "192.0.2.3"]


# ---- rendering --------------------------------------------------------------------------------


def test_cluster_ip_spreads_with_decreasing_probabilities() -> None:
    ruleset = ipt.render([port("10.88.0.4", "10.88.0.2", "10.88.0.3")], SETTINGS)
    svc = ipt.svc_chain(SETTINGS, port())
    assert rules_of(ruleset.nat, f"{P}SERVICES")[0] == (
        f'-d 10.88.128.20/32 -p tcp -m tcp --dport 80 -m comment --comment "ns/web:http cluster IP" -j {svc}')
    jumps = rules_of(ruleset.nat, svc)
    assert jumps[0].startswith("! -s 10.88.0.0/17 -d 10.88.128.20/32 ") and jumps[0].endswith(f"-j {P}MARK-MASQ")
    chances = [re.search(r"--probability (\S+)", rule) for rule in jumps[1:]]
    assert [c.group(1) if c else None for c in chances] == ["0.3333333333", "0.5000000000", None]
    targets = [rule.split("-j ")[-1] for rule in jumps[1:]]
    eps = ["10.88.0.2:8080", "10.88.0.3:8080", "10.88.0.4:8080"]
    assert targets == [ipt.sep_chain(SETTINGS, port(), ep) for ep in eps]
    for ep, sep in zip(eps, targets):
        ip = ep.split(":")[0]
        assert rules_of(ruleset.nat, sep) == [
            f'-s {ip}/32 -m comment --comment "ns/web:http" -j {P}MARK-MASQ',  # hairpin
            f'-p tcp -m comment --comment "ns/web:http" -m tcp -j DNAT --to-destination {ep}']
    assert ruleset.sep_services == {sep: "ns/web" for sep in targets}
    assert rules_of(ruleset.nat, f"{P}SERVICES")[-1].endswith(f"-m addrtype --dst-type LOCAL -j {P}NODEPORTS")
    assert rules_of(ruleset.nat, f"{P}POSTROUTING") == [
        "-m mark ! --mark 0x4000/0x4000 -j RETURN", "-j MARK --xor-mark 0x4000",
        '-m comment --comment "podling service traffic requiring SNAT" -j MASQUERADE --random-fully']
    assert all(len(chain) <= 28 for chain in ruleset.nat.chains + ruleset.filter.chains)


def test_session_affinity_checks_then_sets_recent_lists() -> None:
    sp = port("10.88.0.2", "10.88.0.3", affinity=600)
    ruleset = ipt.render([sp], SETTINGS)
    sep2, sep3 = (ipt.sep_chain(SETTINGS, sp, f"10.88.0.{i}:8080") for i in (2, 3))
    svc_rules = rules_of(ruleset.nat, ipt.svc_chain(SETTINGS, sp))[1:]
    assert svc_rules[:2] == [
        f'-m comment --comment "ns/web:http -> 10.88.0.{i}:8080" -m recent --name {sep} --mask 255.255.255.255 '
        f"--rsource --rcheck --seconds 600 --reap -j {sep}" for i, sep in ((2, sep2), (3, sep3))]
    assert "--probability 0.5000000000" in svc_rules[2] and svc_rules[3].endswith(f"-j {sep3}")
    assert rules_of(ruleset.nat, sep2)[1] == (
        f'-p tcp -m comment --comment "ns/web:http" -m recent --name {sep2} --mask 255.255.255.255 --rsource --set '
        f"-m tcp -j DNAT --to-destination 10.88.0.2:8080")


def test_node_port_and_load_balancer_ip_masquerade_then_reach_the_service() -> None:
    sp = port("10.88.0.2", node_port=30080, lb=("127.0.0.1",))
    ruleset = ipt.render([sp], SETTINGS)
    ext, svc = ipt.ext_chain(SETTINGS, sp), ipt.svc_chain(SETTINGS, sp)
    assert rules_of(ruleset.nat, f"{P}NODEPORTS") == [
        f'-p tcp -m tcp --dport 30080 -m comment --comment "ns/web:http" -j {ext}']
    assert f'-d 127.0.0.1/32 -p tcp -m tcp --dport 80 -m comment --comment "ns/web:http loadbalancer IP" -j {ext}' \
        in rules_of(ruleset.nat, f"{P}SERVICES")
    assert [rule.split("-j ")[-1] for rule in rules_of(ruleset.nat, ext)] == [f"{P}MARK-MASQ", svc]
    assert rules_of(ruleset.nat, f"{P}MARK-MASQ") == ["-j MARK --or-mark 0x4000"]
    assert rules_of(ruleset.filter, f"{P}FORWARD")[0].startswith("-m mark --mark 0x4000/0x4000 ")


def test_a_port_without_endpoints_is_rejected_in_the_filter_table() -> None:
    sp = port(node_port=30080, lb=("127.0.0.1",), protocol="UDP")
    ruleset = ipt.render([sp], SETTINGS)
    assert ruleset.nat.chains == [f"{P}SERVICES", f"{P}NODEPORTS", f"{P}POSTROUTING", f"{P}MARK-MASQ"]
    assert rules_of(ruleset.nat, f"{P}NODEPORTS") == []
    reject = ' -m comment --comment "ns/web:http has no endpoints" -j REJECT --reject-with icmp-port-unreachable'
    assert rules_of(ruleset.filter, f"{P}SERVICES") == [
        "-d 10.88.128.20/32 -p udp -m udp --dport 80" + reject,
        "-d 127.0.0.1/32 -p udp -m udp --dport 80" + reject,
        "-m addrtype --dst-type LOCAL -p udp -m udp --dport 30080" + reject]


def test_render_is_deterministic_and_names_are_per_tag() -> None:
    ports = [port("10.88.0.2", name="b"), port("10.88.0.3", name="a", node_port=30001)]
    first, second = ipt.render(ports, SETTINGS), ipt.render(list(reversed(ports)), SETTINGS)
    assert (first.nat, first.filter) == (second.nat, second.filter)
    other = ipt.Settings(tag="def456", cluster_cidr="10.88.0.0/17")
    assert not set(first.nat.chains) & set(ipt.render(ports, other).nat.chains)
    assert ipt.tag_for("node-1") == ipt.tag_for("node-1") != ipt.tag_for("node-2")


# ---- against what is on the node ------------------------------------------------------------


DOCKER_NAT = """\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
{ours}[3:180] -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
[0:0] -A POSTROUTING -s 10.88.0.0/16 ! -o br-1 -j MASQUERADE
{rules}COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
{filter_chains}[9:9] -A FORWARD -j DOCKER-USER
{filter_rules}COMMIT
"""


def saved(ruleset: ipt.Ruleset | None, *, extra_nat: str = "", extra_filter: str = "") -> dict[str, ipt.Saved]:
    """What iptables-save -c would print after a restore of ``ruleset`` (plus extra lines)."""
    ours = "".join(f":{c} - [0:0]\n" for c in ruleset.nat.chains) if ruleset else ""
    rules = "".join(f"[0:0] {r}\n" for r in ruleset.nat.rules) if ruleset else ""
    filter_chains = "".join(f":{c} - [0:0]\n" for c in ruleset.filter.chains) if ruleset else ""
    filter_rules = "".join(f"[0:0] {r}\n" for r in ruleset.filter.rules) if ruleset else ""
    if ruleset:
        for table, builtin, suffix, match in ipt.JUMPS:
            line = f"[0:0] -A {builtin} {match} -j {SETTINGS.chain(suffix)}\n"
            if table == "nat":
                rules += line
            else:
                filter_rules += line
    return ipt.parse_save(DOCKER_NAT.format(ours=ours, rules=rules + extra_nat, filter_chains=filter_chains,
                                            filter_rules=filter_rules + extra_filter))


def test_first_sync_declares_chains_and_inserts_each_jump_once() -> None:
    ruleset = ipt.render([port("10.88.0.2", node_port=30080)], SETTINGS)
    text = ipt.restore_input(ruleset, saved(None), SETTINGS)
    lines = text.splitlines()
    assert lines[0] == "*nat" and lines.count("COMMIT") == 2 and "*filter" in lines
    assert [line for line in lines if line.startswith("-I ")] == [
        f"-I {builtin} 1 {match} -j {SETTINGS.chain(suffix)}" for _, builtin, suffix, match in ipt.JUMPS]
    assert not [line for line in lines if line.startswith(("-D ", "-X "))]
    assert all(f":{chain} - [0:0]" in lines for chain in ruleset.nat.chains + ruleset.filter.chains)
    assert "DOCKER" not in text


def test_rebuild_rewrites_chains_without_duplicating_jumps_and_drops_stale_chains() -> None:
    before = ipt.render([port("10.88.0.2"), port("10.88.0.5", name="gone")], SETTINGS)
    duplicate = f'[0:0] -A OUTPUT -m comment --comment "podling service portals" -j {P}SERVICES\n'
    stray = f"[0:0] -A PREROUTING -j {P}NODEPORTS\n"
    current = saved(before, extra_nat=duplicate + stray)
    after = ipt.render([port("10.88.0.2")], SETTINGS)
    lines = ipt.restore_input(after, current, SETTINGS).splitlines()
    assert not [line for line in lines if line.startswith("-I ")]
    assert [line for line in lines if line.startswith("-D ")] == [
        f'-D OUTPUT -m comment --comment "podling service portals" -j {P}SERVICES', f"-D PREROUTING -j {P}NODEPORTS"]
    stale = sorted(set(before.nat.chains) - set(after.nat.chains))
    assert sorted(line[3:] for line in lines if line.startswith("-X ")) == stale and len(stale) == 2
    assert all(f":{chain} - [0:0]" in lines for chain in stale)  # flushed before deleted
    assert [line for line in lines if line.startswith("-A ")] == after.nat.rules + after.filter.rules


def test_cleanup_removes_only_our_chains_and_jumps() -> None:
    other = ipt.Settings(tag="fff000", cluster_cidr="10.88.0.0/17")
    neighbour = f":{other.chain('SERVICES')} - [0:0]\n[0:0] -A OUTPUT -j {other.chain('SERVICES')}\n"
    current = saved(ipt.render([port("10.88.0.2", affinity=5)], SETTINGS), extra_nat=neighbour)
    assert ipt.count_rules(current, SETTINGS) == len(ipt.render([port("10.88.0.2", affinity=5)], SETTINGS).nat.rules) \
        + len(ipt.render([], SETTINGS).filter.rules) + len(ipt.JUMPS)
    text = ipt.cleanup_input(current, SETTINGS)
    assert "DOCKER" not in text and other.prefix not in text
    lines = text.splitlines()
    assert len([line for line in lines if line.startswith("-D ")]) == len(ipt.JUMPS)
    ours = [c for table in current.values() for c in table.chains if c.startswith(P)]
    assert sorted(line[3:] for line in lines if line.startswith("-X ")) == sorted(ours)
    assert ipt.cleanup_input(saved(None), SETTINGS) == ""


def test_connections_are_the_dnat_counters_of_our_endpoint_chains() -> None:
    sp = port("10.88.0.2", "10.88.0.3")
    ruleset = ipt.render([sp], SETTINGS)
    sep2, sep3 = (ipt.sep_chain(SETTINGS, sp, f"10.88.0.{i}:8080") for i in (2, 3))
    text = (f"*nat\n:{sep2} - [0:0]\n:{sep3} - [0:0]\n[4:240] -A {sep2} -s 10.88.0.2/32 -j {P}MARK-MASQ\n"
            f"[7:420] -A {sep2} -p tcp -m tcp -j DNAT --to-destination 10.88.0.2:8080\n"
            f"[5:300] -A {sep3} -p tcp -m tcp -j DNAT --to-destination 10.88.0.3:8080\nCOMMIT\n")
    assert ipt.connections(ipt.parse_save(text)["nat"], ruleset.sep_services) == {"ns/web": 12}


# ---- userspace balancing ----------------------------------------------------------------------


def test_round_robin_over_ready_endpoints() -> None:
    balancer = Balancer(port("10.88.0.2", "10.88.0.3", "10.88.0.4"))
    firsts = [balancer.order("127.0.0.1", now=0.0)[0].ip for _ in range(6)]
    assert firsts == ["10.88.0.2", "10.88.0.3", "10.88.0.4"] * 2
    assert len(balancer.order("127.0.0.1", now=0.0)) == 3  # the others follow, for failover
    balancer.update(port())
    assert balancer.order("127.0.0.1", now=0.0) == []


@pytest.mark.parametrize("gap, same", [(59.0, True), (61.0, False)])
def test_client_ip_affinity_holds_within_its_timeout(gap: float, same: bool) -> None:
    balancer = Balancer(port("10.88.0.2", "10.88.0.3", "10.88.0.4", affinity=60))
    first = balancer.order("10.88.0.9", now=100.0)[0]
    assert {balancer.order("10.88.0.9", now=100.0 + i)[0] for i in range(10)} == {first}
    assert balancer.order("10.88.0.8", now=110.0)[0] != first  # another client takes the next turn
    # the timeout counts from the client's last connection (at 109); once past it, the next turn decides
    assert (balancer.order("10.88.0.9", now=109.0 + gap)[0] == first) is same


def test_affinity_moves_when_the_endpoint_is_no_longer_ready() -> None:
    balancer = Balancer(port("10.88.0.2", "10.88.0.3", affinity=60))
    first = balancer.order("10.88.0.9", now=0.0)[0]
    remaining = "10.88.0.3" if first.ip == "10.88.0.2" else "10.88.0.2"
    balancer.update(port(remaining, affinity=60))
    assert {balancer.order("10.88.0.9", now=float(i))[0].ip for i in range(5)} == {remaining}


def test_syncs_come_in_a_burst_of_two_then_one_per_min_sync_period() -> None:
    budget = SyncBudget(burst=2, period=10.0)
    waits = [budget.reserve() for _ in range(4)]
    assert waits[:2] == [0.0, 0.0]
    assert 9.9 < waits[2] <= 10.0 and 19.9 < waits[3] <= 20.0  # reservations queue up
    with pytest.raises(ValueError):
        SyncBudget(burst=2, period=0)
