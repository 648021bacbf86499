"""The GitOps operator end to end: real git repositories served by a real ``git daemon`` on
loopback, real pushes, real HTTP webhooks, and `podling up` running every component (the
pods of synced Deployments run as Docker containers).

The repository is served over git:// (not a local path) so the operator can only learn of a
push by polling or by a webhook, which is what these tests are about.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from podling_process import PodlingProcess
from waiting import wait_for

SECRET = "s3cret-hook"
NS = "shop"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



class Repo:
    """A bare repository served by ``git daemon`` and a working clone to commit and push from."""

    def __init__(self, root: Path, port: int) -> None:
        self.bare = root / "served" / "shop.git"
        self.work = root / "work"
        self.url = f"git://127.0.0.1:{port}/shop.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.bare)], check=True)
        subprocess.run(["git", "clone", "-q", str(self.bare), str(self.work)], check=True, capture_output=True)
        self.git("checkout", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-c", "user.email=dev@example.com", "-c", "user.name=dev", *args],
                              cwd=self.work, check=True, capture_output=True, text=True).stdout

    def write(self, relative: str, text: str) -> None:
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def push(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        self.git("push", "-q", "origin", "main")
        return self.git("rev-parse", "HEAD").strip()


def deployment(replicas: int, color: str) -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {NS}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web, color: {color}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: podling/busybox:1.35
        command: [sh, -c, "mkdir -p /tmp/www && echo {color} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
"""


NAMESPACE = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n"
CONFIG = f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {NS}\ndata:\n  color: blue\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PodlingProcess, Repo, int]]:
    root = tmp_path_factory.mktemp("gitops")
    git_port, hook_port = _free_port(), _free_port()
    repo = Repo(root, git_port)
    repo.write("apps/namespace.yaml", NAMESPACE)
    repo.write("apps/config.yaml", CONFIG)
    repo.write("apps/web.yaml", deployment(2, "blue"))
    repo.push("first")
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
                               f"--port={git_port}", f"--base-path={root / 'served'}", str(root / "served")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (root / "hook-secret").write_text(SECRET)
    node = f"gitops-{uuid.uuid4().hex[:6]}"
    server = PodlingProcess(data_dir=root / "data", command="up", args=(
        "--node-name", node, "--address", "127.0.0.1", "--kubelet-port", "0", "--metrics-listen", "127.0.0.1:0",
        "--operator-listen", f"127.0.0.1:{hook_port}", "--webhook-secret-file", str(root / "hook-secret")))
    try:
        server.start()
        yield server, repo, hook_port
    finally:
        server.stop()
        daemon.terminate()
        daemon.wait()
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.podling.node={node}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def application(name: str, repo: Repo, *, interval: str, self_heal: bool = True, prune: bool = True) -> str:
    return json.dumps({
        "apiVersion": "podling.io/v1alpha1", "kind": "Application",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"source": {"repoURL": repo.url, "targetRevision": "main", "path": "apps"},
                 "destination": {"namespace": NS}, "interval": interval,
                 "syncPolicy": {"automated": {"prune": prune, "selfHeal": self_heal}}}})


def app_status(server: PodlingProcess, name: str) -> dict[str, Any]:
    return server.kubectl_json("get", "application", name, "-n", "default").get("status") or {}


def synced_at(server: PodlingProcess, name: str, sha: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        status = app_status(server, name)
        return status if (status.get("sync") or {}) == {"status": "Synced", "revision": sha} else None
    return check


def with_condition(server: PodlingProcess, name: str, condition: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        status = app_status(server, name)
        return status if any(c["type"] == condition for c in status.get("conditions") or ()) else None
    return check


def sync_status_is(server: PodlingProcess, name: str, verdict: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        status = app_status(server, name)
        return status if (status.get("sync") or {}).get("status") == verdict else None
    return check


def running_colors(server: PodlingProcess) -> list[str]:
    pods = server.kubectl_json("get", "pods", "-n", NS, "-l", "app=web")["items"]
    return sorted(p["metadata"]["labels"]["color"] for p in pods if p.get("status", {}).get("phase") == "Running"
                  and not p["metadata"].get("deletionTimestamp")
                  and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}]))


def github_push(port: int, repo: Repo, sha: str, *, secret: str = SECRET) -> tuple[int, str]:
    body = json.dumps({"ref": "refs/heads/main", "after": sha,
                       "repository": {"clone_url": repo.url, "html_url": repo.url}}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/webhook", data=body, method="POST", headers={
        "Content-Type": "application/json", "X-GitHub-Event": "push", "X-Hub-Signature-256": signature})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_push_with_a_webhook_syncs_at_once_and_pods_run(cluster: tuple[PodlingProcess, Repo, int]) -> None:
    server, repo, hook = cluster
    server.kubectl("apply", "-f", "-", input=application("shop", repo, interval="1h"))
    first = repo.git("rev-parse", "HEAD").strip()
    wait_for(synced_at(server, "shop", first), timeout=60, what="the first sync")
    assert wait_for(lambda: running_colors(server) == ["blue", "blue"], timeout=90, what="two blue pods")

    repo.write("apps/web.yaml", deployment(2, "green"))
    second = repo.push("green")
    assert github_push(hook, repo, second, secret="wrong")[0] == 401
    status, text = github_push(hook, repo, second)
    assert status == 200 and "default/shop" in text
    wait_for(synced_at(server, "shop", second), timeout=15, what="the sync of the pushed commit")
    assert wait_for(lambda: running_colors(server) == ["green", "green"], timeout=90, what="two green pods")
    history = app_status(server, "shop")["history"]
    assert [h["revision"] for h in history][-2:] == [first, second]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{hook}/metrics", timeout=10).read().decode()
    assert 'podling_webhook_requests_total{provider="github",result="accepted"}' in metrics
    assert 'podling_webhook_requests_total{provider="github",result="unauthorized"}' in metrics


def test_invalid_manifest_is_refused_and_the_cluster_stays(cluster: tuple[PodlingProcess, Repo, int]) -> None:
    server, repo, hook = cluster
    before = server.kubectl_json("get", "deployment", "web", "-n", NS)["spec"]
    repo.write("apps/web.yaml", deployment(3, "red").replace("replicas: 3", "replicas: three"))
    bad = repo.push("broken")
    github_push(hook, repo, bad)
    status = wait_for(with_condition(server, "shop", "InvalidManifest"), timeout=15,
                      what="the InvalidManifest condition")
    message = next(c["message"] for c in status["conditions"] if c["type"] == "InvalidManifest")
    assert "apps/web.yaml:7: Deployment/web: spec.replicas" in message
    assert server.kubectl_json("get", "deployment", "web", "-n", NS)["spec"] == before
    reasons = [e["reason"] for e in server.kubectl_json("get", "events", "-n", "default", "--field-selector",
                                                        "involvedObject.name=shop")["items"]]
    assert "InvalidManifest" in reasons
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{hook}/metrics", timeout=10).read().decode()
    assert 'podling_app_sync_total{app="shop",phase="Error"}' in metrics

    repo.write("apps/web.yaml", deployment(3, "green"))
    fixed = repo.push("fixed")
    github_push(hook, repo, fixed)
    wait_for(synced_at(server, "shop", fixed), timeout=15, what="the fixed revision synced")
    assert not any(c["type"] == "InvalidManifest" for c in app_status(server, "shop").get("conditions") or ())


def test_prune_removes_only_what_the_app_created(cluster: tuple[PodlingProcess, Repo, int]) -> None:
    server, repo, hook = cluster
    server.kubectl("create", "configmap", "by-hand", "-n", NS, "--from-literal=k=v")
    (repo.work / "apps/config.yaml").unlink()
    sha = repo.push("drop the config")
    github_push(hook, repo, sha)
    wait_for(synced_at(server, "shop", sha), timeout=15, what="the sync without the configmap")
    wait_for(lambda: server.kubectl("get", "configmap", "settings", "-n", NS, check=False).returncode != 0,
             timeout=10, what="the configmap pruned")
    assert server.kubectl("get", "configmap", "by-hand", "-n", NS).returncode == 0


def test_self_heal_reverts_drift_and_without_it_drift_shows(cluster: tuple[PodlingProcess, Repo, int]) -> None:
    server, repo, hook = cluster
    server.kubectl("scale", "deployment", "web", "-n", NS, "--replicas=1")
    wait_for(lambda: server.kubectl_json("get", "deployment", "web", "-n", NS)["spec"]["replicas"] == 3,
             timeout=5, what="selfHeal to restore 3 replicas", interval=0.1)

    server.kubectl("patch", "application", "shop", "-n", "default", "--type=merge",
                   "-p", '{"spec": {"syncPolicy": {"automated": {"prune": true, "selfHeal": false}}}}')
    time.sleep(1)
    server.kubectl("scale", "deployment", "web", "-n", NS, "--replicas=1")
    status = wait_for(sync_status_is(server, "shop", "OutOfSync"), timeout=10, what="OutOfSync")
    web = next(r for r in status["resources"] if r["kind"] == "Deployment")
    assert web["status"] == "OutOfSync"
    time.sleep(2)
    assert server.kubectl_json("get", "deployment", "web", "-n", NS)["spec"]["replicas"] == 1


def test_without_a_webhook_a_push_is_synced_within_the_poll_interval(
        cluster: tuple[PodlingProcess, Repo, int]) -> None:
    server, repo, _ = cluster
    repo.write("other/config.yaml", CONFIG.replace("settings", "polled"))
    first = repo.push("polled config")
    server.kubectl("apply", "-f", "-", input=application("polled", repo, interval="3s").replace(
        '"path": "apps"', '"path": "other"'))
    wait_for(synced_at(server, "polled", first), timeout=15, what="the first sync")
    repo.write("other/config.yaml", CONFIG.replace("settings", "polled").replace("blue", "teal"))
    second = repo.push("teal")  # no webhook, and a git:// repository no watcher sees
    started = time.monotonic()
    wait_for(synced_at(server, "polled", second), timeout=15, what="a sync by polling")
    assert time.monotonic() - started < 3 * 1.1 + 2  # the interval with its jitter, and a margin
    data = server.kubectl_json("get", "configmap", "polled", "-n", NS)["data"]
    assert data == {"color": "teal"}


def _post(port: int, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/webhook", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_webhook_refuses_bad_requests(cluster: tuple[PodlingProcess, Repo, int]) -> None:
    _, _, hook = cluster

    def signed(body: bytes) -> str:
        return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()

    assert _post(hook, b'{"ref": "refs/heads/main"}', {"X-GitHub-Event": "push"}) == 401  # no signature
    assert _post(hook, b"{not json", {"X-GitHub-Event": "push", "X-Hub-Signature-256": signed(b"{not json")}) == 400
    big = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert _post(hook, big, {"X-GitHub-Event": "push", "X-Hub-Signature-256": signed(big)}) == 413
    ping = b'{"zen": "Keep it logically awesome."}'
    assert _post(hook, ping, {"X-GitHub-Event": "ping", "X-Hub-Signature-256": signed(ping)}) == 202
    gitlab = json.dumps({"object_kind": "push", "ref": "refs/heads/main", "after": "0" * 40,
                         "project": {"git_http_url": "git://elsewhere/x.git"}}).encode()
    assert _post(hook, gitlab, {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "wrong"}) == 401
    assert _post(hook, gitlab, {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET}) == 200
