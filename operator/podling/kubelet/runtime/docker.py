"""The Docker runtime: pods as a pause container plus containers that join its namespaces.

Invariants:

* The event loop never waits on Docker. Short request/response calls run on one bounded
  thread pool (``workers`` threads); anything that may block for long — stopping a container
  (which waits out its grace period), following logs, the event stream, an exec's output —
  runs on a thread of its own, so a burst of slow operations cannot starve status listing.
  Streams reach the loop through :class:`_Pump`, which bounds how far a reader runs ahead of
  its consumer and stops the reader (by shutting its socket down) when the consumer closes.
* Docker's own records are the state: names follow dockershim
  (``k8s_{container}_{pod}_{namespace}_{uid}_{restart}``, ``POD`` for the sandbox) and every
  container carries the ``LABEL_*`` labels of :mod:`.base`, so listing is one label-filtered
  ``containers`` call; a stale container holding a name we need is removed, never reused.
* Every failure leaves as :class:`~.base.RuntimeError_` (``NotFound`` for a missing
  container) carrying Docker's explanation, because it ends up in a pod's status.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import functools
import ipaddress
import socket
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import docker
import docker.errors
import docker.types
import requests
from docker.utils import parse_repository_tag
from docker.utils.socket import frames_iter

from podling.kubelet import images
from podling.kubelet.runtime.base import (
    LABEL_CONTAINER_HASH,
    LABEL_CONTAINER_KIND,
    LABEL_CONTAINER_NAME,
    LABEL_NODE,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    LABEL_RESTART_COUNT,
    SANDBOX_CONTAINER_NAME,
    ContainerConfig,
    ContainerState,
    ContainerStatus,
    ExecResult,
    ImageNeverPullError,
    ImagePullError,
    NotFound,
    OutputSink,
    PullPolicy,
    Runtime,
    RuntimeError_,
    RuntimeEvent,
    SandboxConfig,
    SandboxStatus,
)

T = TypeVar("T")

SANDBOX_STOP_TIMEOUT = 10.0  # seconds; pause exits on SIGTERM at once, this only bounds a wedged one
_KILL_WAIT = 30.0  # seconds to wait for a SIGKILLed container to be reported exited
_EXEC_EXIT_POLLS = 100  # × 50 ms: how long an exec may take to report its exit after its output ends
_CFS_PERIOD = 100_000  # µs, Kubernetes' CFS period
_EVENT_ACTIONS = ("create", "start", "kill", "die", "oom", "destroy")
_STATES: Mapping[str, ContainerState] = {
    "created": "created",
    "running": "running",
    "paused": "running",
    "restarting": "running",
    "exited": "exited",
    "dead": "exited",
}


def _explain(exc: BaseException) -> str:
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    return f"docker: {exc}"


def _runtime_error(exc: BaseException) -> RuntimeError_:
    if isinstance(exc, RuntimeError_):
        return exc
    if isinstance(exc, docker.errors.NotFound) and not isinstance(exc, docker.errors.ImageNotFound):
        return NotFound(_explain(exc))
    return RuntimeError_(_explain(exc))


# What a Docker call may raise besides bugs: the engine's errors and the transport's.
_DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def _parse_time(value: str | None) -> datetime.datetime | None:
    """Docker's RFC 3339 timestamps; its zero time ("0001-01-01T00:00:00Z") means never."""
    if not value or value.startswith("0001-01-01"):
        return None
    return datetime.datetime.fromisoformat(value)


def _shutdown_socket(raw: socket.socket, sock: Any) -> None:
    """Wake a thread blocked reading ``sock`` (``raw`` is its socket) and close it; safe twice."""
    with contextlib.suppress(OSError):
        raw.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _End:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class _Pump(Generic[T]):
    """One blocking stream read on a thread of its own, delivered to the event loop.

    ``opener`` runs on that thread and returns the items and a function that stops them
    (shutting the socket down wakes a blocked read). At most ``window`` items are in flight:
    the reader waits for the consumer, so a fast container and a slow client cost a bounded
    buffer. :meth:`close` (from the loop) stops the reader whatever it is doing.
    """

    def __init__(self, *, loop: asyncio.AbstractEventLoop, opener: Callable[[], tuple[Iterable[T], Callable[[], None]]],
                 name: str, window: int = 64) -> None:
        self._loop = loop
        self._opener = opener
        self._queue: asyncio.Queue[T | _End] = asyncio.Queue()
        self._credits = threading.Semaphore(window)
        self._lock = threading.Lock()
        self._closed = False
        self._stop: Callable[[], None] | None = None
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _deliver(self, item: T | _End) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _run(self) -> None:
        error: BaseException | None = None
        stop: Callable[[], None] | None = None
        try:
            items, stop = self._opener()
            with self._lock:
                self._stop = stop
                closed = self._closed
            if not closed:
                for item in items:
                    self._credits.acquire()
                    if self._closed:
                        break
                    self._deliver(item)
        except BaseException as exc:  # delivered to the consumer, who raises it
            error = exc
        finally:
            if stop is not None:
                stop()
            self._deliver(_End(None if self._closed else error))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            stop = self._stop
        self._credits.release()  # wake a reader waiting for credit
        if stop is not None:
            stop()

    async def items(self) -> AsyncGenerator[T, None]:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise _runtime_error(item.error) from item.error
                    return
                self._credits.release()
                yield item
        finally:
            self.close()


class DockerRuntime(Runtime):
    """Pods on one Docker engine, as the node ``node_name`` (several may share an engine)."""

    name = "docker"

    def __init__(self, *, node_name: str, network: str = "podling", subnet: str = "10.88.0.0/16",
                 ip_range: str = "10.88.0.0/17", base_url: str | None = None, workers: int = 16) -> None:
        if not ipaddress.ip_network(ip_range).subnet_of(ipaddress.ip_network(subnet)):  # type: ignore[arg-type]
            raise ValueError(f"the pod IP range {ip_range} is not inside the pod subnet {subnet}")
        self._node_name = node_name
        self._network = network
        self._subnet = subnet
        self._ip_range = ip_range
        self._base_url = base_url
        self._workers = workers
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"docker-{node_name}")
        self._client_lock = threading.Lock()
        self._client_: docker.DockerClient | None = None
        self._closed = False
        self._network_lock = asyncio.Lock()
        self._network_ready = False
        self._image_locks: dict[str, asyncio.Lock] = {}
        self._pumps: set[_Pump[Any]] = set()
        # Container id -> (its list state, its inspected State) for running and exited
        # containers, whose State does not change until the list state does.
        self._states: dict[str, tuple[str, Mapping[str, Any]]] = {}

    # -- plumbing ----------------------------------------------------------------------------

    def _client(self) -> docker.DockerClient:
        """The SDK client, made on first use (on a worker thread: it asks the engine's version)."""
        with self._client_lock:
            if self._client_ is None:
                # Streams and stops hold connections of their own beyond the pool's workers.
                pool_size = self._workers * 4
                if self._base_url is None:
                    self._client_ = docker.from_env(version="auto", max_pool_size=pool_size)
                else:
                    self._client_ = docker.DockerClient(base_url=self._base_url, version="auto", max_pool_size=pool_size)
            return self._client_

    async def _call(self, fn: Callable[[docker.DockerClient], T]) -> T:
        """Run a short Docker call on the pool; Docker's errors become RuntimeError_."""
        if self._closed:
            raise RuntimeError_("the docker runtime is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(self._client()))
        except _DOCKER_ERRORS as exc:
            raise _runtime_error(exc) from exc

    async def _call_in_own_thread(self, fn: Callable[[docker.DockerClient], T], *, name: str) -> T:
        """Like :meth:`_call`, for a call that may block for long (it must not hold a worker)."""
        if self._closed:
            raise RuntimeError_("the docker runtime is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def run() -> None:
            try:
                result, error = fn(self._client()), None
            except BaseException as exc:  # handed to the awaiting coroutine
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=run, name=name, daemon=True).start()
        try:
            return await future
        except _DOCKER_ERRORS as exc:
            raise _runtime_error(exc) from exc

    async def _stream(self, opener: Callable[[], tuple[Iterable[T], Callable[[], None]]], *,
                      name: str) -> AsyncGenerator[T, None]:
        """The items of a :class:`_Pump`, started on first iteration (an unread stream costs nothing)."""
        if self._closed:
            raise RuntimeError_("the docker runtime is closed")
        pump: _Pump[T] = _Pump(loop=asyncio.get_running_loop(), opener=opener, name=name)
        self._pumps.add(pump)
        try:
            async for item in pump.items():
                yield item
        finally:
            pump.close()
            self._pumps.discard(pump)

    # -- images, network, volumes ------------------------------------------------------------

    async def version(self) -> str:
        return str((await self._call(lambda c: c.api.version()))["Version"])

    async def _image_id(self, image: str) -> str | None:
        def inspect(c: docker.DockerClient) -> str | None:
            try:
                return str(c.api.inspect_image(image)["Id"])
            except docker.errors.ImageNotFound:
                return None

        return await self._call(inspect)

    async def ensure_image(self, image: str, *, policy: PullPolicy) -> tuple[str, bool]:
        """Built-in images are built when missing, even under ``Always``: their recipe is their registry."""
        builtin = image in images.BUILTIN_IMAGES
        reuse = policy != "Always" or builtin
        if reuse and (image_id := await self._image_id(image)):
            return image_id, False
        if policy == "Never":
            raise ImageNeverPullError(f'Container image "{image}" is not present with pull policy of Never')
        lock = self._image_locks.setdefault(image, asyncio.Lock())
        async with lock:  # one pull or build per image at a time; the others reuse its result
            if reuse and (image_id := await self._image_id(image)):
                return image_id, False
            try:
                if builtin:
                    await self._call(lambda c: images.build(c, image))
                else:
                    await self._call(lambda c: _pull(c, image))
            except RuntimeError_ as exc:
                raise ImagePullError(str(exc)) from exc
            image_id = await self._image_id(image)
            if image_id is None:
                raise ImagePullError(f"image {image!r} is still missing after pulling it")
            return image_id, True

    async def _ensure_network(self) -> None:
        async with self._network_lock:
            if not self._network_ready:
                await self._call(self._create_network)
                self._network_ready = True

    def _create_network(self, c: docker.DockerClient) -> None:
        # The names filter matches substrings: compare exactly.
        if any(n["Name"] == self._network for n in c.api.networks(names=[self._network])):
            return
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=self._subnet, iprange=self._ip_range)])
        try:
            c.api.create_network(self._network, driver="bridge", ipam=ipam, check_duplicate=True,
                                 labels={"io.podling.network": "pods"})
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: another kubelet of this engine made it meanwhile
                raise

    async def ensure_volume(self, name: str, *, labels: Mapping[str, str]) -> None:
        await self._call(lambda c: c.api.create_volume(name, driver="local", labels=dict(labels)))

    # -- sandboxes -----------------------------------------------------------------------------

    def _labels(self, pod: SandboxConfig, *, container: str, kind: str) -> dict[str, str]:
        return {
            LABEL_POD_UID: pod.pod_uid,
            LABEL_POD_NAME: pod.name,
            LABEL_POD_NAMESPACE: pod.namespace,
            LABEL_NODE: self._node_name,
            LABEL_CONTAINER_NAME: container,
            LABEL_CONTAINER_KIND: kind,
        }

    async def run_sandbox(self, config: SandboxConfig) -> str:
        await self._ensure_network()
        await self.ensure_image(images.PAUSE_IMAGE, policy="IfNotPresent")
        name = f"k8s_{SANDBOX_CONTAINER_NAME}_{config.name}_{config.namespace}_{config.pod_uid}_0"
        labels = self._labels(config, container=SANDBOX_CONTAINER_NAME, kind="sandbox")

        def run(c: docker.DockerClient) -> str:
            ports: list[tuple[int, str]] = []
            bindings: dict[str, list[Any]] = {}
            for m in config.port_mappings:
                if m.host_port <= 0:
                    continue
                proto = m.protocol.lower()
                ports.append((m.container_port, proto))
                bindings.setdefault(f"{m.container_port}/{proto}", []).append(
                    (m.host_ip, m.host_port) if m.host_ip else m.host_port)
            host_config = c.api.create_host_config(
                network_mode=self._network,
                ipc_mode="shareable",
                port_bindings=bindings or None,
                dns=list(config.dns_servers) or None,
                dns_search=list(config.dns_searches) or None,
                dns_opt=list(config.dns_options) or None,
                extra_hosts=dict(config.extra_hosts) or None,
            )
            sandbox_id = _create_fresh(c, name=name, image=images.PAUSE_IMAGE, hostname=config.hostname,
                                       labels=labels, ports=ports or None, host_config=host_config)
            try:
                c.api.start(sandbox_id)
            except _DOCKER_ERRORS:
                with contextlib.suppress(*_DOCKER_ERRORS):
                    c.api.remove_container(sandbox_id, force=True)
                raise
            return sandbox_id

        try:
            return await self._call(run)
        except NotFound as exc:  # the pod network was removed under us: make it again next time
            self._network_ready = False
            raise RuntimeError_(str(exc)) from exc

    async def stop_sandbox(self, sandbox_id: str) -> None:
        await self.stop_container(sandbox_id, timeout=SANDBOX_STOP_TIMEOUT)

    async def remove_sandbox(self, sandbox_id: str) -> None:
        await self.remove_container(sandbox_id)

    async def list_sandboxes(self) -> list[SandboxStatus]:
        filters = {"label": [f"{LABEL_NODE}={self._node_name}", f"{LABEL_CONTAINER_KIND}=sandbox"]}
        rows = await self._call(lambda c: c.api.containers(all=True, filters=filters))
        sandboxes = []
        for row in rows:
            labels = row.get("Labels") or {}
            if LABEL_POD_UID not in labels:
                continue
            networks = (row.get("NetworkSettings") or {}).get("Networks") or {}
            sandboxes.append(SandboxStatus(
                id=row["Id"],
                pod_uid=labels[LABEL_POD_UID],
                namespace=labels.get(LABEL_POD_NAMESPACE, ""),
                name=labels.get(LABEL_POD_NAME, ""),
                ready=row.get("State") == "running",
                ip=(networks.get(self._network) or {}).get("IPAddress") or "",
                created_at=datetime.datetime.fromtimestamp(row["Created"], datetime.UTC),
            ))
        return sandboxes

    # -- containers ----------------------------------------------------------------------------

    async def create_container(self, *, sandbox_id: str, pod: SandboxConfig, config: ContainerConfig) -> str:
        name = f"k8s_{config.name}_{pod.name}_{pod.namespace}_{pod.pod_uid}_{config.restart_count}"
        labels = self._labels(pod, container=config.name, kind=config.kind)
        labels[LABEL_CONTAINER_HASH] = config.spec_hash
        labels[LABEL_RESTART_COUNT] = str(config.restart_count)
        namespace_of_sandbox = f"container:{sandbox_id}"

        def create(c: docker.DockerClient) -> str:
            mounts = [
                docker.types.Mount(target=m.target, source=m.source if m.type != "tmpfs" else None,
                                   type=m.type, read_only=m.read_only)
                for m in config.mounts
            ]
            memory = config.memory_limit_bytes or None
            host_config = c.api.create_host_config(
                network_mode=namespace_of_sandbox,
                ipc_mode=namespace_of_sandbox,
                pid_mode=namespace_of_sandbox if pod.share_process_namespace else None,
                mounts=mounts or None,
                # A CFS quota, as Kubernetes sets it: Docker refuses NanoCpus above the
                # host's CPU count, a quota it takes (a limit of 4 CPUs on a 2-CPU node).
                cpu_period=_CFS_PERIOD if config.cpu_limit_millis else None,
                cpu_quota=_cpu_quota(config.cpu_limit_millis),
                mem_limit=memory,
                memswap_limit=memory,  # no swap, as Kubernetes
                cpu_shares=_cpu_shares(config.cpu_request_millis),
                privileged=config.privileged,
            )
            return _create_fresh(
                c, name=name, image=config.image, labels=labels, host_config=host_config,
                # Kubernetes' command replaces the image's ENTRYPOINT (and so drops its CMD);
                # args replace its CMD. Docker does the same when Entrypoint is set.
                entrypoint=list(config.command) or None,
                command=list(config.args) or None,
                environment=dict(config.env) or None,
                working_dir=config.working_dir or None,
                user=config.user or None,
                stdin_open=config.stdin,
                tty=config.tty,
            )

        return await self._call(create)

    async def start_container(self, container_id: str) -> None:
        await self._call(lambda c: c.api.start(container_id))

    async def stop_container(self, container_id: str, *, timeout: float) -> None:
        """The image's stop signal (SIGTERM by default), SIGKILL after ``timeout`` (fractions too)."""
        def stop(c: docker.DockerClient) -> None:
            try:
                info = c.api.inspect_container(container_id)
                if not info["State"]["Running"]:
                    return
                if timeout > 0:
                    _kill(c, container_id, info["Config"].get("StopSignal") or "SIGTERM")
                    if _wait_exit(c, container_id, timeout):
                        return
                _kill(c, container_id, "SIGKILL")
                _wait_exit(c, container_id, _KILL_WAIT)
            except docker.errors.NotFound:
                return

        await self._call_in_own_thread(stop, name=f"docker-stop-{container_id[:12]}")

    async def remove_container(self, container_id: str) -> None:
        def remove(c: docker.DockerClient) -> None:
            try:
                c.api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: its removal is already in progress
                    raise

        await self._call(remove)
        self._states.pop(container_id, None)

    async def list_containers(self) -> list[ContainerStatus]:
        """One list call; an inspect only for containers whose state changed since the last one.

        A container whose start failed stays ``created`` in Docker, with the exit code and
        error of the failure: it is reported exited (reason ``StartError``, as Kubernetes
        does), finished when it was created, so that its restart policy and back-off apply.
        """
        known = dict(self._states)

        def listing(c: docker.DockerClient) -> tuple[list[dict[str, Any]], dict[str, tuple[str, Mapping[str, Any]]]]:
            rows = c.api.containers(all=True, filters={"label": f"{LABEL_NODE}={self._node_name}"})
            rows = [r for r in rows if (r.get("Labels") or {}).get(LABEL_CONTAINER_KIND) in ("init", "app")]
            details: dict[str, tuple[str, Mapping[str, Any]]] = {}
            for row in rows:
                state = row.get("State", "")
                if _STATES.get(state) is None:
                    continue
                cached = known.get(row["Id"])
                if cached is not None and cached[0] == state:
                    details[row["Id"]] = cached
                    continue
                try:
                    info = c.api.inspect_container(row["Id"])
                except docker.errors.NotFound:  # removed since the list
                    continue
                details[row["Id"]] = (state, {**info["State"], "Created": info["Created"]})
            return rows, details

        rows, details = await self._call(listing)
        # A created container may still start; one that failed to start, and running and
        # exited ones, keep their State until Docker's list state changes.
        self._states = {cid: d for cid, d in details.items() if d[0] != "created" or _start_failed(d[1])}
        statuses = []
        for row in rows:
            labels = row["Labels"]
            if LABEL_POD_UID not in labels or LABEL_CONTAINER_NAME not in labels:
                continue
            detail = details.get(row["Id"], ("", {}))[1]
            state = _STATES.get(row.get("State", ""), "unknown")
            started_at = _parse_time(detail.get("StartedAt"))
            finished_at = _parse_time(detail.get("FinishedAt")) if state == "exited" else None
            exit_code = int(detail.get("ExitCode") or 0) if state == "exited" else 0
            reason = ""
            if state == "created" and _start_failed(detail):
                state, exit_code, reason = "exited", int(detail.get("ExitCode") or 128), "StartError"
                finished_at = _parse_time(detail.get("Created"))
            elif state == "exited":
                reason = "OOMKilled" if detail.get("OOMKilled") else "Completed" if exit_code == 0 else "Error"
            if started_at and finished_at and started_at > finished_at:
                # Docker stamps StartedAt after start returns; a process quicker than that
                # (`true`) "finishes" before it "started". It started no later than it finished.
                started_at = finished_at
            statuses.append(ContainerStatus(
                id=row["Id"],
                pod_uid=labels[LABEL_POD_UID],
                name=labels[LABEL_CONTAINER_NAME],
                kind=labels[LABEL_CONTAINER_KIND],
                spec_hash=labels.get(LABEL_CONTAINER_HASH, ""),
                restart_count=int(labels.get(LABEL_RESTART_COUNT) or 0),
                state=state,
                image=row.get("Image", ""),
                image_id=row.get("ImageID", ""),
                created_at=datetime.datetime.fromtimestamp(row["Created"], datetime.UTC),
                started_at=started_at,
                finished_at=finished_at,
                exit_code=exit_code,
                reason=reason,
                message=str(detail.get("Error") or ""),
            ))
        return statuses

    # -- exec, logs, events --------------------------------------------------------------------

    async def exec_sync(self, container_id: str, command: Sequence[str], *, timeout: float) -> ExecResult:
        """On timeout the exec's connection is dropped; the process may run on in the container."""
        out, err = bytearray(), bytearray()

        async def collect(stream: int, data: bytes) -> None:
            (err if stream == 2 else out).extend(data)

        try:
            code = await asyncio.wait_for(self.exec_stream(container_id, command, output=collect), timeout)
        except TimeoutError:
            raise RuntimeError_(f"command {list(command)!r} timed out after {timeout:g}s") from None
        return ExecResult(exit_code=code, stdout=bytes(out), stderr=bytes(err))

    async def exec_stream(self, container_id: str, command: Sequence[str], *, output: OutputSink,
                          stdin: AsyncIterator[bytes] | None = None, tty: bool = False) -> int:
        """Output through the exec's hijacked socket; ``stdin`` is written to it, then half-closed."""
        created = await self._call(lambda c: c.api.exec_create(
            container_id, list(command), stdout=True, stderr=True, stdin=stdin is not None, tty=tty))
        exec_id = created["Id"]
        sock = await self._call(lambda c: c.api.exec_start(exec_id, socket=True, tty=tty))
        raw = getattr(sock, "_sock", sock)
        raw.settimeout(None)  # the client's request timeout must not end a quiet, long exec
        frames = self._stream(lambda: (frames_iter(sock, tty), functools.partial(_shutdown_socket, raw, sock)),
                            name=f"docker-exec-{exec_id[:12]}")
        feeder = asyncio.create_task(self._feed(raw, stdin)) if stdin is not None else None
        try:
            async for stream, data in frames:
                await output(stream, data)
        finally:
            await frames.aclose()
            _shutdown_socket(raw, sock)
            if feeder is not None:
                feeder.cancel()
                await asyncio.gather(feeder, return_exceptions=True)  # a failed stdin ends with the exec
        for _ in range(_EXEC_EXIT_POLLS):
            info = await self._call(lambda c: c.api.exec_inspect(exec_id))
            if not info.get("Running"):
                return int(info.get("ExitCode") or 0)
            await asyncio.sleep(0.05)
        raise RuntimeError_(f"exec {exec_id[:12]} closed its output but did not exit")

    async def _feed(self, raw: socket.socket, stdin: AsyncIterator[bytes]) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            async for chunk in stdin:
                await loop.run_in_executor(self._pool, raw.sendall, chunk)
            raw.shutdown(socket.SHUT_WR)  # EOF: Docker closes the process's stdin

    def logs(self, container_id: str, *, follow: bool = False, tail: int | None = None,
             since: datetime.datetime | None = None, timestamps: bool = False) -> AsyncIterator[bytes]:
        """Docker ends a followed stream when the container exits; closing the iterator ends it too."""
        since_ts = since.timestamp() if since is not None and since.timestamp() > 0 else None

        def opener() -> tuple[Iterable[bytes], Callable[[], None]]:
            stream = self._client().api.logs(container_id, stdout=True, stderr=True, stream=True, follow=follow,
                                              tail="all" if tail is None else tail, since=since_ts,
                                              timestamps=timestamps)
            return stream, stream.close

        return self._stream(opener, name=f"docker-logs-{container_id[:12]}")

    def events(self) -> AsyncIterator[RuntimeEvent]:
        """From the moment of this call: the subscription asks Docker to replay since then."""
        return self._events(since=time.time())

    async def _events(self, *, since: float) -> AsyncIterator[RuntimeEvent]:
        filters = {"type": "container", "label": [f"{LABEL_NODE}={self._node_name}"], "event": list(_EVENT_ACTIONS)}

        def opener() -> tuple[Iterable[dict[str, Any]], Callable[[], None]]:
            stream = self._client().api.events(since=f"{since:.9f}", filters=filters, decode=True)
            return stream, stream.close

        async for event in self._stream(opener, name=f"docker-events-{self._node_name}"):
            action = event.get("Action") or event.get("status") or ""
            if action not in _EVENT_ACTIONS:
                continue
            actor = event.get("Actor") or {}
            yield RuntimeEvent(container_id=actor.get("ID") or event.get("id", ""),
                               pod_uid=(actor.get("Attributes") or {}).get(LABEL_POD_UID, ""), action=action)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pump in list(self._pumps):
            pump.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._client_lock:
            if self._client_ is not None:
                self._client_.close()


def _pull(c: docker.DockerClient, image: str) -> None:
    repository, tag = parse_repository_tag(image)
    # A pull that started can still fail: Docker reports that inside the stream, not as a status.
    for line in c.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
        if "error" in line:
            raise RuntimeError_((line.get("errorDetail") or {}).get("message") or line["error"])


def _create_fresh(c: docker.DockerClient, *, name: str, **kwargs: Any) -> str:
    """Create the container ``name``, removing a stale one that holds the name."""
    try:
        return str(c.api.create_container(name=name, **kwargs)["Id"])
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            raise
    c.api.remove_container(name, force=True, v=True)
    return str(c.api.create_container(name=name, **kwargs)["Id"])


def _start_failed(state: Mapping[str, Any]) -> bool:
    """Whether a ``created`` container's State records a failed start."""
    return bool(state.get("Error") or state.get("ExitCode"))


def _cpu_quota(limit_millis: int) -> int | None:
    """Kubernetes' MilliCPUToQuota: the limit's share of a 100 ms period, at least 1 ms."""
    return max(1000, limit_millis * _CFS_PERIOD // 1000) if limit_millis else None


def _cpu_shares(request_millis: int) -> int:
    """Kubernetes' MilliCPUToShares: 1024 per CPU, at least 2 (also for no request)."""
    return max(2, request_millis * 1024 // 1000)


def _kill(c: docker.DockerClient, container_id: str, signal: str) -> None:
    try:
        c.api.kill(container_id, signal=signal)
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: not running any more
            raise


def _wait_exit(c: docker.DockerClient, container_id: str, timeout: float) -> bool:
    """Whether the container stopped running within ``timeout`` seconds."""
    try:
        c.api.wait(container_id, timeout=timeout, condition="not-running")
    except (requests.exceptions.Timeout, requests.exceptions.ConnectionError):
        return False
    return True
