"""Scheduler benchmark: 10,000 pods onto 1,000 nodes, beside the store's raw binding ceiling.

Against a real ``podling apiserver`` process (SQLite store), this script
  * creates 1,000 Node objects directly (Ready, 32 CPUs, 64 GiB, 110 pods each: room for
    every pod of the run);
  * measures the ceiling the store and API server put on any scheduler: 10,000 pods
    created, then their binding POSTs from an aiohttp client with the scheduler's
    concurrency (``BINDS_IN_FLIGHT``). Those pods stay bound: the scheduler then starts on
    a cluster running 10 pods per node;
  * creates 10,000 pending pods (100m CPU, 128 MiB each), starts ``podling scheduler`` (a
    process of its own, /metrics on plain HTTP) and times it from ready (its informers
    synced: every node and pod listed) until its ``schedule_attempts_total{result=
    "scheduled"}`` reaches 10,000 (scraped every 0.25 s); pods/s is the average over that;
  * reads p50/p99 attempt latency (binding included, as kube-scheduler's
    ``scheduling_attempt_duration_seconds``) and algorithm latency (filter and score) from
    the scheduler's histograms (interpolated inside a bucket, as Prometheus'
    ``histogram_quantile``), and the CPU seconds the scheduler and the API server spent.

All traffic is on loopback; every phase is bounded in count and time. Usage:

    .venv/bin/python bench/scheduler.py [--nodes 1000] [--pods 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from podling_process import PodlingProcess, SchedulerProcess  # noqa: E402

from podling.scheduler.scheduler import BINDS_IN_FLIGHT  # noqa: E402

NS, RAW_NS = "bench", "bench-raw"
TIMEOUT = 600.0  # seconds any one phase may take
POLL = 0.25  # seconds between scrapes of the scheduler's /metrics
CREATORS = 100  # concurrent creating clients


def node(name: str) -> dict[str, Any]:
    resources = {"cpu": "32", "memory": "64Gi", "pods": "110"}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"capacity": resources, "allocatable": resources,
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


def pod(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                                     "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}


async def bounded(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Run ``one(i)`` for i < count, ``concurrency`` at a time; the wall time it took."""
    indexes = iter(range(count))

    async def worker() -> None:
        for i in indexes:
            await one(i)

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), TIMEOUT)
    return time.perf_counter() - start


class Api:
    def __init__(self, server: PodlingProcess, session: aiohttp.ClientSession) -> None:
        self.url, self.session, self.ssl = server.url, session, server.ssl_context()

    async def send(self, method: str, path: str, body: Any, *, ok: int, content_type: str = "application/json") -> None:
        async with self.session.request(method, self.url + path, data=json.dumps(body), ssl=self.ssl,
                                        headers={"Content-Type": content_type}) as response:
            if response.status != ok:
                raise AssertionError(f"{method} {path}: {response.status} {await response.text()}")

    async def create_nodes(self, count: int) -> float:
        async def one(i: int) -> None:
            obj = node(f"node-{i:04d}")
            await self.send("POST", "/api/v1/nodes", obj, ok=201)
            await self.send("PATCH", f"/api/v1/nodes/node-{i:04d}/status", {"status": obj["status"]}, ok=200,
                            content_type="application/merge-patch+json")

        return await bounded(count, CREATORS, one)

    async def create_pods(self, count: int, namespace: str) -> float:
        return await bounded(count, CREATORS, lambda i: self.send(
            "POST", f"/api/v1/namespaces/{namespace}/pods", pod(f"pod-{i:05d}", namespace), ok=201))

    async def bind_pods(self, count: int, namespace: str, nodes: int) -> float:
        return await bounded(count, BINDS_IN_FLIGHT, lambda i: self.send(
            "POST", f"/api/v1/namespaces/{namespace}/pods/pod-{i:05d}/binding",
            {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": f"pod-{i:05d}", "namespace": namespace},
             "target": {"apiVersion": "v1", "kind": "Node", "name": f"node-{i % nodes:04d}"}}, ok=201))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def quantile(families: dict[str, Any], name: str, q: float, labels: dict[str, str]) -> float:
    """``histogram_quantile``: linear interpolation inside the bucket that holds quantile q."""
    buckets = sorted((float(s.labels["le"]), s.value) for s in families[name].samples
                     if s.name.endswith("_bucket") and all(s.labels.get(k) == v for k, v in labels.items()))
    total = buckets[-1][1]
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower


def scheduled(metrics: str) -> float:
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    return sum(sample.value for sample in families["podling_scheduler_schedule_attempts"].samples
               if sample.name.endswith("_total") and sample.labels.get("result") == "scheduled")


async def run_scheduler(server: PodlingProcess, *, pods: int, log_dir: Path) -> tuple[dict[str, float], str]:
    """A ``podling scheduler`` process until it has bound ``pods``; times, CPU seconds, and its last metrics."""
    scheduler = SchedulerProcess(server=server, log_dir=log_dir)
    started = time.perf_counter()
    await asyncio.to_thread(scheduler.start, timeout=TIMEOUT)
    ready = time.perf_counter()
    cpu = {"scheduler": cpu_seconds(scheduler.pid), "api": cpu_seconds(server.pid)}
    try:
        deadline = ready + TIMEOUT
        while scheduled(metrics := await asyncio.to_thread(scheduler.metrics)) < pods:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the scheduler bound {scheduled(metrics):.0f} of {pods} pods in {TIMEOUT}s")
            await asyncio.sleep(POLL)
        done = time.perf_counter()
        return {"sync": ready - started, "span": done - ready,
                "scheduler_cpu": cpu_seconds(scheduler.pid) - cpu["scheduler"],
                "api_cpu": cpu_seconds(server.pid) - cpu["api"], "rss": rss_mib(scheduler.pid)}, metrics
    finally:
        scheduler.stop()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = PodlingProcess(data_dir=Path(tmp) / "apiserver").start()
        try:
            headers = {"Authorization": f"Bearer {server.token}"}
            async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0)) as session:
                api = Api(server, session)
                for namespace in (NS, RAW_NS):
                    await api.send("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}}, ok=201)
                seconds = await api.create_nodes(args.nodes)
                print(f"{args.nodes} nodes created in {seconds:.1f}s")
                await api.create_pods(args.pods, RAW_NS)
                seconds = await api.bind_pods(args.pods, RAW_NS, args.nodes)
                ceiling = args.pods / seconds
                print(f"raw binding POSTs, {BINDS_IN_FLIGHT} in flight, no scheduler: {ceiling:,.0f}/s")
                seconds = await api.create_pods(args.pods, NS)
                print(f"{args.pods} pods created in {seconds:.1f}s ({args.pods / seconds:,.0f}/s)")

                times, metrics = await run_scheduler(server, pods=args.pods, log_dir=Path(tmp) / "scheduler")
                families = {f.name: f for f in text_string_to_metric_families(metrics)}
                labels = {"result": "scheduled", "profile": "default-scheduler"}
                attempts = "podling_scheduler_scheduling_attempt_duration_seconds"
                algorithm = "podling_scheduler_scheduling_algorithm_duration_seconds"
                dropped = families["podling_scheduler_events_dropped"].samples[0].value
                rate = args.pods / times["span"]
                print(f"scheduler ready {times['sync']:.1f}s after start "
                      f"(listing {args.nodes} nodes, {2 * args.pods} pods)")
                print(f"scheduled {args.pods} pods onto {args.nodes} nodes in {times['span']:.2f}s: "
                      f"{rate:,.0f} pods/s average")
                print(f"attempt latency (binding included): "
                      f"p50 {quantile(families, attempts, .5, labels) * 1e3:.1f} ms, "
                      f"p99 {quantile(families, attempts, .99, labels) * 1e3:.1f} ms; "
                      f"algorithm p50 {quantile(families, algorithm, .5, {}) * 1e3:.2f} ms, "
                      f"p99 {quantile(families, algorithm, .99, {}) * 1e3:.2f} ms")
                print(f"CPU while scheduling: scheduler {times['scheduler_cpu']:.1f}s "
                      f"({times['scheduler_cpu'] / args.pods * 1e6:.0f} us/pod), API server {times['api_cpu']:.1f}s "
                      f"({times['api_cpu'] / args.pods * 1e6:.0f} us/pod); Scheduled events dropped: {dropped:.0f}; "
                      f"scheduler resident memory {times['rss']:.0f} MiB")
                print(f"the scheduler reached {rate / ceiling:.0%} of the raw binding rate")
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000)
    asyncio.run(main(parser.parse_args()))
