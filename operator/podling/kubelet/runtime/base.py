"""The container runtime interface: what the kubelet asks of Docker (or of the hollow runtime).

Invariants:

* The runtime is stateless towards the kubelet: everything the kubelet needs to find its pods
  again after a restart is in the runtime's own records, as labels on each sandbox and
  container (:data:`LABEL_*`). ``list_sandboxes`` and ``list_containers`` return only what
  belongs to this runtime's node, so several kubelets can share one Docker engine.
* A pod is one sandbox (the pause container holding the network, IPC and optionally PID
  namespaces) plus its containers, which join the sandbox's namespaces.
* Every method is a coroutine and never blocks the event loop; failures are
  :class:`RuntimeError_` (or its subclasses), carrying the engine's own message for the
  pod's status.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Literal

LABEL_POD_UID = "io.podling.pod.uid"
LABEL_POD_NAME = "io.podling.pod.name"
LABEL_POD_NAMESPACE = "io.podling.pod.namespace"
LABEL_NODE = "io.podling.node"
LABEL_CONTAINER_NAME = "io.podling.container.name"  # "POD" on sandboxes, as dockershim named them
LABEL_CONTAINER_KIND = "io.podling.container.kind"  # sandbox | init | app
LABEL_CONTAINER_HASH = "io.podling.container.hash"  # hash of the container's spec
LABEL_RESTART_COUNT = "io.podling.container.restart-count"
SANDBOX_CONTAINER_NAME = "POD"

PullPolicy = Literal["Always", "IfNotPresent", "Never"]
ContainerKind = Literal["init", "app"]
ContainerState = Literal["created", "running", "exited", "unknown"]


class RuntimeError_(Exception):  # noqa: N801 - not the builtin RuntimeError
    """A runtime operation failed; the message is the engine's, fit for a pod's status."""


class ImagePullError(RuntimeError_):
    """The image is not present and could not be pulled (reason ErrImagePull)."""


class ImageNeverPullError(RuntimeError_):
    """The image is not present and the pull policy is Never (reason ErrImageNeverPull)."""


class NotFound(RuntimeError_):
    """The sandbox or container no longer exists."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PortMapping:
    container_port: int
    host_port: int
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    host_ip: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SandboxConfig:
    pod_uid: str
    namespace: str
    name: str
    hostname: str
    port_mappings: Sequence[PortMapping] = ()
    share_process_namespace: bool = False
    dns_servers: Sequence[str] = ()
    dns_searches: Sequence[str] = ()
    dns_options: Sequence[str] = ()
    extra_hosts: Mapping[str, str] = dataclasses.field(default_factory=dict)  # hostname -> IP


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """``source`` is a host path (``bind``), a named volume (``volume``) or unused (``tmpfs``)."""

    target: str
    source: str = ""
    type: Literal["bind", "volume", "tmpfs"] = "bind"
    read_only: bool = False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ContainerConfig:
    name: str
    kind: ContainerKind
    image: str
    spec_hash: str
    restart_count: int
    command: Sequence[str] = ()  # Kubernetes' command: the entrypoint; empty keeps the image's
    args: Sequence[str] = ()  # Kubernetes' args: the cmd; empty keeps the image's (if no command)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    working_dir: str = ""
    mounts: Sequence[Mount] = ()
    cpu_limit_millis: int = 0  # 0: unlimited
    memory_limit_bytes: int = 0  # 0: unlimited
    cpu_request_millis: int = 0  # cpu shares, as Kubernetes derives them
    user: str = ""  # "uid" or "uid:gid"
    privileged: bool = False
    stdin: bool = False
    tty: bool = False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SandboxStatus:
    id: str
    pod_uid: str
    namespace: str
    name: str
    ready: bool  # the pause container is running
    ip: str
    created_at: datetime.datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ContainerStatus:
    id: str
    pod_uid: str
    name: str
    kind: ContainerKind
    spec_hash: str
    restart_count: int
    state: ContainerState
    image: str
    image_id: str
    created_at: datetime.datetime
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    exit_code: int = 0
    reason: str = ""  # for exited containers: Completed, Error or OOMKilled
    message: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeEvent:
    """A container of this node changed state (Docker's die/start/oom/destroy …)."""

    container_id: str
    pod_uid: str
    action: str


# An output callback of a streaming exec: (stream 1 = stdout or 2 = stderr, bytes).
OutputSink = Callable[[int, bytes], Awaitable[None]]


class Runtime(abc.ABC):
    """One node's container runtime. ``name`` is what Node.status.nodeInfo reports (``docker``)."""

    name: str

    @abc.abstractmethod
    async def version(self) -> str:
        """The engine's version, as ``nodeInfo.containerRuntimeVersion`` shows it after ``NAME://``."""

    @abc.abstractmethod
    async def ensure_image(self, image: str, *, policy: PullPolicy) -> tuple[str, bool]:
        """(image id, pulled now?) after honouring ``policy``; ImagePullError/ImageNeverPullError."""

    @abc.abstractmethod
    async def run_sandbox(self, config: SandboxConfig) -> str:
        """Create and start the pod's pause container; its id."""

    @abc.abstractmethod
    async def stop_sandbox(self, sandbox_id: str) -> None:
        """Stop the pause container (its containers should be stopped first); NotFound is fine."""

    @abc.abstractmethod
    async def remove_sandbox(self, sandbox_id: str) -> None:
        """Remove the pause container; NotFound is fine."""

    @abc.abstractmethod
    async def list_sandboxes(self) -> list[SandboxStatus]:
        """This node's sandboxes, running or not."""

    @abc.abstractmethod
    async def create_container(self, *, sandbox_id: str, pod: SandboxConfig, config: ContainerConfig) -> str:
        """Create a container in the sandbox's namespaces (not started); its id."""

    @abc.abstractmethod
    async def start_container(self, container_id: str) -> None: ...

    @abc.abstractmethod
    async def stop_container(self, container_id: str, *, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; an exited container is fine."""

    @abc.abstractmethod
    async def remove_container(self, container_id: str) -> None:
        """Remove (and kill if needed) the container; NotFound is fine."""

    @abc.abstractmethod
    async def list_containers(self) -> list[ContainerStatus]:
        """This node's app and init containers (not sandboxes), in any state."""

    @abc.abstractmethod
    async def exec_sync(self, container_id: str, command: Sequence[str], *, timeout: float) -> ExecResult:
        """Run ``command`` in the container and collect its output (probes and hooks).

        A command still running after ``timeout`` seconds gives RuntimeError_ (the probe
        counts it as a failure).
        """

    @abc.abstractmethod
    async def exec_stream(self, container_id: str, command: Sequence[str], *, output: OutputSink,
                          stdin: AsyncIterator[bytes] | None = None, tty: bool = False) -> int:
        """Run ``command`` streaming its output to ``output``; its exit code."""

    @abc.abstractmethod
    def logs(self, container_id: str, *, follow: bool = False, tail: int | None = None,
             since: datetime.datetime | None = None, timestamps: bool = False) -> AsyncIterator[bytes]:
        """The container's output (stdout and stderr interleaved), following if asked."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[RuntimeEvent]:
        """Changes of this node's containers, as they happen (until the iterator is closed)."""

    @abc.abstractmethod
    async def ensure_volume(self, name: str, *, labels: Mapping[str, str]) -> None:
        """A named volume that outlives pods (a PersistentVolumeClaim's storage)."""

    async def close(self) -> None:
        """Release connections and threads."""
