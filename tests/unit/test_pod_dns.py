"""What a pod's /etc/resolv.conf says, by dnsPolicy and dnsConfig (the kubelet's rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podling.kubelet.dns import ClusterDNSConfig, pod_dns, read_resolv_conf, resolv_conf


@pytest.fixture
def config(tmp_path: Path) -> ClusterDNSConfig:
    node = tmp_path / "resolv.conf"
    node.write_text("# the node's\nnameserver 192.0.2.53\nnameserver 192.0.2.54 ; second\nsearch corp.example\n"
                    "options edns0 timeout:2\n")
    return ClusterDNSConfig(resolv_conf=node)


def pod(namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": namespace}, "spec": {"containers": [{"name": "c"}], **spec}}


def test_cluster_first_points_at_the_cluster_dns_with_kubernetes_search_domains(config: ClusterDNSConfig) -> None:
    settings = pod_dns(pod(), config=config)
    assert settings == {"servers": ["10.88.128.10"],
                        "searches": ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"],
                        "options": ["ndots:5"]}
    assert resolv_conf(settings) == ("nameserver 10.88.128.10\n"
                                     "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
                                     "options ndots:5\n")
    assert pod_dns(pod(dnsPolicy="ClusterFirstWithHostNet"), config=config)["servers"] == ["10.88.128.10"]


def test_default_and_fallbacks_use_the_node_resolv_conf(config: ClusterDNSConfig) -> None:
    node = {"servers": ["192.0.2.53", "192.0.2.54"], "searches": ["corp.example"], "options": ["edns0", "timeout:2"]}
    assert read_resolv_conf(config.resolv_conf) == node
    assert pod_dns(pod(dnsPolicy="Default"), config=config) == node
    assert pod_dns(pod(hostNetwork=True), config=config) == node  # ClusterFirst on the host network
    without = ClusterDNSConfig(servers=(), resolv_conf=config.resolv_conf)
    assert pod_dns(pod(), config=without) == node
    assert read_resolv_conf(Path("/nonexistent/resolv.conf")) == {"servers": [], "searches": [], "options": []}


def test_dns_config_is_merged_and_none_takes_only_it(config: ClusterDNSConfig) -> None:
    extra = {"nameservers": ["10.88.128.10", "192.0.2.1", "192.0.2.2"], "searches": ["svc.cluster.local", "x.example"],
             "options": [{"name": "ndots", "value": "2"}, {"name": "single-request"}]}
    merged = pod_dns(pod(dnsConfig=extra), config=config)
    assert merged["servers"] == ["10.88.128.10", "192.0.2.1", "192.0.2.2"]
    assert merged["searches"] == ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example",
                                  "x.example"]
    assert merged["options"] == ["ndots:2", "single-request"]
    assert pod_dns(pod(dnsPolicy="None", dnsConfig={"nameservers": ["192.0.2.9"]}), config=config) == {
        "servers": ["192.0.2.9"], "searches": [], "options": []}
    four = pod_dns(pod(dnsPolicy="Default", dnsConfig={"nameservers": ["192.0.2.1", "192.0.2.2"]}), config=config)
    assert four["servers"] == ["192.0.2.53", "192.0.2.54", "192.0.2.1"]  # the kubelet keeps three
