"""podling.api.manifests and `podling validate`: file:line for every problem in a manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from podling.api.manifests import ManifestError, load_text, manifest_files
from podling.cli import validate

TWO_DOCUMENTS = """\
# a web server
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: web
    image: nginx
    env:
    - name: DEBUG
      value: "yes"
---
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata:
    name: settings
  data:
    enabled: "yes"
    since: 2024-05-01
"""

BROKEN_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: three
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - image: nginx
        prots:
        - containerPort: 80
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: gadget}
"""


def test_documents_keep_their_lines() -> None:
    pod, config_map = load_text(TWO_DOCUMENTS, source_file="web.yaml")
    assert (pod.source_file, pod.line) == ("web.yaml", 2)
    assert pod.obj["spec"]["containers"][0]["env"] == [{"name": "DEBUG", "value": "yes"}]
    assert pod.line_of(("spec", "containers", 0, "env", 0, "value")) == 13
    assert pod.line_of(("metadata", "labels", "app")) == 6
    # A path that does not exist answers the line of its deepest existing ancestor.
    assert pod.line_of(("spec", "containers", 0, "resources", "limits")) == 9
    assert pod.line_of(()) == 2
    # A List stands for its items; each keeps its own lines.
    assert config_map.obj["kind"] == "ConfigMap"
    assert (config_map.line, config_map.line_of(("metadata", "name"))) == (19, 22)


def test_scalars_mean_what_they_mean_to_kubectl() -> None:
    # YAML 1.1 as go-yaml v2 reads it, in every document: yes is a boolean, a date stays text.
    text = "a: yes\n---\na: 0755\nb: 1:20\nc: &x on\nd: *x\ne: 1.5\nf: 2024-05-01\ng: 'yes'\n"
    first, second = (m.obj for m in load_text(text, source_file="x.yaml"))
    assert first == {"a": True}
    assert second == {"a": 493, "b": "1:20", "c": True, "d": True, "e": 1.5, "f": "2024-05-01", "g": "yes"}


def test_json_manifests_load_with_lines() -> None:
    [m] = load_text('{\n\t"apiVersion": "v1",\n\t"kind": "Namespace",\n\t"metadata": {"name": "shop"}\n}\n',
                    source_file="ns.json")
    assert m.obj == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    assert m.line_of(("metadata", "name")) == 4


@pytest.mark.parametrize(("text", "line", "message"), [
    ("a: 1\nb: [\n", 3, "expected the node content"),
    ("kind: Pod\nkind: Pod\n", 2, "duplicate key"),
    ("metadata:\n  name: a: b\n", 2, "mapping values are not allowed here"),
    ("- 1\n- 2\n", 1, "must be an object"),
])
def test_bad_yaml_names_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_text(text, source_file="bad.yaml")
    assert (caught.value.source_file, caught.value.line) == ("bad.yaml", line)
    assert message in caught.value.message
    assert str(caught.value).startswith(f"bad.yaml:{line}: ")


def test_manifest_files_walks_directories_in_order(tmp_path: Path) -> None:
    for name in ("b.yaml", "a/c.yml", "a/d.json", "README.md", ".git/e.yaml", "a/.hidden.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    assert manifest_files([tmp_path]) == [tmp_path / "a/c.yml", tmp_path / "a/d.json", tmp_path / "b.yaml"]
    assert manifest_files([tmp_path / "README.md"]) == [tmp_path / "README.md"]
    with pytest.raises(ManifestError, match="no such file"):
        manifest_files([tmp_path / "missing"])


def test_validate_prints_file_line_object_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "deploy.yaml"
    broken.write_text(BROKEN_DEPLOYMENT)
    assert validate.run(paths=[str(broken)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f'{broken}:6: Deployment/web: spec.replicas: Invalid value: "three": must be of type integer',
        f"{broken}:14: Deployment/web: spec.template.spec.containers[0].name: Required value",
        f"{broken}:15: Deployment/web: spec.template.spec.containers[0].prots: unknown field",
        f"{broken}:19: Widget/gadget: kind Widget in apiVersion example.com/v1 is not served by podling",
        "1 file, 2 objects: 4 problems",
    ]


def test_validate_passes_good_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "web.yaml").write_text(TWO_DOCUMENTS)
    assert validate.run(paths=[str(tmp_path)]) == 0
    assert capsys.readouterr().out == "1 file, 2 objects: valid\n"


def test_validate_catches_an_unquoted_yes_as_kubectl_would(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  debug: yes\n")
    assert validate.run(paths=[str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{tmp_path / 'cm.yaml'}:5: ConfigMap/c: data[debug]: Invalid value: true: must be of type string")


def test_validate_reports_syntax_errors_and_keeps_going(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [}\n")
    (tmp_path / "b.yaml").write_text("kind: ConfigMap\nmetadata: {name: x}\n")
    (tmp_path / "c.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n")
    assert validate.run(paths=[str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{tmp_path / 'a.yaml'}:3: ")
    assert out[1:] == [f"{tmp_path / 'b.yaml'}:1: object has no apiVersion", "3 files, 2 objects: 2 problems"]


def test_validate_missing_path_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert validate.run(paths=[str(tmp_path / "nope.yaml")]) == 1
    assert capsys.readouterr().out == f"{tmp_path / 'nope.yaml'}: no such file or directory\n"
