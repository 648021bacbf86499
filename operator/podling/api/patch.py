"""The three PATCH formats of the Kubernetes API, applied to JSON objects held as dicts.

Invariant: every function here is pure. It never mutates its arguments, returns a fresh
document that shares no mutable part with them, and either applies the whole patch or raises
:class:`PatchError` naming the place (a JSON path such as ``.spec.containers[name=web].env``)
that is wrong; there is no half-applied result.

* ``application/merge-patch+json`` (RFC 7386): objects merge key by key, ``null`` deletes a
  key, anything else (lists included) replaces.
* ``application/json-patch+json`` (RFC 6902): a list of operations, applied in order by the
  ``jsonpatch`` library; the error names the operation that failed.
* ``application/strategic-merge-patch+json``: what ``kubectl apply``, ``kubectl patch`` and
  client-go send. It is a merge patch whose list handling comes from the schema: a list whose
  property says ``x-kubernetes-patch-strategy: merge`` merges item by item, matched on
  ``x-kubernetes-patch-merge-key`` (containers by ``name``, ports by ``containerPort``) or, for
  scalars, as a set; every other list is replaced. Directives in the patch:

  - ``$patch: replace`` in a map replaces the map; as an item of a merging list it replaces
    the list with the patch's other items. ``$patch: delete`` in a map empties it (Kubernetes
    leaves ``{}``, although its docs say the map is deleted; ``null`` deletes the key); as an
    item it deletes every item with that merge key. ``$patch: merge`` states the default.
  - ``$deleteFromPrimitiveList/<list>: [...]`` removes those scalars from a list.
  - ``$setElementOrder/<list>: [...]`` orders a merged list: the items it names come in its
    order, the others keep their places in the live list, interleaved as Kubernetes does.
  - ``$retainKeys: [...]`` (sent for ``retainKeys`` fields such as a Deployment's
    ``strategy`` or a volume) clears every key of the live map that it does not name.

Where Kubernetes' implementation (k8s.io/apimachinery/pkg/util/strategicpatch) is undefined,
quirky or random, podling picks the plain reading and keeps it: ``$patch: merge`` is accepted
as the default instead of refused; a ``$patch: replace`` map under a key the object lacks is
added instead of dropped; every value taken whole from the patch is cleaned of directives and
``null`` members the same way wherever it lands (Kubernetes' typed decoding drops them later);
a scalar a patch both adds and deletes ends up deleted (Go's map order decides in Kubernetes);
``$setElementOrder`` for a list that does not merge is an error. Keys starting with ``$`` that
are no directive are ignored, as Kubernetes promises for directives a server does not know.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import jsonpatch

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_FROM = "$deleteFromPrimitiveList/"
_LIST_DIRECTIVES = ("delete", "replace")  # an item carrying one of these is not data


class PatchError(ValueError):
    """A patch that cannot be applied; the message says where and why."""


# ---- RFC 7386 and RFC 6902 -------------------------------------------------------------------


def merge_patch(original: dict, patch: dict) -> dict:
    """``original`` with the JSON merge patch ``patch`` applied (RFC 7386)."""
    if not isinstance(patch, dict):
        raise PatchError("a merge patch must be a JSON object")
    return _merge_rfc7386(copy.deepcopy(original), patch)


def _merge_rfc7386(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge_rfc7386(target.get(key), value)
    return target


def json_patch(original: dict, ops: list) -> dict:
    """``original`` with the JSON patch operations ``ops`` applied in order (RFC 6902)."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a JSON array of operations")
    document: Any = copy.deepcopy(original)
    for index, op in enumerate(ops):
        if not isinstance(op, dict):
            raise PatchError(f"JSON patch operation {index} is not a JSON object: {op!r}")
        try:
            document = jsonpatch.JsonPatch([op]).apply(document, in_place=True)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as err:
            raise PatchError(
                f"JSON patch operation {index} ({op.get('op')} {op.get('path')!r}) failed: {err}"
            ) from None
    if not isinstance(document, dict):
        raise PatchError("the JSON patch turned the object into something that is not a JSON object")
    return document


# ---- schema lookup ---------------------------------------------------------------------------


class SchemaLookup:
    """Where a strategic merge patch finds its metadata: one place in a set of JSON schemas.

    Built for a definition, ``SchemaLookup(defs=schema.definitions(),
    root_definition="io.k8s.api.core.v1.Pod")``, then walked with :meth:`field` and
    :meth:`items`; ``$ref`` (``#/$defs/NAME``) is followed on the way. A place the schemas do
    not describe has no metadata: its lists are replaced and its maps merged.
    """

    __slots__ = ("_defs", "_schema")

    def __init__(self, defs: Mapping[str, Any], root_definition: str) -> None:
        if root_definition not in defs:
            raise KeyError(f"no schema definition named {root_definition!r}")
        self._defs = defs
        self._schema: Mapping[str, Any] = {"$ref": f"#/$defs/{root_definition}"}

    def _at(self, schema: Any) -> SchemaLookup:
        node = object.__new__(SchemaLookup)
        node._defs = self._defs
        node._schema = schema if isinstance(schema, Mapping) else {}
        return node

    def _chain(self) -> Iterator[Mapping[str, Any]]:
        """This place's schema, then each definition its ``$ref`` chain leads to."""
        schema = self._schema
        yield schema
        while "$ref" in schema:
            schema = self._defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
            yield schema

    def _resolved(self) -> Mapping[str, Any]:
        *_, last = self._chain()
        return last

    def _annotation(self, name: str) -> Any:
        return next((schema[name] for schema in self._chain() if name in schema), None)

    def field(self, name: str) -> SchemaLookup:
        """The place of property ``name`` of the object here (or of its map values)."""
        schema = self._resolved()
        properties = schema.get("properties") or {}
        return self._at(properties[name] if name in properties else schema.get("additionalProperties"))

    def items(self) -> SchemaLookup:
        """The place of the items of the list here."""
        return self._at(self._resolved().get("items"))

    @property
    def strategies(self) -> frozenset[str]:
        """``x-kubernetes-patch-strategy`` as a set: ``merge``, ``retainKeys``, ``replace``."""
        value = self._annotation("x-kubernetes-patch-strategy") or ""
        return frozenset(part.strip() for part in value.split(",") if part.strip())

    @property
    def merge_key(self) -> str | None:
        """``x-kubernetes-patch-merge-key``: the field that identifies an item of the list here."""
        return self._annotation("x-kubernetes-patch-merge-key")


# ---- strategic merge patch -------------------------------------------------------------------


class _Gone:
    """What a value becomes when the patch deletes it outright."""


_GONE = _Gone()


def strategic_merge_patch(original: dict, patch: dict, *, schema: SchemaLookup) -> dict:
    """``original`` with the strategic merge patch ``patch`` applied; ``schema`` is the object's."""
    if not isinstance(original, dict):
        raise PatchError("the object to patch is not a JSON object")
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    return _merge_map(copy.deepcopy(original), patch, schema, path="")


def _fail(path: str, message: str) -> PatchError:
    return PatchError(f"{path or '.'}: {message}")


def _merge_map(original: dict, patch: Mapping[str, Any], schema: SchemaLookup, *, path: str) -> dict:
    """Merge ``patch`` into ``original``, which this call owns and may change."""
    directive = patch.get(_DIRECTIVE)
    if directive == "delete":
        return {}
    if directive == "replace":
        return _merge_map({}, {k: v for k, v in patch.items() if k != _DIRECTIVE}, schema, path=path)
    if directive not in (None, "merge"):
        raise _fail(path, f"unknown $patch directive {directive!r} (want replace, delete or merge)")
    _retain_keys(original, patch, path=path)

    named = [key for key in patch if not key.startswith("$")]
    reordered = [key[len(_SET_ORDER):] for key in patch if key.startswith(_SET_ORDER)]
    for key in dict.fromkeys([*named, *reordered]):
        where = f"{path}.{key}"
        field = schema.field(key)
        order = patch.get(_SET_ORDER + key)
        if key not in patch:  # only reordered
            if key in original:
                original[key] = _merge_list(_as_list(original[key], where), [], field, order=order, path=where)
            continue
        value, current = patch[key], original.get(key)
        if value is None:
            original.pop(key, None)
        elif isinstance(current, dict) and isinstance(value, dict) and "replace" not in field.strategies:
            original[key] = _merge_map(current, value, field, path=where)
        elif isinstance(current, list) and isinstance(value, list):
            original[key] = _merge_list(current, value, field, order=order, path=where)
        elif (fresh := _fresh(value, field, order=order, path=where)) is _GONE:
            original.pop(key, None)
        else:
            original[key] = fresh

    for key, doomed in patch.items():
        if key.startswith(_DELETE_FROM):
            _delete_from_list(original, key[len(_DELETE_FROM):], doomed, path=f"{path}.{key}")
    return original


def _fresh(value: Any, schema: SchemaLookup, *, order: Any = None, path: str) -> Any:
    """A value taken whole from the patch, with its directives applied and ``null`` members gone."""
    if isinstance(value, dict):
        return _GONE if value.get(_DIRECTIVE) == "delete" else _merge_map({}, value, schema, path=path)
    if isinstance(value, list):
        return _merge_list([], value, schema, order=order, path=path)
    return value


def _retain_keys(original: dict, patch: Mapping[str, Any], *, path: str) -> None:
    if _RETAIN_KEYS not in patch:
        return
    keep = patch[_RETAIN_KEYS]
    if not isinstance(keep, list) or not all(isinstance(key, str) for key in keep):
        raise _fail(path, f"$retainKeys must be a list of field names, not {keep!r}")
    stray = [key for key, value in patch.items() if value is not None and not key.startswith("$") and key not in keep]
    if stray:
        raise _fail(path, f"{', '.join(stray)} set by the patch but missing from its $retainKeys {keep}")
    for key in [key for key in original if key not in keep]:
        del original[key]


def _delete_from_list(original: dict, key: str, doomed: Any, *, path: str) -> None:
    if not isinstance(doomed, list) or any(isinstance(item, (dict, list)) for item in doomed):
        raise _fail(path, "must be a list of scalars")
    if isinstance(original.get(key), list):
        original[key] = [item for item in original[key] if item not in doomed]


def _as_list(value: Any, path: str) -> list:
    if not isinstance(value, list):
        raise _fail(path, "$setElementOrder names a field that is not a list")
    return value


def _merge_list(original: list, patch: list, schema: SchemaLookup, *, order: Any, path: str) -> list:
    """Merge list ``patch`` into ``original`` (owned by this call) as the schema says."""
    items = schema.items()
    if "merge" not in schema.strategies:
        if order is not None:
            raise _fail(path, "$setElementOrder given for a list without x-kubernetes-patch-strategy: merge")
        return [_fresh(item, items, path=f"{path}[{index}]")
                for index, item in enumerate(patch) if not _is_list_directive(item)]
    if order is not None and not isinstance(order, list):
        raise _fail(path, f"$setElementOrder must be a list, not {order!r}")
    everything = [*original, *patch, *(order or ())]
    if not everything:
        return []
    if any(isinstance(item, list) for item in everything):
        raise _fail(path, "lists of lists cannot be merged")
    if all(isinstance(item, dict) for item in everything):
        return _merge_list_of_maps(original, patch, items, order=order, path=path, key=schema.merge_key)
    if any(isinstance(item, dict) for item in everything):
        raise _fail(path, "cannot merge a list that mixes objects and scalars")
    merged = list(dict.fromkeys([*original, *patch]))
    return _arranged(merged, ranked=patch, order=order, live=original, ident=lambda item: item, path=path)


def _is_list_directive(item: Any) -> bool:
    return isinstance(item, dict) and item.get(_DIRECTIVE) in _LIST_DIRECTIVES


def _merge_list_of_maps(
    original: list, patch: list, items: SchemaLookup, *, order: list | None, path: str, key: str | None
) -> list:
    if not key:
        raise _fail(path, "cannot merge a list of objects without x-kubernetes-patch-merge-key")

    def ident(item: dict) -> Hashable:
        value = item.get(key)
        if key not in item or isinstance(value, (dict, list)):
            raise _fail(path, f"list item {item!r} has no merge key {key!r}")
        return value

    def at(value: Hashable) -> str:
        return f"{path}[{key}={value}]"

    data, replace, merged = [], False, list(original)
    for item in patch:
        directive = item.get(_DIRECTIVE)
        if directive == "delete":
            doomed = ident(item)
            merged = [kept for kept in merged if ident(kept) != doomed]
        elif directive == "replace":
            replace = True
        elif directive in (None, "merge"):
            data.append(item)
        else:
            raise _fail(path, f"unknown $patch directive {directive!r} in list item {item!r}")

    # Items are placed by the live list after the deletions. (With $setElementOrder, Kubernetes
    # reads a live list that deleteMatchingEntries has shifted in place, sharing Go's slice: a
    # server-only item next to a deleted one may land elsewhere there. The items are the same.)
    live = list(merged)
    if replace:
        merged = [_merge_map({}, item, items, path=at(ident(item))) for item in data]
    else:
        position: dict[Hashable, int] = {}
        for index, item in enumerate(merged):
            position.setdefault(ident(item), index)
        for item in data:
            value = ident(item)
            if value in position:
                merged[position[value]] = _merge_map(merged[position[value]], item, items, path=at(value))
            else:
                position[value] = len(merged)
                merged.append(_merge_map({}, item, items, path=at(value)))
    return _arranged(merged, ranked=data, order=order, live=live, ident=ident, path=path)


def _arranged(
    merged: list,
    *,
    ranked: Sequence[Any],
    order: Sequence[Any] | None,
    live: Sequence[Any],
    ident: Callable[[Any], Hashable],
    path: str,
) -> list:
    """``merged`` in Kubernetes' order: what the patch names in its order, the rest where it was.

    The items named by ``$setElementOrder`` (or, without one, by the patch list) come in that
    order; the others keep their order from the live list. The two runs are interleaved by
    their places in the live list: an item only the patch knows goes before the live items
    not yet placed (apimachinery's mergeSortedSlice).
    """
    named = [ident(item) for item in ranked]
    if order is not None:
        wanted = [ident(item) for item in order]
        remaining = iter(wanted)
        if not all(value in remaining for value in named):
            raise _fail(path, f"the order of the patch list {named} does not match $setElementOrder {wanted}")
        named = wanted
    rank: dict[Hashable, int] = {}
    for index, value in enumerate(named):
        rank.setdefault(value, index)
    place: dict[Hashable, int] = {}
    for index, item in enumerate(live):
        place.setdefault(ident(item), index)

    ours = sorted((item for item in merged if ident(item) in rank), key=lambda item: rank[ident(item)])
    theirs = [item for item in merged if ident(item) not in rank]
    result: list = []
    i = j = 0
    while i < len(theirs) and j < len(ours):
        left, right = place.get(ident(theirs[i])), place.get(ident(ours[j]))
        if left is not None and right is not None and left < right:
            result.append(theirs[i])
            i += 1
        else:
            result.append(ours[j])
            j += 1
    return result + theirs[i:] + ours[j:]
