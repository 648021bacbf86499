"""Generic REST storage: the verbs of every resource, over the store, with Kubernetes semantics.

One class serves every kind in the resource table. Its invariants:

* Every write is a compare-and-swap on the revision that was read; a client that sent a
  resourceVersion gets 409 Conflict when it is stale, and a server-side read-modify-write
  (patch, scale, binding, graceful delete) retries on conflict instead of overwriting.
* Server-owned fields are the server's: uid, creationTimestamp, generation,
  deletionTimestamp and resourceVersion cannot be set by a client, and ``generation``
  moves only when the spec does.
* Main-resource writes never change ``status`` of kinds with a status subresource, and
  status writes change nothing but ``status``.
* An object with a deletionTimestamp is deleted from the store when its last finalizer goes.
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from podling.api import errors, meta, selectors
from podling.api.patch import PatchError, SchemaLookup, json_patch, merge_patch, strategic_merge_patch
from podling.api.resources import Resource
from podling.api import schema
from podling.apiserver import codec
from podling.apiserver.admission import Attributes, Chain, FieldValidation
from podling.store.base import Compacted, Conflict, KeyExists, KeyNotFound, Store

Obj = dict[str, Any]

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generateName alphabet: no vowels
_MAX_RETRIES = 16

_SERVER_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds")


class Storage:
    def __init__(self, *, store: Store, admission: Chain) -> None:
        self.store = store
        self.admission = admission

    # ---- reads -------------------------------------------------------------------------

    async def get(self, resource: Resource, *, namespace: str | None, name: str) -> Obj:
        kv = await self.store.get(resource.key(namespace, name))
        if kv is None:
            raise errors.not_found(resource, name)
        return codec.from_kv(kv)

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> tuple[list[Obj], int, str]:
        """Matching objects, the revision they were read at, and a continue token ("" at the end)."""
        match = _matcher(resource, label_selector=label_selector, field_selector=field_selector)
        prefix = resource.key_prefix(namespace)
        revision, start_after = 0, None
        if continue_token:
            revision, start_after = _decode_continue(continue_token)
        items: list[Obj] = []
        while True:
            page_size = max(limit - len(items), 0) if limit else 0
            if limit and page_size < 50 and (label_selector or field_selector):
                page_size = 50  # selectors: read ahead instead of one store call per item
            try:
                kvs, revision, more = await self.store.list(
                    prefix, revision=revision, start_after=start_after, limit=page_size
                )
            except Compacted:
                raise errors.gone(
                    "The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter."
                ) from None
            for kv in kvs:
                obj = codec.from_kv(kv)
                if match(obj):
                    items.append(obj)
                    if limit and len(items) == limit:
                        last = kv.key
                        more = more or kv is not kvs[-1]
                        return items, revision, _encode_continue(revision, last) if more else ""
            if not more or not kvs:
                return items, revision, ""
            start_after = kvs[-1].key

    # ---- create ------------------------------------------------------------------------

    async def create(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        obj: Obj,
        dry_run: bool = False,
        field_validation: FieldValidation = "Warn",
    ) -> tuple[Obj, list[str]]:
        obj = _check_type(resource, obj)
        metadata = obj.setdefault("metadata", {})
        _check_namespace(resource, metadata, namespace)
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
        for field in (*_SERVER_META, "resourceVersion", "managedFields", "selfLink"):
            metadata.pop(field, None)
        attrs = Attributes(
            operation="CREATE", resource=resource, subresource="", namespace=namespace,
            obj=obj, old=None, field_validation=field_validation,
        )
        await self.admission.admit(attrs)
        metadata = obj["metadata"]
        metadata["uid"] = meta.new_uid()
        metadata["creationTimestamp"] = meta.now_rfc3339()
        metadata["generation"] = 1
        if dry_run:
            return obj, attrs.warnings
        try:
            revision = await self.store.create(resource.key(namespace, metadata["name"]), codec.encode(obj))
        except KeyExists:
            raise errors.already_exists(resource, metadata["name"]) from None
        metadata["resourceVersion"] = str(revision)
        return obj, attrs.warnings

    # ---- update ------------------------------------------------------------------------

    async def update(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        name: str,
        obj: Obj,
        subresource: str = "",
        dry_run: bool = False,
        field_validation: FieldValidation = "Warn",
    ) -> tuple[Obj, list[str]]:
        """PUT: replace the object (or its status). A body without resourceVersion is unconditional."""
        obj = _check_type(resource, obj) if subresource != "scale" else obj
        metadata = obj.setdefault("metadata", {})
        if metadata.get("name") not in (None, name):
            raise errors.bad_request(
                f"the name of the object ({metadata['name']}) does not match the name on the URL ({name})"
            )
        _check_namespace(resource, metadata, namespace)
        wanted_rv = metadata.get("resourceVersion") or ""
        if subresource == "scale":
            replicas = (obj.get("spec") or {}).get("replicas")
            return await self._modify(
                resource, namespace=namespace, name=name, expect_rv=wanted_rv,
                mutate=lambda current: _with_replicas(resource, current, replicas),
                subresource="", dry_run=dry_run, field_validation=field_validation,
            )
        return await self._modify(
            resource, namespace=namespace, name=name, expect_rv=wanted_rv,
            mutate=lambda current: copy.deepcopy(obj), subresource=subresource,
            dry_run=dry_run, field_validation=field_validation,
        )

    async def patch(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        name: str,
        patch_type: str,
        body: Any,
        subresource: str = "",
        dry_run: bool = False,
        field_validation: FieldValidation = "Warn",
    ) -> tuple[Obj, list[str]]:
        apply = _patcher(resource, patch_type, body, subresource)
        expect_rv = ""
        if isinstance(body, dict):
            expect_rv = (body.get("metadata") or {}).get("resourceVersion") or ""
        return await self._modify(
            resource, namespace=namespace, name=name, expect_rv=expect_rv, mutate=apply,
            subresource=subresource, dry_run=dry_run, field_validation=field_validation,
        )

    async def bind(self, resource: Resource, *, namespace: str, name: str, binding: Obj) -> Obj:
        """pods/binding: set spec.nodeName once, and the PodScheduled condition."""
        node = ((binding.get("target") or {}).get("name")) or ""
        if not node:
            raise errors.invalid(resource, name, [{"reason": "FieldValueRequired", "field": "target.name",
                                                   "message": "Required value"}])

        def bind(pod: Obj) -> Obj:
            pod = copy.deepcopy(pod)
            spec = pod.setdefault("spec", {})
            if spec.get("nodeName"):
                raise errors.conflict(resource, name, f"pod {name} is already assigned to node \"{spec['nodeName']}\"")
            if pod["metadata"].get("deletionTimestamp"):
                raise errors.conflict(resource, name, "pod is being deleted, cannot be assigned to a host")
            spec["nodeName"] = node
            meta.set_condition(pod.setdefault("status", {}), type="PodScheduled", status="True")
            return pod

        obj, _ = await self._modify(resource, namespace=namespace, name=name, expect_rv="", mutate=bind,
                                    subresource="binding", dry_run=False, field_validation="Ignore")
        return obj

    async def _modify(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        name: str,
        expect_rv: str,
        mutate: Callable[[Obj], Obj],
        subresource: str,
        dry_run: bool,
        field_validation: FieldValidation,
    ) -> tuple[Obj, list[str]]:
        """Read, mutate, admit, compare-and-swap; retry on conflict unless the client pinned a revision."""
        key = resource.key(namespace, name)
        for _ in range(_MAX_RETRIES):
            kv = await self.store.get(key)
            if kv is None:
                raise errors.not_found(resource, name)
            if expect_rv and expect_rv != str(kv.mod_revision):
                raise errors.stale(resource, name)
            current = codec.from_kv(kv)
            desired = mutate(current)
            new = _merge_server_fields(resource, current=current, desired=desired, subresource=subresource)
            attrs = Attributes(
                operation="UPDATE", resource=resource, subresource=subresource, namespace=namespace,
                obj=new, old=current, field_validation=field_validation,
            )
            await self.admission.admit(attrs)
            _bump_generation(resource, old=current, new=new)
            if dry_run:
                return new, attrs.warnings
            metadata = new["metadata"]
            try:
                if metadata.get("deletionTimestamp") and not metadata.get("finalizers") \
                        and not _namespace_finalizers(resource, new):
                    revision = await self.store.delete(key, revision=kv.mod_revision)
                else:
                    revision = await self.store.update(key, codec.encode(new), revision=kv.mod_revision)
            except Conflict:
                if expect_rv:
                    raise errors.stale(resource, name) from None
                continue
            except KeyNotFound:
                raise errors.not_found(resource, name) from None
            metadata["resourceVersion"] = str(revision)
            return new, attrs.warnings
        raise errors.conflict(resource, name, "too many concurrent writers; try again")

    # ---- delete ------------------------------------------------------------------------

    async def delete(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        name: str,
        options: Obj,
        dry_run: bool = False,
    ) -> Obj:
        """Delete now, or mark for deletion (finalizers, graceful pods, namespaces). Returns the object."""
        key = resource.key(namespace, name)
        for _ in range(_MAX_RETRIES):
            kv = await self.store.get(key)
            if kv is None:
                raise errors.not_found(resource, name)
            current = codec.from_kv(kv)
            _check_preconditions(resource, current, options.get("preconditions") or {})
            marked = _mark_for_deletion(resource, current, options)
            if dry_run:
                return marked or current
            if marked == current:
                return current
            try:
                if marked is None:
                    revision = await self.store.delete(key, revision=kv.mod_revision)
                    current["metadata"]["resourceVersion"] = str(revision)
                    return current
                revision = await self.store.update(key, codec.encode(marked), revision=kv.mod_revision)
            except Conflict:
                continue
            except KeyNotFound:
                raise errors.not_found(resource, name) from None
            marked["metadata"]["resourceVersion"] = str(revision)
            return marked
        raise errors.conflict(resource, name, "too many concurrent writers; try again")

    async def delete_collection(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        label_selector: str,
        field_selector: str,
        options: Obj,
        dry_run: bool = False,
    ) -> list[Obj]:
        items, _, _ = await self.list(
            resource, namespace=namespace, label_selector=label_selector, field_selector=field_selector
        )
        deleted = []
        for item in items:
            try:
                deleted.append(await self.delete(
                    resource, namespace=meta.namespace(item) or None, name=meta.name(item),
                    options=options, dry_run=dry_run,
                ))
            except errors.StatusError as err:
                if err.code != 404:
                    raise
        return deleted

    # ---- watch -------------------------------------------------------------------------

    def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        resource_version: str,
        label_selector: str = "",
        field_selector: str = "",
        mark_synced: bool = False,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """``(type, object)`` pairs: ADDED/MODIFIED/DELETED, and ERROR-free (errors raise).

        With no resourceVersion (or "0") the current objects come first as ADDED, as
        Kubernetes sends them, followed (with ``mark_synced``) by one ``("SYNCED", {metadata:
        {resourceVersion}})`` marker; otherwise every change after that revision. Bad
        selectors or resourceVersions raise here, before anything is streamed.
        """
        match = _matcher(resource, label_selector=label_selector, field_selector=field_selector)
        revision = 0
        if resource_version not in ("", "0"):
            try:
                revision = int(resource_version)
            except ValueError:
                raise errors.bad_request(f"invalid resourceVersion {resource_version!r}") from None
        return self._watch(resource, namespace=namespace, revision=revision, match=match,
                           list_first=not revision, label_selector=label_selector,
                           field_selector=field_selector, mark_synced=mark_synced)

    async def _watch(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        revision: int,
        match: Callable[[Obj], bool],
        list_first: bool,
        label_selector: str,
        field_selector: str,
        mark_synced: bool,
    ) -> AsyncIterator[tuple[str, Obj]]:
        if list_first:
            items, revision, _ = await self.list(
                resource, namespace=namespace, label_selector=label_selector, field_selector=field_selector
            )
            for item in items:
                yield "ADDED", item
            if mark_synced:
                yield "SYNCED", {"metadata": {"resourceVersion": str(revision)}}
        events = self.store.watch(resource.key_prefix(namespace), revision=revision)
        try:
            async for event in _translate(events, match):
                yield event
        except Compacted as err:
            raise errors.gone(
                f"too old resource version: {revision} ({err.compacted_revision + 1})"
            ) from None
        finally:
            await events.aclose()


async def _translate(events: AsyncIterator[Any], match: Callable[[Obj], bool]) -> AsyncIterator[tuple[str, Obj]]:
    """Store events → watch events, turning selector transitions into ADDED/DELETED."""
    async for event in events:
        prev = codec.decode(event.prev_value, revision=event.revision) if event.prev_value else None
        if event.type == "DELETE":
            if prev is not None and match(prev):
                yield "DELETED", prev
            continue
        obj = codec.decode(event.value, revision=event.revision)
        now, before = match(obj), prev is not None and match(prev)
        if now and before:
            yield "MODIFIED", obj
        elif now:
            yield "ADDED", obj
        elif before:
            yield "DELETED", obj


# ---- helpers --------------------------------------------------------------------------------


def _matcher(resource: Resource, *, label_selector: str, field_selector: str) -> Callable[[Obj], bool]:
    try:
        labels = selectors.parse_label_selector(label_selector) if label_selector else None
        fields = selectors.parse_field_selector(field_selector, kind=resource.kind) if field_selector else None
    except selectors.ParseError as err:
        raise errors.bad_request(str(err)) from None
    if labels is None and fields is None:
        return lambda obj: True

    def match(obj: Obj) -> bool:
        if labels is not None and not labels.matches((obj.get("metadata") or {}).get("labels") or {}):
            return False
        return fields is None or fields.matches(obj)

    return match


def _encode_continue(revision: int, key: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError):
        raise errors.bad_request(f"continue key is not valid: {token!r}") from None


def _check_type(resource: Resource, obj: Any) -> Obj:
    if not isinstance(obj, dict):
        raise errors.bad_request("the request body must be a JSON object")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if api_version not in (None, "", resource.api_version) or kind not in (None, "", resource.kind):
        raise errors.bad_request(
            f"the API version in the data ({api_version}) / kind ({kind}) does not match the expected "
            f"API version ({resource.api_version}) / kind ({resource.kind})"
        )
    obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
    if not isinstance(obj.get("metadata", {}), dict):
        raise errors.bad_request("metadata must be an object")
    return obj


def _check_namespace(resource: Resource, metadata: Obj, namespace: str | None) -> None:
    if not resource.namespaced:
        metadata.pop("namespace", None)
        return
    if metadata.get("namespace") not in (None, "", namespace):
        raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
    metadata["namespace"] = namespace


def _merge_server_fields(resource: Resource, *, current: Obj, desired: Any, subresource: str) -> Obj:
    """The object to store: the client's intent, with what the server owns taken from ``current``."""
    if not isinstance(desired, dict):
        raise errors.bad_request("the patched object must be a JSON object")
    if subresource == "status":
        new = copy.deepcopy(current)
        new["status"] = desired.get("status")
        return new
    new = _check_type(resource, desired)
    metadata = new.setdefault("metadata", {})
    old_meta = current["metadata"]
    for field in (*_SERVER_META, "name", "namespace"):
        if field in old_meta:
            metadata[field] = old_meta[field]
        else:
            metadata.pop(field, None)
    metadata.pop("managedFields", None)
    metadata.pop("selfLink", None)
    if "status" in resource.subresources and subresource != "binding":
        if "status" in current:
            new["status"] = current["status"]
        else:
            new.pop("status", None)
    return new


def _spec_view(resource: Resource, obj: Obj) -> Any:
    if resource.has_spec:
        return obj.get("spec")
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _bump_generation(resource: Resource, *, old: Obj, new: Obj) -> None:
    generation = old["metadata"].get("generation") or 1
    if _spec_view(resource, old) != _spec_view(resource, new):
        generation += 1
    new["metadata"]["generation"] = generation


def _with_replicas(resource: Resource, current: Obj, replicas: Any) -> Obj:
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise errors.invalid(resource, meta.name(current), [{
            "reason": "FieldValueInvalid", "field": "spec.replicas",
            "message": f"Invalid value: {replicas!r}: must be greater than or equal to 0"}])
    new = copy.deepcopy(current)
    new.setdefault("spec", {})["replicas"] = replicas
    return new


def scale_of(resource: Resource, obj: Obj) -> Obj:
    """The autoscaling/v1 Scale view of a scalable object."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    selector = spec.get("selector") or {}
    if resource.kind == "ReplicationController":
        selector_text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    else:
        selector_text = selectors.format_label_selector(selector)
    metadata = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: metadata[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                     if k in metadata},
        "spec": {"replicas": spec.get("replicas", 0)},
        "status": {"replicas": status.get("replicas", 0), "selector": selector_text},
    }


def _patcher(resource: Resource, patch_type: str, body: Any, subresource: str) -> Callable[[Obj], Obj]:
    """A function applying the patch to the current object (or to its Scale, for scale)."""
    if patch_type == "application/strategic-merge-patch+json" and resource.group == "podling.io":
        raise errors.unsupported_media_type(patch_type)

    def apply_to(target: Obj, definition: str) -> Obj:
        try:
            if patch_type == "application/json-patch+json":
                if not isinstance(body, list):
                    raise errors.bad_request("a JSON patch must be a JSON array of operations")
                return json_patch(target, body)
            if not isinstance(body, dict):
                raise errors.bad_request("a merge patch must be a JSON object")
            if patch_type == "application/merge-patch+json":
                return merge_patch(target, body)
            if patch_type == "application/strategic-merge-patch+json":
                lookup = SchemaLookup(defs=schema.definitions(), root_definition=definition)
                return strategic_merge_patch(target, body, schema=lookup)
        except PatchError as err:
            raise errors.StatusError(code=422, reason="Invalid", message=str(err)) from None
        raise errors.unsupported_media_type(patch_type)

    if subresource == "scale":
        def patch_scale(current: Obj) -> Obj:
            scale = apply_to(scale_of(resource, current), "io.k8s.api.autoscaling.v1.Scale")
            return _with_replicas(resource, current, (scale.get("spec") or {}).get("replicas"))
        return patch_scale
    return lambda current: apply_to(copy.deepcopy(current), resource.definition)


def _check_preconditions(resource: Resource, obj: Obj, preconditions: Obj) -> None:
    metadata = obj["metadata"]
    if preconditions.get("uid") and preconditions["uid"] != metadata.get("uid"):
        raise errors.conflict(resource, metadata["name"],
                              f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                              f"UID in object meta: {metadata.get('uid')}")
    rv = preconditions.get("resourceVersion")
    if rv and rv != metadata.get("resourceVersion"):
        raise errors.conflict(resource, metadata["name"],
                              f"Precondition failed: ResourceVersion in precondition: {rv}, "
                              f"ResourceVersion in object meta: {metadata.get('resourceVersion')}")


_UNDELETABLE_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


def _mark_for_deletion(resource: Resource, obj: Obj, options: Obj) -> Obj | None:
    """What a delete does: None to delete now, or the object to store marked for deletion.

    Finalizers (including foregroundDeletion/orphan from the propagation policy), a pod's
    grace period and a namespace's lifecycle keep the object, with a deletionTimestamp, until
    whoever owns that step finishes it. A second delete of a marked object only adds
    finalizers, or (a pod's final delete with grace 0) deletes it.
    """
    metadata = obj["metadata"]
    if resource.kind == "Namespace" and metadata["name"] in _UNDELETABLE_NAMESPACES:
        raise errors.forbidden(resource, metadata["name"], "this namespace may not be deleted")
    finalizers = _gc_finalizers(resource, list(metadata.get("finalizers") or []), options)
    grace = _grace_period(resource, obj, options)
    if not finalizers and not grace and not _namespace_finalizers(resource, obj):
        return None
    marked = copy.deepcopy(obj)
    m = marked["metadata"]
    if finalizers:
        m["finalizers"] = finalizers
    if not m.get("deletionTimestamp"):
        now = datetime.datetime.now(datetime.timezone.utc)
        m["deletionTimestamp"] = meta.format_time(now + datetime.timedelta(seconds=grace or 0))
        m["deletionGracePeriodSeconds"] = grace or 0
    if resource.kind == "Namespace":
        marked.setdefault("status", {})["phase"] = "Terminating"
    return marked


def _gc_finalizers(resource: Resource, finalizers: list[str], options: Obj) -> list[str]:
    """``finalizers`` with the garbage collector's (``orphan``, ``foregroundDeletion``) set by the policy.

    As kube-apiserver decides it: an explicit ``orphanDependents`` or ``propagationPolicy``
    wins; without one, a GC finalizer already on the object stays; else the kind's default,
    which is Background except for core/v1 ReplicationControllers (Orphan, for backwards
    compatibility; apps/v1 kinds cascade). The two GC finalizers never appear together.
    """
    policy = options.get("propagationPolicy")
    if options.get("orphanDependents") is not None:
        policy = "Orphan" if options["orphanDependents"] else "Background"
    if policy is None:
        policy = next(({"orphan": "Orphan", "foregroundDeletion": "Foreground"}[f] for f in finalizers
                       if f in ("orphan", "foregroundDeletion")),
                      "Orphan" if resource.kind == "ReplicationController" else "Background")
    kept = [f for f in finalizers if f not in ("orphan", "foregroundDeletion")]
    extra = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(policy)
    return [*kept, extra] if extra else kept


def _namespace_finalizers(resource: Resource, obj: Obj) -> list[str]:
    """A namespace also waits for spec.finalizers (emptied through namespaces/NAME/finalize)."""
    return list((obj.get("spec") or {}).get("finalizers") or []) if resource.kind == "Namespace" else []


def _grace_period(resource: Resource, obj: Obj, options: Obj) -> int | None:
    """Pods bound to a node terminate gracefully; everything else is deleted at once."""
    if resource.kind != "Pod":
        return None
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
        return 0
    grace = options.get("gracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds", 30)
    return max(int(grace), 0)
