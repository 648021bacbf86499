"""The kubelet's HTTPS server: container logs and exec, served from the container runtime.

The API server reaches it for ``pods/log`` and ``pods/exec`` (it proxies; nothing else
should call it but tools of an administrator). The routes are the real kubelet's:

    GET       /healthz                                    "ok", without authentication
    GET       /containerLogs/{namespace}/{pod}/{container}   follow, tailLines, previous,
                                                          timestamps, sinceSeconds, sinceTime,
                                                          limitBytes; chunked text/plain
    GET|POST  /exec/{namespace}/{pod}/{container}          command (repeated), stdin, stdout,
                                                          stderr, tty; a WebSocket speaking
                                                          the channel protocols of
                                                          ``podling.api.streaming``

Invariants:

* Every request but ``/healthz`` carries ``Authorization: Bearer TOKEN`` that
  ``authenticate`` accepts (the kubelet main checks it with a TokenReview); otherwise 401.
  Any authenticated caller may read logs and exec (the real kubelet's authorizer would ask a
  SubjectAccessReview; podling has no RBAC yet).
* Which runtime container serves a request is decided by ``locate`` alone.
  ``ContainerNotFound`` from it is a 404 and any other ``LookupError`` a 400 (a container
  waiting to start, no previous instance), each a ``Status`` with the message given. Before
  a WebSocket is open these are HTTP answers; once it is open (exec), a failure is a
  ``Status`` on the error channel followed by a normal close, as the API server's stream
  translator reports kubelet failures to kubectl.
* The serving certificate is self-signed, made once in ``cert_dir`` and reused: the API
  server does not verify it (as kube-apiserver without ``--kubelet-certificate-authority``).
* ``stop()`` ends every log stream and exec in flight, then closes the listener.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from podling import tls
from podling.api import errors, streaming
from podling.api.open_streams import OpenStreams
from podling.kubelet.runtime.base import NotFound, Runtime, RuntimeError_

log = logging.getLogger("podling.kubelet.server")

Authenticate = Callable[[str], Awaitable[bool]]  # is this bearer token good?


class Locate(Protocol):
    """The runtime id of a pod's container (``previous``: its instance before the current one)."""

    async def __call__(self, *, namespace: str, pod: str, container: str, previous: bool) -> str: ...


_PUBLIC_PATHS = frozenset({"/healthz", "/metrics"})  # unauthenticated, as the API server's
_MAX_FRAME = 4 * 1024 * 1024


class ContainerNotFound(LookupError):
    """``locate``: this kubelet has no such pod or container (404; other LookupErrors are 400)."""


class KubeletServer:
    def __init__(self, *, runtime: Runtime, locate: Locate, authenticate: Authenticate, host: str, port: int,
                 cert_dir: Path, metrics: CollectorRegistry | None = None) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.locate = locate
        self.authenticate = authenticate
        self.host = host
        self.port = port  # 0 until start() when a free port is asked for
        self.cert_dir = cert_dir
        self._runner: web.AppRunner | None = None
        self._streams = OpenStreams()

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._authentication])
        app.router.add_get("/healthz", self._healthz)
        if self.metrics is not None:
            app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        app.router.add_route("GET", "/exec/{namespace}/{pod}/{container}", self._exec)
        app.router.add_route("POST", "/exec/{namespace}/{pod}/{container}", self._exec)
        return app

    async def start(self) -> None:
        cert, key = tls.ensure_self_signed(self.cert_dir, name="kubelet", host=self.host)
        self._runner = web.AppRunner(self.application(), handler_cancellation=True, access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=tls.server_context(cert=cert, key=key),
                           reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("kubelet server listening on https://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        await self._streams.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- middleware --------------------------------------------------------------------

    @web.middleware
    async def _authentication(self, request: web.Request,
                              handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            if request.path not in _PUBLIC_PATHS:
                authorization = request.headers.get("Authorization", "")
                token = authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else ""
                if not token or not await self.authenticate(token):
                    raise errors.unauthorized()
            return await handler(request)
        except errors.StatusError as err:
            return _status_response(err.status())
        except web.HTTPNotFound:
            return _status_response(errors.path_not_found(request.path).status())
        except web.HTTPMethodNotAllowed:
            return _status_response(errors.method_not_allowed(
                f"{request.method} is not allowed on {request.path}").status())
        except web.HTTPException:
            raise
        except Exception as err:  # a bug (ours, or locate's): logged, answered without a stack trace
            log.exception("kubelet server: %s %s failed", request.method, request.path)
            return _status_response(errors.internal(type(err).__name__).status())

    # ---- handlers ----------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _metrics(self, request: web.Request) -> web.Response:
        assert self.metrics is not None
        return web.Response(body=generate_latest(self.metrics), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _container_id(self, request: web.Request, *, previous: bool) -> str:
        info = request.match_info
        try:
            return await self.locate(namespace=info["namespace"], pod=info["pod"], container=info["container"],
                                     previous=previous)
        except ContainerNotFound as err:
            raise errors.StatusError(code=404, reason="NotFound", message=str(err)) from None
        except LookupError as err:
            raise errors.bad_request(str(err)) from None

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        options = streaming.LogOptions.parse(request.query)
        container_id = await self._container_id(request, previous=options.previous)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)  # headers now: a quiet container followed must not look hung
        chunks = self.runtime.logs(container_id, follow=options.follow, tail=options.tail_lines,
                                   since=options.since(now=datetime.datetime.now(datetime.timezone.utc)),
                                   timestamps=options.timestamps)
        remaining = options.limit_bytes
        with self._streams.track():
            try:
                async for chunk in chunks:
                    if remaining is not None:
                        chunk = chunk[:remaining]
                        remaining -= len(chunk)
                    if chunk:
                        await response.write(chunk)
                    if remaining == 0:
                        break
            except RuntimeError_ as err:  # the status line is sent: the stream just ends
                log.warning("logs of container %s ended: %s", container_id, err)
            except ConnectionResetError:
                return response
            finally:
                await _aclose(chunks)
        await response.write_eof()
        return response

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        options = streaming.ExecOptions.parse(request.query.getall("command", []), request.query)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise errors.bad_request("Upgrade request required: exec is served over WebSocket "
                                     f"({', '.join(p for p in streaming.PROTOCOLS if p)})")
        protocol = streaming.negotiate(streaming.offered(request.headers.get("Sec-WebSocket-Protocol")))
        ws = web.WebSocketResponse(protocols=(protocol.name,) if protocol.name else (), max_msg_size=_MAX_FRAME)
        await ws.prepare(request)
        channels = Channels(ws=ws, protocol=protocol, options=options)
        with self._streams.track():
            try:
                status = await self._run(request, channels, options)
                if status is not None:
                    await channels.send_status(status)
            except ConnectionError:
                log.debug("exec: the client went away")
            finally:
                await ws.close()
        return ws

    async def _run(self, request: web.Request, channels: Channels,
                   options: streaming.ExecOptions) -> dict[str, Any] | None:
        """Runs the command; the status for the error channel, or None when the client hung up first.

        The client's side is read throughout (stdin, and the pings and close frames a
        WebSocket must answer); a client that closes the socket ends the exec stream.
        """
        try:
            container_id = await self._container_id(request, previous=False)
        except errors.StatusError as err:
            return err.status()
        await channels.open()
        running = asyncio.create_task(self.runtime.exec_stream(
            container_id, options.command, output=channels.output,
            stdin=channels.stdin() if options.stdin else None, tty=options.tty))
        reading = asyncio.create_task(channels.read_client())
        try:
            await asyncio.wait((running, reading), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (running, reading):
                task.cancel()
            results = await asyncio.gather(running, reading, return_exceptions=True)
        code = results[0]
        if isinstance(code, int):
            return streaming.success_status() if code == 0 else streaming.exit_code_status(code, options.command)
        if isinstance(code, NotFound):
            return errors.StatusError(code=404, reason="NotFound", message=str(code)).status()
        if isinstance(code, RuntimeError_):
            return errors.internal(f"error executing command in container: {code}").status()
        if isinstance(code, (asyncio.CancelledError, ConnectionError)):
            return None  # the client closed the socket before the command ended
        log.error("exec in container %s failed", container_id, exc_info=code)
        return errors.internal(f"error executing command in container: {type(code).__name__}: {code}").status()


class Channels:
    """One exec's WebSocket seen as channels: writes are serialised, reads feed stdin.

    Output on a channel the client did not ask for is dropped (Kubernetes' IgnoreChannel);
    stdin ends at the v5 CLOSE signal for channel 0 (a closed socket ends the whole exec).
    """

    def __init__(self, *, ws: web.WebSocketResponse, protocol: streaming.Protocol,
                 options: streaming.ExecOptions) -> None:
        self.ws = ws
        self.protocol = protocol
        self.options = options
        self._lock = asyncio.Lock()
        self._stdin: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)

    async def _send(self, frame: bytes | str) -> None:
        async with self._lock:
            if isinstance(frame, str):
                await self.ws.send_str(frame)
            else:
                await self.ws.send_bytes(frame)

    async def open(self) -> None:
        """The empty frame on the lowest output channel that tells the client the streams are up."""
        first = (streaming.STDOUT if self.options.stdout else
                 streaming.STDERR if self.options.stderr else streaming.ERROR)
        await self._send(streaming.encode(self.protocol, first, b""))

    async def output(self, stream: int, data: bytes) -> None:
        wanted = self.options.stdout if stream == streaming.STDOUT else self.options.stderr
        if wanted and data:
            await self._send(streaming.encode(self.protocol, stream, data))

    async def send_status(self, status: dict[str, Any]) -> None:
        frame = streaming.status_frame(self.protocol, status)
        if frame is not None:
            await self._send(frame)

    async def read_client(self) -> None:
        """Until the client closes the socket: stdin frames into the stdin queue, the rest ignored."""
        async for message in self.ws:
            if message.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            try:
                channel, payload = streaming.decode(self.protocol, message.data)
            except streaming.ProtocolError as err:
                log.debug("exec: dropping a bad frame: %s", err)
                continue
            if channel == streaming.STDIN and self.options.stdin and payload:
                await self._stdin.put(payload)
            elif channel == streaming.CLOSE_SIGNAL and payload[0] == streaming.STDIN and self.options.stdin:
                await self._stdin.put(None)
            elif channel == streaming.RESIZE and self.options.tty:
                log.debug("exec: terminal resize %s ignored (the runtime cannot resize)", _size(payload))

    async def stdin(self) -> AsyncIterator[bytes]:
        while (data := await self._stdin.get()) is not None:
            yield data


async def _aclose(iterator: AsyncIterator[bytes]) -> None:
    """Closes the runtime's log iterator (an async generator) so it lets go of its stream at once."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def _size(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return payload[:64]


def _status_response(status: dict[str, Any]) -> web.Response:
    return web.Response(body=json.dumps(status).encode(), status=int(status.get("code") or 500),
                        content_type="application/json")
