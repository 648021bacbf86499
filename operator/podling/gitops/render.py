"""Render: a directory of a git checkout → the objects it asks for, each checked as the API would.

Invariants:

* Deterministic: files are read in sorted order (``.yaml``, ``.yml``, ``.json``, recursively,
  hidden files and directories such as ``.git`` skipped), documents in file order, so the same
  tree always renders to the same objects and the same errors in the same order.
* Every object gets the verdict podling's API server would give it on a create with
  ``fieldValidation=Strict`` (``kubectl apply --validate=strict``): a kind the resource table
  serves, no schema errors, no unknown fields, a name. :func:`check` is that verdict, and
  ``podling validate`` prints the same one. On top of it, render needs ``metadata.name``
  (an object made with ``generateName`` can never be found again to diff or prune) and refuses
  the same object (API group, kind, namespace, name) defined twice, naming both places.
* Every problem is a :class:`RenderError` naming the file (relative to the checkout root),
  the line and the field: ``apps/web.yaml:14: Deployment/web: spec.replicas: Invalid value…``.
  Render collects every problem it can find rather than stopping at the first; any problem
  means the revision must not be synced (:attr:`Rendered.ok`), and ``objects`` then holds only
  the objects that passed.
* Nothing outside the checkout is read: ``path`` may not climb out of ``root`` and a symlink
  that leads outside it is an error, so a repository cannot make the operator read host files.
* Namespaces: an object's namespace is as written ("" when none) unless ``default_namespace``
  is given; :func:`with_namespace` applies the Application's destination namespace the way the
  API server scopes a request (namespaced kinds get it when they name none; cluster-scoped
  kinds never carry one), so keys compare equal with live objects.

Render only reads files and is CPU-bound: callers on an event loop run it in a thread.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

from podling.api import resources
from podling.api.manifests import Manifest, ManifestError, load_file, manifest_files
from podling.api.resources import Resource
from podling.api.schema import JsonPath, validator

Obj = dict[str, Any]


class ObjectKey(NamedTuple):
    """What makes two manifests the same object: the version of its API group does not."""

    group: str
    kind: str
    namespace: str  # "" for cluster-scoped kinds, and for namespaced ones that name none
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class RenderError:
    file: str  # relative to the checkout root (as given, for `podling validate`)
    line: int | None  # 1-based; None when the file could not be read at all
    object: str  # "Deployment/web"; "" when the problem is not one object's
    path: str  # Kubernetes field path, "spec.template.spec.containers[0].image"; "" for the object
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return ": ".join(part for part in (where, self.object, self.path, self.message) if part)


@dataclasses.dataclass(frozen=True, slots=True)
class DesiredObject:
    obj: Obj  # plain JSON data, as it will be sent to the API
    source_file: str  # relative to the checkout root
    line: int  # where the object starts
    resource: Resource
    key: ObjectKey
    manifest: Manifest = dataclasses.field(repr=False, compare=False)

    def line_of(self, path: JsonPath) -> int:
        """The line of a JSON path in the source (for errors the API server reports later)."""
        return self.manifest.line_of(path)


@dataclasses.dataclass(frozen=True, slots=True)
class Rendered:
    objects: list[DesiredObject]
    errors: list[RenderError]

    @property
    def ok(self) -> bool:
        return not self.errors


def render(*, root: Path, path: str = ".", default_namespace: str | None = None) -> Rendered:
    """Every object under ``root/path`` (a directory, read recursively, or one file).

    ``default_namespace``: when given, applied with :func:`with_namespace` before keys are
    compared, so ``x`` without a namespace and ``x`` in that namespace are one object twice.
    """
    given = path.strip("/") or "."  # "/apps" is the repository's apps/, not the host's
    top = root.resolve()
    base = (top / given).resolve()
    if not base.is_relative_to(top):
        return Rendered(objects=[], errors=[RenderError(file=given, line=None, object="", path="",
                                                        message="path leads outside the repository")])
    if not base.exists():
        return Rendered(objects=[], errors=[RenderError(file=given, line=None, object="", path="",
                                                        message="no such file or directory in the repository")])
    objects: list[DesiredObject] = []
    errors: list[RenderError] = []
    seen: dict[ObjectKey, DesiredObject] = {}
    for file in manifest_files([base]):
        source_file = file.relative_to(top).as_posix()
        if not file.resolve().is_relative_to(top):
            errors.append(RenderError(file=source_file, line=None, object="", path="",
                                      message="symlink leads outside the repository"))
            continue
        try:
            manifests = load_file(file)
        except ManifestError as e:
            errors.append(RenderError(file=source_file, line=e.line, object="", path="", message=e.message))
            continue
        for manifest in manifests:
            resource, found = check(manifest, file=source_file)
            metadata = _metadata(manifest.obj)
            if resource is not None and not metadata.get("name") and metadata.get("generateName"):
                found.append(RenderError(
                    file=source_file, line=manifest.line_of(("metadata", "name")), object=label_of(manifest.obj),
                    path="metadata.name", message="Required value: generateName cannot be synced from git"))
                found.sort(key=_order)
            if found or resource is None:
                errors.extend(found)
                continue
            obj = manifest.obj
            if default_namespace is not None:
                obj = with_namespace(obj, resource=resource, default_namespace=default_namespace)
            desired = DesiredObject(obj=obj, source_file=source_file, line=manifest.line, resource=resource,
                                    key=key_of(obj, resource=resource), manifest=manifest)
            first = seen.setdefault(desired.key, desired)
            if first is not desired:
                errors.append(RenderError(
                    file=source_file, line=desired.line, object=label_of(obj), path="",
                    message=f"defined twice: also at {first.source_file}:{first.line}"
                            f"{_in_namespace(desired.key)}"))
                continue
            objects.append(desired)
    return Rendered(objects=objects, errors=errors)


def check(manifest: Manifest, *, file: str) -> tuple[Resource | None, list[RenderError]]:
    """The API server's verdict on one object (fieldValidation=Strict), problems in line order.

    Returns the object's resource (None when its kind is not served, or apiVersion or kind is
    missing) and its problems; ``file`` names the file in each problem.
    """
    obj = manifest.obj
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not api_version or not kind:
        missing = " and ".join(f for f in ("apiVersion", "kind") if not obj.get(f))
        return None, [RenderError(file=file, line=manifest.line, object="", path="",
                                  message=f"object has no {missing}")]
    label = label_of(obj)
    resource = resources.by_kind(api_version=str(api_version), kind=str(kind))
    if resource is None:
        return None, [RenderError(file=file, line=manifest.line_of(("kind",)), object=label, path="",
                                  message=f"kind {kind} in apiVersion {api_version} is not served by podling")]
    result = validator(resource.definition).validate(obj)
    found = [RenderError(file=file, line=manifest.line_of(e.path), object=label, path=e.field, message=e.message)
             for e in result.errors]
    found += [RenderError(file=file, line=manifest.line_of(path), object=label, path=field.removeprefix("."),
                          message="unknown field")
              for field, path in zip(result.unknown_fields, result.unknown_paths)]
    metadata = _metadata(obj)
    if not metadata.get("name") and not metadata.get("generateName"):
        found.append(RenderError(file=file, line=manifest.line_of(("metadata", "name")), object=label,
                                 path="metadata.name", message="Required value: name or generateName is required"))
    found.sort(key=_order)
    return resource, found


def with_namespace(obj: Obj, *, resource: Resource, default_namespace: str) -> Obj:
    """``obj`` scoped as the API server scopes it: a copy, the input is not changed.

    A namespaced object that names no namespace gets ``default_namespace``; a cluster-scoped
    one loses any namespace it names (the API server drops it too).
    """
    metadata = dict(_metadata(obj))
    if resource.namespaced:
        if metadata.get("namespace"):
            return obj
        metadata["namespace"] = default_namespace
    elif "namespace" in metadata:
        del metadata["namespace"]
    else:
        return obj
    return {**obj, "metadata": metadata}


def key_of(obj: Obj, *, resource: Resource) -> ObjectKey:
    metadata = _metadata(obj)
    namespace = str(metadata.get("namespace") or "") if resource.namespaced else ""
    return ObjectKey(group=resource.group, kind=resource.kind, namespace=namespace,
                     name=str(metadata.get("name") or ""))


def label_of(obj: Obj) -> str:
    """``Kind/name`` as errors name an object (``name*`` for a generateName, ``<unnamed>``)."""
    metadata = _metadata(obj)
    if metadata.get("name"):
        name = str(metadata["name"])
    elif metadata.get("generateName"):
        name = f"{metadata['generateName']}*"
    else:
        name = "<unnamed>"
    return f"{obj.get('kind')}/{name}"


def _order(error: RenderError) -> tuple[int, str]:
    return error.line or 0, str(error)


def _metadata(obj: Obj) -> Obj:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _in_namespace(key: ObjectKey) -> str:
    return f" (namespace {key.namespace})" if key.namespace else ""
