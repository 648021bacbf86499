"""Admission: every create and update passes the same chain before it reaches the store.

The chain runs mutating plugins first (defaults), then validating ones (schema, metadata,
namespace lifecycle). A plugin either returns (possibly having mutated ``attrs.obj`` or
added warnings) or raises a StatusError; a raised error means nothing is written. Plugins
are objects with one ``admit`` coroutine so later issues (quota, limit ranges, service
accounts) add entries to the chain without touching the storage code.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
from typing import Any, Literal, Protocol

from podling.api import errors, schema
from podling.api.defaults import apply_defaults
from podling.api.resources import Resource, find
from podling.store.base import Compacted, Store

Obj = dict[str, Any]
FieldValidation = Literal["Strict", "Warn", "Ignore"]

NAMESPACES = find(group="", version="v1", plural="namespaces")
assert NAMESPACES is not None

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# Kinds whose names must be DNS-1123 labels (63 chars, no dots) rather than subdomains.
_LABEL_NAMED = frozenset({"Namespace", "Service"})


@dataclasses.dataclass(slots=True)
class Attributes:
    operation: Literal["CREATE", "UPDATE"]
    resource: Resource
    subresource: str
    namespace: str | None
    obj: Obj
    old: Obj | None
    field_validation: FieldValidation
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return (self.obj.get("metadata") or {}).get("name") or ""


class Plugin(Protocol):
    async def admit(self, attrs: Attributes) -> None: ...


class Defaulting:
    async def admit(self, attrs: Attributes) -> None:
        apply_defaults(kind=attrs.resource.kind, obj=attrs.obj)
        if attrs.resource.kind == "Secret":
            _fold_string_data(attrs.obj)


def _fold_string_data(secret: Obj) -> None:
    """Secrets: ``stringData`` is write-only; it is merged into ``data`` (base64), as Kubernetes does."""
    string_data = secret.pop("stringData", None)
    if string_data:
        data = secret.setdefault("data", {}) or {}
        secret["data"] = data
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


class SchemaValidation:
    """Validates against ``schemas/`` and drops unknown fields, as Kubernetes' decoder does.

    fieldValidation=Strict refuses unknown fields (400), Warn (the default) answers with a
    ``Warning`` header per field, Ignore drops them silently.
    """

    async def admit(self, attrs: Attributes) -> None:
        result = schema.validator(attrs.resource.definition).validate(attrs.obj)
        if result.unknown_fields:
            if attrs.field_validation == "Strict":
                fields = ", ".join(f'unknown field "{f.lstrip(".")}"' for f in result.unknown_fields)
                raise errors.bad_request(f"strict decoding error: {fields}")
            if attrs.field_validation == "Warn":
                attrs.warnings.extend(f'unknown field "{f.lstrip(".")}"' for f in result.unknown_fields)
            _prune(attrs.obj, result.unknown_paths)
        if result.errors:
            causes = [{"reason": e.reason, "message": e.message, "field": e.field} for e in result.errors]
            raise errors.invalid(attrs.resource, attrs.name, causes)


def _prune(obj: Obj, paths: list[schema.JsonPath]) -> None:
    """Remove each unknown field, given as its JSON path from the object's root."""
    for path in paths:
        node: Any = obj
        for step in path[:-1]:
            node = node[step]
        node.pop(path[-1], None)


class MetadataValidation:
    """Names, labels and annotations, with the messages Kubernetes gives."""

    async def admit(self, attrs: Attributes) -> None:
        metadata = attrs.obj.get("metadata") or {}
        causes: list[dict[str, str]] = []
        name = metadata.get("name") or ""
        pattern, limit = (
            (_DNS1123_LABEL, 63) if attrs.resource.kind in _LABEL_NAMED else (_DNS1123_SUBDOMAIN, 253)
        )
        if not name:
            causes.append({"reason": "FieldValueRequired", "field": "metadata.name",
                           "message": "Required value: name or generateName is required"})
        elif len(name) > limit or not pattern.match(name):
            what = "RFC 1123 label" if limit == 63 else "RFC 1123 subdomain"
            causes.append({"reason": "FieldValueInvalid", "field": "metadata.name",
                           "message": f"Invalid value: {name!r}: a lowercase {what} must consist of lower case "
                                      "alphanumeric characters, '-' or '.', and must start and end with an "
                                      f"alphanumeric character (at most {limit} characters)"})
        for key, value in (metadata.get("labels") or {}).items():
            if not _label_key_ok(key):
                causes.append({"reason": "FieldValueInvalid", "field": "metadata.labels",
                               "message": f"Invalid value: {key!r}: name part must consist of alphanumeric "
                                          "characters, '-', '_' or '.', and must start and end with an "
                                          "alphanumeric character"})
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                causes.append({"reason": "FieldValueInvalid", "field": "metadata.labels",
                               "message": f"Invalid value: {value!r}: a valid label must be an empty string or "
                                          "consist of alphanumeric characters, '-', '_' or '.', and must start "
                                          "and end with an alphanumeric character (at most 63 characters)"})
        for key in metadata.get("annotations") or {}:
            if not _label_key_ok(key):
                causes.append({"reason": "FieldValueInvalid", "field": "metadata.annotations",
                               "message": f"Invalid value: {key!r}: name part must consist of alphanumeric "
                                          "characters, '-', '_' or '.'"})
        if causes:
            raise errors.invalid(attrs.resource, name, causes)


def _label_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))


class NamespaceLifecycle:
    """Objects are created only in namespaces that exist and are not terminating.

    Namespaces are read from an in-process cache fed by a store watch (every create asks,
    so a store read each time would be the costliest step of a create); a namespace the
    cache has not seen yet is read from the store before the answer is no.
    """

    def __init__(self, *, store: Store) -> None:
        self._store = store
        self._terminating: dict[str, bool] = {}  # name -> has a deletionTimestamp
        self._watching: asyncio.Task[None] | None = None

    async def start(self) -> None:
        kvs, revision, _ = await self._store.list(NAMESPACES.key_prefix())
        for kv in kvs:
            self._remember(kv.key, kv.value)
        self._watching = asyncio.create_task(self._follow(revision), name="namespace-cache")

    async def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)

    async def _follow(self, revision: int) -> None:
        while True:
            try:
                async for event in self._store.watch(NAMESPACES.key_prefix(), revision=revision):
                    revision = event.revision
                    if event.value is None:
                        self._terminating.pop(event.key, None)
                    else:
                        self._remember(event.key, event.value)
                return
            except Compacted:  # fell behind compaction: start over from a fresh list
                self._terminating.clear()
                kvs, revision, _ = await self._store.list(NAMESPACES.key_prefix())
                for kv in kvs:
                    self._remember(kv.key, kv.value)

    def _remember(self, key: str, value: bytes) -> None:
        self._terminating[key] = b'"deletionTimestamp"' in value

    async def admit(self, attrs: Attributes) -> None:
        if attrs.operation != "CREATE" or not attrs.resource.namespaced:
            return
        key = NAMESPACES.key(None, attrs.namespace or "")
        terminating = self._terminating.get(key)
        if terminating is None:
            kv = await self._store.get(key)
            terminating = None if kv is None else b'"deletionTimestamp"' in kv.value
        if terminating is None:
            raise errors.StatusError(
                code=404, reason="NotFound", message=f'namespaces "{attrs.namespace}" not found',
                details={"name": attrs.namespace, "kind": "namespaces"},
            )
        if terminating:
            raise errors.forbidden(
                attrs.resource, attrs.name,
                f"unable to create new content in namespace {attrs.namespace} because it is being terminated",
            )


class Chain:
    def __init__(self, *, plugins: list[Plugin]) -> None:
        self.plugins = plugins

    async def start(self) -> None:
        for plugin in self.plugins:
            if isinstance(plugin, NamespaceLifecycle):
                await plugin.start()

    async def stop(self) -> None:
        for plugin in self.plugins:
            if isinstance(plugin, NamespaceLifecycle):
                await plugin.stop()

    async def admit(self, attrs: Attributes) -> None:
        for plugin in self.plugins:
            await plugin.admit(attrs)


def default_chain(*, store: Store) -> Chain:
    return Chain(plugins=[Defaulting(), SchemaValidation(), MetadataValidation(), NamespaceLifecycle(store=store)])
