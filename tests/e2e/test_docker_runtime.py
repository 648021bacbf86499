"""The Docker runtime against the real engine: pods, exec, logs, events, stops, images, limits.

Every container made here carries this module's node name; each test's runtime fixture
removes them all (and the module removes any left over), so concurrent test runs on the same
engine, which use other node names, are untouched. Traffic goes only to loopback and to the
containers made here.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import io
import socket
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import docker
import docker.errors
import pytest

from podling.kubelet import images
from podling.kubelet.runtime.base import (
    LABEL_CONTAINER_HASH,
    LABEL_CONTAINER_KIND,
    LABEL_NODE,
    LABEL_POD_UID,
    LABEL_RESTART_COUNT,
    ContainerConfig,
    ContainerStatus,
    ImageNeverPullError,
    ImagePullError,
    Mount,
    NotFound,
    PortMapping,
    RuntimeError_,
    SandboxConfig,
)
from podling.kubelet.runtime.docker import DockerRuntime

pytestmark = pytest.mark.e2e

NODE = f"rt-e2e-{uuid.uuid4().hex[:8]}"
BUSYBOX = images.BUSYBOX_IMAGE


def _purge(client: docker.DockerClient, node: str) -> None:
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_NODE}={node}"}):
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            continue


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    client = docker.from_env(version="auto")
    images.build(client, BUSYBOX)
    try:
        yield client
    finally:
        _purge(client, NODE)
        client.close()


@pytest.fixture
async def runtime(client: docker.DockerClient) -> AsyncIterator[DockerRuntime]:
    runtime = DockerRuntime(node_name=NODE)
    try:
        yield runtime
    finally:
        await runtime.close()
        _purge(client, NODE)


def pod_config(name: str, **kwargs: object) -> SandboxConfig:
    return SandboxConfig(pod_uid=str(uuid.uuid4()), namespace="rt-e2e", name=name, hostname=name, **kwargs)  # type: ignore[arg-type]


def container_config(name: str, *, command: Sequence[str] = (), args: Sequence[str] = (), image: str = BUSYBOX,
                     **kwargs: object) -> ContainerConfig:
    return ContainerConfig(name=name, kind="app", image=image, spec_hash="h1", restart_count=0,
                           command=command, args=args, **kwargs)  # type: ignore[arg-type]


async def start(runtime: DockerRuntime, sandbox_id: str, pod: SandboxConfig, config: ContainerConfig) -> str:
    container_id = await runtime.create_container(sandbox_id=sandbox_id, pod=pod, config=config)
    await runtime.start_container(container_id)
    return container_id


async def sleeper(runtime: DockerRuntime, name: str = "sleeper") -> tuple[SandboxConfig, str, str]:
    pod = pod_config(name)
    sandbox_id = await runtime.run_sandbox(pod)
    container_id = await start(runtime, sandbox_id, pod, container_config("main", command=["sleep", "300"]))
    return pod, sandbox_id, container_id


async def status_of(runtime: DockerRuntime, container_id: str) -> ContainerStatus:
    return next(s for s in await runtime.list_containers() if s.id == container_id)


async def exited(runtime: DockerRuntime, container_id: str, *, within: float = 10.0) -> ContainerStatus:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = await status_of(runtime, container_id)
        if status.state == "exited":
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"container {container_id[:12]} still {status.state} after {within}s")


async def read_logs(runtime: DockerRuntime, container_id: str, **kwargs: object) -> bytes:
    return b"".join([chunk async for chunk in runtime.logs(container_id, **kwargs)])  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- images ------------------------------------------------------------------------------------


def test_builtin_recipes_build_into_working_images(client: docker.DockerClient) -> None:
    suffix = uuid.uuid4().hex[:8]
    busybox, pause = f"podling-test/busybox:{suffix}", f"podling-test/pause:{suffix}"
    try:
        images.build(client, BUSYBOX, tag=busybox)
        out = client.containers.run(busybox, ["sh", "-c", "for t in httpd wget nc sleep cat; do which $t; done"],
                                    remove=True)
        assert out.decode().split() == ["/bin/httpd", "/bin/wget", "/bin/nc", "/bin/sleep", "/bin/cat"]

        images.build(client, images.PAUSE_IMAGE, tag=pause)
        container = client.containers.run(pause, detach=True)
        try:
            time.sleep(0.3)
            started = time.monotonic()
            container.stop(timeout=10)
            assert time.monotonic() - started < 5  # SIGTERM ends it, no SIGKILL deadline
            container.reload()
            assert container.attrs["State"]["ExitCode"] == 0
        finally:
            container.remove(force=True)
    finally:
        for tag in (busybox, pause):
            client.images.remove(tag)


async def test_a_missing_builtin_image_is_built_not_pulled(runtime: DockerRuntime, client: docker.DockerClient,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"podling-test/builtin:{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(images.BUILTIN_IMAGES, name, images.BUILTIN_IMAGES[BUSYBOX])
    try:
        image_id, made = await runtime.ensure_image(name, policy="IfNotPresent")
        assert made and image_id == client.images.get(name).id
        assert await runtime.ensure_image(name, policy="IfNotPresent") == (image_id, False)
        assert await runtime.ensure_image(name, policy="Always") == (image_id, False)  # its recipe is its registry
    finally:
        client.images.remove(name)


async def test_image_pull_policies(runtime: DockerRuntime, client: docker.DockerClient) -> None:
    missing = f"podling-test/no-such-image:{uuid.uuid4().hex[:8]}"
    with pytest.raises(ImagePullError) as pulled:
        await runtime.ensure_image(missing, policy="IfNotPresent")
    message = str(pulled.value)
    # Docker's own words: no registry reachable here, or no such repository where there is one.
    assert "docker.io" in message or "no-such-image" in message, message

    with pytest.raises(ImageNeverPullError) as never:
        await runtime.ensure_image(missing, policy="Never")
    assert str(never.value) == f'Container image "{missing}" is not present with pull policy of Never'

    local = f"podling-test/local:{uuid.uuid4().hex[:8]}"
    client.images.get(BUSYBOX).tag(local)
    try:
        image_id = client.images.get(local).id
        assert await runtime.ensure_image(local, policy="Never") == (image_id, False)
        assert await runtime.ensure_image(local, policy="IfNotPresent") == (image_id, False)
        with pytest.raises(ImagePullError):  # Always pulls even when present, and there is no registry
            await runtime.ensure_image(local, policy="Always")
    finally:
        client.images.remove(local)


async def test_command_and_args_follow_kubernetes(runtime: DockerRuntime, client: docker.DockerClient) -> None:
    image = f"podling-test/entrypoint:{uuid.uuid4().hex[:8]}"
    dockerfile = f'FROM {BUSYBOX}\nENTRYPOINT ["echo", "entry"]\nCMD ["cmd"]\n'.encode()
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=image, rm=True)
    try:
        pod = pod_config("cmdargs")
        sandbox_id = await runtime.run_sandbox(pod)
        cases = {
            "neither": ((), (), b"entry cmd\n"),
            "args": ((), ("a1", "a2"), b"entry a1 a2\n"),  # args alone keep the ENTRYPOINT
            "command": (("echo", "c"), (), b"c\n"),  # command drops the image's CMD
            "both": (("echo", "c"), ("a1",), b"c a1\n"),
        }
        ids = {case: await start(runtime, sandbox_id, pod, container_config(case, image=image, command=command,
                                                                             args=args))
               for case, (command, args, _) in cases.items()}
        for case, (_, _, expected) in cases.items():
            await exited(runtime, ids[case])
            assert await read_logs(runtime, ids[case]) == expected, case
    finally:
        _purge(client, NODE)
        client.images.remove(image)


# -- pods ----------------------------------------------------------------------------------------


async def test_a_pod_shares_its_network_and_a_host_directory(runtime: DockerRuntime, client: docker.DockerClient,
                                                             tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("hello from the pod\n")
    pod = pod_config("web-0")
    sandbox_id = await runtime.run_sandbox(pod)
    www = Mount(target="/www", source=str(tmp_path))
    server = await start(runtime, sandbox_id, pod,
                         container_config("server", command=["httpd", "-f", "-p", "8080", "-h", "/www"], mounts=[www]))
    fetcher = await start(runtime, sandbox_id, pod, container_config("fetcher", command=["sleep", "300"], mounts=[www]))

    fetched = await runtime.exec_sync(fetcher, ["sh", "-c", (
        "for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; exit 1")], timeout=15)
    assert (fetched.exit_code, fetched.stdout) == (0, b"hello from the pod\n")

    wrote = await runtime.exec_sync(fetcher, ["sh", "-c", "echo written > /www/from-pod.txt"], timeout=5)
    assert wrote.exit_code == 0 and (tmp_path / "from-pod.txt").read_text() == "written\n"

    hostname = await runtime.exec_sync(server, ["hostname"], timeout=5)
    assert hostname.stdout == b"web-0\n"

    [sandbox] = [s for s in await runtime.list_sandboxes() if s.id == sandbox_id]
    assert (sandbox.pod_uid, sandbox.name, sandbox.namespace, sandbox.ready) == (pod.pod_uid, "web-0", "rt-e2e", True)
    assert ipaddress.ip_address(sandbox.ip) in ipaddress.ip_network("10.88.0.0/16")
    assert sandbox.created_at.tzinfo is datetime.UTC

    names = {c.name for c in client.containers.list(filters={"label": f"{LABEL_POD_UID}={pod.pod_uid}"})}
    assert names == {f"k8s_POD_web-0_rt-e2e_{pod.pod_uid}_0", f"k8s_server_web-0_rt-e2e_{pod.pod_uid}_0",
                     f"k8s_fetcher_web-0_rt-e2e_{pod.pod_uid}_0"}


async def test_a_host_port_is_published_on_loopback(runtime: DockerRuntime, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("published\n")
    port = free_port()
    pod = pod_config("ported", port_mappings=[PortMapping(container_port=8080, host_port=port, host_ip="127.0.0.1")])
    sandbox_id = await runtime.run_sandbox(pod)
    await start(runtime, sandbox_id, pod, container_config(
        "server", command=["httpd", "-f", "-p", "8080", "-h", "/www"], mounts=[Mount(target="/www", source=str(tmp_path))]))

    def fetch() -> bytes:
        for _ in range(50):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    return bytes(response.read())
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"nothing answered on 127.0.0.1:{port}")

    assert await asyncio.to_thread(fetch) == b"published\n"


async def test_settings_reach_docker(runtime: DockerRuntime, client: docker.DockerClient, tmp_path: Path) -> None:
    pod = pod_config("settings", share_process_namespace=True, dns_searches=["rt-e2e.svc.cluster.local"],
                     dns_options=["ndots:5"], extra_hosts={"db.example": "10.88.200.1"})
    sandbox_id = await runtime.run_sandbox(pod)
    config = ContainerConfig(
        name="tuned", kind="init", image=BUSYBOX, spec_hash="abc123", restart_count=2, command=["sleep", "300"],
        env={"GREETING": "hi"}, working_dir="/tmp",
        mounts=[Mount(target="/data", source=str(tmp_path), read_only=True), Mount(target="/scratch", type="tmpfs")],
        cpu_limit_millis=500, memory_limit_bytes=64 * 2**20, cpu_request_millis=250,
        user="65534:65534", privileged=True)
    container_id = await start(runtime, sandbox_id, pod, config)

    attrs = client.api.inspect_container(container_id)
    host = attrs["HostConfig"]
    assert (host["CpuQuota"], host["CpuPeriod"], host["Memory"], host["CpuShares"]) == (50_000, 100_000, 64 * 2**20, 256)
    assert host["MemorySwap"] == 64 * 2**20  # no swap
    assert host["Privileged"] is True
    assert host["NetworkMode"] == host["IpcMode"] == host["PidMode"] == f"container:{sandbox_id}"
    assert attrs["Config"]["User"] == "65534:65534" and attrs["Config"]["WorkingDir"] == "/tmp"
    assert "GREETING=hi" in attrs["Config"]["Env"]
    assert attrs["Name"] == f"/k8s_tuned_settings_rt-e2e_{pod.pod_uid}_2"
    labels = attrs["Config"]["Labels"]
    assert (labels[LABEL_CONTAINER_KIND], labels[LABEL_CONTAINER_HASH], labels[LABEL_RESTART_COUNT]) == ("init", "abc123", "2")
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/data"]["RW"] is False and mounts["/scratch"]["Type"] == "tmpfs"

    probe = await runtime.exec_sync(container_id, ["sh", "-c", (
        "id -u; cat /proc/1/cmdline | tr '\\0' ' '; echo; touch /data/x 2>/dev/null || echo read-only;"
        " grep -c db.example /etc/hosts; grep -E '^(search|options)' /etc/resolv.conf")], timeout=5)
    assert probe.stdout.decode().splitlines() == [
        "65534", "/bin/busybox sh /pause.sh ", "read-only", "1",
        "search rt-e2e.svc.cluster.local", "options ndots:5"]

    big = await start(runtime, sandbox_id, pod, container_config("big", command=["sleep", "300"], cpu_limit_millis=64_000))
    assert client.api.inspect_container(big)["HostConfig"]["CpuQuota"] == 6_400_000  # more CPUs than the host has

    [status] = [s for s in await runtime.list_containers() if s.id == container_id]
    assert (status.kind, status.spec_hash, status.restart_count, status.state) == ("init", "abc123", 2, "running")
    assert status.started_at is not None and status.started_at.tzinfo is datetime.UTC and status.finished_at is None


async def test_statuses_of_exited_containers(runtime: DockerRuntime) -> None:
    pod = pod_config("exits")
    sandbox_id = await runtime.run_sandbox(pod)
    ok = await start(runtime, sandbox_id, pod, container_config("ok", command=["true"]))
    failed = await start(runtime, sandbox_id, pod, container_config("failed", command=["sh", "-c", "exit 3"]))
    oom = await start(runtime, sandbox_id, pod, container_config(
        "oom", command=["sh", "-c", "a=aaaaaaaaaaaaaaaa; while :; do a=$a$a; done"], memory_limit_bytes=16 * 2**20))

    unstartable = await runtime.create_container(sandbox_id=sandbox_id, pod=pod,
                                                 config=container_config("unstartable", command=["/no/such"]))
    with pytest.raises(RuntimeError_, match="no such file or directory"):
        await runtime.start_container(unstartable)

    done = {cid: await exited(runtime, cid) for cid in (ok, failed, oom, unstartable)}
    assert (done[ok].exit_code, done[ok].reason) == (0, "Completed")
    assert (done[failed].exit_code, done[failed].reason) == (3, "Error")
    assert (done[oom].exit_code, done[oom].reason) == (137, "OOMKilled")
    start_error = done.pop(unstartable)  # Docker keeps it "created"; Kubernetes calls it terminated
    assert (start_error.exit_code, start_error.reason, start_error.started_at) == (127, "StartError", None)
    assert "no such file or directory" in start_error.message and start_error.finished_at is not None
    for status in done.values():
        assert status.started_at is not None and status.finished_at is not None
        assert status.started_at <= status.finished_at and status.finished_at.tzinfo is datetime.UTC
    assert await runtime.list_containers() == await runtime.list_containers()  # cached inspects agree


async def test_listing_is_per_node(runtime: DockerRuntime) -> None:
    pod, sandbox_id, container_id = await sleeper(runtime)
    assert [s.id for s in await runtime.list_sandboxes()] == [sandbox_id]
    assert [c.id for c in await runtime.list_containers()] == [container_id]
    other = DockerRuntime(node_name=f"{NODE}-other")
    try:
        assert await other.list_sandboxes() == [] and await other.list_containers() == []
    finally:
        await other.close()


async def test_a_stale_container_holding_a_name_is_replaced(runtime: DockerRuntime, client: docker.DockerClient) -> None:
    pod = pod_config("again")
    first_sandbox = await runtime.run_sandbox(pod)
    second_sandbox = await runtime.run_sandbox(pod)
    first = await runtime.create_container(sandbox_id=second_sandbox, pod=pod, config=container_config("c"))
    second = await runtime.create_container(sandbox_id=second_sandbox, pod=pod, config=container_config("c"))
    live = {c.id for c in client.containers.list(all=True, filters={"label": f"{LABEL_POD_UID}={pod.pod_uid}"})}
    assert live == {second_sandbox, second} and first_sandbox != second_sandbox and first != second


# -- stop, remove --------------------------------------------------------------------------------


async def test_stop_kills_a_process_ignoring_sigterm_at_the_deadline(runtime: DockerRuntime) -> None:
    pod = pod_config("stubborn")
    sandbox_id = await runtime.run_sandbox(pod)
    stubborn = await start(runtime, sandbox_id, pod, container_config(
        "stubborn", command=["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"]))
    polite = await start(runtime, sandbox_id, pod, container_config(
        "polite", command=["sh", "-c", "trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done"]))
    await asyncio.sleep(0.3)  # let the shells install their traps

    started = time.monotonic()
    await runtime.stop_container(stubborn, timeout=1.5)
    took = time.monotonic() - started
    assert 1.2 < took < 8, took
    assert (await status_of(runtime, stubborn)).exit_code == 137

    started = time.monotonic()
    await runtime.stop_container(polite, timeout=20)
    assert time.monotonic() - started < 5
    assert (await status_of(runtime, polite)).exit_code == 0

    await runtime.stop_container(polite, timeout=1)  # exited: fine
    await runtime.stop_sandbox(sandbox_id)
    assert [s.ready for s in await runtime.list_sandboxes()] == [False]
    await runtime.remove_container(polite)
    await runtime.remove_container(polite)  # missing: fine
    await runtime.stop_container(polite, timeout=1)
    await runtime.remove_sandbox(sandbox_id)
    assert await runtime.list_sandboxes() == []
    with pytest.raises(NotFound):
        await runtime.start_container(polite)


# -- exec, logs, events --------------------------------------------------------------------------


async def test_exec_sync_output_exit_code_and_timeout(runtime: DockerRuntime) -> None:
    _, _, container_id = await sleeper(runtime)
    result = await runtime.exec_sync(container_id, ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=5)
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")

    started = time.monotonic()
    with pytest.raises(RuntimeError_, match="timed out"):
        await runtime.exec_sync(container_id, ["sleep", "30"], timeout=0.5)
    assert time.monotonic() - started < 5

    missing = await runtime.exec_sync(container_id, ["/no/such/binary"], timeout=5)
    assert missing.exit_code == 126 and b"no such file or directory" in missing.stdout  # Docker's words, as dockershim

    await runtime.stop_container(container_id, timeout=0)
    with pytest.raises(RuntimeError_, match="is not running"):
        await runtime.exec_sync(container_id, ["true"], timeout=5)


async def test_exec_stream_separates_streams_and_feeds_stdin(runtime: DockerRuntime) -> None:
    _, _, container_id = await sleeper(runtime)
    received: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}

    async def output(stream: int, data: bytes) -> None:
        received[stream].extend(data)

    code = await runtime.exec_stream(container_id, ["sh", "-c", "echo one; echo two >&2; sleep 0.2; echo three; exit 7"],
                                     output=output)
    assert (code, bytes(received[1]), bytes(received[2])) == (7, b"one\nthree\n", b"two\n")

    async def lines() -> AsyncIterator[bytes]:
        for line in (b"alpha\n", b"beta\n"):
            yield line
            await asyncio.sleep(0.05)

    received = {1: bytearray(), 2: bytearray()}
    code = await runtime.exec_stream(container_id, ["sh", "-c", "cat; echo done"], output=output, stdin=lines())
    assert (code, bytes(received[1])) == (0, b"alpha\nbeta\ndone\n")

    received = {1: bytearray(), 2: bytearray()}
    code = await runtime.exec_stream(container_id, ["sh", "-c", "tty; echo oops >&2"], output=output, tty=True)
    assert (code, bytes(received[1]), bytes(received[2])) == (0, b"/dev/pts/0\r\noops\r\n", b"")  # one stream


async def test_logs_tail_since_timestamps_and_follow(runtime: DockerRuntime) -> None:
    pod = pod_config("logger")
    sandbox_id = await runtime.run_sandbox(pod)
    talker = await start(runtime, sandbox_id, pod, container_config(
        "talker", command=["sh", "-c", "echo one; echo two; sleep 1; echo three; sleep 0.5"]))

    followed: list[bytes] = []
    async with asyncio.timeout(10):  # follow ends by itself when the container exits
        async for chunk in runtime.logs(talker, follow=True):
            followed.append(chunk)
    assert b"".join(followed) == b"one\ntwo\nthree\n"

    assert await read_logs(runtime, talker, tail=1) == b"three\n"
    stamped = (await read_logs(runtime, talker, timestamps=True)).decode().splitlines()
    stamps = [datetime.datetime.fromisoformat(line.split(" ", 1)[0]) for line in stamped]
    assert [line.split(" ", 1)[1] for line in stamped] == ["one", "two", "three"]
    assert await read_logs(runtime, talker, since=stamps[2] - datetime.timedelta(milliseconds=200)) == b"three\n"

    endless = await start(runtime, sandbox_id, pod, container_config("endless", command=["sh", "-c", "echo a; sleep 300"]))
    logs = runtime.logs(endless, follow=True)
    assert await asyncio.wait_for(anext(logs), 5) == b"a\n"
    await asyncio.wait_for(logs.aclose(), 2)  # type: ignore[attr-defined]  # closing stops the follow
    assert not runtime._pumps  # noqa: SLF001 - the reader thread was let go


async def test_events_report_a_kill_from_outside(runtime: DockerRuntime, client: docker.DockerClient) -> None:
    events = runtime.events()
    pod, _, container_id = await sleeper(runtime)
    client.api.kill(container_id)
    seen: list[str] = []
    async with asyncio.timeout(2):
        async for event in events:
            if event.container_id == container_id:
                assert event.pod_uid == pod.pod_uid
                seen.append(event.action)
                if event.action == "die":
                    break
    assert seen == ["create", "start", "kill", "die"]
    await events.aclose()  # type: ignore[attr-defined]


async def test_volumes_are_idempotent(runtime: DockerRuntime, client: docker.DockerClient) -> None:
    name = f"podling-test-{uuid.uuid4().hex[:8]}"
    try:
        await runtime.ensure_volume(name, labels={"io.podling.pvc": "data"})
        await runtime.ensure_volume(name, labels={"io.podling.pvc": "data"})
        assert client.volumes.get(name).attrs["Labels"] == {"io.podling.pvc": "data"}
    finally:
        client.volumes.get(name).remove()

