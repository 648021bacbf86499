"""Write ``schemas/_protobuf.json``: the field table podling's protobuf decoder reads.

Invariant: the output maps every message the decoder can meet (the closure of ``ROOTS``) to its
fields, field number → ``{"name", "type"}`` or ``{"name", "map": [key type, value type]}``, plus
``"repeated": true`` for lists, ``"inline": true`` for an embedded struct and
``"omitempty": true`` where a zero value means "no JSON field"; a type is a scalar kind, a
message of the file or one of the decoder's ``SPECIAL_TYPES``. Nothing edits the file by hand;
re-running the tool on the same inputs writes the same bytes.

Inputs
  * core/v1, meta/v1 and the apimachinery helper types: the serialized FileDescriptorProtos
    embedded in the ``generated_pb2.py`` files of the PyPI sdist ``k8s-proto`` 0.0.3 (read with
    ``ast``, never executed, and parsed with ``google.protobuf.descriptor_pb2``). Kubernetes
    never renumbers a proto field (a removed field's number stays reserved), so its numbers are
    right; but it was generated around Kubernetes 1.14, so later fields are missing
    (ServiceSpec.clusterIPs/ipFamilies/ipFamilyPolicy/internalTrafficPolicy…,
    ServicePort.appProtocol, PodSpec.ephemeralContainers/overhead/topologySpreadConstraints/
    os/hostUsers/schedulingGates…, Container.startupProbe/resizePolicy/restartPolicy,
    ManagedFieldsEntry.fieldsType/fieldsV1/subresource). The decoder skips such a field when it
    holds only its zero value and refuses the body otherwise.
  * apps/v1, which k8s-proto lacks: ``APPS_V1`` below, read off kubectl v1.32's own bytes.
  * ``schemas/_definitions.json`` (Kubernetes v1.32). A field its definition does not have is
    either a Go struct embedded ``json:",inline"`` (Volume.volumeSource, Probe.handler,
    ConfigMapKeySelector.localObjectReference…: every field of its message is a property of
    the definition), marked ``"inline": true`` so the decoder merges its fields into the parent,
    or a field removed upstream (ObjectMeta.clusterName, .initializers,
    ManagedFieldsEntry.fields, EventSeries.state), left out. A ``required`` field keeps a zero
    value.
  * ``tests/unit/fixtures/protobuf`` (``tools/capture_protobuf.py``): Go writes every
    non-pointer field, zero or not, so a scalar field missing from a captured message is a
    pointer, whose zero is a real value; so is one written as zero that the JSON twin keeps
    (``spec.replicas: 0``). Every other scalar gets ``"omitempty": true``: right for most
    (Go's non-pointer ``omitempty`` fields), wrong for the pointers of messages no fixture
    shows (SecurityContext.runAsUser, Toleration.tolerationSeconds,
    ReplicationControllerSpec.replicas…), whose explicit zero is then dropped. kubectl sends
    none of those messages as protobuf.

Usage, from the project root where podling is installed::

    pip download --no-deps --no-binary :all: k8s-proto==0.0.3 -d /tmp/pp
    tar -xzf /tmp/pp/k8s-proto-0.0.3.tar.gz -C /tmp/pp
    pip install protobuf    # for this tool only: podling never imports it
    python tools/import_protobuf.py --source /tmp/pp/k8s-proto-0.0.3
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import Counter
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from podling.api import protobuf
from podling.api.resources import RESOURCES
from podling.api.schema import definitions

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "schemas" / "_protobuf.json"
FIXTURES = ROOT / "tests" / "unit" / "fixtures" / "protobuf"

META = protobuf.META
CORE = "k8s.io.api.core.v1."
APPS = "k8s.io.api.apps.v1."
Table = dict[str, dict[int, dict[str, Any]]]

# The message of every kind podling serves, plus the bodies it takes besides them.
ROOTS = (*(protobuf.candidates(api_version=r.api_version, kind=r.kind)[0] for r in RESOURCES),
         f"{CORE}Binding", f"{META}DeleteOptions")

# Read off the bytes kubectl v1.32 sends for `kubectl create deployment capture-deploy
# --image=nginx:1.27 --replicas=3 --port=8080` (fixture deployment.pb), field by field against
# the same command's --dry-run=client -o json (deployment.json):
APPS_V1: Table = {
    f"{APPS}Deployment": {
        1: {"name": "metadata", "type": f"{META}ObjectMeta"},  # the message holding name "capture-deploy"
        2: {"name": "spec", "type": f"{APPS}DeploymentSpec"},  # the message holding replicas 3
        3: {"name": "status", "type": f"{APPS}DeploymentStatus"},  # the last one, all zeros: "status": {}
    },
    f"{APPS}DeploymentSpec": {
        1: {"name": "replicas", "type": "int32"},  # varint 3; varint 0 for --replicas=0, which JSON keeps
        2: {"name": "selector", "type": f"{META}LabelSelector"},  # one matchLabels entry app=capture-deploy
        3: {"name": "template", "type": f"{CORE}PodTemplateSpec"},  # labels, container nginx:1.27, port 8080
        4: {"name": "strategy", "type": f"{APPS}DeploymentStrategy"},  # the last message: "strategy": {}
        # 5 and 7 come as varint 0: non-pointer fields kubectl has no flag for, absent from
        # the JSON, so nothing here names them; the decoder skips unknown zero fields.
    },
    f"{APPS}DeploymentStrategy": {},  # only field 1 = "" (type, unset): {}
    f"{APPS}DeploymentStatus": {},  # only varint zeros in fields 1-5 and 7 (counters): {}
}

_SCALARS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
}


def _descriptors(source: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    """The FileDescriptorProtos embedded in k8s-proto's generated code, without running it."""
    files = []
    for path in sorted(source.rglob("generated_pb2.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "serialized_pb":  # protoc < 3.20
                value = node.value.args[0] if isinstance(node.value, ast.Call) else node.value
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
                value = node.args[0]
            else:
                continue
            data = value.value.encode("latin-1") if isinstance(value.value, str) else value.value
            files.append(descriptor_pb2.FileDescriptorProto.FromString(data))
    if not files:
        raise SystemExit(f"no generated_pb2.py with a serialized descriptor under {source}")
    return files


def _messages(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, descriptor_pb2.DescriptorProto]:
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def add(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        found[f"{prefix}.{message.name}"] = message
        for nested in message.nested_type:
            add(f"{prefix}.{message.name}", nested)

    for file in files:
        for message in file.message_type:
            add(file.package, message)
    return found


def _type(field: descriptor_pb2.FieldDescriptorProto, where: str) -> str:
    if field.type == field.TYPE_MESSAGE:
        return field.type_name.removeprefix(".")
    if field.type not in _SCALARS:
        raise SystemExit(f"{where}: proto type {field.type} is not one the decoder reads")
    return _SCALARS[field.type]


def _definition(message: str) -> dict[str, Any] | None:
    """The v1.32 schema definition of a message (k8s.io.api.core.v1.Pod: io.k8s.api.core.v1.Pod)."""
    return definitions().get("io.k8s." + message.removeprefix("k8s.io."))


def _table(messages: dict[str, descriptor_pb2.DescriptorProto]) -> Table:
    """Every message as field number → spec: inline structs marked, removed fields left out."""
    table: Table = {name: {n: dict(spec) for n, spec in fields.items()} for name, fields in APPS_V1.items()}
    for name, message in messages.items():
        if message.options.map_entry or name in protobuf.SPECIAL_TYPES:
            continue
        definition = _definition(name)
        fields: dict[int, dict[str, Any]] = {}
        properties = (definition or {}).get("properties", {})
        for field in message.field:
            where = f"{name}.{field.name}"
            type_name = _type(field, where)
            entry = messages.get(type_name)
            if definition is not None and field.name not in properties:
                if entry is not None and entry.field and all(part.name in properties for part in entry.field):
                    fields[field.number] = {"name": field.name, "type": type_name, "inline": True}
                continue
            if entry is not None and entry.options.map_entry:
                fields[field.number] = {"name": field.name, "map": [_type(part, where) for part in entry.field]}
            elif field.label == field.LABEL_REPEATED:
                fields[field.number] = {"name": field.name, "type": type_name, "repeated": True}
            else:
                fields[field.number] = {"name": field.name, "type": type_name}
        table[name] = fields
    return table


def _closure(table: Table) -> Table:
    keep: Table = {}
    todo = [root for root in ROOTS if root in table]
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = table[name]
        todo.extend(type_name for spec in table[name].values()
                    for type_name in spec.get("map", [spec.get("type")]) if type_name in table)
    return keep


def _zero_kept(table: Table) -> set[tuple[str, int]]:
    """(message, field) pairs whose zero value is a value: Go pointers, by kubectl's bytes."""
    kept: set[tuple[str, int]] = set()

    def walk(data: bytes, name: str, twin: dict[str, Any]) -> None:
        fields = table[name]
        seen: Counter[int] = Counter()
        for number, _, value in protobuf.read_fields(data, path=name):
            seen[number] += 1
            spec = fields.get(number)
            if spec is None or "map" in spec:
                continue
            if spec.get("inline"):
                walk(value, spec["type"], twin)
            elif spec["type"] in table:
                below = twin.get(spec["name"])
                walk(value, spec["type"], below[seen[number] - 1] if spec.get("repeated") else below)
            elif not value and spec["name"] in twin:
                kept.add((name, number))
        kept.update((name, number) for number in fields if number not in seen)

    for body in sorted(FIXTURES.glob("*.pb")):
        envelope = protobuf.unwrap(body.read_bytes())
        name = next(n for n in protobuf.candidates(api_version=envelope.api_version, kind=envelope.kind)
                    if n in table)
        walk(envelope.raw, name, json.loads(body.with_suffix(".json").read_text()))
    return kept


def _omitempty(table: Table) -> None:
    kept = _zero_kept(table)
    for name, fields in table.items():
        required = set((_definition(name) or {}).get("required", ()))
        for number, spec in fields.items():
            scalar = spec.get("type") in _SCALARS.values() and not spec.get("repeated")
            if scalar and spec["name"] not in required and (name, number) not in kept:
                spec["omitempty"] = True


def _dump(table: Table) -> str:
    messages = []
    for name in sorted(table):
        fields = ",\n".join(f'    "{number}": {json.dumps(spec)}' for number, spec in sorted(table[name].items()))
        messages.append(f"  {json.dumps(name)}: {{\n{fields}\n  }}" if fields else f"  {json.dumps(name)}: {{}}")
    return "{\n" + ",\n".join(messages) + "\n}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="the unpacked k8s-proto sdist")
    args = parser.parse_args()
    table = _closure(_table(_messages(_descriptors(args.source))))
    _omitempty(table)
    OUTPUT.write_text(_dump(table), encoding="utf-8")
    print(f"{OUTPUT.relative_to(ROOT)}: {len(table)} messages, "
          f"{sum(len(fields) for fields in table.values())} fields")


if __name__ == "__main__":
    main()
