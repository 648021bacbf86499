"""API server benchmark: throughput and latency of a real ``podling apiserver`` process.

Measures, on each store (SQLite, and a real etcd it starts):
  * create-pod throughput with 8 concurrent clients, driven by wrk (a C load generator, so
    the client does not take the server's CPU) and by a Python aiohttp client;
  * get latency p50/p99 (one client, sequential);
  * a list of 5,000 pods (wall time, 5 runs);
  * single-write latency p99 at a paced 200 writes/s;
  * watch delivery latency (write → event at each of 100 watchers) p50/p99;
  * etcd only: raw etcd puts of the same bytes with the same concurrency, and podling's
    create throughput as a ratio of it.

All traffic is to loopback; every loop is bounded in count and time. Usage:

    .venv/bin/python bench/api.py [--stores sqlite,etcd] [--creates 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from etcd_server import EtcdServer  # noqa: E402
from figures import percentile  # noqa: E402
from podling_process import PodlingProcess  # noqa: E402

CLIENTS = 8
WATCHERS = 100
NS = "bench"


def pod(name: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
                                 "ports": [{"containerPort": 8080}],
                                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def create_throughput(session: aiohttp.ClientSession, url: str, total: int) -> float:
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            async with session.post(f"{url}/api/v1/namespaces/{NS}/pods", json=pod(f"p{i}")) as r:
                assert r.status == 201, await r.text()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    return total / (time.perf_counter() - start)


def wrk_creates(server: PodlingProcess, *, seconds: int) -> dict[str, float]:
    """8 connections creating pods for ``seconds`` (bounded by wrk's duration)."""
    result = subprocess.run(
        ["wrk", "-t2", "-c8", f"-d{seconds}s", "-s", str(Path(__file__).with_name("create_pods.lua")), server.url],
        env={**os.environ, "TOKEN": server.token, "NAMESPACE": "wrk"}, capture_output=True, text=True,
        timeout=seconds + 60, check=True,
    )
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    figures = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}
    assert figures["errors"] == 0 and figures["non2xx"] == 0, result.stdout
    return figures


async def get_latency(session: aiohttp.ClientSession, url: str, count: int) -> list[float]:
    samples = []
    for i in range(count):
        start = time.perf_counter()
        async with session.get(f"{url}/api/v1/namespaces/{NS}/pods/p{i}") as r:
            await r.read()
            assert r.status == 200
        samples.append(time.perf_counter() - start)
    return samples


async def list_time(session: aiohttp.ClientSession, url: str, runs: int) -> tuple[list[float], int]:
    samples, count = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        async with session.get(f"{url}/api/v1/namespaces/{NS}/pods") as r:
            body = await r.json()
        samples.append(time.perf_counter() - start)
        count = len(body["items"])
    return samples, count


async def paced_writes(session: aiohttp.ClientSession, url: str, rate: int, seconds: float) -> list[float]:
    samples: list[float] = []
    interval, start = 1.0 / rate, time.perf_counter()

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        async with session.post(f"{url}/api/v1/namespaces/{NS}/configmaps",
                                json={"metadata": {"name": f"paced-{i}"}, "data": {"i": str(i)}}) as r:
            assert r.status == 201, await r.text()
        samples.append(time.perf_counter() - t0)

    tasks = []
    for i in range(int(rate * seconds)):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return samples


async def watch_latency(session: aiohttp.ClientSession, url: str, writes: int) -> list[float]:
    sent: dict[str, float] = {}
    samples: list[float] = []
    ready = 0

    async with session.post(f"{url}/api/v1/namespaces/{NS}/configmaps",
                            json={"metadata": {"name": "watched"}, "data": {"seq": "-1"}}) as r:
        rv = (await r.json())["metadata"]["resourceVersion"]

    async def watcher() -> None:
        nonlocal ready
        params = {"watch": "true", "resourceVersion": rv, "fieldSelector": "metadata.name=watched",
                  "timeoutSeconds": "120"}
        async with session.get(f"{url}/api/v1/namespaces/{NS}/configmaps", params=params,
                               timeout=aiohttp.ClientTimeout(total=150)) as r:
            ready += 1
            seen = 0
            async for line in r.content:
                event = json.loads(line)
                seq = event["object"]["data"]["seq"]
                samples.append(time.perf_counter() - sent[seq])
                seen += 1
                if seen == writes:
                    return

    watchers = [asyncio.create_task(watcher()) for _ in range(WATCHERS)]
    while ready < WATCHERS:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    for seq in range(writes):
        sent[str(seq)] = time.perf_counter()
        async with session.patch(f"{url}/api/v1/namespaces/{NS}/configmaps/watched",
                                 data=json.dumps({"data": {"seq": str(seq)}}),
                                 headers={"Content-Type": "application/merge-patch+json"}) as r:
            assert r.status == 200, await r.text()
        await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*watchers), timeout=120)
    return samples


async def raw_etcd_puts(endpoint: str, total: int) -> float:
    value = base64.b64encode(json.dumps(pod("raw")).encode()).decode()
    counter = iter(range(total))
    async with aiohttp.ClientSession() as session:
        async def worker() -> None:
            for i in counter:
                key = base64.b64encode(f"/raw/pods/{NS}/p{i}".encode()).decode()
                async with session.post(f"http://{endpoint}/v3/kv/put", json={"key": key, "value": value}) as r:
                    assert r.status == 200, await r.text()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CLIENTS)))
        return total / (time.perf_counter() - start)


async def run(server: PodlingProcess, *, creates: int, etcd_endpoint: str | None) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    connector = aiohttp.TCPConnector(limit=0, ssl=server.ssl_context())
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        for name in (NS, "wrk"):
            async with session.post(f"{server.url}/api/v1/namespaces", json={"metadata": {"name": name}}) as r:
                assert r.status == 201
        wrk = wrk_creates(server, seconds=10)
        print(f"  create pods, {CLIENTS} connections (wrk): {wrk['requests'] / wrk['seconds']:,.0f} creates/s"
              f" (p50 {wrk['p50_ms']:.2f} ms, p99 {wrk['p99_ms']:.2f} ms, {wrk['requests']:.0f} pods)")
        rate = await create_throughput(session, server.url, creates)
        print(f"  create pods, {CLIENTS} clients (Python aiohttp): {rate:,.0f} creates/s ({creates} pods)")
        gets = await get_latency(session, server.url, min(2000, creates))
        print(f"  get pod: p50 {ms(percentile(gets, .5))}, p99 {ms(percentile(gets, .99))}")
        if creates >= 5000:
            lists, count = await list_time(session, server.url, 5)
            print(f"  list {count} pods: median {ms(statistics.median(lists))}, max {ms(max(lists))}")
        writes = await paced_writes(session, server.url, 200, 5)
        print(f"  single write at 200/s: p50 {ms(percentile(writes, .5))}, p99 {ms(percentile(writes, .99))}")
        delivery = await watch_latency(session, server.url, 50)
        print(f"  watch delivery, {WATCHERS} watchers: p50 {ms(percentile(delivery, .5))}, p99 {ms(percentile(delivery, .99))}"
              f" ({len(delivery)} deliveries)")
    if etcd_endpoint:
        raw = await raw_etcd_puts(etcd_endpoint, creates)
        print(f"  raw etcd puts, same bytes, {CLIENTS} clients: {raw:,.0f} puts/s;"
              f" podling creates = {rate / raw:.0%} of raw etcd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,etcd")
    parser.add_argument("--creates", type=int, default=5000)
    args = parser.parse_args()
    for store in args.stores.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            etcd, endpoint, url = None, None, "sqlite"
            if store == "etcd":
                etcd = EtcdServer(Path(tmp) / "etcd")
                endpoint = etcd.start()
                url = f"etcd://{endpoint}"
            server = PodlingProcess(data_dir=Path(tmp) / "podling", store=url).start()
            print(f"store: {store}")
            try:
                asyncio.run(run(server, creates=args.creates, etcd_endpoint=endpoint))
            finally:
                server.stop()
                if etcd:
                    etcd.stop()


if __name__ == "__main__":
    main()
