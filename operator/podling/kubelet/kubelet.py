"""The kubelet: keeps the pods bound to one node running as the API (and static files) say.

Invariants:

* Pods come from two sources: the API (pods whose spec.nodeName is this node, watched
  through an informer) and static manifests. Mirror pods in the API only show static pods;
  they are never run themselves.
* Nothing is killed before both sources and the runtime have been read once: a restarted
  kubelet first learns what should run, then adopts what is running (no duplicate, no
  needless kill), and only then removes what belongs to no pod.
* Every pod has one worker (``workers``); every source of change (informer, static files,
  runtime events and relists, probes, timers) only wakes the pod's worker.
* A pod deleted through the API is stopped gracefully, then deleted for good with grace 0
  (uid-preconditioned, so a new pod of the same name is never touched).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from podling.api import meta
from podling.api.resources import find
from podling.client.events import EventRecorder
from podling.client.http import ApiClient, ApiError, is_not_found
from podling.client.informer import Informer
from podling.kubelet.auth import TokenReviewer
from podling.kubelet.dns import ClusterDNSConfig, pod_dns
from podling.kubelet.metrics import InstrumentedRuntime, KubeletMetrics
from podling.kubelet.node import NodeAgent
from podling.kubelet.pleg import RuntimeCache
from podling.kubelet.probes import ProbeManager
from podling.kubelet.runtime.base import Runtime
from podling.kubelet.server import ContainerNotFound, KubeletServer
from podling.kubelet.static import MIRROR_ANNOTATION, SOURCE_ANNOTATION, HASH_ANNOTATION, StaticPods
from podling.kubelet.sync import PodSyncer, grace_period
from podling.kubelet.volumes import VolumeManager
from podling.kubelet.workers import PodWorkers

log = logging.getLogger("podling.kubelet")

Obj = dict[str, Any]
_PODS = find(group="", version="v1", plural="pods")
assert _PODS is not None
_ORPHAN_GRACE = 2.0  # seconds to stop containers of a pod no source knows any more


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KubeletConfig:
    node_name: str
    root_dir: Path
    manifest_dir: Path | None = None
    address: str = ""  # the node's InternalIP; "" picks the address this host reaches the API server from
    port: int = 10250  # the kubelet's HTTPS port (0: any free port)
    max_pods: int = 110
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    status_period: float = 10.0
    lease_period: float = 10.0
    relist_period: float = 1.0
    resync_period: float = 10.0
    dns: ClusterDNSConfig = ClusterDNSConfig()  # what pods' /etc/resolv.conf says


def address_towards(server: str) -> str:
    """The local address this host uses to reach ``server`` (a UDP connect sends nothing)."""
    parts = urlsplit(server)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        return probe.getsockname()[0]


class Kubelet:
    def __init__(self, *, api: ApiClient, runtime: Runtime, config: KubeletConfig) -> None:
        self.api = api
        self.config = config
        self.metrics = KubeletMetrics()
        self.runtime = InstrumentedRuntime(runtime, metrics=self.metrics)
        self.address = config.address or address_towards(api.config.server)
        self.recorder = EventRecorder(api, component="kubelet", host=config.node_name)
        self.cache = RuntimeCache(runtime=self.runtime, on_change=self._changed)
        self.probes = ProbeManager(runtime=self.runtime, on_change=self._changed, on_result=self._probe_result,
                                   on_unhealthy=self._unhealthy)
        self.volumes = VolumeManager(api=api, runtime=self.runtime, root=config.root_dir, node_name=config.node_name)
        self.syncer = PodSyncer(api=api, runtime=self.runtime, cache=self.cache, volumes=self.volumes,
                                probes=self.probes, metrics=self.metrics, record=self._record,
                                write_status=self._write_status, node_name=config.node_name,
                                host_ip=lambda: self.address, pod_dns=lambda pod: pod_dns(pod, config=config.dns))
        self.workers = PodWorkers(sync=self._sync, alive=self._alive, observe=self.metrics.sync_latency.observe)
        self.informer = Informer(api, _PODS, field_selector=f"spec.nodeName={config.node_name}")
        self.informer.add_handlers(on_add=self._pod_added, on_update=lambda old, new: self._pod_added(new),
                                   on_delete=self._pod_deleted)
        self.static = StaticPods(directory=config.manifest_dir, node_name=config.node_name,
                                 on_change=self._static_changed) if config.manifest_dir else None
        self.server: KubeletServer | None = None
        self.node: NodeAgent | None = None
        self._api_pods: dict[str, Obj] = {}  # uid -> pod, pods the API binds here (not mirrors)
        self._static_pods: dict[str, Obj] = {}  # uid -> static pod
        self._mirrors: dict[tuple[str, str], Obj] = {}  # (namespace, name) -> mirror pod
        self._gone: dict[str, Obj] = {}  # uid -> last state of a pod its source no longer has
        self._ready = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._event_tasks: set[asyncio.Task[None]] = set()

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        config.root_dir.mkdir(parents=True, exist_ok=True)
        version = await self.runtime.version()
        self.server = KubeletServer(runtime=self.runtime, locate=self._locate, authenticate=TokenReviewer(self.api),
                                    host=self.address, port=config.port, cert_dir=config.root_dir / "pki",
                                    metrics=self.metrics.registry)
        await self.server.start()
        self.node = NodeAgent(api=self.api, node_name=config.node_name, runtime_version=f"{self.runtime.name}://{version}",
                              address=self.address, kubelet_port=self.server.port, max_pods=config.max_pods,
                              labels=config.labels, status_period=config.status_period, lease_period=config.lease_period)
        await self.node.register()
        spawn = asyncio.get_running_loop().create_task
        self._tasks = [spawn(self.informer.run(), name="kubelet pod informer"),
                       spawn(self.node.run(), name="kubelet node heartbeat"),
                       spawn(self.cache.run_periodically(period=config.relist_period), name="kubelet pleg"),
                       spawn(self._runtime_events(), name="kubelet runtime events")]
        if self.static is not None:
            self._tasks.append(spawn(self.static.run(), name="kubelet static pods"))
        await self.informer.wait_synced()
        await self.cache.relisted.wait()
        if self.static is not None:
            self.static.scan()
        self._ready = True
        for uid in {*self._api_pods, *self._static_pods, *self.cache.uids()}:
            self.workers.update(uid)
        self._tasks.append(spawn(self._housekeeping(), name="kubelet housekeeping"))
        log.info("kubelet %s ready at %s:%d (%s %s)", config.node_name, self.address, self.server.port,
                 self.runtime.name, version)

    async def stop(self) -> None:
        """Stop watching and serving; the pods keep running (a restarted kubelet adopts them)."""
        self.informer.stop()
        await self.workers.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.probes.close()
        if self.server is not None:
            await self.server.stop()
        for task in [*self._event_tasks]:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 2)

    # ---- sources -----------------------------------------------------------------------

    def _pod_added(self, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        if MIRROR_ANNOTATION in meta.annotations(pod):
            self._mirrors[(meta.namespace(pod), meta.name(pod))] = pod
            for static in self._static_pods.values():
                if meta.name(static) == meta.name(pod) and meta.namespace(static) == meta.namespace(pod):
                    self._changed(static["metadata"]["uid"])
            return
        self._api_pods[uid] = pod
        self._changed(uid)

    def _pod_deleted(self, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        if MIRROR_ANNOTATION in meta.annotations(pod):
            key = (meta.namespace(pod), meta.name(pod))
            if (self._mirrors.get(key) or {}).get("metadata", {}).get("uid") == uid:
                del self._mirrors[key]
            for static in self._static_pods.values():  # recreate a mirror a user deleted
                if (meta.namespace(static), meta.name(static)) == key:
                    self._changed(static["metadata"]["uid"])
            return
        if self._api_pods.pop(uid, None) is not None:
            self._gone[uid] = pod
            self._changed(uid)

    def _static_changed(self, pods: dict[str, Obj]) -> None:
        for uid in [uid for uid in self._static_pods if uid not in pods]:
            self._gone[uid] = self._static_pods.pop(uid)
            self._changed(uid)
        for uid, pod in pods.items():
            if uid not in self._static_pods:
                self._static_pods[uid] = pod
                self._changed(uid)

    def _changed(self, uid: str) -> None:
        if self._ready:
            self.workers.update(uid)

    def _alive(self, uid: str) -> bool:
        return uid in self._api_pods or uid in self._static_pods or uid in self._gone or bool(
            self.cache.pod(uid).containers or self.cache.pod(uid).sandboxes)

    async def _runtime_events(self) -> None:
        while True:
            try:
                events = self.runtime.events()
                async with contextlib.aclosing(events):  # type: ignore[type-var]
                    async for _ in events:
                        self.cache.poke()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("runtime event stream failed (%s); reconnecting", err)
            await asyncio.sleep(1.0)

    async def _housekeeping(self) -> None:
        """Every resync period: wake every pod (probes' and volumes' refreshes), drop orphaned volume dirs."""
        while True:
            await asyncio.sleep(self.config.resync_period)
            try:
                for uid in {*self._api_pods, *self._static_pods}:
                    self.workers.update(uid)
                known = {*self._api_pods, *self._static_pods, *self._gone, *self.cache.uids()}
                for uid in self.volumes.pod_dirs():
                    if uid not in known:
                        await self.volumes.teardown(uid)
                running = self.cache.uids()
                self.metrics.running_pods.set(sum(1 for uid in running
                                                  if (s := self.cache.pod(uid).sandbox) is not None and s.ready))
                self.metrics.running_containers.set(sum(len(self.cache.pod(uid).running) for uid in running))
            except Exception:
                log.exception("kubelet housekeeping failed")

    # ---- one pod -----------------------------------------------------------------------

    async def _sync(self, uid: str) -> float | None:
        pod = self._api_pods.get(uid) or self._static_pods.get(uid)
        if pod is not None and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            if uid in self._static_pods:
                await self._ensure_mirror(pod)
            delay = await self.syncer.sync(pod)
            await self.syncer.prune_dead(pod)
            return delay
        if pod is not None:  # deleted through the API: stop gracefully, then delete it for good
            await self.syncer.stop_all(pod, grace=grace_period(pod))
            await self.syncer.remove_all(uid)
            try:
                await self.api.delete(_PODS, namespace=meta.namespace(pod), name=meta.name(pod),
                                      grace_period_seconds=0, preconditions={"uid": uid})
            except ApiError as err:
                if err.code not in (404, 409):
                    raise
            return None
        last = self._gone.pop(uid, None)
        observed = self.cache.pod(uid)
        if observed.containers or observed.sandboxes:
            if last is None:
                log.info("stopping the containers of pod %s, which no source knows", uid)
            await self.syncer.stop_all(last or {"metadata": {"uid": uid}},
                                       grace=grace_period(last) if last is not None else _ORPHAN_GRACE)
            await self.syncer.remove_all(uid)
        if last is not None and SOURCE_ANNOTATION in meta.annotations(last):
            await self._delete_mirror(last)
        return None

    async def _write_status(self, pod: Obj, status: Obj) -> None:
        """Write a pod's status (a static pod's to its mirror, once that exists)."""
        key = (meta.namespace(pod), meta.name(pod))
        if SOURCE_ANNOTATION in meta.annotations(pod) and key not in self._mirrors:
            return
        try:
            await self.api.patch(_PODS, namespace=key[0], name=key[1], subresource="status", body={"status": status})
        except ApiError as err:
            if not is_not_found(err):
                raise

    # ---- static pods' mirrors --------------------------------------------------------------

    async def _ensure_mirror(self, pod: Obj) -> None:
        key = (meta.namespace(pod), meta.name(pod))
        digest = meta.annotations(pod).get(HASH_ANNOTATION, "")
        mirror = self._mirrors.get(key)
        if mirror is not None and meta.annotations(mirror).get(MIRROR_ANNOTATION) == digest:
            return
        if mirror is not None:
            await self._delete_mirror(mirror)
        body = {**pod, "metadata": {**pod["metadata"], "annotations": {**meta.annotations(pod),
                                                                         MIRROR_ANNOTATION: digest}}}
        body["metadata"].pop("uid", None)
        if self.node is not None and self.node.node:
            body["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": self.config.node_name,
                                                    "uid": self.node.node["metadata"]["uid"], "controller": True}]
        body.pop("status", None)
        try:
            created = await self.api.create(_PODS, body)
        except ApiError as err:
            if err.code != 409:
                raise
            return
        self._mirrors[key] = created

    async def _delete_mirror(self, pod: Obj) -> None:
        try:
            await self.api.delete(_PODS, namespace=meta.namespace(pod), name=meta.name(pod), grace_period_seconds=0)
        except ApiError as err:
            if not is_not_found(err):
                raise

    # ---- for the kubelet server, probes and events -------------------------------------

    async def _locate(self, *, namespace: str, pod: str, container: str, previous: bool) -> str:
        found = next((p for p in [*self._api_pods.values(), *self._static_pods.values()]
                      if meta.namespace(p) == namespace and meta.name(p) == pod), None)
        if found is None:
            raise ContainerNotFound(f'pod "{pod}" not found on node {self.config.node_name}')
        observed = self.cache.pod(found["metadata"]["uid"])
        attempt = observed.previous(container) if previous else observed.latest(container)
        if attempt is None:
            if previous:
                raise LookupError(f'previous terminated container "{container}" in pod "{pod}" not found')
            raise LookupError(f'container "{container}" in pod "{pod}" is waiting to start: ContainerCreating')
        return attempt.id

    def _probe_result(self, probe_type: str, ok: bool) -> None:
        self.metrics.probes.labels(probe_type, "successful" if ok else "failed").inc()

    def _unhealthy(self, uid: str, container: str, message: str) -> None:
        pod = self._api_pods.get(uid) or self._static_pods.get(uid)
        if pod is not None:
            self._record(pod, type="Warning", reason="Unhealthy", message=message)

    def _record(self, pod: Obj, *, type: str, reason: str, message: str) -> None:
        if SOURCE_ANNOTATION in meta.annotations(pod):  # events of a static pod go to its mirror
            pod = self._mirrors.get((meta.namespace(pod), meta.name(pod))) or pod
        if not meta.name(pod):
            return
        target = {"apiVersion": "v1", "kind": "Pod", **pod}
        task = asyncio.get_running_loop().create_task(
            self.recorder.event(target, type=type, reason=reason, message=message))  # type: ignore[arg-type]
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)
