"""LimitRanger admission: a namespace's LimitRanges default and bound what its pods and claims ask for.

As Kubernetes' LimitRanger plugin (``plugin/pkg/admission/limitranger``) and its API
defaults and validation for LimitRange objects:

* A LimitRange is defaulted on create and update as Kubernetes' API defaults it: for type
  Container, a missing ``default`` (limit) is the ``max``, a missing ``defaultRequest`` is
  the ``default``, else the ``min``. It is then validated (422 Invalid): known types, no
  defaults on type Pod, ``min <= defaultRequest <= default <= max``, ratios of at least 1.
* On pod create, each LimitRange of the namespace (in name order) fills in, for every
  container and init container, the limits its Container items' ``default`` names and the
  requests their ``defaultRequest`` names, where the container has none; the annotation
  ``kubernetes.io/limit-ranger`` records what was set, in Kubernetes' words (``LimitRanger
  plugin set: cpu, memory request for container app; cpu limit for container app``).
* Then ``min``, ``max`` and ``maxLimitRequestRatio`` are enforced per container (type
  Container), on the pod's effective requests and limits (type Pod), and on a claim's
  storage request (type PersistentVolumeClaim). A violation is 403 Forbidden with
  Kubernetes' message (``maximum cpu usage per Container is 1, but limit is 2``); several are
  joined as Kubernetes aggregates errors, ``[first, second]``, in a stable order.

Only creates are judged: a pod's resources do not change after it is made. Defaults land
before ResourceQuota admission runs, so quota counts what the pod really asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from podling.api import errors, quota
from podling.api.defaults import apply_defaults
from podling.api.quantity import Quantity, parse_quantity
from podling.apiserver.objectcache import ObjectCache

if TYPE_CHECKING:
    from podling.apiserver.admission import Attributes

Obj = dict[str, Any]

ANNOTATION = "kubernetes.io/limit-ranger"
CONTAINER, POD, CLAIM = "Container", "Pod", "PersistentVolumeClaim"
_TYPES = (CONTAINER, POD, CLAIM)
_FIELDS = ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio")


class LimitRanger:
    def __init__(self, *, limit_ranges: ObjectCache) -> None:
        self._limit_ranges = limit_ranges

    async def admit(self, attrs: Attributes) -> None:
        kind = attrs.resource.kind
        if kind == "LimitRange":
            default_limit_range(attrs.obj)
            causes = validate_limit_range(attrs.obj)
            if causes:
                raise errors.invalid(attrs.resource, attrs.name, causes)
            return
        if attrs.operation != "CREATE" or attrs.subresource or kind not in ("Pod", "PersistentVolumeClaim"):
            return
        ranges = self._limit_ranges.in_namespace(attrs.namespace or "")
        if not ranges:
            return
        try:
            if kind == "Pod":
                if set_pod_defaults(attrs.obj, ranges):
                    (attrs.obj.get("status") or {}).pop("qosClass", None)
                    apply_defaults(kind="Pod", obj=attrs.obj)  # the QoS class of the defaulted resources
                violations = pod_violations(attrs.obj, ranges)
            else:
                violations = claim_violations(attrs.obj, ranges)
        except quota.InvalidQuantity as err:
            raise errors.invalid(attrs.resource, attrs.name, [err.cause()]) from None
        if violations:
            message = violations[0] if len(violations) == 1 else f"[{', '.join(violations)}]"
            raise errors.forbidden(attrs.resource, attrs.name, message)


# ---- LimitRange objects ---------------------------------------------------------------------


def default_limit_range(limit_range: Obj) -> None:
    """Kubernetes' SetDefaults_LimitRangeItem, in place, for every Container item."""
    for item in (limit_range.get("spec") or {}).get("limits") or ():
        if not isinstance(item, dict) or item.get("type") != CONTAINER:
            continue
        default = item.setdefault("default", {}) or {}
        request = item.setdefault("defaultRequest", {}) or {}
        for name, value in (item.get("max") or {}).items():
            default.setdefault(name, value)
        for name, value in default.items():
            request.setdefault(name, value)
        for name, value in (item.get("min") or {}).items():
            request.setdefault(name, value)
        item["default"], item["defaultRequest"] = default, request


def validate_limit_range(limit_range: Obj) -> list[dict[str, str]]:
    """The causes of a 422 for a LimitRange (Kubernetes' ValidateLimitRange, the checks that matter)."""
    causes: list[dict[str, str]] = []

    def cause(field: str, message: str, reason: str = "FieldValueInvalid") -> None:
        causes.append({"reason": reason, "field": field, "message": message})

    for i, item in enumerate((limit_range.get("spec") or {}).get("limits") or ()):
        path = f"spec.limits[{i}]"
        kind = item.get("type")
        if kind not in _TYPES:
            cause(f"{path}.type", f'Unsupported value: "{kind}": supported values: "Container", "Pod", '
                                  '"PersistentVolumeClaim"', "FieldValueNotSupported")
        if kind == POD:
            for field in ("default", "defaultRequest"):
                if item.get(field):
                    cause(f"{path}.{field}", "Forbidden: may not be specified when `type` is 'Pod'",
                          "FieldValueForbidden")
        parsed: dict[str, dict[str, Quantity]] = {}
        for field in _FIELDS:
            parsed[field] = {}
            for name, value in (item.get(field) or {}).items():
                try:
                    parsed[field][name] = parse_quantity(value)
                except ValueError as err:
                    cause(f"{path}.{field}[{name}]", f"Invalid value: {value!r}: {err}")
        low, high, limit, request = parsed["min"], parsed["max"], parsed["default"], parsed["defaultRequest"]
        for name in sorted(set().union(*parsed.values())):
            checks = (
                ("min", low, "max", high, "min value {a} is greater than max value {b}"),
                ("min", low, "defaultRequest", request, "min value {a} is greater than default request value {b}"),
                ("defaultRequest", request, "max", high, "default request value {a} is greater than max value {b}"),
                ("min", low, "default", limit, "min value {a} is greater than default value {b}"),
                ("default", limit, "max", high, "default value {a} is greater than max value {b}"),
                ("defaultRequest", request, "default", limit,
                 "default request value {a} is greater than default limit value {b}"),
            )
            for field, first, _, second, message in checks:
                if name in first and name in second and first[name] > second[name]:
                    text = message.format(a=first[name], b=second[name])
                    cause(f"{path}.{field}[{name}]", f'Invalid value: "{first[name]}": {text}')
            ratio = parsed["maxLimitRequestRatio"].get(name)
            if ratio is not None and ratio.value < 1:
                cause(f"{path}.maxLimitRequestRatio[{name}]", f'Invalid value: "{ratio}": ratio {ratio} is less than 1')
    return causes


# ---- pods and claims --------------------------------------------------------------------------


def set_pod_defaults(pod: Obj, limit_ranges: list[Obj]) -> bool:
    """Fill in defaulted requests and limits, and the annotation; True if anything was set."""
    spec = pod.get("spec") or {}
    changed = False
    for limit_range in limit_ranges:
        requests, limits = _container_defaults(limit_range)
        if not requests and not limits:
            continue
        notes: list[str] = []
        for what, containers in (("container", spec.get("containers") or ()),
                                 ("init container", spec.get("initContainers") or ())):
            for container in containers:
                resources = container["resources"] = container.get("resources") or {}
                for which, defaults, label in (("requests", requests, "request"), ("limits", limits, "limit")):
                    present = resources.get(which) or {}
                    added = sorted(name for name in defaults if name not in present)
                    if added:
                        resources[which] = {**present, **{name: str(defaults[name]) for name in added}}
                        notes.append(f"{', '.join(added)} {label} for {what} {container.get('name', '')}")
        if notes:
            metadata = pod.setdefault("metadata", {})
            metadata["annotations"] = {**(metadata.get("annotations") or {}),
                                       ANNOTATION: "LimitRanger plugin set: " + "; ".join(notes)}
            changed = True
    return changed


def pod_violations(pod: Obj, limit_ranges: list[Obj]) -> list[str]:
    """Kubernetes' messages for every min/max/ratio a pod breaks (empty: it fits)."""
    spec = pod.get("spec") or {}
    containers = [(f"spec.containers[{i}]", c) for i, c in enumerate(spec.get("containers") or ())]
    containers += [(f"spec.initContainers[{i}]", c) for i, c in enumerate(spec.get("initContainers") or ())]
    parsed = [(_strict(c, "requests", path), _strict(c, "limits", path)) for path, c in containers]
    violations: list[str] = []
    for item in _items(limit_ranges):
        if item.get("type") == CONTAINER:
            for requests, limits in parsed:
                violations += _check(item, CONTAINER, requests, limits)
        elif item.get("type") == POD:
            violations += _check(item, POD, quota.pod_resources(spec, "requests"), quota.pod_resources(spec, "limits"))
    return violations


def claim_violations(claim: Obj, limit_ranges: list[Obj]) -> list[str]:
    """Kubernetes' messages for a claim's storage request outside its PersistentVolumeClaim items."""
    raw = (((claim.get("spec") or {}).get("resources") or {}).get("requests")) or {}
    requests = quota.parse_resources(raw, field="spec.resources.requests")
    violations: list[str] = []
    for item in _items(limit_ranges):
        if item.get("type") != CLAIM:
            continue
        for name, enforced in _bounds(item, "min"):
            violations += _minimum(CLAIM, name, enforced, requests, {})
        for name, enforced in _bounds(item, "max"):
            if name not in requests:
                violations.append(f"maximum {name} usage per {CLAIM} is {enforced}.  No request is specified")
            elif requests[name] > enforced:
                violations.append(f"maximum {name} usage per {CLAIM} is {enforced}, but request is {requests[name]}")
    return violations


def _items(limit_ranges: list[Obj]) -> list[Obj]:
    return [item for lr in limit_ranges for item in ((lr.get("spec") or {}).get("limits") or ())
            if isinstance(item, dict)]


def _container_defaults(limit_range: Obj) -> tuple[dict[str, Quantity], dict[str, Quantity]]:
    """Kubernetes' defaultContainerResourceRequirements: (requests, limits) from the Container items."""
    requests: dict[str, Quantity] = {}
    limits: dict[str, Quantity] = {}
    for item in _items([limit_range]):
        if item.get("type") == CONTAINER:
            requests |= dict(_bounds(item, "defaultRequest"))
            limits |= dict(_bounds(item, "default"))
    return requests, limits


def _bounds(item: Obj, field: str) -> list[tuple[str, Quantity]]:
    """An item's ``field`` as sorted (name, quantity) pairs; a stored LimitRange was validated on the way in."""
    pairs = []
    for name, value in sorted((item.get(field) or {}).items()):
        try:
            pairs.append((name, parse_quantity(value)))
        except ValueError:
            continue
    return pairs


def _strict(container: Obj, which: str, path: str) -> dict[str, Quantity]:
    raw = ((container.get("resources") or {}).get(which)) or {}
    return quota.parse_resources(raw, field=f"{path}.resources.{which}")


def _check(item: Obj, kind: str, requests: Mapping[str, Quantity], limits: Mapping[str, Quantity]) -> list[str]:
    violations: list[str] = []
    for name, enforced in _bounds(item, "min"):
        violations += _minimum(kind, name, enforced, requests, limits)
    for name, enforced in _bounds(item, "max"):
        if name not in limits:
            violations.append(f"maximum {name} usage per {kind} is {enforced}.  No limit is specified")
        elif limits[name] > enforced:
            violations.append(f"maximum {name} usage per {kind} is {enforced}, but limit is {limits[name]}")
        elif name in requests and requests[name] > enforced:
            violations.append(f"maximum {name} usage per {kind} is {enforced}, but request is {requests[name]}")
    for name, enforced in _bounds(item, "maxLimitRequestRatio"):
        request, limit = requests.get(name), limits.get(name)
        if request is None or not request.value:
            violations.append(f"{name} max limit to request ratio per {kind} is {enforced}, "
                              "but no request is specified or request is 0")
        elif limit is None or not limit.value:
            violations.append(f"{name} max limit to request ratio per {kind} is {enforced}, "
                              "but no limit is specified or limit is 0")
        elif Fraction(limit.value) / request.value > enforced.value:
            ratio = float(Fraction(limit.value) / request.value)
            violations.append(f"{name} max limit to request ratio per {kind} is {enforced}, "
                              f"but provided ratio is {ratio:f}")
    return violations


def _minimum(kind: str, name: str, enforced: Quantity, requests: Mapping[str, Quantity],
             limits: Mapping[str, Quantity]) -> list[str]:
    if name not in requests:
        return [f"minimum {name} usage per {kind} is {enforced}.  No request is specified"]
    if requests[name] < enforced:
        return [f"minimum {name} usage per {kind} is {enforced}, but request is {requests[name]}"]
    if name in limits and limits[name] < enforced:
        return [f"minimum {name} usage per {kind} is {enforced}, but limit is {limits[name]}"]
    return []
