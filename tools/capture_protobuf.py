"""Capture the protobuf bodies the real kubectl sends, as test fixtures with their JSON twins.

Invariant: each ``tests/unit/fixtures/protobuf/<case>.pb`` holds byte for byte the one request
body kubectl sent as ``application/vnd.kubernetes.protobuf`` for its case's command, and
``<case>.json`` what that object is as JSON: the same command's ``--dry-run=client -o json``
(or, for a command without that flag, the JSON written out in ``CASES``). Re-running the tool
with the same kubectl writes the same files.

How: the tool starts a throwaway ``podling apiserver`` and, in front of it, a small HTTPS proxy
using podling's own serving certificate, so kubectl trusts it and sends its token. The proxy
forwards every request (discovery, the JSON ``kubectl create -f`` of a case's setup objects)
and keeps a copy of each protobuf body. kubectl's exit status does not matter: the body is
captured before podling answers.

``tools/import_protobuf.py`` reads these fixtures too (they show which fields Go writes even
when unset), so re-run it after this tool. Usage, from the project root with podling
installed::

    python tools/capture_protobuf.py [--kubectl /usr/bin/kubectl]
    python tools/import_protobuf.py --source /tmp/pp/k8s-proto-0.0.3
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from podling.apiserver import pki

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "unit" / "fixtures" / "protobuf"
sys.path.insert(0, str(ROOT / "tests"))

from podling_process import PodlingProcess  # noqa: E402


@dataclasses.dataclass(frozen=True, slots=True)
class Case:
    name: str
    args: tuple[str, ...]  # the kubectl command whose protobuf body is captured
    setup: tuple[dict[str, Any], ...] = ()  # objects created first, as JSON
    twin: dict[str, Any] | None = None  # the JSON twin of a command without --dry-run=client


NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "capture-node"}}
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "capture-pod", "namespace": "default"},
       "spec": {"nodeName": "capture-node", "containers": [{"name": "main", "image": "busybox:1.36"}]}}

# Values differ from field to field, so each field number is identified by its value alone.
CASES = (
    Case("namespace", ("create", "namespace", "capture-ns")),
    Case("configmap", ("create", "configmap", "capture-cm", "--from-literal=alpha=one", "--from-literal=beta=two")),
    Case("secret-generic", ("create", "secret", "generic", "capture-secret",
                            "--from-literal=username=admin", "--from-literal=password=s3cr3t")),
    Case("secret-docker-registry", ("create", "secret", "docker-registry", "capture-registry",
                                    "--docker-server=registry.example", "--docker-username=robot",
                                    "--docker-password=hunter2")),
    Case("service-clusterip", ("create", "service", "clusterip", "capture-svc", "--tcp=80:8080")),
    Case("service-nodeport", ("create", "service", "nodeport", "capture-np", "--tcp=81:8081", "--node-port=30082")),
    Case("serviceaccount", ("create", "serviceaccount", "capture-sa")),
    Case("quota", ("create", "quota", "capture-quota", "--hard=cpu=1,pods=2")),
    Case("deployment", ("create", "deployment", "capture-deploy", "--image=nginx:1.27", "--replicas=3",
                        "--port=8080")),
    Case("deployment-zero-replicas", ("create", "deployment", "capture-idle", "--image=busybox:1.36",
                                      "--replicas=0")),
    # podling serves no pods/eviction, so drain deletes the pod, with a protobuf DeleteOptions
    # body in which kubectl sets nothing (no --grace-period): its JSON is kind and apiVersion.
    Case("drain", ("drain", "capture-node", "--force", "--timeout=2s"), setup=(NODE, POD),
         twin={"kind": "DeleteOptions", "apiVersion": "v1"}),
)


class CaptureProxy:
    """An HTTPS proxy to one podling that keeps every protobuf request body it forwards."""

    def __init__(self, *, server: PodlingProcess) -> None:
        self.server = server
        self.bodies: list[bytes] = []
        self.url = ""
        self._session = aiohttp.ClientSession()
        self._runner = web.AppRunner(web.Application(client_max_size=1 << 24))
        self._runner.app.router.add_route("*", "/{tail:.*}", self._forward)
        self._upstream_tls = pki.client_context(ca=server.ca_file)

    async def start(self) -> None:
        await self._runner.setup()
        pki_dir = self.server.data_dir / "pki"
        tls = pki.server_context(cert=pki_dir / "apiserver.crt", key=pki_dir / "apiserver.key")
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"https://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self._runner.cleanup()
        await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        if "protobuf" in request.headers.get("Content-Type", ""):
            self.bodies.append(body)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        async with self._session.request(request.method, self.server.url + request.path_qs, data=body or None,
                                         headers=headers, ssl=self._upstream_tls) as answer:
            return web.Response(status=answer.status, body=await answer.read(),
                                headers={"Content-Type": answer.headers.get("Content-Type", "application/json")})


async def _kubectl(kubectl: str, kubeconfig: Path, cache: Path, *args: str, stdin: bytes = b"") -> tuple[int, bytes]:
    process = await asyncio.create_subprocess_exec(
        kubectl, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate(stdin)
    return process.returncode or 0, output


async def capture(*, kubectl: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = PodlingProcess(data_dir=Path(tmp) / "podling").start()
        proxy = CaptureProxy(server=server)
        try:
            await proxy.start()
            kubeconfig = Path(tmp) / "kubeconfig"
            kubeconfig.write_text(server.kubeconfig.read_text().replace(server.url, proxy.url))
            cache = Path(tmp) / "cache"
            out.mkdir(parents=True, exist_ok=True)
            for case in CASES:
                for obj in case.setup:
                    code, output = await _kubectl(kubectl, kubeconfig, cache, "create", "-f", "-",
                                                  stdin=json.dumps(obj).encode())
                    if code:
                        raise SystemExit(f"{case.name}: setup failed: {output.decode()}")
                twin = case.twin
                if twin is None:
                    code, output = await _kubectl(kubectl, kubeconfig, cache, *case.args,
                                                  "--dry-run=client", "-o", "json")
                    if code:
                        raise SystemExit(f"{case.name}: --dry-run=client failed: {output.decode()}")
                    twin = json.loads(output)
                proxy.bodies.clear()
                _, output = await _kubectl(kubectl, kubeconfig, cache, *case.args)
                if len(proxy.bodies) != 1:
                    raise SystemExit(f"{case.name}: expected one protobuf body, kubectl sent "
                                     f"{len(proxy.bodies)}: {output.decode()}")
                (out / f"{case.name}.pb").write_bytes(proxy.bodies[0])
                (out / f"{case.name}.json").write_text(json.dumps(twin, indent=2) + "\n")
                print(f"{case.name}: {len(proxy.bodies[0])} bytes")
        finally:
            await proxy.stop()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--kubectl", default="/usr/bin/kubectl")
    parser.add_argument("--out", type=Path, default=FIXTURES)
    args = parser.parse_args()
    asyncio.run(capture(kubectl=args.kubectl, out=args.out))


if __name__ == "__main__":
    main()
