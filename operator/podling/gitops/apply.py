"""Applying a plan to the cluster: create, patch and prune, in the safe order, fast.

:func:`fetch_live` reads what an Application owns with one list per kind (label selector
``podling.io/app=APP``, all namespaces, every kind at once), so planning thousands of objects
costs a handful of requests and no GET per object. :func:`apply` plans every object against
that prefetched map (pure CPU: a no-op resync sends nothing at all), then writes only what
differs.

Invariants:

* Order: objects go in steps of equal (sync wave, kind step) from
  :func:`podling.gitops.plan.apply_order`; the objects of one step are written concurrently
  (at most ``max_in_flight`` requests at a time), and a step starts only when the one before
  it has finished. If a write of a wave fails, the rest of that wave is still applied (as
  Argo CD does), but later waves and the prune are not attempted (their results say so):
  what a later wave depends on is not skipped over, and nothing is deleted by a sync that
  did not complete, nor by one in which any object failed to plan.
* Every object written carries the label ``podling.io/app: APP`` and the annotation
  ``podling.io/last-applied``. An update is the plan's strategic merge patch, conditional on
  the resourceVersion it was planned against; on 409 Conflict it reads the object again,
  plans again and retries, a bounded number of times. A create that meets an existing object
  adopts it unless another Application's label is on it.
* Prune deletes an object only if :func:`podling.gitops.plan.owned_by` proves this
  Application created it (checked here again, whoever built the list), with a uid
  precondition (a same-named object made since the list is not this one) and propagation
  Background, in reverse apply order, after every apply succeeded.
* ``dry_run`` sends no request: the results say what would be done.
* Failures are results, not exceptions: one object's error never hides another's outcome.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from podling.api import meta
from podling.api.resources import Resource
from podling.client.http import ApiClient, ApiError, TransportError, is_already_exists, is_conflict, is_not_found
from podling.gitops.plan import (
    APP_LABEL,
    Key,
    ObjectPlan,
    apply_order,
    desired_object,
    ignored_pointers,
    key_of,
    last_applied,
    owned_by,
    plan_object,
    prune_order,
    resource_of,
)

Obj = dict[str, Any]
ResultAction = Literal["created", "updated", "unchanged", "pruned", "failed"]

MAX_IN_FLIGHT = 32
_ATTEMPTS = 5  # writes per object: the first and the retries after a conflict, or a create that met an object
_DRY_RUN = "dry run: nothing written"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ObjectResult:
    """The outcome for one object: what was done (or, in a dry run, would be).

    ``plan`` is the plan that was carried out (its ``diff`` shows the change); ``live`` is the
    object as the server returned it after the write, or as it was when nothing was written.
    """

    key: Key
    action: ResultAction
    message: str = ""
    plan: ObjectPlan | None = None
    live: Obj | None = None


async def fetch_live(*, api: ApiClient, app: str, resources: Iterable[Resource]) -> dict[Key, Obj]:
    """Every object labelled ``podling.io/app=APP`` of the listable ``resources``, by key.

    One list per resource, all namespaces, all at once. Errors (ApiError, TransportError)
    propagate: planning against a partial view of the cluster could create duplicates.
    """
    selector = f"{APP_LABEL}={app}"
    listable = [resource for resource in resources if "list" in resource.verbs]
    answers = await asyncio.gather(*(api.list(resource, label_selector=selector) for resource in listable))
    return {key_of(obj): obj for items, _, _ in answers for obj in items}


async def apply(
    *,
    api: ApiClient,
    app: str,
    objects: Sequence[Mapping[str, Any]],
    live: Mapping[Key, Mapping[str, Any]],
    prune: Sequence[Mapping[str, Any]],
    dry_run: bool,
    namespace: str = "",
    ignore_differences: Sequence[Mapping[str, Any]] = (),
    on_progress: Callable[[ObjectResult], None] | None = None,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> list[ObjectResult]:
    """Sync ``objects`` (manifests from git) for Application ``app``; one result per object and prune.

    ``live`` is :func:`fetch_live`'s map; ``prune`` the live objects to delete (from
    :func:`podling.gitops.plan.plan_prune`); ``namespace`` the destination of namespaced
    objects that name none; ``ignore_differences`` the Application's rules (kind, optional
    group, namespace, name, and jsonPointers). ``on_progress`` hears each result as it
    happens. Results come in the order objects were handled: unchanged ones first.
    """
    writer = _Writer(api=api, app=app, dry_run=dry_run, semaphore=asyncio.Semaphore(max_in_flight),
                     on_progress=on_progress)
    steps: dict[tuple[int, int], list[_Job]] = {}
    for obj in objects:
        try:
            desired = desired_object(obj, app=app, namespace=namespace)
            job = _Job(desired=desired, resource=resource_of(desired), order=apply_order(desired),
                       ignore=ignored_pointers(desired, ignore_differences))
            job.plan = _plan(job, live.get(job.key))
        except ValueError as err:
            writer.report(ObjectResult(key=key_of(obj), action="failed", message=str(err)))
            continue
        if job.plan.action == "unchanged":
            writer.report(ObjectResult(key=job.key, action="unchanged", plan=job.plan, live=_copy(live[job.key])))
        else:
            steps.setdefault(job.order[:2], []).append(job)

    failed_wave: int | None = None
    for (wave, _), jobs in sorted(steps.items()):
        jobs.sort(key=lambda job: job.order)
        if failed_wave is not None and wave > failed_wave:
            for job in jobs:
                writer.report(ObjectResult(key=job.key, action="failed", plan=job.plan,
                                           message=f"not applied: sync wave {failed_wave} failed"))
            continue
        results = await asyncio.gather(*(writer.write(job) for job in jobs))
        if failed_wave is None and any(result.action == "failed" for result in results):
            failed_wave = wave

    if any(result.action == "failed" for result in writer.results):
        for obj in prune:
            writer.report(ObjectResult(key=key_of(obj), action="failed", message="not pruned: the sync failed"))
        return writer.results
    ordered = sorted(prune, key=prune_order, reverse=True)
    for _, group in itertools.groupby(ordered, key=lambda obj: prune_order(obj)[:2]):
        await asyncio.gather(*(writer.delete(obj) for obj in group))
    return writer.results


@dataclasses.dataclass(slots=True, kw_only=True)
class _Job:
    desired: Obj
    resource: Resource
    ignore: list[str]
    order: tuple[int, int, str, str, str]
    plan: ObjectPlan | None = None

    @property
    def key(self) -> Key:
        return key_of(self.desired)


def _plan(job: _Job, live: Mapping[str, Any] | None) -> ObjectPlan:
    recorded = last_applied(live) if live is not None else None
    return plan_object(desired=job.desired, live=live, last_applied=recorded, ignore=job.ignore)


def _copy(obj: Mapping[str, Any]) -> Obj:
    return dict(obj)


def _failure(err: ApiError | TransportError) -> str:
    if isinstance(err, ApiError):
        return f"{err.code} {err.reason}: {err.message}"
    return f"cannot reach the API server: {err}"


def _retried(conflicts: int) -> str:
    return f"after {conflicts} conflict{'s' if conflicts != 1 else ''}" if conflicts else ""


class _Writer:
    """Carries out plans: the requests, their retries and the results, for one apply call."""

    def __init__(self, *, api: ApiClient, app: str, dry_run: bool, semaphore: asyncio.Semaphore,
                 on_progress: Callable[[ObjectResult], None] | None) -> None:
        self.api = api
        self.app = app
        self.dry_run = dry_run
        self.semaphore = semaphore
        self.on_progress = on_progress
        self.results: list[ObjectResult] = []

    def report(self, result: ObjectResult) -> ObjectResult:
        self.results.append(result)
        if self.on_progress is not None:
            self.on_progress(result)
        return result

    async def write(self, job: _Job) -> ObjectResult:
        assert job.plan is not None
        if self.dry_run:
            action: ResultAction = "created" if job.plan.action == "create" else "updated"
            return self.report(ObjectResult(key=job.key, action=action, message=_DRY_RUN, plan=job.plan))
        async with self.semaphore:
            try:
                result = await self._write(job)
            except (ApiError, TransportError) as err:
                result = ObjectResult(key=job.key, action="failed", message=_failure(err), plan=job.plan)
            except ValueError as err:  # a fresh read that cannot be planned
                result = ObjectResult(key=job.key, action="failed", message=str(err), plan=job.plan)
        return self.report(result)

    async def _write(self, job: _Job) -> ObjectResult:
        """Create or patch; on a conflict or a surprise (exists, gone) read again, plan again, retry.

        At most ``_ATTEMPTS`` writes; the last error is raised when none succeeded.
        """
        plan, conflicts = job.plan, 0
        assert plan is not None
        namespace, name = job.key.namespace or None, job.key.name
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                if plan.action == "create":
                    written = await self.api.create(job.resource, plan.patch or {}, namespace=namespace)
                    return ObjectResult(key=job.key, action="created", plan=plan, live=written)
                written = await self.api.patch(job.resource, namespace=namespace, name=name,
                                               body=plan.patch or {}, patch_type="strategic")
                return ObjectResult(key=job.key, action="updated", plan=plan, live=written,
                                    message=_retried(conflicts))
            except ApiError as err:
                if attempt == _ATTEMPTS:
                    raise
                if is_already_exists(err):
                    current: Obj | None = await self.api.get(job.resource, namespace=namespace, name=name)
                    owner = meta.labels(current).get(APP_LABEL)
                    if owner not in (None, self.app):
                        return ObjectResult(key=job.key, action="failed", plan=plan,
                                            message=f"exists and belongs to application {owner!r}; not taken over")
                elif is_not_found(err) and plan.action == "update":
                    current = None  # deleted since it was listed
                elif is_conflict(err):
                    conflicts += 1
                    current = await self.api.get(job.resource, namespace=namespace, name=name)
                else:
                    raise
            job.plan = plan = _plan(job, current)
            if plan.action == "unchanged":
                return ObjectResult(key=job.key, action="unchanged", plan=plan, live=current,
                                    message=_retried(conflicts))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def delete(self, obj: Mapping[str, Any]) -> ObjectResult:
        key = key_of(obj)
        if not owned_by(obj, app=self.app):
            return self.report(ObjectResult(key=key, action="failed",
                                            message=f"not pruned: no proof that application {self.app!r} created it"))
        if self.dry_run:
            return self.report(ObjectResult(key=key, action="pruned", message=_DRY_RUN, live=_copy(obj)))
        uid = (obj.get("metadata") or {}).get("uid")
        async with self.semaphore:
            try:
                gone = await self.api.delete(resource_of(obj), namespace=key.namespace or None, name=key.name,
                                             propagation_policy="Background",
                                             preconditions={"uid": uid} if uid else None)
                result = ObjectResult(key=key, action="pruned", live=gone)
            except ApiError as err:
                result = (ObjectResult(key=key, action="pruned", message="already gone") if is_not_found(err)
                          else ObjectResult(key=key, action="failed", message=_failure(err)))
            except TransportError as err:
                result = ObjectResult(key=key, action="failed", message=_failure(err))
        return self.report(result)
