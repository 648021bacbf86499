"""The README's main command: ``scripts/up`` syncs a repository made from repo_template/ to Healthy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from podling_process import KUBECTL

ROOT = Path(__file__).resolve().parents[2]


def test_repo_template_is_valid() -> None:
    result = subprocess.run([str(ROOT / ".venv/bin/podling"), "validate", str(ROOT / "repo_template")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().endswith("valid")


def test_scripts_up_syncs_the_template_to_healthy(tmp_path: Path) -> None:
    node = f"template-{uuid.uuid4().hex[:6]}"
    log = (tmp_path / "up.log").open("wb")
    process = subprocess.Popen(
        [str(ROOT / "scripts/up"), "--listen", "127.0.0.1:0", "--node-name", node, "--address", "127.0.0.1",
         "--kubelet-port", "0", "--metrics-listen", "127.0.0.1:0", "--operator-listen", "127.0.0.1:0"],
        env={**os.environ, "PODLING_DATA_DIR": str(tmp_path / "data")}, stdout=log, stderr=subprocess.STDOUT)
    kubeconfig = tmp_path / "data" / "kubeconfig"

    def kubectl(*args: str) -> dict:
        result = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args, "-o", "json"],
                                capture_output=True, text=True, timeout=30)
        return json.loads(result.stdout) if result.returncode == 0 else {}

    try:
        deadline = time.monotonic() + 180  # scripts/setup runs first
        app: dict = {}
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "up.log").read_text()
            if kubeconfig.exists():
                app = kubectl("get", "application", "repo", "-n", "default")
                status = app.get("status") or {}
                if (status.get("sync") or {}).get("status") == "Synced" and \
                        (status.get("health") or {}).get("status") == "Healthy":
                    break
            time.sleep(0.5)
        else:
            raise AssertionError(f"not Synced and Healthy: {app.get('status')}\n{(tmp_path / 'up.log').read_text()}")
        assert (tmp_path / "data" / "repo" / ".git").is_dir()
        pods = kubectl("get", "pods", "-n", "web")["items"]
        assert len([p for p in pods if p["status"].get("phase") == "Running"]) == 2
        kinds = {(r["kind"], r["name"]) for r in app["status"]["resources"]}
        assert kinds == {("Namespace", "web"), ("ResourceQuota", "web-quota"), ("LimitRange", "web-limits"),
                         ("ConfigMap", "web-page"), ("Deployment", "web"), ("Service", "web")}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.podling.node={node}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
