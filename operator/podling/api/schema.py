"""Schema validation of Kubernetes-shaped objects against ``schemas/_definitions.json``.

Invariant: ``validator(definition).validate(obj)`` returns no errors and no unknown fields
exactly when ``obj`` satisfies the definition's JSON Schema (Draft 2020-12, as the
``jsonschema`` package reads it) and every field of ``obj`` is declared by the schema (maps,
``additionalProperties``, excepted). The answer is the same whichever path computes it:

* fast path, taken by every call: a ``fastjsonschema`` function compiled from a *strict*
  variant of the schema (``additionalProperties: false`` on every object that lists its
  properties; descriptions, formats and extensions dropped). It only ever says "valid, no
  unknown fields"; a failure proves nothing, because it stops at the first problem and its
  reports are not Kubernetes-shaped.
* slow path, only when the fast one fails: ``jsonschema`` on the schema as written collects
  every error, and a walk beside it collects every unknown field. Both are authoritative; the
  strict variant can only be stricter, so a fast-path failure that the slow path does not
  confirm (``1.0`` for an integer, say) is still reported as valid.

``format`` is an annotation on both paths (``int32``, ``date-time``, ``int-or-string`` never
reject an object), as in Kubernetes, whose decoder and not its schema checks those.

Errors are reported the way the API server reports causes: a Kubernetes field path
(``spec.containers[0].image``; map keys in brackets, ``metadata.labels[app]``), a cause type
(``FieldValueRequired``, ``FieldValueTypeInvalid``, ...) and a message body, plus the JSON path
as a tuple, so a caller holding the source text can map it to a file and line.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import fastjsonschema
import jsonschema

PathStep = str | int
JsonPath = tuple[PathStep, ...]

_REF_PREFIX = "#/$defs/"
# jsonschema's keyword -> Kubernetes cause type; anything else is FieldValueInvalid.
_REASONS = {
    "required": "FieldValueRequired",
    "type": "FieldValueTypeInvalid",
    "enum": "FieldValueNotSupported",
    "const": "FieldValueNotSupported",
    "maxLength": "FieldValueTooLong",
    "maxItems": "FieldValueTooMany",
    "maxProperties": "FieldValueTooMany",
}


@dataclasses.dataclass(frozen=True, slots=True)
class FieldError:
    field: str  # Kubernetes field path: spec.containers[0].image
    reason: str  # Kubernetes cause type: FieldValueRequired, FieldValueTypeInvalid, ...
    message: str  # the body after "field: ", e.g. 'Invalid value: "x": must be of type integer'
    path: JsonPath  # JSON path from the object's root: ("spec", "containers", 0, "image")

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    errors: list[FieldError]
    unknown_fields: list[str]  # ".spec.foo", ".spec.containers[0].bar"
    unknown_paths: list[JsonPath]  # the same fields as JSON paths, in the same order

    @property
    def ok(self) -> bool:
        return not self.errors and not self.unknown_fields


@functools.cache
def definitions() -> Mapping[str, dict[str, Any]]:
    """Every definition in ``_definitions.json`` by name (shared: do not mutate)."""
    resource = importlib.resources.files("podling") / "schemas" / "_definitions.json"
    return MappingProxyType(json.loads(resource.read_text(encoding="utf-8"))["$defs"])


def _deref(node: Mapping[str, Any]) -> Mapping[str, Any]:
    """The schema a node stands for, following ``$ref`` to its definition."""
    defs = definitions()
    while "$ref" in node:
        node = defs[node["$ref"].removeprefix(_REF_PREFIX)]
    return node


@functools.cache
def validator(definition: str) -> KindValidator:
    """The validator of one definition (``io.k8s.api.core.v1.Pod``), compiled once."""
    if definition not in definitions():
        raise KeyError(f"no schema definition named {definition!r}")
    return KindValidator(definition=definition)


class KindValidator:
    """Validates objects against one definition; get it from :func:`validator`, which caches it."""

    def __init__(self, *, definition: str) -> None:
        self.definition = definition
        self._root = {"$ref": _REF_PREFIX + definition}
        self._fast = fastjsonschema.compile({**self._root, "$defs": _strict_definitions()}, use_default=False)
        self._full = jsonschema.Draft202012Validator({**self._root, "$defs": dict(definitions())})

    def validate(self, obj: Any) -> Result:
        if isinstance(obj, dict):
            try:
                self._fast(obj)
                return Result(errors=[], unknown_fields=[], unknown_paths=[])
            except fastjsonschema.JsonSchemaValueException:
                pass
        errors = sorted(self._errors(obj), key=lambda e: _sort_key(e.path))
        unknown = sorted(_unknown(self._root, obj, ()), key=_sort_key)
        return Result(
            errors=errors,
            unknown_fields=["." + self.field(path) for path in unknown],
            unknown_paths=unknown,
        )

    def field(self, path: JsonPath) -> str:
        """The Kubernetes field path of a JSON path: map keys in brackets, fields after dots."""
        node: Mapping[str, Any] = self._root
        out = []
        for step in path:
            node = _deref(node)
            properties = node.get("properties") or {}
            if isinstance(step, int):
                out.append(f"[{step}]")
                node = node.get("items") or {}
            elif step in properties:
                out.append(f".{step}")
                node = properties[step]
            elif isinstance(node.get("additionalProperties"), dict):
                out.append(f"[{step}]")
                node = node["additionalProperties"]
            else:
                out.append(f".{step}")
                node = {}
        return "".join(out).removeprefix(".")

    def _errors(self, obj: Any) -> Iterator[FieldError]:
        if not isinstance(obj, dict):
            yield FieldError(field="", reason="FieldValueTypeInvalid",
                             message=f"Invalid value: {_show(obj)}: must be of type object", path=())
            return
        for error in self._full.iter_errors(obj):
            path: JsonPath = tuple(error.absolute_path)
            if error.validator == "required":
                # One jsonschema error per missing property; its name is only in the message.
                missing = [p for p in error.validator_value if p not in error.instance]
                path = (*path, next((p for p in missing if error.message.startswith(repr(p))), missing[0]))
                message = "Required value"
            elif error.validator == "type":
                message = f"Invalid value: {_show(error.instance)}: must be of type {_types(error.validator_value)}"
            elif error.validator in ("enum", "const"):
                allowed = error.validator_value if error.validator == "enum" else [error.validator_value]
                supported = ", ".join(json.dumps(v) for v in allowed if v is not None)
                message = f"Unsupported value: {_show(error.instance)}: supported values: {supported}"
            else:
                message = f"Invalid value: {_show(error.instance)}: {error.message}"
            yield FieldError(field=self.field(path), reason=_REASONS.get(str(error.validator), "FieldValueInvalid"),
                             message=message, path=path)


def _unknown(node: Mapping[str, Any], value: Any, path: JsonPath) -> Iterator[JsonPath]:
    """JSON paths of the fields in ``value`` that ``node`` does not declare."""
    node = _deref(node)
    if isinstance(value, dict):
        properties = node.get("properties")
        extra = node.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                yield from _unknown(properties[key], item, (*path, key))
            elif isinstance(extra, dict):
                yield from _unknown(extra, item, (*path, key))
            elif extra is False or (extra is None and properties is not None):
                yield (*path, key)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            yield from _unknown(node["items"], item, (*path, index))


@functools.cache
def _strict_definitions() -> dict[str, Any]:
    return {name: _strict(node) for name, node in definitions().items()}


def _strict(node: Any) -> Any:
    """The fast path's variant of a schema node: closed objects, no annotations."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()
           if key not in ("description", "format", "default", "properties") and not key.startswith("x-")}
    if "properties" in node:
        out["properties"] = {name: _strict(value) for name, value in node["properties"].items()}
        out.setdefault("additionalProperties", False)
    return out


def _sort_key(path: JsonPath) -> tuple[tuple[int, str], ...]:
    return tuple((1, str(step)) if isinstance(step, str) else (0, f"{step:09d}") for step in path)


def _types(allowed: str | list[str]) -> str:
    names = [allowed] if isinstance(allowed, str) else [t for t in allowed if t != "null"]
    return " or ".join(names)


def _show(value: Any) -> str:
    """A value as Kubernetes prints it in a cause message: scalars as JSON, containers by type."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return json.dumps(value)
