"""Container probes and lifecycle hooks: exec, httpGet and tcpSocket handlers, and probe workers.

Invariants:

* A probe worker belongs to one container instance (its runtime id): a restarted container
  gets new workers starting from scratch (initialDelaySeconds, no successes), and the
  results of a dead container's probes are dropped with it.
* Results change only at the thresholds: readiness turns True after successThreshold
  successes in a row and False after failureThreshold failures; liveness and startup fail
  after failureThreshold failures. Every change is reported once through ``on_change``;
  the pod worker, not the probe, acts on it (restarting a container or rewriting status).
* Liveness and readiness probes wait until the startup probe (if any) has succeeded.
* A handler never raises: every failure (a refused connection, a timeout, a non-zero exit)
  is a :class:`Result` with ``ok`` False and a message for the Unhealthy event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import aiohttp

from podling.kubelet.runtime.base import Runtime, RuntimeError_

log = logging.getLogger("podling.kubelet.probes")

Obj = dict[str, Any]
ProbeType = Literal["liveness", "readiness", "startup"]
_OUTPUT_LIMIT = 10 * 1024  # bytes of probe output kept for a message, as the kubelet keeps


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    ok: bool
    message: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Where a probe or hook of one container instance runs."""

    container_id: str
    pod_ip: str
    ports: Mapping[str, int]  # the container's named ports


def _port(value: Any, target: Target) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, str) and value in target.ports:
        return target.ports[value]
    raise ValueError(f"port {value!r} is not a number or a named port of the container")


async def run_handler(handler: Mapping[str, Any], *, runtime: Runtime, target: Target, timeout: float) -> Result:
    """Run one probe or hook handler (``exec``, ``httpGet``, ``tcpSocket`` or ``sleep``)."""
    try:
        if "exec" in handler:
            command = list((handler["exec"] or {}).get("command") or ())
            result = await runtime.exec_sync(target.container_id, command, timeout=timeout)
            output = (result.stdout + result.stderr)[:_OUTPUT_LIMIT].decode(errors="replace").strip()
            if result.exit_code == 0:
                return Result(True, output)
            return Result(False, output or f"command {command!r} exited with {result.exit_code}")
        if "httpGet" in handler:
            return await _http_get(handler["httpGet"] or {}, target=target, timeout=timeout)
        if "tcpSocket" in handler:
            spec = handler["tcpSocket"] or {}
            host, port = spec.get("host") or target.pod_ip, _port(spec.get("port"), target)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            except (OSError, asyncio.TimeoutError) as err:
                return Result(False, f"dial tcp {host}:{port}: {err or 'i/o timeout'}")
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return Result(True)
        if "sleep" in handler:
            await asyncio.sleep(min(float((handler["sleep"] or {}).get("seconds") or 0), timeout))
            return Result(True)
        if "grpc" in handler:
            return Result(False, "grpc probes are not supported by podling's kubelet")
        return Result(False, "the handler has none of exec, httpGet, tcpSocket or sleep")
    except (RuntimeError_, ValueError) as err:
        return Result(False, str(err))


async def _http_get(spec: Mapping[str, Any], *, target: Target, timeout: float) -> Result:
    scheme = (spec.get("scheme") or "HTTP").lower()
    host = spec.get("host") or target.pod_ip
    port = _port(spec.get("port"), target)
    path = spec.get("path") or "/"
    url = f"{scheme}://{host}:{port}{path if path.startswith('/') else '/' + path}"
    headers = {"User-Agent": "kube-probe/1.32", "Accept": "*/*"}
    headers.update({h["name"]: h.get("value", "") for h in spec.get("httpHeaders") or () if h.get("name")})
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # probes do not verify certificates, as the kubelet's
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.get(url, headers=headers, ssl=insecure if scheme == "https" else None,
                            allow_redirects=True) as response:
            body = (await response.content.read(_OUTPUT_LIMIT)).decode(errors="replace")
            if 200 <= response.status < 400:
                return Result(True, body)
            return Result(False, f"HTTP probe failed with statuscode: {response.status}")
    except asyncio.TimeoutError:
        return Result(False, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)')
    except aiohttp.ClientError as err:
        return Result(False, f'Get "{url}": {err}')


@dataclasses.dataclass(slots=True)
class ProbeState:
    """What the probes of one container instance say now."""

    container_id: str
    ready: bool
    started: bool
    liveness_failed: bool = False
    startup_failed: bool = False
    message: str = ""
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)


class ProbeManager:
    """Probe workers for the running containers of every pod on the node.

    ``sync`` is called by the pod worker with the pod's running containers; it starts
    workers for new container instances and stops those of containers that are gone.
    ``on_change(pod_uid)`` is called (from the event loop) when a result changes;
    ``on_result(probe_type, result)`` counts each probe run; ``on_unhealthy(pod_uid,
    container, message)`` records a failed run (an Unhealthy event).
    """

    def __init__(
        self,
        *,
        runtime: Runtime,
        on_change: Callable[[str], None],
        on_result: Callable[[ProbeType, bool], None],
        on_unhealthy: Callable[[str, str, str], None],
    ) -> None:
        self.runtime = runtime
        self.on_change = on_change
        self.on_result = on_result
        self.on_unhealthy = on_unhealthy
        self._states: dict[tuple[str, str], ProbeState] = {}  # (pod uid, container name)

    def state(self, pod_uid: str, container: str) -> ProbeState | None:
        return self._states.get((pod_uid, container))

    def sync(self, *, pod_uid: str, pod_ip: str, containers: Sequence[tuple[Mapping[str, Any], str]]) -> None:
        """``containers``: (container spec, runtime id) of each running app container."""
        live = {spec["name"]: (spec, cid) for spec, cid in containers}
        for key in [k for k in self._states if k[0] == pod_uid]:
            name = key[1]
            if name not in live or live[name][1] != self._states[key].container_id:
                self._stop(key)
        for name, (spec, cid) in live.items():
            key = (pod_uid, name)
            if key in self._states:
                continue
            ports = {p["name"]: int(p["containerPort"]) for p in spec.get("ports") or () if p.get("name")}
            target = Target(container_id=cid, pod_ip=pod_ip, ports=ports)
            startup, readiness, liveness = spec.get("startupProbe"), spec.get("readinessProbe"), spec.get("livenessProbe")
            state = ProbeState(container_id=cid, ready=readiness is None, started=startup is None)
            self._states[key] = state
            started = asyncio.Event()
            if startup is None:
                started.set()
            else:
                state.tasks.append(self._spawn(pod_uid, name, "startup", startup, target, state, started))
            if readiness is not None:
                state.tasks.append(self._spawn(pod_uid, name, "readiness", readiness, target, state, started))
            if liveness is not None:
                state.tasks.append(self._spawn(pod_uid, name, "liveness", liveness, target, state, started))

    def forget(self, pod_uid: str) -> None:
        for key in [k for k in self._states if k[0] == pod_uid]:
            self._stop(key)

    def forget_container(self, pod_uid: str, container: str) -> None:
        if (pod_uid, container) in self._states:
            self._stop((pod_uid, container))

    def close(self) -> None:
        for key in [*self._states]:
            self._stop(key)

    def _stop(self, key: tuple[str, str]) -> None:
        state = self._states.pop(key)
        for task in state.tasks:
            task.cancel()

    def _spawn(self, pod_uid: str, name: str, kind: ProbeType, probe: Mapping[str, Any], target: Target,
               state: ProbeState, started: asyncio.Event) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(
            self._work(pod_uid, name, kind, probe, target, state, started), name=f"probe {kind} {pod_uid}/{name}")

    async def _work(self, pod_uid: str, name: str, kind: ProbeType, probe: Mapping[str, Any], target: Target,
                    state: ProbeState, started: asyncio.Event) -> None:
        if kind != "startup":
            await started.wait()
        await asyncio.sleep(float(probe.get("initialDelaySeconds") or 0))
        period = max(float(probe.get("periodSeconds") or 10), 0.1)
        timeout = max(float(probe.get("timeoutSeconds") or 1), 0.1)
        success_threshold = int(probe.get("successThreshold") or 1)
        failure_threshold = int(probe.get("failureThreshold") or 3)
        successes = failures = 0
        while True:
            result = await run_handler(probe, runtime=self.runtime, target=target, timeout=timeout)
            self.on_result(kind, result.ok)
            if result.ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
                self.on_unhealthy(pod_uid, name, f"{kind.capitalize()} probe failed: {result.message}")
            if kind == "readiness":
                if result.ok and successes >= success_threshold and not state.ready:
                    state.ready = True
                    self.on_change(pod_uid)
                elif not result.ok and failures >= failure_threshold and state.ready:
                    state.ready = False
                    self.on_change(pod_uid)
            elif kind == "startup":
                if result.ok:
                    state.started = True
                    started.set()
                    self.on_change(pod_uid)
                    return
                if failures >= failure_threshold:
                    state.startup_failed, state.message = True, result.message
                    self.on_change(pod_uid)
                    return
            elif not result.ok and failures >= failure_threshold:
                state.liveness_failed, state.message = True, result.message
                self.on_change(pod_uid)
                return
            await asyncio.sleep(period)
