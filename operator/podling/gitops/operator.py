"""The GitOps operator: keeps every Application's live objects equal to its git revision.

Invariants:

* One reconcile per Application at a time (a work queue keyed by namespace/name). A
  reconcile resolves the target revision to a SHA, renders and validates that tree, compares
  it with the live objects the app owns, and, when the policy says so, syncs the difference.
  Bursts of triggers (polls, webhooks, watchdog, drift events) coalesce in the queue, so a
  burst of pushes gives one sync per new commit.
* A revision with any invalid manifest is never applied, not even in part: the Application's
  status and an Event carry every error as ``file:line: Kind/name: path: message``, and the
  cluster stays exactly as it was.
* Automated sync syncs each new revision once; with selfHeal it also undoes drift (an object
  changed or deleted out of band) as soon as the change is seen. Without selfHeal, drift only
  shows as OutOfSync. A sync request (the ``podling.io/sync-request`` annotation) is carried
  out once per request id, whatever the policy.
* Live state comes from label-selected informers (``podling.io/app``) over every kind the
  API serves, so comparing is a cache read, and any change to an owned object re-checks its
  Application within a second.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from podling.api import meta
from podling.api.resources import RESOURCES, find
from podling.client.events import EventRecorder
from podling.client.http import ApiClient, ApiError, is_conflict, is_not_found
from podling.client.informer import Informer, InformerFactory
from podling.client.workqueue import WorkQueue, run_workers
from podling.gitops import health as healths
from podling.gitops.apply import ObjectResult, apply
from podling.gitops.plan import APP_LABEL, Key, desired_object, key_of, plan_prune
from podling.gitops.render import Rendered, render
from podling.gitops.source import GitSource, LocalRepoWatcher, SourceError
from podling.gitops.webhook import MAX_BODY, WebhookError, parse_push

log = logging.getLogger("podling.gitops")

Obj = dict[str, Any]
APPLICATIONS = find(group="podling.io", version="v1alpha1", plural="applications")
SECRETS = find(group="", version="v1", plural="secrets")
assert APPLICATIONS is not None and SECRETS is not None
REFRESH_ANNOTATION = "podling.io/refresh"
SYNC_REQUEST_ANNOTATION = "podling.io/sync-request"
HISTORY_LIMIT = 10
_WRITE_ATTEMPTS = 5  # status patches tried before a conflict fails the reconcile (it is retried)
_NOT_TRACKED = {"events", "leases", "tokenreviews", "applications"}
_DRIFT_DELAY = 0.5  # seconds: changes to owned objects within this window cost one reconcile
_RENDER_CACHE = 16
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_interval(text: str | None, *, default: float = 60.0) -> float:
    """A Go duration such as ``60s``, ``1m30s`` or ``2h`` in seconds (the default when unset or bad)."""
    if not text:
        return default
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return default
    return sum(float(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[u] for n, u in parts) or default


def recap(results: Sequence[ObjectResult]) -> str:
    """Ansible's play recap: ``ok=12 changed=3 created=1 pruned=1 failed=0``."""
    count = {action: sum(1 for r in results if r.action == action)
             for action in ("unchanged", "updated", "created", "pruned", "failed")}
    changed = count["updated"] + count["created"] + count["pruned"]
    return (f"ok={count['unchanged']} changed={changed} created={count['created']} pruned={count['pruned']} "
            f"failed={count['failed']}")


class GitOpsMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.syncs = Counter("podling_app_sync_total", "Syncs by Application and outcome phase.", ["app", "phase"],
                             registry=self.registry)
        self.sync_duration = Histogram("podling_app_sync_duration_seconds", "Duration of a sync, by Application.",
                                       ["app"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
                                       registry=self.registry)
        self.info = Gauge("podling_app_info", "1 for each Application's current sync status, health and revision.",
                          ["app", "sync_status", "health_status", "revision"], registry=self.registry)
        self.fetch_duration = Histogram("podling_git_fetch_duration_seconds", "git fetch duration.",
                                        buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                                        registry=self.registry)
        self.fetch_errors = Counter("podling_git_fetch_errors_total", "git fetches that failed.",
                                    registry=self.registry)
        self.webhooks = Counter("podling_webhook_requests_total", "Webhook requests by provider and result.",
                                ["provider", "result"], registry=self.registry)
        self.objects = Gauge("podling_app_objects", "Objects of an Application by sync status.",
                             ["app", "sync_status"], registry=self.registry)
        self._info_labels: dict[str, tuple[str, str, str, str]] = {}

    def observe_fetch(self, seconds: float, ok: bool) -> None:
        self.fetch_duration.observe(seconds)
        if not ok:
            self.fetch_errors.inc()

    def set_info(self, *, app: str, sync_status: str, health_status: str, revision: str) -> None:
        labels = (app, sync_status, health_status, revision)
        old = self._info_labels.get(app)
        if old == labels:
            return
        if old is not None:
            self.info.remove(*old)
        self.info.labels(*labels).set(1)
        self._info_labels[app] = labels

    def forget(self, app: str) -> None:
        if (old := self._info_labels.pop(app, None)) is not None:
            self.info.remove(*old)
        for status in ("Synced", "OutOfSync"):
            with contextlib.suppress(KeyError):
                self.objects.remove(app, status)


@dataclasses.dataclass(slots=True)
class _AppMemory:
    synced_sha: str = ""  # the revision the last automated sync attempt was for
    synced_ok: bool = False
    poll: asyncio.TimerHandle | None = None
    fetch: bool = True  # the next reconcile asks git (a poll, push, webhook or spec change); drift does not
    sha: str = ""  # the last revision resolved
    revision: str = ""  # ... for this revision name


class GitOpsOperator:
    def __init__(self, *, api: ApiClient, cache_dir: Path, listen: str = "", webhook_secrets: Sequence[str] = ()):
        self.api = api
        self.listen = listen
        self.webhook_secrets = [s for s in webhook_secrets if s]
        self.metrics = GitOpsMetrics()
        self.source = GitSource(cache_dir, observe_fetch=self.metrics.observe_fetch)
        self.recorder = EventRecorder(api, component="podling-operator")
        self.informers = InformerFactory(api)
        self.apps = self.informers.informer(APPLICATIONS)
        self.apps.add_handlers(on_add=self._app_changed, on_update=self._app_updated, on_delete=self._app_deleted)
        self.tracked: list[Informer] = []
        for resource in RESOURCES:
            if resource.plural in _NOT_TRACKED or not {"list", "watch"} <= set(resource.verbs):
                continue
            informer = self.informers.informer(resource, label_selector=APP_LABEL)
            informer.add_handlers(on_add=self._owned_changed, on_update=lambda old, new: self._owned_changed(new),
                                  on_delete=self._owned_changed)
            self.tracked.append(informer)
        self.queue = WorkQueue(name="applications")
        self.watcher = LocalRepoWatcher(on_change=self._repo_moved)
        self.port = 0
        self._watching = False
        self._memory: dict[str, _AppMemory] = {}
        self._rendered: OrderedDict[tuple[str, str, str, str], Rendered] = OrderedDict()
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self, *, workers: int = 4) -> None:
        self.informers.start()
        await self.informers.wait_synced()
        self.watcher.start()
        self._watching = True
        self.watcher.watch(self._repo_urls())
        if self.listen:
            await self._serve()
        self._tasks.append(asyncio.get_running_loop().create_task(
            run_workers(self.queue, self._reconcile, workers=workers), name="gitops workers"))
        for app in self.apps.list():
            self._fetch(meta.object_key(app))
        log.info("GitOps operator running%s", f" (webhooks and metrics on http://{self.listen})" if self.listen else "")

    async def stop(self) -> None:
        self.queue.shutdown()
        for memory in self._memory.values():
            if memory.poll is not None:
                memory.poll.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.watcher.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.informers.stop()

    # ---- triggers --------------------------------------------------------------------------

    def _fetch(self, key: str) -> None:
        """Reconcile ``key`` asking git for the revision's commit again."""
        self._memory.setdefault(key, _AppMemory()).fetch = True
        self.queue.add(key)

    def _app_changed(self, app: Obj) -> None:
        self._fetch(meta.object_key(app))
        if self._watching:
            self.watcher.watch(self._repo_urls())

    def _app_updated(self, old: Obj, new: Obj) -> None:
        """A new spec or annotation (refresh, sync request) is a trigger; our own status writes are not."""
        before, after = dict(meta.annotations(old)), dict(meta.annotations(new))
        if REFRESH_ANNOTATION not in after:  # our own removal of a refresh we carried out
            before.pop(REFRESH_ANNOTATION, None)
        if old.get("spec") != new.get("spec") or before != after:
            self._app_changed(new)

    def _app_deleted(self, app: Obj) -> None:
        memory = self._memory.pop(meta.object_key(app), None)
        if memory is not None and memory.poll is not None:
            memory.poll.cancel()
        self.metrics.forget(meta.name(app))

    def _owned_changed(self, obj: Obj) -> None:
        name = meta.labels(obj).get(APP_LABEL, "")
        for app in self.apps.list():
            if meta.name(app) == name:
                self.queue.add_after(meta.object_key(app), _DRIFT_DELAY)

    def _repo_moved(self, repo_url: str) -> None:
        for app in self.apps.list():
            if ((app.get("spec") or {}).get("source") or {}).get("repoURL") == repo_url:
                self._fetch(meta.object_key(app))

    def _repo_urls(self) -> list[str]:
        return [url for app in self.apps.list() if (url := ((app.get("spec") or {}).get("source") or {}).get("repoURL"))]

    def _poll_later(self, key: str, interval: float) -> None:
        memory = self._memory.setdefault(key, _AppMemory())
        if memory.poll is not None:
            memory.poll.cancel()
        delay = interval * random.uniform(0.9, 1.1)  # jitter: apps polled together drift apart
        memory.poll = asyncio.get_running_loop().call_later(delay, self._fetch, key)

    # ---- one Application -------------------------------------------------------------------

    async def _reconcile(self, key: str) -> None:
        app = self.apps.get(key)
        if app is None:
            return
        spec = app.get("spec") or {}
        source = spec.get("source") or {}
        name = meta.name(app)
        memory = self._memory.setdefault(key, _AppMemory())
        if not memory.synced_sha:  # a restarted operator: what the last automated sync did
            last = (app.get("status") or {}).get("operationState") or {}
            if not last.get("id") and last.get("revision"):
                memory.synced_sha, memory.synced_ok = last["revision"], last.get("phase") == "Succeeded"
        if memory.poll is None or memory.fetch:
            self._poll_later(key, parse_interval(spec.get("interval")))
        status: Obj = {"observedGeneration": (app.get("metadata") or {}).get("generation")}
        request = _sync_request(app)
        if request is not None and request.get("id") == ((app.get("status") or {}).get("operationState") or {}).get("id"):
            request = None  # carried out already
        revision = (request or {}).get("revision") or source.get("targetRevision") or "HEAD"
        try:
            if memory.fetch or not memory.sha or memory.revision != revision:
                memory.fetch = False
                memory.sha = await self.source.resolve(repo_url=source.get("repoURL", ""), revision=revision)
                memory.revision = revision
            sha = memory.sha
            tree = await self.source.checkout(repo_url=source.get("repoURL", ""), sha=sha)
        except SourceError as err:
            message = f"fetching {source.get('repoURL')} at {revision}: {err}"
            await self._failed(app, status, condition="ComparisonError", message=message, request=request)
            return
        rendered = self._render(tree=tree, sha=sha, path=source.get("path") or ".",
                                namespace=(spec.get("destination") or {}).get("namespace") or meta.namespace(app))
        if not rendered.ok:
            shown = [str(error) for error in rendered.errors[:20]]
            more = len(rendered.errors) - len(shown)
            message = f"revision {sha[:12]} is not valid, nothing was applied:\n" + "\n".join(shown) + (
                f"\n… and {more} more" if more > 0 else "")
            status["sync"] = {"status": "OutOfSync", "revision": sha}
            await self._failed(app, status, condition="InvalidManifest", message=message, request=request, sha=sha)
            return

        objects = [d.obj for d in rendered.objects]
        namespace = (spec.get("destination") or {}).get("namespace") or meta.namespace(app) or "default"
        ignore = spec.get("ignoreDifferences") or ()
        automated = (spec.get("syncPolicy") or {}).get("automated")
        live = self._live(name)
        prune_all = plan_prune(app=name, live_owned=live.values(),
                               desired_keys=self._desired_keys(objects, app=name, namespace=namespace))
        compared = await apply(api=self.api, app=name, objects=objects, live=live, prune=prune_all, dry_run=True,
                               namespace=namespace, ignore_differences=ignore)
        out_of_sync = any(r.action != "unchanged" for r in compared)
        prune = automated.get("prune", False) if automated is not None else False
        if request is not None:
            prune = bool(request.get("prune", prune))
        wants_sync = request is not None or (automated is not None and out_of_sync and (
            sha != memory.synced_sha or not memory.synced_ok or automated.get("selfHeal", False)))
        empty_refused = not objects and prune_all and not (automated or {}).get("allowEmpty", False)
        conditions: list[Obj] = []
        operation: Obj | None = None  # this reconcile's sync, if it made one
        deployed: Obj | None = None  # its history entry, if it changed something or synced a new revision
        history = (app.get("status") or {}).get("history") or ()
        results = compared
        if wants_sync:
            started = time.perf_counter()
            started_at = meta.now_rfc3339()
            results = await apply(api=self.api, app=name, objects=objects, live=live,
                                  prune=prune_all if prune and not empty_refused else [], dry_run=False,
                                  namespace=namespace, ignore_differences=ignore)
            failed = [r for r in results if r.action == "failed"]
            phase = "Failed" if failed else "Succeeded"
            summary = recap(results)
            self.metrics.syncs.labels(name, phase).inc()
            self.metrics.sync_duration.labels(name).observe(time.perf_counter() - started)
            if request is None:
                memory.synced_sha, memory.synced_ok = sha, not failed
            message = summary if not failed else summary + "\n" + "\n".join(
                f"{_key_text(r.key)}: {r.message}" for r in failed[:20])
            operation = {"phase": phase, "message": message, "revision": sha, "result": summary,
                         "startedAt": started_at, "finishedAt": meta.now_rfc3339(),
                         **({"id": request["id"]} if request is not None else {})}
            if any(r.action != "unchanged" for r in results) or not history or history[-1].get("revision") != sha:
                deployed = {"revision": sha, "deployedAt": started_at, "result": phase}
            self._event(app, type="Warning" if failed else "Normal", reason="SyncFailed" if failed else "Synced",
                        message=f"revision {sha[:12]}: {summary}")
            if failed:
                conditions.append(_condition("SyncError", message))
            live = self._live(name)
            # What remains different after the sync (prune disabled, failures, or writes the cache has not seen).
            out_of_sync = any(r.action == "failed" for r in results) or bool(prune_all and (not prune or empty_refused))
        if empty_refused:
            conditions.append(_condition("SyncError", "the revision has no objects and allowEmpty is off: "
                                                      "nothing was pruned"))
        await self._write(app, status | {
            "sync": {"status": "OutOfSync" if out_of_sync else "Synced", "revision": sha},
            "resources": self._resources(results, live, synced=wants_sync,
                                         left_to_prune=prune_all if wants_sync and not (prune and not empty_refused)
                                         else []),
            "conditions": conditions,
            **({"operationState": operation} if operation else {}),
        }, deployed=deployed)

    def _render(self, *, tree: Path, sha: str, path: str, namespace: str) -> Rendered:
        key = (str(tree), sha, path, namespace)
        rendered = self._rendered.get(key)
        if rendered is None:
            rendered = render(root=tree, path=path, default_namespace=namespace)
            self._rendered[key] = rendered
            while len(self._rendered) > _RENDER_CACHE:
                self._rendered.popitem(last=False)
        self._rendered.move_to_end(key)
        return rendered

    def _live(self, app: str) -> dict[Key, Obj]:
        return {key_of(obj): obj for informer in self.tracked for obj in informer.list()
                if meta.labels(obj).get(APP_LABEL) == app}

    @staticmethod
    def _desired_keys(objects: Sequence[Obj], *, app: str, namespace: str) -> set[Key]:
        keys = set()
        for obj in objects:
            with contextlib.suppress(ValueError):  # an unserved kind: apply reports it
                keys.add(key_of(desired_object(obj, app=app, namespace=namespace)))
        return keys

    @staticmethod
    def _resources(results: Sequence[ObjectResult], live: Mapping[Key, Obj], *, synced: bool,
                   left_to_prune: Sequence[Obj]) -> list[Obj]:
        """status.resources: each object's sync status and health after this reconcile."""
        entries = []

        def entry(key: Key, obj: Obj | None, *, in_sync: bool, message: str = "") -> Obj:
            verdict = healths.health(obj)
            found = {"group": key.group, "version": (obj or {}).get("apiVersion", "v1").rpartition("/")[2],
                     "kind": key.kind, "namespace": key.namespace, "name": key.name,
                     "status": "Synced" if in_sync else "OutOfSync", "health": verdict.status}
            if message or verdict.message:
                found["message"] = message or verdict.message
            return found

        for result in results:
            obj = live.get(result.key) or result.live
            if result.action == "pruned":
                if not synced:
                    entries.append(entry(result.key, obj, in_sync=False, message="requires pruning"))
                continue
            in_sync = result.action == "unchanged" or (synced and result.action in ("created", "updated"))
            entries.append(entry(result.key, obj, in_sync=in_sync,
                                 message=result.message if result.action == "failed" else ""))
        for obj in left_to_prune:
            entries.append(entry(key_of(obj), obj, in_sync=False, message="requires pruning"))
        return sorted(entries, key=lambda e: (e["kind"], e["namespace"], e["name"]))

    async def _failed(self, app: Obj, status: Obj, *, condition: str, message: str, request: Obj | None,
                      sha: str = "") -> None:
        name = meta.name(app)
        self.metrics.syncs.labels(name, "Error").inc()
        self._event(app, type="Warning", reason=condition, message=message)
        status["conditions"] = [_condition(condition, message)]
        status.setdefault("sync", {"status": "Unknown", "revision": ((app.get("status") or {}).get("sync") or {})
                                   .get("revision", "")})
        if request is not None:
            now = meta.now_rfc3339()
            status["operationState"] = {"id": request["id"], "phase": "Error", "message": message, "result": None,
                                        "revision": sha or request.get("revision") or "", "startedAt": now,
                                        "finishedAt": now}
        await self._write(app, status)

    async def _write(self, app: Obj, status: Obj, *, deployed: Obj | None = None) -> None:
        """Patch ``status`` (plus ``deployed`` appended to the history) onto ``app``'s, on the
        condition that ``app`` is what is stored: a reconcile that read a stale cached copy must
        not put back an older history or operationState. On a conflict the status is laid over
        the stored object instead, read afresh."""
        name, namespace = meta.name(app), meta.namespace(app)
        base = app
        for attempt in range(_WRITE_ATTEMPTS):
            body = self._status_over(base, dict(status), deployed=deployed)
            read_at = (base.get("metadata") or {}).get("resourceVersion")
            try:
                if body is not None:
                    await self.api.patch(APPLICATIONS, namespace=namespace, name=name, subresource="status",
                                         body={"metadata": {"resourceVersion": read_at}, "status": body})
                break
            except ApiError as err:
                if is_not_found(err):
                    return
                if not is_conflict(err) or attempt == _WRITE_ATTEMPTS - 1:
                    raise
                try:
                    base = await self.api.get(APPLICATIONS, namespace=namespace, name=name)
                except ApiError as gone:
                    if is_not_found(gone):
                        return
                    raise
        if REFRESH_ANNOTATION in meta.annotations(app):  # done: the CLI waits for it to go, as Argo CD's
            try:
                await self.api.patch(APPLICATIONS, namespace=namespace, name=name,
                                     body={"metadata": {"annotations": {REFRESH_ANNOTATION: None}}})
            except ApiError as err:
                if not is_not_found(err):
                    raise

    def _status_over(self, app: Obj, status: Obj, *, deployed: Obj | None) -> Obj | None:
        """The status to patch onto ``app``'s (None: it would change nothing), with its health,
        conditions' transition times and history worked out from ``app``; metrics set."""
        old = app.get("status") or {}
        entries = status.get("resources") if "resources" in status else old.get("resources") or []
        status["health"] = _app_health(entries) if "resources" in status else old.get("health") or \
            {"status": "Unknown"}
        if "conditions" in status:
            status["conditions"] = [dict(c) for c in status["conditions"]]  # (a retry starts from the caller's)
        for condition in status.get("conditions") or ():
            previous = next((c for c in old.get("conditions") or () if c.get("type") == condition["type"]), None)
            if previous is not None and previous.get("message") == condition["message"]:
                condition["lastTransitionTime"] = previous.get("lastTransitionTime", condition["lastTransitionTime"])
        if deployed is not None:
            history = list(old.get("history") or ())
            history.append({"id": (history[-1]["id"] + 1) if history else 1, **deployed})
            status["history"] = history[-HISTORY_LIMIT:]
        name = meta.name(app)
        sync = status.get("sync") or {}
        self.metrics.set_info(app=name, sync_status=sync.get("status", "Unknown"),
                              health_status=status["health"]["status"], revision=sync.get("revision", ""))
        for verdict in ("Synced", "OutOfSync"):
            self.metrics.objects.labels(name, verdict).set(sum(1 for e in entries if e.get("status") == verdict))
        return status if {**old, **status} != old else None

    def _event(self, app: Obj, *, type: str, reason: str, message: str) -> None:
        target = {"apiVersion": APPLICATIONS.api_version, "kind": APPLICATIONS.kind, **app}
        task = asyncio.get_running_loop().create_task(
            self.recorder.event(target, type=type, reason=reason, message=message[:1024]))  # type: ignore[arg-type]
        self._tasks.append(task)
        self._tasks = [t for t in self._tasks if not t.done() or t is task]

    # ---- webhooks and metrics --------------------------------------------------------------------

    async def _serve(self) -> None:
        app = web.Application(client_max_size=MAX_BODY + 1)
        app.router.add_post("/api/webhook", self._webhook)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/healthz", lambda request: web.Response(text="ok"))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, _, port = self.listen.rpartition(":")
        await web.TCPSite(self._runner, host, int(port), reuse_address=True).start()
        self.port = self._runner.addresses[0][1]

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _webhook(self, request: web.Request) -> web.Response:
        provider = _provider_of(request.headers)
        if request.content_length is not None and request.content_length > MAX_BODY:
            self.metrics.webhooks.labels(provider, "too-large").inc()
            return _answer(413, f"request body over {MAX_BODY} bytes")
        body = await request.content.read(MAX_BODY + 1)
        try:
            push = parse_push(headers=request.headers, body=body, secrets=await self._secrets())
        except WebhookError as err:
            self.metrics.webhooks.labels(provider, {401: "unauthorized", 413: "too-large"}.get(err.status, "invalid")).inc()
            return _answer(err.status, str(err))
        if push is None:
            self.metrics.webhooks.labels(provider, "ignored").inc()
            return _answer(202, "not a push event: ignored")
        matched = [app for app in self.apps.list() if push.matches(
            repo_url=((app.get("spec") or {}).get("source") or {}).get("repoURL", ""),
            revision=((app.get("spec") or {}).get("source") or {}).get("targetRevision") or "HEAD")]
        for app in matched:
            self._fetch(meta.object_key(app))
        self.metrics.webhooks.labels(push.provider, "accepted").inc()
        return _answer(200, f"refreshing {len(matched)} application(s): "
                            + ", ".join(meta.object_key(a) for a in matched))

    async def _secrets(self) -> list[str]:
        """The global webhook secrets and every Application's own (from its Secret)."""
        secrets = list(self.webhook_secrets)
        for app in self.apps.list():
            ref = ((app.get("spec") or {}).get("source") or {}).get("webhookSecretRef")
            if not ref:
                continue
            try:
                secret = await self.api.get(SECRETS, namespace=meta.namespace(app), name=ref["name"])
            except ApiError as err:
                log.warning("webhook secret %s/%s of %s: %s", meta.namespace(app), ref["name"], meta.name(app), err)
                continue
            if value := (secret.get("data") or {}).get(ref.get("key") or "secret"):
                secrets.append(base64.b64decode(value).decode(errors="replace"))
        return secrets


def _sync_request(app: Obj) -> Obj | None:
    text = meta.annotations(app).get(SYNC_REQUEST_ANNOTATION)
    if not text:
        return None
    try:
        request = json.loads(text)
    except ValueError:
        log.warning("%s: the %s annotation is not JSON: %r", meta.object_key(app), SYNC_REQUEST_ANNOTATION, text)
        return None
    return request if isinstance(request, dict) and request.get("id") else None


def _condition(type_: str, message: str) -> Obj:
    return {"type": type_, "status": "True", "reason": type_, "message": message,
            "lastTransitionTime": meta.now_rfc3339()}


def _app_health(resources: Sequence[Mapping[str, Any]]) -> Obj:
    verdict = healths.rollup(healths.Health(status=e.get("health", "Unknown"), message=e.get("message", ""))
                             for e in resources)
    return {"status": verdict.status, **({"message": verdict.message} if verdict.message else {})}


def _key_text(key: Key) -> str:
    return "/".join(part for part in (key.kind, key.namespace, key.name) if part)


def _provider_of(headers: Mapping[str, str]) -> str:
    for header, provider in (("X-Gitea-Event", "gitea"), ("X-Gogs-Event", "gogs"), ("X-GitHub-Event", "github"),
                             ("X-Gitlab-Event", "gitlab"), ("X-Event-Key", "bitbucket-server")):
        if header in headers:
            return provider
    return "unknown"


def _answer(status: int, message: str) -> web.Response:
    return web.json_response({"status": status, "message": message}, status=status)
