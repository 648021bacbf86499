"""Building API requests is pure: paths, query strings and bodies from the resource table; and
the client configuration (kubeconfig, flags) with errors that name the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from podling.api.resources import Resource, find
from podling.client import http
from podling.client.config import ClientConfig, ConfigError, from_flags, load_kubeconfig


def _resource(group: str, version: str, plural: str) -> Resource:
    resource = find(group=group, version=version, plural=plural)
    assert resource is not None
    return resource


PODS = _resource("", "v1", "pods")
NODES = _resource("", "v1", "nodes")
DEPLOYMENTS = _resource("apps", "v1", "deployments")
CONFIGMAPS = _resource("", "v1", "configmaps")
LEASES = _resource("coordination.k8s.io", "v1", "leases")


@pytest.mark.parametrize(
    ("resource", "namespace", "name", "subresource", "path"),
    [
        (PODS, "default", "", "", "/api/v1/namespaces/default/pods"),
        (PODS, "default", "web", "", "/api/v1/namespaces/default/pods/web"),
        (PODS, None, "", "", "/api/v1/pods"),  # all namespaces
        (PODS, "default", "web", "status", "/api/v1/namespaces/default/pods/web/status"),
        (PODS, "default", "web", "binding", "/api/v1/namespaces/default/pods/web/binding"),
        (NODES, None, "", "", "/api/v1/nodes"),
        (NODES, None, "n1", "status", "/api/v1/nodes/n1/status"),
        (DEPLOYMENTS, "prod", "api", "scale", "/apis/apps/v1/namespaces/prod/deployments/api/scale"),
        (DEPLOYMENTS, None, "", "", "/apis/apps/v1/deployments"),
        (LEASES, "kube-node-lease", "n1", "", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"),
        (CONFIGMAPS, "a b", "x/y", "", "/api/v1/namespaces/a%20b/configmaps/x%2Fy"),  # quoted, never a new segment
    ],
)
def test_paths(resource: Resource, namespace: str | None, name: str, subresource: str, path: str) -> None:
    assert http.resource_path(resource, namespace=namespace, name=name, subresource=subresource) == path


@pytest.mark.parametrize(
    ("resource", "kwargs", "message"),
    [
        (CONFIGMAPS, {"namespace": "default", "name": "c", "subresource": "status"}, "configmaps has no 'status'"),
        (PODS, {"namespace": "default", "name": "p", "subresource": "scale"}, "(it has: status, binding, log, exec)"),
        (NODES, {"namespace": "default", "name": "n1"}, "Node is cluster-scoped"),
        (PODS, {"name": "p"}, "Pod 'p' is namespaced"),
        (PODS, {"namespace": "default", "subresource": "status"}, "needs an object name"),
    ],
)
def test_refusals(resource: Resource, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as err:
        http.resource_path(resource, **kwargs)
    assert message in str(err.value)


def test_update_status_refuses_a_kind_without_status() -> None:
    with pytest.raises(ValueError, match="configmaps has no 'status' subresource"):
        http.update_request(CONFIGMAPS, {"metadata": {"name": "c", "namespace": "default"}}, subresource="status")


def test_list_query() -> None:
    request = http.list_request(PODS, namespace="default", label_selector="app=web,tier in (a,b)",
                                field_selector="spec.nodeName=n1", limit=50, continue_="tok")
    assert request.method == "GET" and request.body is None
    assert request.query == (("labelSelector", "app=web,tier in (a,b)"), ("fieldSelector", "spec.nodeName=n1"),
                             ("limit", "50"), ("continue", "tok"))
    assert request.target == ("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29"
                              "&fieldSelector=spec.nodeName%3Dn1&limit=50&continue=tok")
    assert http.list_request(NODES).target == "/api/v1/nodes"  # unset options are left out


def test_watch_query() -> None:
    request = http.watch_request(PODS, resource_version="42", timeout_seconds=300)
    assert request.target == "/api/v1/pods?watch=true&resourceVersion=42&timeoutSeconds=300&allowWatchBookmarks=true"
    plain = http.watch_request(NODES, allow_bookmarks=False)
    assert plain.query == (("watch", "true"),)


def test_create_takes_the_namespace_from_the_object_or_the_argument() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "team"}}
    assert http.create_request(CONFIGMAPS, cm).path == "/api/v1/namespaces/team/configmaps"
    bare = {"metadata": {"name": "c"}}
    request = http.create_request(CONFIGMAPS, bare, namespace="other")
    assert (request.method, request.path, request.body) == ("POST", "/api/v1/namespaces/other/configmaps", bare)
    with pytest.raises(ValueError, match="is in namespace 'team', not 'other'"):
        http.create_request(CONFIGMAPS, cm, namespace="other")
    with pytest.raises(ValueError, match="namespaced"):
        http.create_request(CONFIGMAPS, bare)
    assert http.create_request(NODES, {"metadata": {"name": "n1"}}).path == "/api/v1/nodes"


def test_update_and_status() -> None:
    pod = {"metadata": {"name": "p", "namespace": "default", "resourceVersion": "7"}}
    assert http.update_request(PODS, pod).path == "/api/v1/namespaces/default/pods/p"
    status = http.update_request(PODS, pod, subresource="status")
    assert (status.method, status.path) == ("PUT", "/api/v1/namespaces/default/pods/p/status")
    with pytest.raises(ValueError, match="without metadata.name"):
        http.update_request(PODS, {"metadata": {"namespace": "default"}})


@pytest.mark.parametrize(
    ("patch_type", "content_type"),
    [("merge", "application/merge-patch+json"), ("strategic", "application/strategic-merge-patch+json"),
     ("json", "application/json-patch+json")],
)
def test_patch_content_types(patch_type: http.PatchType, content_type: str) -> None:
    request = http.patch_request(DEPLOYMENTS, namespace="d", name="api", body={"spec": {"replicas": 2}},
                                 patch_type=patch_type, subresource="scale")
    assert request.method == "PATCH" and request.content_type == content_type
    assert request.path == "/apis/apps/v1/namespaces/d/deployments/api/scale"


def test_patch_refuses_unknown_type() -> None:
    with pytest.raises(ValueError, match="patch_type must be one of merge, strategic, json"):
        http.patch_request(PODS, namespace="d", name="p", body={}, patch_type="apply")  # type: ignore[arg-type]


def test_delete_options_go_in_the_body() -> None:
    assert http.delete_request(PODS, namespace="d", name="p").body is None
    request = http.delete_request(PODS, namespace="d", name="p", grace_period_seconds=0,
                                  propagation_policy="Foreground", preconditions={"uid": "u1"})
    assert request.method == "DELETE" and request.query == ()
    assert request.body == {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                            "propagationPolicy": "Foreground", "preconditions": {"uid": "u1"}}


def test_bind() -> None:
    pod = {"metadata": {"name": "p", "namespace": "d", "uid": "u1"}}
    request = http.bind_request(pod, "node-1")
    assert (request.method, request.path) == ("POST", "/api/v1/namespaces/d/pods/p/binding")
    assert request.body == {"apiVersion": "v1", "kind": "Binding",
                            "metadata": {"name": "p", "namespace": "d", "uid": "u1"},
                            "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}}


def test_error_helpers() -> None:
    def error(code: int, reason: str) -> http.ApiError:
        return http.ApiError({"kind": "Status", "code": code, "reason": reason, "message": "m"})

    assert http.is_not_found(error(404, "NotFound")) and not http.is_not_found(ValueError())
    assert http.is_conflict(error(409, "Conflict")) and not http.is_conflict(error(409, "AlreadyExists"))
    assert http.is_already_exists(error(409, "AlreadyExists"))
    assert http.is_gone(error(410, "Expired"))
    err = error(422, "Invalid")
    assert (err.code, err.reason, err.message, str(err)) == (422, "Invalid", "m", "422 Invalid: m")


def test_config_refuses_a_bad_server_or_two_cas(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an http:// or https:// URL"):
        ClientConfig(server="127.0.0.1:6443")
    with pytest.raises(ConfigError, match="not both"):
        ClientConfig(server="https://h", ca_data=b"x", ca_file=tmp_path / "ca.crt")


def _kubeconfig(tmp_path: Path, user: dict[str, str], cluster: dict[str, str]) -> Path:
    path = tmp_path / "config"
    path.write_text(json.dumps({
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "team"}}],
        "current-context": "x",
    }))
    return path


def test_kubeconfig_token_file_is_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    config = load_kubeconfig(_kubeconfig(tmp_path, {"tokenFile": "token"}, {"server": "http://127.0.0.1:1"}))
    assert (config.server, config.token, config.namespace) == ("http://127.0.0.1:1", "s3cret", "team")


@pytest.mark.parametrize(
    ("user", "cluster", "context", "message"),
    [
        ({"token": "t"}, {}, None, "clusters[c].cluster.server is missing"),
        ({}, {"server": "https://h"}, None, "users[u].user has neither token nor tokenFile"),
        ({"tokenFile": "nope"}, {"server": "https://h"}, None, "users[u].user.tokenFile: cannot read"),
        ({"token": "t"}, {"server": "https://h", "certificate-authority": "ca.crt"}, None,
         "clusters[c].cluster.certificate-authority: no such file"),
        ({"token": "t"}, {"server": "https://h"}, "other", "no entry named 'other' in contexts"),
    ],
)
def test_kubeconfig_errors_name_the_file_and_the_field(
    tmp_path: Path, user: dict[str, str], cluster: dict[str, str], context: str | None, message: str
) -> None:
    path = _kubeconfig(tmp_path, user, cluster)
    with pytest.raises(ConfigError) as err:
        load_kubeconfig(path, context=context)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_flags_need_readable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--token-file: cannot read"):
        from_flags(server="https://h", token_file=tmp_path / "missing")
    with pytest.raises(ConfigError, match="--ca-file: no such file"):
        from_flags(server="https://h", ca_file=tmp_path / "missing")
