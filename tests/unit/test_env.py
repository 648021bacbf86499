"""A container's environment: $(VAR) expansion, the downward API's fields and resources.

The expansion cases are those of Kubernetes' own table (third_party/forked/golang/expansion
expand_test.go); the rest are the kubelet's rules for fieldRef and resourceFieldRef.
The API client here is never opened: nothing in these tests may reach an API server.
"""

from __future__ import annotations

from typing import Any

import pytest

from podling.client.config import ClientConfig
from podling.client.http import ApiClient
from podling.kubelet.env import EnvError, container_env, expand, format_map, object_field, references, resource_field

VARS = {"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("$(VAR_A)", "A"),
        ("___$(VAR_B)___", "___B___"),
        ("$(VAR_A)-$(VAR_A)", "A-A"),
        ("$(VAR_A)-1", "A-1"),
        ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
        ("f000-$$VAR_A", "f000-$VAR_A"),
        ("foo\\$(VAR_C)bar", "foo\\Cbar"),
        ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
        ("$(VAR_REF)", "$(VAR_A)"),  # a value is not expanded twice
        ("$(VAR_EMPTY)", ""),
        ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),  # escaped reference
        ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
        ("$$$$$$(VAR_A)", "$$$(VAR_A)"),
        ("$$$$$$$(VAR_A)", "$$$A"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),  # undefined stays as written
        ("$(VAR_A)$(UNKNOWN)", "A$(UNKNOWN)"),
        ("$(VAR_A", "$(VAR_A"),  # never closed
        ("$(", "$("),
        ("$", "$"),
        ("$VAR_A", "$VAR_A"),
        ("$()", "$()"),
        ("", ""),
        ("no references", "no references"),
        ("$(VAR_A)$", "A$"),
        ("héllo $(VAR_A) wörld", "héllo A wörld"),
    ],
)
def test_expand(text: str, expanded: str) -> None:
    assert expand(text, VARS) == expanded


def test_references_skip_escaped_ones() -> None:
    assert references("$(A)/$$(B)/$(C)/$(") == {"A", "C"}


def _client() -> ApiClient:
    return ApiClient(ClientConfig(server="https://127.0.0.1:1"))


POD: dict[str, Any] = {
    "metadata": {"name": "web-0", "namespace": "shop", "uid": "1234-abcd",
                 "labels": {"app": "web", "tier": "front"},
                 "annotations": {"note": 'say "hi"\n\tbye', "zz": "é☃"}},
    "spec": {
        "nodeName": "node-a",
        "serviceAccountName": "builder",
        "containers": [
            {"name": "app", "resources": {"limits": {"cpu": "500m", "memory": "128Mi"},
                                          "requests": {"cpu": "250m", "memory": "64Mi"}}},
            {"name": "sidecar", "resources": {"limits": {"cpu": "2"}}},
        ],
        "initContainers": [{"name": "init", "resources": {"requests": {"memory": "1Gi"}}}],
    },
    "status": {"podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.9"}, {"ip": "fd00::9"}], "hostIP": "192.168.1.2"},
}


def test_object_fields() -> None:
    assert object_field(POD, "metadata.name") == "web-0"
    assert object_field(POD, "metadata.namespace") == "shop"
    assert object_field(POD, "metadata.uid") == "1234-abcd"
    assert object_field(POD, "metadata.labels['app']") == "web"
    assert object_field(POD, "metadata.labels['missing']") == ""
    assert object_field(POD, "metadata.annotations['zz']") == "é☃"
    assert object_field(POD, "metadata.labels") == 'app="web"\ntier="front"'
    with pytest.raises(ValueError, match="unsupported fieldPath: spec.nodeName"):
        object_field(POD, "spec.nodeName")  # env only: the downward API volume cannot have it
    with pytest.raises(ValueError, match="does not support subscript"):
        object_field(POD, "metadata.name['x']")


def test_format_map_quotes_as_go() -> None:
    assert format_map({"b": 'say "hi"\n\tbye', "a": "\x01\x7f\\", "c": "é☃\u200b"}) == (
        'a="\\x01\\x7f\\\\"\nb="say \\"hi\\"\\n\\tbye"\nc="é☃\\u200b"')
    assert format_map({}) == ""


@pytest.mark.parametrize(
    ("container", "resource", "divisor", "value"),
    [
        ("app", "limits.cpu", None, "1"),  # 500m rounded up to whole cores
        ("app", "limits.cpu", "1m", "500"),
        ("app", "requests.cpu", "1m", "250"),
        ("app", "requests.cpu", "100m", "3"),  # 250m / 100m, rounded up
        ("app", "limits.memory", None, str(128 * 2**20)),
        ("app", "limits.memory", "1Mi", "128"),
        ("app", "requests.memory", "1M", "68"),  # 64Mi = 67.1M, rounded up
        ("app", "limits.memory", "0", str(128 * 2**20)),  # a zero divisor is 1
        ("sidecar", "requests.cpu", "1m", "2000"),  # no request: the limit, as the API server defaults it
        ("sidecar", "limits.memory", "1Mi", "4096"),  # no limit: the node's allocatable
        ("sidecar", "requests.memory", None, "0"),  # neither: 0
        ("init", "requests.memory", "1Gi", "1"),
        ("init", "limits.ephemeral-storage", "1Gi", "10"),
    ],
)
def test_resource_field(container: str, resource: str, divisor: str | None, value: str) -> None:
    selector = {"containerName": container, "resource": resource, **({"divisor": divisor} if divisor else {})}
    allocatable = {"cpu": "4", "memory": "4Gi", "ephemeral-storage": "10Gi"}
    assert resource_field(pod=POD, container=None, selector=selector, allocatable=allocatable) == value


def test_resource_field_errors() -> None:
    with pytest.raises(ValueError, match="container nope not found"):
        resource_field(pod=POD, container=None, selector={"containerName": "nope", "resource": "limits.cpu"},
                       allocatable={})
    with pytest.raises(ValueError, match="unsupported container resource : limits.gpu"):
        resource_field(pod=POD, container=POD["spec"]["containers"][0], selector={"resource": "limits.gpu"},
                       allocatable={})


async def test_field_and_resource_refs_in_env() -> None:
    container = {
        "name": "app",
        "resources": POD["spec"]["containers"][0]["resources"],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
            {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory", "divisor": "1Mi"}}},
            {"name": "SIDE_CPU", "valueFrom": {"resourceFieldRef": {"containerName": "sidecar",
                                                                    "resource": "limits.cpu"}}},
            {"name": "GREETING", "value": "$(POD_NAME) on $(NODE) at $(POD_IP), $$(POD_NAME) $(LATER)"},
            {"name": "LATER", "value": "later"},
            {"name": "EMPTY", "value": ""},
            {"name": "POD_NAME", "value": "renamed-$(POD_NAME)"},  # a later entry overrides, seeing the earlier
        ],
    }
    env = await container_env(api=_client(), pod=POD, container=container, pod_ip="10.0.0.77",
                              node_name="ignored-pod-has-one", host_ip="192.168.9.9")
    assert env == {
        "POD_NAME": "renamed-web-0", "POD_NAMESPACE": "shop", "POD_UID": "1234-abcd", "APP": "web",
        "NOTE": 'say "hi"\n\tbye', "NODE": "node-a", "SA": "builder", "POD_IP": "10.0.0.77",
        "POD_IPS": "10.0.0.77", "HOST_IP": "192.168.9.9", "CPU": "500", "MEM": "64", "SIDE_CPU": "2",
        "GREETING": "web-0 on node-a at 10.0.0.77, $(POD_NAME) $(LATER)", "LATER": "later", "EMPTY": "",
    }
    assert list(env)[0] == "POD_NAME"  # declaration order


async def test_pod_status_fills_in_what_the_kubelet_was_not_told() -> None:
    pod = {**POD, "spec": {**POD["spec"], "nodeName": ""}}
    container = {"name": "app", "env": [
        {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
        {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]}
    env = await container_env(api=_client(), pod=pod, container=container, node_name="node-b")
    assert env == {"IPS": "10.0.0.9,fd00::9", "HOST": "192.168.1.2", "NODE": "node-b"}


async def test_bad_field_ref_is_an_env_error() -> None:
    container = {"name": "app", "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}]}
    with pytest.raises(EnvError, match="unsupported fieldPath: spec.hostname"):
        await container_env(api=_client(), pod=POD, container=container)
