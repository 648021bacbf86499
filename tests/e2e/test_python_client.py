"""The official ``kubernetes`` Python client against a real ``podling apiserver`` (both stores)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError

from podling_process import PodlingProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(podling: PodlingProcess) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(podling.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def ns(api: client.ApiClient) -> str:
    name = f"py-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def _pod(name: str, labels: dict[str, str]) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="busybox:1.36")]),
    )


def test_crud(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cfg"), data={"k": "v"}))
    assert created.metadata.uid and created.metadata.resource_version
    read = core.read_namespaced_config_map("cfg", ns)
    assert read.data == {"k": "v"}
    read.data["k"] = "w"
    updated = core.replace_namespaced_config_map("cfg", ns, read)
    assert updated.data == {"k": "w"}
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    core.delete_namespaced_config_map("cfg", ns)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("cfg", ns)
    assert err.value.status == 404


def test_list_with_selectors_and_paging(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    for i in range(7):
        core.create_namespaced_pod(ns, _pod(f"p{i}", {"parity": "even" if i % 2 == 0 else "odd", "i": str(i)}))
    even = core.list_namespaced_pod(ns, label_selector="parity=even")
    assert sorted(p.metadata.name for p in even.items) == ["p0", "p2", "p4", "p6"]
    some = core.list_namespaced_pod(ns, label_selector="i in (1,2,3),parity!=odd")
    assert [p.metadata.name for p in some.items] == ["p2"]
    by_name = core.list_namespaced_pod(ns, field_selector="metadata.name=p5")
    assert [p.metadata.name for p in by_name.items] == ["p5"]
    pending = core.list_namespaced_pod(ns, field_selector="status.phase=Pending")
    assert len(pending.items) == 7
    names, token = [], None
    while True:
        page = core.list_namespaced_pod(ns, limit=3, _continue=token)
        names += [p.metadata.name for p in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert names == [f"p{i}" for i in range(7)]
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod(ns, label_selector="a in (b")
    assert err.value.status == 400


def test_watch_from_resource_version(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    first = core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a")))
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="b")))
    core.patch_namespaced_config_map("a", ns, {"data": {"x": "1"}})
    core.delete_namespaced_config_map("b", ns)
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_config_map, ns,
                                      resource_version=first.metadata.resource_version, timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            break
    assert seen == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]


def test_stale_update_conflicts(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"n": "0"}))
    mine, theirs = core.read_namespaced_config_map("c", ns), core.read_namespaced_config_map("c", ns)
    theirs.data = {"n": "1"}
    core.replace_namespaced_config_map("c", ns, theirs)
    mine.data = {"n": "2"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("c", ns, mine)
    assert err.value.status == 409
    assert core.read_namespaced_config_map("c", ns).data == {"n": "1"}


def test_invalid_object_gets_422_with_causes(api: client.ApiClient, ns: str) -> None:
    # The typed API validates client-side; the dynamic client sends the body as it is.
    pods = DynamicClient(api).resources.get(api_version="v1", kind="Pod")
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"},
            "spec": {"containers": [{"image": "busybox"}], "restartPolicy": 7}}
    with pytest.raises(DynamicApiError) as err:
        pods.create(body=body, namespace=ns)
    assert err.value.status == 422
    status = json.loads(err.value.body)
    assert status["reason"] == "Invalid"
    fields = {c["field"] for c in status["details"]["causes"]}
    assert "spec.containers[0].name" in fields and "spec.restartPolicy" in fields
    with pytest.raises(ApiException) as missing:
        client.CoreV1Api(api).read_namespaced_pod("bad", ns)
    assert missing.value.status == 404
