"""A pod's status, computed from its spec and what the runtime reports: pure functions.

Invariant: :func:`pod_status` depends only on its arguments (no clock but ``now``, no I/O),
so the same observation always gives the same status, and a status that did not change is
recognisably equal to the last one written (conditions keep their lastTransitionTime while
their status stays the same). Phases follow the kubelet's ``getPhase``: a pod waiting for
any container is Pending, one with a running container Running, one whose containers all
stopped for good Succeeded or Failed; a terminal phase never changes again.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from podling.api import meta
from podling.api.quantity import parse_quantity
from podling.kubelet.runtime.base import ContainerStatus, SandboxStatus

Obj = dict[str, Any]
TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclasses.dataclass(frozen=True, slots=True)
class PodRuntime:
    """What the runtime holds for one pod: its sandboxes and containers, every attempt."""

    sandboxes: tuple[SandboxStatus, ...] = ()
    containers: tuple[ContainerStatus, ...] = ()

    @property
    def sandbox(self) -> SandboxStatus | None:
        """The newest sandbox."""
        return max(self.sandboxes, key=lambda s: s.created_at, default=None)

    def attempts(self, name: str) -> list[ContainerStatus]:
        """The containers run for ``name``, newest first."""
        return sorted((c for c in self.containers if c.name == name),
                      key=lambda c: (c.restart_count, c.created_at), reverse=True)

    def latest(self, name: str) -> ContainerStatus | None:
        attempts = self.attempts(name)
        return attempts[0] if attempts else None

    def previous(self, name: str) -> ContainerStatus | None:
        attempts = self.attempts(name)
        return attempts[1] if len(attempts) > 1 else None

    @property
    def running(self) -> list[ContainerStatus]:
        return [c for c in self.containers if c.state == "running"]


@dataclasses.dataclass(frozen=True, slots=True)
class Waiting:
    """Why a container is not running now, as the kubelet knows it (not the runtime)."""

    reason: str  # ContainerCreating, PodInitializing, ErrImagePull, CrashLoopBackOff, ...
    message: str = ""


def time_of(when: datetime.datetime | None) -> str | None:
    return meta.format_time(when) if when is not None else None


def container_id(status: ContainerStatus, *, runtime: str) -> str:
    return f"{runtime}://{status.id}"


def _terminated(status: ContainerStatus, *, runtime: str) -> Obj:
    terminated: Obj = {"exitCode": status.exit_code, "reason": status.reason or ("Completed" if status.exit_code == 0
                                                                                 else "Error"),
                       "containerID": container_id(status, runtime=runtime)}
    if status.message:
        terminated["message"] = status.message
    if started := time_of(status.started_at):
        terminated["startedAt"] = started
    if finished := time_of(status.finished_at):
        terminated["finishedAt"] = finished
    return terminated


def container_status(
    spec: Mapping[str, Any],
    observed: PodRuntime,
    *,
    runtime: str,
    waiting: Waiting | None,
    ready: bool,
    started: bool,
) -> Obj:
    """One entry of status.containerStatuses (or initContainerStatuses)."""
    name = spec["name"]
    latest = observed.latest(name)
    status: Obj = {"name": name, "image": spec.get("image", ""), "imageID": "", "ready": False,
                   "restartCount": 0, "started": False, "state": {}, "lastState": {}}
    last = None
    if latest is not None:
        status["restartCount"] = latest.restart_count
        status["image"] = spec.get("image") or latest.image
        status["imageID"] = f"{runtime}-pullable://{latest.image_id}" if latest.image_id else ""
        status["containerID"] = container_id(latest, runtime=runtime)
        if latest.state == "running" and waiting is None:
            status["state"] = {"running": {"startedAt": time_of(latest.started_at)}}
            status["ready"] = ready
            status["started"] = started
            last = observed.previous(name)
        elif latest.state in ("exited", "unknown") and waiting is None:
            status["state"] = {"terminated": _terminated(latest, runtime=runtime)}
            last = observed.previous(name)
        else:  # created but not started, or the kubelet is about to replace it
            # The exited attempt (waiting out its back-off) is the last state.
            last = latest if latest.state == "exited" else observed.previous(name)
    if not status["state"]:
        reason = waiting or Waiting("ContainerCreating")
        state: Obj = {"reason": reason.reason}
        if reason.message:
            state["message"] = reason.message
        status["state"] = {"waiting": state}
    if last is not None and last.state in ("exited", "unknown"):
        status["lastState"] = {"terminated": _terminated(last, runtime=runtime)}
    return status


def _state_kind(status: Mapping[str, Any]) -> str:
    return next(iter(status.get("state") or {}), "")


def phase(pod: Mapping[str, Any], *, init_statuses: Sequence[Obj], statuses: Sequence[Obj]) -> str:
    """The pod's phase from its container statuses, as the kubelet's getPhase decides it."""
    spec = pod.get("spec") or {}
    policy = spec.get("restartPolicy") or "Always"
    pending_init = failed_init = 0
    by_name = {s["name"]: s for s in init_statuses}
    for container in spec.get("initContainers") or ():
        status = by_name.get(container["name"])
        kind = _state_kind(status) if status else ""
        if kind == "terminated":
            failed_init += status["state"]["terminated"].get("exitCode", 0) != 0  # type: ignore[index]
        elif kind == "waiting" and "terminated" in (status.get("lastState") or {}):  # type: ignore[union-attr]
            failed_init += status["lastState"]["terminated"].get("exitCode", 0) != 0  # type: ignore[index]
            pending_init += status["lastState"]["terminated"].get("exitCode", 0) == 0  # type: ignore[index]
        else:
            pending_init += 1
    unknown = running = waiting = stopped = succeeded = 0
    by_name = {s["name"]: s for s in statuses}
    for container in spec.get("containers") or ():
        status = by_name.get(container["name"])
        kind = _state_kind(status) if status else ""
        if kind == "running":
            running += 1
        elif kind == "terminated":
            stopped += 1
            succeeded += status["state"]["terminated"].get("exitCode", 0) == 0  # type: ignore[index]
        elif kind == "waiting":
            if "terminated" in (status.get("lastState") or {}):  # type: ignore[union-attr]
                stopped += 1
            else:
                waiting += 1
        else:
            unknown += 1
    if failed_init and policy == "Never":
        return "Failed"
    if pending_init or waiting:
        return "Pending"
    if running and not unknown:
        return "Running"
    if not running and stopped and not unknown:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def all_containers(pod: Mapping[str, Any]) -> list[Obj]:
    """The pod's init containers and app containers, in that order."""
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]


def qos_class(pod: Mapping[str, Any]) -> str:
    """Guaranteed, Burstable or BestEffort, from the containers' requests and limits."""
    containers = all_containers(pod)
    any_set = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = {**limits, **(resources.get("requests") or {})}
        if limits or requests:
            any_set = True
        for name in ("cpu", "memory"):
            if name not in limits or parse_quantity(str(requests.get(name, limits[name]))) != \
                    parse_quantity(str(limits[name])):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _condition(old: Sequence[Obj], *, type_: str, true: bool, reason: str = "", message: str = "",
               now: str) -> Obj:
    status = "True" if true else "False"
    previous = next((c for c in old if c.get("type") == type_), None)
    condition: Obj = {"type": type_, "status": status, "lastProbeTime": None,
                      "lastTransitionTime": previous.get("lastTransitionTime") if previous and
                      previous.get("status") == status and previous.get("lastTransitionTime") else now}
    if not true and reason:
        condition["reason"] = reason
    if not true and message:
        condition["message"] = message
    return condition


def pod_status(
    pod: Mapping[str, Any],
    observed: PodRuntime,
    *,
    runtime: str,
    host_ip: str,
    waiting: Mapping[str, Waiting],
    ready: Mapping[str, bool],
    started: Mapping[str, bool],
    now: datetime.datetime,
    message: str = "",
    reason: str = "",
) -> Obj:
    """The whole ``status`` of ``pod`` (keyed by container name: waiting reasons, readiness, startup)."""
    spec = pod.get("spec") or {}
    old = pod.get("status") or {}
    stamp = meta.format_time(now)
    init_statuses = [
        container_status(c, observed, runtime=runtime, waiting=waiting.get(c["name"]), ready=False, started=False)
        for c in spec.get("initContainers") or ()
    ]
    for status in init_statuses:  # an init container that finished is ready, as Kubernetes reports it
        if _state_kind(status) == "terminated" and status["state"]["terminated"]["exitCode"] == 0:
            status["ready"] = True
    statuses = [
        container_status(c, observed, runtime=runtime, waiting=waiting.get(c["name"]),
                         ready=ready.get(c["name"], False), started=started.get(c["name"], False))
        for c in spec.get("containers") or ()
    ]
    new_phase = old.get("phase") if old.get("phase") in TERMINAL_PHASES else \
        phase(pod, init_statuses=init_statuses, statuses=statuses)

    incomplete = [s["name"] for s in init_statuses if not s["ready"]]
    initialized = not incomplete or any(_state_kind(s) != "waiting" or s["lastState"] for s in statuses)
    unready = [s["name"] for s in statuses if not s["ready"]]
    conditions_old = old.get("conditions") or ()
    if new_phase in TERMINAL_PHASES:
        ready_kw: dict[str, Any] = {"true": False, "reason": "PodCompleted"}
    else:
        ready_kw = {"true": not unready, "reason": "ContainersNotReady",
                    "message": f"containers with unready status: [{' '.join(unready)}]"}
    conditions = [
        _condition(conditions_old, type_="Initialized", now=stamp,
                   **({"true": True} if initialized else
                      {"true": False, "reason": "ContainersNotInitialized",
                       "message": f"containers with incomplete status: [{' '.join(incomplete)}]"})),
        _condition(conditions_old, type_="Ready", now=stamp, **ready_kw),
        _condition(conditions_old, type_="ContainersReady", now=stamp, **ready_kw),
        _condition(conditions_old, type_="PodScheduled", true=True, now=stamp),
    ]
    status: Obj = {
        "phase": new_phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}] if host_ip else [],
        "startTime": old.get("startTime") or stamp,
        "qosClass": qos_class(pod),
        "containerStatuses": statuses,
    }
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    sandbox = observed.sandbox
    pod_ip = sandbox.ip if sandbox is not None and sandbox.ready and sandbox.ip else old.get("podIP", "")
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if message:
        status["message"] = message
    if reason:
        status["reason"] = reason
    return status


def is_terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES
