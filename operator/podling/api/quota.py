"""Resource quota arithmetic: what an object uses, what a quota limits, and the messages of a refusal.

Shared by the API server (ResourceQuota admission) and the controller manager (the
ResourceQuota controller keeps ``status.used``), so both count exactly alike. Pure functions
over Kubernetes-shaped dicts; quantities are exact (:mod:`podling.api.quantity`).

What counts, as Kubernetes' evaluators count it (``pkg/quota/v1/evaluator/core``):

* every object counts 1 toward ``count/<plural>[.<group>]``; pods, services, configmaps,
  secrets, replicationcontrollers, persistentvolumeclaims and resourcequotas also toward
  their plain names (``pods``, ``services`` ...).
* a pod counts toward ``pods`` and its compute resources only while it is not terminal
  (Succeeded, Failed, or deleted and past its grace period); ``count/pods`` counts it always.
  Its compute usage is the pod's effective requests and limits (app containers summed,
  init containers taken at their maximum, restartable "sidecar" init containers added):
  ``requests.cpu`` and ``cpu`` (the same thing), ``limits.cpu``, and so for memory and
  ephemeral-storage; other requests as ``requests.<name>``.
* a service counts toward ``services.loadbalancers`` (type LoadBalancer) and
  ``services.nodeports`` (its ports, when of type NodePort or LoadBalancer); a claim toward
  ``requests.storage``.

Invariant: :func:`usage` never fails on a stored object: a quantity that does not parse
counts as nothing there (the API server refuses such quantities on the way in, in admission,
with :func:`parse_resources`, where the message reaches the client).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from podling.api import meta
from podling.api.quantity import Quantity, parse_quantity
from podling.api.resources import Resource

Obj = Mapping[str, Any]
ResourceList = dict[str, Quantity]

ONE = parse_quantity(1)
# Resource names whose quota makes every container state its request or limit (Kubernetes'
# "validationSet": a backward-compatibility rule for cpu and memory only).
REQUIRED_PER_CONTAINER = frozenset({"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"})
_LEGACY_COUNTS = frozenset({"pods", "services", "configmaps", "secrets", "replicationcontrollers",
                            "persistentvolumeclaims", "resourcequotas"})
_POD_COMPUTE = frozenset({"cpu", "memory", "ephemeral-storage"})
_SERVICE_NAMES = frozenset({"services", "services.loadbalancers", "services.nodeports"})
_CLAIM_NAMES = frozenset({"persistentvolumeclaims", "requests.storage"})


def count_name(resource: Resource) -> str:
    """``count/pods``, ``count/deployments.apps``: the object-count name of a kind."""
    return f"count/{resource.plural}.{resource.group}" if resource.group else f"count/{resource.plural}"


def tracked_by(name: str) -> tuple[str, str] | None:
    """(group, plural) of the objects whose usage a quota's resource ``name`` adds up; None if unknown."""
    if name.startswith("count/"):
        plural, _, group = name.removeprefix("count/").partition(".")
        return group, plural
    if name in _SERVICE_NAMES:
        return "", "services"
    if name in _CLAIM_NAMES:
        return "", "persistentvolumeclaims"
    if name in _LEGACY_COUNTS:
        return "", name
    if name in _POD_COMPUTE or name.startswith(("requests.", "limits.", "hugepages-")):
        return "", "pods"
    return None


def tracks(resource: Resource, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that objects of ``resource`` count toward, sorted."""
    return sorted(name for name in names if tracked_by(name) == (resource.group, resource.plural))


def usage(resource: Resource, obj: Obj, *, now: datetime.datetime | None = None) -> ResourceList:
    """Everything ``obj`` (of ``resource``) counts toward, with its amounts (zero amounts left out)."""
    used: ResourceList = {count_name(resource): ONE}
    if resource.group or resource.plural not in _LEGACY_COUNTS:
        return used
    if resource.plural == "pods":
        if not counts_as_running(obj, now=now):
            return used
        used["pods"] = ONE
        spec = obj.get("spec") or {}
        used |= compute_usage(requests=pod_resources(spec, "requests"), limits=pod_resources(spec, "limits"))
    elif resource.plural == "services":
        used["services"] = ONE
        spec = obj.get("spec") or {}
        if spec.get("type") == "LoadBalancer":
            used["services.loadbalancers"] = ONE
        if spec.get("type") in ("NodePort", "LoadBalancer") and spec.get("ports"):
            used["services.nodeports"] = parse_quantity(len(spec["ports"]))
    elif resource.plural == "persistentvolumeclaims":
        used["persistentvolumeclaims"] = ONE
        storage = _quantity((((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage"))
        if storage is not None:
            used["requests.storage"] = storage
    else:
        used[resource.plural] = ONE
    return {name: amount for name, amount in used.items() if amount.value}


def counts_as_running(pod: Obj, *, now: datetime.datetime | None = None) -> bool:
    """Whether a pod still holds its compute quota: not terminal, not deleted past its grace period."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    metadata = pod.get("metadata") or {}
    deleted_at = metadata.get("deletionTimestamp")
    if deleted_at and metadata.get("deletionGracePeriodSeconds") is not None:
        try:
            deadline = meta.parse_time(deleted_at)
        except ValueError:
            return True
        return (now or datetime.datetime.now(datetime.timezone.utc)) <= deadline
    return True


def compute_usage(*, requests: ResourceList, limits: ResourceList) -> ResourceList:
    """Kubernetes' podComputeUsageHelper: requests and limits as quota resource names."""
    used: ResourceList = {}
    for name in ("cpu", "memory", "ephemeral-storage"):
        if name in requests:
            used[name] = used[f"requests.{name}"] = requests[name]
        if name in limits:
            used[f"limits.{name}"] = limits[name]
    for name, amount in requests.items():
        if name not in _POD_COMPUTE:
            used[f"requests.{name}"] = amount
    return used


def pod_resources(spec: Obj, which: str) -> ResourceList:
    """The pod's effective ``requests`` or ``limits`` (Kubernetes' resourcehelper.PodRequests/PodLimits).

    App containers add up; each ordinary init container runs alone (beside the sidecars
    started before it), so the pod needs the most any of those moments needs; restartable
    (``restartPolicy: Always``) init containers run for the pod's whole life and add up.
    """
    total: ResourceList = {}
    for container in spec.get("containers") or ():
        _add_into(total, container_resources(container, which))
    sidecars: ResourceList = {}
    init_peak: ResourceList = {}
    for container in spec.get("initContainers") or ():
        own = container_resources(container, which)
        if container.get("restartPolicy") == "Always":
            _add_into(total, own)
            _add_into(sidecars, own)
            moment = dict(sidecars)
        else:
            moment = dict(sidecars)
            _add_into(moment, own)
        _max_into(init_peak, moment)
    _max_into(total, init_peak)
    return total


def container_resources(container: Obj, which: str) -> ResourceList:
    """A container's ``resources.requests`` or ``resources.limits``; unparsable amounts left out."""
    raw = ((container.get("resources") or {}).get(which)) or {}
    parsed = {name: _quantity(value) for name, value in raw.items()}
    return {name: amount for name, amount in parsed.items() if amount is not None}


class InvalidQuantity(ValueError):
    """A quantity in a request body that does not parse, with the field path that holds it."""

    def __init__(self, *, field: str, value: Any, reason: str) -> None:
        super().__init__(f"{field}: Invalid value: {value!r}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason

    def cause(self) -> dict[str, str]:
        """The cause of a 422 Invalid."""
        return {"reason": "FieldValueInvalid", "field": self.field,
                "message": f'Invalid value: "{self.value}": {self.reason}'}


def parse_resources(raw: Mapping[str, Any], *, field: str) -> ResourceList:
    """A resource list from a request body; :class:`InvalidQuantity` at ``field[NAME]`` on a bad one."""
    parsed: ResourceList = {}
    for name, value in (raw or {}).items():
        try:
            parsed[name] = parse_quantity(value)
        except ValueError as err:
            raise InvalidQuantity(field=f"{field}[{name}]", value=value, reason=str(err)) from None
    return parsed


def missing_per_container(spec: Obj, required: Iterable[str]) -> str:
    """Kubernetes' message for containers lacking a required request or limit, "" if none lacks one.

    ``must specify limits.cpu for: app; requests.memory for: app,init`` (resources sorted,
    container names sorted and joined with commas).
    """
    wanted = REQUIRED_PER_CONTAINER.intersection(required)
    missing: dict[str, set[str]] = {}
    for container in [*(spec.get("containers") or ()), *(spec.get("initContainers") or ())]:
        has = compute_usage(requests=container_resources(container, "requests"),
                            limits=container_resources(container, "limits"))
        for name in wanted - has.keys():
            missing.setdefault(name, set()).add(str(container.get("name") or ""))
    if not missing:
        return ""
    return "must specify " + "; ".join(f"{name} for: {','.join(sorted(missing[name]))}" for name in sorted(missing))


def pretty(resources: Mapping[str, Quantity]) -> str:
    """``limits.cpu=2,pods=1``: Kubernetes' prettyPrint of a ResourceList (sorted by name)."""
    return ",".join(f"{name}={resources[name]}" for name in sorted(resources))


def exceeded_message(*, quota: str, requested: ResourceList, used: ResourceList, hard: ResourceList,
                     exceeded: Iterable[str]) -> str:
    """``exceeded quota: NAME, requested: pods=1, used: pods=2, limited: pods=2``, masked to ``exceeded``."""
    names = set(exceeded)

    def mask(resources: ResourceList) -> ResourceList:
        return {name: amount for name, amount in resources.items() if name in names}

    return (f"exceeded quota: {quota}, requested: {pretty(mask(requested))}, used: {pretty(mask(used))}, "
            f"limited: {pretty(mask(hard))}")


def add(a: Mapping[str, Quantity], b: Mapping[str, Quantity]) -> ResourceList:
    total = dict(a)
    _add_into(total, b)
    return total


def _add_into(total: ResourceList, more: Mapping[str, Quantity]) -> None:
    for name, amount in more.items():
        total[name] = total[name] + amount if name in total else amount


def _max_into(peak: ResourceList, other: Mapping[str, Quantity]) -> None:
    for name, amount in other.items():
        if name not in peak or peak[name] < amount:
            peak[name] = amount


def _quantity(value: Any) -> Quantity | None:
    if value is None:
        return None
    try:
        return parse_quantity(value)
    except ValueError:
        return None

