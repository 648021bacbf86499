"""Deployments: roll a pod template out through ReplicaSets, one ReplicaSet per template.

A Deployment owns ReplicaSets named ``NAME-HASH``, where HASH (also the ``pod-template-hash``
label added to the ReplicaSet's selector, template and so to its pods) is a stable hash of the
Deployment's pod template. The ReplicaSet whose template equals the Deployment's (ignoring
that label) is the *new* one; every other owned ReplicaSet is *old*. The ReplicaSet controller
keeps each one's pods; this controller only sets ``spec.replicas`` of ReplicaSets, creates
the new one and deletes old empty ones beyond ``revisionHistoryLimit``.

Invariants:

* Level-triggered and idempotent, in Kubernetes' order: claim ReplicaSets (adopt orphans the
  selector matches, release owned ones it no longer does); a Deployment being deleted only
  gets its status; paused, or scaled (an active ReplicaSet's ``desired-replicas`` annotation
  differs from ``spec.replicas``), it is scaled proportionally and nothing rolls; otherwise
  one step of its strategy is taken and the reconcile returns. Each step is decided by a pure
  function of the Deployment and its ReplicaSets (tested alone) and written at once.
* RollingUpdate never lets the pods of all ReplicaSets exceed ``replicas + maxSurge`` (surge
  rounds up) nor the available ones drop below ``replicas - maxUnavailable`` (unavailable
  rounds down; if both resolve to 0, maxUnavailable is 1). Recreate scales every old
  ReplicaSet to 0 and creates the new one only when no old pod is left running.
* Revisions: the new ReplicaSet carries ``deployment.kubernetes.io/revision`` one above the
  highest old one (so rolling back to an old template, as ``kubectl rollout undo`` does by
  copying that ReplicaSet's template into the Deployment, moves it to the top and records its
  previous numbers in ``revision-history``), and the Deployment carries the new one's revision.
  Every ReplicaSet this controller scales carries ``desired-replicas`` and ``max-replicas``.
* Status: observedGeneration, replicas, updatedReplicas, readyReplicas, availableReplicas,
  unavailableReplicas, collisionCount and the Available / Progressing conditions, computed
  from the ReplicaSets' own status and written through the status subresource only when it
  changed; a rollout making no progress for ``progressDeadlineSeconds`` turns Progressing
  False with reason ProgressDeadlineExceeded (the key is requeued for that moment).
* Every write carries the resourceVersion this reconcile saw. A Deployment or ReplicaSet this
  controller wrote is not read again from the cache until the cache shows that write (its
  watch event requeues the key), so the controller never acts on its own stale past; anyone
  else's concurrent write earns a 409 and a retry through the work queue, never an overwrite.
* Events (``ScalingReplicaSet`` "Scaled up replica set NAME from A to B", ``ReplicaSetCreateError``,
  ``SelectorOverlap``) are recorded in the background: a reconcile never waits for them.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from podling.api import meta, selectors
from podling.client.http import ApiClient, ApiError, is_already_exists, is_not_found
from podling.client.informer import Informer
from podling.client.workqueue import run_workers
from podling.controllers.base import Context, OwnWrites, remove_condition, resource

log = logging.getLogger("podling.controllers.deployment")

Obj = dict[str, Any]


DEPLOYMENTS = resource("apps", "v1", "deployments")
REPLICA_SETS = resource("apps", "v1", "replicasets")
PODS = resource("", "v1", "pods")

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# Deployment annotations that are not copied onto its ReplicaSets (kubectl skips the same ones
# when it copies a ReplicaSet's annotations back on a rollback).
_NOT_COPIED = frozenset({"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
                         DESIRED_REPLICAS, MAX_REPLICAS, "deprecated.deployment.rollback.to"})
_MAX_REVISION_HISTORY_CHARS = 2000
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' rand.SafeEncodeString: no vowels, no 0/1/3

# Condition reasons, as Kubernetes' deployment utilities name them.
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
RS_CREATE_ERROR = "ReplicaSetCreateError"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"


# ---- reading objects (pure) -----------------------------------------------------------------


def _spec(obj: Obj | None) -> Obj:
    return (obj or {}).get("spec") or {}


def _status(obj: Obj | None) -> Obj:
    return (obj or {}).get("status") or {}


def _uid(obj: Obj) -> str:
    return (obj.get("metadata") or {}).get("uid") or ""


def replicas(obj: Obj | None) -> int:
    """``spec.replicas`` of a Deployment or ReplicaSet (defaulted to 1, as the API does)."""
    value = _spec(obj).get("replicas")
    return 1 if value is None else int(value)


def _status_count(obj: Obj | None, field: str) -> int:
    return int(_status(obj).get(field) or 0)


def _created(rs: Obj) -> tuple[float, str]:
    """Kubernetes' ReplicaSetsByCreationTimestamp key: creation time, then name."""
    text = (rs.get("metadata") or {}).get("creationTimestamp")
    try:
        moment = meta.parse_time(text).timestamp() if text else 0.0
    except ValueError:
        moment = 0.0
    return moment, meta.name(rs)


def by_creation(rss: Iterable[Obj]) -> list[Obj]:
    return sorted(rss, key=_created)


def active(rss: Iterable[Obj | None]) -> list[Obj]:
    """ReplicaSets with replicas wanted (spec.replicas > 0)."""
    return [rs for rs in rss if rs is not None and replicas(rs) > 0]


def _int_annotation(obj: Obj, key: str) -> int | None:
    try:
        return int(meta.annotations(obj)[key])
    except (KeyError, ValueError):
        return None


def revision(rs: Obj) -> int:
    """The ReplicaSet's revision; 0 without a readable one."""
    return _int_annotation(rs, REVISION) or 0


def max_revision(rss: Iterable[Obj]) -> int:
    return max((revision(rs) for rs in rss), default=0)


def is_rolling(d: Obj) -> bool:
    return ((_spec(d).get("strategy") or {}).get("type") or "RollingUpdate") == "RollingUpdate"


# ---- surge and unavailability (pure) --------------------------------------------------------


def scaled_value(value: int | str | None, *, total: int, round_up: bool, default: str = "25%") -> int:
    """An IntOrString against ``total``: an int as is, ``"N%"`` of total rounded up or down."""
    if value is None:
        value = default
    if isinstance(value, bool):
        raise ValueError(f"invalid value for IntOrString: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value)
    percent = text.endswith("%")
    try:
        number = int(text[:-1] if percent else text)
    except ValueError:
        raise ValueError(f"invalid value for IntOrString: invalid value {text!r}") from None
    if not percent:
        return number
    return math.ceil(number * total / 100) if round_up else math.floor(number * total / 100)


def resolve_fenceposts(max_surge_value: int | str | None, max_unavailable_value: int | str | None,
                       desired: int) -> tuple[int, int]:
    """(surge, unavailable) in pods for ``desired`` replicas; both 0 is read as unavailable 1."""
    surge = scaled_value(max_surge_value, total=desired, round_up=True)
    unavailable = scaled_value(max_unavailable_value, total=desired, round_up=False)
    if surge == 0 and unavailable == 0:
        # Validation refuses both 0, but a percentage can round down to it: 1 keeps the rollout moving.
        unavailable = 1
    return surge, unavailable


def _fenceposts(d: Obj) -> tuple[int, int]:
    rolling = (_spec(d).get("strategy") or {}).get("rollingUpdate") or {}
    return resolve_fenceposts(rolling.get("maxSurge"), rolling.get("maxUnavailable"), replicas(d))


def max_surge(d: Obj) -> int:
    return _fenceposts(d)[0] if is_rolling(d) else 0


def max_unavailable(d: Obj) -> int:
    if not is_rolling(d) or replicas(d) == 0:
        return 0
    return min(_fenceposts(d)[1], replicas(d))


# ---- templates and hashes (pure) ------------------------------------------------------------


def _pruned(value: Any) -> Any:
    """``value`` without null, empty-object and empty-list members: the form in which two
    templates that mean the same (as Go structs compare them after a JSON round trip) are equal."""
    if isinstance(value, Mapping):
        out = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _without_hash(template: Obj | None) -> Any:
    template = copy.deepcopy(template or {})
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return _pruned(template)


def equal_ignore_hash(a: Obj | None, b: Obj | None) -> bool:
    """Two pod templates are the same, the pod-template-hash label aside."""
    return _without_hash(a) == _without_hash(b)


def template_hash(template: Obj, *, collision_count: int | None = None) -> str:
    """A stable hash of a pod template: FNV-1a (32 bits) of its canonical JSON, plus the
    collision count when there is one, encoded in Kubernetes' safe alphabet."""
    value = 0x811C9DC5
    data = json.dumps(_pruned(template), sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += collision_count.to_bytes(4, "little", signed=False)
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE_ALPHABET[int(digit) % len(_SAFE_ALPHABET)] for digit in str(value))


# ---- which ReplicaSets, and how many pods each (pure) ---------------------------------------


def find_new_replica_set(d: Obj, rss: Iterable[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template is the Deployment's (hash label aside)."""
    template = _spec(d).get("template")
    return next((rs for rs in by_creation(rss) if equal_ignore_hash(_spec(rs).get("template"), template)), None)


def new_rs_replicas(d: Obj, all_rss: Sequence[Obj], new_rs: Obj) -> int:
    """How many pods the new ReplicaSet may have now (Kubernetes' NewRSNewReplicas)."""
    if not is_rolling(d):
        return replicas(d)
    current = sum(replicas(rs) for rs in all_rss)
    most = replicas(d) + max_surge(d)
    if current >= most:
        return replicas(new_rs)
    return replicas(new_rs) + min(most - current, replicas(d) - replicas(new_rs))


def is_saturated(d: Obj, rs: Obj | None) -> bool:
    """The ReplicaSet has, wants and is meant to have every replica of the Deployment, all available."""
    return (rs is not None and replicas(rs) == replicas(d)
            and _int_annotation(rs, DESIRED_REPLICAS) == replicas(d)
            and _status_count(rs, "availableReplicas") == replicas(d))


def find_active_or_latest(new_rs: Obj | None, old_rss: Sequence[Obj]) -> Obj | None:
    """The one ReplicaSet with replicas, or the latest if none has any; None if several have."""
    if new_rs is None and not old_rss:
        return None
    olds = sorted(old_rss, key=_created, reverse=True)
    running = active([*olds, new_rs])
    if not running:
        return new_rs if new_rs is not None else olds[0]
    return running[0] if len(running) == 1 else None


def is_scaling_event(d: Obj, rss: Iterable[Obj | None]) -> bool:
    """An active ReplicaSet was told a different size of the Deployment than it now has."""
    for rs in active(rss):
        desired = _int_annotation(rs, DESIRED_REPLICAS)
        if desired is not None and desired != replicas(d):
            return True
    return False


def _round_half_away(value: float) -> int:
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def _proportion(rs: Obj, d: Obj, *, to_add: int, added: int) -> int:
    """The share of ``to_add`` that ``rs`` gets (Kubernetes' GetProportion)."""
    if replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    if replicas(d) == 0:
        fraction = -replicas(rs)
    else:
        annotated = _int_annotation(rs, MAX_REPLICAS)
        if annotated is None:
            annotated = _status_count(d, "replicas")
        if annotated <= 0:
            return 0
        fraction = _round_half_away(replicas(rs) * (replicas(d) + max_surge(d)) / annotated) - replicas(rs)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def proportional_sizes(d: Obj, rss: Sequence[Obj]) -> tuple[list[Obj], dict[str, int], Literal["up", "down"]]:
    """Scaling a Deployment in the middle of a rollout: each active ReplicaSet grows or shrinks in
    proportion to its size, leftovers to the largest. (the ReplicaSets in order, uid -> size, up/down)."""
    rss = active(rss)
    allowed = replicas(d) + max_surge(d) if replicas(d) > 0 else 0
    to_add = allowed - sum(replicas(rs) for rs in rss)
    newest_first = sorted(rss, key=_created, reverse=True)
    if to_add > 0:  # larger first; among equals the newer first
        order = sorted(newest_first, key=lambda rs: -replicas(rs))
    elif to_add < 0:  # larger first; among equals the older first
        order = sorted(by_creation(rss), key=lambda rs: -replicas(rs))
    else:
        order = list(rss)
    added = 0
    sizes: dict[str, int] = {}
    for rs in order:
        share = _proportion(rs, d, to_add=to_add, added=added)
        sizes[_uid(rs)] = replicas(rs) + share
        added += share
    if order and to_add != 0:
        first = _uid(order[0])
        sizes[first] = max(0, sizes[first] + to_add - added)
    return order, sizes, "up" if to_add > 0 else "down"


def old_scale_down(d: Obj, old_rss: Sequence[Obj], new_rs: Obj) -> dict[str, int]:
    """One RollingUpdate step down: uid -> new size of the active old ReplicaSets to shrink.

    First unavailable pods of old ReplicaSets go (they only block the rollout), then available
    ones, oldest ReplicaSet first, never below ``replicas - maxUnavailable`` available pods
    overall, counting the new ReplicaSet's unavailable pods against the budget.
    """
    old_rss = active(old_rss)
    if not old_rss:
        return {}
    all_rss = [*old_rss, new_rs]
    min_available = replicas(d) - max_unavailable(d)
    new_unavailable = replicas(new_rs) - _status_count(new_rs, "availableReplicas")
    budget = sum(replicas(rs) for rs in all_rss) - min_available - new_unavailable
    if budget <= 0:
        return {}
    sizes = {_uid(rs): replicas(rs) for rs in old_rss}
    changed: dict[str, int] = {}
    ordered = by_creation(old_rss)
    cleaned = 0
    for rs in ordered:  # unhealthy first
        if cleaned >= budget:
            break
        uid, available = _uid(rs), _status_count(rs, "availableReplicas")
        if sizes[uid] == 0 or sizes[uid] == available:
            continue
        count = min(budget - cleaned, sizes[uid] - available)
        sizes[uid] -= count
        changed[uid] = sizes[uid]
        cleaned += count
    available_now = sum(_status_count(rs, "availableReplicas") for rs in all_rss)
    room = available_now - min_available
    scaled = 0
    for rs in ordered:
        if scaled >= room:
            break
        uid = _uid(rs)
        if sizes[uid] == 0:
            continue
        count = min(sizes[uid], room - scaled)
        sizes[uid] -= count
        changed[uid] = sizes[uid]
        scaled += count
    return changed


def replica_sets_to_delete(d: Obj, old_rss: Iterable[Obj]) -> list[Obj]:
    """Old ReplicaSets beyond revisionHistoryLimit, lowest revision first, that are empty and settled."""
    limit = _spec(d).get("revisionHistoryLimit")
    if limit is None:
        return []
    alive = [rs for rs in old_rss if not (rs.get("metadata") or {}).get("deletionTimestamp")]
    surplus = len(alive) - int(limit)
    if surplus <= 0:
        return []
    oldest = sorted(alive, key=lambda rs: (revision(rs), *_created(rs)))[:surplus]
    return [rs for rs in oldest
            if _status_count(rs, "replicas") == 0 and replicas(rs) == 0
            and ((rs.get("metadata") or {}).get("generation") or 0) <= _status_count(rs, "observedGeneration")]


def replicas_annotations(d: Obj) -> dict[str, str]:
    return {DESIRED_REPLICAS: str(replicas(d)), MAX_REPLICAS: str(replicas(d) + max_surge(d))}


def new_rs_annotations(d: Obj, current: Mapping[str, str], new_revision: int, *, exists: bool) -> dict[str, str]:
    """The new ReplicaSet's annotations: the Deployment's (bar the skipped ones), a revision one
    above every old one (the revisions it had before kept in revision-history), and for a
    ReplicaSet about to be created the replicas annotations."""
    annotations = dict(current)
    for key, value in meta.annotations(d).items():
        if key not in _NOT_COPIED:
            annotations[key] = value
    old_text = annotations.get(REVISION)
    try:
        old = int(old_text) if old_text is not None else 0
    except ValueError:
        return annotations  # an unreadable revision is left for a human
    if old < new_revision:
        annotations[REVISION] = str(new_revision)
        if old_text is not None:
            history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
            history.append(old_text)
            while len(",".join(history)) > _MAX_REVISION_HISTORY_CHARS and len(history) > 1:
                history.pop(0)
            annotations[REVISION_HISTORY] = ",".join(history)
    if not exists:
        annotations.update(replicas_annotations(d))
    return annotations


# ---- status and conditions (pure) -----------------------------------------------------------


def new_condition(type: str, status: str, reason: str, message: str, *, now: str) -> Obj:
    return {"type": type, "status": status, "lastUpdateTime": now, "lastTransitionTime": now, "reason": reason,
            "message": message}


def set_condition(status: Obj, condition: Obj) -> None:
    """Kubernetes' SetDeploymentCondition: the same status and reason keep the condition as it is;
    the same status keeps its lastTransitionTime; the condition goes last."""
    conditions = status.get("conditions") or []
    current = next((c for c in conditions if c.get("type") == condition["type"]), None)
    if current is not None and current.get("status") == condition["status"] \
            and current.get("reason") == condition["reason"]:
        return
    if current is not None and current.get("status") == condition["status"]:
        condition = {**condition, "lastTransitionTime": current.get("lastTransitionTime")}
    status["conditions"] = [c for c in conditions if c.get("type") != condition["type"]] + [condition]


def calculate_status(d: Obj, all_rss: Iterable[Obj | None], new_rs: Obj | None, *, now: str) -> Obj:
    """The Deployment's status from its ReplicaSets (zero counts left out, as omitempty does)."""
    rss = [rs for rs in all_rss if rs is not None]
    available = sum(_status_count(rs, "availableReplicas") for rs in rss)
    counts = {
        "observedGeneration": (d.get("metadata") or {}).get("generation") or 0,
        "replicas": sum(_status_count(rs, "replicas") for rs in rss),
        "updatedReplicas": _status_count(new_rs, "replicas"),
        "readyReplicas": sum(_status_count(rs, "readyReplicas") for rs in rss),
        "availableReplicas": available,
        "unavailableReplicas": max(0, sum(replicas(rs) for rs in rss) - available),
    }
    status: Obj = {field: value for field, value in counts.items() if value}
    if (collisions := _status(d).get("collisionCount")) is not None:
        status["collisionCount"] = collisions
    if conditions := _status(d).get("conditions"):
        status["conditions"] = copy.deepcopy(conditions)
    if available >= replicas(d) - max_unavailable(d):
        set_condition(status, new_condition("Available", "True", MIN_AVAILABLE,
                                            "Deployment has minimum availability.", now=now))
    else:
        set_condition(status, new_condition("Available", "False", MIN_UNAVAILABLE,
                                            "Deployment does not have minimum availability.", now=now))
    return status


def has_progress_deadline(d: Obj) -> bool:
    deadline = _spec(d).get("progressDeadlineSeconds")
    return deadline is not None and deadline != 2**31 - 1


def deployment_complete(d: Obj, status: Obj) -> bool:
    want = replicas(d)
    return (status.get("updatedReplicas", 0) == want and status.get("replicas", 0) == want
            and status.get("availableReplicas", 0) == want
            and status.get("observedGeneration", 0) >= ((d.get("metadata") or {}).get("generation") or 0))


def deployment_progressing(d: Obj, status: Obj) -> bool:
    """More updated, ready or available replicas than the last status said, or fewer old ones."""
    old = _status(d)
    old_olds = old.get("replicas", 0) - old.get("updatedReplicas", 0)
    new_olds = status.get("replicas", 0) - status.get("updatedReplicas", 0)
    return (status.get("updatedReplicas", 0) > old.get("updatedReplicas", 0) or new_olds < old_olds
            or status.get("readyReplicas", 0) > old.get("readyReplicas", 0)
            or status.get("availableReplicas", 0) > old.get("availableReplicas", 0))


def _seconds(text: str | None) -> float:
    try:
        return meta.parse_time(text).timestamp() if text else 0.0
    except ValueError:
        return 0.0


def deployment_timed_out(d: Obj, status: Obj, *, now: float) -> bool:
    if not has_progress_deadline(d):
        return False
    condition = meta.get_condition(status, "Progressing")
    if condition is None or condition.get("reason") == NEW_RS_AVAILABLE:
        return False
    if condition.get("reason") == TIMED_OUT:
        return True
    return _seconds(condition.get("lastUpdateTime")) + int(_spec(d)["progressDeadlineSeconds"]) < now


def replica_failure(all_rss: Iterable[Obj | None], new_rs: Obj | None) -> Obj | None:
    """A ReplicaSet's ReplicaFailure condition as the Deployment's (the new ReplicaSet's first)."""
    for rs in [new_rs, *all_rss]:
        condition = meta.get_condition(_status(rs), "ReplicaFailure")
        if condition is not None:
            return {"type": "ReplicaFailure", "status": condition.get("status"),
                    "lastUpdateTime": condition.get("lastTransitionTime"),
                    "lastTransitionTime": condition.get("lastTransitionTime"),
                    "reason": condition.get("reason"), "message": condition.get("message")}
    return None


def rollout_status(d: Obj, status: Obj, all_rss: Iterable[Obj | None], new_rs: Obj | None, *,
                   now: float) -> Obj:
    """``status`` with the conditions a rollout earns (Kubernetes' syncRolloutStatus): Progressing
    (complete, progressing, or past its deadline) and the ReplicaSets' ReplicaFailure."""
    status = copy.deepcopy(status)
    stamp = meta.format_time(datetime.datetime.fromtimestamp(now, datetime.timezone.utc))
    if not has_progress_deadline(d):
        remove_condition(status, "Progressing")
    current = meta.get_condition(_status(d), "Progressing")
    complete_before = (status.get("replicas", 0) == status.get("updatedReplicas", 0) and current is not None
                       and current.get("reason") == NEW_RS_AVAILABLE)
    name = meta.name(new_rs) if new_rs is not None else ""
    if has_progress_deadline(d) and not complete_before:
        if deployment_complete(d, status):
            message = (f'ReplicaSet "{name}" has successfully progressed.' if new_rs is not None
                       else "Deployment has successfully progressed.")
            set_condition(status, new_condition("Progressing", "True", NEW_RS_AVAILABLE, message, now=stamp))
        elif deployment_progressing(d, status):
            message = (f'ReplicaSet "{name}" is progressing.' if new_rs is not None
                       else f'Deployment "{meta.name(d)}" is progressing.')
            condition = new_condition("Progressing", "True", RS_UPDATED, message, now=stamp)
            if current is not None and current.get("status") == "True":
                condition["lastTransitionTime"] = current.get("lastTransitionTime")
            remove_condition(status, "Progressing")
            set_condition(status, condition)
        elif deployment_timed_out(d, status, now=now):
            message = (f'ReplicaSet "{name}" has timed out progressing.' if new_rs is not None
                       else f'Deployment "{meta.name(d)}" has timed out progressing.')
            set_condition(status, new_condition("Progressing", "False", TIMED_OUT, message, now=stamp))
    if (failure := replica_failure(all_rss, new_rs)) is not None:
        set_condition(status, failure)
    else:
        remove_condition(status, "ReplicaFailure")
    return status


def stuck_requeue(d: Obj, status: Obj, *, now: float) -> float | None:
    """Seconds until a rollout without progress should be checked for its deadline; None if not needed."""
    current = meta.get_condition(_status(d), "Progressing")
    if not has_progress_deadline(d) or current is None:
        return None
    if deployment_complete(d, status) or current.get("reason") == TIMED_OUT:
        return None
    after = _seconds(current.get("lastUpdateTime")) + int(_spec(d)["progressDeadlineSeconds"]) - now
    return max(after, 0.0) + 1.0


# ---- the controller ------------------------------------------------------------------------


def _namespace_index(obj: Obj) -> list[str]:
    return [meta.namespace(obj)]


def _controller_uid_index(obj: Obj) -> list[str]:
    ref = meta.controller_of(obj)
    return [ref["uid"]] if ref and ref.get("uid") else []


def _now_text() -> str:
    return meta.now_rfc3339()


class DeploymentController:
    name = "deployment"

    def __init__(self, context: Context) -> None:
        self.context = context
        self.api = context.api
        self.recorder = context.recorder
        self.queue = context.metrics.queue(self.name)
        self.writes = OwnWrites()
        self._events: set[asyncio.Task[None]] = set()  # events being recorded in the background
        self._namespace_index = f"{self.name}/namespace"
        self._controller_index = f"{self.name}/controller-uid"
        self.deployments: Informer = context.informers.informer(DEPLOYMENTS)
        self.replica_sets: Informer = context.informers.informer(REPLICA_SETS)
        self.pods: Informer = context.informers.informer(PODS)
        self.deployments.add_index(self._namespace_index, _namespace_index)
        self.replica_sets.add_index(self._namespace_index, _namespace_index)
        self.pods.add_index(self._controller_index, _controller_uid_index)
        self.deployments.add_handlers(on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new),
                                      on_delete=self._deployment_deleted)
        self.replica_sets.add_handlers(on_add=self._rs_added, on_update=self._rs_updated,
                                       on_delete=self._rs_deleted)
        self.pods.add_handlers(on_delete=self._pod_deleted)

    async def run(self, *, workers: int) -> None:
        try:
            await run_workers(self.queue, self.context.reconciler(self.name, self.reconcile), workers=workers)
        finally:
            self.queue.shutdown()
            for task in self._events:
                task.cancel()

    def event(self, obj: Obj, *, type: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        """Record an event in the background: a reconcile never waits behind the recorder."""
        task = asyncio.get_running_loop().create_task(
            self.recorder.event(obj, type=type, reason=reason, message=message))
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    # ---- event handlers: they only enqueue keys ----------------------------------------

    def _enqueue(self, d: Obj) -> None:
        self.queue.add(meta.object_key(d))

    def _deployment_deleted(self, d: Obj) -> None:
        self.writes.forget(d)
        self._enqueue(d)

    def _owner_of(self, rs: Obj) -> Obj | None:
        ref = meta.controller_of(rs)
        if ref is None or ref.get("kind") != "Deployment":
            return None
        d = self.deployments.get(f"{meta.namespace(rs)}/{ref.get('name')}")
        return d if d is not None and _uid(d) == ref.get("uid") else None

    def _enqueue_matching(self, rs: Obj) -> None:
        for d in self.deployments.by_index(self._namespace_index, meta.namespace(rs)):
            try:
                selector = selectors.from_label_selector(_spec(d).get("selector"))
            except selectors.ParseError:
                continue
            if not selector.empty and selector.matches(meta.labels(rs)):
                self._enqueue(d)

    def _rs_added(self, rs: Obj) -> None:
        if meta.controller_of(rs) is not None:
            if (d := self._owner_of(rs)) is not None:
                self._enqueue(d)
            return
        self._enqueue_matching(rs)

    def _rs_updated(self, old: Obj, new: Obj) -> None:
        old_ref, new_ref = meta.controller_of(old), meta.controller_of(new)
        if old_ref != new_ref:
            if old_ref is None:
                self._enqueue_matching(old)  # adopted: every Deployment that could have adopted it looks again
            elif (d := self._owner_of(old)) is not None:
                self._enqueue(d)
        if new_ref is not None:
            if (d := self._owner_of(new)) is not None:
                self._enqueue(d)
            return
        if meta.labels(old) != meta.labels(new) or old_ref != new_ref:
            self._enqueue_matching(new)

    def _rs_deleted(self, rs: Obj) -> None:
        self.writes.forget(rs)
        if (d := self._owner_of(rs)) is not None:
            self._enqueue(d)

    def _pod_deleted(self, pod: Obj) -> None:
        """Recreate waits for old pods to be gone: a pod of one of its ReplicaSets going is news."""
        ref = meta.controller_of(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.replica_sets.get(f"{meta.namespace(pod)}/{ref.get('name')}")
        if rs is not None and _uid(rs) == ref.get("uid") and (d := self._owner_of(rs)) is not None \
                and not is_rolling(d):
            self._enqueue(d)

    # ---- reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        cached = self.deployments.get(key)
        if cached is None or self.writes.behind(cached):
            return  # gone, or the event of our own last write requeues the key
        if any(self.writes.behind(rs) for rs in self.replica_sets_in(meta.namespace(cached))
               if (meta.controller_of(rs) or {}).get("uid") in (None, _uid(cached))):
            return  # a ReplicaSet we wrote: its event requeues every Deployment it concerns
        try:
            await _Sync(self, copy.deepcopy(cached)).run()
        except ApiError as err:
            if not is_not_found(err):
                raise
            # Deleted under us (the Deployment or a ReplicaSet): its delete event requeues the key.
            log.debug("deployment %s: %s", key, err)

    def replica_sets_in(self, namespace: str) -> list[Obj]:
        return self.replica_sets.by_index(self._namespace_index, namespace)

    def pods_of(self, rs: Obj) -> list[Obj]:
        return self.pods.by_index(self._controller_index, _uid(rs))


@dataclasses.dataclass(slots=True)
class _Sync:
    """One reconcile of one Deployment: its latest copy, the latest copy of each of its
    ReplicaSets (by uid; replaced by what the server answers to each write), and the writes."""

    controller: DeploymentController
    d: Obj
    rss: dict[str, Obj] = dataclasses.field(default_factory=dict)

    @property
    def api(self) -> ApiClient:
        return self.controller.api

    def latest(self, rs: Obj | None) -> Obj | None:
        return None if rs is None else self.rss.get(_uid(rs), rs)

    async def run(self) -> None:
        d = self.d
        key = meta.object_key(d)
        spec_selector = _spec(d).get("selector")
        if spec_selector is None:
            log.warning("deployment %s has no selector; skipped", key)
            return
        if not spec_selector.get("matchLabels") and not spec_selector.get("matchExpressions"):
            self.event(type="Warning", reason="SelectorOverlap",
                       message="This deployment is selecting all pods. A non-empty selector is required.")
            generation = (d.get("metadata") or {}).get("generation") or 0
            if _status(d).get("observedGeneration", 0) < generation:
                await self.write_status({**_status(d), "observedGeneration": generation})
            return
        try:
            selector = selectors.from_label_selector(spec_selector)
        except selectors.ParseError as err:
            log.warning("deployment %s: invalid selector, skipped: %s", key, err)
            return
        for rs in await self.claim(selector):
            self.rss[_uid(rs)] = rs
        if (d.get("metadata") or {}).get("deletionTimestamp"):
            new, olds = await self.new_and_old(create=False)
            await self.write_status(calculate_status(self.d, [*olds, new], new, now=_now_text()))
            return
        await self.check_paused_condition()
        if _spec(self.d).get("paused"):
            await self.scale_only()
            return
        if is_scaling_event(self.d, self.rss.values()):
            await self.scale_only()
            return
        if is_rolling(self.d):
            await self.rolling()
        else:
            await self.recreate()

    # ---- claiming ReplicaSets ----------------------------------------------------------

    async def claim(self, selector: selectors.LabelSelector) -> list[Obj]:
        d = self.d
        uid, deleting = _uid(d), bool((d.get("metadata") or {}).get("deletionTimestamp"))
        owned: list[Obj] = []
        may_adopt: bool | None = None
        for rs in self.controller.replica_sets_in(meta.namespace(d)):
            ref = meta.controller_of(rs)
            matches = selector.matches(meta.labels(rs))
            if ref is not None:
                if ref.get("uid") != uid:
                    continue
                if matches:
                    owned.append(rs)
                elif not deleting:
                    await self.set_owner_references(rs, [r for r in meta.owner_references(rs) if r.get("uid") != uid])
                continue
            if deleting or not matches or (rs.get("metadata") or {}).get("deletionTimestamp"):
                continue
            if may_adopt is None:
                may_adopt = await self.still_there()
            if may_adopt and (adopted := await self.set_owner_references(
                    rs, [*meta.owner_references(rs), meta.controller_ref(d)])) is not None:
                owned.append(adopted)
        return owned

    async def still_there(self) -> bool:
        try:
            live = await self.api.get(DEPLOYMENTS, namespace=meta.namespace(self.d), name=meta.name(self.d))
        except ApiError as err:
            if is_not_found(err):
                return False
            raise
        return _uid(live) == _uid(self.d) and not (live.get("metadata") or {}).get("deletionTimestamp")

    async def set_owner_references(self, rs: Obj, references: list[Obj]) -> Obj | None:
        body = {"metadata": {"ownerReferences": references or None,
                             "resourceVersion": (rs.get("metadata") or {}).get("resourceVersion")}}
        try:
            patched = await self.api.patch(REPLICA_SETS, namespace=meta.namespace(rs), name=meta.name(rs),
                                           body=body)
        except ApiError as err:
            if is_not_found(err):
                return None
            raise
        self.controller.writes.wrote(rs, patched)
        return patched

    # ---- writes ------------------------------------------------------------------------

    def wrote(self, before: Obj, after: Obj) -> Obj:
        self.controller.writes.wrote(before, after)
        return after

    async def write_status(self, status: Obj) -> None:
        if status == _status(self.d):
            return
        self.d = self.wrote(self.d, await self.api.update_status(DEPLOYMENTS, {**self.d, "status": status}))

    async def set_revision(self, value: str) -> None:
        if not value or meta.annotations(self.d).get(REVISION) == value:
            return
        body = {"metadata": {"annotations": {REVISION: value},
                             "resourceVersion": (self.d.get("metadata") or {}).get("resourceVersion")}}
        self.d = self.wrote(self.d, await self.api.patch(DEPLOYMENTS, namespace=meta.namespace(self.d),
                                                         name=meta.name(self.d), body=body))

    def event(self, *, type: Literal["Normal", "Warning"] = "Normal", reason: str, message: str) -> None:
        self.controller.event(self.d, type=type, reason=reason, message=message)

    async def scale(self, rs: Obj, size: int, operation: str) -> bool:
        """Set the ReplicaSet's size (and replicas annotations); True if the size changed."""
        rs = self.latest(rs)
        assert rs is not None
        old = replicas(rs)
        annotations = replicas_annotations(self.d)
        if old == size and all(meta.annotations(rs).get(k) == v for k, v in annotations.items()):
            return False
        updated = copy.deepcopy(rs)
        updated["spec"]["replicas"] = size
        updated["metadata"]["annotations"] = {**meta.annotations(rs), **annotations}
        self.rss[_uid(rs)] = self.wrote(rs, await self.api.update(REPLICA_SETS, updated))
        if old == size:
            return False
        self.event(reason="ScalingReplicaSet",
                         message=f"Scaled {operation} replica set {meta.name(rs)} from {old} to {size}")
        return True

    async def scale_to(self, rs: Obj, size: int) -> bool:
        rs = self.latest(rs)
        assert rs is not None
        if replicas(rs) == size:
            return False
        return await self.scale(rs, size, "up" if replicas(rs) < size else "down")

    # ---- the new ReplicaSet ------------------------------------------------------------

    async def new_and_old(self, *, create: bool) -> tuple[Obj | None, list[Obj]]:
        """The new ReplicaSet (synced: revision, annotations, minReadySeconds; created if asked) and the old ones."""
        new = find_new_replica_set(self.d, self.rss.values())
        olds = [rs for rs in self.rss.values() if new is None or _uid(rs) != _uid(new)]
        new_revision = max_revision(olds) + 1
        if new is not None:
            new = await self.sync_new(new, new_revision)
        elif create:
            new = await self.create_new(olds, new_revision)
        if new is not None:
            self.rss[_uid(new)] = new
        return new, olds

    async def sync_new(self, rs: Obj, new_revision: int) -> Obj:
        annotations = new_rs_annotations(self.d, meta.annotations(rs), new_revision, exists=True)
        min_ready = _spec(self.d).get("minReadySeconds") or 0
        if annotations != dict(meta.annotations(rs)) or (_spec(rs).get("minReadySeconds") or 0) != min_ready:
            updated = copy.deepcopy(rs)
            updated["metadata"]["annotations"] = annotations
            updated["spec"]["minReadySeconds"] = min_ready
            return self.wrote(rs, await self.api.update(REPLICA_SETS, updated))
        await self.set_revision(meta.annotations(rs).get(REVISION, ""))
        if has_progress_deadline(self.d) and meta.get_condition(_status(self.d), "Progressing") is None:
            status = copy.deepcopy(_status(self.d))
            set_condition(status, new_condition("Progressing", "True", FOUND_NEW_RS,
                                                f'Found new replica set "{meta.name(rs)}"', now=_now_text()))
            await self.write_status(status)
        return rs

    async def create_new(self, olds: list[Obj], new_revision: int) -> Obj:
        d = self.d
        spec = _spec(d)
        collisions = _status(d).get("collisionCount")
        pod_hash = template_hash(spec.get("template") or {}, collision_count=collisions)
        template = copy.deepcopy(spec.get("template") or {})
        template.setdefault("metadata", {})["labels"] = {**(template["metadata"].get("labels") or {}),
                                                         HASH_LABEL: pod_hash}
        selector = copy.deepcopy(spec.get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: pod_hash}
        name = f"{meta.name(d)}-{pod_hash}"
        rs: Obj = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": meta.namespace(d), "labels": dict(template["metadata"]["labels"]),
                         "ownerReferences": [meta.controller_ref(d)]},
            "spec": {"replicas": 0, "minReadySeconds": spec.get("minReadySeconds") or 0, "selector": selector,
                     "template": template},
        }
        count = new_rs_replicas(d, [*olds, rs], rs)
        rs["spec"]["replicas"] = count
        rs["metadata"]["annotations"] = new_rs_annotations(d, {}, new_revision, exists=False)
        existed = False
        try:
            created = await self.api.create(REPLICA_SETS, rs)
        except ApiError as err:
            if is_already_exists(err):
                created = await self.existing_new(name)
                existed = True
            else:
                message = f'Failed to create new replica set "{name}": {err.message or err}'
                if has_progress_deadline(d):
                    status = copy.deepcopy(_status(d))
                    set_condition(status, new_condition("Progressing", "False", RS_CREATE_ERROR, message,
                                                        now=_now_text()))
                    await self.write_status(status)
                self.event(type="Warning", reason=RS_CREATE_ERROR, message=message)
                raise
        if not existed and count > 0:
            self.event(reason="ScalingReplicaSet", message=f"Scaled up replica set {name} from 0 to {count}")
        await self.set_revision(str(new_revision))
        if not existed and has_progress_deadline(self.d):
            status = copy.deepcopy(_status(self.d))
            set_condition(status, new_condition("Progressing", "True", NEW_RS_CREATED,
                                                f'Created new replica set "{name}"', now=_now_text()))
            await self.write_status(status)
        return created

    async def existing_new(self, name: str) -> Obj:
        """The ReplicaSet that took the new one's name: ours (the cache had not shown it yet), or a
        hash collision, which bumps collisionCount so that the next reconcile hashes differently."""
        d = self.d
        rs = self.controller.replica_sets.get(f"{meta.namespace(d)}/{name}") or await self.api.get(
            REPLICA_SETS, namespace=meta.namespace(d), name=name)
        ref = meta.controller_of(rs)
        if ref is not None and ref.get("uid") == _uid(d) and equal_ignore_hash(
                _spec(d).get("template"), _spec(rs).get("template")):
            return rs
        status = copy.deepcopy(_status(d))
        status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
        await self.write_status(status)
        raise RuntimeError(f"deployment {meta.object_key(d)}: replica set {name} exists with another template "
                           f"(hash collision); collisionCount is now {status['collisionCount']}")

    # ---- strategies --------------------------------------------------------------------

    async def scale_only(self) -> None:
        """Paused or scaled: resize ReplicaSets (proportionally mid-rollout), no rollout."""
        new, olds = await self.new_and_old(create=False)
        await self.scale_replica_sets(new, olds)
        if _spec(self.d).get("paused"):
            await self.cleanup(olds)
        all_rss = [self.latest(rs) for rs in (*olds, new)]
        await self.write_status(calculate_status(self.d, all_rss, self.latest(new), now=_now_text()))

    async def scale_replica_sets(self, new: Obj | None, olds: list[Obj]) -> None:
        d = self.d
        target = find_active_or_latest(new, olds)
        if target is not None:
            await self.scale_to(target, replicas(d))
            return
        if is_saturated(d, new):
            for rs in active(olds):
                await self.scale_to(rs, 0)
            return
        if is_rolling(d):
            order, sizes, operation = proportional_sizes(d, [self.latest(rs) for rs in (*olds, new) if rs])
            for rs in order:
                await self.scale(rs, sizes[_uid(rs)], operation)

    async def rolling(self) -> None:
        new, olds = await self.new_and_old(create=True)
        assert new is not None
        all_rss = [*olds, new]
        d = self.d
        if replicas(new) != replicas(d):
            target = replicas(d) if replicas(new) > replicas(d) else new_rs_replicas(d, all_rss, new)
            if await self.scale_to(new, target):
                await self.sync_rollout_status(olds, new)
                return
        new = self.latest(new)
        assert new is not None
        shrink = old_scale_down(d, [self.latest(rs) for rs in olds], new)  # type: ignore[misc]
        for uid, size in shrink.items():
            await self.scale_to(self.rss[uid], size)
        if shrink:
            await self.sync_rollout_status(olds, new)
            return
        if deployment_complete(d, _status(d)):
            await self.cleanup(olds)
        await self.sync_rollout_status(olds, new)

    async def recreate(self) -> None:
        new, olds = await self.new_and_old(create=False)
        scaled = False
        for rs in active(olds):
            scaled = await self.scale_to(rs, 0) or scaled
        if scaled or self.old_pods_running(new, olds):
            await self.sync_rollout_status(olds, new)
            return
        if new is None:
            new, olds = await self.new_and_old(create=True)
            assert new is not None
        await self.scale_to(new, replicas(self.d))
        if deployment_complete(self.d, _status(self.d)):
            await self.cleanup(olds)
        await self.sync_rollout_status(olds, new)

    def old_pods_running(self, new: Obj | None, olds: list[Obj]) -> bool:
        """Any old pod not yet finished (Kubernetes' oldPodsRunning for Recreate)."""
        if sum(_status_count(self.latest(rs), "replicas") for rs in olds) > 0:
            return True
        for rs in olds:
            if new is not None and _uid(rs) == _uid(new):
                continue
            for pod in self.controller.pods_of(rs):
                if (pod.get("status") or {}).get("phase") not in ("Failed", "Succeeded"):
                    return True
        return False

    async def cleanup(self, olds: list[Obj]) -> None:
        for rs in replica_sets_to_delete(self.d, [r for rs in olds if (r := self.latest(rs)) is not None]):
            try:
                await self.api.delete(REPLICA_SETS, namespace=meta.namespace(rs), name=meta.name(rs))
            except ApiError as err:
                if not is_not_found(err):
                    raise

    async def check_paused_condition(self) -> None:
        d = self.d
        if not has_progress_deadline(d):
            return
        current = meta.get_condition(_status(d), "Progressing")
        if current is not None and current.get("reason") == TIMED_OUT:
            return
        paused_shown = current is not None and current.get("reason") == PAUSED
        status = copy.deepcopy(_status(d))
        if _spec(d).get("paused") and not paused_shown:
            set_condition(status, new_condition("Progressing", "Unknown", PAUSED, "Deployment is paused",
                                                now=_now_text()))
        elif not _spec(d).get("paused") and paused_shown:
            set_condition(status, new_condition("Progressing", "Unknown", RESUMED, "Deployment is resumed",
                                                now=_now_text()))
        else:
            return
        await self.write_status(status)

    async def sync_rollout_status(self, olds: list[Obj], new: Obj | None) -> None:
        now = time.time()
        new = self.latest(new)
        all_rss = [self.latest(rs) for rs in (*olds, new)]
        base = calculate_status(self.d, all_rss, new, now=meta.format_time(
            datetime.datetime.fromtimestamp(now, datetime.timezone.utc)))
        status = rollout_status(self.d, base, all_rss, new, now=now)
        if status == _status(self.d):
            if (after := stuck_requeue(self.d, status, now=now)) is not None:
                self.controller.queue.add_after(meta.object_key(self.d), after)
            return
        await self.write_status(status)

