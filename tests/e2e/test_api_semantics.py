"""Kubernetes API semantics over raw HTTP against a real ``podling apiserver`` (both stores)."""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podling_process import PodlingProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def ns(podling: PodlingProcess) -> str:
    name = f"h-{uuid.uuid4().hex[:8]}"
    status, body = podling.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert status == 201, body
    return name


def _stream(server: PodlingProcess, path: str, *, headers: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Watch events, one per line, from a streaming GET."""
    url = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=server.ssl_context(), timeout=20)
    conn.request("GET", path, headers={"Authorization": f"Bearer {server.token}", **(headers or {})})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    try:
        while line := response.readline():
            yield json.loads(line)
    finally:
        conn.close()


def _configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_unknown_fields_warn_strict_ignore(podling: PodlingProcess, ns: str) -> None:
    body = {**_configmap("u1", a="1"), "bogus": True}
    url = urllib.parse.urlsplit(podling.url)
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=podling.ssl_context())
    conn.request("POST", f"/api/v1/namespaces/{ns}/configmaps", json.dumps(body),
                 {"Authorization": f"Bearer {podling.token}", "Content-Type": "application/json"})
    response = conn.getresponse()
    created = json.loads(response.read())
    assert response.status == 201
    assert response.getheader("Warning") == '299 - "unknown field \\"bogus\\""'
    assert "bogus" not in created  # dropped, as Kubernetes' decoder drops it
    status, err = podling.request("POST", f"/api/v1/namespaces/{ns}/configmaps?fieldValidation=Strict",
                                  {**_configmap("u2"), "bogus": True})
    assert status == 400 and err["message"] == 'strict decoding error: unknown field "bogus"'
    status, _ = podling.request("POST", f"/api/v1/namespaces/{ns}/configmaps?fieldValidation=Ignore",
                                {**_configmap("u3"), "bogus": True})
    assert status == 201


def test_generation_moves_only_with_spec(podling: PodlingProcess, ns: str) -> None:
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    }
    base = f"/apis/apps/v1/namespaces/{ns}/deployments"
    status, created = podling.request("POST", base, deployment)
    assert status == 201 and created["metadata"]["generation"] == 1
    assert created["spec"]["replicas"] == 1 and created["spec"]["revisionHistoryLimit"] == 10
    _, labelled = podling.request("PATCH", f"{base}/d", {"metadata": {"labels": {"x": "y"}}},
                                  content_type="application/merge-patch+json")
    assert labelled["metadata"]["generation"] == 1
    _, status_written = podling.request("PATCH", f"{base}/d/status", {"status": {"replicas": 3}},
                                        content_type="application/merge-patch+json")
    assert status_written["status"] == {"replicas": 3} and status_written["metadata"]["generation"] == 1
    _, scaled = podling.request("PATCH", f"{base}/d/scale", {"spec": {"replicas": 4}},
                                content_type="application/merge-patch+json")
    assert scaled["kind"] == "Scale" and scaled["spec"]["replicas"] == 4
    assert scaled["status"] == {"replicas": 3, "selector": "a=b"}
    _, current = podling.request("GET", f"{base}/d")
    assert current["metadata"]["generation"] == 2 and current["status"] == {"replicas": 3}
    # A main-resource write cannot change status.
    current["status"] = {"replicas": 99}
    _, replaced = podling.request("PUT", f"{base}/d", current)
    assert replaced["status"] == {"replicas": 3}


def test_binding_and_graceful_pod_deletion(podling: PodlingProcess, ns: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}], "terminationGracePeriodSeconds": 20}}
    base = f"/api/v1/namespaces/{ns}/pods"
    assert podling.request("POST", base, pod)[0] == 201
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"name": "node-1"}}
    assert podling.request("POST", f"{base}/p/binding", binding)[0] == 201
    status, again = podling.request("POST", f"{base}/p/binding", binding)
    assert status == 409 and "already assigned" in again["message"]
    _, bound = podling.request("GET", f"{base}/p")
    assert bound["spec"]["nodeName"] == "node-1"
    assert [c["type"] for c in bound["status"]["conditions"]] == ["PodScheduled"]
    # Bound: deletion is graceful, the kubelet finishes it with grace 0.
    status, marked = podling.request("DELETE", f"{base}/p")
    assert status == 200 and marked["metadata"]["deletionGracePeriodSeconds"] == 20
    assert podling.request("GET", f"{base}/p")[0] == 200
    status, _ = podling.request("DELETE", f"{base}/p", {"gracePeriodSeconds": 0})
    assert status == 200
    assert podling.request("GET", f"{base}/p")[0] == 404


def test_finalizers_hold_deletion(podling: PodlingProcess, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    cm = _configmap("held")
    cm["metadata"]["finalizers"] = ["example.com/hold"]
    assert podling.request("POST", base, cm)[0] == 201
    status, marked = podling.request("DELETE", f"{base}/held")
    assert status == 200 and marked["metadata"]["deletionTimestamp"]
    _, still = podling.request("GET", f"{base}/held")
    assert still["metadata"]["finalizers"] == ["example.com/hold"]
    status, _ = podling.request("PATCH", f"{base}/held", {"metadata": {"finalizers": None}},
                                content_type="application/merge-patch+json")
    assert status == 200
    assert podling.request("GET", f"{base}/held")[0] == 404


def test_preconditions_and_stale_writes(podling: PodlingProcess, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    _, created = podling.request("POST", base, _configmap("pre"))
    status, err = podling.request("DELETE", f"{base}/pre", {"preconditions": {"uid": "not-the-uid"}})
    assert status == 409 and "Precondition failed" in err["message"]
    stale = dict(created, data={"x": "1"})
    assert podling.request("PUT", f"{base}/pre", stale)[0] == 200
    status, err = podling.request("PUT", f"{base}/pre", dict(created, data={"x": "2"}))
    assert status == 409 and err["reason"] == "Conflict"


def test_watch_initial_events_and_bookmark(podling: PodlingProcess, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    podling.request("POST", base, _configmap("w1"))
    events = _stream(podling, f"{base}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true"
                              "&resourceVersionMatch=NotOlderThan&timeoutSeconds=10")
    first = next(events)
    assert first["type"] == "ADDED" and first["object"]["metadata"]["name"] == "w1"
    bookmark = next(events)
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    podling.request("POST", base, _configmap("w2"))
    after = next(events)
    assert after["type"] == "ADDED" and after["object"]["metadata"]["name"] == "w2"
    assert int(after["object"]["metadata"]["resourceVersion"]) > int(bookmark["object"]["metadata"]["resourceVersion"])


def test_watch_times_out_and_filters_by_label(podling: PodlingProcess, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    _, created = podling.request("POST", base, _configmap("plain"))
    rv = created["metadata"]["resourceVersion"]
    labelled = _configmap("labelled")
    labelled["metadata"]["labels"] = {"watch": "me"}
    podling.request("POST", base, labelled)
    podling.request("POST", base, _configmap("other"))
    started = time.monotonic()
    events = list(_stream(podling, f"{base}?watch=true&resourceVersion={rv}&labelSelector=watch%3Dme&timeoutSeconds=2"))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "labelled")]
    assert time.monotonic() - started >= 1.5  # the stream stayed open until timeoutSeconds


def test_list_json_and_table(podling: PodlingProcess, ns: str) -> None:
    podling.request("POST", f"/api/v1/namespaces/{ns}/configmaps", _configmap("t", a="1", b="2"))
    status, table = podling.request("GET", f"/api/v1/namespaces/{ns}/configmaps")
    assert status == 200 and table["kind"] == "ConfigMapList"
    url = urllib.parse.urlsplit(podling.url)
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=podling.ssl_context())
    conn.request("GET", f"/api/v1/namespaces/{ns}/configmaps", headers={
        "Authorization": f"Bearer {podling.token}",
        "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    table = json.loads(conn.getresponse().read())
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert table["rows"][0]["cells"][:2] == ["t", 2]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_bad_input_is_a_status_never_a_500(podling: PodlingProcess, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    cases = [
        ("POST", base, b"{not json", "application/json", 400),
        ("POST", base, b"[1, 2]", "application/json", 400),
        ("POST", base, json.dumps({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "x"}}).encode(),
         "application/json", 400),
        ("POST", base, json.dumps(_configmap("Bad_Name")).encode(), "application/json", 422),
        ("GET", f"{base}?labelSelector=a%20in%20(b", None, "", 400),
        ("GET", f"{base}?limit=abc", None, "", 400),
        ("GET", f"{base}?fieldSelector=spec.bogus%3D1", None, "", 400),
        ("GET", "/api/v1/namespaces/x/nothings", None, "", 404),
        ("PATCH", f"{base}/missing", b"{}", "application/merge-patch+json", 404),
        ("PATCH", f"/apis/podling.io/v1alpha1/namespaces/{ns}/applications/a", b"{}",
         "application/strategic-merge-patch+json", 415),
    ]
    for method, path, body, content_type, expected in cases:
        status, answer = podling.request(method, path, body, content_type=content_type or "application/json")
        assert status == expected, (method, path, status, answer)
        assert answer["kind"] == "Status" and answer["code"] == expected, answer


def test_metrics_count_requests(podling: PodlingProcess, ns: str) -> None:
    podling.request("GET", f"/api/v1/namespaces/{ns}/configmaps")
    status, text = podling.request("GET", "/metrics")
    assert status == 200
    assert 'podling_apiserver_requests_total{code="200",resource="configmaps",verb="list"}' in text
    assert "podling_apiserver_request_duration_seconds_bucket" in text
    assert 'podling_apiserver_store_operation_duration_seconds_count{operation="list"}' in text
    assert 'podling_apiserver_objects{resource="namespaces"}' in text
    assert 'podling_apiserver_open_watches' in text


def test_compacted_watch_is_gone(store_url: str, tmp_path: Path) -> None:
    server = PodlingProcess(data_dir=tmp_path, store=store_url, args=("--compaction-interval", "0.5")).start()
    try:
        _, first = server.request("POST", "/api/v1/namespaces/default/configmaps", _configmap("old"))
        for i in range(3):
            server.request("PUT", "/api/v1/namespaces/default/configmaps/old", _configmap("old", n=str(i)))
        time.sleep(2.5)  # two compaction rounds
        rv = first["metadata"]["resourceVersion"]
        events = list(_stream(server, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
                                      "&timeoutSeconds=5"))
        assert events[0]["type"] == "ERROR"
        assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    finally:
        server.stop()


def test_terminating_namespace_refuses_new_objects(podling: PodlingProcess, ns: str) -> None:
    status, marked = podling.request("DELETE", f"/api/v1/namespaces/{ns}")
    assert status == 200 and marked["status"]["phase"] == "Terminating"
    status, err = podling.request("POST", f"/api/v1/namespaces/{ns}/configmaps", _configmap("late"))
    assert status == 403 and "because it is being terminated" in err["message"]
    status, err = podling.request("DELETE", "/api/v1/namespaces/default")
    assert status == 403


def test_deletecollection_by_label(podling: PodlingProcess, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    for name, team in (("a", "red"), ("b", "red"), ("c", "blue")):
        cm = _configmap(name)
        cm["metadata"]["labels"] = {"team": team}
        podling.request("POST", base, cm)
    status, deleted = podling.request("DELETE", f"{base}?labelSelector=team%3Dred")
    assert status == 200 and sorted(i["metadata"]["name"] for i in deleted["items"]) == ["a", "b"]
    _, left = podling.request("GET", base)
    assert [i["metadata"]["name"] for i in left["items"]] == ["c"]
