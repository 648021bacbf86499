"""Service ClusterIP and NodePort allocation end to end: a real API server (on each store) driven by
the real kubectl, with Kubernetes' messages; and a restarted server that keeps its allocations.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from podling_process import PodlingProcess
from waiting import wait_for

NS = "alloc-e2e"


@pytest.fixture(scope="module")
def api(podling: PodlingProcess) -> PodlingProcess:
    podling.kubectl("create", "namespace", NS)
    return podling


def service(api: PodlingProcess, name: str) -> dict:
    return api.kubectl_json("get", "service", name, "-n", NS)


def refused(api: PodlingProcess, *args: str) -> str:
    result = api.kubectl(*args, "-n", NS, check=False)
    assert result.returncode != 0, result.stdout
    return result.stderr.strip()


def created(api: PodlingProcess, *args: str) -> Callable[[], bool]:
    """A check for wait_for: kubectl succeeds (a released number may take a watch event to come free)."""
    return lambda: api.kubectl(*args, "-n", NS, check=False).returncode == 0


def test_kubectl_create_service_gets_addresses_and_ports(api: PodlingProcess) -> None:
    api.kubectl("create", "service", "clusterip", "web", "-n", NS, "--tcp=80:8080")
    api.kubectl("create", "service", "nodeport", "front", "-n", NS, "--tcp=80:8080")
    web, front = service(api, "web"), service(api, "front")
    for svc in (web, front):
        ip = ipaddress.IPv4Address(svc["spec"]["clusterIP"])
        assert ip in ipaddress.IPv4Network("10.88.128.0/17") and svc["spec"]["clusterIPs"] == [str(ip)]
    assert web["spec"]["clusterIP"] != front["spec"]["clusterIP"]
    assert 30000 <= front["spec"]["ports"][0]["nodePort"] <= 32767
    assert "nodePort" not in web["spec"]["ports"][0]
    row = api.kubectl("get", "service", "front", "-n", NS, "--no-headers").stdout.split()
    node_port = front["spec"]["ports"][0]["nodePort"]
    assert row[1:3] == ["NodePort", front["spec"]["clusterIP"]] and row[4] == f"80:{node_port}/TCP"


def test_chosen_numbers_are_honoured_once_and_conflicts_are_422(api: PodlingProcess) -> None:
    api.kubectl("create", "service", "nodeport", "chosen", "-n", NS, "--tcp=80:8080", "--node-port=30080")
    assert service(api, "chosen")["spec"]["ports"][0]["nodePort"] == 30080
    assert refused(api, "create", "service", "nodeport", "again", "--tcp=80:8080", "--node-port=30080") == (
        'error: failed to create NodePort service: Service "again" is invalid: spec.ports[0].nodePort: '
        "Invalid value: 30080: provided port is already allocated")
    assert refused(api, "create", "service", "nodeport", "low", "--tcp=80:8080", "--node-port=8080") == (
        'error: failed to create NodePort service: Service "low" is invalid: spec.ports[0].nodePort: '
        "Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767")
    api.kubectl("create", "service", "clusterip", "fixed", "-n", NS, "--tcp=53:53", "--clusterip=10.88.128.53")
    assert service(api, "fixed")["spec"]["clusterIP"] == "10.88.128.53"
    assert refused(api, "create", "service", "clusterip", "twin", "--tcp=53:53", "--clusterip=10.88.128.53") == (
        'error: failed to create ClusterIP service: Service "twin" is invalid: spec.clusterIPs: Invalid value: '
        '[]string{"10.88.128.53"}: failed to allocate IP 10.88.128.53: provided IP is already allocated')
    assert refused(api, "create", "service", "clusterip", "far", "--tcp=53:53", "--clusterip=10.0.0.1") == (
        'error: failed to create ClusterIP service: Service "far" is invalid: spec.clusterIPs: Invalid value: '
        '[]string{"10.0.0.1"}: failed to allocate IP 10.0.0.1: provided IP is not in the valid range. '
        "The range of valid IPs is 10.88.128.0/17")


def test_headless_services_keep_none(api: PodlingProcess) -> None:
    api.kubectl("create", "service", "clusterip", "pets", "-n", NS, "--clusterip=None")
    spec = service(api, "pets")["spec"]
    assert spec["clusterIP"] == "None" and spec["clusterIPs"] == ["None"]
    assert api.kubectl("get", "service", "pets", "-n", NS, "--no-headers").stdout.split()[2] == "None"


def test_updates_keep_allocations_and_cluster_ips_do_not_change(api: PodlingProcess) -> None:
    api.kubectl("create", "service", "nodeport", "kept", "-n", NS, "--tcp=80:8080")
    before = service(api, "kept")
    manifest = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kept", "namespace": NS},
                "spec": {"type": "NodePort", "selector": {"app": "kept"},
                         "ports": [{"name": "80-8080", "port": 80, "targetPort": 9090}]}}
    api.kubectl("replace", "-f", "-", input=json.dumps(manifest))
    after = service(api, "kept")
    assert after["spec"]["clusterIP"] == before["spec"]["clusterIP"]
    assert after["spec"]["ports"][0]["nodePort"] == before["spec"]["ports"][0]["nodePort"]
    assert after["spec"]["ports"][0]["targetPort"] == 9090
    message = refused(api, "patch", "service", "kept", "--type=merge",
                      "-p", json.dumps({"spec": {"clusterIP": "10.88.200.1", "clusterIPs": ["10.88.200.1"]}}))
    assert message == ('The Service "kept" is invalid: spec.clusterIPs[0]: Invalid value: []string{"10.88.200.1"}: '
                       "may not change once set")


def test_released_numbers_are_free_again(api: PodlingProcess) -> None:
    api.kubectl("create", "service", "nodeport", "first", "-n", NS, "--tcp=80:8080", "--node-port=30090")
    ip = service(api, "first")["spec"]["clusterIP"]
    api.kubectl("patch", "service", "first", "-n", NS, "--type=merge",
                "-p", json.dumps({"spec": {"type": "ClusterIP"}}))
    plain = service(api, "first")
    assert plain["spec"]["type"] == "ClusterIP" and "nodePort" not in plain["spec"]["ports"][0]
    wait_for(created(api, "create", "service", "nodeport", "second", "--tcp=80:8080", "--node-port=30090"),
             timeout=10, what="node port 30090 to be free once first stopped being a NodePort")
    api.kubectl("delete", "service", "first", "-n", NS)
    wait_for(created(api, "create", "service", "clusterip", "heir", "--tcp=80:8080", f"--clusterip={ip}"),
             timeout=10, what=f"{ip} to be free once its service was deleted")
    api.kubectl("delete", "service", "second", "-n", NS)
    wait_for(created(api, "create", "service", "nodeport", "third", "--tcp=80:8080", "--node-port=30090"),
             timeout=10, what="node port 30090 to be free once its service was deleted")


def test_a_restarted_server_keeps_its_allocations_within_its_ranges(tmp_path: Path) -> None:
    ranges = ("--service-cluster-ip-range", "10.88.250.0/24", "--service-node-port-range", "31000-31099")
    server = PodlingProcess(data_dir=tmp_path / "podling", args=ranges).start()
    try:
        server.kubectl("create", "service", "nodeport", "web", "--tcp=80:8080", "--node-port=31050")
        ip = server.kubectl_json("get", "service", "web")["spec"]["clusterIP"]
        assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("10.88.250.0/24")
        outside = server.kubectl("create", "service", "nodeport", "out", "--tcp=80:80", "--node-port=30080",
                                 check=False)
        assert "The range of valid ports is 31000-31099" in outside.stderr
    finally:
        server.stop()
    server = PodlingProcess(data_dir=tmp_path / "podling", args=ranges).start()
    try:
        port = server.kubectl("create", "service", "nodeport", "port", "--tcp=80:80", "--node-port=31050", check=False)
        assert "provided port is already allocated" in port.stderr
        address = server.kubectl("create", "service", "clusterip", "address", "--tcp=80:80", f"--clusterip={ip}",
                                 check=False)
        assert "provided IP is already allocated" in address.stderr
        server.kubectl("delete", "service", "web")
        wait_for(lambda: server.kubectl("create", "service", "nodeport", "port", "--tcp=80:80", "--node-port=31050",
                                        check=False).returncode == 0, timeout=10, what="the port to be free again")
    finally:
        server.stop()
