"""A pod's DNS configuration: what its /etc/resolv.conf says (the kubelet's pkg/kubelet/network/dns).

By ``spec.dnsPolicy``, as the kubelet decides it:

* ``ClusterFirst`` (the default) and ``ClusterFirstWithHostNet``: the cluster DNS
  (``--cluster-dns``) as nameserver, searching ``NS.svc.DOMAIN svc.DOMAIN DOMAIN`` and then
  the node's search domains, with ``options ndots:5``. Without ``--cluster-dns``, and for a
  hostNetwork pod under ``ClusterFirst``, it falls back to ``Default``, as the kubelet does.
* ``Default``: the node's resolver configuration (``--resolv-conf``, read on every call).
* ``None``: nothing but ``spec.dnsConfig``.

``spec.dnsConfig`` is merged into any of them: its nameservers and searches come after
(duplicates dropped), its options replace those of the same name. The kubelet's limits
apply: 3 nameservers, 32 search domains.

Invariant: :func:`pod_dns` is a pure function of the pod, the configuration and the node's
resolv.conf; :func:`resolv_conf` renders its result as the file's text. The kubelet
bind-mounts that file read-only at /etc/resolv.conf in every container of the pod: on a
user-defined Docker network Docker's embedded DNS (127.0.0.11) would own the file otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Obj = Mapping[str, Any]
DNSSettings = dict[str, list[str]]  # {"servers": [...], "searches": [...], "options": ["ndots:5", ...]}

MAX_NAMESERVERS = 3
MAX_SEARCHES = 32


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClusterDNSConfig:
    servers: tuple[str, ...] = ("10.88.128.10",)  # --cluster-dns; empty: ClusterFirst falls back to Default
    domain: str = "cluster.local"  # --cluster-domain
    resolv_conf: Path = Path("/etc/resolv.conf")  # --resolv-conf: the node's, for dnsPolicy Default


def read_resolv_conf(path: Path) -> DNSSettings:
    """A resolv.conf's nameservers, search domains (the last ``search`` line wins) and options."""
    settings: DNSSettings = {"servers": [], "searches": [], "options": []}
    try:
        text = path.read_text()
    except OSError:
        return settings
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            settings["servers"].append(fields[1])
        elif fields[0] == "search":
            settings["searches"] = fields[1:]
        elif fields[0] == "options":
            settings["options"] += fields[1:]
    return settings


def pod_dns(pod: Obj, *, config: ClusterDNSConfig) -> DNSSettings:
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    cluster = policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not spec.get("hostNetwork"))
    if policy == "None":
        settings: DNSSettings = {"servers": [], "searches": [], "options": []}
    elif cluster and config.servers:
        node = read_resolv_conf(config.resolv_conf)
        namespace = (pod.get("metadata") or {}).get("namespace") or "default"
        domain = config.domain.strip(".")
        settings = {"servers": list(config.servers),
                    "searches": _unique([f"{namespace}.svc.{domain}", f"svc.{domain}", domain, *node["searches"]]),
                    "options": ["ndots:5"]}
    else:
        settings = read_resolv_conf(config.resolv_conf)
    extra = spec.get("dnsConfig") or {}
    settings["servers"] = _unique([*settings["servers"], *(extra.get("nameservers") or ())])[:MAX_NAMESERVERS]
    settings["searches"] = _unique([*settings["searches"], *(extra.get("searches") or ())])[:MAX_SEARCHES]
    settings["options"] = _merge_options(settings["options"], extra.get("options") or ())
    return settings


def resolv_conf(settings: Mapping[str, list[str]]) -> str:
    lines = [f"nameserver {server}" for server in settings.get("servers") or ()]
    if settings.get("searches"):
        lines.append("search " + " ".join(settings["searches"]))
    if settings.get("options"):
        lines.append("options " + " ".join(settings["options"]))
    return "".join(f"{line}\n" for line in lines)


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _merge_options(base: list[str], extra: Any) -> list[str]:
    """``name`` / ``name:value`` options; a pod's option replaces the one of the same name."""
    merged: dict[str, str] = {}
    for option in base:
        name, sep, value = option.partition(":")
        merged[name] = f"{name}:{value}" if sep else name
    for option in extra:
        name, value = str(option.get("name") or ""), option.get("value")
        if name:
            merged[name] = f"{name}:{value}" if value is not None else name
    return list(merged.values())
