"""Cluster DNS end to end: a real API server, controller manager (endpoints), kubelet with Docker and
``podling dns`` on a loopback port, queried with real DNS messages over UDP and TCP; and what pods'
/etc/resolv.conf says, read with ``kubectl exec``.

Every query goes to the DNS process's loopback port; the pods' node resolv.conf names a
documentation address (192.0.2.53) that nothing ever sends to.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from dnslib import QTYPE, RCODE

from dns_process import DNSProcess
from podling_process import ControllerManagerProcess, KubeletProcess, PodlingProcess
from waiting import wait_for

NS = "dns-e2e"
DOMAIN = "cluster.local"
IMAGE = "podling/busybox:1.35"


@dataclasses.dataclass
class Cluster:
    api: PodlingProcess
    kubelet: KubeletProcess
    dns: DNSProcess


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    api = PodlingProcess(data_dir=tmp_path_factory.mktemp("apiserver")).start()
    root = tmp_path_factory.mktemp("kubelet")
    (root / "node-resolv.conf").write_text("nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n")
    kubelet = KubeletProcess(server=api, node_name=f"dns-{uuid.uuid4().hex[:6]}", root_dir=root, args=(
        "--address", "127.0.0.1", "--resolv-conf", str(root / "node-resolv.conf")))
    manager = ControllerManagerProcess(server=api, log_dir=tmp_path_factory.mktemp("controller-manager"),
                                       args=("--controllers", "endpoints"))
    dns = DNSProcess(server=api, log_dir=tmp_path_factory.mktemp("dns"))
    try:
        for process in (kubelet, manager, dns):
            process.start()
        api.kubectl("create", "namespace", NS)
        yield Cluster(api=api, kubelet=kubelet, dns=dns)
    finally:
        for process in (dns, manager, kubelet):
            process.shut_down()
        kubelet.remove_containers()
        api.stop()


def apply(api: PodlingProcess, obj: dict[str, Any]) -> None:
    api.kubectl("apply", "-f", "-", input=json.dumps(obj))


def answers(reply: Any) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr)


def resolves(dns: DNSProcess, name: str, qtype: str = "A", *, tcp: bool = False) -> Any:
    """A check for wait_for: the answers to ``name`` once there are some."""
    return lambda: answers(dns.query(name, qtype, tcp=tcp))


def sleeper(name: str, node: str, *, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "3600"]}], **spec}}


def running_ip(api: PodlingProcess, name: str) -> str:
    def check() -> str:
        pod = api.kubectl_json("get", "pod", name, "-n", NS)
        status = pod.get("status") or {}
        return status.get("podIP", "") if status.get("phase") == "Running" else ""
    return wait_for(check, timeout=60, what=f"pod {name} to run")


def test_a_service_name_resolves_to_its_cluster_ip_over_udp_and_tcp(cluster: Cluster) -> None:
    api, dns = cluster.api, cluster.dns
    api.kubectl("create", "service", "clusterip", "web", "-n", NS, "--tcp=80:8080")
    ip = api.kubectl_json("get", "service", "web", "-n", NS)["spec"]["clusterIP"]
    name = f"web.{NS}.svc.{DOMAIN}"
    assert wait_for(resolves(dns, name), timeout=10, what="the service's A record") == [ip]
    assert answers(dns.query(name, tcp=True)) == [ip]
    reply = dns.query(name)
    assert reply.header.aa == 1 and reply.rr[0].ttl == 5 and reply.header.rcode == RCODE.NOERROR

    srv = dns.query(f"_80-8080._tcp.web.{NS}.svc.{DOMAIN}", "SRV")
    assert answers(srv) == [f"0 100 80 {name}."]
    assert [(str(rr.rname), str(rr.rdata)) for rr in srv.ar if rr.rtype == QTYPE.A] == [(f"{name}.", ip)]


def test_a_headless_service_answers_with_its_ready_pods(cluster: Cluster) -> None:
    api, dns, node = cluster.api, cluster.dns, cluster.kubelet.node_name
    apply(api, sleeper("db-a", node, labels={"app": "db"}, hostname="db-0", subdomain="db"))
    apply(api, sleeper("db-b", node, labels={"app": "db"}))
    apply(api, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": NS},
                "spec": {"clusterIP": "None", "selector": {"app": "db"},
                         "ports": [{"name": "pg", "port": 5432, "targetPort": 5432}]}})
    first, second = running_ip(api, "db-a"), running_ip(api, "db-b")
    name = f"db.{NS}.svc.{DOMAIN}"
    assert wait_for(lambda: (ips := answers(dns.query(name))) == sorted([first, second]) and ips, timeout=30,
                    what="both pods behind the headless service") == sorted([first, second])
    assert answers(dns.query(f"db-0.{name}")) == [first]
    assert answers(dns.query(f"{second.replace('.', '-')}.{name}")) == [second]
    assert answers(dns.query(f"_pg._tcp.{name}", "SRV")) == sorted(
        [f"0 50 5432 db-0.{name}.", f"0 50 5432 {second.replace('.', '-')}.{name}."])

    api.kubectl("delete", "pod", "db-b", "-n", NS, "--wait=false")
    assert wait_for(lambda: (ips := answers(dns.query(name))) == [first] and ips, timeout=30,
                    what="the deleted pod to leave the answer") == [first]


def test_unknown_names_are_nxdomain_and_other_domains_refused(cluster: Cluster) -> None:
    api, dns = cluster.api, cluster.dns
    assert dns.query(f"missing.{NS}.svc.{DOMAIN}").header.rcode == RCODE.NXDOMAIN
    api.kubectl("create", "service", "clusterip", "brief", "-n", NS, "--tcp=80:80")
    name = f"brief.{NS}.svc.{DOMAIN}"
    wait_for(resolves(dns, name), timeout=10, what="the new service")
    api.kubectl("delete", "service", "brief", "-n", NS)
    wait_for(lambda: dns.query(name).header.rcode == RCODE.NXDOMAIN, timeout=10, what="NXDOMAIN once deleted")
    refused = dns.query("example.com")
    assert refused.header.rcode == RCODE.REFUSED and not refused.rr
    assert dns.query("example.com", tcp=True).header.rcode == RCODE.REFUSED

    metrics = dns.metrics()
    assert 'podling_dns_queries_total{result="REFUSED",type="A"} 2.0' in metrics
    assert 'podling_dns_queries_total{result="NXDOMAIN",type="A"}' in metrics


def test_the_kube_dns_service_and_endpoints_point_at_the_server_and_are_put_back(cluster: Cluster) -> None:
    api, dns = cluster.api, cluster.dns
    service = wait_for(lambda: api.kubectl_json("get", "services", "-n", "kube-system")["items"], timeout=10,
                       what="the kube-dns Service")[0]
    assert service["metadata"]["name"] == "kube-dns" and service["spec"]["clusterIP"] == "10.88.128.10"
    assert [(p["name"], p["port"], p["protocol"]) for p in service["spec"]["ports"]] == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]
    assert "selector" not in service["spec"]
    endpoints = api.kubectl_json("get", "endpoints", "kube-dns", "-n", "kube-system")
    assert endpoints["subsets"] == [{"addresses": [{"ip": "127.0.0.1"}],
                                     "ports": [{"name": "dns", "port": dns.port, "protocol": "UDP"},
                                               {"name": "dns-tcp", "port": dns.port, "protocol": "TCP"}]}]
    assert answers(dns.query(f"kube-dns.kube-system.svc.{DOMAIN}")) == ["10.88.128.10"]

    api.kubectl("delete", "service", "kube-dns", "-n", "kube-system")
    again = wait_for(lambda: next((s for s in api.kubectl_json("get", "services", "-n", "kube-system")["items"]
                                   if s["metadata"]["uid"] != service["metadata"]["uid"]), None),
                     timeout=15, what="kube-dns to be made again")
    assert again["spec"]["clusterIP"] == "10.88.128.10"
    api.kubectl("patch", "endpoints", "kube-dns", "-n", "kube-system", "--type=merge",
                "-p", json.dumps({"subsets": [{"addresses": [{"ip": "10.88.0.99"}], "ports": [{"port": 53}]}]}))
    wait_for(lambda: api.kubectl_json("get", "endpoints", "kube-dns", "-n", "kube-system")["subsets"][0]
             ["addresses"] == [{"ip": "127.0.0.1"}], timeout=15, what="the endpoints to be put back")


def test_pods_get_the_resolv_conf_of_their_dns_policy_in_every_container(cluster: Cluster) -> None:
    api, node = cluster.api, cluster.kubelet.node_name
    first = sleeper("cluster-first", node)
    first["spec"]["containers"].append({"name": "second", "image": IMAGE, "command": ["sleep", "3600"]})
    apply(api, first)
    apply(api, sleeper("node-default", node, dnsPolicy="Default"))
    apply(api, sleeper("custom", node, dnsPolicy="None", dnsConfig={
        "nameservers": ["10.88.128.10"], "searches": ["x.example"], "options": [{"name": "ndots", "value": "2"}]}))
    for name in ("cluster-first", "node-default", "custom"):
        running_ip(api, name)

    def resolv(pod: str, container: str = "main") -> str:
        return api.kubectl("exec", "-n", NS, pod, "-c", container, "--", "cat", "/etc/resolv.conf").stdout

    cluster_first = (f"nameserver 10.88.128.10\nsearch {NS}.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN} corp.example\n"
                     "options ndots:5\n")
    assert resolv("cluster-first") == cluster_first and resolv("cluster-first", "second") == cluster_first
    assert resolv("node-default") == "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"
    assert resolv("custom") == "nameserver 10.88.128.10\nsearch x.example\noptions ndots:2\n"
    write = api.kubectl("exec", "-n", NS, "cluster-first", "--", "sh", "-c",
                        "echo nameserver 192.0.2.1 >> /etc/resolv.conf", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
