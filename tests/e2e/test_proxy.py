"""Services end to end: a real API server, controller manager (replicaset, deployment,
endpoints), Docker kubelet and ``podling proxy``, real connections.

A Deployment ``web`` runs pods that each serve their own hostname (busybox httpd) and are
Ready while ``/www/ready`` exists. Services get explicit cluster IPs and node ports, chosen at
random inside the service range and the node-port range so that concurrent clusters on the
machine do not collide. Traffic goes only to loopback, to cluster IPs inside the pods' bridge
subnet, and to the pods. The tests run in order: iptables mode first, then userspace mode.
The finalizer stops the proxy, runs ``podling proxy --cleanup`` and checks that no rule of
the node is left.
"""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dns_process import DNSProcess
from podling_process import ControllerManagerProcess, KubeletProcess, PodlingProcess
from proxy_process import ProxyProcess, dnat_targets, node_rules, node_tag
from waiting import wait_for

NS = "proxy-e2e"
IMAGE = "podling/busybox:1.35"
PERIOD, FAILURES = 1, 2  # the readiness probe: a pod failing it must leave within PERIOD * FAILURES + 1 s


def free_port(low: int, high: int) -> int:
    while True:
        port = random.randint(low, high)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def cluster_ip() -> str:
    """A random address of 10.88.128.0/17, leaving out .128.0/24 (kube-dns's 10.88.128.10 lives there)."""
    return f"10.88.{random.randint(129, 255)}.{random.randint(1, 254)}"


class Cluster:
    def __init__(self, *, api: PodlingProcess, kubelet: KubeletProcess, root: Path, dns_ip: str) -> None:
        self.api, self.kubelet, self.root = api, kubelet, root
        self.node = kubelet.node_name
        self.proxy = ProxyProcess(server=api, node_name=self.node, log_dir=root / "proxy")
        self.dns = DNSProcess(server=api, log_dir=root / "dns", host="10.88.0.1", args=("--cluster-dns", dns_ip))
        self.ips: dict[str, str] = {}  # service -> cluster IP
        self.node_ports: dict[str, int] = {}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.api.kubectl("-n", NS, *args, input=input, check=check).stdout

    def apply(self, obj: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def service(self, name: str, *, selector: str = "web", kind: str = "NodePort", port: int = 80,
                **spec: Any) -> None:
        self.ips[name] = cluster_ip()
        ports: dict[str, Any] = {"name": "http", "port": port, "targetPort": 8080}
        if kind != "ClusterIP":
            self.node_ports[name] = ports["nodePort"] = free_port(30000, 32767)
        self.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
                    "spec": {"type": kind, "clusterIP": self.ips[name], "selector": {"app": selector},
                             "ports": [ports], **spec}})

    def pods(self) -> dict[str, str]:
        """Ready web pods: name -> IP."""
        items = json.loads(self.kubectl("get", "pods", "-l", "app=web", "-o", "json"))["items"]
        return {p["metadata"]["name"]: p["status"]["podIP"] for p in items
                if not p["metadata"].get("deletionTimestamp")
                and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", ()))}

    def exec(self, pod: str, command: str) -> str:
        return self.kubectl("exec", pod, "--", "sh", "-c", command)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode().strip()


def hits(url: str, count: int = 30) -> list[str]:
    return [get(url) for _ in range(count)]


def web_deployment(node: str, replicas: int) -> dict[str, Any]:
    serve = "mkdir -p /www && hostname > /www/index.html && echo ok > /www/ready && exec httpd -f -p 8080 -h /www"
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                         "nodeName": node, "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "httpd", "image": IMAGE, "command": ["sh", "-c", serve],
                                         "ports": [{"containerPort": 8080, "name": "http"}],
                                         "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080},
                                                            "periodSeconds": PERIOD, "failureThreshold": FAILURES}}]}}}}


def wait_programmed(cluster: Cluster, service_port: str, count: int) -> list[str]:
    return wait_for(lambda: t if len(t := dnat_targets(cluster.node, service_port)) == count else None,
                    timeout=30, what=f"{count} endpoints of {service_port} in the rules", interval=0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("proxy-e2e")
    # This cluster's DNS Service address is its own (not 10.88.128.10), so that another cluster on the
    # machine never answers for it; its DNS server listens on the pods' gateway at a free port.
    dns_ip = f"10.88.128.{random.randint(11, 250)}"
    api = PodlingProcess(data_dir=root / "apiserver").start()
    kubelet = KubeletProcess(server=api, node_name=f"proxy-{uuid.uuid4().hex[:6]}", root_dir=root / "kubelet",
                             args=("--address", "127.0.0.1", "--node-status-update-frequency", "2",
                                   "--node-lease-renew-interval", "2", "--cluster-dns", dns_ip))
    manager = ControllerManagerProcess(server=api, log_dir=root / "controller-manager",
                                       args=("--controllers=replicaset,deployment,endpoints",))
    cluster = Cluster(api=api, kubelet=kubelet, root=root, dns_ip=dns_ip)
    try:
        kubelet.start()
        manager.start()
        cluster.proxy.start()
        api.kubectl("create", "namespace", NS)
        cluster.apply(web_deployment(cluster.node, 3))
        cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": NS},
                       "spec": {"nodeName": cluster.node, "terminationGracePeriodSeconds": 0,
                                "containers": [{"name": "client", "image": IMAGE, "command": ["sleep", "3600"]}]}})
        cluster.service("web")
        wait_for(lambda: len(cluster.pods()) == 3, timeout=60, what="three Ready web pods")
        cluster.dns.start()  # (once pods run, the pods' network and its gateway exist)
        wait_programmed(cluster, f"{NS}/web:http", 3)
        # Programmed before any pod asks: a UDP query sent earlier leaves an un-NATed conntrack
        # entry that its retries would follow for 30 s.
        wait_for(lambda: any("kube-system/kube-dns" in line and "-j DNAT" in line for line in node_rules(cluster.node)),
                 timeout=30, what="the kube-dns Service programmed")
        yield cluster
    finally:
        try:
            cluster.proxy.cleanup()
            assert node_rules(cluster.node) == [], "rules of the node are left after cleanup"
        finally:
            for process in (cluster.dns, manager, kubelet):
                process.shut_down()
            kubelet.remove_containers()
            api.stop()


# ---- iptables mode ----------------------------------------------------------------------------


def test_node_port_on_loopback_reaches_all_three_replicas(cluster: Cluster) -> None:
    seen = hits(f"http://127.0.0.1:{cluster.node_ports['web']}/")
    assert set(seen) == set(cluster.pods())
    assert "mode iptables" in cluster.proxy.output()


def test_cluster_ip_from_inside_a_pod_and_from_the_node(cluster: Cluster) -> None:
    url = f"http://{cluster.ips['web']}:80/"
    names = set(cluster.pods())
    assert cluster.exec("client", f"timeout 10 wget -qO- {url}").strip() in names
    assert {get(url) for _ in range(30)} == names


def test_a_pod_reaches_the_service_by_its_dns_name(cluster: Cluster) -> None:
    names = set(cluster.pods())
    for host in (f"web.{NS}.svc.cluster.local", "web"):  # (the short name through resolv.conf's search list)
        assert cluster.exec("client", f"timeout 10 wget -qO- http://{host}/").strip() in names


def test_a_pod_reaches_itself_through_its_service(cluster: Cluster) -> None:
    pod = sorted(cluster.pods())[0]
    answers = cluster.exec(pod, f"for i in $(seq 20); do timeout 5 wget -qO- http://{cluster.ips['web']}/; done")
    assert pod in answers.split()  # hairpin: 20 tries at 1 in 3 each


def test_session_affinity_client_ip_always_picks_the_same_pod(cluster: Cluster) -> None:
    cluster.service("sticky", sessionAffinity="ClientIP",
                    sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}})
    wait_programmed(cluster, f"{NS}/sticky:http", 3)
    assert len(set(hits(f"http://127.0.0.1:{cluster.node_ports['sticky']}/"))) == 1
    assert len(set(hits(f"http://{cluster.ips['sticky']}/"))) == 1
    assert any("--rcheck --seconds 600 --reap" in line for line in node_rules(cluster.node))


def test_a_service_without_endpoints_refuses_connections(cluster: Cluster) -> None:
    cluster.service("nothing", selector="none")
    wait_for(lambda: any(f'"{NS}/nothing:http has no endpoints"' in line for line in node_rules(cluster.node)),
             timeout=10, what="the REJECT rules of a service without endpoints")
    for host, port in (("127.0.0.1", cluster.node_ports["nothing"]), (cluster.ips["nothing"], 80)):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=5).close()


def test_load_balancer_gets_the_node_address_and_behaves_as_node_port(cluster: Cluster) -> None:
    port = free_port(18000, 18999)
    cluster.service("lb", kind="LoadBalancer", port=port)
    ingress = wait_for(lambda: cluster.api.kubectl_json("get", "svc", "-n", NS, "lb").get("status", {})
                       .get("loadBalancer", {}).get("ingress"), timeout=10, what="the load balancer's ingress")
    assert ingress == [{"ip": "127.0.0.1"}]
    wait_programmed(cluster, f"{NS}/lb:http", 3)
    names = set(cluster.pods())
    assert set(hits(f"http://127.0.0.1:{port}/")) == names
    assert set(hits(f"http://127.0.0.1:{cluster.node_ports['lb']}/")) == names
    events = cluster.api.kubectl_json("get", "events", "-n", NS, "--field-selector", "involvedObject.name=lb")
    assert "EnsuredLoadBalancer" in {e["reason"] for e in events["items"]}


def test_a_pod_failing_readiness_stops_getting_traffic_in_time(cluster: Cluster) -> None:
    pods = cluster.pods()
    victim = sorted(pods)[1]
    started = time.monotonic()
    cluster.exec(victim, "rm /www/ready")
    wait_for(lambda: f"{pods[victim]}:8080" not in dnat_targets(cluster.node, f"{NS}/web:http"),
             timeout=30, what=f"{victim} out of the rules", interval=0.05)
    elapsed = time.monotonic() - started
    assert elapsed <= PERIOD * FAILURES + 1, f"the unready pod left the rules after {elapsed:.2f}s"
    assert victim not in hits(f"http://127.0.0.1:{cluster.node_ports['web']}/")
    cluster.exec(victim, "echo ok > /www/ready")
    wait_programmed(cluster, f"{NS}/web:http", 3)


def test_scaling_up_adds_endpoints_that_get_traffic(cluster: Cluster) -> None:
    cluster.kubectl("scale", "deployment", "web", "--replicas=4")
    wait_for(lambda: len(cluster.pods()) == 4, timeout=60, what="four Ready web pods")
    wait_programmed(cluster, f"{NS}/web:http", 4)
    url, seen = f"http://127.0.0.1:{cluster.node_ports['web']}/", set()
    for _ in range(80):  # 1 in 4 per request: missing one pod in 80 is (3/4)^80, about 1e-10
        seen.add(get(url))
        if len(seen) == 4:
            break
    assert seen == set(cluster.pods())


def test_metrics_show_endpoints_rules_syncs_and_connections(cluster: Cluster) -> None:
    before = metric(cluster.proxy.metrics(), "podling_proxy_connections_total", service=f"{NS}/web")
    hits(f"http://127.0.0.1:{cluster.node_ports['web']}/", 10)
    text = cluster.proxy.metrics()
    assert metric(text, "podling_proxy_connections_total", service=f"{NS}/web") >= before + 10
    assert metric(text, "podling_proxy_endpoints", service=f"{NS}/web") == 4
    assert metric(text, "podling_proxy_endpoints", service=f"{NS}/nothing") == 0
    nat, filter_ = (metric(text, "podling_proxy_rules", table=t) for t in ("nat", "filter"))
    assert nat + filter_ == len(node_rules(cluster.node))
    assert metric(text, "podling_proxy_sync_rules_duration_seconds_count") >= 5


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{{re.escape(wanted)}\}})? (\S+)$" if wanted
                         else rf"^{re.escape(name)} (\S+)$", re.MULTILINE)
    found = pattern.search(text)
    assert found, f"{name}{{{wanted}}} not in:\n{text}"
    return float(found.group(1))


def test_deleting_a_service_removes_its_rules(cluster: Cluster) -> None:
    assert dnat_targets(cluster.node, f"{NS}/sticky:http")
    cluster.kubectl("delete", "service", "sticky", "nothing")
    wait_for(lambda: not any(f"{NS}/sticky:" in line or f"{NS}/nothing:" in line for line in node_rules(cluster.node)),
             timeout=10, what="the deleted services' rules gone", interval=0.1)
    with pytest.raises(ConnectionRefusedError):  # nothing listens there now
        socket.create_connection((cluster.ips["sticky"], 80), timeout=5).close()


def test_restarting_the_proxy_rebuilds_rules_without_duplicates(cluster: Cluster) -> None:
    rules = node_rules(cluster.node)
    assert len(rules) == len(set(rules)) and rules
    cluster.proxy.kill()  # a crash leaves the rules in place, and traffic keeps flowing
    assert node_rules(cluster.node) == rules
    assert get(f"http://127.0.0.1:{cluster.node_ports['web']}/") in cluster.pods()
    cluster.proxy.start()
    assert sorted(node_rules(cluster.node)) == sorted(rules)
    assert cluster.proxy.stop() == 0  # a clean stop (SIGTERM caught even right after "ready") removes every rule
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert f"PODLING-{node_tag(cluster.node)}-" not in saved
    cluster.proxy.start()
    assert sorted(node_rules(cluster.node)) == sorted(rules)
    assert set(hits(f"http://127.0.0.1:{cluster.node_ports['web']}/", 40)) == set(cluster.pods())


# ---- userspace mode ---------------------------------------------------------------------------


def test_userspace_mode_spreads_node_port_and_cluster_ip_connections(cluster: Cluster) -> None:
    assert cluster.proxy.stop() == 0
    assert node_rules(cluster.node) == []
    cluster.proxy.args = ("--proxy-mode", "userspace")
    cluster.proxy.start()
    assert "mode userspace" in cluster.proxy.output() and node_rules(cluster.node) == []
    names = set(cluster.pods())
    seen = hits(f"http://127.0.0.1:{cluster.node_ports['web']}/", 40)
    assert set(seen) == names and len(set(seen[:4])) == 4  # round-robin: four in a row, all different
    assert set(hits(f"http://{cluster.ips['web']}/", 8)) == names
    assert cluster.exec("client", f"timeout 10 wget -qO- http://{cluster.ips['web']}/").strip() in names
    text = cluster.proxy.metrics()
    assert metric(text, "podling_proxy_connections_total", service=f"{NS}/web") >= 49
    assert metric(text, "podling_proxy_bytes_total", service=f"{NS}/web", direction="out") > 0
    assert metric(text, "podling_proxy_bytes_total", service=f"{NS}/web", direction="in") > 0


def test_userspace_mode_honours_client_ip_affinity(cluster: Cluster) -> None:
    cluster.service("sticky2", sessionAffinity="ClientIP")
    url = f"http://127.0.0.1:{cluster.node_ports['sticky2']}/"
    wait_for(lambda: probe(url), timeout=10, what="the userspace listener of sticky2")
    assert len(set(hits(url))) == 1


def probe(url: str) -> bool:
    try:
        get(url)
    except (OSError, urllib.error.URLError):
        return False
    return True


def test_userspace_mode_is_chosen_when_iptables_cannot_be_used(cluster: Cluster) -> None:
    assert cluster.proxy.stop() == 0
    cluster.proxy.args = ()
    cluster.proxy.env = {"PATH": "/usr/bin:/bin"}  # iptables-save and iptables-restore live in /usr/sbin
    cluster.proxy.start()
    assert "iptables is not usable (iptables-save is not on PATH): running in userspace mode instead" \
        in cluster.proxy.output()
    assert set(hits(f"http://127.0.0.1:{cluster.node_ports['web']}/", 8)) == set(cluster.pods())
    assert node_rules(cluster.node) == []


# ---- podling up -------------------------------------------------------------------------------


def test_up_runs_the_proxy_and_removes_its_rules_on_shutdown(tmp_path: Path) -> None:
    node = f"proxy-up-{uuid.uuid4().hex[:6]}"
    server = PodlingProcess(data_dir=tmp_path, command="up", args=(
        "--node-name", node, "--address", "127.0.0.1", "--kubelet-port", "0", "--metrics-listen", "127.0.0.1:0",
        "--operator-listen", "127.0.0.1:0"))
    try:
        server.start()
        node_port, ip = free_port(30000, 32767), cluster_ip()
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo", "labels": {"app": "solo"}},
               "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [{
                   "name": "httpd", "image": IMAGE, "command": ["sh", "-c", "mkdir /www && hostname > /www/index.html "
                                                                           "&& exec httpd -f -p 8080 -h /www"],
                   "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "solo"},
                   "spec": {"type": "NodePort", "clusterIP": ip, "selector": {"app": "solo"},
                            "ports": [{"port": 80, "targetPort": 8080, "nodePort": node_port}]}}
        server.kubectl("apply", "-f", "-", input=json.dumps(service))
        wait_for(lambda: any('"default/solo has no endpoints"' in line for line in node_rules(node)), timeout=30,
                 what="the proxy of podling up rejecting solo while it has no endpoints")
        # (the default service account gets its token a moment after start: pods are refused until then)
        wait_for(lambda: server.kubectl("apply", "-f", "-", input=json.dumps(pod), check=False).returncode == 0,
                 timeout=30, what="pod solo created")
        wait_for(lambda: dnat_targets(node, "default/solo"), timeout=60, what="solo's endpoint in the rules")
        assert get(f"http://127.0.0.1:{node_port}/") == get(f"http://{ip}/") == "solo"
        server.stop()
        assert node_rules(node) == []
    finally:
        if server.running:
            server.kill()
        subprocess.run([sys.executable, "-m", "podling.cli.main", "proxy", "--cleanup", "--node-name", node],
                       capture_output=True, check=True, timeout=30)
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.podling.node={node}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
