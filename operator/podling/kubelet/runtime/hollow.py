"""A hollow runtime: a SIMULATION of a node's containers for control-plane scale tests.

Like Kubernetes' kubemark, whose hollow nodes run a real kubelet over a fake runtime, this
lets one machine host many nodes and thousands of pods to load the apiserver, scheduler and
controllers. Nothing runs: no process, no network, no file. It is never a default; a kubelet
uses it only when asked for it by name.

Invariants:

* All state is in this object's memory and dies with it (a restarted hollow kubelet finds an
  empty node, as if it had been rebooted).
* A sandbox is ready, and a started container running, ``start_delay`` seconds after it was
  asked for (at once with 0): the call returns then, as Docker's does. Containers run until stopped; then they exit 0 (``Completed``).
* Every transition is reported to :meth:`HollowRuntime.events` as Docker names it (create,
  start, kill, die, destroy); exec succeeds with no output; logs are one fixed line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import ipaddress
import itertools
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence

from podling import __version__
from podling.kubelet.runtime.base import (
    ContainerConfig,
    ContainerStatus,
    ExecResult,
    ImageNeverPullError,
    NotFound,
    OutputSink,
    PullPolicy,
    Runtime,
    RuntimeError_,
    RuntimeEvent,
    SandboxConfig,
    SandboxStatus,
)

# Pod IPs come from one counter for the whole process, so hollow nodes sharing a process
# never hand out the same IP.
_POD_NETWORK = ipaddress.ip_network("10.128.0.0/9")
_next_ip = itertools.count(2)


def _image_id(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclasses.dataclass(slots=True, kw_only=True)
class _Sandbox:
    id: str
    config: SandboxConfig
    ip: str
    created_at: datetime.datetime
    ready: bool = False


@dataclasses.dataclass(slots=True, kw_only=True)
class _Container:
    id: str
    pod: SandboxConfig
    config: ContainerConfig
    image_id: str
    created_at: datetime.datetime
    state: str = "created"  # created, starting (between start and start_delay), running, exited
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    exited: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class HollowRuntime(Runtime):
    """A simulated node ``node_name``; see the module's docstring."""

    name = "hollow"

    def __init__(self, *, node_name: str, start_delay: float = 0.0) -> None:
        self._node_name = node_name
        self._start_delay = start_delay
        self._images: set[str] = set()
        self._volumes: dict[str, dict[str, str]] = {}
        self._sandboxes: dict[str, _Sandbox] = {}
        self._containers: dict[str, _Container] = {}
        self._subscribers: set[asyncio.Queue[RuntimeEvent]] = set()

    def _emit(self, container_id: str, pod_uid: str, action: str) -> None:
        event = RuntimeEvent(container_id=container_id, pod_uid=pod_uid, action=action)
        for queue in self._subscribers:
            queue.put_nowait(event)

    async def _start_time(self) -> None:
        """A simulated start takes ``start_delay``; the call returns once it is done, as Docker's does."""
        if self._start_delay > 0:
            await asyncio.sleep(self._start_delay)

    async def version(self) -> str:
        return __version__

    async def ensure_image(self, image: str, *, policy: PullPolicy) -> tuple[str, bool]:
        image_id = _image_id(image)
        present = image in self._images
        if policy == "Never" and not present:
            raise ImageNeverPullError(f'Container image "{image}" is not present with pull policy of Never')
        if present and policy != "Always":
            return image_id, False
        self._images.add(image)  # a simulated pull always succeeds
        return image_id, True

    # -- sandboxes -----------------------------------------------------------------------------

    async def run_sandbox(self, config: SandboxConfig) -> str:
        sandbox = _Sandbox(id=uuid.uuid4().hex, config=config, created_at=_now(),
                           ip=str(_POD_NETWORK.network_address + next(_next_ip) % _POD_NETWORK.num_addresses))
        self._sandboxes[sandbox.id] = sandbox
        self._emit(sandbox.id, config.pod_uid, "create")

        await self._start_time()
        if sandbox.id in self._sandboxes:
            sandbox.ready = True
            self._emit(sandbox.id, config.pod_uid, "start")
        return sandbox.id

    async def stop_sandbox(self, sandbox_id: str) -> None:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None or not sandbox.ready:
            return
        sandbox.ready = False
        self._emit(sandbox_id, sandbox.config.pod_uid, "kill")
        self._emit(sandbox_id, sandbox.config.pod_uid, "die")

    async def remove_sandbox(self, sandbox_id: str) -> None:
        await self.stop_sandbox(sandbox_id)
        sandbox = self._sandboxes.pop(sandbox_id, None)
        if sandbox is not None:
            self._emit(sandbox_id, sandbox.config.pod_uid, "destroy")

    async def list_sandboxes(self) -> list[SandboxStatus]:
        return [SandboxStatus(id=s.id, pod_uid=s.config.pod_uid, namespace=s.config.namespace, name=s.config.name,
                              ready=s.ready, ip=s.ip, created_at=s.created_at) for s in self._sandboxes.values()]

    # -- containers ----------------------------------------------------------------------------

    def _container(self, container_id: str) -> _Container:
        try:
            return self._containers[container_id]
        except KeyError:
            raise NotFound(f"No such container: {container_id}") from None

    async def create_container(self, *, sandbox_id: str, pod: SandboxConfig, config: ContainerConfig) -> str:
        if sandbox_id not in self._sandboxes:
            raise NotFound(f"No such container: {sandbox_id}")
        container = _Container(id=uuid.uuid4().hex, pod=pod, config=config, image_id=_image_id(config.image),
                               created_at=_now())
        self._containers[container.id] = container
        self._emit(container.id, pod.pod_uid, "create")
        return container.id

    async def start_container(self, container_id: str) -> None:
        container = self._container(container_id)
        if container.state != "created":
            raise RuntimeError_(f"container {container_id} is {container.state}, not created")

        container.state = "starting"
        await self._start_time()
        if container.state == "starting":
            container.state, container.started_at = "running", _now()
            self._emit(container.id, container.pod.pod_uid, "start")

    async def stop_container(self, container_id: str, *, timeout: float) -> None:
        container = self._containers.get(container_id)
        if container is None or container.state not in ("starting", "running"):
            return
        container.finished_at = _now()
        container.started_at = container.started_at or container.finished_at
        container.state = "exited"
        container.exited.set()
        self._emit(container_id, container.pod.pod_uid, "kill")
        self._emit(container_id, container.pod.pod_uid, "die")

    async def remove_container(self, container_id: str) -> None:
        await self.stop_container(container_id, timeout=0)
        container = self._containers.pop(container_id, None)
        if container is not None:
            self._emit(container_id, container.pod.pod_uid, "destroy")

    async def list_containers(self) -> list[ContainerStatus]:
        return [ContainerStatus(
            id=c.id, pod_uid=c.pod.pod_uid, name=c.config.name, kind=c.config.kind, spec_hash=c.config.spec_hash,
            restart_count=c.config.restart_count, state="created" if c.state == "starting" else c.state,  # type: ignore[arg-type]
            image=c.config.image, image_id=c.image_id, created_at=c.created_at, started_at=c.started_at,
            finished_at=c.finished_at, reason="Completed" if c.state == "exited" else "",
        ) for c in self._containers.values()]

    # -- exec, logs, events --------------------------------------------------------------------

    def _running(self, container_id: str) -> _Container:
        container = self._container(container_id)
        if container.state != "running":
            raise RuntimeError_(f"container {container_id} is not running")
        return container

    async def exec_sync(self, container_id: str, command: Sequence[str], *, timeout: float) -> ExecResult:
        self._running(container_id)
        return ExecResult(exit_code=0, stdout=b"", stderr=b"")

    async def exec_stream(self, container_id: str, command: Sequence[str], *, output: OutputSink,
                          stdin: AsyncIterator[bytes] | None = None, tty: bool = False) -> int:
        self._running(container_id)
        if stdin is not None:
            async for _ in stdin:  # read and dropped, as a command that ignores its input
                pass
        return 0

    async def logs(self, container_id: str, *, follow: bool = False, tail: int | None = None,
                   since: datetime.datetime | None = None, timestamps: bool = False) -> AsyncIterator[bytes]:
        container = self._container(container_id)
        stamp = container.started_at
        if stamp is not None and tail != 0 and (since is None or stamp >= since):
            line = (f"hollow container {container.config.name} of pod {container.pod.namespace}/{container.pod.name}:"
                    " simulated, nothing runs\n")
            if timestamps:
                line = f"{stamp.strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z {line}"
            yield line.encode()
        if follow and container.state in ("starting", "running"):
            await container.exited.wait()

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        queue: asyncio.Queue[RuntimeEvent] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    async def ensure_volume(self, name: str, *, labels: Mapping[str, str]) -> None:
        self._volumes.setdefault(name, dict(labels))

    async def close(self) -> None:
        self._sandboxes.clear()
        self._containers.clear()
