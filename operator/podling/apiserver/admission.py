"""Admission: every create and update passes the same chain before it reaches the store.

The chain runs mutating plugins first (defaults), then validating ones (schema, metadata,
namespace lifecycle), then the policy plugins that read other objects: service accounts
(here), limit ranges (``limitranger``) and, last, resource quotas (``resourcequota``), which
read them from the API server's watch-fed caches (``objectcache``). A plugin either returns
(possibly having mutated ``attrs.obj`` or added warnings) or raises a StatusError; a raised
error means nothing is written. Plugins are objects with one ``admit`` coroutine, so each
policy is an entry in the chain and the storage code never changes for one.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
import secrets
from typing import Any, Literal, Protocol

from podling.api import errors, schema, tokens
from podling.api.defaults import apply_defaults
from podling.api.resources import Resource, find
from podling.apiserver.allocator import ServiceAllocator, ServiceRanges
from podling.apiserver.limitranger import LimitRanger
from podling.apiserver.objectcache import Caches, ObjectCache
from podling.apiserver.resourcequota import ResourceQuotaAdmission
from podling.store.base import Compacted, Store

Obj = dict[str, Any]
FieldValidation = Literal["Strict", "Warn", "Ignore"]

NAMESPACES = find(group="", version="v1", plural="namespaces")
assert NAMESPACES is not None

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

DEFAULT_SERVICE_ACCOUNT = "default"
SERVICE_ACCOUNT_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

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


class ServiceAccountAdmission:
    """Pods run as a ServiceAccount, with its token mounted (Kubernetes' ServiceAccount plugin).

    On pod create: ``spec.serviceAccountName`` defaults to ``default`` (``serviceAccount``
    mirrors it); the account must exist, else 403 ``error looking up service account NS/NAME:
    serviceaccount "NAME" not found``. Unless ``automountServiceAccountToken`` is false (the
    pod's, else the account's), the account's token Secret is mounted read-only at
    ``/var/run/secrets/kubernetes.io/serviceaccount`` (``token``, ``namespace``, ``ca.crt``) in
    every container, init containers too, that mounts nothing there already: a ``secret``
    volume named after the Secret, Kubernetes' layout before 1.24 (podling's kubelet mounts
    secret volumes; projected token requests are not served). An account whose token the
    token controller has not made yet is 500 ServerTimeout ``No API token found for service
    account "NAME", retry after the token is automatically created and added to the service
    account``, which controllers retry. Mirror pods (static pods) are left alone.

    One difference from Kubernetes, on purpose: when the ``default`` account does not exist
    (no controller manager runs the serviceaccount controller, as with a bare ``podling
    apiserver`` and kubelets), the pod is admitted without a token and with a warning rather
    than refused: the API server and kubelets stay useful without a controller manager.
    Other accounts must exist.
    """

    def __init__(self, *, service_accounts: ObjectCache, token_secrets: ObjectCache) -> None:
        self._service_accounts = service_accounts
        self._token_secrets = token_secrets

    async def admit(self, attrs: Attributes) -> None:
        if attrs.resource.kind != "Pod" or attrs.operation != "CREATE" or attrs.subresource:
            return
        pod = attrs.obj
        if MIRROR_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {}):
            return
        spec = pod.setdefault("spec", {})
        name = spec.get("serviceAccountName") or spec.get("serviceAccount") or DEFAULT_SERVICE_ACCOUNT
        spec["serviceAccountName"] = spec["serviceAccount"] = name
        namespace = attrs.namespace or ""
        if name == DEFAULT_SERVICE_ACCOUNT:  # often absent (no controller manager): no store read each time
            account = self._service_accounts.get(namespace, name)
        else:
            account = await self._service_accounts.fetch(namespace, name)
        if account is None:
            if name == DEFAULT_SERVICE_ACCOUNT:
                attrs.warnings.append(f'serviceaccount "{namespace}/{name}" does not exist yet: '
                                      "the pod runs without a service account token")
                return
            raise errors.forbidden(attrs.resource, attrs.name, f"error looking up service account {namespace}/{name}: "
                                                               f'serviceaccount "{name}" not found')
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            automount = account.get("automountServiceAccountToken")
        if automount is False:
            return
        secret = await self._token_secret(account)
        if not secret:
            raise errors.StatusError(
                code=500, reason="ServerTimeout",
                message=f'No API token found for service account "{name}", retry after the token is '
                        "automatically created and added to the service account",
                details={"name": "create pod", "kind": "serviceaccounts", "retryAfterSeconds": 1})
        _mount_token(spec, secret)

    async def _token_secret(self, account: Obj) -> str:
        """The first Secret the account references that holds a token of this account ("" if none)."""
        metadata = account.get("metadata") or {}
        for reference in account.get("secrets") or ():
            secret = await self._token_secrets.fetch(metadata.get("namespace") or "", reference.get("name") or "")
            if secret is None or not (secret.get("data") or {}).get("token"):
                continue
            annotations = (secret.get("metadata") or {}).get("annotations") or {}
            if annotations.get(tokens.NAME_ANNOTATION) == metadata.get("name") \
                    and annotations.get(tokens.UID_ANNOTATION) in (None, "", metadata.get("uid")):
                return str(reference["name"])
        return ""


def _mount_token(spec: Obj, secret: str) -> None:
    """Mount the token Secret at the service account path in every container (Kubernetes' layout)."""
    volumes = spec.get("volumes") or []
    volume = next((v.get("name") for v in volumes if (v.get("secret") or {}).get("secretName") == secret), None)
    name = volume or secret
    if volume is None and any(v.get("name") == name for v in volumes):
        name = f"{secret}-{secrets.token_hex(3)[:5]}"
    mounted = False
    for container in [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]:
        mounts = container.get("volumeMounts") or []
        if any(m.get("mountPath") == SERVICE_ACCOUNT_MOUNT_PATH for m in mounts):
            continue
        container["volumeMounts"] = [*mounts, {"name": name, "readOnly": True,
                                                "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}]
        mounted = True
    if mounted and volume is None:
        spec["volumes"] = [*volumes, {"name": name, "secret": {"secretName": secret, "defaultMode": 0o644}}]


class Chain:
    def __init__(self, *, plugins: list[Plugin]) -> None:
        self.plugins = plugins

    async def start(self) -> None:
        for plugin in self.plugins:
            if isinstance(plugin, (NamespaceLifecycle, ServiceAllocator)):
                await plugin.start()

    async def stop(self) -> None:
        for plugin in self.plugins:
            if isinstance(plugin, (NamespaceLifecycle, ServiceAllocator)):
                await plugin.stop()

    async def admit(self, attrs: Attributes) -> None:
        for plugin in self.plugins:
            await plugin.admit(attrs)


def default_chain(*, store: Store, caches: Caches, service_ranges: ServiceRanges = ServiceRanges()) -> Chain:
    """The API server's chain; ResourceQuota last, so it counts what every other plugin decided.

    Service ClusterIPs and NodePorts are allocated (``allocator``) once the object is known
    to be valid, just before quota.
    """
    return Chain(plugins=[
        Defaulting(), SchemaValidation(), MetadataValidation(), NamespaceLifecycle(store=store),
        ServiceAccountAdmission(service_accounts=caches.service_accounts, token_secrets=caches.token_secrets),
        LimitRanger(limit_ranges=caches.limit_ranges),
        ServiceAllocator(store=store, ranges=service_ranges),
        ResourceQuotaAdmission(store=store, resource_quotas=caches.resource_quotas),
    ])
