"""The hollow runtime: the simulated lifecycle a hollow kubelet sees, and its events."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator

import pytest

from podling.kubelet.runtime.base import (
    ContainerConfig,
    ImageNeverPullError,
    NotFound,
    RuntimeError_,
    RuntimeEvent,
    SandboxConfig,
)
from podling.kubelet.runtime.hollow import HollowRuntime

POD = SandboxConfig(pod_uid="uid-1", namespace="default", name="web", hostname="web")


def config(name: str = "main") -> ContainerConfig:
    return ContainerConfig(name=name, kind="app", image="nginx:1.25", spec_hash="h", restart_count=0)


async def running_container(runtime: HollowRuntime) -> tuple[str, str]:
    sandbox_id = await runtime.run_sandbox(POD)
    container_id = await runtime.create_container(sandbox_id=sandbox_id, pod=POD, config=config())
    await runtime.start_container(container_id)
    return sandbox_id, container_id


async def test_starts_take_the_start_delay_and_containers_run_until_stopped() -> None:
    runtime = HollowRuntime(node_name="hollow-1", start_delay=0.1)
    started = asyncio.get_running_loop().time()
    sandbox_id, container_id = await running_container(runtime)
    assert asyncio.get_running_loop().time() - started >= 0.2  # the sandbox's start, then the container's
    [sandbox] = await runtime.list_sandboxes()
    [container] = await runtime.list_containers()
    assert (sandbox.id, sandbox.ready, sandbox.pod_uid) == (sandbox_id, True, "uid-1")
    assert (container.id, container.state, container.name, container.kind) == (container_id, "running", "main", "app")
    assert container.started_at is not None and container.started_at.tzinfo is datetime.UTC

    await runtime.stop_container(container_id, timeout=30)
    [container] = await runtime.list_containers()
    assert (container.state, container.exit_code, container.reason) == ("exited", 0, "Completed")
    assert container.started_at is not None and container.finished_at is not None
    assert container.started_at <= container.finished_at

    await runtime.remove_container(container_id)
    await runtime.remove_container(container_id)  # missing: fine
    await runtime.stop_sandbox(sandbox_id)
    await runtime.remove_sandbox(sandbox_id)
    assert await runtime.list_sandboxes() == [] and await runtime.list_containers() == []
    await runtime.close()


async def test_pod_ips_are_unique_across_nodes() -> None:
    first, second = HollowRuntime(node_name="a"), HollowRuntime(node_name="b")
    for runtime in (first, second):
        for _ in range(3):
            await runtime.run_sandbox(POD)
    ips = [s.ip for r in (first, second) for s in await r.list_sandboxes()]
    assert len(set(ips)) == 6 and all(ip.startswith("10.") for ip in ips)


async def test_exec_succeeds_only_in_running_containers() -> None:
    runtime = HollowRuntime(node_name="hollow-1")
    _, container_id = await running_container(runtime)
    result = await runtime.exec_sync(container_id, ["cat", "/ready"], timeout=1)
    assert (result.exit_code, result.stdout, result.stderr) == (0, b"", b"")

    async def no_output(stream: int, data: bytes) -> None:
        raise AssertionError("hollow execs print nothing")

    async def stdin() -> AsyncIterator[bytes]:
        yield b"ignored"

    assert await runtime.exec_stream(container_id, ["sh"], output=no_output, stdin=stdin()) == 0
    await runtime.stop_container(container_id, timeout=0)
    with pytest.raises(RuntimeError_, match="not running"):
        await runtime.exec_sync(container_id, ["true"], timeout=1)
    with pytest.raises(NotFound):
        await runtime.exec_sync("nope", ["true"], timeout=1)


async def test_logs_are_one_line_and_a_follow_ends_with_the_container() -> None:
    runtime = HollowRuntime(node_name="hollow-1")
    _, container_id = await running_container(runtime)
    assert [c async for c in runtime.logs(container_id)] == [b"hollow container main of pod default/web: simulated, nothing runs\n"]
    assert [c async for c in runtime.logs(container_id, tail=0)] == []
    [stamped] = [c async for c in runtime.logs(container_id, timestamps=True)]
    assert datetime.datetime.fromisoformat(stamped.split(b" ", 1)[0].decode()).tzinfo is not None

    async def follow() -> list[bytes]:
        return [c async for c in runtime.logs(container_id, follow=True)]

    following = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    assert not following.done()  # it runs forever unless stopped
    await runtime.stop_container(container_id, timeout=0)
    assert len(await asyncio.wait_for(following, 1)) == 1


async def test_events_report_every_transition() -> None:
    runtime = HollowRuntime(node_name="hollow-1", start_delay=0.05)
    events = runtime.events()
    seen: list[RuntimeEvent] = []

    async def collect() -> None:
        async for event in events:
            seen.append(event)
            if event.action == "destroy":
                return

    collecting = asyncio.create_task(collect())
    await asyncio.sleep(0)  # subscribed
    sandbox_id, container_id = await running_container(runtime)
    await asyncio.sleep(0.1)
    await runtime.remove_container(container_id)
    await asyncio.wait_for(collecting, 1)
    await events.aclose()  # type: ignore[attr-defined]
    assert [(e.container_id, e.action) for e in seen] == [
        (sandbox_id, "create"), (sandbox_id, "start"), (container_id, "create"), (container_id, "start"),
        (container_id, "kill"), (container_id, "die"), (container_id, "destroy")]
    assert {e.pod_uid for e in seen} == {"uid-1"}


async def test_image_policies() -> None:
    runtime = HollowRuntime(node_name="hollow-1")
    with pytest.raises(ImageNeverPullError, match='Container image "app:1" is not present with pull policy of Never'):
        await runtime.ensure_image("app:1", policy="Never")
    image_id, pulled = await runtime.ensure_image("app:1", policy="IfNotPresent")
    assert pulled and image_id.startswith("sha256:")
    assert await runtime.ensure_image("app:1", policy="IfNotPresent") == (image_id, False)
    assert await runtime.ensure_image("app:1", policy="Never") == (image_id, False)
    assert await runtime.ensure_image("app:1", policy="Always") == (image_id, True)
