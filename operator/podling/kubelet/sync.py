"""Syncing one pod: the smallest runtime actions that move it towards its spec, then its status.

Invariants:

* One pass looks at the runtime cache, takes the next actions (sandbox, then init containers
  one at a time in order, then app containers), and returns when it would otherwise have to
  wait; the pass after is triggered by the runtime (PLEG), a probe, the API or a timer. It is
  idempotent: with nothing to do it does nothing, and a status that did not change is not
  written again.
* A container is restarted only as its pod's restartPolicy allows, after its back-off
  (CrashLoopBackOff), when its spec hash changed, or when a liveness or startup probe failed.
* Nothing about a pod ever raises out of a pass: a bad image, command, volume or env var ends
  as a waiting reason with a message in the pod's status and an Event, and a retry later.
* Terminating runs preStop hooks, then SIGTERM, then SIGKILL at the grace deadline; the
  sandbox goes last.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from podling.api import defaults, meta
from podling.api.quantity import bytes_, cpu_millis
from podling.client.http import ApiClient
from podling.kubelet import env as envs
from podling.kubelet import status as statuses
from podling.kubelet.backoff import Backoff
from podling.kubelet.dns import resolv_conf
from podling.kubelet.metrics import KubeletMetrics
from podling.kubelet.pleg import RuntimeCache
from podling.kubelet.probes import ProbeManager, Target, run_handler
from podling.kubelet.runtime.base import (
    ContainerConfig,
    ContainerStatus,
    ImageNeverPullError,
    ImagePullError,
    PortMapping,
    PullPolicy,
    Runtime,
    RuntimeError_,
    SandboxConfig,
)
from podling.kubelet.volumes import RESOLV_CONF, MountError, VolumeManager

log = logging.getLogger("podling.kubelet.sync")

Obj = dict[str, Any]
EventSink = Callable[..., None]  # (obj, *, type, reason, message)
_VOLUME_RESYNC = 60.0  # seconds between refreshes of configMap/secret/downwardAPI contents
_RETRY = 5.0  # seconds before retrying a failed mount or a container config error
_HOOK_TIMEOUT = 30.0  # seconds a postStart hook may take


def container_hash(container: Mapping[str, Any]) -> str:
    """The hash of a container's spec: a changed spec means a new container."""
    return hashlib.sha256(json.dumps(container, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def pull_policy(container: Mapping[str, Any]) -> PullPolicy:
    policy = container.get("imagePullPolicy")
    return policy if policy in ("Always", "IfNotPresent", "Never") else defaults.pull_policy(container.get("image", ""))


def _epoch(moment: datetime.datetime | None) -> float:
    return moment.timestamp() if moment is not None else time.time()


@dataclasses.dataclass(slots=True)
class _PodMemory:
    """What the kubelet remembers about a pod between passes (lost on restart, by design)."""

    waiting: dict[str, statuses.Waiting] = dataclasses.field(default_factory=dict)
    volumes: dict[str, Any] | None = None
    volumes_at: float = 0.0
    image_failed_at: dict[str, float] = dataclasses.field(default_factory=dict)
    written: Obj | None = None  # the status last written ...
    written_over: str | None = None  # ... when the cache held this resourceVersion of the pod
    running_seen: bool = False


class PodSyncer:
    def __init__(
        self,
        *,
        api: ApiClient,
        runtime: Runtime,
        cache: RuntimeCache,
        volumes: VolumeManager,
        probes: ProbeManager,
        metrics: KubeletMetrics,
        record: EventSink,
        write_status: Callable[[Obj, Obj], Awaitable[None]],
        node_name: str,
        host_ip: Callable[[], str],
        pod_dns: Callable[[Obj], Mapping[str, Any]] = lambda pod: {},
    ) -> None:
        self.api = api
        self.runtime = runtime
        self.cache = cache
        self.volumes = volumes
        self.probes = probes
        self.metrics = metrics
        self.record = record
        self.write_status = write_status
        self.node_name = node_name
        self.host_ip = host_ip
        self.pod_dns = pod_dns
        self.crash_backoff = Backoff()
        self.image_backoff = Backoff()
        self._memory: dict[str, _PodMemory] = {}

    # ---- one pass --------------------------------------------------------------------

    async def sync(self, pod: Obj) -> float | None:
        """Take the next actions for a live pod and write its status; seconds until the next pass (None: no timer)."""
        uid = pod["metadata"]["uid"]
        memory = self._memory.setdefault(uid, _PodMemory())
        observed = self.cache.pod(uid)
        if statuses.is_terminal(pod):
            if observed.running or (observed.sandbox and observed.sandbox.ready):
                await self.stop_all(pod, grace=grace_period(pod))
            self.probes.forget(uid)
            return None
        requeue = await self._act(pod, observed, memory)
        observed = self.cache.pod(uid)
        await self._write(pod, observed, memory)
        return requeue

    async def _act(self, pod: Obj, observed: statuses.PodRuntime, memory: _PodMemory) -> float | None:
        uid = pod["metadata"]["uid"]
        spec = pod.get("spec") or {}
        policy = spec.get("restartPolicy") or "Always"
        sandbox = observed.sandbox
        if sandbox is None or not sandbox.ready:
            if sandbox is not None and policy == "Never" and observed.containers:
                return None  # it ran and its sandbox is gone: it does not run again (the status says how it ended)
            for container in observed.running:
                await self._stop_container(pod, container, grace=0, reason="")
            delay = await self._setup_volumes(pod, memory, force=True)
            if delay is not None:
                return delay
            try:
                await self.runtime.run_sandbox(self._sandbox_config(pod))
            except RuntimeError_ as err:
                self.record(pod, type="Warning", reason="FailedCreatePodSandBox",
                            message=f"Failed to create pod sandbox: {err}")
                for container in statuses.all_containers(pod):
                    memory.waiting[container["name"]] = statuses.Waiting("ContainerCreating")
                return _RETRY
            await self.cache.refresh()
            observed = self.cache.pod(uid)
            sandbox = observed.sandbox
            if sandbox is None:
                return _RETRY
        elif time.monotonic() - memory.volumes_at > _VOLUME_RESYNC:
            await self._setup_volumes(pod, memory, force=False)

        def current(name: str) -> tuple[ContainerStatus | None, ContainerStatus | None]:
            """(latest attempt of any sandbox, that attempt if it belongs to the current sandbox)."""
            latest = observed.latest(name)
            return latest, latest if latest is not None and latest.created_at >= sandbox.created_at else None

        for container in spec.get("initContainers") or ():
            latest, now = current(container["name"])
            if now is not None and now.state == "exited" and now.exit_code == 0:
                continue
            if now is not None and now.state == "running":
                return None
            if now is not None and now.state == "exited":
                if policy == "Never":
                    return None  # the pod failed: its status says Failed
                return await self._restart(pod, container, "init", now, sandbox.id, memory)
            if now is not None:
                await self.runtime.remove_container(now.id)
            return await self._start(pod, container, "init", latest, sandbox.id, memory)

        requeues: list[float] = []
        stopped = False  # starts refresh the cache themselves; stops need one
        for container in spec.get("containers") or ():
            name = container["name"]
            latest, now = current(name)
            delay: float | None = None
            if now is None or now.state in ("created", "unknown"):
                if now is not None:
                    await self.runtime.remove_container(now.id)
                if latest is not None and latest.state == "exited" and now is None and not _should_restart(
                        policy, latest):
                    continue
                delay = await self._start(pod, container, "app", latest, sandbox.id, memory)
            elif now.state == "running":
                probe = self.probes.state(uid, name)
                if now.spec_hash != container_hash(container):
                    await self._stop_container(pod, now, grace=grace_period(pod),
                                               reason=f"Container {name} definition changed, will be restarted")
                    stopped = True
                elif probe is not None and probe.container_id == now.id and (probe.liveness_failed
                                                                              or probe.startup_failed):
                    which = "liveness" if probe.liveness_failed else "startup"
                    self.record(pod, type="Normal", reason="Killing",
                                message=f"Container {name} failed {which} probe, will be restarted")
                    self.probes.forget_container(uid, name)
                    await self._stop_container(pod, now, grace=grace_period(pod), reason="")
                    stopped = True
            elif now.state == "exited" and _should_restart(policy, now):
                delay = await self._restart(pod, container, "app", now, sandbox.id, memory)
            if delay is not None:
                requeues.append(delay)
        if stopped:
            await self.cache.refresh()
        observed = self.cache.pod(uid)
        sandbox_now = observed.sandbox
        self.probes.sync(pod_uid=uid, pod_ip=sandbox_now.ip if sandbox_now else "", containers=[
            (container, latest.id) for container in spec.get("containers") or ()
            if (latest := observed.latest(container["name"])) is not None and latest.state == "running"
        ])
        return min(requeues) if requeues else None

    # ---- containers --------------------------------------------------------------------

    async def _restart(self, pod: Obj, container: Obj, kind: Literal["init", "app"], dead: ContainerStatus,
                       sandbox_id: str, memory: _PodMemory) -> float | None:
        """Start ``container`` again after ``dead`` exited, unless it is backing off."""
        name = container["name"]
        key = f"{pod['metadata']['uid']}/{name}"
        remaining = self.crash_backoff.remaining(key, since=_epoch(dead.finished_at))
        if remaining > 0:
            delay = int(self.crash_backoff.delay(key))
            memory.waiting[name] = statuses.Waiting(
                "CrashLoopBackOff", f"back-off {_duration(delay)} restarting failed container={name} "
                                    f"pod={meta.name(pod)}_{meta.namespace(pod)}({pod['metadata']['uid']})")
            self.record(pod, type="Warning", reason="BackOff",
                        message=f"Back-off restarting failed container {name} in pod "
                                f"{meta.name(pod)}_{meta.namespace(pod)}({pod['metadata']['uid']})")
            return remaining
        self.crash_backoff.next(key)
        self.metrics.container_restarts.inc()
        return await self._start(pod, container, kind, dead, sandbox_id, memory)

    async def _start(self, pod: Obj, container: Obj, kind: Literal["init", "app"], latest: ContainerStatus | None,
                     sandbox_id: str, memory: _PodMemory) -> float | None:
        """Pull, configure, create and start one container (a waiting reason when that fails).

        Returns once the runtime cache shows the new container, so the next pass cannot
        start it a second time.
        """
        try:
            return await self._create_and_start(pod, container, kind, latest, sandbox_id, memory)
        finally:
            await self.cache.refresh()

    async def _create_and_start(self, pod: Obj, container: Obj, kind: Literal["init", "app"],
                                latest: ContainerStatus | None, sandbox_id: str, memory: _PodMemory) -> float | None:
        name, image = container["name"], container.get("image", "")
        uid = pod["metadata"]["uid"]
        image_key = f"{uid}/{name}/image"
        waiting = memory.waiting
        remaining = self.image_backoff.remaining(image_key, since=memory.image_failed_at.get(name, 0.0))
        if waiting.get(name) is not None and waiting[name].reason in ("ErrImagePull", "ImagePullBackOff") \
                and remaining > 0:
            waiting[name] = statuses.Waiting("ImagePullBackOff", f'Back-off pulling image "{image}"')
            self.record(pod, type="Normal", reason="BackOff", message=f'Back-off pulling image "{image}"')
            return remaining
        policy = pull_policy(container)
        started = time.monotonic()
        try:
            _, pulled = await self.runtime.ensure_image(image, policy=policy)
        except ImageNeverPullError as err:
            waiting[name] = statuses.Waiting("ErrImageNeverPull", str(err))
            self.record(pod, type="Warning", reason="ErrImageNeverPull", message=str(err))
            return _RETRY
        except ImagePullError as err:
            self.image_backoff.next(image_key)
            memory.image_failed_at[name] = time.time()
            waiting[name] = statuses.Waiting("ErrImagePull", str(err))
            self.record(pod, type="Warning", reason="Failed", message=f'Failed to pull image "{image}": {err}')
            self.record(pod, type="Warning", reason="Failed", message="Error: ErrImagePull")
            return self.image_backoff.delay(image_key)
        self.image_backoff.forget_prefix(image_key)
        if pulled:
            self.record(pod, type="Normal", reason="Pulling", message=f'Pulling image "{image}"')
        self.record(pod, type="Normal", reason="Pulled",
                    message=f'Successfully pulled image "{image}" in {time.monotonic() - started:.3f}s' if pulled
                    else f'Container image "{image}" already present on machine')
        try:
            config = await self._container_config(pod, container, kind, latest, memory)
        except (envs.EnvError, MountError) as err:
            waiting[name] = statuses.Waiting("CreateContainerConfigError", str(err))
            self.record(pod, type="Warning", reason="Failed", message=f"Error: {err}")
            return _RETRY
        try:
            container_id = await self.runtime.create_container(sandbox_id=sandbox_id, pod=self._sandbox_config(pod),
                                                               config=config)
        except RuntimeError_ as err:
            waiting[name] = statuses.Waiting("CreateContainerError", str(err))
            self.record(pod, type="Warning", reason="Failed", message=f"Error: {err}")
            return _RETRY
        self.record(pod, type="Normal", reason="Created", message=f"Created container {name}")
        waiting.pop(name, None)
        try:
            await self.runtime.start_container(container_id)
        except RuntimeError_ as err:  # the runtime records it as exited; the restart policy decides what next
            self.record(pod, type="Warning", reason="Failed", message=f"Error: {err}")
            return 0.0
        self.record(pod, type="Normal", reason="Started", message=f"Started container {name}")
        hook = ((container.get("lifecycle") or {}).get("postStart"))
        if hook:
            await self.cache.refresh()
            sandbox = self.cache.pod(uid).sandbox
            target = Target(container_id=container_id, pod_ip=sandbox.ip if sandbox else "",
                            ports=_named_ports(container))
            result = await run_handler(hook, runtime=self.runtime, target=target, timeout=_HOOK_TIMEOUT)
            if not result.ok:
                self.record(pod, type="Warning", reason="FailedPostStartHook",
                            message=f"PostStartHook failed: {result.message}")
                await self.runtime.stop_container(container_id, timeout=grace_period(pod))
        return None

    async def _container_config(self, pod: Obj, container: Obj, kind: Literal["init", "app"],
                                latest: ContainerStatus | None, memory: _PodMemory) -> ContainerConfig:
        sandbox = self.cache.pod(pod["metadata"]["uid"]).sandbox
        pod_ip = sandbox.ip if sandbox else ""
        variables = await envs.container_env(api=self.api, pod=pod, container=container, pod_ip=pod_ip,
                                             node_name=self.node_name, host_ip=self.host_ip())
        if memory.volumes is None:
            memory.volumes = await self.volumes.setup(pod)
            memory.volumes_at = time.monotonic()
        mounts = self.volumes.mounts(pod, container, memory.volumes, env=variables)
        dns = self.pod_dns(pod)
        if dns and not any(mount.target == RESOLV_CONF for mount in mounts):  # Docker's own would say 127.0.0.11
            mounts.append(await self.volumes.resolv_conf(pod, text=resolv_conf(dns)))
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        spec = pod.get("spec") or {}
        security = {**(spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
        user = ""
        if security.get("runAsUser") is not None:
            user = str(security["runAsUser"])
            if security.get("runAsGroup") is not None:
                user += f":{security['runAsGroup']}"
        return ContainerConfig(
            name=container["name"], kind=kind, image=container.get("image", ""), spec_hash=container_hash(container),
            restart_count=latest.restart_count + 1 if latest is not None else 0,
            command=[envs.expand(part, variables) for part in container.get("command") or ()],
            args=[envs.expand(part, variables) for part in container.get("args") or ()],
            env=variables, working_dir=container.get("workingDir") or "", mounts=mounts,
            cpu_limit_millis=cpu_millis(limits["cpu"]) if "cpu" in limits else 0,
            memory_limit_bytes=bytes_(limits["memory"]) if "memory" in limits else 0,
            cpu_request_millis=cpu_millis(requests.get("cpu", limits.get("cpu", 0))) if
            ("cpu" in requests or "cpu" in limits) else 0,
            user=user, privileged=bool(security.get("privileged")),
            stdin=bool(container.get("stdin")), tty=bool(container.get("tty")),
        )

    async def _stop_container(self, pod: Obj, container: ContainerStatus, *, grace: float, reason: str) -> None:
        if reason:
            self.record(pod, type="Normal", reason="Killing", message=reason)
        await self.runtime.stop_container(container.id, timeout=grace)

    # ---- sandbox and volumes ---------------------------------------------------------------

    def _sandbox_config(self, pod: Obj) -> SandboxConfig:
        spec = pod.get("spec") or {}
        ports = [
            PortMapping(container_port=int(port["containerPort"]), host_port=int(port["hostPort"]),
                        protocol=port.get("protocol") or "TCP", host_ip=port.get("hostIP") or "")
            for container in spec.get("containers") or () for port in container.get("ports") or ()
            if port.get("hostPort")
        ]
        dns = self.pod_dns(pod)
        return SandboxConfig(
            pod_uid=pod["metadata"]["uid"], namespace=meta.namespace(pod), name=meta.name(pod),
            hostname=spec.get("hostname") or meta.name(pod)[:63], port_mappings=ports,
            share_process_namespace=bool(spec.get("shareProcessNamespace")),
            dns_servers=dns.get("servers", ()), dns_searches=dns.get("searches", ()), dns_options=dns.get("options", ()),
            extra_hosts={ip_host: entry["ip"] for entry in spec.get("hostAliases") or ()
                         for ip_host in entry.get("hostnames") or ()},
        )

    async def _setup_volumes(self, pod: Obj, memory: _PodMemory, *, force: bool) -> float | None:
        try:
            memory.volumes = await self.volumes.setup(pod)
            memory.volumes_at = time.monotonic()
        except MountError as err:
            self.record(pod, type="Warning", reason="FailedMount", message=str(err))
            if force:
                for container in statuses.all_containers(pod):
                    memory.waiting[container["name"]] = statuses.Waiting("ContainerCreating")
                return _RETRY
        return None

    # ---- status ------------------------------------------------------------------------

    async def _write(self, pod: Obj, observed: statuses.PodRuntime, memory: _PodMemory) -> None:
        uid = pod["metadata"]["uid"]
        spec = pod.get("spec") or {}
        ready: dict[str, bool] = {}
        started: dict[str, bool] = {}
        for container in spec.get("containers") or ():
            latest = observed.latest(container["name"])
            probe = self.probes.state(uid, container["name"])
            running = latest is not None and latest.state == "running"
            fresh = probe is not None and latest is not None and probe.container_id == latest.id
            ready[container["name"]] = running and (probe.ready if fresh else "readinessProbe" not in container)
            started[container["name"]] = running and (probe.started if fresh else "startupProbe" not in container)
        # A waiting reason holds only while no newer attempt replaced it.
        for name, waiting in [*memory.waiting.items()]:
            latest = observed.latest(name)
            if waiting.reason == "ContainerCreating" and latest is not None and latest.state == "running":
                del memory.waiting[name]
        new = statuses.pod_status(pod, observed, runtime=self.runtime.name, host_ip=self.host_ip(),
                                  waiting=memory.waiting, ready=ready, started=started,
                                  now=datetime.datetime.now(datetime.timezone.utc))
        if new["phase"] == "Running" and all(ready.values()) and not memory.running_seen:
            memory.running_seen = True
            created = meta.parse_time(pod["metadata"]["creationTimestamp"]) if \
                pod["metadata"].get("creationTimestamp") else None
            if created is not None and "kubernetes.io/config.source" not in meta.annotations(pod):
                self.metrics.pod_start.observe(max(0.0, time.time() - created.timestamp()))
        if new == pod.get("status"):
            memory.written = new
            return
        seen = (pod.get("metadata") or {}).get("resourceVersion")
        if new == memory.written and seen == memory.written_over:
            return  # written already; the cache has not caught up with our write yet
        await self.write_status(pod, new)
        memory.written, memory.written_over = new, seen

    # ---- termination -----------------------------------------------------------------------

    async def stop_all(self, pod: Obj, *, grace: float) -> None:
        """Run preStop hooks, stop every container (SIGTERM, SIGKILL at the deadline), then the sandbox."""
        uid = pod["metadata"]["uid"]
        self.probes.forget(uid)
        observed = self.cache.pod(uid)
        deadline = time.monotonic() + max(grace, 0.0)
        specs = {c["name"]: c for c in statuses.all_containers(pod)}

        async def stop(container: ContainerStatus) -> None:
            spec = specs.get(container.name) or {}
            self.record(pod, type="Normal", reason="Killing", message=f"Stopping container {container.name}")
            hook = (spec.get("lifecycle") or {}).get("preStop")
            if hook and grace > 0:
                target = Target(container_id=container.id, pod_ip=observed.sandbox.ip if observed.sandbox else "",
                                ports=_named_ports(spec))
                try:
                    result = await asyncio.wait_for(
                        run_handler(hook, runtime=self.runtime, target=target, timeout=grace), timeout=grace)
                except asyncio.TimeoutError:
                    result = None
                if result is not None and not result.ok:
                    self.record(pod, type="Warning", reason="FailedPreStopHook",
                                message=f"PreStopHook failed: {result.message}")
            await self.runtime.stop_container(container.id, timeout=max(0.0, deadline - time.monotonic()))

        await asyncio.gather(*(stop(c) for c in observed.running))
        for sandbox in observed.sandboxes:
            if sandbox.ready:
                await self.runtime.stop_sandbox(sandbox.id)
        await self.cache.refresh()

    async def remove_all(self, uid: str) -> None:
        """Remove the pod's containers, sandboxes and volumes (after it stopped)."""
        self.probes.forget(uid)
        observed = self.cache.pod(uid)
        for container in observed.containers:
            await self.runtime.remove_container(container.id)
        for sandbox in observed.sandboxes:
            await self.runtime.remove_sandbox(sandbox.id)
        await self.volumes.teardown(uid)
        self.crash_backoff.forget_prefix(f"{uid}/")
        self.image_backoff.forget_prefix(f"{uid}/")
        self._memory.pop(uid, None)
        await self.cache.refresh()

    async def prune_dead(self, pod: Obj) -> None:
        """Keep only the latest dead attempt of each container (for ``logs --previous``)."""
        observed = self.cache.pod(pod["metadata"]["uid"])
        names = {c.name for c in observed.containers}
        for name in names:
            for old in observed.attempts(name)[2:]:
                if old.state == "exited":
                    await self.runtime.remove_container(old.id)
        newest = observed.sandbox
        for sandbox in observed.sandboxes:
            if sandbox is not newest and not sandbox.ready:
                await self.runtime.remove_sandbox(sandbox.id)


def _should_restart(policy: str, container: ContainerStatus) -> bool:
    return policy == "Always" or (policy == "OnFailure" and container.exit_code != 0)


def grace_period(pod: Mapping[str, Any]) -> float:
    """The pod's grace period: the deletion's, else the spec's (default 30 s)."""
    metadata = pod.get("metadata") or {}
    if metadata.get("deletionGracePeriodSeconds") is not None:
        return float(metadata["deletionGracePeriodSeconds"])
    value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return float(30 if value is None else value)


def _named_ports(container: Mapping[str, Any]) -> dict[str, int]:
    return {p["name"]: int(p["containerPort"]) for p in container.get("ports") or () if p.get("name")}


def _duration(seconds: int) -> str:
    """Go's time.Duration spelling, as the kubelet's messages use it: 10s, 1m20s, 5m0s."""
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"
