"""Discovery documents, all derived from the resource table.

Legacy discovery (``APIVersions``, ``APIGroupList``, ``APIResourceList``) and aggregated
discovery (``apidiscovery.k8s.io/v2`` ``APIGroupDiscoveryList``, which kubectl 1.32 asks for
first) describe the same resources; both are built once, since the table never changes at
run time.
"""

from __future__ import annotations

import functools
from typing import Any

from podling.api.resources import Resource, group_versions, in_group_version
from podling import __version__

Obj = dict[str, Any]

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

_SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "binding": ["create"],
    "finalize": ["update"],
    "log": ["get"],
    "exec": ["create", "get"],
    "eviction": ["create"],
    "proxy": ["create", "delete", "get", "patch", "update"],
}

_SUBRESOURCE_KIND = {
    "scale": ("autoscaling", "v1", "Scale"),
    "binding": ("", "v1", "Binding"),
    "eviction": ("policy", "v1", "Eviction"),
    "exec": ("", "v1", "PodExecOptions"),
    "log": ("", "v1", "Pod"),
    "proxy": ("", "v1", "NodeProxyOptions"),
}


def version() -> Obj:
    """``/version``: a Kubernetes version kubectl 1.32 accepts without skew warnings."""
    return {
        "major": "1",
        "minor": "32",
        "gitVersion": f"v1.32.0+podling.{__version__}",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-11-23T00:00:00Z",
        "goVersion": "n/a (podling is Python)",
        "compiler": "cpython",
        "platform": "linux/amd64",
    }


def _groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for group, ver in group_versions():
        groups.setdefault(group, []).append(ver)
    return groups


def _api_resource(r: Resource) -> list[Obj]:
    main = {
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        main["shortNames"] = list(r.short_names)
    if r.categories:
        main["categories"] = list(r.categories)
    subs = []
    for sub in r.subresources:
        group, ver, kind = _SUBRESOURCE_KIND.get(sub, (r.group, r.version, r.kind))
        entry = {"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced, "kind": kind,
                 "verbs": _SUBRESOURCE_VERBS[sub]}
        if group != r.group or ver != r.version:
            entry["group"], entry["version"] = group, ver
        subs.append(entry)
    return [main, *subs]


@functools.cache
def api_versions() -> Obj:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}


def _api_group(group: str, versions: list[str]) -> Obj:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


@functools.cache
def api_group_list() -> Obj:
    groups = [_api_group(g, vs) for g, vs in _groups().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str) -> Obj | None:
    versions = _groups().get(group)
    if not group or versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_api_group(group, versions)}


@functools.cache
def api_resource_list(group: str, ver: str) -> Obj | None:
    resources = in_group_version(group, ver)
    if not resources:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{ver}" if group else ver,
        "resources": [entry for r in resources for entry in _api_resource(r)],
    }


def _discovery_resource(r: Resource) -> Obj:
    entry: Obj = {
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": "Namespaced" if r.namespaced else "Cluster",
        "singularResource": r.singular,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    if r.subresources:
        entry["subresources"] = []
        for sub in r.subresources:
            group, ver, kind = _SUBRESOURCE_KIND.get(sub, (r.group, r.version, r.kind))
            entry["subresources"].append({
                "subresource": sub,
                "responseKind": {"group": group, "version": ver, "kind": kind},
                "verbs": _SUBRESOURCE_VERBS[sub],
            })
    return entry


@functools.cache
def aggregated(*, legacy: bool, api_version: str = "apidiscovery.k8s.io/v2") -> Obj:
    """``/api`` (legacy=True: the core group) or ``/apis`` as an APIGroupDiscoveryList."""
    items = []
    for group, versions in _groups().items():
        if bool(group) == legacy:
            continue
        items.append({
            "metadata": {"name": group, "creationTimestamp": None},
            "versions": [
                {"version": v, "resources": [_discovery_resource(r) for r in in_group_version(group, v)],
                 "freshness": "Current"}
                for v in versions
            ],
        })
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}
