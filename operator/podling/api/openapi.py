"""The OpenAPI documents podling serves, built from ``schemas/`` and the resource table.

Invariant: every document is a pure function of ``_definitions.json`` and
``podling.api.resources``; it is built once per process and served as precomputed bytes, and
every ``$ref`` in it resolves inside the same document.

What kubectl 1.32 reads (client-go ``openapi``/``openapi3``, kubectl ``explain`` and
``apply``), and so what these documents are shaped for:

* ``GET /openapi/v3`` lists ``{"paths": {"api/v1": {"serverRelativeURL":
  "/openapi/v3/api/v1?hash=..."}}}``; clients fetch each URL as JSON, the hash only busts
  caches (kube-apiserver uses the upper-case hex SHA-512 of the document, and so does podling).
* ``kubectl explain`` finds the GVK on an operation of the resource's collection or item path
  (``x-kubernetes-group-version-kind`` as one object), then the schema in
  ``components.schemas`` whose ``x-kubernetes-group-version-kind`` list holds that GVK. Its
  templates compare ``type`` with strings, so every ``type`` is one string (``null`` dropped
  from the imported ``[T, "null"]`` lists), and a ``$ref`` with a description beside it is
  written ``allOf: [{$ref}]`` as kube-apiserver does in v3.
* ``kubectl apply`` asks whether a kind supports server-side field validation by looking for a
  ``fieldValidation`` parameter on the first PATCH operation carrying the kind's GVK, so every
  PATCH (status ones too) declares it; otherwise kubectl falls back to client-side validation
  from the protobuf-only ``/openapi/v2``. It computes strategic merge patches from the v3
  schema (``x-kubernetes-patch-merge-key`` / ``-strategy``) when the PATCH operation accepts
  ``application/strategic-merge-patch+json``, which only Kubernetes' own kinds do; podling's
  Application gets JSON merge patches, as a custom resource would.
* ``/openapi/v2`` (Swagger 2.0, ``#/definitions/...``) is served as JSON for other clients;
  kubectl asks for it only as protobuf and copes without it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import podling
from podling.api import resources
from podling.api.resources import Resource
from podling.api.schema import definitions

_SOURCE_REF = "#/$defs/"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_STATUS = f"{_META}Status"
_DELETE_OPTIONS = f"{_META}DeleteOptions"
_PATCH = f"{_META}Patch"
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
# How each OpenAPI version spells the two multi-type definitions (as kube-apiserver does).
_V2_SCALARS = {
    _INT_OR_STRING: {"type": "string", "format": "int-or-string"},
    _QUANTITY: {"type": "string"},
}
_V3_SCALARS = {
    _INT_OR_STRING: {"format": "int-or-string", "oneOf": [{"type": "integer"}, {"type": "string"}]},
    _QUANTITY: {"oneOf": [{"type": "string"}, {"type": "number"}]},
}
_SUBRESOURCE_KINDS = {  # subresource -> (definition, GVK) of its body, when not the resource's own
    "scale": ("io.k8s.api.autoscaling.v1.Scale", ("autoscaling", "v1", "Scale")),
    "binding": ("io.k8s.api.core.v1.Binding", ("", "v1", "Binding")),
    "eviction": ("io.k8s.api.policy.v1.Eviction", ("policy", "v1", "Eviction")),
}
_JSON = ("application/json", "application/yaml")
_ACTION_VERBS = {"list": "list", "post": "create", "deletecollection": "deletecollection", "get": "get",
                 "put": "update", "patch": "patch", "delete": "delete"}  # x-kubernetes-action -> verb
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")
_STRATEGIC = "application/strategic-merge-patch+json"

_QUERY: dict[str, tuple[str, str]] = {
    "pretty": ("string", "If 'true', then the output is pretty printed."),
    "dryRun": ("string", "When present (All), modifications are validated but not persisted."),
    "fieldManager": ("string", "A name associated with the actor or entity that is making these changes."),
    "fieldValidation": ("string", "How the server treats unknown and duplicate fields: Ignore, Warn or Strict."),
    "force": ("boolean", "Force an Apply request to take over conflicting fields."),
    "labelSelector": ("string", "A selector to restrict the list of returned objects by their labels."),
    "fieldSelector": ("string", "A selector to restrict the list of returned objects by their fields."),
    "limit": ("integer", "The maximum number of responses to return for a list call."),
    "continue": ("string", "The continue token of a previous list call, to retrieve its next page."),
    "resourceVersion": ("string", "Constrains which resource versions the request may be served from."),
    "resourceVersionMatch": ("string", "How resourceVersion is applied to list calls: Exact or NotOlderThan."),
    "timeoutSeconds": ("integer", "Timeout for the list/watch call."),
    "watch": ("boolean", "Watch for changes to the described resources and return them as a stream."),
    "allowWatchBookmarks": ("boolean", "Requests watch events of type BOOKMARK."),
    "sendInitialEvents": ("boolean", "Start a watch with synthetic ADDED events for the current state."),
    "gracePeriodSeconds": ("integer", "The duration in seconds before the object should be deleted."),
    "propagationPolicy": ("string", "How dependents are garbage collected: Orphan, Background or Foreground."),
    "orphanDependents": ("boolean", "Deprecated: use propagationPolicy."),
    "container": ("string", "The container for which to stream logs or run the command."),
    "follow": ("boolean", "Follow the log stream of the pod."),
    "previous": ("boolean", "Return the logs of the previous terminated container."),
    "sinceSeconds": ("integer", "Only return logs newer than this many seconds."),
    "tailLines": ("integer", "The number of lines from the end of the logs to show."),
    "timestamps": ("boolean", "Add an RFC3339 timestamp at the beginning of every line of log output."),
    "limitBytes": ("integer", "The number of bytes to read from the server before terminating the log output."),
    "command": ("string", "The command to execute; repeated for each argument."),
    "stdin": ("boolean", "Redirect the standard input stream of the pod for this call."),
    "stdout": ("boolean", "Redirect the standard output stream of the pod for this call."),
    "stderr": ("boolean", "Redirect the standard error stream of the pod for this call."),
    "tty": ("boolean", "Allocate a terminal for this exec call."),
}
_LIST = ("allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit", "resourceVersion",
         "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch")
_WRITE = ("dryRun", "fieldManager", "fieldValidation")
_DELETE = ("dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy")
_LOG = ("container", "follow", "limitBytes", "previous", "sinceSeconds",
        "tailLines", "timestamps")
_EXEC = ("command", "container", "stderr", "stdin", "stdout", "tty")


@dataclasses.dataclass(frozen=True, slots=True)
class _Operation:
    """One HTTP operation, independent of the OpenAPI version that will spell it."""

    method: str
    action: str  # x-kubernetes-action
    operation_id: str
    query: tuple[str, ...]
    response: str | None  # definition name of the body answered; None: plain text
    body: str | None = None  # definition name of the body taken
    consumes: tuple[str, ...] = ("*/*",)
    produces: tuple[str, ...] = _JSON
    gvk: tuple[str, str, str] | None = None  # group, version, kind


def openapi_v2() -> dict[str, Any]:
    """The Swagger 2.0 document of every served resource (shared: do not mutate)."""
    return _v2()[0]


def openapi_v2_bytes() -> bytes:
    """``openapi_v2()`` as the JSON served at ``/openapi/v2``."""
    return _v2()[1]


def openapi_v3_index() -> dict[str, Any]:
    """The ``/openapi/v3`` discovery document (shared: do not mutate)."""
    return _v3()[0]


def openapi_v3_index_bytes() -> bytes:
    """``openapi_v3_index()`` as the JSON served at ``/openapi/v3``."""
    return _v3()[2]


def openapi_v3(group_version_path: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document of ``api/v1`` or ``apis/<group>/<version>`` (KeyError if not served)."""
    return _v3()[1][group_version_path.strip("/")][0]


def openapi_v3_bytes(group_version_path: str) -> bytes | None:
    """The JSON served at ``/openapi/v3/<group_version_path>``; None if that group-version is not served."""
    served = _v3()[1].get(group_version_path.strip("/"))
    return served[1] if served else None


def group_version_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


@functools.cache
def _v2() -> tuple[dict[str, Any], bytes]:
    doc = {
        "swagger": "2.0",
        "info": {"title": "podling", "version": podling.__version__},
        "paths": _paths(resources.all_resources(), v3=False),
        "definitions": {name: _schema(name, v3=False) for name in definitions()},
    }
    return doc, _encode(doc)


@functools.cache
def _v3() -> tuple[dict[str, Any], dict[str, tuple[dict[str, Any], bytes]], bytes]:
    docs = {}
    for group, version in resources.group_versions():
        paths = _paths(resources.in_group_version(group, version), v3=True)
        doc = {
            "openapi": "3.0.0",
            "info": {"title": "podling", "version": podling.__version__},
            "paths": paths,
            "components": {"schemas": {name: _schema(name, v3=True) for name in _closure(paths)}},
        }
        docs[group_version_path(group, version)] = (doc, _encode(doc))
    index = {"paths": {path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={hash_of(data)}"}
                       for path, (_, data) in docs.items()}}
    return index, docs, _encode(index)


def hash_of(data: bytes) -> str:
    """The ``hash`` of a document's URL, as kube-apiserver computes it: upper-case hex SHA-512."""
    return hashlib.sha512(data).hexdigest().upper()


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


# Schemas


def _schema(name: str, *, v3: bool) -> dict[str, Any]:
    """One definition in OpenAPI form."""
    source = definitions()[name]
    scalars = _V3_SCALARS if v3 else _V2_SCALARS
    if name in scalars:
        return {"description": source.get("description", ""), **scalars[name]}
    schema = _convert(source, v3=v3)
    if "x-kubernetes-group-version-kind" in source:
        for field in ("apiVersion", "kind"):  # enums added by the JSON Schema export, not Kubernetes
            schema.get("properties", {}).get(field, {}).pop("enum", None)
    return schema


def _convert(node: Any, *, v3: bool) -> Any:
    if isinstance(node, list):
        return [_convert(item, v3=v3) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type":
            types = [value] if isinstance(value, str) else [t for t in value if t != "null"]
            out["type"] = types[0]
        elif key == "properties":
            out[key] = {field: _convert(schema, v3=v3) for field, schema in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _convert(value, v3=v3)
        elif key == "enum":
            out[key] = [item for item in value if item is not None]
        elif key != "$ref":
            out[key] = value
    if "$ref" not in node:
        return out
    ref = _ref(node["$ref"].removeprefix(_SOURCE_REF), v3=v3)["$ref"]
    if v3 and out:  # OpenAPI 3.0 ignores siblings of $ref
        return {"allOf": [{"$ref": ref}], **out}
    return {"$ref": ref, **out}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value.rsplit("/", 1)[-1]
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _closure(paths: Mapping[str, Any]) -> list[str]:
    """Every definition the paths refer to, directly or through other definitions, sorted."""
    seen: set[str] = set()
    pending = list(_refs(paths))
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(_refs(definitions()[name]))
    return sorted(seen)


# Paths


def _paths(served: Iterable[Resource], *, v3: bool) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for resource in served:
        for url, path_params, operations in _resource_paths(resource):
            item: dict[str, Any] = {op.method: _operation(op, v3=v3) for op in operations}
            item["parameters"] = [_parameter(name, where="path", v3=v3) for name in path_params]
            item["parameters"].append(_parameter("pretty", where="query", v3=v3))
            paths[url] = item
    return paths


def _resource_paths(r: Resource) -> Iterator[tuple[str, tuple[str, ...], list[_Operation]]]:
    """(URL, path parameters, operations) of a resource's collection, item and subresources."""
    prefix = f"/apis/{r.group}/{r.version}" if r.group else f"/api/{r.version}"
    scope = "Namespaced" if r.namespaced else ""
    group_words = (r.group.removesuffix(".k8s.io") or "core").split(".")
    gv = "".join(word.capitalize() for word in group_words) + r.version.capitalize()
    gvk = (r.group, r.version, r.kind)
    ns_params = ("namespace",) if r.namespaced else ()
    base = f"{prefix}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{prefix}/{r.plural}"
    patch_types = (*_PATCH_TYPES, _STRATEGIC) if r.definition.startswith("io.k8s.") else _PATCH_TYPES
    list_def = f"{r.definition}List"

    def op(method: str, action: str, verb: str, suffix: str = "", **kw: Any) -> _Operation:
        return _Operation(method=method, action=action, operation_id=f"{verb}{gv}{scope}{r.kind}{suffix}", **kw)

    def read_write(suffix: str, definition: str, kind: tuple[str, str, str]) -> list[_Operation]:
        return [
            op("get", "get", "read", suffix, query=(), response=definition, gvk=kind),
            op("put", "put", "replace", suffix, query=_WRITE, response=definition, body=definition, gvk=kind),
            op("patch", "patch", "patch", suffix, query=(*_WRITE, "force"), response=definition, body=_PATCH,
               consumes=patch_types, gvk=kind),
        ]

    def served(operations: list[_Operation]) -> list[_Operation]:
        """The operations of the kind's own verbs (a review kind is only POSTed)."""
        return [o for o in operations if _ACTION_VERBS[o.action] in r.verbs]

    collection = served([
        op("get", "list", "list", query=_LIST, response=list_def, produces=(*_JSON, "application/json;stream=watch"),
           gvk=gvk),
        op("post", "post", "create", query=_WRITE, response=r.definition, body=r.definition, gvk=gvk),
        op("delete", "deletecollection", "deleteCollection", query=(*_LIST, *_DELETE), response=_STATUS,
           body=_DELETE_OPTIONS, gvk=gvk),
    ])
    if collection:
        yield base, ns_params, collection
    if r.namespaced and "list" in r.verbs:
        yield f"{prefix}/{r.plural}", (), [
            _Operation(method="get", action="list", operation_id=f"list{gv}{r.kind}ForAllNamespaces", query=_LIST,
                       response=list_def, produces=(*_JSON, "application/json;stream=watch"), gvk=gvk),
        ]
    item_params = (*ns_params, "name")
    item = served([
        *read_write("", r.definition, gvk),
        op("delete", "delete", "delete", query=_DELETE, response=_STATUS, body=_DELETE_OPTIONS, gvk=gvk),
    ])
    if item:
        yield f"{base}/{{name}}", item_params, item
    for sub in r.subresources:
        url = f"{base}/{{name}}/{sub}"
        suffix = sub.capitalize()
        if sub == "status":
            yield url, item_params, read_write(suffix, r.definition, gvk)
        elif sub == "scale":
            definition, kind = _SUBRESOURCE_KINDS[sub]
            yield url, item_params, read_write(suffix, definition, kind)
        elif sub in ("binding", "eviction"):
            definition, kind = _SUBRESOURCE_KINDS[sub]
            yield url, item_params, [op("post", "post", "create", suffix, query=_WRITE, response=definition,
                                        body=definition, gvk=kind)]
        elif sub == "finalize":
            yield url, item_params, [op("put", "put", "replace", suffix, query=_WRITE, response=r.definition,
                                        body=r.definition, gvk=gvk)]
        elif sub == "log":
            yield url, item_params, [op("get", "get", "read", suffix, query=_LOG, response=None,
                                        produces=("text/plain",), gvk=gvk)]
        elif sub in ("exec", "proxy"):
            query = _EXEC if sub == "exec" else ()
            yield url, item_params, [op(method, "connect", f"connect{method.capitalize()}", suffix, query=query,
                                        response=None, produces=("*/*",))
                                     for method in ("get", "post")]


def _operation(op: _Operation, *, v3: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "x-kubernetes-action": op.action}
    if op.gvk is not None:
        group, version, kind = op.gvk
        out["x-kubernetes-group-version-kind"] = {"group": group, "kind": kind, "version": version}
    parameters = [_parameter(name, where="query", v3=v3) for name in op.query]
    response_schema = _ref(op.response, v3=v3) if op.response else {"type": "string"}
    codes = {"get": ("200",), "patch": ("200", "201"), "put": ("200", "201"), "post": ("200", "201", "202"),
             "delete": ("200", "202")}[op.method]
    descriptions = {"200": "OK", "201": "Created", "202": "Accepted"}
    if v3:
        if op.body:
            out["requestBody"] = {"content": {t: {"schema": _ref(op.body, v3=v3)} for t in op.consumes},
                                  "required": True}
        out["responses"] = {code: {"description": descriptions[code],
                                   "content": {t: {"schema": response_schema} for t in op.produces}}
                            for code in codes}
    else:
        out["consumes"] = list(op.consumes)
        out["produces"] = list(op.produces)
        if op.body:
            parameters.insert(0, {"name": "body", "in": "body", "required": True, "schema": _ref(op.body, v3=v3)})
        out["responses"] = {code: {"description": descriptions[code], "schema": response_schema} for code in codes}
    out["responses"]["401"] = {"description": "Unauthorized"}
    if parameters:
        out["parameters"] = parameters
    return out


def _parameter(name: str, *, where: str, v3: bool) -> dict[str, Any]:
    if where == "path":
        kind, description = "string", f"{name} of the {'Namespace' if name == 'namespace' else 'object'}"
    else:
        kind, description = _QUERY[name]
    param: dict[str, Any] = {"name": name, "in": where, "description": description, "uniqueItems": True}
    if where == "path":
        param["required"] = True
    if v3:
        param["schema"] = {"type": kind, "uniqueItems": True}
        del param["uniqueItems"]
    else:
        param["type"] = kind
    return param


def _ref(name: str, *, v3: bool) -> dict[str, str]:
    return {"$ref": ("#/components/schemas/" if v3 else "#/definitions/") + name}
