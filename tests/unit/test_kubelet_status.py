"""Pod status from spec and runtime state: phases, container states, conditions, QoS; back-off."""

from __future__ import annotations

import datetime

import pytest

from podling.kubelet.backoff import Backoff
from podling.kubelet.runtime.base import ContainerStatus, SandboxStatus
from podling.kubelet.status import PodRuntime, Waiting, phase, pod_status, qos_class

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
NOW = T0 + datetime.timedelta(minutes=5)


def _pod(*, containers=("app",), init=(), policy="Always", status=None, resources=None) -> dict:
    spec = {"restartPolicy": policy,
            "containers": [{"name": n, "image": "img", **({"resources": resources} if resources else {})}
                           for n in containers]}
    if init:
        spec["initContainers"] = [{"name": n, "image": "img"} for n in init]
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": spec, "status": status or {}}


def _sandbox(ready: bool = True) -> SandboxStatus:
    return SandboxStatus(id="sb", pod_uid="u1", namespace="ns", name="p", ready=ready, ip="10.88.0.5", created_at=T0)


def _c(name: str, state: str, *, rc: int = 0, exit_code: int = 0, minute: int = 1) -> ContainerStatus:
    at = T0 + datetime.timedelta(minutes=minute)
    return ContainerStatus(id=f"{name}-{rc}", pod_uid="u1", name=name, kind="app", spec_hash="h", restart_count=rc,
                           state=state, image="img", image_id="sha256:abc", created_at=at, started_at=at,
                           finished_at=at + datetime.timedelta(seconds=30) if state == "exited" else None,
                           exit_code=exit_code, reason="" if state != "exited" else ("Completed" if exit_code == 0
                                                                                     else "Error"))


def _status(pod, observed, *, waiting=None, ready=None):
    return pod_status(pod, observed, runtime="docker", host_ip="127.0.0.1", waiting=waiting or {},
                      ready=ready or {}, started={}, now=NOW)


def test_running_container_gives_running_phase_and_ready_conditions() -> None:
    status = _status(_pod(), PodRuntime((_sandbox(),), (_c("app", "running"),)), ready={"app": True})
    assert status["phase"] == "Running"
    assert status["podIP"] == "10.88.0.5" and status["podIPs"] == [{"ip": "10.88.0.5"}]
    cs = status["containerStatuses"][0]
    assert cs["state"]["running"]["startedAt"] == "2026-01-01T00:01:00Z"
    assert cs["ready"] is True and cs["containerID"] == "docker://app-0" and cs["restartCount"] == 0
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Initialized": "True", "Ready": "True", "ContainersReady": "True", "PodScheduled": "True"}


def test_unready_container_names_itself_in_the_ready_condition() -> None:
    status = _status(_pod(containers=("a", "b")),
                     PodRuntime((_sandbox(),), (_c("a", "running"), _c("b", "running"))), ready={"a": True})
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready == {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                     "message": "containers with unready status: [b]", "lastProbeTime": None,
                     "lastTransitionTime": "2026-01-01T00:05:00Z"}


def test_condition_keeps_its_transition_time_while_unchanged() -> None:
    old = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2025-12-31T00:00:00Z"},
                          {"type": "Initialized", "status": "False", "lastTransitionTime": "2025-12-30T00:00:00Z"}]}
    status = _status(_pod(status=old), PodRuntime((_sandbox(),), (_c("app", "running"),)), ready={"app": True})
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["Ready"]["lastTransitionTime"] == "2025-12-31T00:00:00Z"
    assert by_type["Initialized"]["lastTransitionTime"] == "2026-01-01T00:05:00Z"  # it changed


@pytest.mark.parametrize(("policy", "exit_code", "expected"), [
    ("Never", 0, "Succeeded"), ("Never", 1, "Failed"), ("OnFailure", 0, "Succeeded"), ("Always", 0, "Running"),
])
def test_exited_container_phase_follows_restart_policy(policy: str, exit_code: int, expected: str) -> None:
    status = _status(_pod(policy=policy), PodRuntime((_sandbox(),), (_c("app", "exited", exit_code=exit_code),)))
    assert status["phase"] == expected
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == exit_code
    assert terminated["reason"] == ("Completed" if exit_code == 0 else "Error")


def test_crash_loop_shows_waiting_with_last_state_and_restart_count() -> None:
    observed = PodRuntime((_sandbox(),), (_c("app", "exited", rc=2, exit_code=1, minute=3),
                                          _c("app", "exited", rc=1, exit_code=1, minute=2)))
    waiting = {"app": Waiting("CrashLoopBackOff", "back-off 20s restarting failed container=app")}
    status = _status(_pod(), observed, waiting=waiting)
    cs = status["containerStatuses"][0]
    assert cs["state"] == {"waiting": {"reason": "CrashLoopBackOff",
                                       "message": "back-off 20s restarting failed container=app"}}
    assert cs["lastState"]["terminated"]["containerID"] == "docker://app-2"
    assert cs["restartCount"] == 2
    assert status["phase"] == "Running"


def test_restarted_container_reports_previous_attempt_as_last_state() -> None:
    observed = PodRuntime((_sandbox(),), (_c("app", "running", rc=1, minute=4), _c("app", "exited", rc=0,
                                                                                   exit_code=137, minute=2)))
    cs = _status(_pod(), observed)["containerStatuses"][0]
    assert cs["restartCount"] == 1 and "running" in cs["state"]
    assert cs["lastState"]["terminated"]["exitCode"] == 137


def test_pending_while_creating_and_init_containers_gate_initialized() -> None:
    pod = _pod(init=("setup",))
    status = _status(pod, PodRuntime((_sandbox(),), (_c("setup", "running"),)))
    assert status["phase"] == "Pending"
    initialized = next(c for c in status["conditions"] if c["type"] == "Initialized")
    assert initialized["status"] == "False" and initialized["message"] == "containers with incomplete status: [setup]"
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    done = _status(pod, PodRuntime((_sandbox(),), (_c("setup", "exited"), _c("app", "running", minute=2))))
    assert done["phase"] == "Running"
    assert next(c for c in done["conditions"] if c["type"] == "Initialized")["status"] == "True"
    assert done["initContainerStatuses"][0]["ready"] is True


def test_failed_init_container_with_never_fails_the_pod() -> None:
    status = _status(_pod(init=("setup",), policy="Never"),
                     PodRuntime((_sandbox(),), (_c("setup", "exited", exit_code=2),)))
    assert status["phase"] == "Failed"


def test_terminal_phase_is_kept_and_not_ready() -> None:
    pod = _pod(policy="Never", status={"phase": "Succeeded"})
    status = _status(pod, PodRuntime((_sandbox(False),), (_c("app", "exited"),)))
    assert status["phase"] == "Succeeded"
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["reason"] == "PodCompleted"


@pytest.mark.parametrize(("resources", "expected"), [
    (None, "BestEffort"),
    ({"limits": {"cpu": "500m", "memory": "64Mi"}}, "Guaranteed"),
    ({"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "0.5", "memory": "64Mi"}}, "Guaranteed"),
    ({"requests": {"cpu": "100m"}}, "Burstable"),
    ({"limits": {"cpu": "1"}}, "Burstable"),
])
def test_qos_class(resources, expected: str) -> None:
    assert qos_class(_pod(resources=resources)) == expected


def test_phase_counts_waiting_without_history_as_pending() -> None:
    pod = _pod(containers=("a", "b"))
    statuses = [{"name": "a", "state": {"running": {}}}, {"name": "b", "state": {"waiting": {}}, "lastState": {}}]
    assert phase(pod, init_statuses=[], statuses=statuses) == "Pending"
    statuses[1]["lastState"] = {"terminated": {"exitCode": 1}}
    assert phase(pod, init_statuses=[], statuses=statuses) == "Running"


def test_backoff_doubles_to_the_cap_and_resets_after_quiet_time() -> None:
    now = [1000.0]
    backoff = Backoff(initial=10, maximum=300, reset=600, clock=lambda: now[0])
    assert backoff.remaining("k", since=now[0]) == 0  # the first restart is immediate
    delays = []
    for _ in range(7):
        backoff.next("k")
        delays.append(backoff.delay("k"))
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    assert backoff.remaining("k", since=now[0] - 100) == 200
    now[0] += 601  # ran for ten minutes
    assert backoff.remaining("k", since=now[0]) == 0 and backoff.delay("k") == 0
