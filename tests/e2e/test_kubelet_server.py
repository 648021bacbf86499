"""kubectl logs and kubectl exec through podling's API server to a real KubeletServer over Docker.

The whole path users take: the real kubectl → ``podling apiserver`` (pods/log, pods/exec) →
the kubelet's HTTPS server, found through the Node's InternalIP and kubeletEndpoint port and
authenticated with the API server's own token (checked by a TokenReview) → the Docker runtime.
The pod's containers are started through the runtime directly (no pod workers), and
``locate`` finds them the way the kubelet main will: by pod and container name, newest
instance first, the one before it for ``--previous``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import docker
import pytest
import pytest_asyncio

from podling.api import streaming
from podling.api.resources import find
from podling.client.config import load_kubeconfig
from podling.client.http import ApiClient
from podling.kubelet import images
from podling.kubelet.auth import TokenReviewer
from podling.kubelet.runtime.base import LABEL_NODE, ContainerConfig, SandboxConfig
from podling.kubelet.runtime.docker import DockerRuntime
from podling.kubelet.server import ContainerNotFound, KubeletServer
from podling_process import KUBECTL, PodlingProcess

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

NODE = f"ks-e2e-{uuid.uuid4().hex[:8]}"
NS = "default"
PODS = find(group="", version="v1", plural="pods")
NODES = find(group="", version="v1", plural="nodes")
assert PODS is not None and NODES is not None

APP = "for i in 1 2 3; do echo out $i; sleep 0.05; echo err $i >&2; sleep 0.05; done; sleep 3600"
TICKER = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"
SHORT = "echo first; sleep 1; echo second"


class Node:
    """The test's node: a Docker runtime, its kubelet server, and what runs on it."""

    def __init__(self, *, runtime: DockerRuntime) -> None:
        self.runtime = runtime
        self.containers: dict[tuple[str, str, str], list[str]] = {}  # (ns, pod, container) -> ids, oldest first
        self.sandboxes: dict[tuple[str, str], tuple[str, SandboxConfig]] = {}
        self.server: KubeletServer | None = None

    async def locate(self, *, namespace: str, pod: str, container: str, previous: bool) -> str:
        if (namespace, pod) not in self.sandboxes:
            raise ContainerNotFound(f'pod "{pod}" in namespace "{namespace}" is not on this node')
        ids = self.containers.get((namespace, pod, container), [])
        if previous:
            if len(ids) < 2:
                raise LookupError(f'previous terminated container "{container}" in pod "{pod}" not found')
            return ids[-2]
        if not ids:
            raise LookupError(f'container "{container}" in pod "{pod}" is waiting to start: ContainerCreating')
        return ids[-1]

    async def run(self, pod: str, container: str, script: str) -> str:
        """Starts ``container`` of ``pod`` (its sandbox first if need be); a second run is a restart."""
        if (NS, pod) not in self.sandboxes:
            config = SandboxConfig(pod_uid=str(uuid.uuid4()), namespace=NS, name=pod, hostname=pod)
            self.sandboxes[(NS, pod)] = (await self.runtime.run_sandbox(config), config)
        sandbox_id, config = self.sandboxes[(NS, pod)]
        instances = self.containers.setdefault((NS, pod, container), [])
        container_id = await self.runtime.create_container(sandbox_id=sandbox_id, pod=config, config=ContainerConfig(
            name=container, kind="app", image=images.BUSYBOX_IMAGE, spec_hash="h", restart_count=len(instances),
            command=["sh", "-c", script], env={"CONTAINER": container}))
        await self.runtime.start_container(container_id)
        instances.append(container_id)
        return container_id


def _purge(client: docker.DockerClient) -> None:
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_NODE}={NODE}"}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)


@pytest.fixture(scope="module")
def podling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodlingProcess]:
    server = PodlingProcess(data_dir=tmp_path_factory.mktemp("podling")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(podling: PodlingProcess) -> AsyncIterator[ApiClient]:
    async with ApiClient(load_kubeconfig(podling.kubeconfig)) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(api: ApiClient, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    client = docker.from_env(version="auto")
    images.build(client, images.BUSYBOX_IMAGE)
    runtime = DockerRuntime(node_name=NODE)
    node = Node(runtime=runtime)
    server = KubeletServer(runtime=runtime, locate=node.locate, authenticate=TokenReviewer(api), host="127.0.0.1",
                           port=0, cert_dir=tmp_path_factory.mktemp("kubelet-pki"))
    await server.start()
    obj = await api.create(NODES, {"metadata": {"name": NODE}})
    obj["status"] = {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                   {"type": "Hostname", "address": NODE}],
                     "daemonEndpoints": {"kubeletEndpoint": {"Port": server.port}}}
    await api.update_status(NODES, obj)
    await api.create(PODS, {"metadata": {"name": "web", "namespace": NS,
                                         "annotations": {"kubectl.kubernetes.io/default-container": "app"}},
                            "spec": {"nodeName": NODE, "containers": [
                                {"name": "app", "image": images.BUSYBOX_IMAGE},
                                {"name": "ticker", "image": images.BUSYBOX_IMAGE},
                                {"name": "short", "image": images.BUSYBOX_IMAGE},
                                {"name": "later", "image": images.BUSYBOX_IMAGE}]}})
    await api.create(PODS, {"metadata": {"name": "pair", "namespace": NS},
                            "spec": {"nodeName": NODE, "containers": [{"name": "a", "image": images.BUSYBOX_IMAGE},
                                                                       {"name": "b", "image": images.BUSYBOX_IMAGE}]}})
    await api.create(PODS, {"metadata": {"name": "unscheduled", "namespace": NS},
                            "spec": {"containers": [{"name": "a", "image": images.BUSYBOX_IMAGE}]}})
    for container, script in (("app", APP), ("ticker", TICKER), ("short", SHORT)):
        await node.run("web", container, script)
    await node.run("pair", "a", "echo from a; sleep 3600")
    node.server = server
    await _wait_for_output(runtime, node.containers[(NS, "web", "app")][-1], b"err 3")
    try:
        yield node
    finally:
        await server.stop()
        await runtime.close()
        _purge(client)
        client.close()


async def _wait_for_output(runtime: DockerRuntime, container_id: str, text: bytes) -> None:
    for _ in range(100):
        if text in b"".join([chunk async for chunk in runtime.logs(container_id)]):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in the logs of {container_id[:12]}")


async def kubectl(podling: PodlingProcess, *args: str, input: str | None = None,
                  timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """kubectl on a thread: the kubelet server answering it runs on this test's event loop."""
    return await asyncio.to_thread(podling.kubectl, *args, input=input, check=False, timeout=timeout)


# ---- logs --------------------------------------------------------------------------------------


async def test_logs_of_a_named_container(podling: PodlingProcess, node: Node) -> None:
    result = await kubectl(podling, "logs", "web", "-c", "app")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "out 1\nerr 1\nout 2\nerr 2\nout 3\nerr 3\n"  # both streams, in order


async def test_logs_default_to_the_annotated_container(podling: PodlingProcess, node: Node) -> None:
    result = await kubectl(podling, "logs", "web", "--tail", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "out 3\nerr 3\n"
    # The API decides the same way when kubectl does not (a raw request names no container).
    status, body = await asyncio.to_thread(podling.request, "GET", f"/api/v1/namespaces/{NS}/pods/web/log?tailLines=1")
    assert (status, body) == (200, "err 3\n")


async def test_logs_tail_timestamps_and_since(podling: PodlingProcess, node: Node) -> None:
    tail = await kubectl(podling, "logs", "web", "-c", "app", "--tail", "1", "--timestamps")
    assert tail.returncode == 0, tail.stderr
    [line] = tail.stdout.splitlines()
    stamp, _, text = line.partition(" ")
    assert text == "err 3"
    assert abs(datetime.datetime.fromisoformat(stamp[:26] + "+00:00") - datetime.datetime.now(datetime.timezone.utc)) \
        < datetime.timedelta(minutes=10)
    recent = await kubectl(podling, "logs", "web", "-c", "app", "--since", "1h")
    assert len(recent.stdout.splitlines()) == 6, recent.stderr
    future = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    none = await kubectl(podling, "logs", "web", "-c", "app", f"--since-time={future}")
    assert none.returncode == 0 and none.stdout == "", none.stderr
    limited = await kubectl(podling, "logs", "web", "-c", "app", "--limit-bytes", "4")
    assert limited.returncode == 0 and len(limited.stdout) == 4, limited


async def test_logs_follow_streams_new_lines(podling: PodlingProcess, node: Node) -> None:
    process = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(podling.kubeconfig), "logs", "-f", "web", "-c", "ticker", "--tail", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        ticks = [int((await asyncio.wait_for(process.stdout.readline(), 10)).split()[1]) for _ in range(4)]
        assert ticks == list(range(ticks[0], ticks[0] + 4))  # lines written after kubectl started, in order
    finally:
        process.terminate()
        await process.wait()


async def test_logs_follow_ends_when_the_container_exits(podling: PodlingProcess, node: Node) -> None:
    result = await kubectl(podling, "logs", "-f", "web", "-c", "short", timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "second"


async def test_previous_logs(podling: PodlingProcess, node: Node) -> None:
    no_previous = await kubectl(podling, "logs", "web", "-c", "app", "--previous")
    assert no_previous.returncode == 1
    assert 'previous terminated container "app" in pod "web" not found' in no_previous.stderr
    first = node.containers[(NS, "web", "short")][-1]
    await node.run("web", "short", "echo restarted")
    await _wait_for_output(node.runtime, node.containers[(NS, "web", "short")][-1], b"restarted")
    previous = await kubectl(podling, "logs", "web", "-c", "short", "-p")
    assert previous.returncode == 0 and previous.stdout == "first\nsecond\n", previous.stderr
    current = await kubectl(podling, "logs", "web", "-c", "short")
    assert current.stdout == "restarted\n" and node.containers[(NS, "web", "short")][-2] == first


async def test_log_errors(podling: PodlingProcess, node: Node) -> None:
    wrong = await kubectl(podling, "logs", "web", "-c", "nope")
    assert wrong.returncode == 1 and "container nope is not valid for pod web" in wrong.stderr
    waiting = await kubectl(podling, "logs", "web", "-c", "later")
    assert waiting.returncode == 1
    assert waiting.stderr.strip() == \
        'Error from server (BadRequest): container "later" in pod "web" is waiting to start: ContainerCreating'
    # Raw API requests get the checks kubectl would otherwise make for them.
    base = f"/api/v1/namespaces/{NS}/pods"
    for path, code, message in [
        (f"{base}/web/log?container=nope", 400, "container nope is not valid for pod web"),
        (f"{base}/pair/log", 400, "a container name must be specified for pod pair, choose one of: [a b]"),
        (f"{base}/unscheduled/log", 400, "pod unscheduled does not have a host assigned"),
        (f"{base}/missing/log", 404, 'pods "missing" not found'),
        (f"{base}/web/log?container=app&tailLines=-1", 400, "tailLines: Invalid value: -1"),
    ]:
        status, body = await asyncio.to_thread(podling.request, "GET", path)
        assert (status, body["kind"]) == (code, "Status") and message in body["message"], (path, body)


# ---- exec --------------------------------------------------------------------------------------


async def test_exec_relays_stdout_stderr_and_the_exit_code(podling: PodlingProcess, node: Node) -> None:
    result = await kubectl(podling, "exec", "web", "-c", "app", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\ncommand terminated with exit code 3\n"
    default = await kubectl(podling, "exec", "web", "--", "sh", "-c", "echo $CONTAINER")
    assert (default.returncode, default.stdout) == (0, "app\n"), default.stderr  # the annotated default


async def test_exec_with_stdin(podling: PodlingProcess, node: Node) -> None:
    result = await kubectl(podling, "exec", "-i", "web", "-c", "app", "--", "sh", "-c", "tr a-z A-Z; echo done",
                           input="hello\nworld\n")
    assert (result.returncode, result.stdout) == (0, "HELLO\nWORLD\ndone\n"), result.stderr


async def test_exec_errors(podling: PodlingProcess, node: Node) -> None:
    wrong = await kubectl(podling, "exec", "web", "-c", "nope", "--", "true")
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == "Error from server (BadRequest): container nope is not valid for pod web"
    unscheduled = await kubectl(podling, "exec", "unscheduled", "--", "true")
    assert "pod unscheduled does not have a host assigned" in unscheduled.stderr
    waiting = await kubectl(podling, "exec", "web", "-c", "later", "--", "true")
    assert waiting.returncode == 1
    assert 'container "later" in pod "web" is waiting to start: ContainerCreating' in waiting.stderr
    missing = await kubectl(podling, "exec", "web", "-c", "app", "--", "/no/such/binary")
    assert missing.returncode != 0 and "no/such/binary" in missing.stderr + missing.stdout


@pytest.mark.parametrize("protocol", [streaming.V4, streaming.V4_BASE64, streaming.V1, streaming.V1_BASE64])
async def test_exec_over_older_subprotocols(podling: PodlingProcess, node: Node, protocol: str) -> None:
    """The relay passes any served subprotocol through unchanged, base64 text frames too."""
    proto = streaming.PROTOCOLS[protocol]
    query = "&".join(f"command={c}" for c in ("sh", "-c", "echo hi; exit 2")) + "&container=app&stdout=1&stderr=1"
    url = f"{podling.url}/api/v1/namespaces/{NS}/pods/web/exec?{query}"
    frames: dict[int, bytes] = {}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, protocols=(protocol,), ssl=podling.ssl_context(),
                                      headers={"Authorization": f"Bearer {podling.token}"}) as ws:
            assert ws.protocol == protocol
            async for message in ws:
                channel, payload = streaming.decode(proto, message.data)
                frames[channel] = frames.get(channel, b"") + payload
            assert ws.close_code == 1000
    assert frames[streaming.STDOUT] == b"hi\n"
    if proto.json_status:
        status = json.loads(frames[streaming.ERROR])
        assert status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]
    else:
        assert b"exit code 2" in frames[streaming.ERROR]


# ---- the kubelet's own face -----------------------------------------------------------------------


async def test_kubelet_refuses_callers_without_a_good_token(podling: PodlingProcess, node: Node) -> None:
    assert node.server is not None
    base = f"https://127.0.0.1:{node.server.port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        async with session.get(f"{base}/healthz") as response:
            assert (response.status, await response.text()) == (200, "ok")
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            async with session.get(f"{base}/containerLogs/{NS}/web/app", headers=headers) as response:
                assert response.status == 401 and (await response.json())["reason"] == "Unauthorized"
        good = {"Authorization": f"Bearer {podling.token}"}  # any token the API server vouches for
        async with session.get(f"{base}/containerLogs/{NS}/web/app?tailLines=1", headers=good) as response:
            assert (response.status, await response.text()) == (200, "err 3\n")
        async with session.get(f"{base}/containerLogs/{NS}/elsewhere/app", headers=good) as response:
            assert response.status == 404 and "not on this node" in (await response.json())["message"]
        async with session.get(f"{base}/exec/{NS}/web/app?command=true&stdout=1", headers=good) as response:
            assert response.status == 400 and "Upgrade request required" in (await response.json())["message"]


async def test_kubelet_certificate_is_made_once_and_reused(node: Node, tmp_path: Path) -> None:
    async def serving_cert() -> bytes:
        server = KubeletServer(runtime=node.runtime, locate=node.locate, authenticate=_refuse, host="127.0.0.1",
                               port=0, cert_dir=tmp_path)
        await server.start()
        try:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.close()
            return der
        finally:
            await server.stop()

    first = await serving_cert()
    assert await serving_cert() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kubelet.crt", "kubelet.key"]


async def test_stop_ends_streams_in_flight(node: Node, tmp_path: Path) -> None:
    server = KubeletServer(runtime=node.runtime, locate=node.locate, authenticate=_accept, host="127.0.0.1", port=0,
                           cert_dir=tmp_path)
    await server.start()
    url = f"https://127.0.0.1:{server.port}/containerLogs/{NS}/web/ticker?follow=true&tailLines=1"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        async with session.get(url, headers={"Authorization": "Bearer any"}) as response:
            assert (await response.content.readline()).startswith(b"tick ")
            started = asyncio.get_running_loop().time()
            await server.stop()
            assert asyncio.get_running_loop().time() - started < 3
            with contextlib.suppress(aiohttp.ClientPayloadError):
                await asyncio.wait_for(response.content.read(), 5)  # the stream ends instead of ticking on


async def _refuse(token: str) -> bool:
    return False


async def _accept(token: str) -> bool:
    return True


# ---- TokenReview -------------------------------------------------------------------------------


async def test_token_review_through_kubectl(podling: PodlingProcess, tmp_path: Path) -> None:
    def review(token: str) -> dict[str, object]:
        manifest = tmp_path / f"review-{uuid.uuid4().hex[:6]}.json"
        manifest.write_text(json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                        "spec": {"token": token}}))
        result = podling.kubectl("create", "--raw", "/apis/authentication.k8s.io/v1/tokenreviews", "-f", str(manifest))
        answer = json.loads(result.stdout)
        assert answer["kind"] == "TokenReview" and answer["spec"]["token"] == token
        return answer["status"]

    good = await asyncio.to_thread(review, podling.token)
    assert good["authenticated"] is True
    assert good["user"]["username"] == "admin" and "system:authenticated" in good["user"]["groups"]
    assert (await asyncio.to_thread(review, "garbage"))["authenticated"] is False
    listing = await kubectl(podling, "get", "tokenreviews")
    assert listing.returncode == 1 and "(MethodNotAllowed)" in listing.stderr, listing.stderr


async def test_token_reviewer_caches_answers(api: ApiClient) -> None:
    now = [1000.0]
    reviewer = TokenReviewer(api, clock=lambda: now[0])
    calls: list[str] = []
    review = reviewer._review

    async def counted(token: str) -> bool | None:
        calls.append(token)
        return await review(token)

    reviewer._review = counted  # type: ignore[method-assign]
    assert await reviewer(api.config.token) is True
    assert await asyncio.gather(reviewer(api.config.token), reviewer("bad"), reviewer("bad")) == [True, False, False]
    assert calls == [api.config.token, "bad"]  # cached good; concurrent bad ones share one review
    now[0] += 11  # a bad answer is kept 10 s, a good one 2 minutes
    assert await reviewer("bad") is False and await reviewer(api.config.token) is True
    assert calls == [api.config.token, "bad", "bad"]
    now[0] += 120
    assert await reviewer(api.config.token) is True
    assert calls[-1] == api.config.token and len(calls) == 4
