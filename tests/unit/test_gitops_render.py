"""podling.gitops.render: a directory of manifests → objects, or errors naming file:line:path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from podling.api.resources import by_kind
from podling.gitops.render import ObjectKey, render, with_namespace

NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"
WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
"""


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_good_tree_renders_every_object_in_order(tmp_path: Path) -> None:
    _tree(tmp_path, {"b/web.yaml": WEB, "a/ns.yml": NAMESPACE, "README.md": "# not a manifest\n"})
    rendered = render(root=tmp_path)
    assert rendered.ok and rendered.errors == []
    assert [(o.source_file, o.line, o.key) for o in rendered.objects] == [
        ("a/ns.yml", 1, ObjectKey(group="", kind="Namespace", namespace="", name="shop")),
        ("b/web.yaml", 1, ObjectKey(group="apps", kind="Deployment", namespace="shop", name="web")),
        ("b/web.yaml", 18, ObjectKey(group="", kind="Service", namespace="", name="web")),
    ]
    deployment = rendered.objects[1]
    assert deployment.resource is by_kind(api_version="apps/v1", kind="Deployment")
    assert deployment.obj["spec"]["replicas"] == 2
    assert deployment.line_of(("spec", "template", "spec", "containers", 0, "image")) == 16


def test_path_selects_a_subdirectory_and_nested_directories_are_read(tmp_path: Path) -> None:
    _tree(tmp_path, {"other/ns.yaml": NAMESPACE, "apps/shop/deep/er/web.yaml": WEB})
    for path in ("apps", "apps/", "/apps", "./apps/shop/../"):
        rendered = render(root=tmp_path, path=path)
        assert rendered.ok
        assert [o.source_file for o in rendered.objects] == ["apps/shop/deep/er/web.yaml"] * 2


def test_json_files_and_multi_document_yaml(tmp_path: Path) -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "b"}}
    _tree(tmp_path, {"cm.json": json.dumps(config, indent=2), "two.yaml": f"---\n{NAMESPACE}---\n---\n{WEB}"})
    rendered = render(root=tmp_path)
    assert rendered.ok, rendered.errors
    assert [(o.source_file, o.line, o.key.kind) for o in rendered.objects] == [
        ("cm.json", 1, "ConfigMap"), ("two.yaml", 2, "Namespace"), ("two.yaml", 8, "Deployment"),
        ("two.yaml", 25, "Service"),
    ]
    assert rendered.objects[0].obj == config


def test_hidden_files_and_directories_are_skipped(tmp_path: Path) -> None:
    _tree(tmp_path, {"ns.yaml": NAMESPACE, ".git/config.yaml": "not: [valid", ".github/workflows/ci.yml": "on: push\n",
                     "apps/.draft.yaml": WEB})
    rendered = render(root=tmp_path)
    assert rendered.ok
    assert [o.source_file for o in rendered.objects] == ["ns.yaml"]


def test_the_same_object_twice_names_both_places(tmp_path: Path) -> None:
    _tree(tmp_path, {"a.yaml": WEB, "z/copy.yaml": "# again\n" + WEB.split("---\n")[0]})
    rendered = render(root=tmp_path)
    assert not rendered.ok
    assert [str(e) for e in rendered.errors] == [
        "z/copy.yaml:2: Deployment/web: defined twice: also at a.yaml:1 (namespace shop)"]
    assert [o.source_file for o in rendered.objects] == ["a.yaml", "a.yaml"]


def test_duplicates_compare_the_api_group_not_its_version(tmp_path: Path) -> None:
    lease = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: l, namespace: x}\n"
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: l, namespace: x}\nspec:\n  containers: [{name: c, image: i}]\n"
    _tree(tmp_path, {"a.yaml": lease + "---\n" + pod, "b.yaml": lease})
    [error] = render(root=tmp_path).errors
    assert str(error) == "b.yaml:1: Lease/l: defined twice: also at a.yaml:1 (namespace x)"


def test_a_default_namespace_makes_unnamespaced_and_namespaced_copies_collide(tmp_path: Path) -> None:
    _tree(tmp_path, {"a.yaml": WEB, "b.yaml": WEB.split("---\n")[0].replace("  namespace: shop\n", "")})
    assert render(root=tmp_path).ok  # without the destination they look like two objects
    rendered = render(root=tmp_path, default_namespace="shop")
    assert [str(e) for e in rendered.errors] == [
        "b.yaml:1: Deployment/web: defined twice: also at a.yaml:1 (namespace shop)"]
    service = rendered.objects[1]
    assert service.key == ObjectKey(group="", kind="Service", namespace="shop", name="web")
    assert service.obj["metadata"]["namespace"] == "shop"


def test_schema_errors_name_file_line_and_field(tmp_path: Path) -> None:
    broken = WEB.replace("replicas: 2", "replicas: two").replace("image: busybox", "image: [busybox]")
    _tree(tmp_path, {"ns.yaml": NAMESPACE, "apps/web.yaml": broken})
    rendered = render(root=tmp_path)
    assert [str(e) for e in rendered.errors] == [
        'apps/web.yaml:7: Deployment/web: spec.replicas: Invalid value: "two": must be of type integer',
        "apps/web.yaml:16: Deployment/web: spec.template.spec.containers[0].image: "
        "Invalid value: array: must be of type string",
    ]
    error = rendered.errors[1]
    assert (error.file, error.line, error.object, error.path) == (
        "apps/web.yaml", 16, "Deployment/web", "spec.template.spec.containers[0].image")
    # Only the objects that passed are rendered; the errors block the revision anyway.
    assert [o.key.kind for o in rendered.objects] == ["Service", "Namespace"]


def test_unknown_fields_are_errors(tmp_path: Path) -> None:
    _tree(tmp_path, {"web.yaml": WEB.replace("        image: busybox\n", "        image: busybox\n        imagePullPolcy: Always\n")})
    [error] = render(root=tmp_path).errors
    assert str(error) == "web.yaml:17: Deployment/web: spec.template.spec.containers[0].imagePullPolcy: unknown field"


def test_unserved_kinds_and_missing_kinds_are_errors(tmp_path: Path) -> None:
    _tree(tmp_path, {"x.yaml": "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n---\n"
                               "apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: d}\n---\n"
                               "kind: ConfigMap\nmetadata: {name: c}\n"})
    assert [str(e) for e in render(root=tmp_path).errors] == [
        "x.yaml:2: Widget/w: kind Widget in apiVersion example.com/v1 is not served by podling",
        "x.yaml:6: Deployment/d: kind Deployment in apiVersion apps/v1beta1 is not served by podling",
        "x.yaml:9: object has no apiVersion",
    ]


def test_names_are_required(tmp_path: Path) -> None:
    _tree(tmp_path, {"x.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: c-\n---\n"
                               "apiVersion: v1\nkind: ConfigMap\ndata: {}\n"})
    assert [str(e) for e in render(root=tmp_path).errors] == [
        "x.yaml:3: ConfigMap/c-*: metadata.name: Required value: generateName cannot be synced from git",
        "x.yaml:6: ConfigMap/<unnamed>: metadata.name: Required value: name or generateName is required",
    ]


def test_documents_that_are_not_objects_and_bad_yaml_name_their_line(tmp_path: Path) -> None:
    _tree(tmp_path, {"a.yaml": NAMESPACE + "---\n- just\n- a list\n", "b.yaml": "kind: [\n", "c.yaml": WEB})
    rendered = render(root=tmp_path)
    assert [(e.file, e.line) for e in rendered.errors] == [("a.yaml", 6), ("b.yaml", 2)]
    assert "must be an object" in rendered.errors[0].message
    # The other files are still checked, so one push shows every problem at once.
    assert [o.source_file for o in rendered.objects] == ["c.yaml", "c.yaml"]


def test_missing_path_and_paths_outside_the_repository_are_errors(tmp_path: Path) -> None:
    repo = _tree(tmp_path / "repo", {"ns.yaml": NAMESPACE})
    _tree(tmp_path, {"secret.yaml": NAMESPACE})
    assert [str(e) for e in render(root=repo, path="nope").errors] == ["nope: no such file or directory in the repository"]
    assert [str(e) for e in render(root=repo, path="../").errors] == ["..: path leads outside the repository"]
    (repo / "leak.yaml").symlink_to(tmp_path / "secret.yaml")
    assert [str(e) for e in render(root=repo).errors] == ["leak.yaml: symlink leads outside the repository"]


def test_with_namespace_scopes_as_the_api_server_does() -> None:
    deployment, namespace = by_kind(api_version="apps/v1", kind="Deployment"), by_kind(api_version="v1", kind="Namespace")
    assert deployment is not None and namespace is not None
    bare = {"kind": "Deployment", "metadata": {"name": "web"}}
    assert with_namespace(bare, resource=deployment, default_namespace="shop")["metadata"] == {"name": "web", "namespace": "shop"}
    assert bare == {"kind": "Deployment", "metadata": {"name": "web"}}  # a copy; the input is kept
    placed = {"kind": "Deployment", "metadata": {"name": "web", "namespace": "other"}}
    assert with_namespace(placed, resource=deployment, default_namespace="shop") is placed
    stray = {"kind": "Namespace", "metadata": {"name": "shop", "namespace": "x"}}
    assert with_namespace(stray, resource=namespace, default_namespace="shop")["metadata"] == {"name": "shop"}


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_every_manifest_suffix_is_read(tmp_path: Path, suffix: str) -> None:
    _tree(tmp_path, {f"ns{suffix}": json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}})})
    assert [o.key.name for o in render(root=tmp_path).objects] == ["n"]
