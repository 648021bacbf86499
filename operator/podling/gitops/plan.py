"""Planning a sync: what to create, patch, leave alone and prune, as pure functions.

The plan for one object is a 3-way diff, as ``kubectl apply`` computes it, of

* *desired*: the manifest from git, made canonical by :func:`desired_object` (nulls and
  server-owned fields dropped, the tracking label ``podling.io/app`` added, a Secret's
  ``stringData`` folded into ``data`` as the server folds it);
* *last applied*: the desired object podling sent last time, kept on the live object as the
  annotation ``podling.io/last-applied`` (compact JSON, sorted keys, without itself);
* *live*: the object as the API server has it now.

Invariants:

* A field is compared only where desired names it. What only the live object has (status,
  uid, resourceVersion, generation, timestamps, allocated IPs and ports, annotations that
  controllers add, values the server defaulted) is never a difference and is never written,
  unless the last-applied copy shows podling set it: then it was removed from git, and the
  patch deletes it. Lists merge by their Kubernetes merge key (containers by name, ports by
  containerPort, env by name, volumes by name ...) read from ``schemas/``, so an item the
  server or a controller added is left alone too. A list without a merge key is atomic: it
  is equal when it equals live with the server's defaults (``podling.api.defaults``)
  applied to desired, or item by item by position, map items compared as maps are (so
  defaults set inside items by admission plugins that ``podling.api.defaults`` does not
  know are no difference either); when it differs, the whole desired list is sent.
* Fields named by an ignoreDifferences JSON pointer are removed from all three sides before
  diffing: never a difference, never in a patch.
* No diff noise: planning again against what an apply produced says ``unchanged``.
* An update's patch is a strategic merge patch carrying the live ``resourceVersion`` it was
  planned against, so a write racing with another is a 409 Conflict, never a blind overwrite.
* Nothing here mutates its arguments. Plans share unchanged parts with ``desired``: treat
  them as read-only.

Order: objects are applied by sync wave (the ``podling.io/sync-wave`` annotation, an
integer, default 0), then by kind in a safe order (namespaces first, pods late, see
``_KIND_STEPS``), and pruned in the reverse order. Prune deletes only what :func:`owned_by`
proves this Application created.
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import functools
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

from ruamel.yaml import YAML

from podling.api import meta, schema
from podling.api.defaults import apply_defaults
from podling.api.patch import SchemaLookup, strategic_merge_patch
from podling.api.resources import RESOURCES, Resource

Obj = dict[str, Any]
Action = Literal["create", "update", "unchanged"]

APP_LABEL = "podling.io/app"
LAST_APPLIED = "podling.io/last-applied"
SYNC_WAVE = "podling.io/sync-wave"

_SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "managedFields", "selfLink")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_SET_ORDER = "$setElementOrder/"
_DELETE_FROM = "$deleteFromPrimitiveList/"
_RETAIN_KEYS = "$retainKeys"

# The safe order of kinds inside a sync wave: what others depend on first.
_KIND_STEPS: Mapping[str, int] = {
    "Namespace": 0,
    "ResourceQuota": 1, "LimitRange": 1,
    "ServiceAccount": 2,
    "Secret": 3, "ConfigMap": 3,
    "PersistentVolumeClaim": 4,
    "Service": 5,
    "Deployment": 6, "ReplicaSet": 6, "StatefulSet": 6, "DaemonSet": 6, "ReplicationController": 6,
    "Pod": 7,
}
_OTHER_KINDS = 8

_BY_KIND: Mapping[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in RESOURCES}


# ---- identity ----------------------------------------------------------------------------


class Key(NamedTuple):
    """What identifies an object across git and the cluster; ``namespace`` is "" if cluster-scoped."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        """``apps/Deployment/shop/web``, ``Namespace/shop``: the parts that are set, joined by ``/``."""
        return "/".join(part for part in self if part)


def key_of(obj: Mapping[str, Any]) -> Key:
    group, _, _ = str(obj.get("apiVersion") or "").rpartition("/")
    return Key(group, str(obj.get("kind") or ""), meta.namespace(obj), meta.name(obj))


def resource_of(obj: Mapping[str, Any]) -> Resource:
    """The resource-table entry of ``obj``'s apiVersion and kind; ValueError if podling does not serve it."""
    resource = _BY_KIND.get((obj.get("apiVersion"), obj.get("kind")))
    if resource is None or "create" not in resource.verbs:
        raise ValueError(f"podling does not serve apiVersion {obj.get('apiVersion')!r} kind {obj.get('kind')!r}")
    return resource


# ---- the three sides ---------------------------------------------------------------------


def desired_object(obj: Mapping[str, Any], *, app: str, namespace: str = "") -> Obj:
    """The canonical desired object of a manifest: what podling sends and records as last applied.

    A fresh copy: ``null`` members, ``status`` and server-owned metadata dropped; the
    namespace set to ``namespace`` for a namespaced object that names none (and dropped for a
    cluster-scoped one, as the server drops it); the label ``podling.io/app: APP`` added; a
    Secret's ``stringData`` folded into ``data``. ValueError names what makes it unusable.
    """
    if not _LABEL_VALUE.match(app) or len(app) > 63:
        raise ValueError(f"application name {app!r} cannot be a label value (at most 63 characters, "
                         "alphanumeric, '-', '_' or '.')")
    resource = resource_of(obj)
    desired = _without_nulls(obj)
    desired.pop("status", None)
    metadata = desired.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"{resource.kind}: metadata must be an object")
    for field in _SERVER_METADATA:
        metadata.pop(field, None)
    if not metadata.get("name"):
        raise ValueError(f"{resource.kind} without metadata.name: podling tracks objects by name "
                         "(generateName is not supported)")
    if not resource.namespaced:
        metadata.pop("namespace", None)
    elif not metadata.get("namespace"):
        if not namespace:
            raise ValueError(f"{resource.kind} {metadata['name']!r} is namespaced and names no namespace")
        metadata["namespace"] = namespace
    annotations = metadata.get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(LAST_APPLIED, None)
        if not annotations:
            del metadata["annotations"]
    if not isinstance(metadata.get("labels") or {}, dict):
        raise ValueError(f"{resource.kind} {metadata['name']!r}: metadata.labels must be a map")
    metadata["labels"] = {**(metadata.get("labels") or {}), APP_LABEL: app}
    if resource.kind == "Secret" and isinstance(desired.get("stringData"), dict):
        data = desired.get("data") or {}
        for name, value in desired.pop("stringData").items():
            data[name] = base64.b64encode(str(value).encode()).decode()
        desired["data"] = data
    return desired


def last_applied(live: Mapping[str, Any]) -> Obj | None:
    """The desired object recorded on ``live`` by its last apply, or None (none, or not JSON)."""
    text = meta.annotations(live).get(LAST_APPLIED)
    if not text:
        return None
    try:
        recorded = json.loads(text)
    except ValueError:
        return None
    return recorded if isinstance(recorded, dict) else None


def ignored_pointers(obj: Mapping[str, Any], rules: Iterable[Mapping[str, Any]]) -> list[str]:
    """The JSON pointers of the ignoreDifferences ``rules`` (an Application's) that apply to ``obj``.

    A rule names a ``kind`` and optionally a ``group``, ``namespace`` and ``name``; a part it
    leaves out matches anything.
    """
    key = key_of(obj)
    pointers: list[str] = []
    for rule in rules:
        if rule.get("kind") != key.kind:
            continue
        if any(rule.get(part) not in (None, value) for part, value in
               (("group", key.group), ("namespace", key.namespace), ("name", key.name))):
            continue
        pointers.extend(rule.get("jsonPointers") or ())
    return pointers


# ---- the plan of one object --------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ObjectPlan:
    """What to do with one object.

    ``patch`` is the body to send: for ``create`` the whole object to POST, for ``update`` a
    strategic merge patch (with the ``resourceVersion`` precondition and the new
    last-applied annotation), for ``unchanged`` None. ``diff`` is a unified diff, in YAML, of
    the live object and what the plan makes of it, both without status and server-owned
    metadata; it is rendered on first use (most plans are never shown). ``views()`` gives
    those two objects themselves (None for the live side of a create).
    """

    key: Key
    action: Action
    patch: Obj | None
    views: Callable[[], tuple[Obj | None, Obj | None]] = dataclasses.field(repr=False)

    @functools.cached_property
    def diff(self) -> str:
        if self.action == "unchanged":
            return ""
        before, after = self.views()
        lines = difflib.unified_diff(_yaml_lines(before), _yaml_lines(after), fromfile=f"live/{self.key}",
                                     tofile=f"desired/{self.key}", lineterm="")
        return "".join(f"{line}\n" for line in lines)


def plan_object(
    *,
    desired: Mapping[str, Any],
    live: Mapping[str, Any] | None,
    last_applied: Mapping[str, Any] | None,
    ignore: Sequence[str] = (),
) -> ObjectPlan:
    """The 3-way plan for ``desired`` (from :func:`desired_object`) against ``live`` (None: absent).

    ``last_applied`` is :func:`last_applied` of ``live``; ``ignore`` holds JSON pointers
    (``/spec/replicas``) never diffed and never patched. See the module docstring.
    """
    key = key_of(desired)
    recorded = json.dumps(_without_annotation(desired), separators=(",", ":"), sort_keys=True)
    wanted = _with_annotation(desired, recorded)
    if live is None:
        return ObjectPlan(key=key, action="create", patch=wanted, views=lambda: (None, _view(wanted)))
    resource = resource_of(desired)
    lookup = _schema(resource.definition)
    before = last_applied
    if ignore:
        wanted, live, before = (_without_pointers(side, ignore) for side in (wanted, live, before))
    patch = _map_patch(wanted, None, live, before, lookup)
    if patch:  # defaults only ever hide differences: worth computing only when there are some
        defaulted = _clone(wanted)
        apply_defaults(kind=resource.kind, obj=defaulted)
        patch = _map_patch(wanted, defaulted, live, before, lookup)
    base = live
    if not patch:
        return ObjectPlan(key=key, action="unchanged", patch=None, views=lambda: (_view(base), _view(base)))
    patch.setdefault("metadata", {})["resourceVersion"] = (live.get("metadata") or {}).get("resourceVersion")

    def views() -> tuple[Obj | None, Obj | None]:
        return _view(base), _view(strategic_merge_patch(dict(base), patch, schema=lookup.lookup))

    return ObjectPlan(key=key, action="update", patch=patch, views=views)


class _Place:
    """A place in a kind's schema with its patch metadata, memoised: planning asks the same
    questions of the same places for every object of a kind."""

    __slots__ = ("lookup", "_fields", "_items", "merges", "replaces", "retains_keys", "merge_key")

    def __init__(self, lookup: SchemaLookup) -> None:
        self.lookup = lookup
        self._fields: dict[str, _Place] = {}
        self._items: _Place | None = None
        strategies = lookup.strategies
        self.merges = "merge" in strategies
        self.replaces = "replace" in strategies
        self.retains_keys = "retainKeys" in strategies
        self.merge_key = lookup.merge_key

    def field(self, name: str) -> _Place:
        place = self._fields.get(name)
        if place is None:
            place = _Place(self.lookup.field(name))
            if len(self._fields) < _MEMO_FIELDS:  # map keys (labels, data) are unbounded: memoise a few
                self._fields[name] = place
        return place

    def items(self) -> _Place:
        if self._items is None:
            self._items = _Place(self.lookup.items())
        return self._items


_MEMO_FIELDS = 256


class _Nowhere(_Place):
    """A place no schema describes (inside an atomic list): maps merge, lists are atomic."""

    def __init__(self) -> None:
        self.merges = self.replaces = self.retains_keys = False
        self.merge_key = None

    def field(self, name: str) -> _Place:
        return self

    def items(self) -> _Place:
        return self


_UNDESCRIBED = _Nowhere()


@functools.cache
def _schema(definition: str) -> _Place:
    return _Place(SchemaLookup(schema.definitions(), definition))


class _Absent:
    """A key missing from a map (distinct from any JSON value)."""


_ABSENT = _Absent()


def _map_patch(want: Mapping[str, Any], defaulted: Any, live: Mapping[str, Any], before: Any, place: _Place) -> Obj:
    """The strategic merge patch turning ``live`` into ``want`` where ``want`` (or ``before``) speaks.

    ``defaulted`` is ``want`` with the server's defaults (None: compare ``want`` as it is);
    ``before`` is the last-applied value at this place (anything but a map means none).
    """
    patch: Obj = {}
    defaulted = defaulted if isinstance(defaulted, dict) else want
    for key, value in want.items():
        current = live.get(key, _ABSENT)
        if current is _ABSENT:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(current, dict) and not place.field(key).replaces:
            field = place.field(key)
            previous = before.get(key) if isinstance(before, dict) else None
            sub = _map_patch(value, defaulted.get(key), current, previous, field)
            if sub:
                if field.retains_keys:
                    sub[_RETAIN_KEYS] = sorted(value)
                patch[key] = sub
        elif isinstance(value, list) and isinstance(current, list):
            previous = before.get(key) if isinstance(before, dict) else None
            _list_patch(patch, key, value, defaulted.get(key), current, previous, place.field(key))
        elif value != current and defaulted.get(key, value) != current:
            patch[key] = value
    if isinstance(before, dict):
        for key in before:
            if key not in want and key in live:
                patch[key] = None
    return patch


def _list_patch(patch: Obj, key: str, want: list, defaulted: Any, live: list, before: Any, place: _Place) -> None:
    """Add to ``patch`` what turns list ``live`` into ``want``, by the list's patch strategy."""
    if place.merges:
        merge_key = place.merge_key
        if merge_key and _keyed(want, merge_key) and _keyed(live, merge_key):
            _keyed_list_patch(patch, key, want, defaulted, live, before, place)
            return
        if not any(isinstance(item, (dict, list)) for item in (*want, *live)):  # a set of scalars
            missing = [item for item in want if item not in live]
            doomed = [item for item in before if item not in want and item in live] \
                if isinstance(before, list) else []
            if missing:
                patch[key] = missing
            if doomed:
                patch[_DELETE_FROM + key] = doomed
            return
    if not _same_atomic_list(want, defaulted, live, before):
        patch[key] = want


def _same_atomic_list(want: list, defaulted: Any, live: list, before: Any) -> bool:
    """Whether an atomic list needs no patch: equal to live once defaulted, or item by item.

    Item by item, a map item compares as a map does (keys only live has are no difference,
    unless the last-applied item at that place had them), so defaults the server sets inside
    items without ``podling.api.defaults`` knowing (a LimitRange's ``defaultRequest``) are no
    noise. Items are matched by position: an atomic list has no other identity.
    """
    if want == live:
        return True
    candidate = defaulted if isinstance(defaulted, list) else want
    if candidate == live:
        return True
    if len(candidate) != len(live):
        return False
    previous = before if isinstance(before, list) and len(before) == len(want) else [None] * len(want)
    for item, item_defaulted, current, earlier in zip(want, candidate, live, previous, strict=False):
        if isinstance(item, dict) and isinstance(current, dict):
            if _map_patch(item, item_defaulted, current, earlier, _UNDESCRIBED):
                return False
        elif isinstance(item, list) and isinstance(current, list):
            if not _same_atomic_list(item, item_defaulted, current, earlier):
                return False
        elif item_defaulted != current:
            return False
    return True


def _keyed(items: list, merge_key: str) -> bool:
    """Every item is a map with a distinct scalar ``merge_key``: the list can merge item by item."""
    seen = set()
    for item in items:
        if not isinstance(item, dict) or isinstance(item.get(merge_key, []), (dict, list)):
            return False
        seen.add(item[merge_key])
    return len(seen) == len(items)


def _by_key(items: Any, merge_key: str) -> dict[Any, Any]:
    if not isinstance(items, list):
        return {}
    return {item[merge_key]: item for item in items if isinstance(item, dict) and merge_key in item}


def _keyed_list_patch(patch: Obj, key: str, want: list, defaulted: Any, live: list, before: Any,
                      place: _Place) -> None:
    merge_key, items_place, retain = place.merge_key, place.items(), place.retains_keys
    assert merge_key is not None
    current, defaults, previous = _by_key(live, merge_key), _by_key(defaulted, merge_key), _by_key(before, merge_key)
    changes: list[Obj] = []
    for item in want:
        ident = item[merge_key]
        if ident not in current:
            changes.append(item)
            continue
        sub = _map_patch(item, defaults.get(ident), current[ident], previous.get(ident), items_place)
        if sub:
            if retain:
                sub[_RETAIN_KEYS] = sorted(item)
            changes.append({merge_key: ident, **sub})
    wanted = [item[merge_key] for item in want]
    kept = set(wanted)
    deletions = [{merge_key: ident, "$patch": "delete"} for ident in previous
                 if ident not in kept and ident in current]
    reordered = [ident for ident in current if ident in kept] != [ident for ident in wanted if ident in current]
    if changes or deletions:
        patch[key] = changes + deletions
    if changes or deletions or reordered:
        patch[_SET_ORDER + key] = [{merge_key: ident} for ident in wanted]


# ---- helpers on documents ----------------------------------------------------------------


def _without_nulls(value: Any) -> Any:
    """A deep copy without ``null`` map members (the API server's decoder drops them too)."""
    if isinstance(value, Mapping):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _clone(value: Any) -> Any:
    """A deep copy of a JSON document (several times faster than ``copy.deepcopy``)."""
    if isinstance(value, dict):
        return {key: _clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clone(item) for item in value]
    return value


def _without_annotation(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    if LAST_APPLIED not in meta.annotations(obj):
        return obj
    annotations = {k: v for k, v in meta.annotations(obj).items() if k != LAST_APPLIED}
    metadata = {k: v for k, v in obj["metadata"].items() if k != "annotations"}
    if annotations:
        metadata["annotations"] = annotations
    return {**obj, "metadata": metadata}


def _with_annotation(obj: Mapping[str, Any], recorded: str) -> Obj:
    metadata = dict(obj.get("metadata") or {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), LAST_APPLIED: recorded}
    return {**obj, "metadata": metadata}


def _pointer_tokens(pointer: str) -> list[str]:
    if not pointer.startswith("/") or pointer == "/":
        raise ValueError(f"ignoreDifferences pointer {pointer!r} must name a field, such as /spec/replicas")
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer[1:].split("/")]


def _without_pointers(obj: Any, pointers: Sequence[str]) -> Any:
    """A copy of ``obj`` without the fields the JSON pointers name (a pointer to nothing is no error)."""
    if not isinstance(obj, Mapping):
        return obj
    doc = _clone(obj)
    for pointer in pointers:
        *parents, last = _pointer_tokens(pointer)
        node: Any = doc
        for token in parents:
            node = _step(node, token)
        if isinstance(node, dict):
            node.pop(last, None)
        elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
            del node[int(last)]
    return doc


def _step(node: Any, token: str) -> Any:
    if isinstance(node, dict):
        return node.get(token)
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)]
    return None


def _view(obj: Mapping[str, Any] | None) -> Obj | None:
    """``obj`` as people compare it: no status, no server-owned metadata, no last-applied copy."""
    if obj is None:
        return None
    view = {key: value for key, value in obj.items() if key != "status"}
    metadata = {key: value for key, value in (obj.get("metadata") or {}).items() if key not in _SERVER_METADATA}
    annotations = {key: value for key, value in (metadata.pop("annotations", None) or {}).items()
                   if key != LAST_APPLIED}
    if annotations:
        metadata["annotations"] = annotations
    view["metadata"] = metadata
    return view


def _yaml_lines(obj: Obj | None) -> list[str]:
    """``obj`` as block YAML with sorted keys; text with newlines as literal blocks, as people write it."""
    if obj is None:
        return []
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.representer.add_representer(str, _represent_str)
    out = io.StringIO()
    yaml.dump(obj, out)
    return out.getvalue().splitlines()


def _represent_str(representer: Any, text: str) -> Any:
    return representer.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


# ---- order and prune ---------------------------------------------------------------------


def sync_wave(obj: Mapping[str, Any]) -> int:
    """The ``podling.io/sync-wave`` annotation (default 0); ValueError if it is not an integer."""
    value = meta.annotations(obj).get(SYNC_WAVE)
    if value is None:
        return 0
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{key_of(obj)}: annotation {SYNC_WAVE} must be an integer, not {value!r}") from None


def apply_order(obj: Mapping[str, Any]) -> tuple[int, int, str, str, str]:
    """Sort key of the safe apply order: (wave, kind step, kind, namespace, name).

    Objects with equal (wave, kind step) may be applied concurrently; prune goes in reverse.
    """
    key = key_of(obj)
    return sync_wave(obj), _KIND_STEPS.get(key.kind, _OTHER_KINDS), key.kind, key.namespace, key.name


def owned_by(obj: Mapping[str, Any], *, app: str) -> bool:
    """True only if podling created ``obj`` for ``app``: what prune may delete.

    It carries the app's label and a last-applied copy that names this very object and this
    app (a copied or hand-written annotation does not pass), and no controller owns it (a
    controller copies labels and annotations to what it creates).
    """
    if meta.labels(obj).get(APP_LABEL) != app or meta.controller_of(obj) is not None:
        return False
    recorded = last_applied(obj)
    return recorded is not None and key_of(recorded) == key_of(obj) and meta.labels(recorded).get(APP_LABEL) == app


def plan_prune(*, app: str, live_owned: Iterable[Mapping[str, Any]], desired_keys: Iterable[Key]) -> list[Obj]:
    """The live objects to delete, in prune order: owned by ``app`` (:func:`owned_by`), gone from
    git, and not already being deleted."""
    keep = set(desired_keys)
    doomed = [obj for obj in live_owned
              if key_of(obj) not in keep and owned_by(obj, app=app)
              and not (obj.get("metadata") or {}).get("deletionTimestamp")]
    return sorted(doomed, key=prune_order, reverse=True)


def prune_order(obj: Mapping[str, Any]) -> tuple[int, int, str, str, str]:
    """:func:`apply_order` of a live object, reading a wave annotation edited into nonsense as 0.

    Prune sorts by it in reverse; objects with equal (wave, kind step) may go concurrently.
    """
    try:
        return apply_order(obj)
    except ValueError:
        key = key_of(obj)
        return 0, _KIND_STEPS.get(key.kind, _OTHER_KINDS), key.kind, key.namespace, key.name
