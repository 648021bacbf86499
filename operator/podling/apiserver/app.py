"""The HTTP face of the API server: requests in, Kubernetes-shaped responses out.

One aiohttp handler dispatches every resource path through ``routing`` and ``storage``.
Invariants: every response to a bad request is a ``Status`` object with the right code
(never a stack trace, never a 500 for bad input); every request is authenticated before it
is routed and counted in the metrics once, by verb, resource and code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from ruamel.yaml import YAML, YAMLError

from podling.api import errors, openapi, protobuf, tables
from podling.api.open_streams import OpenStreams
from podling.api.resources import Resource, find
from podling.apiserver import codec, discovery, routing
from podling.apiserver.auth import (AllowAuthenticated, Authorizer, RequestAttributes, ServerIdentity,
                                    TokenAuthenticator, User)
from podling.apiserver.kubelets import KubeletProxy
from podling.apiserver.metrics import ApiserverMetrics
from podling.apiserver.storage import Storage, scale_of

log = logging.getLogger("podling.apiserver")

Obj = dict[str, Any]

MAX_BODY = 3 * 1024 * 1024  # Kubernetes' request size limit
_PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", "/metrics"})
_BOOKMARK_INTERVAL = 60.0
_FIELD_VALIDATION = ("Strict", "Warn", "Ignore")
_STORAGE_KEY = web.AppKey("storage", Storage)
_TOKEN_REVIEWS = find(group="authentication.k8s.io", version="v1", plural="tokenreviews")
assert _TOKEN_REVIEWS is not None


class ApiServer:
    def __init__(
        self,
        *,
        storage: Storage,
        metrics: ApiserverMetrics,
        tokens: TokenAuthenticator | None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.storage = storage
        self.metrics = metrics
        self.tokens = tokens  # None: no authentication (only for tests of the handler itself)
        self.authorizer = authorizer or AllowAuthenticated()
        self.identity = ServerIdentity.generate()  # what this server shows kubelets; in memory only
        self.kubelets = KubeletProxy(storage=storage, token=self.identity.token)
        self._watches = OpenStreams()

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _shutdown(self, app: web.Application) -> None:
        # Watches, log follows and execs would otherwise hold the shutdown open for its timeout.
        await self._watches.close()
        await self.kubelets.close()

    # ---- entry point -------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        verb, resource_label = request.method.lower(), ""
        try:
            user = await self._authenticate(request)
            target = routing.parse(request.path)
            if target is None:
                response = await self._non_resource(request)
            else:
                verb = routing.verb(request.method, target, watch=_flag(request, "watch")) or verb
                resource_label = target.resource.plural + (f"/{target.subresource}" if target.subresource else "")
                response = await self._resource(request, user, target, verb)
        except errors.StatusError as err:
            response = _status_response(err)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug: log it, answer without leaking a stack trace
            log.exception("internal error on %s %s", request.method, request.path_qs)
            response = _status_response(errors.internal(type(err).__name__))
        if verb != "watch":
            self.metrics.latency.labels(verb, resource_label).observe(time.perf_counter() - start)
        self.metrics.requests.labels(verb, resource_label, str(response.status)).inc()
        return response

    async def _authenticate(self, request: web.Request) -> User | None:
        if self.tokens is None or request.path in _PUBLIC_PATHS:
            return None
        authorization = request.headers.get("Authorization") or ""
        user = None
        if authorization.startswith("Bearer "):
            user = await self._lookup(authorization.removeprefix("Bearer ").strip())
        if user is None:
            raise errors.unauthorized()
        return user

    async def _lookup(self, token: str) -> User | None:
        """The user of a bearer token: this server's own identity, or whom ``tokens`` says."""
        if self.identity.matches(token):
            return self.identity.user
        return await self.tokens.lookup(token) if self.tokens is not None else None

    # ---- non-resource paths ------------------------------------------------------------

    async def _non_resource(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            raise errors.method_not_allowed(f"{request.method} is not allowed on {request.path}")
        path = request.path.rstrip("/") or "/"
        accept = request.headers.get("Accept", "")
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return _json(discovery.version())
        if path == "/metrics":
            return web.Response(body=generate_latest(self.metrics.registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})
        if path in ("/api", "/apis"):
            return _discovery(path, accept)
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            body = discovery.api_resource_list("", parts[1])
        elif parts[0] == "apis" and len(parts) == 2:
            body = discovery.api_group(parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            body = discovery.api_resource_list(parts[1], parts[2])
        elif path == "/openapi/v2":
            if "protobuf" in accept and "json" not in accept:
                raise errors.StatusError(code=406, reason="NotAcceptable",
                                         message="only application/json is served for /openapi/v2")
            return web.Response(body=openapi.openapi_v2_bytes(), content_type="application/json")
        elif path == "/openapi/v3":
            return web.Response(body=codec.dumps(openapi.openapi_v3_index()), content_type="application/json")
        elif path.startswith("/openapi/v3/"):
            document = openapi.openapi_v3_bytes(path.removeprefix("/openapi/v3/"))
            if document is None:
                raise errors.path_not_found(path)
            return web.Response(body=document, content_type="application/json",
                                headers={"Cache-Control": "public, immutable"} if "hash" in request.query else {})
        else:
            body = None
        if body is None:
            raise errors.path_not_found(path)
        return _json(body)

    # ---- resources ---------------------------------------------------------------------

    async def _resource(
        self, request: web.Request, user: User | None, target: routing.Target, verb: str
    ) -> web.StreamResponse:
        resource, namespace, name, sub = target.resource, target.namespace, target.name, target.subresource
        if user is not None and not self.authorizer.allowed(RequestAttributes(
            user=user, verb=verb, group=resource.group, resource=resource.plural, subresource=sub,
            namespace=namespace or "", name=name, path=request.path,
        )):
            raise errors.forbidden(resource, name, f'User "{user.name}" cannot {verb} resource "{resource.plural}"')
        if routing.verb(request.method, target, watch=_flag(request, "watch")) is None or (
                not sub and verb not in resource.verbs):
            raise errors.method_not_allowed("the server does not allow this method on the requested resource")
        if sub == "log" and verb == "get":
            return await self.kubelets.logs(request, namespace=namespace or "", name=name)
        if sub == "exec" and verb in ("get", "create"):
            return await self.kubelets.exec(request, namespace=namespace or "", name=name)
        if sub in ("log", "exec"):
            raise errors.method_not_allowed(f"the server does not allow this method on pods/{sub}")
        if resource is _TOKEN_REVIEWS:
            return _json(await self._token_review(await _body(request)), status=201)
        query = request.query
        dry_run = query.get("dryRun") == "All"
        if verb == "get":
            obj = await self.storage.get(resource, namespace=namespace, name=name)
            return self._object(request, resource, scale_of(resource, obj) if sub == "scale" else obj)
        if verb == "list":
            return await self._list(request, resource, namespace)
        if verb == "watch":
            return await self._watch(request, resource, namespace, name)
        if verb == "delete":
            options = await _delete_options(request)
            obj = await self.storage.delete(resource, namespace=namespace, name=name, options=options,
                                            dry_run=dry_run or "All" in (options.get("dryRun") or []))
            return _json(obj)
        if verb == "deletecollection":
            options = await _delete_options(request)
            items = await self.storage.delete_collection(
                resource, namespace=namespace, label_selector=query.get("labelSelector", ""),
                field_selector=query.get("fieldSelector", ""), options=options, dry_run=dry_run,
            )
            return _json({"kind": resource.list_kind, "apiVersion": resource.api_version,
                          "metadata": {}, "items": items})
        body = await _body(request)
        validation = _field_validation(request)
        if verb == "create" and sub == "binding":
            await self.storage.bind(resource, namespace=namespace or "", name=name, binding=body)
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201},
                         status=201)
        if verb == "create":
            obj, warnings = await self.storage.create(resource, namespace=namespace, obj=body, dry_run=dry_run,
                                                      field_validation=validation)
            return _json(obj, status=201, warnings=warnings)
        if verb == "update":
            obj, warnings = await self.storage.update(resource, namespace=namespace, name=name, obj=body,
                                                      subresource=sub, dry_run=dry_run, field_validation=validation)
        else:
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            obj, warnings = await self.storage.patch(resource, namespace=namespace, name=name,
                                                     patch_type=content_type, body=body, subresource=sub,
                                                     dry_run=dry_run, field_validation=validation)
        return _json(scale_of(resource, obj) if sub == "scale" else obj, warnings=warnings)

    async def _token_review(self, review: Any) -> Obj:
        """A TokenReview answered (never stored): who the token in ``spec.token`` belongs to."""
        if not isinstance(review, dict) or review.get("kind", "TokenReview") != "TokenReview":
            raise errors.bad_request("the request body must be an authentication.k8s.io/v1 TokenReview")
        spec = review.get("spec") or {}
        token = spec.get("token") if isinstance(spec, dict) else None
        if not isinstance(token, str) or not token:
            raise errors.bad_request("token is required for TokenReview in authentication.k8s.io/v1")
        user = await self._lookup(token)
        status: Obj = {"authenticated": False, "user": {}}
        if user is not None:
            groups = [*user.groups, *(() if "system:authenticated" in user.groups else ("system:authenticated",))]
            status = {"authenticated": True, "user": {"username": user.name, "uid": user.uid, "groups": groups}}
            if spec.get("audiences"):
                status["audiences"] = list(spec["audiences"])
        metadata = {k: v for k, v in (review.get("metadata") or {}).items() if k in ("name", "labels", "annotations")}
        return {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None, **metadata}, "spec": spec, "status": status}

    def _object(self, request: web.Request, resource: Resource, obj: Obj) -> web.Response:
        if _wants_table(request) and obj.get("kind") == resource.kind:
            return _json(tables.table(resource, [obj], resource_version=obj["metadata"]["resourceVersion"],
                                      include_object=request.query.get("includeObject", "Metadata")))
        return _json(obj)

    async def _list(self, request: web.Request, resource: Resource, namespace: str | None) -> web.Response:
        query = request.query
        items, revision, token = await self.storage.list(
            resource, namespace=namespace, label_selector=query.get("labelSelector", ""),
            field_selector=query.get("fieldSelector", ""), limit=_int(query, "limit"),
            continue_token=query.get("continue", ""),
        )
        if _wants_table(request):
            return _json(tables.table(resource, items, resource_version=str(revision), continue_token=token,
                                      include_object=query.get("includeObject", "Metadata")))
        metadata: Obj = {"resourceVersion": str(revision)}
        if token:
            metadata["continue"] = token
        return _json({"kind": resource.list_kind, "apiVersion": resource.api_version, "metadata": metadata,
                      "items": items})

    async def _watch(self, request: web.Request, resource: Resource, namespace: str | None, name: str) -> web.StreamResponse:
        with self._watches.track():  # shutdown ends open watches rather than waiting for them
            return await self._watch_stream(request, resource, namespace, name)

    async def _watch_stream(self, request: web.Request, resource: Resource, namespace: str | None,
                            name: str) -> web.StreamResponse:
        query = request.query
        field_selector = query.get("fieldSelector", "")
        if name:  # legacy /watch/.../NAME
            field_selector = ",".join(s for s in (field_selector, f"metadata.name={name}") if s)
        timeout = _int(query, "timeoutSeconds") or random.uniform(1800, 3600)
        bookmarks = _flag(request, "allowWatchBookmarks")
        initial_events = _flag(request, "sendInitialEvents")
        as_table = _wants_table(request)
        include_object = query.get("includeObject", "Metadata")
        rv = query.get("resourceVersion", "")
        events = self.storage.watch(
            resource, namespace=namespace, resource_version="" if initial_events else rv,
            label_selector=query.get("labelSelector", ""), field_selector=field_selector,
            mark_synced=initial_events,
        )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        last_rv = rv if rv not in ("", "0") else ""

        async def send(kind: str, obj: Obj) -> None:
            if as_table and kind not in ("BOOKMARK", "ERROR"):
                obj = tables.table(resource, [obj], resource_version=obj["metadata"].get("resourceVersion", ""),
                                   include_object=include_object)
            await response.write(codec.dumps({"type": kind, "object": obj}) + b"\n")

        def bookmark(annotations: Obj | None = None) -> Obj:
            metadata: Obj = {"resourceVersion": last_rv}
            if annotations:
                metadata["annotations"] = annotations
            return {"kind": resource.kind, "apiVersion": resource.api_version, "metadata": metadata}

        # A pump task reads the store watch into a queue, so waiting with a timeout (for
        # bookmarks and timeoutSeconds) never cancels the watch generator itself.
        queue: asyncio.Queue[tuple[str, Obj] | None] = asyncio.Queue(maxsize=1024)

        async def pump() -> None:
            try:
                async for item in events:
                    await queue.put(item)
            except errors.StatusError as err:
                await queue.put(("ERROR", err.status()))
            finally:
                await queue.put(None)

        deadline = time.monotonic() + timeout
        pumping = asyncio.create_task(pump())
        async with self.metrics.watching(resource.plural):
            try:
                while (remaining := deadline - time.monotonic()) > 0:
                    wait = min(remaining, _BOOKMARK_INTERVAL) if bookmarks else remaining
                    try:
                        item = await asyncio.wait_for(queue.get(), timeout=wait)
                    except TimeoutError:
                        if bookmarks and last_rv and time.monotonic() < deadline:
                            await send("BOOKMARK", bookmark())
                        continue
                    if item is None:
                        break  # the store ended the watch
                    kind, obj = item
                    if kind == "SYNCED":  # the initial events are all sent (sendInitialEvents)
                        last_rv = obj["metadata"]["resourceVersion"]
                        if bookmarks:
                            await send("BOOKMARK", bookmark({"k8s.io/initial-events-end": "true"}))
                        continue
                    if kind != "ERROR":
                        last_rv = obj["metadata"].get("resourceVersion", last_rv)
                    await send(kind, obj)
            except ConnectionResetError:
                pass
            finally:
                pumping.cancel()
                await asyncio.gather(pumping, return_exceptions=True)
                await events.aclose()
        return response


# ---- helpers ----------------------------------------------------------------------------


def _json(body: Any, *, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    headers = None
    if warnings:
        headers = CIMultiDict()
        for warning in warnings:
            headers.add("Warning", '299 - "{}"'.format(warning.replace("\\", "\\\\").replace('"', '\\"')))
    return web.Response(body=codec.dumps(body), status=status, content_type="application/json", headers=headers)


def _status_response(err: errors.StatusError) -> web.Response:
    return _json(err.status(), status=err.code)


def _discovery(path: str, accept: str) -> web.Response:
    legacy = path == "/api"
    for media_type, api_version in ((discovery.AGGREGATED_V2, "apidiscovery.k8s.io/v2"),
                                    (discovery.AGGREGATED_V2BETA1, "apidiscovery.k8s.io/v2beta1")):
        if media_type.split(";as=")[0].split(";", 1)[1] in accept.replace(" ", ""):
            body = discovery.aggregated(legacy=legacy, api_version=api_version)
            return web.Response(body=codec.dumps(body), headers={"Content-Type": media_type})
    return _json(discovery.api_versions() if legacy else discovery.api_group_list())


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


def _int(query: Any, name: str) -> int:
    raw = query.get(name, "")
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise errors.bad_request(f"invalid {name} {raw!r}: must be an integer") from None
    if value < 0:
        raise errors.bad_request(f"invalid {name} {raw!r}: must not be negative")
    return value


def _wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "as=Table" in accept and "g=meta.k8s.io" in accept


def _field_validation(request: web.Request) -> Any:
    value = request.query.get("fieldValidation", "Warn") or "Warn"
    if value not in _FIELD_VALIDATION:
        raise errors.bad_request(f"fieldValidation must be one of Strict, Warn or Ignore, not {value!r}")
    return value


async def _body(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise errors.too_large(f"the request body is larger than {MAX_BODY} bytes") from None
    if not raw:
        raise errors.bad_request("the request body is empty")
    return _decode(raw, request.headers.get("Content-Type", ""), what="the request body")


def _decode(raw: bytes, content_type: str, *, what: str) -> Any:
    """A request body as JSON-shaped data: JSON, YAML, or Kubernetes protobuf (kubectl's typed clients)."""
    if content_type.startswith(protobuf.CONTENT_TYPE):
        try:
            return protobuf.decode(raw)
        except protobuf.ProtobufError as err:
            raise errors.bad_request(f"{what} is not valid Kubernetes protobuf: {err}") from None
    if "protobuf" in content_type or "cbor" in content_type:
        raise errors.unsupported_media_type(content_type)
    if "yaml" in content_type:
        try:
            return YAML(typ="safe").load(raw)
        except YAMLError as err:
            raise errors.bad_request(f"{what} is not valid YAML: {err}") from None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise errors.bad_request(f"{what} is not valid JSON: {err}") from None


async def _delete_options(request: web.Request) -> Obj:
    options: Obj = {}
    if request.can_read_body:
        raw = await request.read()
        if raw:
            options = _decode(raw, request.headers.get("Content-Type", ""), what="the DeleteOptions body")
            if not isinstance(options, dict):
                raise errors.bad_request("the DeleteOptions body must be a JSON object")
    query = request.query
    if "gracePeriodSeconds" in query:
        options["gracePeriodSeconds"] = _int(query, "gracePeriodSeconds")
    if "propagationPolicy" in query:
        options["propagationPolicy"] = query["propagationPolicy"]
    if query.get("orphanDependents") in ("true", "false"):
        options["orphanDependents"] = query["orphanDependents"] == "true"
    policy = options.get("propagationPolicy")
    if policy not in (None, "Foreground", "Background", "Orphan"):
        raise errors.bad_request(f"propagationPolicy must be Foreground, Background or Orphan, not {policy!r}")
    return options
