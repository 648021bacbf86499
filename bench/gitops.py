"""GitOps operator benchmark: push → running pods, a 1,000-object sync beside kubectl, a 5,000-object no-op resync.

Real processes throughout: one ``podling up`` (API server on the SQLite store, controller
manager, scheduler, a kubelet on the local Docker engine and the GitOps operator, its
webhooks and /metrics on a loopback port), and a ``git daemon`` on loopback serving bare
repositories over git://, so the operator can learn of a push only from the webhook (every
Application polls once an hour). The script measures, in one run:

  1. push → webhook → rollout: a 10-replica Deployment (busybox httpd, a TCP readiness probe
     every second, terminationGracePeriodSeconds 0, RollingUpdate maxSurge 100 % and
     maxUnavailable 0) whose pod template changes (an env var) in each of 20 pushes; from
     ``git push`` returning, through a GitHub-format webhook with the right HMAC, to the
     Deployment reporting observedGeneration current and updated = ready = available =
     replicas = 10 with no pod of an older template left in the API. Milestones on the way
     (Application Synced at the commit, the 10 new pods created, bound, Running, Ready) come
     from the same watches. Then, as the floor, the same number of pause+app container pairs
     started at once through the Docker SDK (as ``bench/kubelet.py`` does);
  2. a sync of 1,000 objects (ConfigMaps, Secrets, Services, Deployments with 0 replicas) from
     empty: from the Application's POST to its status saying Synced at the commit (every
     object then counted in the API), and ``kubectl apply -f DIR --recursive`` of the same
     files into another empty namespace of the same API server;
  3. a no-op resync of 5,000 objects: after the operator has synced them (that first sync is
     timed too), a sync request for the same commit (the ``podling.io/sync-request``
     annotation, which is what ``podling app sync`` sets) from the PATCH to
     ``status.operationState`` carrying the request's id, Succeeded with ``changed=0``. The
     ``podling.io/refresh`` annotation (``podling app refresh``) and a webhook for an
     unchanged commit run the same reconcile but write nothing when nothing changed, so no
     completion can be seen from outside; the script shows that too.

Between phases the script waits for ``podling up`` to go idle (its CPU time), so one phase's
tail (controllers, drift re-checks) does not bill the next. All traffic is loopback; every
wait and loop is bounded in count and time; containers (label ``io.podling.node=NODE``) and
processes are removed at the end. Usage:

    .venv/bin/python bench/gitops.py [--pushes 20] [--replicas 10] [--sync-objects 1000]
                                     [--resync-objects 5000] [--resyncs 5] [--probe tcp|exec] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from figures import percentile  # noqa: E402
from podling_process import KUBECTL, PodlingProcess  # noqa: E402

Obj = dict[str, Any]
SECRET = "bench-hook-secret"
IMAGE = "podling/busybox:1.35"
APPS = "/apis/podling.io/v1alpha1/namespaces/default/applications"
WEB_NS = "bench-web"
SYNC_REQUEST = "podling.io/sync-request"
REFRESH = "podling.io/refresh"
ROLLOUT_TIMEOUT = 180.0  # seconds one push may take to roll out
SYNC_TIMEOUT = 900.0  # seconds one sync from empty may take
KUBECTL_TIMEOUT = 1800.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wait_idle(pid: int, *, below: float = 0.15, window: float = 2.0, timeout: float = 300.0) -> float:
    """Wait until the process used less than ``below`` of a core over ``window`` seconds; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(pid)
        await asyncio.sleep(window)
        if (cpu_seconds(pid) - before) / window < below:
            return time.monotonic() - started
    print(f"  (warning: podling up still busy after {timeout:g} s: over {below:.0%} of a core)", flush=True)
    return time.monotonic() - started


# ---- git ----------------------------------------------------------------------------------------


class Repo:
    """A bare repository under ``served/`` (what git daemon serves) and a working clone that pushes to it."""

    def __init__(self, root: Path, name: str, port: int) -> None:
        self.bare = root / "served" / f"{name}.git"
        self.work = root / "work" / name
        self.url = f"git://127.0.0.1:{port}/{name}.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.bare)], check=True)
        subprocess.run(["git", "clone", "-q", str(self.bare), str(self.work)], check=True, capture_output=True)
        self.git("checkout", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-c", "user.email=bench@example.com", "-c", "user.name=bench", *args],
                              cwd=self.work, check=True, capture_output=True, text=True, timeout=120).stdout

    def write(self, relative: str, text: str) -> None:
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def push(self) -> None:
        self.git("push", "-q", "origin", "main")


def git_daemon(root: Path, port: int) -> subprocess.Popen[bytes]:
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1", f"--port={port}",
                               f"--base-path={root / 'served'}", str(root / "served")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return daemon
        time.sleep(0.05)
    daemon.kill()
    raise TimeoutError("git daemon did not listen")


# ---- manifests ----------------------------------------------------------------------------------


def web_manifests(*, replicas: int, revision: int, probe: str) -> str:
    readiness = ("tcpSocket: {port: 8080}" if probe == "tcp" else "exec: {command: [\"true\"]}")
    return f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {WEB_NS}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {WEB_NS}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: "100%", maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: web
        image: {IMAGE}
        command: [sh, -c, "mkdir -p /www && exec httpd -f -p 8080 -h /www"]
        env:
        - {{name: REVISION, value: "{revision}"}}
        readinessProbe:
          {readiness}
          periodSeconds: 1
"""


def unit(i: int) -> str:
    """Ten objects of one small app: 4 ConfigMaps, 2 Secrets, 2 Services, 2 Deployments (0 replicas)."""
    docs = []
    for k in range(4):
        lines = "\n".join(f"  key{j}: value-{i}-{k}-{j}-{'x' * 24}" for j in range(8))
        docs.append(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app{i:04d}-config-{k}\n"
                    f"  labels: {{bench: sync, app: app{i:04d}}}\ndata:\n{lines}\n")
    for k in range(2):
        docs.append(f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: app{i:04d}-secret-{k}\n"
                    f"  labels: {{bench: sync, app: app{i:04d}}}\ntype: Opaque\n"
                    f"data:\n  password: {hashlib.sha256(f'{i}-{k}'.encode()).hexdigest()[:32]}\n")
    for k in range(2):
        docs.append(f"""\
apiVersion: v1
kind: Service
metadata:
  name: app{i:04d}-svc-{k}
  labels: {{bench: sync, app: app{i:04d}}}
spec:
  selector: {{app: app{i:04d}, part: p{k}}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
""")
    for k in range(2):
        docs.append(f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app{i:04d}-deploy-{k}
  labels: {{bench: sync, app: app{i:04d}}}
spec:
  replicas: 0
  selector:
    matchLabels: {{app: app{i:04d}, part: p{k}}}
  template:
    metadata:
      labels: {{bench: sync, app: app{i:04d}, part: p{k}}}
    spec:
      containers:
      - name: app
        image: {IMAGE}
        command: [sleep, "3600"]
        ports:
        - {{containerPort: 8080}}
        resources:
          requests: {{cpu: 10m, memory: 16Mi}}
""")
    return "---\n".join(docs)


KINDS = (("configmaps", "/api/v1"), ("secrets", "/api/v1"), ("services", "/api/v1"), ("deployments", "/apis/apps/v1"))


def write_objects(repo: Repo, count: int) -> str:
    """``count`` objects (a multiple of 10) in files of ten under ``apps/``; returns the commit."""
    for i in range(count // 10):
        repo.write(f"apps/team{i // 50:02d}/app{i:04d}.yaml", unit(i))
    sha = repo.commit(f"{count} objects")
    repo.push()
    return sha


def application(name: str, repo: Repo, *, namespace: str, path: str) -> Obj:
    return {"apiVersion": "podling.io/v1alpha1", "kind": "Application",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"source": {"repoURL": repo.url, "targetRevision": "main", "path": path},
                     "destination": {"namespace": namespace}, "interval": "1h",
                     "syncPolicy": {"automated": {"prune": True, "selfHeal": True}}}}


# ---- the API --------------------------------------------------------------------------------------


class Api:
    def __init__(self, server: PodlingProcess, session: aiohttp.ClientSession) -> None:
        self.url = server.url
        self.session = session
        self.ssl = server.ssl_context()
        self.changed = asyncio.Event()  # set by every watch event

    async def call(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201)) -> Obj:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/merge-patch+json" if method == "PATCH" else "application/json"
        async with self.session.request(method, self.url + path, data=data, headers=headers, ssl=self.ssl,
                                        timeout=aiohttp.ClientTimeout(total=120)) as r:
            text = await r.text()
            if r.status not in ok:
                raise RuntimeError(f"{method} {path}: {r.status} {text[:500]}")
            return json.loads(text) if text else {}

    async def count(self, namespace: str, selector: str) -> dict[str, int]:
        counts = {}
        for plural, prefix in KINDS:
            listed = await self.call("GET", f"{prefix}/namespaces/{namespace}/{plural}?labelSelector={selector}")
            counts[plural] = len(listed["items"])
        return counts

    async def until(self, check: Callable[[], Any], *, timeout: float, what: str) -> Any:
        """Wait for ``check()`` to be true, re-checking on every watch event; its value."""
        deadline = time.monotonic() + timeout
        while True:
            self.changed.clear()
            if result := check():
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=min(remaining, 0.5))
            except TimeoutError:
                pass


class Watch:
    """The objects of one collection, kept current by a list and then a watch (reconnecting, bounded)."""

    def __init__(self, api: Api, path: str, *, selector: str = "") -> None:
        self.api = api
        self.path = path
        self.selector = selector
        self.objects: dict[str, Obj] = {}
        self.rv = ""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Watch:
        await self._list()
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _list(self) -> None:
        query = f"?labelSelector={self.selector}" if self.selector else ""
        listed = await self.api.call("GET", self.path + query)
        self.objects = {o["metadata"]["name"]: o for o in listed["items"]}
        self.rv = listed["metadata"]["resourceVersion"]
        self.api.changed.set()

    async def _run(self) -> None:
        for _ in range(1000):  # reconnects (each watch lasts up to 10 minutes)
            params = {"watch": "true", "resourceVersion": self.rv, "timeoutSeconds": "600",
                      "allowWatchBookmarks": "true", **({"labelSelector": self.selector} if self.selector else {})}
            try:
                async with self.api.session.get(self.api.url + self.path, params=params, ssl=self.api.ssl,
                                                timeout=aiohttp.ClientTimeout(total=None, sock_read=700)) as r:
                    if r.status != 200:
                        await asyncio.sleep(0.2)
                        await self._list()
                        continue
                    buffer = bytearray()
                    async for chunk in r.content.iter_any():  # lines can be megabytes (an Application's status)
                        buffer.extend(chunk)
                        while (end := buffer.find(b"\n")) >= 0:
                            line = bytes(buffer[:end])
                            del buffer[:end + 1]
                            if line.strip() and not await self._event(json.loads(line)):
                                break
            except (aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.sleep(0.2)

    async def _event(self, event: Obj) -> bool:
        obj = event.get("object") or {}
        kind = event.get("type")
        if kind == "ERROR":
            await self._list()
            return False
        self.rv = obj.get("metadata", {}).get("resourceVersion", self.rv)
        if kind in ("ADDED", "MODIFIED"):
            self.objects[obj["metadata"]["name"]] = obj
        elif kind == "DELETED":
            self.objects.pop(obj["metadata"]["name"], None)
        self.api.changed.set()
        return True


async def webhook(session: aiohttp.ClientSession, port: int, repo: Repo, sha: str) -> str:
    body = json.dumps({"ref": "refs/heads/main", "after": sha,
                       "repository": {"clone_url": repo.url, "html_url": repo.url}}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    async with session.post(f"http://127.0.0.1:{port}/api/webhook", data=body, headers={
            "Content-Type": "application/json", "X-GitHub-Event": "push", "X-Hub-Signature-256": signature},
            timeout=aiohttp.ClientTimeout(total=30)) as r:
        text = await r.text()
        if r.status != 200:
            raise RuntimeError(f"webhook: {r.status} {text}")
        return text


async def operator_metrics(session: aiohttp.ClientSession, port: int) -> str:
    async with session.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=30)) as r:
        return await r.text()


async def app_status_writes(api: Api) -> float:
    """PATCHes of Applications' status the API server has answered (its /metrics, all codes)."""
    async with api.session.get(f"{api.url}/metrics", ssl=api.ssl, timeout=aiohttp.ClientTimeout(total=30)) as r:
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("podling_apiserver_requests_total{") and 'verb="patch"' in line \
                and 'resource="applications/status"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else r"(?:\{\})?") + r" ([0-9.e+-]+)"
    found = re.search(r"^" + pattern + "$", text, re.M)
    return float(found.group(1)) if found else 0.0


def synced_at(watch: Watch, name: str, sha: str) -> bool:
    sync = ((watch.objects.get(name) or {}).get("status") or {}).get("sync") or {}
    return sync.get("status") == "Synced" and sync.get("revision") == sha


# ---- phase 1: push → webhook → rollout ------------------------------------------------------------------


def revision_of(template_spec: Obj) -> str:
    env = (template_spec.get("containers") or [{}])[0].get("env") or ()
    return next((e.get("value", "") for e in env if e.get("name") == "REVISION"), "")


def ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
    return status.get("phase") == "Running" and conditions.get("Ready") == "True"


def rollout_check(apps: Watch, deployments: Watch, pods: Watch, *, sha: str, revision: int, replicas: int,
                  marks: dict[str, float]) -> Callable[[], bool]:
    """Marks the first moment each milestone is seen; true when the rollout is complete."""
    want = str(revision)

    def check() -> bool:
        now = time.perf_counter()
        if "synced" not in marks and synced_at(apps, "web", sha):
            marks["synced"] = now
        deployment = deployments.objects.get("web") or {}
        complete = False
        if revision_of(((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}) == want:
            marks.setdefault("applied", now)
            status = deployment.get("status") or {}
            complete = (status.get("observedGeneration") == deployment["metadata"].get("generation")
                        and status.get("updatedReplicas") == status.get("readyReplicas")
                        == status.get("availableReplicas") == status.get("replicas") == replicas)
        mine = [p for p in pods.objects.values() if (p["metadata"].get("labels") or {}).get("app") == "web"]
        new = [p for p in mine
               if revision_of(p.get("spec") or {}) == want and not p["metadata"].get("deletionTimestamp")]
        new_ready = [p for p in new if ready(p)]
        old = [p for p in mine if revision_of(p.get("spec") or {}) != want]
        if len(new) == replicas:
            marks.setdefault("pods created", now)
            if all((p.get("spec") or {}).get("nodeName") for p in new):
                marks.setdefault("pods scheduled", now)
            if all((p.get("status") or {}).get("phase") == "Running" for p in new):
                marks.setdefault("pods running", now)
        if len(new_ready) == replicas:
            marks.setdefault("pods ready", now)
        if complete:
            marks.setdefault("deployment complete", now)
        if complete and not old and len(new_ready) == replicas and len(mine) == replicas:
            marks["done"] = now
            return True
        return False

    return check


async def phase_push(api: Api, session: aiohttp.ClientSession, server: PodlingProcess, root: Path, *,
                     git_port: int, hook_port: int, pushes: int, replicas: int, probe: str) -> dict[str, Any]:
    repo = Repo(root, "web", git_port)
    repo.write("apps/web.yaml", web_manifests(replicas=replicas, revision=0, probe=probe))
    sha = repo.commit("revision 0")
    repo.push()
    apps = await Watch(api, APPS).start()
    await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": WEB_NS}}, ok=(201, 409))
    deployments = await Watch(api, f"/apis/apps/v1/namespaces/{WEB_NS}/deployments").start()
    pods = await Watch(api, f"/api/v1/namespaces/{WEB_NS}/pods").start()
    try:
        marks: dict[str, float] = {}
        started = time.perf_counter()
        await api.call("POST", APPS, application("web", repo, namespace=WEB_NS, path="apps"))
        await api.until(rollout_check(apps, deployments, pods, sha=sha, revision=0, replicas=replicas, marks=marks),
                        timeout=ROLLOUT_TIMEOUT, what="the first rollout")
        first = marks["done"] - started
        print(f"  first deploy of {replicas} pods (Application POST → all Ready): {first:.2f} s", flush=True)
        await wait_idle(server.pid, below=0.25, window=1.0, timeout=60)

        samples: dict[str, list[float]] = {}
        for revision in range(1, pushes + 1):
            repo.write("apps/web.yaml", web_manifests(replicas=replicas, revision=revision, probe=probe))
            sha = repo.commit(f"revision {revision}")
            repo.push()
            pushed = time.perf_counter()
            marks = {}
            answer = await webhook(session, hook_port, repo, sha)
            marks["webhook answered"] = time.perf_counter()
            assert "default/web" in answer, answer
            await api.until(rollout_check(apps, deployments, pods, sha=sha, revision=revision, replicas=replicas,
                                          marks=marks), timeout=ROLLOUT_TIMEOUT, what=f"the rollout of push {revision}")
            for mark, at in marks.items():
                samples.setdefault(mark, []).append(at - pushed)
            print(f"  push {revision:2d}: synced {marks['synced'] - pushed:5.2f} s, new pods ready "
                  f"{marks['pods ready'] - pushed:5.2f} s, done {marks['done'] - pushed:5.2f} s", flush=True)
            await wait_idle(server.pid, below=0.25, window=1.0, timeout=60)
        return {"first": first, "samples": samples}
    finally:
        for watch in (apps, deployments, pods):
            await watch.stop()


def docker_floor(count: int, *, runs: int) -> list[float]:
    """Seconds to start ``count`` pause+app container pairs at once through the Docker SDK (the kubelet's floor).

    The same two containers a pod is (pause on the ``podling`` network, the app joining its
    network and IPC namespaces), started in ``count`` threads at once, ``runs`` times.
    """
    import concurrent.futures

    import docker

    client = docker.from_env(version="auto")
    tag = f"gitops-floor-{uuid.uuid4().hex[:6]}"
    labels = {"io.podling.bench": tag}

    def one(run: int, i: int) -> None:
        sandbox = client.containers.run("podling/pause:3.9", detach=True, network="podling", labels=labels,
                                        ipc_mode="shareable", name=f"{tag}-{run}-{i}-pause")
        client.containers.run(IMAGE, ["sleep", "3600"], detach=True, network_mode=f"container:{sandbox.id}",
                              ipc_mode=f"container:{sandbox.id}", labels=labels, name=f"{tag}-{run}-{i}-app")

    samples = []
    try:
        for run in range(runs):
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
                list(pool.map(lambda i: one(run, i), range(count)))
            samples.append(time.perf_counter() - started)
            for container in client.containers.list(all=True, filters={"label": f"io.podling.bench={tag}"}):
                container.remove(force=True)
    finally:
        for container in client.containers.list(all=True, filters={"label": f"io.podling.bench={tag}"}):
            container.remove(force=True)
        client.close()
    return samples


async def remove_web(api: Api, server: PodlingProcess) -> None:
    """Delete the web Application and its namespace (its pods go), so later phases run without them."""
    await api.call("DELETE", f"{APPS}/web", ok=(200, 202, 404))
    await api.call("DELETE", f"/api/v1/namespaces/{WEB_NS}", ok=(200, 202, 404))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = await api.call("GET", f"/api/v1/namespaces/{WEB_NS}/pods")
        if not listed["items"]:
            break
        await asyncio.sleep(0.5)
    await wait_idle(server.pid, timeout=60)


# ---- phases 2 and 3: syncs of many objects ----------------------------------------------------------


async def operator_sync(api: Api, repo: Repo, *, name: str, namespace: str, sha: str, objects: int) -> float:
    """POST the Application; seconds until its status says Synced at ``sha``, every object then in the API."""
    await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}}, ok=(201,))
    apps = await Watch(api, APPS).start()
    try:
        started = time.perf_counter()
        await api.call("POST", APPS, application(name, repo, namespace=namespace, path="apps"))
        await api.until(lambda: synced_at(apps, name, sha), timeout=SYNC_TIMEOUT, what=f"{name} Synced")
        elapsed = time.perf_counter() - started
    finally:
        await apps.stop()
    counts = await api.count(namespace, f"podling.io/app={name}")
    assert sum(counts.values()) == objects, counts
    return elapsed


def kubectl_apply(server: PodlingProcess, directory: Path, *, namespace: str, cache: Path) -> float:
    command = [KUBECTL, "--kubeconfig", str(server.kubeconfig), "--cache-dir", str(cache)]
    subprocess.run([*command, "api-resources"], check=True, capture_output=True, timeout=120)  # discovery cached
    started = time.perf_counter()
    result = subprocess.run([*command, "apply", "-f", str(directory), "--recursive", "-n", namespace],
                            capture_output=True, text=True, timeout=KUBECTL_TIMEOUT)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"kubectl apply exited {result.returncode}: {result.stderr[-2000:]}")
    return elapsed


async def phase_sync(api: Api, session: aiohttp.ClientSession, server: PodlingProcess, root: Path, *, git_port: int,
                     hook_port: int, objects: int) -> dict[str, Any]:
    repo = Repo(root, "sync", git_port)
    sha = write_objects(repo, objects)
    cpu = cpu_seconds(server.pid)
    fetched = metric(await operator_metrics(session, hook_port), "podling_git_fetch_duration_seconds_sum")
    operator = await operator_sync(api, repo, name="sync", namespace="sync-gitops", sha=sha, objects=objects)
    operator_cpu = cpu_seconds(server.pid) - cpu
    metrics = await operator_metrics(session, hook_port)
    fetch = metric(metrics, "podling_git_fetch_duration_seconds_sum") - fetched
    applied = metric(metrics, "podling_app_sync_duration_seconds_sum", 'app="sync"')
    print(f"  operator: {objects} objects from empty in {operator:.2f} s (git fetch {fetch:.2f} s, apply pass "
          f"{applied:.2f} s; podling up CPU {operator_cpu:.1f} s)", flush=True)
    await wait_idle(server.pid)

    await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": "sync-kubectl"}}, ok=(201,))
    cpu = cpu_seconds(server.pid)
    kubectl = await asyncio.to_thread(kubectl_apply, server, repo.work / "apps", namespace="sync-kubectl",
                                      cache=root / "kubectl-cache")
    kubectl_cpu = cpu_seconds(server.pid) - cpu
    counts = await api.count("sync-kubectl", "bench=sync")
    assert sum(counts.values()) == objects, counts
    print(f"  kubectl apply -f DIR --recursive: {objects} objects in {kubectl:.2f} s "
          f"(podling up CPU {kubectl_cpu:.1f} s); operator {kubectl / operator:.1f}x faster", flush=True)
    await wait_idle(server.pid)
    return {"operator": operator, "kubectl": kubectl, "operator_cpu": operator_cpu, "kubectl_cpu": kubectl_cpu,
            "fetch": fetch, "applied": applied}


async def phase_resync(api: Api, session: aiohttp.ClientSession, server: PodlingProcess, root: Path, *,
                       git_port: int, hook_port: int, objects: int, resyncs: int) -> dict[str, Any]:
    repo = Repo(root, "resync", git_port)
    sha = write_objects(repo, objects)
    writes = await app_status_writes(api)
    first = await operator_sync(api, repo, name="resync", namespace="resync", sha=sha, objects=objects)
    print(f"  operator: {objects} objects from empty in {first:.2f} s", flush=True)
    settle = await wait_idle(server.pid, timeout=600)
    writes = await app_status_writes(api) - writes
    print(f"  (podling up idle {settle:.0f} s later: controllers and drift re-checks done; the operator wrote "
          f"Application status {writes:.0f} times)", flush=True)

    apps = await Watch(api, APPS).start()
    try:
        # The refresh annotation, and a webhook for the commit already synced: the operator reconciles
        # (a git fetch shows it started) but writes nothing when nothing changed.
        metrics = await operator_metrics(session, hook_port)
        fetches = metric(metrics, "podling_git_fetch_duration_seconds_count")
        before = json.dumps(apps.objects["resync"].get("status"), sort_keys=True)
        await api.call("PATCH", f"{APPS}/resync", {"metadata": {"annotations": {REFRESH: str(uuid.uuid4())}}})
        await webhook(session, hook_port, repo, sha)
        await asyncio.sleep(5)
        metrics = await operator_metrics(session, hook_port)
        refresh_fetches = metric(metrics, "podling_git_fetch_duration_seconds_count") - fetches
        refresh_wrote = json.dumps(apps.objects["resync"].get("status"), sort_keys=True) != before
        print(f"  refresh annotation + webhook of the same commit: {refresh_fetches:.0f} git fetch(es), "
              f"status {'rewritten' if refresh_wrote else 'unchanged (no completion signal)'} within 5 s", flush=True)
        await wait_idle(server.pid, timeout=60)

        samples, internal = [], []
        for _ in range(resyncs):
            request = str(uuid.uuid4())
            metrics = await operator_metrics(session, hook_port)
            labels = 'app="resync"'
            total = metric(metrics, "podling_app_sync_duration_seconds_sum", labels)
            count = metric(metrics, "podling_app_sync_duration_seconds_count", labels)
            body = {"metadata": {"annotations": {SYNC_REQUEST: json.dumps({"id": request, "revision": "",
                                                                            "prune": True})}}}
            started = time.perf_counter()
            await api.call("PATCH", f"{APPS}/resync", body)

            def answered() -> Obj | None:
                operation = (apps.objects["resync"].get("status") or {}).get("operationState") or {}
                return operation if operation.get("id") == request and operation.get("phase") else None

            operation = await api.until(answered, timeout=120, what="the resync's operationState")
            samples.append(time.perf_counter() - started)
            assert operation["phase"] == "Succeeded" and " changed=0 " in f" {operation.get('result')} ", operation
            metrics = await operator_metrics(session, hook_port)
            done = metric(metrics, "podling_app_sync_duration_seconds_count", labels) - count
            internal.append((metric(metrics, "podling_app_sync_duration_seconds_sum", labels) - total) / max(done, 1))
            print(f"  no-op resync of {objects}: {samples[-1]:.2f} s ({operation['result']}; the operator's "
                  f"apply pass {internal[-1]:.2f} s)", flush=True)
            await wait_idle(server.pid, timeout=60)
        return {"first": first, "samples": samples, "internal": internal, "refresh_wrote": refresh_wrote,
                "refresh_fetches": refresh_fetches, "settle": settle, "writes": writes}
    finally:
        await apps.stop()


# ---- main ---------------------------------------------------------------------------------------------


async def run(server: PodlingProcess, root: Path, args: argparse.Namespace, *, git_port: int,
              hook_port: int) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0)) as session:
        api = Api(server, session)
        deadline = time.monotonic() + 60
        while True:  # the operator's listener, and the node Ready
            try:
                async with session.get(f"http://127.0.0.1:{hook_port}/healthz") as r:
                    node = await api.call("GET", f"/api/v1/nodes/{args.node}", ok=(200, 404))
                    conditions = {c["type"]: c["status"] for c in (node.get("status") or {}).get("conditions") or ()}
                    if r.status == 200 and conditions.get("Ready") == "True":
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("podling up: operator or node not ready in 60 s")
            await asyncio.sleep(0.2)

        report: dict[str, Any] = {}
        if args.pushes:
            print(f"1. push → webhook → {args.replicas} pods of the changed Deployment Running and Ready "
                  f"({args.pushes} pushes, probe {args.probe})", flush=True)
            report["push"] = await phase_push(api, session, server, root, git_port=git_port, hook_port=hook_port,
                                              pushes=args.pushes, replicas=args.replicas, probe=args.probe)
            await remove_web(api, server)
            floor = await asyncio.to_thread(docker_floor, args.replicas, runs=5)
            report["push"]["floor"] = floor
            print(f"  raw Docker, {args.replicas} pause+app pairs started at once (5 runs): "
                  f"median {sorted(floor)[len(floor) // 2]:.2f} s, max {max(floor):.2f} s", flush=True)
        if args.sync_objects:
            print(f"2. sync {args.sync_objects} objects from empty: operator vs kubectl apply", flush=True)
            report["sync"] = await phase_sync(api, session, server, root, git_port=git_port, hook_port=hook_port,
                                              objects=args.sync_objects)
        if args.resync_objects:
            print(f"3. no-op resync of {args.resync_objects} objects", flush=True)
            report["resync"] = await phase_resync(api, session, server, root, git_port=git_port, hook_port=hook_port,
                                                  objects=args.resync_objects, resyncs=args.resyncs)
        report["rss"] = rss_mib(server.pid)
        summary(report, args)


def summary(report: dict[str, Any], args: argparse.Namespace) -> None:
    print("\nsummary")
    if push := report.get("push"):
        samples = push["samples"]
        print(f"  push → all {args.replicas} pods Running and Ready, old pods gone ({len(samples['done'])} pushes): "
              f"p50 {percentile(samples['done'], .5):.2f} s, p99 {percentile(samples['done'], .99):.2f} s  (target p50 ≤ 2 s)")
        for mark in ("webhook answered", "applied", "synced", "pods created", "pods scheduled", "pods running",
                     "pods ready", "deployment complete"):
            if mark in samples:
                print(f"    push → {mark}: p50 {percentile(samples[mark], .5):.2f} s, p99 {percentile(samples[mark], .99):.2f} s")
        print(f"    first deploy (Application POST → {args.replicas} pods Ready): {push['first']:.2f} s")
        if floor := push.get("floor"):
            print(f"    raw Docker floor, {args.replicas} pause+app pairs at once: median "
                  f"{sorted(floor)[len(floor) // 2]:.2f} s, max {max(floor):.2f} s")
    if sync := report.get("sync"):
        print(f"  sync {args.sync_objects} objects from empty: operator {sync['operator']:.2f} s, kubectl apply "
              f"{sync['kubectl']:.2f} s, ratio {sync['kubectl'] / sync['operator']:.1f}x  (target ≥ 5x)")
        print(f"    operator's git fetch {sync['fetch']:.2f} s, apply pass {sync['applied']:.2f} s; podling up CPU: "
              f"operator sync {sync['operator_cpu']:.1f} s, kubectl apply {sync['kubectl_cpu']:.1f} s")
    if resync := report.get("resync"):
        samples = resync["samples"]
        print(f"  no-op resync of {args.resync_objects} objects (sync request → operationState, "
              f"{len(samples)} runs): p50 {percentile(samples, .5):.2f} s, max {max(samples):.2f} s  (target ≤ 2 s)")
        print(f"    of which the operator's apply pass (podling_app_sync_duration_seconds): "
              f"p50 {percentile(resync['internal'], .5):.2f} s")
        print(f"    first sync of {args.resync_objects} objects from empty: {resync['first']:.2f} s; podling up busy "
              f"{resync['settle']:.0f} s after it (controllers, drift re-checks; {resync['writes']:.0f} "
              "Application status writes)")
        print(f"    refresh annotation / webhook of the synced commit: status "
              f"{'rewritten' if resync['refresh_wrote'] else 'unchanged, no completion signal'}")
    print(f"  podling up resident memory at the end: {report['rss']:.0f} MiB")


def remove_containers(node: str) -> None:
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.podling.node={node}"],
                         capture_output=True, text=True, timeout=60).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True, timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--sync-objects", type=int, default=1000, help="a multiple of 10 (0 skips the phase)")
    parser.add_argument("--resync-objects", type=int, default=5000, help="a multiple of 10 (0 skips the phase)")
    parser.add_argument("--resyncs", type=int, default=5)
    parser.add_argument("--probe", choices=["tcp", "exec"], default="tcp",
                        help="the web pods' readiness probe: tcpSocket on httpd's port, or exec true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) and print it")
    args = parser.parse_args()
    args.node = f"bench-gitops-{uuid.uuid4().hex[:6]}"

    tmp = tempfile.mkdtemp(prefix="bench-gitops-")
    root = Path(tmp)
    git_port, hook_port = free_port(), free_port()
    (root / "served").mkdir()
    (root / "hook-secret").write_text(SECRET)
    daemon = git_daemon(root, git_port)
    server = PodlingProcess(data_dir=root / "data", command="up", args=(
        "--node-name", args.node, "--address", "127.0.0.1", "--kubelet-port", "0", "--max-pods", "120",
        "--metrics-listen", "127.0.0.1:0", "--operator-listen", f"127.0.0.1:{hook_port}",
        "--webhook-secret-file", str(root / "hook-secret")))
    try:
        server.start(timeout=60)
        asyncio.run(run(server, root, args, git_port=git_port, hook_port=hook_port))
    finally:
        try:
            server.stop(timeout=60)
        except Exception as err:  # noqa: BLE001 - killed instead; cleanup goes on
            print(f"podling up did not stop in time ({err!r}); killed", file=sys.stderr)
        daemon.terminate()
        daemon.wait(timeout=10)
        remove_containers(args.node)
        if args.keep:
            print(f"logs kept in {root}")
        else:
            subprocess.run(["rm", "-rf", str(root)], check=False)


if __name__ == "__main__":
    main()
