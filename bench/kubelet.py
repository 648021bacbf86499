"""Kubelet benchmark: pod startup latency through podling, beside raw Docker, and a full node.

Measures, against a real ``podling apiserver`` and a real ``podling kubelet`` on the local
Docker engine:
  * pod startup latency (POST of the pod → a watch event showing it Running and Ready),
    p50/p99, for 1 pod at a time (``--single`` runs) and for 30 created at once;
  * in the same run, the same two containers (pause + app joining its network) started
    directly through the Docker SDK, one at a time and 30 at once: the floor podling sits on;
  * 110 pods (Kubernetes' default max-pods) created at once: time until all are Running,
    and the kubelet's resident memory then.

All traffic is to loopback and to containers this script creates; every loop is bounded in
count and time. Usage:

    .venv/bin/python bench/kubelet.py [--single 100] [--burst 30] [--full 110]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from figures import percentile  # noqa: E402
from podling_process import KubeletProcess, PodlingProcess  # noqa: E402

NS = "bench"
IMAGE = "podling/busybox:1.35"
PAUSE = "podling/pause:3.9"
NETWORK = "podling"
TIMEOUT = 300.0  # seconds any one phase may take


def pod(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "app", "image": IMAGE, "command": ["sleep", "3600"]}]}}


def running_and_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
    return status.get("phase") == "Running" and conditions.get("Ready") == "True"


class Api:
    def __init__(self, server: PodlingProcess, session: aiohttp.ClientSession) -> None:
        self.url = server.url
        self.session = session
        self.ssl = server.ssl_context()

    async def create(self, obj: dict[str, Any]) -> None:
        async with self.session.post(f"{self.url}/api/v1/namespaces/{NS}/pods", json=obj, ssl=self.ssl) as r:
            assert r.status == 201, await r.text()

    async def delete_all(self) -> None:
        async with self.session.delete(f"{self.url}/api/v1/namespaces/{NS}/pods?gracePeriodSeconds=0",
                                       ssl=self.ssl) as r:
            assert r.status == 200, await r.text()

    async def count(self) -> int:
        async with self.session.get(f"{self.url}/api/v1/namespaces/{NS}/pods", ssl=self.ssl) as r:
            return len((await r.json())["items"])

    async def start_pods(self, names: list[str], node: str) -> dict[str, float]:
        """Create the pods at once; seconds from each POST to the watch showing it Running and Ready."""
        async with self.session.get(f"{self.url}/api/v1/namespaces/{NS}/pods?watch=true&resourceVersion=0",
                                    ssl=self.ssl, timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as watch:
            sent: dict[str, float] = {}
            latency: dict[str, float] = {}

            async def post(name: str) -> None:
                sent[name] = time.perf_counter()
                await self.create(pod(name, node))

            posts = asyncio.gather(*(post(n) for n in names))
            async for line in watch.content:
                event = json.loads(line)
                obj = event["object"]
                name = obj["metadata"]["name"]
                if name in sent and name not in latency and running_and_ready(obj):
                    latency[name] = time.perf_counter() - sent[name]
                    if len(latency) == len(names):
                        break
            await posts
            return latency


def raw_docker(count: int, *, tag: str) -> list[float]:
    """Start ``count`` pause+app pairs at once through the Docker SDK; seconds per pair."""
    client = docker.from_env(version="auto")

    def one(i: int) -> float:
        start = time.perf_counter()
        labels = {"io.podling.bench": tag}
        sandbox = client.containers.run(PAUSE, detach=True, network=NETWORK, labels=labels, ipc_mode="shareable",
                                        name=f"bench-raw-{tag}-{i}-pause")
        client.containers.run(IMAGE, ["sleep", "3600"], detach=True, network_mode=f"container:{sandbox.id}",
                              ipc_mode=f"container:{sandbox.id}", labels=labels, name=f"bench-raw-{tag}-{i}-app")
        return time.perf_counter() - start

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(one, range(count)))
    finally:
        for container in client.containers.list(all=True, filters={"label": f"io.podling.bench={tag}"}):
            container.remove(force=True)
        client.close()


async def wait_empty(api: Api, node: str) -> None:
    """No pod in the API and no container of the node left in Docker: the kubelet's clean-up of
    one phase must not bill the next."""
    client = docker.from_env(version="auto")
    deadline = time.monotonic() + TIMEOUT
    try:
        while (await api.count() or client.api.containers(all=True, filters={"label": f"io.podling.node={node}"})) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        client.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--single", type=int, default=100, help="pods started one at a time")
    parser.add_argument("--burst", type=int, default=30, help="pods started at once")
    parser.add_argument("--full", type=int, default=110, help="pods for the full-node run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = PodlingProcess(data_dir=Path(tmp) / "apiserver").start()
        node = f"bench-{uuid.uuid4().hex[:6]}"
        kubelet = KubeletProcess(server=server, node_name=node, root_dir=Path(tmp) / "kubelet",
                                 args=("--address", "127.0.0.1", "--max-pods", str(max(args.full, 110))))
        try:
            kubelet.start()
            server.kubectl("create", "namespace", NS)
            raw_docker(1, tag="warm")  # images present, network created
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {server.token}"}) as session:
                api = Api(server, session)
                # Both sides warmed alike: a fresh kubelet's first pod also pays once for its
                # Docker connections, thread pool and directories (about 0.2 s here).
                await api.start_pods(["warm"], node)
                await api.delete_all()
                await wait_empty(api, node)
                results: dict[str, list[float]] = {"podling 1": [], "docker 1": []}
                for i in range(args.single):
                    results["podling 1"] += (await api.start_pods([f"single-{i}"], node)).values()
                    results["docker 1"] += raw_docker(1, tag=f"single{i}")
                await api.delete_all()
                await wait_empty(api, node)
                results[f"podling {args.burst}"] = [*(await api.start_pods(
                    [f"burst-{i}" for i in range(args.burst)], node)).values()]
                await api.delete_all()
                await wait_empty(api, node)
                results[f"docker {args.burst}"] = raw_docker(args.burst, tag="burst")

                print(f"{'pod startup':<14} {'p50':>8} {'p99':>8}")
                for label, values in results.items():
                    print(f"{label:<14} {percentile(values, 0.5):>7.2f}s {percentile(values, 0.99):>7.2f}s")
                for n in (1, args.burst):
                    p50 = percentile(results[f"podling {n}"], 0.5) / percentile(results[f"docker {n}"], 0.5)
                    p99 = percentile(results[f"podling {n}"], 0.99) / percentile(results[f"docker {n}"], 0.99)
                    print(f"ratio podling/docker, {n} at once: p50 {p50:.2f}, p99 {p99:.2f}")

                await asyncio.sleep(3)
                started = time.perf_counter()
                full = await api.start_pods([f"full-{i}" for i in range(args.full)], node)
                elapsed = time.perf_counter() - started
                print(f"{args.full} pods Running and Ready: {elapsed:.1f}s (p50 {percentile([*full.values()], 0.5):.1f}s); "
                      f"kubelet RSS {rss_mib(kubelet.pid):.0f} MiB")
                await api.delete_all()
                await wait_empty(api, node)
        finally:
            kubelet.stop()
            kubelet.remove_containers()
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
