"""podling.api.openapi: the documents kubectl reads for explain, apply and field validation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from podling.api import resources
from podling.api.openapi import (
    group_version_path,
    hash_of,
    openapi_v2,
    openapi_v2_bytes,
    openapi_v3,
    openapi_v3_bytes,
    openapi_v3_index,
    openapi_v3_index_bytes,
)

SERVED_PATHS = sorted({group_version_path(g, v) for g, v in resources.group_versions()})


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def schema_types(schemas: dict[str, Any]) -> set[Any]:
    """Every value of a `type` keyword inside schemas (not property names called "type")."""
    found = set()
    for node in walk(schemas):
        if isinstance(node.get("type"), (str, list)) and not {"name", "in"} <= node.keys():
            found.add(json.dumps(node["type"]))
    return found


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for url, item in doc["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                yield url, method, op


def gvk(r: resources.Resource) -> dict[str, str]:
    return {"group": r.group, "version": r.version, "kind": r.kind}


def test_v2_definitions_carry_kubernetes_extensions() -> None:
    definitions = openapi_v2()["definitions"]
    pod = resources.by_kind(api_version="v1", kind="Pod")
    assert definitions["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"] == [gvk(pod)]
    assert definitions["io.podling.v1alpha1.Application"]["x-kubernetes-group-version-kind"] == [
        {"group": "podling.io", "kind": "Application", "version": "v1alpha1"}]
    containers = definitions["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["items"] == {"$ref": "#/definitions/io.k8s.api.core.v1.Container"}
    metadata = definitions["io.k8s.api.core.v1.Pod"]["properties"]["metadata"]
    assert metadata["$ref"] == "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    assert "enum" not in definitions["io.k8s.api.core.v1.Pod"]["properties"]["apiVersion"]
    assert definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"] == "string"
    assert definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"
    assert definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"] == "string"


def test_v2_is_self_contained_swagger() -> None:
    doc = openapi_v2()
    assert doc["swagger"] == "2.0"
    assert schema_types(doc["definitions"]) <= {'"string"', '"integer"', '"number"', '"boolean"', '"object"', '"array"'}
    for node in walk(doc):
        if "$ref" in node:
            assert node["$ref"].removeprefix("#/definitions/") in doc["definitions"], node["$ref"]
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert patch["x-kubernetes-action"] == "patch"
    assert patch["x-kubernetes-group-version-kind"] == {"group": "", "kind": "Pod", "version": "v1"}
    assert "application/strategic-merge-patch+json" in patch["consumes"]
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}


def test_v3_index_lists_every_served_group_version_with_its_hash() -> None:
    index = openapi_v3_index()
    assert sorted(index["paths"]) == SERVED_PATHS
    for path, entry in index["paths"].items():
        served = openapi_v3_bytes(path)
        assert served is not None
        assert entry["serverRelativeURL"] == f"/openapi/v3/{path}?hash={hash_of(served)}"
        assert hash_of(served) == hashlib.sha512(served).hexdigest().upper()
        assert json.loads(served) == openapi_v3(path)
    assert json.loads(openapi_v3_index_bytes()) == index
    assert json.loads(openapi_v2_bytes()) == openapi_v2()
    assert openapi_v3_bytes("apis/nothing/v1") is None
    with pytest.raises(KeyError):
        openapi_v3("apis/nothing/v1")


@pytest.mark.parametrize("path", SERVED_PATHS)
def test_v3_document_resolves_all_refs_and_uses_single_types(path: str) -> None:
    doc = openapi_v3(path)
    schemas = doc["components"]["schemas"]
    assert doc["openapi"].startswith("3.0")
    for node in walk(doc):
        if "$ref" in node:
            assert node["$ref"].startswith("#/components/schemas/")
            assert node["$ref"].removeprefix("#/components/schemas/") in schemas, node["$ref"]
    assert all(t.startswith('"') for t in schema_types(schemas)), "kubectl explain compares types as strings"


@pytest.mark.parametrize("r", list(resources.all_resources()), ids=lambda r: r.kind)
def test_kubectl_finds_each_kind_as_explain_and_apply_do(r: resources.Resource) -> None:
    doc = openapi_v3(group_version_path(r.group, r.version))
    prefix = f"/apis/{r.group}/{r.version}" if r.group else f"/api/{r.version}"
    collection = f"{prefix}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{prefix}/{r.plural}"
    # explain: the GVK of the collection's GET (POST for a review kind, which has only create),
    # then the schema whose GVK list holds it.
    method = "get" if "list" in r.verbs else "post"
    assert doc["paths"][collection][method]["x-kubernetes-group-version-kind"] == gvk(r)
    [schema] = [s for s in doc["components"]["schemas"].values() if gvk(r) in s.get("x-kubernetes-group-version-kind", [])]
    assert schema is doc["components"]["schemas"][r.definition]
    # apply: every PATCH of this GVK takes fieldValidation (the first one found decides), and
    # only Kubernetes' own kinds take strategic merge patches.
    patches = [op for _, method, op in operations(doc)
               if method == "patch" and op.get("x-kubernetes-group-version-kind") == gvk(r)]
    assert bool(patches) == ("patch" in r.verbs)
    for op in patches:
        assert "fieldValidation" in {p["name"] for p in op["parameters"]}
        strategic = "application/strategic-merge-patch+json" in op["requestBody"]["content"]
        assert strategic == (r.group != "podling.io")


def test_a_review_kind_is_only_created() -> None:
    doc = openapi_v3("apis/authentication.k8s.io/v1")
    assert doc["paths"] == {"/apis/authentication.k8s.io/v1/tokenreviews": {
        "post": doc["paths"]["/apis/authentication.k8s.io/v1/tokenreviews"]["post"],
        "parameters": doc["paths"]["/apis/authentication.k8s.io/v1/tokenreviews"]["parameters"]}}


def test_v3_wraps_described_refs_in_all_of_as_kubernetes_does() -> None:
    pod = openapi_v3("api/v1")["components"]["schemas"]["io.k8s.api.core.v1.Pod"]
    assert pod["properties"]["spec"]["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}]
    assert pod["properties"]["spec"]["description"]
    int_or_string = openapi_v3("apis/apps/v1")["components"]["schemas"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert int_or_string["format"] == "int-or-string" and "type" not in int_or_string


def test_subresources_have_their_own_kinds() -> None:
    paths = openapi_v3("apis/apps/v1")["paths"]
    scale = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert scale["put"]["x-kubernetes-group-version-kind"] == {"group": "autoscaling", "kind": "Scale", "version": "v1"}
    binding = openapi_v3("api/v1")["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"]
    assert binding["requestBody"]["content"]["*/*"]["schema"] == {"$ref": "#/components/schemas/io.k8s.api.core.v1.Binding"}
