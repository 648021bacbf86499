"""Micro-benchmark of the store backends: small creates per second, and list/watch speed.

Usage: python bench/store.py [sqlite|etcd ENDPOINT] [--creates N] [--concurrency C]
Prints one line a figure. The SQLite file lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from podling.store.base import Store
from podling.store.etcd import EtcdStore
from podling.store.sqlite import SqliteStore

_VALUE = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"bench"},"data":{"k":"v"}}'


async def _creates(store: Store, *, total: int, concurrency: int) -> float:
    """Creates per second with ``concurrency`` tasks each creating its share in turn."""

    async def worker(index: int) -> None:
        for n in range(index, total, concurrency):
            await store.create(f"/registry/configmaps/bench/c{concurrency}-{n:07d}", _VALUE)

    start = time.perf_counter()
    await asyncio.gather(*(worker(index) for index in range(concurrency)))
    return total / (time.perf_counter() - start)


async def _list(store: Store, *, prefix: str) -> tuple[int, float]:
    start = time.perf_counter()
    items, _, _ = await store.list(prefix)
    return len(items), time.perf_counter() - start


async def _watch_replay(store: Store, *, prefix: str, count: int) -> float:
    """Events per second a watch from revision 0 replays."""
    start = time.perf_counter()
    events = store.watch(prefix, revision=0)
    seen = 0
    async for _ in events:
        seen += 1
        if seen == count:
            break
    await events.aclose()
    return count / (time.perf_counter() - start)


async def _run(store: Store, *, creates: int, concurrencies: list[int]) -> None:
    for concurrency in concurrencies:
        rate = await _creates(store, total=creates, concurrency=concurrency)
        print(f"creates, {concurrency:4d} concurrent: {rate:9.0f}/s")
    for concurrency in concurrencies[:1]:
        count, seconds = await _list(store, prefix=f"/registry/configmaps/bench/c{concurrency}-")
        print(f"list of {count} keys: {seconds * 1000:.1f} ms")
    rate = await _watch_replay(store, prefix="/registry/configmaps/bench/", count=creates)
    print(f"watch replay: {rate:9.0f} events/s")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("backend", choices=["sqlite", "etcd"])
    parser.add_argument("endpoint", nargs="?", default="127.0.0.1:2379")
    parser.add_argument("--creates", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, action="append")
    args = parser.parse_args()
    concurrencies = args.concurrency or [1, 8, 64, 1000]
    with tempfile.TemporaryDirectory() as tmp:
        if args.backend == "sqlite":
            store: Store = await SqliteStore.open(path=f"{tmp}/bench.db")
        else:
            store = await EtcdStore.open(endpoints=[args.endpoint])
        try:
            await _run(store, creates=args.creates, concurrencies=concurrencies)
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
