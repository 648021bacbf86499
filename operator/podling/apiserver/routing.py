"""URL → (resource, namespace, name, subresource, verb): the Kubernetes REST path grammar.

Pure and table-driven: every path shape Kubernetes serves for a resource is recognised here
from the resource table, and nothing else is, so an unknown path is always a 404 with the
path named.

    /api/v1/PLURAL[/NAME[/SUB]]                        cluster-scoped, or all namespaces
    /api/v1/namespaces/NS/PLURAL[/NAME[/SUB]]          namespaced
    /apis/GROUP/VERSION/...                            the same below a group
    /api/v1/watch/...                                  legacy watch prefix (= ?watch=true)
"""

from __future__ import annotations

import dataclasses

from podling.api.resources import Resource, find


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    resource: Resource
    namespace: str | None  # None: cluster-scoped, or a list/watch across all namespaces
    name: str  # "" for a collection
    subresource: str
    legacy_watch: bool = False


def parse(path: str) -> Target | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    legacy_watch = bool(rest) and rest[0] == "watch"
    if legacy_watch:
        rest = rest[1:]
    if not rest:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3:
        resource = find(group=group, version=version, plural=rest[2])
        if resource is not None and resource.namespaced:
            return _target(resource, rest[1], rest[3:], legacy_watch)
    resource = find(group=group, version=version, plural=rest[0])
    if resource is None:
        return None
    return _target(resource, None, rest[1:], legacy_watch)


def _target(resource: Resource, namespace: str | None, rest: list[str], legacy_watch: bool) -> Target | None:
    if len(rest) > 2:
        return None
    name = rest[0] if rest else ""
    subresource = rest[1] if len(rest) == 2 else ""
    if subresource and subresource not in resource.subresources:
        return None
    if resource.namespaced and namespace is None and name:
        return None  # a namespaced object is named only inside its namespace
    return Target(resource, namespace, name, subresource, legacy_watch)


def verb(method: str, target: Target, *, watch: bool) -> str | None:
    """The Kubernetes verb of a request, or None when the method is not allowed there."""
    collection = not target.name
    if method == "GET":
        if collection:
            return "watch" if watch or target.legacy_watch else "list"
        return "watch" if target.legacy_watch else "get"
    if method == "POST":
        if collection:
            return "create"
        return "create" if target.subresource in ("binding", "exec") else None
    if collection:
        return "deletecollection" if method == "DELETE" else None
    return {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
