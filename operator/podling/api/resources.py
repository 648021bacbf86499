"""The one resource table: every kind podling serves is one entry here.

Routes, discovery, OpenAPI, storage keys and ``kubectl get`` columns are all derived from
these entries; nothing else in podling lists kinds. Adding a kind is adding an entry (and its
schema in ``schemas/``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    """A ``kubectl get`` column: a name and a JSON path (or a computed column by name)."""

    name: str
    path: str  # ".metadata.name", or "@ready" for a column computed in api/tables.py
    type: str = "string"
    priority: int = 0  # 1: shown only with -o wide
    format: str = ""


ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclasses.dataclass(frozen=True, slots=True)
class Resource:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    definition: str  # the schema's $defs name, e.g. io.k8s.api.core.v1.Pod
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale", "binding", "log", "exec"
    categories: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()
    has_spec: bool = True  # generation bumps only on spec changes (metadata too if no spec)
    verbs: tuple[str, ...] = ALL_VERBS  # ("create",): a review kind, answered and never stored

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def key_prefix(self, namespace: str | None = None) -> str:
        """The store key prefix of this resource (in one namespace, or all)."""
        base = f"/registry/{self.group or 'core'}/{self.plural}/"
        if self.namespaced and namespace:
            return f"{base}{namespace}/"
        return base

    def key(self, namespace: str | None, name: str) -> str:
        if self.namespaced:
            return f"/registry/{self.group or 'core'}/{self.plural}/{namespace}/{name}"
        return f"/registry/{self.group or 'core'}/{self.plural}/{name}"


_NAME = Column("Name", ".metadata.name", format="name")
_AGE = Column("Age", ".metadata.creationTimestamp", type="date")


def _core(kind: str, plural: str, *, namespaced: bool = True, **kw) -> Resource:
    return Resource("", "v1", kind, plural, namespaced, f"io.k8s.api.core.v1.{kind}", **kw)


def _apps(kind: str, plural: str, **kw) -> Resource:
    return Resource("apps", "v1", kind, plural, True, f"io.k8s.api.apps.v1.{kind}", **kw)


RESOURCES: tuple[Resource, ...] = (
    _core("Namespace", "namespaces", namespaced=False, short_names=("ns",), subresources=("status", "finalize"),
          columns=(_NAME, Column("Status", ".status.phase"), _AGE)),
    _core("Pod", "pods", short_names=("po",), subresources=("status", "binding", "log", "exec"),
          categories=("all",),
          columns=(_NAME, Column("Ready", "@pod_ready"), Column("Status", "@pod_status"),
                   Column("Restarts", "@pod_restarts"), _AGE,
                   Column("IP", ".status.podIP", priority=1), Column("Node", ".spec.nodeName", priority=1),
                   Column("Nominated Node", ".status.nominatedNodeName", priority=1),
                   Column("Readiness Gates", "@pod_readiness_gates", priority=1))),
    _core("Service", "services", short_names=("svc",), subresources=("status",), categories=("all",),
          columns=(_NAME, Column("Type", ".spec.type"), Column("Cluster-IP", ".spec.clusterIP"),
                   Column("External-IP", "@service_external_ip"), Column("Port(s)", "@service_ports"), _AGE,
                   Column("Selector", "@service_selector", priority=1))),
    _core("Endpoints", "endpoints", short_names=("ep",),
          columns=(_NAME, Column("Endpoints", "@endpoints"), _AGE), has_spec=False),
    _core("Node", "nodes", namespaced=False, short_names=("no",), subresources=("status",),
          columns=(_NAME, Column("Status", "@node_status"), Column("Roles", "@node_roles"), _AGE,
                   Column("Version", ".status.nodeInfo.kubeletVersion"),
                   Column("Internal-IP", "@node_internal_ip", priority=1),
                   Column("OS-Image", ".status.nodeInfo.osImage", priority=1),
                   Column("Kernel-Version", ".status.nodeInfo.kernelVersion", priority=1),
                   Column("Container-Runtime", ".status.nodeInfo.containerRuntimeVersion", priority=1))),
    _core("ConfigMap", "configmaps", short_names=("cm",),
          columns=(_NAME, Column("Data", "@data_count", type="integer"), _AGE), has_spec=False),
    _core("Secret", "secrets",
          columns=(_NAME, Column("Type", ".type"), Column("Data", "@data_count", type="integer"), _AGE),
          has_spec=False),
    _core("ServiceAccount", "serviceaccounts", short_names=("sa",),
          columns=(_NAME, Column("Secrets", "@secrets_count", type="integer"), _AGE), has_spec=False),
    _core("Event", "events", short_names=("ev",),
          columns=(Column("Last Seen", "@event_last_seen"), Column("Type", ".type"), Column("Reason", ".reason"),
                   Column("Object", "@event_object"), Column("Message", ".message")), has_spec=False),
    _core("ReplicationController", "replicationcontrollers", short_names=("rc",), subresources=("status", "scale"),
          categories=("all",),
          columns=(_NAME, Column("Desired", ".spec.replicas", type="integer"),
                   Column("Current", ".status.replicas", type="integer"),
                   Column("Ready", ".status.readyReplicas", type="integer"), _AGE,
                   Column("Containers", "@containers", priority=1), Column("Images", "@images", priority=1),
                   Column("Selector", "@selector", priority=1))),
    _core("ResourceQuota", "resourcequotas", short_names=("quota",), subresources=("status",),
          columns=(_NAME, _AGE, Column("Request", "@quota_request"), Column("Limit", "@quota_limit"))),
    _core("LimitRange", "limitranges", short_names=("limits",), columns=(_NAME, Column("Created At", ".metadata.creationTimestamp", type="date"))),
    _core("PersistentVolumeClaim", "persistentvolumeclaims", short_names=("pvc",), subresources=("status",),
          columns=(_NAME, Column("Status", ".status.phase"), Column("Volume", ".spec.volumeName"),
                   Column("Capacity", ".status.capacity.storage"), Column("Access Modes", "@pvc_access_modes"),
                   Column("StorageClass", ".spec.storageClassName"), _AGE)),
    _apps("Deployment", "deployments", short_names=("deploy",), subresources=("status", "scale"), categories=("all",),
          columns=(_NAME, Column("Ready", "@ready_replicas"), Column("Up-to-date", ".status.updatedReplicas", type="integer"),
                   Column("Available", ".status.availableReplicas", type="integer"), _AGE,
                   Column("Containers", "@containers", priority=1), Column("Images", "@images", priority=1),
                   Column("Selector", "@selector", priority=1))),
    _apps("ReplicaSet", "replicasets", short_names=("rs",), subresources=("status", "scale"), categories=("all",),
          columns=(_NAME, Column("Desired", ".spec.replicas", type="integer"),
                   Column("Current", ".status.replicas", type="integer"),
                   Column("Ready", ".status.readyReplicas", type="integer"), _AGE,
                   Column("Containers", "@containers", priority=1), Column("Images", "@images", priority=1),
                   Column("Selector", "@selector", priority=1))),
    _apps("StatefulSet", "statefulsets", short_names=("sts",), subresources=("status", "scale"), categories=("all",),
          columns=(_NAME, Column("Ready", "@ready_replicas"), _AGE,
                   Column("Containers", "@containers", priority=1), Column("Images", "@images", priority=1))),
    _apps("DaemonSet", "daemonsets", short_names=("ds",), subresources=("status",), categories=("all",),
          columns=(_NAME, Column("Desired", ".status.desiredNumberScheduled", type="integer"),
                   Column("Current", ".status.currentNumberScheduled", type="integer"),
                   Column("Ready", ".status.numberReady", type="integer"),
                   Column("Up-to-date", ".status.updatedNumberScheduled", type="integer"),
                   Column("Available", ".status.numberAvailable", type="integer"),
                   Column("Node Selector", "@node_selector"), _AGE,
                   Column("Containers", "@containers", priority=1), Column("Images", "@images", priority=1),
                   Column("Selector", "@selector", priority=1))),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", True, "io.k8s.api.coordination.v1.Lease",
             columns=(_NAME, Column("Holder", ".spec.holderIdentity"), _AGE)),
    Resource("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", False,
             "io.k8s.api.authentication.v1.TokenReview", verbs=("create",)),
    Resource("podling.io", "v1alpha1", "Application", "applications", True, "io.podling.v1alpha1.Application",
             short_names=("app", "apps"), subresources=("status",),
             columns=(_NAME, Column("Sync Status", ".status.sync.status"), Column("Health", ".status.health.status"),
                      Column("Revision", "@app_revision"), _AGE,
                      Column("Repo", ".spec.source.repoURL", priority=1),
                      Column("Path", ".spec.source.path", priority=1))),
)


def group_versions() -> list[tuple[str, str]]:
    """Every (group, version) served, core first, in a stable order."""
    seen: dict[tuple[str, str], None] = {}
    for r in RESOURCES:
        seen[(r.group, r.version)] = None
    return list(seen)


def in_group_version(group: str, version: str) -> list[Resource]:
    return [r for r in RESOURCES if r.group == group and r.version == version]


def find(*, group: str, version: str, plural: str) -> Resource | None:
    for r in RESOURCES:
        if r.group == group and r.version == version and r.plural == plural:
            return r
    return None


def by_kind(*, api_version: str, kind: str) -> Resource | None:
    for r in RESOURCES:
        if r.api_version == api_version and r.kind == kind:
            return r
    return None


def by_definition(name: str) -> Resource | None:
    for r in RESOURCES:
        if r.definition == name:
            return r
    return None


def all_resources() -> Iterable[Resource]:
    return RESOURCES
