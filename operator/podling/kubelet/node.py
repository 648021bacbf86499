"""The kubelet's Node: registration, status every ``status_period`` and a Lease heartbeat.

Invariants:

* The Node exists with this kubelet's capacity, labels, addresses and nodeInfo before any
  pod runs; registering again (a restarted kubelet) updates it in place and never touches
  what users own (spec.unschedulable, taints, their own labels).
* The Lease ``kube-node-lease/NODE`` is renewed every ``lease_period`` (10 s): it is the
  heartbeat the node lifecycle controller reads. Node status (conditions with Ready, and
  everything above) is written every ``status_period`` (10 s). Both keep going through API
  outages: a failed write is logged and retried at the next tick.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import platform
from pathlib import Path
from typing import Any

from podling import __version__
from podling.api import meta
from podling.api.resources import find
from podling.client.http import ApiClient, is_not_found

log = logging.getLogger("podling.kubelet.node")

Obj = dict[str, Any]
_NODES = find(group="", version="v1", plural="nodes")
_LEASES = find(group="coordination.k8s.io", version="v1", plural="leases")
assert _NODES is not None and _LEASES is not None
KUBELET_VERSION = "v1.32.0"
LEASE_DURATION = 40  # seconds: the node-monitor grace period's default


def _meminfo_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def _os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def micro_time(moment: datetime.datetime | None = None) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds."""
    moment = moment or datetime.datetime.now(datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeAgent:
    def __init__(
        self,
        *,
        api: ApiClient,
        node_name: str,
        runtime_version: str,
        address: str,
        kubelet_port: int,
        max_pods: int = 110,
        labels: dict[str, str] | None = None,
        status_period: float = 10.0,
        lease_period: float = 10.0,
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.runtime_version = runtime_version
        self.address = address
        self.kubelet_port = kubelet_port
        self.max_pods = max_pods
        self.labels = labels or {}
        self.status_period = status_period
        self.lease_period = lease_period
        self.node: Obj | None = None

    def _capacity(self) -> dict[str, str]:
        return {"cpu": str(os.cpu_count() or 1), "memory": f"{_meminfo_kib()}Ki", "pods": str(self.max_pods),
                "ephemeral-storage": f"{os.statvfs('/').f_blocks * os.statvfs('/').f_frsize // 1024}Ki"}

    def _status(self, *, old: Obj | None) -> Obj:
        now = meta.now_rfc3339()
        old_conditions = {c.get("type"): c for c in (old or {}).get("conditions") or ()}

        def condition(type_: str, status: str, reason: str, message: str) -> Obj:
            previous = old_conditions.get(type_) or {}
            since = previous.get("lastTransitionTime") if previous.get("status") == status else None
            return {"type": type_, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": since or now}

        capacity = self._capacity()
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": self.address},
                          {"type": "Hostname", "address": self.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
            "nodeInfo": {
                "machineID": _read("/etc/machine-id"),
                "systemUUID": _read("/sys/class/dmi/id/product_uuid") or _read("/etc/machine-id"),
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": platform.release(),
                "osImage": _os_image(),
                "containerRuntimeVersion": self.runtime_version,
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": _arch(),
            },
        }

    def _labels(self) -> dict[str, str]:
        return {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": _arch(), "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": _arch(),
                "node.podling.io/kubelet-version": __version__, **self.labels}

    async def register(self) -> Obj:
        """Create the Node, or update this kubelet's part of an existing one."""
        try:
            node = await self.api.get(_NODES, name=self.node_name)
        except Exception as err:
            if not is_not_found(err):
                raise
            node = await self.api.create(_NODES, {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node_name, "labels": self._labels(),
                             "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
                "spec": {},
            })
            log.info("registered node %s", self.node_name)
        else:
            node = await self.api.patch(_NODES, name=self.node_name, body={"metadata": {"labels": self._labels()}})
            log.info("node %s was registered already; updated its labels", self.node_name)
        self.node = await self.api.patch(_NODES, name=self.node_name, subresource="status",
                                         body={"status": self._status(old=node.get("status"))})
        return self.node

    async def update_status(self) -> None:
        old = self.node.get("status") if self.node else None
        self.node = await self.api.patch(_NODES, name=self.node_name, subresource="status",
                                         body={"status": self._status(old=old)})

    async def renew_lease(self) -> None:
        now = micro_time()
        try:
            lease = await self.api.get(_LEASES, namespace="kube-node-lease", name=self.node_name)
        except Exception as err:
            if not is_not_found(err):
                raise
            owner = [{"apiVersion": "v1", "kind": "Node", "name": self.node_name,
                      "uid": self.node["metadata"]["uid"]}] if self.node else []
            await self.api.create(_LEASES, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node_name, "namespace": "kube-node-lease", "ownerReferences": owner},
                "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": LEASE_DURATION,
                         "acquireTime": now, "renewTime": now},
            })
            return
        lease["spec"] = {**(lease.get("spec") or {}), "holderIdentity": self.node_name,
                         "leaseDurationSeconds": LEASE_DURATION, "renewTime": now}
        await self.api.update(_LEASES, lease)

    async def run(self) -> None:
        """Heartbeats until cancelled (``register`` first)."""
        await asyncio.gather(self._every(self.lease_period, self.renew_lease, "renew the node lease"),
                             self._every(self.status_period, self.update_status, "update the node status"))

    async def _every(self, period: float, action: Any, what: str) -> None:
        while True:
            try:
                await action()
            except Exception as err:
                log.warning("could not %s of %s: %s", what, self.node_name, err)
            await asyncio.sleep(period)
