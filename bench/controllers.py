"""Controller benchmark: a 1,000-replica Deployment from 0 to every pod Running, on hollow nodes.

Real processes throughout: a ``podling apiserver`` on the SQLite store, a ``podling
controller-manager`` running the deployment and replicaset controllers, and hollow kubelets
(``podling kubelet --runtime hollow``: a real kubelet over a simulated runtime, as kubemark's
hollow nodes). With ``--nodes 1`` (the default) the pod template names its node and no
scheduler takes part; with ``--nodes N`` and ``--scheduler``, a ``podling scheduler`` process
spreads the pods over N hollow kubelets.

One Deployment is created (one POST) and a watch on its pods times, from that POST:
  * every pod created (the ReplicaSet controller's slow-start batches, 500 per reconcile);
  * every pod Running, and every pod Ready (both reported by the kubelets);
  * the Deployment's status saying all replicas available (what ``kubectl rollout status`` waits for).

All traffic is loopback; every wait is bounded. Usage:

    .venv/bin/python bench/controllers.py [--replicas 1000] [--nodes 1] [--scheduler] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from podling_process import (  # noqa: E402
    ControllerManagerProcess, KubeletProcess, PodlingProcess, SchedulerProcess, _Process)

NS = "bench"
TIMEOUT = 600.0  # seconds a run may take at most


def deployment(name: str, replicas: int, node: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"terminationGracePeriodSeconds": 0,
                            "containers": [{"name": "app", "image": "podling/busybox:1.35",
                                            "command": ["sleep", "3600"]}]}
    if node is not None:
        spec["nodeName"] = node
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


async def run(server: PodlingProcess, session: aiohttp.ClientSession, *, name: str, replicas: int,
              node: str | None) -> dict[str, float]:
    """Create the Deployment; seconds from the POST to each milestone."""
    ssl = server.ssl_context()
    base = f"{server.url}/apis/apps/v1/namespaces/{NS}/deployments"
    pods_url = f"{server.url}/api/v1/namespaces/{NS}/pods?watch=true&labelSelector=app%3D{name}"
    created: set[str] = set()
    running: set[str] = set()
    ready: set[str] = set()
    marks: dict[str, float] = {}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with session.get(pods_url, ssl=ssl, timeout=timeout) as watch:
        start = time.perf_counter()
        async with session.post(base, json=deployment(name, replicas, node), ssl=ssl) as response:
            assert response.status == 201, await response.text()
        async for line in watch.content:
            event = json.loads(line)
            obj = event["object"]
            pod = obj["metadata"]["name"]
            if event["type"] == "DELETED":
                continue
            created.add(pod)
            if len(created) == replicas and "created" not in marks:
                marks["created"] = time.perf_counter() - start
            status = obj.get("status") or {}
            if status.get("phase") == "Running":
                running.add(pod)
                if len(running) == replicas and "running" not in marks:
                    marks["running"] = time.perf_counter() - start
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ()):
                ready.add(pod)
                if len(ready) == replicas:
                    marks["ready"] = time.perf_counter() - start
                    break
    while True:
        async with session.get(f"{base}/{name}", ssl=ssl) as response:
            status = (await response.json()).get("status") or {}
        if status.get("availableReplicas") == replicas and status.get("updatedReplicas") == replicas:
            marks["available"] = time.perf_counter() - start
            return marks
        if time.perf_counter() - start > TIMEOUT:
            raise TimeoutError(f"deployment {name} not available after {TIMEOUT}s: {status}")
        await asyncio.sleep(0.1)


async def delete(server: PodlingProcess, session: aiohttp.ClientSession, name: str) -> None:
    """Scale to 0 (no garbage collector runs here) and wait for the pods to go, then delete."""
    ssl = server.ssl_context()
    url = f"{server.url}/apis/apps/v1/namespaces/{NS}/deployments/{name}"
    async with session.patch(f"{url}/scale", json={"spec": {"replicas": 0}}, ssl=ssl,
                             headers={"Content-Type": "application/merge-patch+json"}) as response:
        assert response.status == 200, await response.text()
    deadline = time.perf_counter() + TIMEOUT
    while time.perf_counter() < deadline:
        async with session.get(f"{server.url}/api/v1/namespaces/{NS}/pods?labelSelector=app%3D{name}",
                               ssl=ssl) as response:
            if not (await response.json())["items"]:
                break
        await asyncio.sleep(0.5)
    async with session.delete(url, ssl=ssl) as response:
        assert response.status == 200, await response.text()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=1, help="hollow kubelets (more than 1 needs --scheduler)")
    parser.add_argument("--scheduler", action="store_true", help="run podling scheduler; templates name no node")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if args.nodes > 1 and not args.scheduler:
        parser.error("one Deployment's pods can name only one node: --nodes > 1 needs --scheduler")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = PodlingProcess(data_dir=root / "apiserver", store="sqlite").start()
        suffix = uuid.uuid4().hex[:6]
        max_pods = str(-(-args.replicas // args.nodes) + 10)
        kubelets = [KubeletProcess(server=server, node_name=f"hollow-{suffix}-{i}", root_dir=root / f"kubelet-{i}",
                                   args=("--runtime", "hollow", "--max-pods", max_pods, "--address", "127.0.0.1"))
                    for i in range(args.nodes)]
        manager = ControllerManagerProcess(server=server, log_dir=root / "controller-manager",
                                           args=("--controllers=replicaset,deployment",))
        processes: list[_Process] = []
        try:
            for kubelet in kubelets:
                processes.append(kubelet.start())
            processes.append(manager.start())
            if args.scheduler:
                processes.append(SchedulerProcess(server=server, log_dir=root).start())
            server.kubectl("create", "namespace", NS)
            node = None if args.scheduler else kubelets[0].node_name
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {server.token}"}) as session:
                for i in range(args.runs):
                    name = f"bench-{i}"
                    marks = await run(server, session, name=name, replicas=args.replicas, node=node)
                    print(f"run {i + 1}: {args.replicas} replicas on {args.nodes} hollow node(s)"
                          f"{' via the scheduler' if args.scheduler else ''}: all created {marks['created']:.1f}s, "
                          f"all Running {marks['running']:.1f}s, all Ready {marks['ready']:.1f}s, "
                          f"Deployment available {marks['available']:.1f}s; "
                          f"controller-manager RSS {rss_mib(manager.pid):.0f} MiB", flush=True)
                    await delete(server, session, name)
        finally:
            for process in reversed(processes):
                process.shut_down()
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
