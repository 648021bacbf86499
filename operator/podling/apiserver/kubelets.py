"""pods/log and pods/exec: the API server proxies them to the kubelet of the pod's node.

The way kube-apiserver does it (``pkg/registry/core/pod`` LogLocation/ExecLocation):

1. Read the Pod (404 if missing) and decide the container: the one named, which must be one
   of the pod's (init, app or ephemeral) containers; else the one named by the
   ``kubectl.kubernetes.io/default-container`` annotation; else the only app container;
   else 400 naming the choices. A pod without ``spec.nodeName`` is a 400.
2. Read the Node and reach its kubelet at ``status.addresses`` (InternalIP first, then
   Hostname, then ExternalIP) on ``status.daemonEndpoints.kubeletEndpoint.Port`` (10250 when
   unset), at ``/containerLogs/NS/POD/CONTAINER`` or ``/exec/NS/POD/CONTAINER``.
3. Logs are streamed through as the kubelet sends them (``follow`` keeps the stream open until
   the client or the kubelet closes it). Exec is a WebSocket relay: the client's subprotocol
   is chosen first (``podling.api.streaming.negotiate``), the kubelet is dialled offering
   exactly that one, and only once the kubelet has accepted is the client upgraded, so both
   hops speak the same protocol and frames pass through unchanged.

Trust: the API server does **not** verify kubelets' serving certificates (each kubelet's is
self-signed), as kube-apiserver does when started without ``--kubelet-certificate-authority``;
the connection is encrypted but the kubelet is trusted by its address in the Node object. The
API server authenticates itself to kubelets with the bearer token of its in-memory
``system:apiserver`` identity (``auth.ServerIdentity``), which kubelets check with a
TokenReview.

Errors before a stream starts are ``Status`` answers; a kubelet that cannot be reached is a
500 naming it, and a kubelet's own ``Status`` (404, 400, 401) is passed on with its message.
``close()`` (at server shutdown) ends every stream in flight, so a ``kubectl logs -f`` never
holds a stopping API server open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from podling.api import errors, streaming
from podling.api.open_streams import OpenStreams
from podling.api.resources import find
from podling.apiserver.storage import Storage

Obj = dict[str, Any]

DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
DEFAULT_KUBELET_PORT = 10250
_ADDRESS_TYPES = ("InternalIP", "Hostname", "ExternalIP")
_CONNECT_TIMEOUT = 10.0
_PODS = find(group="", version="v1", plural="pods")
_NODES = find(group="", version="v1", plural="nodes")
assert _PODS is not None and _NODES is not None


def container_of(pod: Obj, requested: str) -> str:
    """The container a log or exec request is about, decided as kube-apiserver decides it."""
    spec = pod.get("spec") or {}
    name = (pod.get("metadata") or {}).get("name", "")
    app = [c.get("name", "") for c in spec.get("containers") or []]
    every = [c.get("name", "") for c in spec.get("initContainers") or []] + app + [
        c.get("name", "") for c in spec.get("ephemeralContainers") or []]
    if requested:
        if requested not in every:
            raise errors.bad_request(f"container {requested} is not valid for pod {name}")
        return requested
    default = ((pod.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CONTAINER_ANNOTATION, "")
    if default in app:
        return default
    if len(app) == 1:
        return app[0]
    if not app:
        raise errors.bad_request(f"a container name must be specified for pod {name}")
    raise errors.bad_request(f"a container name must be specified for pod {name}, choose one of: [{' '.join(every)}]")


def kubelet_address(node: Obj) -> tuple[str, int]:
    """(host, port) of a Node's kubelet, from its status."""
    status = node.get("status") or {}
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or [] if a.get("address")}
    host = next((addresses[t] for t in _ADDRESS_TYPES if t in addresses), "")
    if not host:
        name = (node.get("metadata") or {}).get("name", "")
        raise errors.internal(f"node {name} has no address to reach its kubelet at (status.addresses is empty)")
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or DEFAULT_KUBELET_PORT
    return host, int(port)


class KubeletProxy:
    def __init__(self, *, storage: Storage, token: str) -> None:
        self.storage = storage
        self._headers = {"Authorization": f"Bearer {token}"}
        self._streams = OpenStreams()

    async def close(self) -> None:
        await self._streams.close()

    async def _kubelet_url(self, *, namespace: str, name: str, what: str, container: str,
                           query: list[tuple[str, str]]) -> URL:
        pod = await self.storage.get(_PODS, namespace=namespace, name=name)
        container = container_of(pod, container)
        node_name = (pod.get("spec") or {}).get("nodeName") or ""
        if not node_name:
            raise errors.bad_request(f"pod {name} does not have a host assigned")
        host, port = kubelet_address(await self.storage.get(_NODES, namespace=None, name=node_name))
        return URL.build(scheme="https", host=host, port=port, path=f"/{what}/{namespace}/{name}/{container}",
                         query=query)

    def _session(self) -> aiohttp.ClientSession:
        # ssl=False: kubelets' certificates are self-signed and not verified (see the module docstring).
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False), headers=self._headers,
                                     timeout=aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT))

    async def logs(self, request: web.Request, *, namespace: str, name: str) -> web.StreamResponse:
        options = streaming.LogOptions.parse(request.query)
        url = await self._kubelet_url(namespace=namespace, name=name, what="containerLogs",
                                      container=request.query.get("container", ""), query=options.query())
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        with self._streams.track():
            async with self._session() as session:
                try:
                    async with session.get(url) as upstream:
                        if upstream.status != 200:
                            raise _kubelet_error(upstream.status, await upstream.read())
                        await response.prepare(request)
                        async for chunk in upstream.content.iter_any():
                            await response.write(chunk)
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as err:
                    if not response.prepared:
                        raise _unreachable(url, err) from None
                    # the kubelet or the client went away mid-stream: the log simply ends
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def exec(self, request: web.Request, *, namespace: str, name: str) -> web.StreamResponse:
        options = streaming.ExecOptions.parse(request.query.getall("command", []), request.query)
        # The pod and container first: kubectl falls back to SPDY after any failed WebSocket
        # handshake, and shows the error of that second attempt.
        url = await self._kubelet_url(namespace=namespace, name=name, what="exec",
                                      container=request.query.get("container", ""), query=options.query())
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise errors.bad_request("Upgrade request required: podling serves exec over WebSocket "
                                     f"({', '.join(p for p in streaming.PROTOCOLS if p)}), not SPDY")
        protocol = streaming.negotiate(streaming.offered(request.headers.get("Sec-WebSocket-Protocol")))
        with self._streams.track():
            return await self._relay_exec(request, url=url, protocol=protocol.name)

    async def _relay_exec(self, request: web.Request, *, url: URL, protocol: str) -> web.StreamResponse:
        protocols = (protocol,) if protocol else ()
        async with self._session() as session:
            try:
                kubelet = await session.ws_connect(url, protocols=protocols, max_msg_size=0,
                                                   timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0))
            except aiohttp.WSServerHandshakeError as err:
                raise errors.internal(f"unable to upgrade connection to the kubelet at {url.host}:{url.port}: "
                                      f"{err.status} {err.message}") from None
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as err:
                raise _unreachable(url, err) from None
            async with kubelet:
                if (kubelet.protocol or "") != protocol:
                    raise errors.internal(f"the kubelet at {url.host}:{url.port} answered subprotocol "
                                          f"{kubelet.protocol!r}, not {protocol!r}")
                client = web.WebSocketResponse(protocols=protocols, max_msg_size=0)
                await client.prepare(request)
                await _relay(client, kubelet)
        return client


async def _relay(client: web.WebSocketResponse, kubelet: aiohttp.ClientWebSocketResponse) -> None:
    """Frames both ways until either side closes; then both are closed (normally, so kubectl reads EOF)."""

    async def pump(source: Any, sink: Any) -> None:
        async for message in source:
            if message.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(message.data)

    pumps = [asyncio.create_task(pump(kubelet, client)), asyncio.create_task(pump(client, kubelet))]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        await kubelet.close()
        await client.close()


def _kubelet_error(code: int, raw: bytes) -> errors.StatusError:
    """The kubelet's Status, or one made of its text (as kube-apiserver's response checker does)."""
    try:
        status = json.loads(raw)
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("kind") == "Status":
        return errors.StatusError(code=int(status.get("code") or code), reason=str(status.get("reason") or ""),
                                  message=str(status.get("message") or ""), details=status.get("details"))
    text = raw.decode(errors="replace").strip()
    if code == 400:
        return errors.bad_request(text)
    return errors.StatusError(code=code, reason="InternalError" if code >= 500 else "", message=text)


def _unreachable(url: URL, err: BaseException) -> errors.StatusError:
    return errors.internal(f"error dialing the kubelet at {url.host}:{url.port}: {type(err).__name__}: {err}")
