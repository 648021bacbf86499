"""The kubelet end to end: a real API server, a real ``podling kubelet`` process, real Docker
containers, driven and inspected with the real kubectl (and docker for what happens outside).

Pods set spec.nodeName themselves (there is no scheduler yet). Everything runs in one
namespace on one node whose containers are removed when the module ends.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from podling_process import KubeletProcess, PodlingProcess
from waiting import wait_for

NS = "kubelet-e2e"
IMAGE = "podling/busybox:1.35"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PodlingProcess, KubeletProcess]]:
    server = PodlingProcess(data_dir=tmp_path_factory.mktemp("apiserver")).start()
    root = tmp_path_factory.mktemp("kubelet")
    node = f"e2e-{uuid.uuid4().hex[:6]}"
    kubelet = KubeletProcess(server=server, node_name=node, root_dir=root,
                             args=("--manifest-dir", str(root / "manifests"), "--address", "127.0.0.1",
                                   "--node-status-update-frequency", "2", "--node-lease-renew-interval", "2"))
    try:
        kubelet.start()
        server.kubectl("create", "namespace", NS)
        yield server, kubelet
    finally:
        try:
            kubelet.stop()
        finally:
            kubelet.remove_containers()
            server.stop()


@pytest.fixture
def api(cluster: tuple[PodlingProcess, KubeletProcess]) -> PodlingProcess:
    return cluster[0]


@pytest.fixture
def kubelet(cluster: tuple[PodlingProcess, KubeletProcess]) -> KubeletProcess:
    return cluster[1]



def apply(api: PodlingProcess, obj: dict[str, Any]) -> None:
    api.kubectl("apply", "-f", "-", input=json.dumps(obj))


def pod_manifest(name: str, node: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    for container in containers:
        container.setdefault("image", IMAGE)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 2, "containers": containers, **spec}}


def get_pod(api: PodlingProcess, name: str) -> dict[str, Any]:
    return api.kubectl_json("get", "pod", name, "-n", NS)


def phase_is(api: PodlingProcess, name: str, phase: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        result = api.kubectl("get", "pod", name, "-n", NS, "-o", "json", check=False)
        pod = json.loads(result.stdout) if result.returncode == 0 else {}
        return pod if pod.get("status", {}).get("phase") == phase else None
    return check


def ready(api: PodlingProcess, name: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        pod = get_pod(api, name)
        conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        return pod if conditions.get("Ready") == "True" else None
    return check


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in pod["status"]["containerStatuses"] if s["name"] == name)


def events(api: PodlingProcess, pod: str) -> list[dict[str, Any]]:
    return api.kubectl_json("get", "events", "-n", NS, "--field-selector", f"involvedObject.name={pod}")["items"]


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


# ---- the node ---------------------------------------------------------------------------------


def test_node_registers_with_capacity_labels_info_and_a_lease(api: PodlingProcess, kubelet: KubeletProcess) -> None:
    node = api.kubectl_json("get", "node", kubelet.node_name)
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == kubelet.node_name
    assert labels["kubernetes.io/os"] == "linux" and labels["kubernetes.io/arch"] == "amd64"
    status = node["status"]
    assert status["capacity"]["cpu"] == str(os.cpu_count())
    assert status["capacity"]["pods"] == "110" and status["capacity"]["memory"].endswith("Ki")
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    info = status["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("docker://")
    assert info["kubeletVersion"].startswith("v1.") and info["kernelVersion"] == os.uname().release
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True" and conditions["Ready"]["reason"] == "KubeletReady"
    assert api.kubectl("get", "nodes").stdout.split("\n")[1].split()[1] == "Ready"

    lease = api.kubectl_json("get", "lease", "-n", "kube-node-lease", kubelet.node_name)
    assert lease["spec"]["holderIdentity"] == kubelet.node_name
    renewed = wait_for(lambda: (l := api.kubectl_json("get", "lease", "-n", "kube-node-lease", kubelet.node_name))
                       ["spec"]["renewTime"] != lease["spec"]["renewTime"] and l, timeout=10, what="a lease renewal")
    assert renewed["spec"]["renewTime"] > lease["spec"]["renewTime"]


# ---- pods as logical hosts ------------------------------------------------------------------


def test_two_containers_share_localhost_and_an_empty_dir(api: PodlingProcess, kubelet: KubeletProcess) -> None:
    apply(api, pod_manifest("duo", kubelet.node_name, [
        {"name": "web", "command": ["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html "
                                                "&& exec httpd -f -p 8080 -h /www"],
         "ports": [{"containerPort": 8080, "name": "http"}],
         "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}},
        {"name": "client", "command": ["sh", "-c", "while true; do wget -qO /shared/page http://localhost:8080/ "
                                                   "&& echo fetched $(cat /shared/page); sleep 1; done"],
         "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]},
    ], volumes=[{"name": "shared", "emptyDir": {}}]))
    pod = wait_for(ready(api, "duo"), timeout=30, what="pod duo Ready")
    assert pod["status"]["podIP"].startswith("10.88.")
    assert pod["status"]["hostIP"] == "127.0.0.1"
    assert all(s["ready"] and "running" in s["state"] for s in pod["status"]["containerStatuses"])

    logs = wait_for(lambda: "fetched hello-from-web" in (out := api.kubectl("logs", "-n", NS, "duo", "-c",
                                                                             "client").stdout) and out,
                    timeout=15, what="the client's logs")
    assert "fetched hello-from-web" in logs
    assert api.kubectl("exec", "-n", NS, "duo", "-c", "client", "--", "cat", "/shared/page").stdout == \
        "hello-from-web\n"
    assert api.kubectl("exec", "-n", NS, "duo", "-c", "web", "--", "hostname").stdout.strip() == "duo"
    result = api.kubectl("exec", "-n", NS, "duo", "-c", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3",
                         check=False)
    assert (result.returncode, result.stdout, "err" in result.stderr) == (3, "out\n", True)
    wait_for(lambda: len(api.kubectl("logs", "-n", NS, "duo", "-c", "client").stdout.splitlines()) >= 3,
             timeout=15, what="three lines of logs")
    assert len(api.kubectl("logs", "-n", NS, "duo", "-c", "client", "--tail", "2").stdout.splitlines()) == 2

    reasons = {e["reason"] for e in events(api, "duo")}
    assert {"Pulled", "Created", "Started"} <= reasons
    assert "Started container web" in api.kubectl("describe", "pod", "-n", NS, "duo").stdout


def test_init_containers_run_in_order_before_the_app(api: PodlingProcess, kubelet: KubeletProcess) -> None:
    work = {"name": "work", "mountPath": "/work"}
    apply(api, pod_manifest("inits", kubelet.node_name, [
        {"name": "app", "command": ["sh", "-c", "cat /work/order; sleep 3600"], "volumeMounts": [work]},
    ], initContainers=[
        {"name": "one", "image": IMAGE, "command": ["sh", "-c", "sleep 1; echo one >> /work/order"],
         "volumeMounts": [work]},
        {"name": "two", "image": IMAGE, "command": ["sh", "-c", "echo two >> /work/order"], "volumeMounts": [work]},
    ], volumes=[{"name": "work", "emptyDir": {}}]))
    first = wait_for(lambda: (p := get_pod(api, "inits")).get("status", {}).get("initContainerStatuses") and p,
                     timeout=15, what="init container statuses")
    initialized = {c["type"]: c["status"] for c in first["status"]["conditions"]}["Initialized"]
    pod = wait_for(phase_is(api, "inits", "Running"), timeout=30, what="pod inits Running")
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Initialized"] == "True"
    assert initialized == "False" or first["status"]["phase"] == "Running"
    assert [s["state"]["terminated"]["exitCode"] for s in pod["status"]["initContainerStatuses"]] == [0, 0]
    assert wait_for(lambda: api.kubectl("logs", "-n", NS, "inits").stdout, timeout=10, what="logs") == "one\ntwo\n"


# ---- restarts, probes and restart policies ---------------------------------------------------


def test_liveness_failure_restarts_with_growing_backoff(api: PodlingProcess, kubelet: KubeletProcess) -> None:
    apply(api, pod_manifest("unhealthy", kubelet.node_name, [
        {"name": "app", "command": ["sh", "-c", "echo attempt; sleep 3600"],
         "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1,
                           "failureThreshold": 1}},
    ], terminationGracePeriodSeconds=1))
    seen: dict[int, float] = {}
    crash_loop = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and 2 not in seen:
        pod = get_pod(api, "unhealthy")
        statuses = pod.get("status", {}).get("containerStatuses") or []
        if statuses:
            seen.setdefault(statuses[0]["restartCount"], time.monotonic())
            crash_loop |= statuses[0]["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"
        time.sleep(0.2)
    assert 2 in seen, f"restart counts seen: {seen}"
    assert crash_loop, "the container never showed CrashLoopBackOff between restarts"
    assert seen[2] - seen[1] >= 8, "the second restart did not wait out a back-off of about 10 s"
    row = api.kubectl("get", "pod", "-n", NS, "unhealthy").stdout.splitlines()[1].split()
    assert int(row[3]) >= 2  # RESTARTS
    pod = get_pod(api, "unhealthy")
    assert container_status(pod, "app")["lastState"]["terminated"]["exitCode"] == 137
    messages = [e["message"] for e in events(api, "unhealthy") if e["reason"] in ("Unhealthy", "Killing", "BackOff")]
    assert any(m.startswith("Liveness probe failed") for m in messages)
    assert any("failed liveness probe, will be restarted" in m for m in messages)
    assert any(m.startswith("Back-off restarting failed container app") for m in messages)
    previous = api.kubectl("logs", "-n", NS, "unhealthy", "--previous", check=False)
    assert (previous.returncode, previous.stdout) == (0, "attempt\n"), previous.stderr
    api.kubectl("delete", "pod", "-n", NS, "unhealthy", "--wait=false")


def test_failing_readiness_keeps_the_pod_not_ready(api: PodlingProcess, kubelet: KubeletProcess) -> None:
    apply(api, pod_manifest("unready", kubelet.node_name, [
        {"name": "never", "command": ["sleep", "3600"],
         "readinessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1}},
        {"name": "fine", "command": ["sh", "-c", "mkdir /www; echo ok > /www/index.html; exec httpd -f -p 8081 "
                                                 "-h /www"],
         "readinessProbe": {"tcpSocket": {"port": 8081}, "periodSeconds": 1}},
    ]))
    def fine_ready() -> bool:
        pod = get_pod(api, "unready")
        return bool(pod.get("status", {}).get("containerStatuses")) and container_status(pod, "fine")["ready"]

    wait_for(fine_ready, timeout=30, what="container fine ready")
    time.sleep(2)
    pod = get_pod(api, "unready")
    conditions = {c["type"]: c for c in pod["status"]["conditions"]}
    assert pod["status"]["phase"] == "Running"
    assert conditions["Ready"]["status"] == "False"
    assert conditions["ContainersReady"]["message"] == "containers with unready status: [never]"
    assert container_status(pod, "never")["ready"] is False
    assert api.kubectl("get", "pod", "-n", NS, "unready").stdout.splitlines()[1].split()[1] == "1/2"


@pytest.mark.parametrize(("name", "policy", "script", "phase", "restarts"), [
    ("never-ok", "Never", "exit 0", "Succeeded", 0),
    ("never-fail", "Never", "exit 1", "Failed", 0),
    ("onfailure", "OnFailure", "if [ -f /data/ran ]; then exit 0; fi; touch /data/ran; exit 1", "Succeeded", 1),
])
def test_restart_policy(api: PodlingProcess, kubelet: KubeletProcess, name: str, policy: str, script: str,
                        phase: str, restarts: int) -> None:
    apply(api, pod_manifest(name, kubelet.node_name, [
        {"name": "job", "command": ["sh", "-c", script], "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
    ], restartPolicy=policy, volumes=[{"name": "data", "emptyDir": {}}]))
    pod = wait_for(phase_is(api, name, phase), timeout=30, what=f"pod {name} {phase}")
    status = container_status(pod, "job")
    assert status["restartCount"] == restarts
    assert status["state"]["terminated"]["exitCode"] == (1 if phase == "Failed" else 0)
    time.sleep(1.5)  # a finished pod stays finished: nothing restarts it
    assert container_status(get_pod(api, name), "job")["restartCount"] == restarts


def test_container_killed_outside_is_restarted_within_3s(api: PodlingProcess, kubelet: KubeletProcess) -> None:
    apply(api, pod_manifest("victim", kubelet.node_name, [{"name": "app", "command": ["sleep", "3600"]}]))
    pod = wait_for(phase_is(api, "victim", "Running"), timeout=30, what="pod victim Running")
    old = container_status(pod, "app")["containerID"].removeprefix("docker://")
    docker("kill", old)
    killed = time.monotonic()

    def restarted() -> dict[str, Any] | None:
        status = container_status(get_pod(api, "victim"), "app")
        return status if "running" in status["state"] and status["restartCount"] == 1 else None

    status = wait_for(restarted, timeout=3, what="a restart", interval=0.1)
    assert time.monotonic() - killed < 3
    assert status["containerID"] != f"docker://{old}"


def test_changed_container_spec_recreates_the_container(api: PodlingProcess, kubelet: KubeletProcess) -> None:
    apply(api, pod_manifest("respec", kubelet.node_name, [{"name": "app", "command": ["sleep", "3600"]}]))
    pod = wait_for(phase_is(api, "respec", "Running"), timeout=30, what="pod respec Running")
    old = container_status(pod, "app")["containerID"]
    api.kubectl("patch", "pod", "-n", NS, "respec", "--type=json",
                "-p", '[{"op": "replace", "path": "/spec/containers/0/image", "value": "podling/busybox:latest"}]')

    def replaced() -> dict[str, Any] | None:
        status = container_status(get_pod(api, "respec"), "app")
        return status if status["containerID"] != old and "running" in status["state"] else None

    assert wait_for(replaced, timeout=30, what="a new container")["image"] == "podling/busybox:latest"
    assert any("definition changed" in e["message"] for e in events(api, "respec"))


# ---- termination --------------------------------------------------------------------------------


def test_delete_runs_prestop_then_sigterm(api: PodlingProcess, kubelet: KubeletProcess, tmp_path: Path) -> None:
    log = tmp_path / "graceful"
    log.mkdir()
    apply(api, pod_manifest("graceful", kubelet.node_name, [
        {"name": "app", "command": ["sh", "-c", "trap 'echo got-TERM >> /log/events; exit 0' TERM; "
                                                "while true; do sleep 1 & wait $!; done"],
         "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo poststart >> /log/events"]}},
                       "preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /log/events"]}}},
         "volumeMounts": [{"name": "log", "mountPath": "/log"}]},
    ], terminationGracePeriodSeconds=10, volumes=[{"name": "log", "hostPath": {"path": str(log)}}]))
    wait_for(phase_is(api, "graceful", "Running"), timeout=30, what="pod graceful Running")
    started = time.monotonic()
    api.kubectl("delete", "pod", "-n", NS, "graceful", "--wait=false")
    wait_for(lambda: api.kubectl("get", "pod", "-n", NS, "graceful", check=False).returncode != 0, timeout=15,
             what="the pod to be gone")
    assert time.monotonic() - started < 10, "a pod that exits on SIGTERM is gone before its grace period ends"
    assert (log / "events").read_text().split() == ["poststart", "prestop", "got-TERM"]


def test_a_process_ignoring_sigterm_is_killed_at_the_deadline(api: PodlingProcess, kubelet: KubeletProcess) -> None:
    apply(api, pod_manifest("stubborn", kubelet.node_name, [
        {"name": "app", "command": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]},
    ], terminationGracePeriodSeconds=3))
    pod = wait_for(phase_is(api, "stubborn", "Running"), timeout=30, what="pod stubborn Running")
    container = container_status(pod, "app")["containerID"].removeprefix("docker://")
    started = time.monotonic()
    api.kubectl("delete", "pod", "-n", NS, "stubborn", "--wait=false")
    wait_for(lambda: api.kubectl("get", "pod", "-n", NS, "stubborn", check=False).returncode != 0, timeout=20,
             what="the pod to be gone")
    elapsed = time.monotonic() - started
    assert 2.5 <= elapsed <= 3 + 5, f"gone after {elapsed:.1f}s with a grace period of 3s"
    assert not subprocess.run(["docker", "inspect", container], capture_output=True).returncode == 0


# ---- volumes and environment --------------------------------------------------------------------


def test_configmap_secret_hostpath_and_pvc_volumes(api: PodlingProcess, kubelet: KubeletProcess,
                                                    tmp_path: Path) -> None:
    (tmp_path / "host.txt").write_text("from the host\n")
    api.kubectl("create", "configmap", "-n", NS, "settings", "--from-literal=color=blue",
                "--from-literal=size=large")
    api.kubectl("create", "secret", "generic", "-n", NS, "creds", "--from-literal=password=s3cret")
    apply(api, {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": NS},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    volumes = [{"name": "cfg", "configMap": {"name": "settings", "items": [{"key": "color", "path": "colour"}]}},
               {"name": "sec", "secret": {"secretName": "creds", "defaultMode": 0o400}},
               {"name": "host", "hostPath": {"path": str(tmp_path), "type": "Directory"}},
               {"name": "pvc", "persistentVolumeClaim": {"claimName": "data"}}]
    mounts = [{"name": "cfg", "mountPath": "/cfg"}, {"name": "sec", "mountPath": "/sec", "readOnly": True},
              {"name": "host", "mountPath": "/host"}, {"name": "pvc", "mountPath": "/pvc"}]

    def run(name: str, script: str) -> str:
        apply(api, pod_manifest(name, kubelet.node_name, [{"name": "app", "command": ["sh", "-c", script],
                                                          "volumeMounts": mounts}],
                                restartPolicy="Never", volumes=volumes))
        wait_for(phase_is(api, name, "Succeeded"), timeout=30, what=f"pod {name} Succeeded")
        return api.kubectl("logs", "-n", NS, name).stdout

    out = run("volumes-1", "cat /cfg/colour; echo; ls /cfg; cat /sec/password; echo; cat /host/host.txt; "
                           "echo persisted > /pvc/file; touch /sec/x 2>/dev/null || echo read-only")
    assert out.split("\n") == ["blue", "colour", "s3cret", "from the host", "read-only", ""]
    api.kubectl("delete", "pod", "-n", NS, "volumes-1")
    assert run("volumes-2", "cat /pvc/file") == "persisted\n"


def test_missing_configmap_fails_the_mount_and_the_pod_waits(api: PodlingProcess, kubelet: KubeletProcess) -> None:
    apply(api, pod_manifest("nomount", kubelet.node_name, [
        {"name": "app", "command": ["sleep", "3600"], "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]},
    ], volumes=[{"name": "cfg", "configMap": {"name": "absent"}}]))
    event = wait_for(lambda: next((e for e in events(api, "nomount") if e["reason"] == "FailedMount"), None),
                     timeout=15, what="a FailedMount event")
    assert 'configmap "absent" not found' in event["message"]
    pod = get_pod(api, "nomount")
    assert pod["status"]["phase"] == "Pending"
    api.kubectl("create", "configmap", "-n", NS, "absent", "--from-literal=k=v")
    wait_for(phase_is(api, "nomount", "Running"), timeout=30, what="pod nomount Running once the configmap exists")


def test_env_from_configmap_secret_and_fields(api: PodlingProcess, kubelet: KubeletProcess) -> None:
    api.kubectl("create", "configmap", "-n", NS, "envcfg", "--from-literal=mode=fast")
    api.kubectl("create", "secret", "generic", "-n", NS, "envsec", "--from-literal=token=abc123")
    apply(api, pod_manifest("envs", kubelet.node_name, [
        {"name": "app", "command": ["sh", "-c", "echo $MODE $TOKEN $POD $NAMESPACE $IP $GREETING"],
         "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "envcfg", "key": "mode"}}},
                 {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "envsec", "key": "token"}}},
                 {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                 {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                 {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                 {"name": "GREETING", "value": "hi-$(POD)"}]},
    ], restartPolicy="Never"))
    pod = wait_for(phase_is(api, "envs", "Succeeded"), timeout=30, what="pod envs Succeeded")
    assert api.kubectl("logs", "-n", NS, "envs").stdout.split() == [
        "fast", "abc123", "envs", NS, pod["status"]["podIP"], "hi-envs"]


def test_resources_user_and_host_port_reach_docker(api: PodlingProcess, kubelet: KubeletProcess) -> None:
    apply(api, pod_manifest("limited", kubelet.node_name, [
        {"name": "app", "command": ["sh", "-c", "mkdir /tmp/www; echo via-host-port > /tmp/www/index.html; "
                                                "exec httpd -f -p 8080 -h /tmp/www"],
         "ports": [{"containerPort": 8080, "hostPort": 18080, "hostIP": "127.0.0.1"}],
         "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
         "securityContext": {"runAsUser": 1000, "runAsGroup": 1000}},
    ]))
    pod = wait_for(phase_is(api, "limited", "Running"), timeout=30, what="pod limited Running")
    assert pod["status"]["qosClass"] == "Guaranteed"
    inspect = json.loads(docker("inspect", container_status(pod, "app")["containerID"].removeprefix("docker://")))[0]
    assert (inspect["HostConfig"]["CpuQuota"], inspect["HostConfig"]["CpuPeriod"]) == (50_000, 100_000)
    assert inspect["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert api.kubectl("exec", "-n", NS, "limited", "--", "id", "-u").stdout.strip() == "1000"
    body = wait_for(lambda: subprocess.run(["wget", "-qO-", "http://127.0.0.1:18080/"], capture_output=True,
                                           text=True).stdout, timeout=10, what="the host port")
    assert body == "via-host-port\n"


# ---- bad specs ---------------------------------------------------------------------------------


def test_bad_image_and_bad_command_end_in_a_status_not_a_crash(api: PodlingProcess,
                                                              kubelet: KubeletProcess) -> None:
    apply(api, pod_manifest("badimage", kubelet.node_name, [{"name": "app", "image": "127.0.0.1:1/missing:1"}]))
    apply(api, pod_manifest("neverpull", kubelet.node_name, [{"name": "app", "image": "podling/absent:1",
                                                             "imagePullPolicy": "Never"}]))
    apply(api, pod_manifest("badcmd", kubelet.node_name, [{"name": "app", "command": ["/no/such/binary"]}],
                            restartPolicy="Never"))

    def waiting_reason(name: str) -> str:
        statuses = get_pod(api, name).get("status", {}).get("containerStatuses") or [{}]
        return statuses[0].get("state", {}).get("waiting", {}).get("reason", "")

    wait_for(lambda: waiting_reason("badimage") in ("ErrImagePull", "ImagePullBackOff"), timeout=30,
             what="ErrImagePull")
    wait_for(lambda: waiting_reason("badimage") == "ImagePullBackOff", timeout=30, what="ImagePullBackOff")
    message = next(e["message"] for e in events(api, "badimage") if e["message"].startswith("Failed to pull image"))
    assert "127.0.0.1:1" in message
    wait_for(lambda: waiting_reason("neverpull") == "ErrImageNeverPull", timeout=30, what="ErrImageNeverPull")
    pod = wait_for(phase_is(api, "badcmd", "Failed"), timeout=30, what="pod badcmd Failed")
    terminated = container_status(pod, "app")["state"]["terminated"]
    assert terminated["exitCode"] != 0 and "/no/such/binary" in terminated.get("message", "")
    assert api.kubectl("get", "node", kubelet.node_name).returncode == 0


# ---- restarts of the kubelet, static pods -------------------------------------------------------


def test_restarted_kubelet_adopts_its_containers(api: PodlingProcess, kubelet: KubeletProcess) -> None:
    apply(api, pod_manifest("survivor", kubelet.node_name, [{"name": "app", "command": ["sleep", "3600"]}]))
    wait_for(phase_is(api, "survivor", "Running"), timeout=30, what="pod survivor Running")
    before = set(kubelet.containers(pod="survivor"))
    kubelet.kill()
    apply(api, pod_manifest("latecomer", kubelet.node_name, [{"name": "app", "command": ["sleep", "3600"]}]))
    kubelet.start()
    wait_for(phase_is(api, "latecomer", "Running"), timeout=30, what="a pod created while the kubelet was down")
    time.sleep(3)
    assert set(kubelet.containers(pod="survivor")) == before, "the survivor's containers were replaced"
    assert len(before) == 2  # its sandbox and container: adopted, not duplicated
    assert container_status(get_pod(api, "survivor"), "app")["restartCount"] == 0
    assert len(kubelet.containers(pod="latecomer")) == 2


def test_static_pod_runs_is_mirrored_and_stops_when_removed(api: PodlingProcess, kubelet: KubeletProcess) -> None:
    manifest = kubelet.root_dir / "manifests" / "static-web.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\n  namespace: %s\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n"
        "  - name: web\n    image: %s\n    command: [sleep, '3600']\n" % (NS, IMAGE))
    mirror_name = f"static-web-{kubelet.node_name}"
    mirror = wait_for(phase_is(api, mirror_name, "Running"), timeout=30, what="the mirror pod Running")
    assert mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"]
    assert mirror["spec"]["nodeName"] == kubelet.node_name
    uid = mirror["metadata"]["annotations"]["kubernetes.io/config.hash"]
    assert len(kubelet.containers(pod=mirror_name, all=False)) == 2 and uid
    manifest.unlink()
    wait_for(lambda: not kubelet.containers(pod=mirror_name, all=False), timeout=30,
             what="the static pod's containers to stop")
    wait_for(lambda: api.kubectl("get", "pod", "-n", NS, mirror_name, check=False).returncode != 0, timeout=15,
             what="the mirror pod to go")


def test_kubelet_exports_metrics(api: PodlingProcess, kubelet: KubeletProcess) -> None:
    apply(api, pod_manifest("measured", kubelet.node_name, [
        {"name": "app", "command": ["sleep", "3600"], "readinessProbe": {"exec": {"command": ["true"]},
                                                                        "periodSeconds": 1}}]))
    pod = wait_for(ready(api, "measured"), timeout=30, what="pod measured Ready")
    docker("kill", container_status(pod, "app")["containerID"].removeprefix("docker://"))
    wait_for(lambda: container_status(get_pod(api, "measured"), "app")["restartCount"] == 1, timeout=10,
             what="a restart")
    port = api.kubectl_json("get", "node", kubelet.node_name)["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the kubelet's self-signed certificate

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=context, timeout=10) as response:
            text = response.read().decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line and not line.startswith("#")}

    metrics = wait_for(lambda: (m := scrape()).get("podling_kubelet_running_pods", 0) > 0 and m, timeout=15,
                       what="the running pods gauge")
    assert metrics["podling_kubelet_pod_start_duration_seconds_count"] >= 1
    assert metrics["podling_kubelet_running_containers"] >= 1
    assert metrics['podling_kubelet_runtime_operations_duration_seconds_count{operation="run_sandbox"}'] >= 1
    assert metrics['podling_kubelet_probe_total{probe_type="readiness",result="successful"}'] >= 1
    assert metrics["podling_kubelet_container_restarts_total"] >= 1
