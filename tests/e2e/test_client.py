"""podling's own API client, informer and event recorder against a real ``podling apiserver``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from podling.api.resources import Resource, find
from podling.client.config import ClientConfig, load_kubeconfig
from podling.client.events import EventRecorder
from podling.client.http import (
    ApiClient,
    ApiError,
    TransportError,
    is_already_exists,
    is_conflict,
    is_gone,
    is_not_found,
)
from podling.client.informer import Informer
from podling_process import PodlingProcess

pytestmark = pytest.mark.e2e

Obj = dict[str, Any]


def _resource(group: str, plural: str) -> Resource:
    resource = find(group=group, version="v1", plural=plural)
    assert resource is not None
    return resource


NAMESPACES = _resource("", "namespaces")
CONFIGMAPS = _resource("", "configmaps")
PODS = _resource("", "pods")
DEPLOYMENTS = _resource("apps", "deployments")


@pytest.fixture
async def api(podling: PodlingProcess) -> AsyncIterator[ApiClient]:
    async with ApiClient(load_kubeconfig(podling.kubeconfig)) as client:
        yield client


async def _namespace(api: ApiClient, prefix: str = "c") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await api.create(NAMESPACES, {"metadata": {"name": name}})
    return name


@pytest.fixture
async def ns(api: ApiClient) -> str:
    return await _namespace(api)


def _configmap(name: str, **data: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


async def _eventually(check: Callable[[], bool], *, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the condition")
        await asyncio.sleep(0.05)


class Recorder:
    """What an informer announced, as (type, key, data) — the handlers' whole view."""

    def __init__(self, informer: Informer) -> None:
        self.seen: list[tuple[str, str, Obj]] = []
        informer.add_handlers(
            on_add=lambda obj: self.seen.append(("add", _key(obj), obj.get("data") or {})),
            on_update=lambda old, new: self.seen.append(("update", _key(new), new.get("data") or {})),
            on_delete=lambda obj: self.seen.append(("delete", _key(obj), obj.get("data") or {})),
        )

    def of(self, key: str) -> list[tuple[str, Obj]]:
        return [(kind, data) for kind, k, data in self.seen if k == key]


def _key(obj: Obj) -> str:
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


@contextlib.asynccontextmanager
async def _running(informer: Informer) -> AsyncIterator[Informer]:
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 15)
        yield informer
    finally:
        informer.stop()
        await asyncio.wait_for(task, 5)


# ---- requests and errors -------------------------------------------------------------------


async def test_crud_and_error_codes(api: ApiClient, ns: str) -> None:
    created = await api.create(CONFIGMAPS, _configmap("a", x="1"), namespace=ns)
    assert created["metadata"]["uid"] and created["metadata"]["namespace"] == ns
    assert (await api.get(CONFIGMAPS, namespace=ns, name="a"))["data"] == {"x": "1"}

    with pytest.raises(ApiError) as err:
        await api.create(CONFIGMAPS, _configmap("a"), namespace=ns)
    assert is_already_exists(err.value) and not is_conflict(err.value)
    assert (err.value.code, err.value.reason) == (409, "AlreadyExists")

    updated = await api.update(CONFIGMAPS, {**created, "data": {"x": "2"}})
    with pytest.raises(ApiError) as err:
        await api.update(CONFIGMAPS, {**created, "data": {"x": "3"}})  # the resourceVersion we read is stale
    assert is_conflict(err.value) and "the object has been modified" in err.value.message

    patched = await api.patch(CONFIGMAPS, namespace=ns, name="a", body={"data": {"y": "1"}})
    assert patched["data"] == {"x": "2", "y": "1"}
    patched = await api.patch(CONFIGMAPS, namespace=ns, name="a", patch_type="json",
                              body=[{"op": "remove", "path": "/data/x"}])
    assert patched["data"] == {"y": "1"}
    assert int(patched["metadata"]["resourceVersion"]) > int(updated["metadata"]["resourceVersion"])

    with pytest.raises(ApiError) as err:
        await api.delete(CONFIGMAPS, namespace=ns, name="a", preconditions={"uid": "not-the-uid"})
    assert is_conflict(err.value) and "Precondition failed" in err.value.message
    await api.delete(CONFIGMAPS, namespace=ns, name="a", preconditions={"uid": created["metadata"]["uid"]})
    with pytest.raises(ApiError) as err:
        await api.get(CONFIGMAPS, namespace=ns, name="a")
    assert is_not_found(err.value) and err.value.status["kind"] == "Status"
    assert err.value.message == 'configmaps "a" not found'

    with pytest.raises(ApiError) as err:
        await api.create(CONFIGMAPS, {"metadata": {"name": "Not_A_Name"}}, namespace=ns)
    assert err.value.code == 422 and err.value.reason == "Invalid"


async def test_list_pages_and_selectors(api: ApiClient, ns: str) -> None:
    for i in range(5):
        cm = _configmap(f"cm{i}")
        cm["metadata"]["labels"] = {"parity": "even" if i % 2 == 0 else "odd"}
        await api.create(CONFIGMAPS, cm, namespace=ns)
    items, rv, token = await api.list(CONFIGMAPS, namespace=ns, limit=2)
    assert [i["metadata"]["name"] for i in items] == ["cm0", "cm1"] and token and int(rv) > 0
    assert all(i["kind"] == "ConfigMap" and i["apiVersion"] == "v1" for i in items)
    rest, rest_rv, end = await api.list(CONFIGMAPS, namespace=ns, continue_=token)
    assert [i["metadata"]["name"] for i in rest] == ["cm2", "cm3", "cm4"] and end == "" and rest_rv == rv
    odd, _, _ = await api.list(CONFIGMAPS, namespace=ns, label_selector="parity=odd")
    assert [i["metadata"]["name"] for i in odd] == ["cm1", "cm3"]
    named, _, _ = await api.list(CONFIGMAPS, namespace=ns, field_selector="metadata.name=cm4")
    assert [i["metadata"]["name"] for i in named] == ["cm4"]
    everywhere, _, _ = await api.list(CONFIGMAPS, label_selector="parity=even")  # all namespaces
    assert {i["metadata"]["name"] for i in everywhere if i["metadata"]["namespace"] == ns} == {"cm0", "cm2", "cm4"}


async def test_status_scale_and_binding(api: ApiClient, ns: str) -> None:
    pod = await api.create(PODS, {"metadata": {"name": "p"},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, namespace=ns)
    await api.bind(pod, "node-1")
    bound = await api.get(PODS, namespace=ns, name="p")
    assert bound["spec"]["nodeName"] == "node-1"
    with pytest.raises(ApiError) as err:
        await api.bind(pod, "node-2")
    assert is_conflict(err.value)
    bound["status"]["phase"] = "Running"
    written = await api.update_status(PODS, bound)
    assert written["status"]["phase"] == "Running" and written["spec"]["nodeName"] == "node-1"

    deployment = {"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    await api.create(DEPLOYMENTS, deployment, namespace=ns)
    scale = await api.patch(DEPLOYMENTS, namespace=ns, name="d", subresource="scale", body={"spec": {"replicas": 4}})
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 4
    assert (await api.get(DEPLOYMENTS, namespace=ns, name="d", subresource="scale"))["spec"]["replicas"] == 4
    strategic = await api.patch(DEPLOYMENTS, namespace=ns, name="d", patch_type="strategic", body={
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "j"}]}}}})
    assert [c["image"] for c in strategic["spec"]["template"]["spec"]["containers"]] == ["j"]


async def test_tokens_and_tls_are_checked(podling: PodlingProcess) -> None:
    config = load_kubeconfig(podling.kubeconfig)
    wrong_token = ClientConfig(server=config.server, token="wrong", ca_data=config.ca_data)
    async with ApiClient(wrong_token) as api:
        with pytest.raises(ApiError) as err:
            await api.list(NAMESPACES)
        assert (err.value.code, err.value.reason) == (401, "Unauthorized")
    system_cas = ClientConfig(server=config.server, token=config.token)  # does not trust podling's CA
    async with ApiClient(system_cas) as api:
        with pytest.raises(TransportError, match="certificate"):
            await api.list(NAMESPACES)
    unopened = ApiClient(config)
    with pytest.raises(RuntimeError, match="unopened"):
        await unopened.list(NAMESPACES)


async def test_watch_streams_changes_and_ends_at_the_timeout(api: ApiClient, ns: str) -> None:
    created = await api.create(CONFIGMAPS, _configmap("w", v="1"), namespace=ns)
    rv = created["metadata"]["resourceVersion"]

    async def writes() -> None:
        await api.patch(CONFIGMAPS, namespace=ns, name="w", body={"data": {"v": "2"}})
        await api.delete(CONFIGMAPS, namespace=ns, name="w")

    writer = asyncio.create_task(writes())
    events = [(kind, obj["metadata"]["name"]) async for kind, obj in
              api.watch(CONFIGMAPS, namespace=ns, resource_version=rv, timeout_seconds=2)]
    await writer
    assert events == [("MODIFIED", "w"), ("DELETED", "w")]


async def test_many_watches_do_not_starve_requests(api: ApiClient, ns: str) -> None:
    """More open watches than the request pool has connections: requests still go through."""
    _, rv, _ = await api.list(CONFIGMAPS, namespace=ns)
    watches = []
    for _ in range(110):
        watches.append(asyncio.create_task(api.watch(CONFIGMAPS, namespace=ns, resource_version=rv,
                                                     timeout_seconds=30).__anext__()))
    try:
        await asyncio.sleep(1)
        created = await asyncio.wait_for(api.create(CONFIGMAPS, _configmap("still-served"), namespace=ns), 10)
        assert created["metadata"]["name"] == "still-served"
        done, _ = await asyncio.wait(watches, timeout=10)
        assert len(done) == 110 and all(t.result()[0] == "ADDED" for t in done)  # every watch was live
    finally:
        for task in watches:
            task.cancel()
        await asyncio.gather(*watches, return_exceptions=True)


# ---- the informer ------------------------------------------------------------------------


async def test_informer_sees_changes_made_by_another_client(api: ApiClient, podling: PodlingProcess, ns: str) -> None:
    await api.create(CONFIGMAPS, {**_configmap("before"), "metadata": {"name": "before", "labels": {"team": "a"}}},
                     namespace=ns)
    informer = Informer(api, CONFIGMAPS, namespace=ns)
    informer.add_index("team", lambda obj: [(obj["metadata"].get("labels") or {}).get("team", "")])
    seen = Recorder(informer)
    assert not informer.has_synced
    async with _running(informer), ApiClient(load_kubeconfig(podling.kubeconfig)) as other:
        assert informer.has_synced and informer.keys() == [f"{ns}/before"]
        created = await other.create(CONFIGMAPS, {**_configmap("new", v="1"),
                                                  "metadata": {"name": "new", "labels": {"team": "a"}}}, namespace=ns)
        await other.patch(CONFIGMAPS, namespace=ns, name="new",
                          body={"data": {"v": "2"}, "metadata": {"labels": {"team": "b"}}})
        await other.delete(CONFIGMAPS, namespace=ns, name="before")
        await _eventually(lambda: len(seen.seen) == 4)
        assert seen.seen == [("add", f"{ns}/before", {}), ("add", f"{ns}/new", {"v": "1"}),
                             ("update", f"{ns}/new", {"v": "2"}), ("delete", f"{ns}/before", {})]
        cached = informer.get(f"{ns}/new")
        assert cached is not None and cached["data"] == {"v": "2"}
        assert int(cached["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
        assert [o["metadata"]["name"] for o in informer.by_index("team", "b")] == ["new"]
        assert informer.by_index("team", "a") == []

        late = Recorder(informer)  # a handler added late is told about what is cached
        assert late.seen == [("add", f"{ns}/new", {"v": "2"})]


async def test_informer_resync_replays_updates(api: ApiClient, ns: str) -> None:
    await api.create(CONFIGMAPS, _configmap("r"), namespace=ns)
    informer = Informer(api, CONFIGMAPS, namespace=ns, resync_period=0.2)
    seen = Recorder(informer)
    async with _running(informer):
        await _eventually(lambda: len(seen.of(f"{ns}/r")) >= 3)
    assert seen.of(f"{ns}/r")[:3] == [("add", {}), ("update", {}), ("update", {})]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_informer_converges_after_the_server_restarts(store_url: str, tmp_path: Path) -> None:
    server = PodlingProcess(data_dir=tmp_path, store=store_url, args=("--listen", f"127.0.0.1:{_free_port()}"))
    await asyncio.to_thread(server.start)
    try:
        async with ApiClient(load_kubeconfig(server.kubeconfig)) as api:
            ns = await _namespace(api, "restart")
            await api.create(CONFIGMAPS, _configmap("a"), namespace=ns)
            await api.create(CONFIGMAPS, _configmap("b"), namespace=ns)
            informer = Informer(api, CONFIGMAPS, namespace=ns)
            seen = Recorder(informer)
            async with _running(informer):
                await asyncio.to_thread(server.stop)
                await asyncio.to_thread(server.start)  # same port, same data: the old URL works again
                # Changed while the informer is still reconnecting (or just after): either way,
                # it must announce each change once.
                await api.delete(CONFIGMAPS, namespace=ns, name="a")
                await api.patch(CONFIGMAPS, namespace=ns, name="b", body={"data": {"v": "2"}})
                await api.create(CONFIGMAPS, _configmap("c"), namespace=ns)
                await _eventually(lambda: sorted(informer.keys()) == [f"{ns}/b", f"{ns}/c"]
                                  and informer.get(f"{ns}/b")["data"] == {"v": "2"})
                await asyncio.sleep(0.5)  # nothing more trickles in
            assert seen.of(f"{ns}/a") == [("add", {}), ("delete", {})]
            assert seen.of(f"{ns}/b") == [("add", {}), ("update", {"v": "2"})]
            assert seen.of(f"{ns}/c") == [("add", {})]
    finally:
        await asyncio.to_thread(server.stop)


async def test_informer_lists_again_after_its_watch_is_compacted(
    store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="podling.client.informer")
    server = PodlingProcess(data_dir=tmp_path, store=store_url, args=("--compaction-interval", "0.5"))
    await asyncio.to_thread(server.start)
    try:
        async with ApiClient(load_kubeconfig(server.kubeconfig)) as api:
            quiet, busy = await _namespace(api, "quiet"), await _namespace(api, "busy")
            await api.create(CONFIGMAPS, _configmap("q1"), namespace=quiet)
            await api.create(CONFIGMAPS, _configmap("counter"), namespace=busy)
            # Short watches, and no bookmark within them: the informer's resourceVersion stays
            # where its list left it while every write happens elsewhere and is compacted away.
            informer = Informer(api, CONFIGMAPS, namespace=quiet, watch_timeout=2)
            seen = Recorder(informer)
            async with _running(informer):
                for i in range(5):
                    await api.patch(CONFIGMAPS, namespace=busy, name="counter", body={"data": {"n": str(i)}})
                await _eventually(lambda: any("too old resource version" in r.getMessage() for r in caplog.records))
                await api.create(CONFIGMAPS, _configmap("q2"), namespace=quiet)
                await api.delete(CONFIGMAPS, namespace=quiet, name="q1")
                await _eventually(lambda: informer.keys() == [f"{quiet}/q2"])
            assert seen.of(f"{quiet}/q1") == [("add", {}), ("delete", {})]  # the re-list announced nothing twice
            assert seen.of(f"{quiet}/q2") == [("add", {})]
            with pytest.raises(ApiError) as err:
                async for _ in api.watch(CONFIGMAPS, namespace=quiet, resource_version="1", timeout_seconds=5):
                    pass
            assert is_gone(err.value)
    finally:
        await asyncio.to_thread(server.stop)


# ---- events ----------------------------------------------------------------------------


async def test_repeated_event_counts_up(api: ApiClient, podling: PodlingProcess, ns: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    cm = await api.create(CONFIGMAPS, _configmap("evented"), namespace=ns)
    recorder = EventRecorder(api, component="test-controller", host="host-1")
    await recorder.event(cm, type="Warning", reason="BackOff", message="still failing")
    await recorder.event(cm, type="Warning", reason="BackOff", message="still failing")
    await recorder.event(cm, reason="Synced", message="all good")

    columns = "REASON:.reason,COUNT:.count,TYPE:.type,OBJECT:.involvedObject.name,SOURCE:.source.component"
    result = await asyncio.to_thread(podling.kubectl, "get", "events", "-n", ns, "--sort-by=.reason",
                                     "-o", f"custom-columns={columns}", "--no-headers")
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["BackOff", "2", "Warning", "evented", "test-controller"],
        ["Synced", "1", "Normal", "evented", "test-controller"],
    ]
    table = await asyncio.to_thread(podling.kubectl, "get", "events", "-n", ns)
    assert "configmap/evented" in table.stdout and "still failing" in table.stdout

    events, _, _ = await api.list(_resource("", "events"), namespace=ns)
    backoff = next(e for e in events if e["reason"] == "BackOff")
    assert backoff["involvedObject"] == {
        "kind": "ConfigMap", "namespace": ns, "name": "evented", "uid": cm["metadata"]["uid"], "apiVersion": "v1",
        "resourceVersion": cm["metadata"]["resourceVersion"]}
    assert backoff["source"] == {"component": "test-controller", "host": "host-1"}
    assert backoff["firstTimestamp"] <= backoff["lastTimestamp"]

    caplog.set_level(logging.WARNING, logger="podling.client.events")
    await recorder.event({"kind": "ConfigMap", "metadata": {}}, reason="Nameless", message="x")  # never raises
    await recorder.event(cm, type="Bogus", reason="R", message="x")  # type: ignore[arg-type]
    assert [r.getMessage().split(": ")[-1] for r in caplog.records] == [
        "the object has no metadata.name", "event type must be Normal or Warning, not 'Bogus'"]
