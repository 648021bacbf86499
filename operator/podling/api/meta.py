"""Reading and stamping ``metadata`` and ``status.conditions`` of Kubernetes-shaped objects.

Invariant: readers never fail on a partial object and never mutate it: a missing
``metadata``, name or map reads as empty, and what they return must be treated as read-only
(it may be the object's own dict, shared with an informer cache). The only writer,
:func:`set_condition`, changes the ``status`` dict it is given and nothing else.

Times are Kubernetes' ``metav1.Time``: RFC 3339 in UTC with second precision,
``2024-01-02T03:04:05Z``. Keys are the work-queue keys of client-go: ``namespace/name``, or
``name`` for cluster-scoped objects.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

Obj = Mapping[str, Any]

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _metadata(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def name(obj: Obj) -> str:
    return _metadata(obj).get("name") or ""


def namespace(obj: Obj) -> str:
    """The namespace, ``""`` for cluster-scoped objects."""
    return _metadata(obj).get("namespace") or ""


def labels(obj: Obj) -> Mapping[str, str]:
    return _metadata(obj).get("labels") or {}


def annotations(obj: Obj) -> Mapping[str, str]:
    return _metadata(obj).get("annotations") or {}


def owner_references(obj: Obj) -> Sequence[Obj]:
    return _metadata(obj).get("ownerReferences") or ()


def controller_of(obj: Obj) -> Obj | None:
    """The owner reference with ``controller: true`` (Kubernetes allows at most one)."""
    return next((ref for ref in owner_references(obj) if ref.get("controller") is True), None)


def controller_ref(owner: Obj) -> dict[str, Any]:
    """The owner reference a controller puts on an object it creates for ``owner``."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": name(owner),
        "uid": _metadata(owner)["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_key(obj: Obj) -> str:
    """``namespace/name``, or ``name`` for a cluster-scoped object."""
    ns = namespace(obj)
    return f"{ns}/{name(obj)}" if ns else name(obj)


def split_key(key: str) -> tuple[str, str]:
    """``(namespace, name)`` of a key from :func:`object_key`; namespace ``""`` if none."""
    ns, _, obj_name = key.rpartition("/")
    return ns, obj_name


def new_uid() -> str:
    return str(uuid.uuid4())


def format_time(moment: datetime.datetime) -> str:
    """``moment`` (naive means UTC) as ``2024-01-02T03:04:05Z``; fractions of a second dropped."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    return format_time(datetime.datetime.now(datetime.timezone.utc))


def parse_time(text: str) -> datetime.datetime:
    """An RFC 3339 time (any offset, any fraction) as an aware UTC datetime."""
    if not isinstance(text, str) or not _RFC3339.fullmatch(text):
        raise ValueError(f"invalid time {text!r}: want RFC 3339, such as 2024-01-02T03:04:05Z")
    return datetime.datetime.fromisoformat(text.upper().replace("Z", "+00:00")).astimezone(datetime.timezone.utc)


def get_condition(status: Obj | None, condition_type: str) -> Obj | None:
    """The condition of that type in ``status.conditions``, if any."""
    conditions = (status or {}).get("conditions") or ()
    return next((c for c in conditions if c.get("type") == condition_type), None)


def set_condition(target: dict[str, Any], /, *, type: str, status: str, reason: str = "", message: str = "") -> bool:
    """Set a condition in the ``status`` dict ``target``; True if anything changed.

    ``lastTransitionTime`` moves only when the condition's status does, as controllers
    must keep it: it says since when the condition has been what it is.
    """
    conditions = target.setdefault("conditions", [])
    current = next((c for c in conditions if c.get("type") == type), None)
    wanted = {"type": type, "status": status, "reason": reason, "message": message}
    wanted = {key: value for key, value in wanted.items() if value}
    if current is None:
        conditions.append({**wanted, "lastTransitionTime": now_rfc3339()})
        return True
    changed = {key: value for key, value in wanted.items() if current.get(key) != value}
    stale = [key for key in ("reason", "message") if key in current and key not in wanted]
    if not changed and not stale:
        return False
    if "status" in changed:
        current["lastTransitionTime"] = now_rfc3339()
    for key in stale:
        del current[key]
    current.update(changed)
    return True
