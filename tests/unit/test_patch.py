"""Merge patch, JSON patch and strategic merge patch, table-driven.

The strategic cases were checked against ``kubectl patch --local --type strategic`` (the Go
implementation); the patches in the "kubectl apply" cases are the ones kubectl computes.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
from typing import Any

import pytest

from podling.api.patch import PatchError, SchemaLookup, json_patch, merge_patch, strategic_merge_patch

DEFS = json.loads((importlib.resources.files("podling") / "schemas" / "_definitions.json").read_text())["$defs"]
POD = SchemaLookup(DEFS, "io.k8s.api.core.v1.Pod")
DEPLOYMENT = SchemaLookup(DEFS, "io.k8s.api.apps.v1.Deployment")

APP = {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
       "ports": [{"containerPort": 80}]}
SIDECAR = {"name": "sidecar", "image": "proxy:1"}
LIVE_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}, "finalizers": ["a", "b"]},
    "spec": {
        "containers": [APP, SIDECAR],
        "tolerations": [{"key": "a", "operator": "Exists"}],
        "volumes": [{"name": "data", "emptyDir": {}}],
    },
}
ORDER = {"$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}]}


def at(obj: Any, path: str) -> Any:
    for step in path.split("."):
        obj = obj[int(step)] if isinstance(obj, list) else obj[step]
    return obj


POD_CASES = [
    pytest.param(
        {"spec": {**ORDER, "containers": [{"name": "app", "image": "app:2"}]}},
        "spec.containers", [{**APP, "image": "app:2"}, SIDECAR],
        id="apply: new image for one of two containers keeps the other",
    ),
    pytest.param(
        {"metadata": {"labels": {"tier": None}}},
        "metadata.labels", {"app": "web"},
        id="apply: null removes a label",
    ),
    pytest.param(
        {"spec": {**ORDER, "containers": [{
            "name": "app", "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
            "env": [{"name": "C", "value": "3"}]}]}},
        "spec.containers.0.env",
        [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}],
        id="apply: env var added by name, in manifest order",
    ),
    pytest.param(
        {"spec": {**ORDER, "containers": [{
            "name": "app", "$setElementOrder/env": [{"name": "A"}], "env": [{"name": "B", "$patch": "delete"}]}]}},
        "spec.containers.0.env", [{"name": "A", "value": "1"}],
        id="apply: env var removed by name",
    ),
    pytest.param(
        {"spec": {"containers": [{"name": "app", "env": [{"name": "A", "value": "one"}]}]}},
        "spec.containers.0.env", [{"name": "A", "value": "one"}, {"name": "B", "value": "2"}],
        id="env var changed in place by name",
    ),
    pytest.param(
        {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}},
        "spec.containers", [SIDECAR, APP],
        id="$setElementOrder alone reorders",
    ),
    pytest.param(
        {"spec": {"$setElementOrder/containers": [{"name": "app"}, {"name": "log"}, {"name": "sidecar"}],
                  "containers": [{"name": "log", "image": "log:1"}]}},
        "spec.containers", [APP, {"name": "log", "image": "log:1"}, SIDECAR],
        id="$setElementOrder places a new item",
    ),
    pytest.param(
        {"spec": {"containers": [{"name": "log", "image": "log:1"}]}},
        "spec.containers", [{"name": "log", "image": "log:1"}, APP, SIDECAR],
        id="without an order a new item goes first, as in Kubernetes",
    ),
    pytest.param(
        {"spec": {"containers": [{"name": "app", "image": "app:2"}, {"name": "log", "image": "log:1"}]}},
        "spec.containers", [{**APP, "image": "app:2"}, {"name": "log", "image": "log:1"}, SIDECAR],
        id="a new item follows the item before it in the patch",
    ),
    pytest.param(
        {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}},
        "spec.containers", [APP],
        id="$patch: delete removes a list item by merge key",
    ),
    pytest.param(
        {"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}},
        "spec.containers", [{"name": "only", "image": "x"}],
        id="$patch: replace in a list replaces the list",
    ),
    pytest.param(
        {"spec": {"containers": [{"name": "app", "$patch": "merge", "image": "app:3"}]}},
        "spec.containers", [{**APP, "image": "app:3"}, SIDECAR],
        id="$patch: merge on an item is the default",
    ),
    pytest.param(
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zz"]}},
        "metadata.finalizers", ["b"],
        id="$deleteFromPrimitiveList",
    ),
    pytest.param(
        {"metadata": {"finalizers": ["c", "a"]}},
        "metadata.finalizers", ["c", "a", "b"],
        id="a merging list of scalars is a set",
    ),
    pytest.param(
        {"metadata": {"$setElementOrder/finalizers": ["b", "c", "a"], "finalizers": ["c"]}},
        "metadata.finalizers", ["b", "c", "a"],
        id="$setElementOrder on scalars",
    ),
    pytest.param(
        {"metadata": {"labels": {"$patch": "replace", "new": "1"}}},
        "metadata.labels", {"new": "1"},
        id="$patch: replace on a map",
    ),
    pytest.param(
        {"metadata": {"labels": {"$patch": "delete"}}},
        "metadata.labels", {},
        id="$patch: delete empties a map, as Kubernetes does",
    ),
    pytest.param(
        {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}},
        "spec.tolerations", [{"key": "b", "operator": "Exists"}],
        id="a list without patch metadata is replaced",
    ),
    pytest.param(
        {"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 443}]}]}},
        "spec.containers.0.ports", [{"containerPort": 443}, {"containerPort": 80}],
        id="ports merge by containerPort",
    ),
    pytest.param(
        {"spec": {"volumes": [{"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/d"}}]}},
        "spec.volumes", [{"name": "data", "hostPath": {"path": "/d"}}],
        id="$retainKeys on a volume switches its source",
    ),
    pytest.param(
        {"spec": {"containers": [{"name": "new", "image": "n", "workingDir": None}]}},
        "spec.containers.0", {"name": "new", "image": "n"},
        id="null members of a new item are dropped",
    ),
    pytest.param(
        {"spec": {"securityContext": {"$patch": "replace", "runAsUser": 5}}},
        "spec.securityContext", {"runAsUser": 5},
        id="$patch: replace under a new key adds the map",
    ),
]


@pytest.mark.parametrize(("patch", "path", "expected"), POD_CASES)
def test_strategic_merge_patch_on_a_pod(patch: dict, path: str, expected: Any) -> None:
    result = strategic_merge_patch(LIVE_POD, patch, schema=POD)
    assert at(result, path) == expected
    assert strategic_merge_patch(result, patch, schema=POD) == result  # kubectl apply re-applies


ROLLING = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        pytest.param({"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None}, {"type": "Recreate"},
                     id="apply: RollingUpdate to Recreate, rollingUpdate was in the manifest"),
        pytest.param({"$retainKeys": ["type"], "type": "Recreate"}, {"type": "Recreate"},
                     id="apply: RollingUpdate to Recreate, rollingUpdate was defaulted"),
        pytest.param({"type": "Recreate"}, {**ROLLING, "type": "Recreate"},
                     id="without $retainKeys the other keys stay"),
    ],
)
def test_retain_keys_on_deployment_strategy(patch: dict, expected: dict) -> None:
    live = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 1, "strategy": ROLLING}}
    result = strategic_merge_patch(live, {"spec": {"strategy": patch}}, schema=DEPLOYMENT)
    assert result["spec"] == {"replicas": 1, "strategy": expected}


def test_top_level_directives() -> None:
    assert strategic_merge_patch(LIVE_POD, {"$patch": "delete"}, schema=POD) == {}
    replaced = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}
    assert strategic_merge_patch(LIVE_POD, {"$patch": "replace", **replaced}, schema=POD) == replaced


def test_replace_strategy_on_a_map_and_unknown_places() -> None:
    defs = {
        "Budget": {"properties": {"selector": {"$ref": "#/$defs/Selector", "x-kubernetes-patch-strategy": "replace"}}},
        "Selector": {"properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
    }
    schema = SchemaLookup(defs, "Budget")
    live = {"selector": {"matchLabels": {"a": "1"}}, "extra": {"list": [1, 2]}}
    patch = {"selector": {"matchLabels": {"b": "2"}}, "extra": {"list": [3]}}
    assert strategic_merge_patch(live, patch, schema=schema) == {
        "selector": {"matchLabels": {"b": "2"}},
        "extra": {"list": [3]},  # no schema, no metadata: the list is replaced
    }


def test_strategic_merge_patch_is_pure() -> None:
    live, patch = copy.deepcopy(LIVE_POD), {"spec": {"containers": [{"name": "new", "image": "n", "env": []}]}}
    before = copy.deepcopy((live, patch))
    result = strategic_merge_patch(live, patch, schema=POD)
    assert (live, patch) == before
    result["spec"]["containers"][0]["env"].append("x")
    result["spec"]["containers"][1]["env"].append("x")
    result["metadata"]["labels"]["x"] = "y"
    assert (live, patch) == before


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        pytest.param({"spec": {"securityContext": {"$patch": "bogus"}}},
                     ".spec.securityContext: unknown $patch directive 'bogus'", id="unknown directive in a map"),
        pytest.param({"spec": {"containers": [{"name": "app", "$patch": "bogus"}]}},
                     "unknown $patch directive 'bogus'", id="unknown directive in a list item"),
        pytest.param({"spec": {"containers": [{"image": "nameless"}]}},
                     ".spec.containers: list item {'image': 'nameless'} has no merge key 'name'",
                     id="list item without its merge key"),
        pytest.param({"spec": {"containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}, {"value": "x"}]}]}},
                     ".spec.containers[name=app].env: list item", id="nested error names the item"),
        pytest.param({"spec": {"$retainKeys": ["nodeName"], "hostname": "h"}},
                     "hostname set by the patch but missing from its $retainKeys", id="$retainKeys must name every field"),
        pytest.param({"spec": {**ORDER, "containers": [{"name": "sidecar"}, {"name": "app"}]}},
                     "does not match $setElementOrder", id="patch list out of $setElementOrder order"),
        pytest.param({"spec": {"$setElementOrder/tolerations": [{"key": "a"}]}},
                     ".spec.tolerations: $setElementOrder given for a list without",
                     id="$setElementOrder on a list that does not merge"),
        pytest.param({"metadata": {"finalizers": [{"a": 1}]}},
                     ".metadata.finalizers: cannot merge a list that mixes objects and scalars",
                     id="objects in a list of scalars"),
        pytest.param({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}, "must be a list of scalars",
                     id="$deleteFromPrimitiveList needs a list"),
        pytest.param(["not", "a", "map"], "a strategic merge patch must be a JSON object", id="patch is not an object"),
    ],
)
def test_strategic_merge_patch_errors(patch: Any, message: str) -> None:
    with pytest.raises(PatchError) as caught:
        strategic_merge_patch(LIVE_POD, patch, schema=POD)
    assert message in str(caught.value)


def test_schema_lookup() -> None:
    volumes = POD.field("spec").field("volumes")
    assert volumes.strategies == {"merge", "retainKeys"} and volumes.merge_key == "name"
    assert POD.field("metadata").field("labels").field("any").strategies == frozenset()
    assert POD.field("nope").field("deeper").items().merge_key is None
    with pytest.raises(KeyError, match="no schema definition named 'Nope'"):
        SchemaLookup(DEFS, "Nope")


@pytest.mark.parametrize(
    ("original", "patch", "expected"),
    [  # RFC 7386, appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({"a": "foo"}, {"a": {"b": {"c": None, "d": 1}}}, {"a": {"b": {"d": 1}}}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch(original: dict, patch: dict, expected: dict) -> None:
    before = copy.deepcopy(original)
    assert merge_patch(original, patch) == expected
    assert original == before


def test_merge_patch_needs_an_object() -> None:
    with pytest.raises(PatchError, match="must be a JSON object"):
        merge_patch({}, [])  # type: ignore[arg-type]


def test_json_patch() -> None:
    live = {"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1, "list": [1, 2]}}
    ops = [
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "remove", "path": "/spec/list/0"},
        {"op": "add", "path": "/spec/list/-", "value": 9},
    ]
    result = json_patch(live, ops)
    assert result == {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 3, "list": [2, 9]}}
    assert live["spec"] == {"replicas": 1, "list": [1, 2]}


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ([{"op": "test", "path": "/spec/replicas", "value": 2}], "operation 0 (test '/spec/replicas') failed"),
        ([{"op": "add", "path": "/a", "value": 1}, {"op": "remove", "path": "/nope"}],
         "operation 1 (remove '/nope') failed"),
        ([{"op": "frobnicate", "path": "/a"}], "operation 0 (frobnicate '/a') failed"),
        ([{"op": "replace", "path": "", "value": [1]}], "not a JSON object"),
        (["add"], "operation 0 is not a JSON object"),
        ({"op": "add"}, "must be a JSON array"),
    ],
)
def test_json_patch_errors(ops: Any, message: str) -> None:
    with pytest.raises(PatchError) as caught:
        json_patch({"spec": {"replicas": 1}}, ops)
    assert message in str(caught.value)
