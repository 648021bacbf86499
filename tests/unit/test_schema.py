"""podling.api.schema: the validators the API server, the operator and `podling validate` share."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from podling.api import resources
from podling.api.schema import FieldError, definitions, validator

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "app.kubernetes.io/part-of": "shop"},
                 "creationTimestamp": "2024-05-01T10:00:00Z", "annotations": None},
    "spec": {
        "containers": [{
            "name": "web",
            "image": "nginx:1.25",
            "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": 1}},
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
            "livenessProbe": {"tcpSocket": {"port": 80}},
        }],
        "nodeSelector": None,
    },
}
DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"generateName": "web-"},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": None}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": POD["spec"]},
    },
}
SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}], "type": "ClusterIP"},
}
APPLICATION: dict[str, Any] = {
    "apiVersion": "podling.io/v1alpha1",
    "kind": "Application",
    "metadata": {"name": "shop", "namespace": "podling"},
    "spec": {
        "source": {"repoURL": "https://git.example/shop.git", "targetRevision": "main", "path": "deploy"},
        "destination": {"namespace": "shop"},
        "syncPolicy": {"automated": {"prune": True, "selfHeal": True, "allowEmpty": False}},
        "interval": "1m30s",
        "ignoreDifferences": [{"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]}],
    },
    "status": {
        "sync": {"status": "Synced", "revision": "abc123"},
        "health": {"status": "Healthy"},
        "conditions": [{"type": "SyncError", "status": "False", "reason": "Synced", "message": "",
                        "lastTransitionTime": "2024-05-01T10:00:00Z"}],
        "resources": [{"group": "apps", "version": "v1", "kind": "Deployment", "namespace": "shop", "name": "web",
                       "status": "Synced", "health": "Healthy", "message": "configured"}],
        "history": [{"id": 1, "revision": "abc123", "deployedAt": "2024-05-01T10:00:00Z", "result": "Succeeded"}],
        "operationState": {"phase": "Succeeded", "revision": "abc123", "startedAt": "2024-05-01T10:00:00Z"},
    },
}


def edited(obj: dict[str, Any], *path_and_value: Any) -> dict[str, Any]:
    """A deep copy of obj with the value at path (all but the last argument) set."""
    *path, value = path_and_value
    out = copy.deepcopy(obj)
    node = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


def only_error(definition: str, obj: dict[str, Any]) -> FieldError:
    result = validator(definition).validate(obj)
    assert len(result.errors) == 1, result
    return result.errors[0]


@pytest.mark.parametrize(("definition", "obj"), [
    ("io.k8s.api.core.v1.Pod", POD),
    ("io.k8s.api.apps.v1.Deployment", DEPLOYMENT),
    ("io.k8s.api.core.v1.Service", SERVICE),
    ("io.podling.v1alpha1.Application", APPLICATION),
])
def test_valid_objects_pass(definition: str, obj: dict[str, Any]) -> None:
    result = validator(definition).validate(obj)
    assert result.ok and result.errors == [] and result.unknown_fields == []


def test_every_served_kind_and_its_list_has_a_definition() -> None:
    for r in resources.all_resources():
        assert r.definition in definitions()
        assert (f"{r.definition}List" in definitions()) == ("list" in r.verbs)  # a review kind has no list
        gvks = definitions()[r.definition]["x-kubernetes-group-version-kind"]
        assert {"group": r.group, "version": r.version, "kind": r.kind} in gvks


def test_missing_required_field_names_the_field() -> None:
    pod = edited(POD, "spec", "containers", 0, {"image": "nginx"})
    error = only_error("io.k8s.api.core.v1.Pod", pod)
    assert error == FieldError(field="spec.containers[0].name", reason="FieldValueRequired",
                               message="Required value", path=("spec", "containers", 0, "name"))


def test_wrong_type_is_type_invalid() -> None:
    error = only_error("io.k8s.api.apps.v1.Deployment", edited(DEPLOYMENT, "spec", "replicas", "three"))
    assert (error.field, error.reason, error.path) == ("spec.replicas", "FieldValueTypeInvalid", ("spec", "replicas"))
    assert error.message == 'Invalid value: "three": must be of type integer'
    assert str(error) == 'spec.replicas: Invalid value: "three": must be of type integer'


def test_map_keys_are_written_in_brackets() -> None:
    error = only_error("io.k8s.api.core.v1.Pod", edited(POD, "metadata", "labels", "app", 7))
    assert error.field == "metadata.labels[app]"
    assert error.path == ("metadata", "labels", "app")


def test_unsupported_value_lists_the_supported_ones() -> None:
    error = only_error("io.k8s.api.core.v1.Pod", edited(POD, "apiVersion", "v2"))
    assert (error.field, error.reason) == ("apiVersion", "FieldValueNotSupported")
    assert error.message == 'Unsupported value: "v2": supported values: "v1"'


def test_unknown_fields_are_listed_with_their_paths() -> None:
    pod = edited(POD, "spec", "foo", 1)
    pod["spec"]["containers"][0]["bar"] = {"x": 1}
    result = validator("io.k8s.api.core.v1.Pod").validate(pod)
    assert result.errors == []
    assert result.unknown_fields == [".spec.containers[0].bar", ".spec.foo"]
    assert result.unknown_paths == [("spec", "containers", 0, "bar"), ("spec", "foo")]
    assert not result.ok


def test_errors_and_unknown_fields_are_all_reported_together() -> None:
    pod = edited(POD, "spec", "containers", [{"image": 5, "extra": True}])
    pod["metadata"]["oops"] = 1
    result = validator("io.k8s.api.core.v1.Pod").validate(pod)
    assert [(e.field, e.reason) for e in result.errors] == [
        ("spec.containers[0].image", "FieldValueTypeInvalid"),
        ("spec.containers[0].name", "FieldValueRequired"),
    ]
    assert result.unknown_fields == [".metadata.oops", ".spec.containers[0].extra"]


def test_nulls_int_or_string_and_quantities_are_accepted_as_kubernetes_does() -> None:
    v = validator("io.k8s.api.apps.v1.Deployment")
    for value in ("25%", 1, None):
        assert v.validate(edited(DEPLOYMENT, "spec", "strategy", "rollingUpdate", "maxSurge", value)).ok
    assert not v.validate(edited(DEPLOYMENT, "spec", "strategy", "rollingUpdate", "maxSurge", [1])).ok
    assert validator("io.k8s.api.core.v1.Pod").validate(edited(POD, "spec", "containers", 0, "resources", None)).ok


def test_metadata_name_is_not_required_by_the_schema() -> None:
    assert validator("io.k8s.api.core.v1.ConfigMap").validate({"apiVersion": "v1", "kind": "ConfigMap"}).ok


def test_a_non_object_is_a_type_error_at_the_root() -> None:
    result = validator("io.k8s.api.core.v1.Pod").validate([POD])
    assert [(e.field, e.reason, e.path) for e in result.errors] == [("", "FieldValueTypeInvalid", ())]


def test_application_rules() -> None:
    v = validator("io.podling.v1alpha1.Application")
    error = only_error("io.podling.v1alpha1.Application", edited(APPLICATION, "spec", "source", {"path": "."}))
    assert (error.field, error.reason) == ("spec.source.repoURL", "FieldValueRequired")
    error = only_error("io.podling.v1alpha1.Application", edited(APPLICATION, "spec", "interval", "3 minutes"))
    assert (error.field, error.reason) == ("spec.interval", "FieldValueInvalid")
    error = only_error("io.podling.v1alpha1.Application", edited(APPLICATION, "status", "sync", "status", "Fine"))
    assert (error.field, error.reason) == ("status.sync.status", "FieldValueNotSupported")
    assert v.validate(edited(APPLICATION, "spec", "interval", "3m")).ok


def test_validation_does_not_fill_in_defaults() -> None:
    app = edited(APPLICATION, "spec", "source", {"repoURL": "https://git.example/shop.git"})
    before = copy.deepcopy(app)
    assert validator("io.podling.v1alpha1.Application").validate(app).ok
    assert app == before


def test_unknown_definition_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="io.k8s.api.core.v1.Nothing"):
        validator("io.k8s.api.core.v1.Nothing")
