"""The userspace relay on real loopback sockets, on both event loops podling may run on
(asyncio's own, which in-process tests use, and uvloop, which the ``podling`` command uses):
they differ in whether a client's bytes can arrive before the endpoint's connection is made."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from podling.proxy.model import Endpoint, ServicePort
from podling.proxy.userspace import UserspaceProxy

LOOPS: dict[str, Callable[[Awaitable[None]], None]] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_port(node_port: int, *endpoints: Endpoint) -> ServicePort:
    return ServicePort(namespace="ns", name="svc", port_name="", protocol="TCP", cluster_ip="", port=80,
                       node_port=node_port, load_balancer_ips=(), affinity_seconds=0, endpoints=endpoints)


async def relay_to(*endpoints: Endpoint) -> tuple[UserspaceProxy, int]:
    proxy = UserspaceProxy(cluster_ips=False)
    node_port = free_port()
    await proxy.sync([service_port(node_port, *endpoints)])
    return proxy, node_port


async def serve(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> tuple[
        asyncio.Server, Endpoint]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])


async def upper_case_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read to EOF (a half-closed request), answer, close."""
    data = await reader.read()
    writer.write(data.upper())
    await writer.drain()
    writer.close()


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[None]], None]:
    return LOOPS[request.param]


def test_bytes_sent_at_once_and_a_half_close_reach_the_endpoint(run: Callable[[Awaitable[None]], None]) -> None:
    payload = b"x" * 300_000 + b"end"  # more than the relay holds while it connects

    async def main() -> None:
        server, endpoint = await serve(upper_case_all)
        proxy, node_port = await relay_to(endpoint)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", node_port)
            writer.write(payload)  # before the relay has even picked an endpoint
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), 10)
            assert answer == payload.upper()
            writer.close()
            stats = proxy.stats["ns/svc"]
            assert (stats.connections, stats.bytes_in, stats.bytes_out) == (1, len(payload), len(payload))
        finally:
            await proxy.close()
            server.close()

    run(main())


def test_an_endpoint_that_speaks_first_is_heard(run: Callable[[Awaitable[None]], None]) -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hello\r\n")
        await writer.drain()
        line = await reader.readline()
        writer.write(b"echo " + line)
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, endpoint = await serve(banner)
        proxy, node_port = await relay_to(endpoint)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", node_port)
            assert await asyncio.wait_for(reader.readline(), 10) == b"220 hello\r\n"
            writer.write(b"QUIT\r\n")
            assert await asyncio.wait_for(reader.read(), 10) == b"echo QUIT\r\n"
            writer.close()
        finally:
            await proxy.close()
            server.close()

    run(main())


def test_a_refusing_endpoint_is_passed_over_and_none_answering_resets(run: Callable[[Awaitable[None]], None]) -> None:
    async def main() -> None:
        server, endpoint = await serve(upper_case_all)
        refusing = Endpoint("127.0.0.1", free_port())  # nothing listens there
        proxy, node_port = await relay_to(refusing, endpoint)
        try:
            for _ in range(4):  # round-robin starts at each endpoint in turn: every connection gets through
                reader, writer = await asyncio.open_connection("127.0.0.1", node_port)
                writer.write(b"ping")
                writer.write_eof()
                assert await asyncio.wait_for(reader.read(), 10) == b"PING"
                writer.close()
            await proxy.sync([service_port(node_port, refusing)])
            reader, writer = await asyncio.open_connection("127.0.0.1", node_port)
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(), 10)
            writer.close()
        finally:
            await proxy.close()
            server.close()

    run(main())
