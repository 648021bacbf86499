"""The one way podling's components speak to the API server: Kubernetes REST over HTTPS.

Two layers, kept apart as lightkube keeps them:

* Building a request is pure. ``*_request`` functions turn a :class:`Resource` from the
  resource table plus names and options into a :class:`Request` (method, path, query, body),
  through one path builder that refuses what the table does not allow: a subresource the
  kind does not have, a namespace on a cluster-scoped kind, a namespaced object without one.
* :class:`ApiClient` sends requests over aiohttp and turns answers into objects (dicts), or
  into :class:`ApiError` carrying the server's ``Status``. Transport failures (refused,
  dropped, timed out) are :class:`TransportError`, so callers never see aiohttp's types.

Invariants: every request is verified against the configured CA and carries the bearer
token; watches run on their own connection pool with no connection limit, so any number of
long-lived watches can never starve ordinary requests of connections (the store team hit
exactly that with etcd); a client is used only between ``open()`` and ``close()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import aiohttp
from yarl import URL

from podling import __version__
from podling.api import meta
from podling.api.resources import Resource, find
from podling.client.config import ClientConfig

log = logging.getLogger("podling.client")

Obj = dict[str, Any]
PatchType = Literal["merge", "strategic", "json"]

PATCH_CONTENT_TYPES: Mapping[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}
_REQUEST_CONNECTIONS = 100  # ordinary requests: bounded, as aiohttp's default
_WATCH_GRACE = 30.0  # seconds a timed watch may outlive its timeoutSeconds before we hang up


# ---- errors ------------------------------------------------------------------------------


class ApiError(Exception):
    """The server answered with a non-2xx ``Status`` (or a watch ERROR event carrying one)."""

    def __init__(self, status: Obj) -> None:
        self.status = status
        self.code = int(status.get("code") or 0)
        self.reason = str(status.get("reason") or "")
        self.message = str(status.get("message") or "")
        super().__init__(f"{self.code} {self.reason}: {self.message}")


class TransportError(Exception):
    """The server could not be reached, hung up, timed out, or sent something that is not JSON."""


def is_not_found(err: BaseException) -> bool:
    return isinstance(err, ApiError) and err.code == 404


def is_conflict(err: BaseException) -> bool:
    """A stale write or failed precondition (409 Conflict), not an existing name."""
    return isinstance(err, ApiError) and err.code == 409 and err.reason != "AlreadyExists"


def is_already_exists(err: BaseException) -> bool:
    return isinstance(err, ApiError) and err.code == 409 and err.reason == "AlreadyExists"


def is_gone(err: BaseException) -> bool:
    """410: the resourceVersion (or continue token) is older than the server's history."""
    return isinstance(err, ApiError) and err.code == 410


# ---- building requests (pure) ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    method: str
    path: str  # already percent-encoded
    query: tuple[tuple[str, str], ...] = ()
    body: Any = None  # JSON-serialisable, or None for no body
    content_type: str = "application/json"

    @property
    def target(self) -> str:
        """Path and query string, as they go on the request line."""
        return f"{self.path}?{urllib.parse.urlencode(self.query)}" if self.query else self.path


def resource_path(resource: Resource, *, namespace: str | None = None, name: str = "", subresource: str = "") -> str:
    """The one path builder: ``/api[s]/GV[/namespaces/NS]/PLURAL[/NAME[/SUB]]``.

    A namespaced resource without a namespace is the all-namespaces collection (for list
    and watch); naming one object of it needs the namespace.
    """
    if subresource:
        if subresource not in resource.subresources:
            has = ", ".join(resource.subresources) or "none"
            raise ValueError(f"{resource.plural} has no {subresource!r} subresource (it has: {has})")
        if not name:
            raise ValueError(f"the {subresource} subresource of {resource.plural} needs an object name")
    if namespace and not resource.namespaced:
        raise ValueError(f"{resource.kind} is cluster-scoped: it takes no namespace (got {namespace!r})")
    if resource.namespaced and name and not namespace:
        raise ValueError(f"{resource.kind} {name!r} is namespaced: give its namespace")
    parts = ["apis", resource.group, resource.version] if resource.group else ["api", resource.version]
    if namespace:
        parts += ["namespaces", namespace]
    parts.append(resource.plural)
    parts += [p for p in (name, subresource) if p]
    return "/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)


def _check_verb(resource: Resource, verb: str) -> None:
    if verb not in resource.verbs:
        raise ValueError(f"{resource.plural} does not support {verb}")


def _query(**params: str | int | bool | None) -> tuple[tuple[str, str], ...]:
    """Query parameters in Kubernetes' spelling, leaving out the unset ones ("", 0, None, False)."""
    return tuple((key, "true" if value is True else str(value))
                 for key, value in params.items() if value not in ("", 0, None, False))


def _namespace_of(resource: Resource, obj: Obj, namespace: str | None) -> str | None:
    """The namespace a request about ``obj`` goes to: the explicit one, else the object's own."""
    if not resource.namespaced:
        return None
    ns = namespace or meta.namespace(obj)
    if not ns:
        raise ValueError(f"{resource.kind} {meta.name(obj)!r} is namespaced: give its namespace")
    if meta.namespace(obj) not in ("", ns):
        raise ValueError(f"{resource.kind} {meta.name(obj)!r} is in namespace {meta.namespace(obj)!r}, not {ns!r}")
    return ns


def get_request(resource: Resource, *, namespace: str | None = None, name: str, subresource: str = "") -> Request:
    _check_verb(resource, "get")
    return Request(method="GET", path=resource_path(resource, namespace=namespace, name=name, subresource=subresource))


def list_request(
    resource: Resource,
    *,
    namespace: str | None = None,
    label_selector: str = "",
    field_selector: str = "",
    limit: int = 0,
    continue_: str = "",
) -> Request:
    _check_verb(resource, "list")
    return Request(method="GET", path=resource_path(resource, namespace=namespace),
                   query=_query(labelSelector=label_selector, fieldSelector=field_selector, limit=limit,
                                **{"continue": continue_}))


def watch_request(
    resource: Resource,
    *,
    namespace: str | None = None,
    resource_version: str = "",
    label_selector: str = "",
    field_selector: str = "",
    timeout_seconds: int = 0,
    allow_bookmarks: bool = True,
) -> Request:
    _check_verb(resource, "watch")
    return Request(method="GET", path=resource_path(resource, namespace=namespace),
                   query=_query(watch=True, resourceVersion=resource_version, labelSelector=label_selector,
                                fieldSelector=field_selector, timeoutSeconds=timeout_seconds,
                                allowWatchBookmarks=allow_bookmarks))


def create_request(resource: Resource, obj: Obj, *, namespace: str | None = None) -> Request:
    """POST to the collection; the namespace is ``namespace`` or the object's own."""
    _check_verb(resource, "create")
    return Request(method="POST", path=resource_path(resource, namespace=_namespace_of(resource, obj, namespace)),
                   body=obj)


def update_request(resource: Resource, obj: Obj, *, namespace: str | None = None, subresource: str = "") -> Request:
    """PUT the whole object (or its status); its metadata.resourceVersion makes it conditional."""
    _check_verb(resource, "update")
    name = meta.name(obj)
    if not name:
        raise ValueError(f"cannot update a {resource.kind} without metadata.name")
    path = resource_path(resource, namespace=_namespace_of(resource, obj, namespace), name=name,
                         subresource=subresource)
    return Request(method="PUT", path=path, body=obj)


def patch_request(
    resource: Resource,
    *,
    namespace: str | None = None,
    name: str,
    body: Obj | list[Obj],
    patch_type: PatchType = "merge",
    subresource: str = "",
) -> Request:
    _check_verb(resource, "patch")
    if patch_type not in PATCH_CONTENT_TYPES:
        raise ValueError(f"patch_type must be one of {', '.join(PATCH_CONTENT_TYPES)}, not {patch_type!r}")
    return Request(method="PATCH", path=resource_path(resource, namespace=namespace, name=name, subresource=subresource),
                   body=body, content_type=PATCH_CONTENT_TYPES[patch_type])


def delete_request(
    resource: Resource,
    *,
    namespace: str | None = None,
    name: str,
    grace_period_seconds: int | None = None,
    propagation_policy: Literal["Foreground", "Background", "Orphan"] | None = None,
    preconditions: Mapping[str, str] | None = None,
) -> Request:
    """DELETE with a ``DeleteOptions`` body when any option is given (as client-go sends them)."""
    _check_verb(resource, "delete")
    options: Obj = {}
    if grace_period_seconds is not None:
        options["gracePeriodSeconds"] = grace_period_seconds
    if propagation_policy is not None:
        options["propagationPolicy"] = propagation_policy
    if preconditions:
        options["preconditions"] = dict(preconditions)
    body = {"kind": "DeleteOptions", "apiVersion": "v1", **options} if options else None
    return Request(method="DELETE", path=resource_path(resource, namespace=namespace, name=name), body=body)


_PODS = find(group="", version="v1", plural="pods")
assert _PODS is not None


def bind_request(pod: Obj, node: str) -> Request:
    """POST pods/NAME/binding: assign ``pod`` to ``node`` (what a scheduler does)."""
    namespace, name = meta.namespace(pod), meta.name(pod)
    metadata = {"name": name, "namespace": namespace}
    if uid := (pod.get("metadata") or {}).get("uid"):
        metadata["uid"] = uid
    body = {"apiVersion": "v1", "kind": "Binding", "metadata": metadata,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
    return Request(method="POST", path=resource_path(_PODS, namespace=namespace, name=name, subresource="binding"),
                   body=body)


# ---- sending them ------------------------------------------------------------------------


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


@dataclasses.dataclass(slots=True)
class _Sessions:
    requests: aiohttp.ClientSession
    watches: aiohttp.ClientSession


class ApiClient:
    """An async Kubernetes API client: ``async with ApiClient(config) as api: ...``.

    aiohttp ties a connection pool to a session, so the client holds two sessions: one with a
    bounded pool for ordinary requests, one with an unbounded pool for watches.
    """

    def __init__(self, config: ClientConfig, *, user_agent: str = f"podling/{__version__}",
                 timeout: float = 30.0) -> None:
        self.config = config
        self._base = URL(config.server.rstrip("/"))
        self._headers = {"Accept": "application/json", "User-Agent": user_agent}
        if config.token:
            self._headers["Authorization"] = f"Bearer {config.token}"
        self._timeout = timeout
        self._state = _State.UNOPENED
        self._sessions: _Sessions | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    async def open(self) -> ApiClient:
        if self._state is not _State.UNOPENED:
            raise RuntimeError(f"ApiClient is {self._state.value}; open() works once")
        ssl_context = self.config.ssl_context()
        self._sessions = _Sessions(
            requests=aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_context, limit=_REQUEST_CONNECTIONS),
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=self._timeout)),
            watches=aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_context, limit=0),
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout)),
        )
        self._state = _State.OPENED
        return self

    async def close(self) -> None:
        if self._sessions is not None:
            await self._sessions.requests.close()
            await self._sessions.watches.close()
            self._sessions = None
        self._state = _State.CLOSED

    async def __aenter__(self) -> ApiClient:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _open_sessions(self) -> _Sessions:
        if self._sessions is None:
            raise RuntimeError(f"ApiClient is {self._state.value}: use `async with ApiClient(config)` "
                               "or `await api.open()` first")
        return self._sessions

    # ---- the verbs ---------------------------------------------------------------------

    async def get(self, resource: Resource, *, namespace: str | None = None, name: str,
                  subresource: str = "") -> Obj:
        return await self.send(get_request(resource, namespace=namespace, name=name, subresource=subresource))

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_: str = "",
    ) -> tuple[list[Obj], str, str]:
        """(items, the list's resourceVersion, continue token or "").

        Items get ``kind`` and ``apiVersion`` filled in when the server leaves them out, as
        Kubernetes does in lists, so every object a client holds says what it is.
        """
        body = await self.send(list_request(resource, namespace=namespace, label_selector=label_selector,
                                            field_selector=field_selector, limit=limit, continue_=continue_))
        items = body.get("items") or []
        for item in items:
            item.setdefault("kind", resource.kind)
            item.setdefault("apiVersion", resource.api_version)
        metadata = body.get("metadata") or {}
        return items, str(metadata.get("resourceVersion") or ""), str(metadata.get("continue") or "")

    async def create(self, resource: Resource, obj: Obj, *, namespace: str | None = None) -> Obj:
        return await self.send(create_request(resource, obj, namespace=namespace))

    async def update(self, resource: Resource, obj: Obj, *, namespace: str | None = None) -> Obj:
        return await self.send(update_request(resource, obj, namespace=namespace))

    async def update_status(self, resource: Resource, obj: Obj, *, namespace: str | None = None) -> Obj:
        return await self.send(update_request(resource, obj, namespace=namespace, subresource="status"))

    async def patch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        name: str,
        body: Obj | list[Obj],
        patch_type: PatchType = "merge",
        subresource: str = "",
    ) -> Obj:
        return await self.send(patch_request(resource, namespace=namespace, name=name, body=body,
                                             patch_type=patch_type, subresource=subresource))

    async def delete(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        name: str,
        grace_period_seconds: int | None = None,
        propagation_policy: Literal["Foreground", "Background", "Orphan"] | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> Obj:
        """The deleted object, or the object marked for deletion (finalizers, grace periods)."""
        return await self.send(delete_request(resource, namespace=namespace, name=name,
                                              grace_period_seconds=grace_period_seconds,
                                              propagation_policy=propagation_policy, preconditions=preconditions))

    async def bind(self, pod: Obj, node: str) -> None:
        await self.send(bind_request(pod, node))

    async def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        resource_version: str = "",
        label_selector: str = "",
        field_selector: str = "",
        timeout_seconds: int = 0,
        allow_bookmarks: bool = True,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """``(type, object)`` for ADDED, MODIFIED, DELETED and BOOKMARK events, until the server ends the watch.

        An ERROR event raises :class:`ApiError` (410 Gone: the resourceVersion was
        compacted; list again). Close the iterator when you stop early
        (``contextlib.aclosing``), which releases its connection at once.
        """
        request = watch_request(resource, namespace=namespace, resource_version=resource_version,
                                label_selector=label_selector, field_selector=field_selector,
                                timeout_seconds=timeout_seconds, allow_bookmarks=allow_bookmarks)
        session = self._open_sessions().watches
        timeout = aiohttp.ClientTimeout(total=timeout_seconds + _WATCH_GRACE if timeout_seconds else None,
                                        sock_connect=self._timeout)
        try:
            async with session.get(self._url(request), timeout=timeout) as response:
                if response.status >= 300:
                    raise _api_error(response.status, await response.read())
                async for line in _lines(response.content):
                    try:
                        event = json.loads(line)
                        kind, obj = event["type"], event["object"]
                    except (ValueError, KeyError, TypeError):
                        raise TransportError(f"watch {request.path}: not a watch event: {line[:200]!r}") from None
                    if kind == "ERROR":
                        raise ApiError(obj)
                    yield kind, obj
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            raise TransportError(f"watch {request.path}: {type(err).__name__}: {err}") from err

    # ---- the transport -----------------------------------------------------------------

    async def send(self, request: Request) -> Any:
        """Send a built request; the parsed JSON answer, or ApiError / TransportError."""
        session = self._open_sessions().requests
        data = None if request.body is None else json.dumps(request.body, separators=(",", ":")).encode()
        headers = {"Content-Type": request.content_type} if data is not None else None
        try:
            async with session.request(request.method, self._url(request), data=data, headers=headers) as response:
                raw = await response.read()
                for warning in response.headers.getall("Warning", ()):
                    log.warning("%s %s: the server warns: %s", request.method, request.path, warning)
                if response.status >= 300:
                    raise _api_error(response.status, raw)
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            raise TransportError(f"{request.method} {request.path}: {type(err).__name__}: {err}") from err
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise TransportError(f"{request.method} {request.path}: the answer is not JSON: {raw[:200]!r}") from None

    def _url(self, request: Request) -> URL:
        return URL(str(self._base) + request.target, encoded=True)


def _api_error(code: int, raw: bytes) -> ApiError:
    """The ``Status`` in a failed answer, or one made up from the HTTP status when there is none."""
    try:
        status = json.loads(raw)
    except ValueError:
        status = None
    if not isinstance(status, dict) or status.get("kind") != "Status":
        text = raw.decode(errors="replace").strip()[:500]
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": code,
                  "reason": _REASONS.get(code, "Unknown"), "message": text or f"HTTP {code}"}
    status.setdefault("code", code)
    return ApiError(status)


_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
            409: "Conflict", 410: "Gone", 413: "RequestEntityTooLarge", 415: "UnsupportedMediaType",
            422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
            504: "Timeout"}


async def _lines(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Newline-delimited lines of any length (aiohttp's readline stops at 128 KiB; objects reach 3 MiB).

    A stream that ends inside a line was cut off mid-event: that is a TransportError.
    """
    buffer = bytearray()
    async for chunk in stream.iter_any():
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            buffer += chunk[start:end]
            if buffer.strip():
                yield bytes(buffer)
            buffer.clear()
            start = end + 1
        buffer += chunk[start:]
    if buffer.strip():
        raise TransportError("the watch stream ended in the middle of an event")
