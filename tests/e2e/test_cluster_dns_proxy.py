"""Cluster DNS from inside a pod: busybox ``nslookup`` reads the pod's /etc/resolv.conf and asks the
kube-dns ClusterIP, which ``podling proxy`` sends on to ``podling dns`` on the pod network's gateway.

This cluster's DNS address is a random one of the service range's static band rather than
10.88.128.10, so that another cluster on this machine, with its own DNS and proxy, never
answers for this one; its DNS server listens on the gateway (10.88.0.1) at a free port.
Packets go from the pod to the ClusterIP (inside the bridge subnet) and on to the gateway:
nothing leaves the machine. The finalizer removes the proxy's rules and checks none is left.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Iterator

import pytest

from dns_process import DNSProcess
from podling_process import ControllerManagerProcess, KubeletProcess, PodlingProcess
from proxy_process import ProxyProcess, node_rules
from waiting import wait_for

NS = "dns-proxy-e2e"
IMAGE = "podling/busybox:1.35"


@dataclasses.dataclass
class Cluster:
    api: PodlingProcess
    dns: DNSProcess
    dns_ip: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("dns-proxy")
    dns_ip = f"10.88.128.{random.randint(11, 250)}"
    api = PodlingProcess(data_dir=root / "apiserver").start()
    node = f"dnsproxy-{uuid.uuid4().hex[:6]}"
    kubelet = KubeletProcess(server=api, node_name=node, root_dir=root / "kubelet",
                             args=("--address", "127.0.0.1", "--cluster-dns", dns_ip))
    manager = ControllerManagerProcess(server=api, log_dir=root / "controller-manager",
                                       args=("--controllers=endpoints",))
    proxy = ProxyProcess(server=api, node_name=node, log_dir=root / "proxy")
    dns = DNSProcess(server=api, log_dir=root / "dns", host="10.88.0.1", args=("--cluster-dns", dns_ip))
    try:
        for process in (kubelet, manager, proxy):
            process.start()
        api.kubectl("create", "namespace", NS)
        api.kubectl("run", "client", "-n", NS, f"--image={IMAGE}", "--restart=Never",
                    f"--overrides={{\"spec\": {{\"nodeName\": \"{node}\", \"terminationGracePeriodSeconds\": 0}}}}",
                    "--command", "--", "sleep", "3600")
        wait_for(lambda: api.kubectl_json("get", "pod", "client", "-n", NS)["status"].get("phase") == "Running",
                 timeout=60, what="the client pod to run (and so the pod network, with its gateway, to exist)")
        dns.start()
        yield Cluster(api=api, dns=dns, dns_ip=dns_ip)
    finally:
        try:
            proxy.cleanup()
            assert node_rules(node) == [], "rules of the node are left after cleanup"
        finally:
            for process in (dns, manager, kubelet):
                process.shut_down()
            kubelet.remove_containers()
            api.stop()


def nslookup(cluster: Cluster, name: str) -> str:
    result = cluster.api.kubectl("exec", "-n", NS, "client", "--", "nslookup", name, check=False)
    return result.stdout + result.stderr


def test_a_pod_resolves_a_service_through_the_kube_dns_cluster_ip(cluster: Cluster) -> None:
    api = cluster.api
    api.kubectl("create", "service", "clusterip", "web", "-n", NS, "--tcp=80:8080")
    ip = api.kubectl_json("get", "service", "web", "-n", NS)["spec"]["clusterIP"]
    name = f"web.{NS}.svc.cluster.local"
    output = wait_for(lambda: out if f"Address: {ip}" in (out := nslookup(cluster, name)) else None, timeout=30,
                      what="nslookup in the pod to answer through the kube-dns ClusterIP")
    assert f"Server:\t\t{cluster.dns_ip}" in output and f"Name:\t{name}" in output
    assert "NXDOMAIN" in nslookup(cluster, f"missing.{NS}.svc.cluster.local")
    metrics = cluster.dns.metrics()  # the answers came from this cluster's server
    assert 'podling_dns_queries_total{result="NOERROR",type="A"}' in metrics
    assert 'podling_dns_queries_total{result="NXDOMAIN",type="A"}' in metrics
