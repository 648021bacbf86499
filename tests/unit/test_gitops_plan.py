"""The GitOps planner: 3-way diffs, no diff noise, ordering and waves, prune selection.

"The server" here is podling's own admission defaulting and strategic merge patch, the same
functions the API server runs (tests/e2e/test_gitops_apply.py repeats the important cases
against a real one); what controllers, the scheduler and allocators add later is written
into the live objects by hand.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from podling.api import schema
from podling.api.defaults import apply_defaults
from podling.api.patch import SchemaLookup, strategic_merge_patch
from podling.gitops.plan import (
    APP_LABEL,
    LAST_APPLIED,
    Key,
    apply_order,
    desired_object,
    ignored_pointers,
    key_of,
    last_applied,
    owned_by,
    plan_object,
    plan_prune,
    prune_order,
    resource_of,
    sync_wave,
)

Obj = dict[str, Any]
APP = "shop"


# ---- a model of what the API server does with our writes -----------------------------------


class Server:
    """Keeps objects as podling's API server would: defaults on every write, server metadata."""

    def __init__(self) -> None:
        self.revision = 0

    def _stamp(self, obj: Obj) -> Obj:
        self.revision += 1
        resource = resource_of(obj)
        apply_defaults(kind=resource.kind, obj=obj)
        metadata = obj["metadata"]
        metadata.setdefault("uid", f"uid-{metadata['name']}")
        metadata.setdefault("creationTimestamp", "2026-01-02T03:04:05Z")
        metadata["generation"] = metadata.get("generation", 0) + 1
        metadata["resourceVersion"] = str(self.revision)
        return obj

    def create(self, body: Obj) -> Obj:
        return self._stamp(copy.deepcopy(body))

    def patch(self, live: Obj, patch: Obj) -> Obj:
        lookup = SchemaLookup(schema.definitions(), resource_of(live).definition)
        assert patch["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]
        return self._stamp(strategic_merge_patch(live, patch, schema=lookup))


def sync(server: Server, manifest: Obj, live: Obj | None, *, ignore: tuple[str, ...] = ()) -> tuple[str, Obj]:
    """Plan ``manifest`` against ``live`` and carry the plan out: (action, the new live object)."""
    desired = desired_object(manifest, app=APP)
    plan = plan_object(desired=desired, live=live, last_applied=last_applied(live) if live else None, ignore=ignore)
    if plan.action == "create":
        return plan.action, server.create(plan.patch)
    if plan.action == "update":
        assert live is not None
        return plan.action, server.patch(live, plan.patch)
    assert plan.patch is None and plan.diff == ""
    assert live is not None
    return plan.action, live


def replan(manifest: Obj, live: Obj, *, ignore: tuple[str, ...] = ()) -> Any:
    desired = desired_object(manifest, app=APP)
    return plan_object(desired=desired, live=live, last_applied=last_applied(live), ignore=ignore)


def recorded(manifest: Obj) -> str:
    """The last-applied annotation podling writes for ``manifest``."""
    return json.dumps(desired_object(manifest, app=APP), separators=(",", ":"), sort_keys=True)


def deployment(**container: Any) -> Obj:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}, "creationTimestamp": None},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "creationTimestamp": None},
                "spec": {"containers": [{
                    "name": "web", "image": "podling/busybox:1.35", "command": ["httpd", "-f"],
                    "ports": [{"containerPort": 80}],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "readinessProbe": {"httpGet": {"port": 80}},
                    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                    **container,
                }]},
            },
        },
        "status": {},
    }


def service() -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "name": "http"}]}}


def pod() -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "one", "namespace": "shop"},
            "spec": {"containers": [{"name": "c", "image": "podling/busybox:1.35",
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "emptyDir": {}}, {"name": "conf", "configMap": {"name": "site"}}],
                     "tolerations": [{"key": "dedicated", "operator": "Exists"}]}}


MANIFESTS: dict[str, Obj] = {
    "Namespace": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
    "ResourceQuota": {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "shop"},
                      "spec": {"hard": {"pods": "10", "requests.cpu": "2"}}},
    "LimitRange": {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "l", "namespace": "shop"},
                   "spec": {"limits": [{"type": "Container", "default": {"cpu": "200m"}}]}},
    "ConfigMap": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "site", "namespace": "shop"},
                  "data": {"index.html": "<h1>hi</h1>\n"}},
    "Secret": {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "shop"},
               "stringData": {"password": "hunter2"}},
    "ServiceAccount": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa", "namespace": "shop"}},
    "PersistentVolumeClaim": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                              "metadata": {"name": "data", "namespace": "shop"},
                              "spec": {"accessModes": ["ReadWriteOnce"],
                                       "resources": {"requests": {"storage": "1Gi"}}}},
    "Service": service(),
    "Deployment": deployment(),
    "ReplicationController": {"apiVersion": "v1", "kind": "ReplicationController",
                              "metadata": {"name": "rc", "namespace": "shop"},
                              "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "rc"}},
                                       "spec": {"containers": [{"name": "c", "image": "podling/busybox"}]}}}},
    "StatefulSet": {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "shop"},
                    "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                             "template": {"metadata": {"labels": {"app": "db"}},
                                          "spec": {"containers": [{"name": "db", "image": "podling/busybox:1.35"}]}}}},
    "DaemonSet": {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "shop"},
                  "spec": {"selector": {"matchLabels": {"app": "agent"}},
                           "template": {"metadata": {"labels": {"app": "agent"}},
                                        "spec": {"containers": [{"name": "a", "image": "podling/busybox:1.35"}]}}}},
    "Pod": pod(),
}


def what_the_cluster_adds(obj: Obj) -> None:
    """What controllers, the scheduler, allocators and the kubelet write after an apply."""
    kind, metadata = obj["kind"], obj["metadata"]
    obj["status"] = {"observedGeneration": metadata["generation"], "phase": "Active"}
    if kind == "Deployment":
        metadata.setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "1"
        obj["spec"]["replicas"] = 3  # kubectl scale: replicas is not in git, so it is not podling's
    if kind == "Service":
        obj["spec"]["clusterIP"] = "10.96.0.10"
        obj["spec"]["clusterIPs"] = ["10.96.0.10"]
        obj["spec"]["ports"][0]["nodePort"] = 30080
    if kind == "Pod":
        obj["spec"]["nodeName"] = "node-1"
        obj["spec"]["volumes"].append({"name": "kube-api-access", "projected": {"sources": []}})
        obj["spec"]["containers"][0]["volumeMounts"].append({"name": "kube-api-access", "mountPath": "/var/run"})
    if kind == "Namespace":
        metadata.setdefault("finalizers", [])
    if kind == "LimitRange":  # LimitRanger admission defaults items of this atomic list
        for item in obj["spec"]["limits"]:
            item.setdefault("defaultRequest", dict(item["default"]))


# ---- create, and no diff noise -------------------------------------------------------------


def test_create_sends_the_desired_object_with_label_and_last_applied() -> None:
    desired = desired_object(MANIFESTS["ConfigMap"], app=APP)
    plan = plan_object(desired=desired, live=None, last_applied=None)
    assert plan.action == "create" and plan.key == Key("", "ConfigMap", "shop", "site")
    body = plan.patch
    assert body is not None and body["metadata"]["labels"] == {APP_LABEL: APP}
    text = body["metadata"]["annotations"][LAST_APPLIED]
    assert json.loads(text) == desired and LAST_APPLIED not in desired["metadata"].get("annotations", {})
    assert text == recorded(MANIFESTS["ConfigMap"])
    assert "+++ desired/ConfigMap/shop/site" in plan.diff and "+  index.html: |" in plan.diff


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_planning_again_after_an_apply_says_unchanged(kind: str) -> None:
    server = Server()
    manifest = MANIFESTS[kind]
    action, live = sync(server, manifest, None)
    assert action == "create"
    assert replan(manifest, live).action == "unchanged"
    what_the_cluster_adds(live)
    plan = replan(manifest, live)
    assert (plan.action, plan.patch, plan.diff) == ("unchanged", None, "")


def test_defaulted_atomic_lists_are_no_difference() -> None:
    """The server appends the not-ready tolerations to a Pod's own: desired with defaults equals live."""
    server = Server()
    _, live = sync(server, pod(), None)
    assert len(live["spec"]["tolerations"]) == 3
    assert replan(pod(), live).action == "unchanged"
    changed = pod()
    changed["spec"]["tolerations"][0]["key"] = "other"
    plan = replan(changed, live)
    assert plan.action == "update"
    assert plan.patch["spec"] == {"tolerations": [{"key": "other", "operator": "Exists"}]}


def test_atomic_list_items_compare_as_maps_by_position() -> None:
    """What the server adds inside an atomic list's items is no difference; what git removed is."""
    server = Server()
    manifest = copy.deepcopy(MANIFESTS["LimitRange"])
    manifest["spec"]["limits"][0]["max"] = {"cpu": "1"}
    _, live = sync(server, manifest, None)
    what_the_cluster_adds(live)
    assert replan(manifest, live).action == "unchanged"
    del manifest["spec"]["limits"][0]["max"]
    plan = replan(manifest, live)
    assert plan.action == "update" and plan.patch["spec"] == {"limits": manifest["spec"]["limits"]}
    _, updated = sync(server, manifest, live)
    what_the_cluster_adds(updated)
    assert "max" not in updated["spec"]["limits"][0]
    assert replan(manifest, updated).action == "unchanged"
    manifest["spec"]["limits"].append({"type": "PersistentVolumeClaim", "max": {"storage": "2Gi"}})
    assert replan(manifest, updated).action == "update"


def test_secret_string_data_is_folded_as_the_server_folds_it() -> None:
    desired = desired_object(MANIFESTS["Secret"], app=APP)
    assert "stringData" not in desired and desired["data"] == {"password": "aHVudGVyMg=="}


# ---- updates: changed, removed, merged lists -------------------------------------------------


def test_a_changed_field_is_a_minimal_patch_with_a_precondition() -> None:
    server = Server()
    _, live = sync(server, deployment(), None)
    what_the_cluster_adds(live)
    plan = replan(deployment(image="podling/busybox:1.36"), live)
    assert plan.action == "update"
    spec = plan.patch["spec"]["template"]["spec"]
    assert spec == {"containers": [{"name": "web", "image": "podling/busybox:1.36"}],
                    "$setElementOrder/containers": [{"name": "web"}]}
    assert plan.patch["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]
    assert set(plan.patch["metadata"]["annotations"]) == {LAST_APPLIED}
    assert "-        image: podling/busybox:1.35\n+        image: podling/busybox:1.36\n" in plan.diff
    action, updated = sync(server, deployment(image="podling/busybox:1.36"), live)
    assert action == "update"
    assert updated["spec"]["replicas"] == 3  # scaled out of band, not in git: left alone
    assert updated["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert replan(deployment(image="podling/busybox:1.36"), updated).action == "unchanged"


def test_fields_removed_from_git_are_deleted_and_others_kept() -> None:
    server = Server()
    manifest = deployment()
    manifest["metadata"]["labels"]["tier"] = "front"
    manifest["metadata"]["annotations"] = {"team": "a"}
    _, live = sync(server, manifest, None)
    live["metadata"]["labels"]["added-by-hand"] = "yes"
    live["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "BY_HAND", "value": "x"})

    trimmed = deployment()  # no tier label, no annotations, no env B, no ports
    container = trimmed["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "A", "value": "1"}]
    del container["ports"]
    plan = replan(trimmed, live)
    assert plan.action == "update"
    assert plan.patch["metadata"]["labels"] == {"tier": None}
    assert plan.patch["metadata"]["annotations"] == {"team": None, LAST_APPLIED: recorded(trimmed)}
    patched_container = plan.patch["spec"]["template"]["spec"]["containers"][0]
    assert patched_container["env"] == [{"name": "B", "$patch": "delete"}]
    assert patched_container["ports"] is None
    _, updated = sync(server, trimmed, live)
    assert updated["metadata"]["labels"] == {"app": "web", "added-by-hand": "yes", APP_LABEL: APP}
    assert set(updated["metadata"]["annotations"]) == {LAST_APPLIED}
    env = updated["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "A", "value": "1"}, {"name": "BY_HAND", "value": "x"}]
    assert "ports" not in updated["spec"]["template"]["spec"]["containers"][0]
    assert replan(trimmed, updated).action == "unchanged"


def test_without_last_applied_nothing_is_deleted() -> None:
    """An adopted object (made by hand, same name) loses nothing git does not name."""
    server = Server()
    live = server.create({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "site", "namespace": "shop", "labels": {"by": "hand"}},
                          "data": {"index.html": "old", "extra": "1"}})
    plan = replan(MANIFESTS["ConfigMap"], live)
    assert plan.patch["data"] == {"index.html": "<h1>hi</h1>\n"}
    assert plan.patch["metadata"]["labels"] == {APP_LABEL: APP}
    _, updated = sync(server, MANIFESTS["ConfigMap"], live)
    assert updated["data"]["extra"] == "1" and updated["metadata"]["labels"]["by"] == "hand"


def test_lists_merge_by_their_kubernetes_key() -> None:
    server = Server()
    _, live = sync(server, deployment(), None)
    # another controller injects a sidecar: not podling's, not a difference
    live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "proxy"})
    assert replan(deployment(), live).action == "unchanged"

    changed = deployment(env=[{"name": "B", "value": "two"}, {"name": "A", "value": "1"}])
    plan = replan(changed, live)
    container = plan.patch["spec"]["template"]["spec"]["containers"][0]
    assert container == {"name": "web", "env": [{"name": "B", "value": "two"}],
                         "$setElementOrder/env": [{"name": "B"}, {"name": "A"}]}
    _, updated = sync(server, changed, live)
    containers = updated["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "sidecar"]
    assert containers[0]["env"] == [{"name": "B", "value": "two"}, {"name": "A", "value": "1"}]
    assert replan(changed, updated).action == "unchanged"


def test_service_ports_merge_by_port_and_allocations_stay() -> None:
    server = Server()
    _, live = sync(server, service(), None)
    what_the_cluster_adds(live)
    more = service()
    more["spec"]["ports"][0]["targetPort"] = 8080
    more["spec"]["ports"].append({"port": 443, "name": "https"})
    action, updated = sync(server, more, live)
    assert action == "update"
    assert updated["spec"]["clusterIP"] == "10.96.0.10"
    assert updated["spec"]["ports"][0] == {"port": 80, "name": "http", "targetPort": 8080, "protocol": "TCP",
                                           "nodePort": 30080}
    assert replan(more, updated).action == "unchanged"


def test_retain_keys_clear_what_a_new_strategy_does_not_use() -> None:
    server = Server()
    _, live = sync(server, deployment(), None)
    assert live["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": "25%", "maxSurge": "25%"}
    recreate = deployment()
    recreate["spec"]["strategy"] = {"type": "Recreate"}
    plan = replan(recreate, live)
    assert plan.patch["spec"]["strategy"] == {"type": "Recreate", "$retainKeys": ["type"]}
    _, updated = sync(server, recreate, live)
    assert updated["spec"]["strategy"] == {"type": "Recreate"}
    assert replan(recreate, updated).action == "unchanged"


def test_scalar_sets_merge_and_delete_items() -> None:
    server = Server()
    manifest = copy.deepcopy(MANIFESTS["ConfigMap"])
    manifest["metadata"]["finalizers"] = ["a.io/x", "a.io/y"]
    _, live = sync(server, manifest, None)
    live["metadata"]["finalizers"].append("someone.else/z")
    assert replan(manifest, live).action == "unchanged"
    manifest["metadata"]["finalizers"] = ["a.io/y", "a.io/new"]
    plan = replan(manifest, live)
    assert plan.patch["metadata"]["finalizers"] == ["a.io/new"]
    assert plan.patch["metadata"]["$deleteFromPrimitiveList/finalizers"] == ["a.io/x"]
    _, updated = sync(server, manifest, live)
    assert sorted(updated["metadata"]["finalizers"]) == ["a.io/new", "a.io/y", "someone.else/z"]
    assert replan(manifest, updated).action == "unchanged"


def test_only_the_annotation_differing_is_an_update() -> None:
    """A field removed from git that the live object lost anyway: the record still moves on."""
    server = Server()
    manifest = copy.deepcopy(MANIFESTS["ConfigMap"])
    manifest["data"]["gone"] = "1"
    _, live = sync(server, manifest, None)
    del live["data"]["gone"]
    plan = replan(MANIFESTS["ConfigMap"], live)
    assert plan.action == "update" and set(plan.patch) == {"metadata"}
    assert plan.diff == ""  # nothing a person would see changes


# ---- ignoreDifferences --------------------------------------------------------------------


def test_ignored_pointers_are_never_diffed_nor_patched() -> None:
    server = Server()
    manifest = deployment()
    manifest["spec"]["replicas"] = 2
    _, live = sync(server, manifest, None)
    live["spec"]["replicas"] = 7  # an autoscaler owns it
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "hotfix"
    ignore = ("/spec/replicas", "/spec/template/spec/containers/0/image")
    assert replan(manifest, live, ignore=ignore).action == "unchanged"
    manifest["spec"]["replicas"] = 4
    manifest["metadata"]["labels"]["v"] = "2"
    plan = replan(manifest, live, ignore=ignore)
    assert "replicas" not in plan.patch.get("spec", {}) and plan.patch["metadata"]["labels"] == {"v": "2"}
    _, updated = sync(server, manifest, live, ignore=ignore)
    assert updated["spec"]["replicas"] == 7
    assert updated["spec"]["template"]["spec"]["containers"][0]["image"] == "hotfix"
    assert replan(manifest, updated, ignore=ignore).action == "unchanged"
    with pytest.raises(ValueError, match="must name a field"):
        replan(manifest, updated, ignore=("spec/replicas",))


def test_ignore_difference_rules_select_by_kind_group_namespace_name() -> None:
    desired = desired_object(deployment(), app=APP)
    rules = [
        {"kind": "Deployment", "jsonPointers": ["/spec/replicas"]},
        {"group": "apps", "kind": "Deployment", "name": "web", "jsonPointers": ["/a"]},
        {"group": "", "kind": "Deployment", "jsonPointers": ["/core-group-only"]},
        {"kind": "Deployment", "namespace": "other", "jsonPointers": ["/elsewhere"]},
        {"kind": "Service", "jsonPointers": ["/spec/clusterIP"]},
    ]
    assert ignored_pointers(desired, rules) == ["/spec/replicas", "/a"]


# ---- the canonical desired object ----------------------------------------------------------


def test_desired_object_is_canonical_and_a_copy() -> None:
    manifest = deployment()
    manifest["metadata"].update(uid="x", resourceVersion="9", generation=3, managedFields=[])
    manifest["metadata"]["annotations"] = {LAST_APPLIED: "{}"}
    original = copy.deepcopy(manifest)
    desired = desired_object(manifest, app=APP)
    assert manifest == original
    assert desired["metadata"] == {"name": "web", "namespace": "shop", "labels": {"app": "web", APP_LABEL: APP}}
    assert "status" not in desired and "creationTimestamp" not in desired["spec"]["template"]["metadata"]

    unnamespaced = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    assert desired_object(unnamespaced, app=APP, namespace="dest")["metadata"]["namespace"] == "dest"
    with pytest.raises(ValueError, match="namespaced and names no namespace"):
        desired_object(unnamespaced, app=APP)
    cluster = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "namespace": "x"}}
    assert "namespace" not in desired_object(cluster, app=APP, namespace="dest")["metadata"]
    with pytest.raises(ValueError, match="does not serve"):
        desired_object({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}}, app=APP)
    with pytest.raises(ValueError, match="without metadata.name"):
        desired_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "c-"}}, app=APP)
    with pytest.raises(ValueError, match="cannot be a label value"):
        desired_object(unnamespaced, app="no spaces", namespace="dest")


# ---- order and waves -------------------------------------------------------------------------


def test_apply_order_is_safe_by_kind_then_refined_by_waves() -> None:
    objects = [desired_object(m, app=APP) for m in MANIFESTS.values()]
    app_obj = {"apiVersion": "podling.io/v1alpha1", "kind": "Application",
               "metadata": {"name": "a", "namespace": "shop"}, "spec": {"source": {"repoURL": "/r"}}}
    objects.append(desired_object(app_obj, app=APP))
    kinds = [obj["kind"] for obj in sorted(objects, key=apply_order)]
    assert kinds == ["Namespace", "LimitRange", "ResourceQuota", "ServiceAccount", "ConfigMap", "Secret",
                     "PersistentVolumeClaim", "Service", "DaemonSet", "Deployment", "ReplicationController",
                     "StatefulSet", "Pod", "Application"]

    early = copy.deepcopy(MANIFESTS["Pod"])
    early["metadata"]["annotations"] = {"podling.io/sync-wave": "-1"}
    late = copy.deepcopy(MANIFESTS["Namespace"])
    late["metadata"]["annotations"] = {"podling.io/sync-wave": "2"}
    ordered = sorted([MANIFESTS["Deployment"], late, early, MANIFESTS["ConfigMap"]], key=apply_order)
    assert [(sync_wave(o), o["kind"]) for o in ordered] == [(-1, "Pod"), (0, "ConfigMap"), (0, "Deployment"),
                                                            (2, "Namespace")]
    late["metadata"]["annotations"]["podling.io/sync-wave"] = "soon"
    with pytest.raises(ValueError, match="must be an integer, not 'soon'"):
        apply_order(late)
    assert prune_order(late)[:2] == (0, 0)


# ---- prune -------------------------------------------------------------------------------------


def _owned(manifest: Obj, *, app: str = APP) -> Obj:
    body = plan_object(desired=desired_object(manifest, app=app), live=None, last_applied=None).patch
    return Server().create(body)


def test_prune_takes_only_what_this_app_provably_created() -> None:
    kept = _owned(MANIFESTS["ConfigMap"])
    gone_deploy = _owned(MANIFESTS["Deployment"])
    gone_ns = _owned({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "old"}})
    gone_svc = _owned(service())
    by_hand = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hand", "namespace": "shop", "uid": "h"}}
    labelled_by_hand = copy.deepcopy(by_hand)
    labelled_by_hand["metadata"]["labels"] = {APP_LABEL: APP}
    other_app = _owned({**MANIFESTS["Secret"], "metadata": {"name": "theirs", "namespace": "shop"}}, app="other")
    copied = copy.deepcopy(kept)  # the annotation copied onto another object: it names "site", not "copy"
    copied["metadata"]["name"] = "copy"
    controlled = _owned({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs", "namespace": "shop"},
                         "spec": {"selector": {}, "template": {}}})
    controlled["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                                  "uid": "u", "controller": True}]
    terminating = _owned({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t", "namespace": "shop"}})
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"

    live = [kept, gone_deploy, gone_ns, gone_svc, by_hand, labelled_by_hand, other_app, copied, controlled, terminating]
    doomed = plan_prune(app=APP, live_owned=live, desired_keys=[key_of(kept)])
    assert [key_of(o) for o in doomed] == [key_of(gone_deploy), key_of(gone_svc), key_of(gone_ns)]
    assert owned_by(gone_deploy, app=APP) and not owned_by(gone_deploy, app="other")
    assert not any(owned_by(o, app=APP) for o in (by_hand, labelled_by_hand, other_app, copied, controlled))
    assert plan_prune(app=APP, live_owned=live, desired_keys=[key_of(o) for o in live]) == []
