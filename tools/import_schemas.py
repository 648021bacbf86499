"""Write ``schemas/_definitions.json``: the one schema document podling loads.

Invariant: the output holds exactly the transitive closure of the definitions podling needs,
so every ``$ref`` in it resolves inside it, and re-running the tool on the same inputs
writes the same bytes. Nothing else in podling edits the file; change an input and re-run.

Inputs
  * The Kubernetes v1.32 JSON schemas shipped by the PyPI package ``kubernetes-validate``
    (``kubernetes-json-schema/v1.32.0-local/_definitions.json``: JSON Schema 2020-12,
    ``$defs`` keyed by OpenAPI definition name, nullable fields typed ``[T, "null"]``, with
    the ``x-kubernetes-*`` extensions and descriptions that ``kubectl explain`` prints).
  * ``schemas/application.json``: podling's own ``podling.io/v1alpha1`` Application, written
    by hand in the same dialect; it may ``$ref`` any Kubernetes definition.

Roots of the closure: the ``definition`` of every kind in the resource table
(``podling.api.resources``), its ``<Kind>List`` when the kind can be listed (a review kind
such as TokenReview cannot, and has none), and the bodies the API sends or takes
besides them (Status, DeleteOptions, Patch, autoscaling/v1 Scale, core/v1 Binding and
policy/v1 Eviction).

Two upstream definitions are rewritten, both because ``oneOf: [{type: [string, null]},
{type: [integer, null]}]`` rejects ``null`` (it matches both branches): IntOrString becomes
``type: [string, integer, null]`` with ``format: int-or-string``, and Quantity becomes
``type: [string, number, null]``. Descriptions are added to both for ``kubectl explain``.

Why one file and not one per kind: the resource table already names each kind's definition,
the kinds share most of their definitions (ObjectMeta, PodSpec, ...), and every consumer
(the validators, the OpenAPI documents) wants the whole closure at once. Per-kind files would
duplicate the shared part or need cross-file refs, and would add nothing a lookup by name
does not give.

Usage (from the project root, in an environment where podling is importable)::

    python -m venv /tmp/kv && /tmp/kv/bin/pip install kubernetes-validate
    python tools/import_schemas.py \\
        --source /tmp/kv/lib/python3.11/site-packages/kubernetes_validate/kubernetes-json-schema/v1.32.0-local/_definitions.json

Without ``--source`` the tool looks for ``kubernetes_validate`` importable by this Python.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from podling.api.resources import RESOURCES

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
KUBERNETES_VERSION = "v1.32.0"
REF_PREFIX = "#/$defs/"

META = "io.k8s.apimachinery.pkg.apis.meta.v1."
EXTRA_ROOTS = (
    f"{META}Status",
    f"{META}DeleteOptions",
    f"{META}Patch",
    "io.k8s.api.autoscaling.v1.Scale",
    "io.k8s.api.core.v1.Binding",
    "io.k8s.api.policy.v1.Eviction",
)

REWRITES: dict[str, dict[str, Any]] = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "description": "IntOrString is a type that can hold an int32 or a string. When used in JSON or "
        "YAML marshalling and unmarshalling, it produces or consumes the inner type.",
        "format": "int-or-string",
        "type": ["string", "integer", "null"],
    },
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "description": "Quantity is a fixed-point representation of a number, written as a number "
        "with an optional SI or binary suffix: 500m, 1.5, 128Mi, 2Gi, 1e3.",
        "type": ["string", "number", "null"],
    },
}


def default_source() -> Path:
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("kubernetes_validate is not importable here: pass --source (see the docstring)")
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / "kubernetes-json-schema" / f"{KUBERNETES_VERSION}-local" / "_definitions.json"


def refs(node: Any) -> Iterator[str]:
    """Every definition name a schema node refers to, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value.removeprefix(REF_PREFIX)
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def closure(defs: dict[str, Any], roots: list[str]) -> dict[str, Any]:
    missing = [name for name in roots if name not in defs]
    if missing:
        raise SystemExit(f"definitions not found in the source: {', '.join(missing)}")
    kept: dict[str, Any] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in kept:
            continue
        if name not in defs:
            raise SystemExit(f"unresolvable $ref to {name!r}")
        kept[name] = defs[name]
        pending.extend(refs(defs[name]))
    return kept


def build(*, source: Path) -> dict[str, Any]:
    upstream = json.loads(source.read_text())["$defs"]
    own = json.loads((SCHEMAS / "application.json").read_text())["$defs"]
    defs = {**upstream, **REWRITES, **own}
    roots = [name for r in RESOURCES
             for name in ((r.definition, f"{r.definition}List") if "list" in r.verbs else (r.definition,))]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": f"Generated by tools/import_schemas.py from kubernetes-validate's Kubernetes "
        f"{KUBERNETES_VERSION} schemas and schemas/application.json. Do not edit: re-run the tool.",
        "$defs": closure(defs, roots + list(EXTRA_ROOTS)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="kubernetes-validate's v1.32.0-local/_definitions.json")
    parser.add_argument("--out", type=Path, default=SCHEMAS / "_definitions.json")
    args = parser.parse_args(argv)
    document = build(source=args.source or default_source())
    args.out.write_text(json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}: {len(document['$defs'])} definitions", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
