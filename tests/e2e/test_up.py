"""``podling up`` runs a kubelet beside the API server; a hollow kubelet runs pods without containers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from podling_process import KubeletProcess, PodlingProcess


def _wait_running(server: PodlingProcess, name: str, *, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    pod: dict = {}
    while time.monotonic() < deadline:
        result = server.kubectl("get", "pod", name, "-o", "json", check=False)
        pod = json.loads(result.stdout) if result.returncode == 0 else {}
        if pod.get("status", {}).get("phase") == "Running":
            return pod
        time.sleep(0.2)
    raise AssertionError(f"pod {name} not Running after {timeout}s: {pod.get('status')}")


def _docker_ids(node: str) -> list[str]:
    return subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.podling.node={node}"],
                          capture_output=True, text=True, check=True).stdout.split()


def test_up_runs_a_node_that_runs_pods(tmp_path: Path) -> None:
    node = f"up-{uuid.uuid4().hex[:6]}"
    server = PodlingProcess(data_dir=tmp_path, command="up",
                            args=("--node-name", node, "--address", "127.0.0.1", "--kubelet-port", "0",
                                  "--metrics-listen", "127.0.0.1:0")).start()
    try:
        deadline = time.monotonic() + 20
        while server.kubectl("get", "node", node, check=False).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        server.kubectl("run", "hello", "--image=podling/busybox:1.35", "--restart=Never",
                       f"--overrides={json.dumps({'spec': {'nodeName': node}})}", "--", "sleep", "3600")
        pod = _wait_running(server, "hello")
        assert pod["spec"]["nodeName"] == node
        assert len(_docker_ids(node)) == 2  # the sandbox and the container
    finally:
        server.stop()
        if ids := _docker_ids(node):
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


def test_hollow_kubelet_reports_pods_running_without_containers(tmp_path: Path) -> None:
    server = PodlingProcess(data_dir=tmp_path / "apiserver").start()
    node = f"hollow-{uuid.uuid4().hex[:6]}"
    kubelet = KubeletProcess(server=server, node_name=node, root_dir=tmp_path / "kubelet",
                             args=("--runtime", "hollow", "--hollow-start-delay", "0.2", "--address", "127.0.0.1"))
    try:
        kubelet.start()
        node_obj = server.kubectl_json("get", "node", node)
        assert node_obj["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("hollow://")
        manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ghost"},
                    "spec": {"nodeName": node, "containers": [{"name": "app", "image": "anything:1"}]}}
        server.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        pod = _wait_running(server, "ghost")
        assert pod["status"]["containerStatuses"][0]["state"]["running"]
        assert _docker_ids(node) == []
    finally:
        kubelet.stop()
        server.stop()


def test_a_bad_scheduler_config_is_refused_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "scheduler.yaml"
    config.write_text("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n"
                      "- schedulerName: x\n  plugins:\n    score:\n      enabled:\n      - name: NodeResourcesFit\n"
                      "        weight: 1000\n")
    result = subprocess.run([sys.executable, "-m", "podling.cli.main", "up", "--data-dir", str(tmp_path / "data"),
                             "--scheduler-config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"{config}:9: profiles[0].plugins.score.enabled[0].weight: must be between 0 and 100" in result.stderr
    assert not (tmp_path / "data").exists()
