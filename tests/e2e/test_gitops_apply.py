"""GitOps plan and apply against a real ``podling apiserver``, through podling's real API client.

What the unit tests model, proven on the real thing: the server's defaulting and patching give
no diff noise on a second sync; changes patch, removals prune; nothing made by hand or by
another Application is touched; a dry run writes nothing; a stale write is retried.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from podling.api.resources import RESOURCES, find
from podling.client.config import load_kubeconfig
from podling.client.http import ApiClient, ApiError, is_not_found
from podling.gitops.apply import ObjectResult, apply, fetch_live
from podling.gitops.operator import APPLICATIONS, GitOpsOperator
from podling.gitops.plan import APP_LABEL, LAST_APPLIED, Key, key_of, plan_prune, resource_of
from podling_process import PodlingProcess

pytestmark = pytest.mark.e2e

Obj = dict[str, Any]


@pytest.fixture
async def api(podling: PodlingProcess) -> AsyncIterator[ApiClient]:
    async with ApiClient(load_kubeconfig(podling.kubeconfig)) as client:
        yield client


@pytest.fixture
def ns() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def manifests(ns: str) -> list[Obj]:
    """A small app of mixed kinds, as a user writes it (no defaults, some nulls, YAML-ish)."""
    labels = {"app": "web"}
    template = {"metadata": {"labels": labels, "creationTimestamp": None}, "spec": {"containers": [{
        "name": "web", "image": "podling/busybox:1.35", "command": ["httpd", "-f", "-p", "80", "-h", "/www"],
        "ports": [{"containerPort": 80}], "env": [{"name": "GREETING", "value": "hi"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
        "livenessProbe": {"tcpSocket": {"port": 80}},
        "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
        "volumeMounts": [{"name": "site", "mountPath": "/www"}],
    }], "volumes": [{"name": "site", "configMap": {"name": "site"}}]}}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "quota", "namespace": ns},
         "spec": {"hard": {"pods": "20", "limits.memory": "2Gi"}}},
        {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits", "namespace": ns},
         "spec": {"limits": [{"type": "Container", "default": {"cpu": "200m", "memory": "64Mi"}}]}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": ns}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "site", "namespace": ns},
         "data": {"index.html": "<h1>podling</h1>\n"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra", "namespace": ns},
         "data": {"k": "v"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
         "stringData": {"password": "hunter2"}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": ns},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
         "spec": {"type": "NodePort", "selector": labels, "ports": [{"port": 80, "name": "http"}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns, "labels": labels},
         "spec": {"selector": {"matchLabels": labels}, "template": template}, "status": {}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": ns},
         "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                  "template": {"metadata": {"labels": {"app": "db"}},
                               "spec": {"containers": [{"name": "db", "image": "podling/busybox:1.35"}]}}}},
        {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc", "namespace": ns},
         "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "rc"}},
                  "spec": {"containers": [{"name": "c", "image": "podling/busybox:1.35"}]}}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "one", "namespace": ns},
         "spec": {"containers": [{"name": "c", "image": "podling/busybox:1.35", "command": ["sleep", "3600"]}],
                  "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]}},
    ]


async def sync(api: ApiClient, app: str, objects: list[Obj], *, dry_run: bool = False,
               prune: bool = True) -> list[ObjectResult]:
    """What the operator does for one sync: one list per kind, plan prune, apply."""
    live = await fetch_live(api=api, app=app, resources=RESOURCES)
    keys = [key_of(obj) for obj in objects]
    doomed = plan_prune(app=app, live_owned=live.values(), desired_keys=keys) if prune else []
    seen: list[ObjectResult] = []
    results = await apply(api=api, app=app, objects=objects, live=live, prune=doomed, dry_run=dry_run,
                          on_progress=seen.append)
    assert seen == results
    return results


def actions(results: list[ObjectResult]) -> dict[str, str]:
    return {str(result.key): result.action for result in results}


async def versions(api: ApiClient, app: str) -> dict[Key, str]:
    live = await fetch_live(api=api, app=app, resources=RESOURCES)
    return {key: obj["metadata"]["resourceVersion"] for key, obj in live.items()}


async def test_sync_resync_change_and_prune(api: ApiClient, podling: PodlingProcess, ns: str) -> None:
    app = f"app-{ns}"
    objects = manifests(ns)

    first = await sync(api, app, objects)
    assert [r.action for r in first] == ["created"] * len(objects), [(str(r.key), r.message) for r in first]
    kinds = [r.key.kind for r in first]
    assert kinds[0] == "Namespace" and kinds.index("Deployment") > kinds.index("Service") > kinds.index("ConfigMap")
    assert kinds[-1] == "Pod"
    web = await api.get(resource_of(objects[9]), namespace=ns, name="web")
    assert web["metadata"]["labels"][APP_LABEL] == app
    assert json.loads(web["metadata"]["annotations"][LAST_APPLIED])["spec"]["template"]["spec"]["containers"][0][
        "image"] == "podling/busybox:1.35"

    # hand-made objects in the same namespace, and another Application's
    podling.kubectl("create", "configmap", "by-hand", "-n", ns, "--from-literal=a=b")
    podling.kubectl("label", "configmap", "by-hand", "-n", ns, f"{APP_LABEL}={app}")  # even with our label
    other = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "theirs", "namespace": ns},
              "data": {"x": "y"}}]
    assert actions(await sync(api, "other", other)) == {f"ConfigMap/{ns}/theirs": "created"}

    # out-of-band changes to what git does not say: scale, annotate, label
    podling.kubectl("scale", "deployment", "web", "-n", ns, "--replicas=4")
    podling.kubectl("annotate", "service", "web", "-n", ns, "note=by-hand")
    before = await versions(api, app)
    second = await sync(api, app, objects)
    assert set(actions(second).values()) == {"unchanged"}, [(str(r.key), r.plan.diff if r.plan else r.message)
                                                           for r in second if r.action != "unchanged"]
    assert await versions(api, app) == before  # nothing was written

    changed = copy.deepcopy(objects)
    changed[9]["spec"]["template"]["spec"]["containers"][0]["image"] = "podling/busybox:1.36"
    del changed[5]  # the "extra" ConfigMap leaves git
    third = await sync(api, app, changed)
    assert {k: a for k, a in actions(third).items() if a != "unchanged"} == {
        f"apps/Deployment/{ns}/web": "updated", f"ConfigMap/{ns}/extra": "pruned"}
    updated = next(r for r in third if r.action == "updated")
    assert updated.plan is not None and "+        image: podling/busybox:1.36" in updated.plan.diff
    web = await api.get(resource_of(objects[9]), namespace=ns, name="web")
    assert web["spec"]["template"]["spec"]["containers"][0]["image"] == "podling/busybox:1.36"
    assert web["spec"]["replicas"] == 4  # scaled by hand; replicas is not in git
    with pytest.raises(ApiError) as err:
        await api.get(resource_of(objects[5]), namespace=ns, name="extra")
    assert is_not_found(err.value)
    for name in ("by-hand", "theirs"):  # never touched
        assert (await api.get(resource_of(objects[5]), namespace=ns, name=name))["metadata"]["name"] == name
    assert podling.kubectl_json("get", "service", "web", "-n", ns)["metadata"]["annotations"]["note"] == "by-hand"

    assert set(actions(await sync(api, app, changed)).values()) == {"unchanged"}


async def test_dry_run_writes_nothing(api: ApiClient, ns: str) -> None:
    app = f"app-{ns}"
    objects = manifests(ns)[:5]
    results = await sync(api, app, objects, dry_run=True)
    assert [r.action for r in results] == ["created"] * 5 and all("dry run" in r.message for r in results)
    assert results[0].plan is not None and f"name: {ns}" in results[0].plan.diff
    assert await fetch_live(api=api, app=app, resources=RESOURCES) == {}

    await sync(api, app, objects)
    before = await versions(api, app)
    changed = copy.deepcopy(objects[:4])
    changed[3]["metadata"]["labels"] = {"tier": "x"}
    results = await sync(api, app, changed, dry_run=True)
    assert {k: a for k, a in actions(results).items() if a != "unchanged"} == {
        f"ServiceAccount/{ns}/web": "updated", f"ConfigMap/{ns}/site": "pruned"}
    assert await versions(api, app) == before


async def test_a_stale_write_is_retried_after_a_fresh_read(api: ApiClient, podling: PodlingProcess, ns: str) -> None:
    app = f"app-{ns}"
    objects = manifests(ns)[:5]
    await sync(api, app, objects)
    stale = await fetch_live(api=api, app=app, resources=RESOURCES)
    podling.kubectl("label", "configmap", "site", "-n", ns, "touched=by-hand")  # moves resourceVersion on

    changed = copy.deepcopy(objects)
    changed[4]["data"]["index.html"] = "<h1>v2</h1>\n"
    results = await apply(api=api, app=app, objects=changed, live=stale, prune=[], dry_run=False)
    site = next(r for r in results if r.key.name == "site" and r.key.kind == "ConfigMap")
    assert (site.action, site.message) == ("updated", "after 1 conflict")
    live = podling.kubectl_json("get", "configmap", "site", "-n", ns)
    assert live["data"]["index.html"] == "<h1>v2</h1>\n" and live["metadata"]["labels"]["touched"] == "by-hand"
    assert set(actions(await sync(api, app, changed)).values()) == {"unchanged"}


async def test_an_application_status_written_from_a_stale_copy_loses_nothing(
        api: ApiClient, ns: str, tmp_path: Path) -> None:
    """The operator writes status on the condition that its copy is current; from a stale copy
    (an informer behind the last write) it lays its status over the stored one instead, so the
    history it appends to and the last operation are the newest."""
    await api.create(find(group="", version="v1", plural="namespaces"),
                     {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    await api.create(APPLICATIONS, {"apiVersion": APPLICATIONS.api_version, "kind": APPLICATIONS.kind,
                                    "metadata": {"name": "shop", "namespace": ns}, "spec": {
                                        "source": {"repoURL": str(tmp_path), "path": "."},
                                        "destination": {"namespace": ns}}})
    stale = await api.get(APPLICATIONS, namespace=ns, name="shop")
    operator = GitOpsOperator(api=api, cache_dir=tmp_path / "cache")
    first, second = "a" * 40, "b" * 40

    def synced(sha: str) -> tuple[Obj, Obj]:
        operation = {"phase": "Succeeded", "revision": sha, "message": "ok=1", "result": "ok=1"}
        deployed = {"revision": sha, "deployedAt": "2026-11-23T00:00:00Z", "result": "Succeeded"}
        return {"sync": {"status": "Synced", "revision": sha}, "resources": [], "conditions": [],
                "operationState": operation}, deployed

    for sha in (first, second):  # both from the copy read before either write
        status, deployed = synced(sha)
        await operator._write(stale, status, deployed=deployed)
    await operator._write(stale, {"sync": {"status": "Synced", "revision": second}, "resources": [],
                                  "conditions": []})  # a reconcile that synced nothing
    stored = (await api.get(APPLICATIONS, namespace=ns, name="shop"))["status"]
    assert [(h["id"], h["revision"]) for h in stored["history"]] == [(1, first), (2, second)]
    assert stored["operationState"]["revision"] == second and stored["sync"]["revision"] == second


async def test_same_name_objects_are_adopted_unless_another_app_owns_them(
        api: ApiClient, podling: PodlingProcess, ns: str) -> None:
    app = f"app-{ns}"
    await sync(api, app, manifests(ns)[:1])
    podling.kubectl("create", "configmap", "mine", "-n", ns, "--from-literal=old=1")
    other = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "taken", "namespace": ns},
              "data": {"x": "y"}}]
    await sync(api, "other", other)

    wanted = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
               "data": {"new": "2"}} for name in ("mine", "taken")]
    results = await sync(api, app, manifests(ns)[:1] + wanted)
    by_name = {r.key.name: r for r in results}
    assert by_name["mine"].action == "updated"  # adopted: git names it
    assert by_name["taken"].action == "failed" and "belongs to application 'other'" in by_name["taken"].message
    mine = podling.kubectl_json("get", "configmap", "mine", "-n", ns)
    assert mine["data"] == {"old": "1", "new": "2"} and mine["metadata"]["labels"][APP_LABEL] == app
    assert podling.kubectl_json("get", "configmap", "taken", "-n", ns)["data"] == {"x": "y"}


async def test_prune_refuses_what_it_cannot_prove_it_created(
        api: ApiClient, podling: PodlingProcess, ns: str) -> None:
    app = f"app-{ns}"
    await sync(api, app, manifests(ns)[:1])
    podling.kubectl("create", "configmap", "by-hand", "-n", ns, "--from-literal=a=b")
    podling.kubectl("label", "configmap", "by-hand", "-n", ns, f"{APP_LABEL}={app}")
    live = await fetch_live(api=api, app=app, resources=RESOURCES)
    by_hand = live[Key("", "ConfigMap", ns, "by-hand")]
    results = await apply(api=api, app=app, objects=manifests(ns)[:1], live=live, prune=[by_hand], dry_run=False)
    assert results[-1].action == "failed" and "no proof" in results[-1].message
    assert podling.kubectl_json("get", "configmap", "by-hand", "-n", ns)["data"] == {"a": "b"}


async def test_a_failed_wave_stops_later_waves_and_prune(api: ApiClient, ns: str) -> None:
    app = f"app-{ns}"
    base = manifests(ns)[:1] + [manifests(ns)[5]]
    await sync(api, app, base)
    broken = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "Not_A_Name", "namespace": ns, "annotations": {"podling.io/sync-wave": "-1"}}}
    same_wave = {"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "same-wave", "namespace": ns, "annotations": {"podling.io/sync-wave": "-1"}},
                 "spec": {"ports": [{"port": 80}]}}
    late = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late", "namespace": ns}}
    results = await sync(api, app, [*base[:1], broken, same_wave, late])
    outcome = {r.key.name: (r.action, r.message) for r in results}
    assert outcome["Not_A_Name"][0] == "failed" and "422 Invalid" in outcome["Not_A_Name"][1]
    assert outcome["same-wave"] == ("created", "")  # the rest of the failed wave still goes
    assert outcome["late"] == ("failed", "not applied: sync wave -1 failed")
    assert outcome["extra"] == ("failed", "not pruned: the sync failed")
    live = await fetch_live(api=api, app=app, resources=RESOURCES)
    assert Key("", "ConfigMap", ns, "extra") in live and Key("", "ConfigMap", ns, "late") not in live
