"""ReplicaSets and ReplicationControllers: keep ``spec.replicas`` pods that match the selector.

One implementation serves two kinds, as Kubernetes' replication manager wraps its ReplicaSet
controller: :class:`ReplicaSetController` (apps/v1, a ``LabelSelector``) and
:class:`ReplicationControllerController` (core/v1, a plain map; an empty map selects nothing).

Invariants:

* Level-triggered and idempotent. ``reconcile(key)`` reads the owner and the pods of its
  namespace from the shared informers, claims pods, creates or deletes the difference to
  ``spec.replicas`` and writes the status; run twice in a row, the second run writes nothing.
* The pods counted are the active ones (no deletionTimestamp, phase neither Succeeded nor
  Failed) whose ``controller: true`` owner reference names the owner's uid. Claiming adopts
  active orphans that match the selector (never while the owner is being deleted, and only
  after a live read shows the owner still exists) and releases owned pods that no longer match.
* Expectations (client-go's ControllerExpectations): before creating N pods the owner expects
  N adds, before deleting pods it expects exactly those pods to go. Until the informer has
  shown them all, or five minutes have passed (an event lost), the owner's pods are not
  counted again, so nothing is created or deleted twice while the cache catches up. The
  status is written all the same.
* The status counts replicas, fullyLabeledReplicas (all template labels), readyReplicas and
  availableReplicas (Ready for ``minReadySeconds``); while a ready pod waits to turn available
  the key is requeued for that moment. An owner whose selector does not match its own
  template's labels gets its status but no pods (every pod made would go uncounted).
* Creates go in slow-start batches of 1, 2, 4, ... and stop after the first batch with a
  failure, so a refusing quota or admission costs one request, not ``replicas``. At most 500
  pods are created or deleted per reconcile (Kubernetes' burstReplicas).
* Scaling down removes first: unscheduled before scheduled, Pending before Unknown before
  Running, not ready before ready, lower ``controller.kubernetes.io/pod-deletion-cost`` first,
  more pods of the same owner's family on its node first, ready for less time first, more
  restarts first, newer first (Kubernetes' ActivePodsWithRanks, without the logarithmic buckets).
* Writes are optimistic. Adoption and release are merge patches of ``ownerReferences`` that
  carry the pod's resourceVersion; the status goes through the status subresource with the
  owner's resourceVersion, and only when it changed. An object this controller wrote is not
  read again from the cache until the cache shows that write (its watch event requeues the
  key), so the controller does not act on its own stale past; anyone else's concurrent write
  earns a 409 and a retry through the work queue, never an overwrite.
* Events (``SuccessfulCreate``, ``FailedCreate``, ``SuccessfulDelete``, ``FailedDelete``, worded
  as Kubernetes words them) are recorded in the background: a reconcile never waits for them.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal

from podling.api import meta, selectors
from podling.api.resources import Resource
from podling.client.http import ApiError, is_not_found
from podling.client.informer import Informer
from podling.client.workqueue import run_workers
from podling.controllers.base import Context, OwnWrites, remove_condition, resource

log = logging.getLogger("podling.controllers.replicaset")

Obj = dict[str, Any]


PODS = resource("", "v1", "pods")
REPLICA_SETS = resource("apps", "v1", "replicasets")
REPLICATION_CONTROLLERS = resource("", "v1", "replicationcontrollers")

BURST_REPLICAS = 500  # pods created or deleted by one reconcile at most
SLOW_START_INITIAL_BATCH = 1
EXPECTATIONS_TIMEOUT = 300.0  # seconds: after this, unmet expectations are given up (an event was lost)
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_AVAILABILITY_SLACK = 0.05  # seconds past the moment a pod turns available before looking again
_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


# ---- pods (pure) ---------------------------------------------------------------------------


def _timestamp(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 time; None when missing or unreadable."""
    if not text:
        return None
    try:
        return meta.parse_time(text).timestamp()
    except ValueError:
        return None


def is_active(pod: Obj) -> bool:
    """Counted towards replicas: not terminating, not finished."""
    status = pod.get("status") or {}
    return status.get("phase") not in ("Succeeded", "Failed") and not (pod.get("metadata") or {}).get(
        "deletionTimestamp")


def ready_condition(pod: Obj) -> Obj | None:
    return meta.get_condition(pod.get("status"), "Ready")


def is_ready(pod: Obj) -> bool:
    condition = ready_condition(pod)
    return condition is not None and condition.get("status") == "True"


def available_at(pod: Obj, *, min_ready_seconds: int) -> float | None:
    """When a ready pod counts as available (epoch seconds; 0 for at once); None if not ready.

    Available means ready for ``minReadySeconds``, measured from the Ready condition's
    lastTransitionTime (a ready pod without one is available at once, as in Kubernetes).
    """
    condition = ready_condition(pod)
    if condition is None or condition.get("status") != "True":
        return None
    if min_ready_seconds <= 0:
        return 0.0
    since = _timestamp(condition.get("lastTransitionTime"))
    return 0.0 if since is None else since + min_ready_seconds


def is_available(pod: Obj, *, min_ready_seconds: int, now: float) -> bool:
    at = available_at(pod, min_ready_seconds=min_ready_seconds)
    return at is not None and (at == 0.0 or at < now)


def _deletion_cost(pod: Obj) -> int:
    try:
        return int(meta.annotations(pod).get(DELETION_COST, "0"))
    except ValueError:
        return 0


def _restarts(pod: Obj) -> int:
    return max((s.get("restartCount") or 0 for s in (pod.get("status") or {}).get("containerStatuses") or ()),
               default=0)


def _zero_first_newest_first(moment: float | None) -> tuple[int, float]:
    """Sort key: a missing time first, then later times before earlier ones (Kubernetes' afterOrZero)."""
    return (0, 0.0) if moment is None else (1, -moment)


def deletion_order(pods: Sequence[Obj], *, related: Iterable[Obj] = ()) -> list[Obj]:
    """``pods`` in the order they should be deleted, the first to go first.

    ``related`` are the active and inactive pods of the owner's whole family (its own, and
    those of other ReplicaSets of the same Deployment): a pod whose node runs more of them
    goes first, so scaling down spreads the family out.
    """
    on_node: dict[str, int] = {}
    for pod in related:
        if is_active(pod):
            node = (pod.get("spec") or {}).get("nodeName") or ""
            on_node[node] = on_node.get(node, 0) + 1

    def key(pod: Obj) -> tuple[Any, ...]:
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        node = spec.get("nodeName") or ""
        ready = is_ready(pod)
        ready_since = _timestamp((ready_condition(pod) or {}).get("lastTransitionTime")) if ready else None
        return (
            1 if node else 0,
            _PHASE_ORDER.get(status.get("phase") or "", 0),
            1 if ready else 0,
            _deletion_cost(pod),
            -on_node.get(node, 0),
            _zero_first_newest_first(ready_since) if ready else (0, 0.0),
            -_restarts(pod),
            _zero_first_newest_first(_timestamp((pod.get("metadata") or {}).get("creationTimestamp"))),
        )

    return sorted(pods, key=key)


# ---- status (pure) -------------------------------------------------------------------------


def set_condition(status: Obj, condition: Obj) -> None:
    """Kubernetes' SetCondition for ReplicaSets: same status and reason keep the old condition."""
    conditions = status.get("conditions") or []
    current = next((c for c in conditions if c.get("type") == condition["type"]), None)
    if current is not None and current.get("status") == condition["status"] \
            and current.get("reason") == condition.get("reason"):
        return
    status["conditions"] = [c for c in conditions if c.get("type") != condition["type"]] + [condition]


def calculate_status(owner: Obj, pods: Sequence[Obj], *, now: float,
                     failure: tuple[str, str] | None) -> Obj:
    """The owner's status for its claimed active ``pods``; ``failure`` is (reason, message) of a
    failed create or delete, which sets the ReplicaFailure condition (cleared when None).

    Zero counts are left out, as Kubernetes' omitempty leaves them out (``replicas`` stays).
    """
    spec = owner.get("spec") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    status = copy.deepcopy(owner.get("status") or {})
    counts = {
        "replicas": len(pods),
        "fullyLabeledReplicas": sum(all(meta.labels(p).get(k) == v for k, v in template_labels.items())
                                    for p in pods),
        "readyReplicas": sum(is_ready(p) for p in pods),
        "availableReplicas": sum(is_available(p, min_ready_seconds=min_ready, now=now) for p in pods),
        "observedGeneration": (owner.get("metadata") or {}).get("generation") or 0,
    }
    for field, value in counts.items():
        if value or field == "replicas":
            status[field] = value
        else:
            status.pop(field, None)
    if failure is not None:
        if meta.get_condition(status, "ReplicaFailure") is None:
            reason, message = failure
            set_condition(status, {"type": "ReplicaFailure", "status": "True", "reason": reason,
                                   "message": message, "lastTransitionTime": meta.now_rfc3339()})
    else:
        remove_condition(status, "ReplicaFailure")
    return status


def next_availability(owner: Obj, pods: Sequence[Obj], *, now: float) -> float | None:
    """Seconds until the next ready pod turns available (minReadySeconds), if one is waiting."""
    min_ready = int((owner.get("spec") or {}).get("minReadySeconds") or 0)
    if min_ready <= 0:
        return None
    waits = [at - now for p in pods
             if (at := available_at(p, min_ready_seconds=min_ready)) is not None and at != 0.0 and at >= now]
    return min(waits) + _AVAILABILITY_SLACK if waits else None


# ---- expectations and batches --------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Expected:
    adds: int
    deletes: set[str]
    at: float


class Expectations:
    """Creates and deletes an owner waits to see in the informer (client-go's expectations,
    UID-tracking for deletes: a pod key is crossed off once, however often it is seen going)."""

    def __init__(self, *, timeout: float = EXPECTATIONS_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:  # clock: swapped only by tests
        self.timeout = timeout
        self._clock = clock
        self._expected: dict[str, _Expected] = {}

    def satisfied(self, key: str) -> bool:
        """True when the owner may count its pods again: nothing pending, or waited too long."""
        expected = self._expected.get(key)
        if expected is None or (expected.adds <= 0 and not expected.deletes):
            return True
        if self._clock() - expected.at > self.timeout:
            log.info("expectations of %s timed out (%d adds, %d deletes unseen)", key, expected.adds,
                     len(expected.deletes))
            return True
        return False

    def expect_creations(self, key: str, count: int) -> None:
        self._expected[key] = _Expected(adds=count, deletes=set(), at=self._clock())

    def expect_deletions(self, key: str, pod_keys: Iterable[str]) -> None:
        self._expected[key] = _Expected(adds=0, deletes=set(pod_keys), at=self._clock())

    def creation_observed(self, key: str) -> None:
        if (expected := self._expected.get(key)) is not None:
            expected.adds -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        if (expected := self._expected.get(key)) is not None:
            expected.deletes.discard(pod_key)

    def forget(self, key: str) -> None:
        self._expected.pop(key, None)


async def slow_start_batch(count: int, *, initial: int, call: Callable[[], Awaitable[None]]
                           ) -> tuple[int, Exception | None]:
    """Call ``call`` ``count`` times in concurrent batches of ``initial``, then twice as many;
    stop after the first batch in which a call failed. (successes, the first error or None)."""
    successes, remaining = 0, count
    batch = min(remaining, initial)
    while batch > 0:
        results = await asyncio.gather(*(call() for _ in range(batch)), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancelled: not a failed create
        errors = [r for r in results if isinstance(r, Exception)]
        successes += batch - len(errors)
        if errors:
            return successes, errors[0]
        remaining -= batch
        batch = min(2 * batch, remaining)
    return successes, None


# ---- the controller ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Kind:
    name: str  # the controller's name: its queue, metrics and index names
    resource: Resource
    selector: Callable[[Obj], selectors.LabelSelector]  # raises selectors.ParseError


def _label_selector(owner: Obj) -> selectors.LabelSelector:
    selector = selectors.from_label_selector((owner.get("spec") or {}).get("selector"))
    # apps/v1 validation refuses an empty selector; one that slipped through selects nothing here.
    return selectors.LabelSelector(matches_nothing=True) if selector.empty else selector


def _map_selector(owner: Obj) -> selectors.LabelSelector:
    selector = (owner.get("spec") or {}).get("selector") or {}
    return selectors.from_map(selector) if selector else selectors.LabelSelector(matches_nothing=True)


def _namespace_index(obj: Obj) -> list[str]:
    return [meta.namespace(obj)]


def _controller_uid_index(obj: Obj) -> list[str]:
    ref = meta.controller_of(obj)
    return [ref["uid"]] if ref and ref.get("uid") else []


def _namespace_terminating(err: Exception) -> bool:
    """A create refused because the namespace is being deleted: nothing to do, no event."""
    if not isinstance(err, ApiError) or err.code != 403:
        return False
    causes = (err.status.get("details") or {}).get("causes") or ()
    return any(c.get("type") == "NamespaceTerminating" for c in causes) or "being terminated" in err.message


def _error_text(err: Exception) -> str:
    return err.message if isinstance(err, ApiError) and err.message else str(err)


class _ReplicaController:
    """The reconcile shared by both kinds; see the module docstring."""

    kind: _Kind

    def __init__(self, context: Context) -> None:
        self.context = context
        self.api = context.api
        self.recorder = context.recorder
        self.queue = context.metrics.queue(self.kind.name)
        self.expectations = Expectations()
        self.writes = OwnWrites()
        self._events: set[asyncio.Task[None]] = set()  # events being recorded in the background
        self._namespace_index = f"{self.kind.name}/namespace"
        self._controller_index = f"{self.kind.name}/controller-uid"
        self.owners: Informer = context.informers.informer(self.kind.resource)
        self.pods: Informer = context.informers.informer(PODS)
        self.owners.add_index(self._namespace_index, _namespace_index)
        self.owners.add_index(self._controller_index, _controller_uid_index)
        self.pods.add_index(self._namespace_index, _namespace_index)
        self.pods.add_index(self._controller_index, _controller_uid_index)
        self.owners.add_handlers(on_add=self._owner_changed, on_update=lambda old, new: self._owner_changed(new),
                                 on_delete=self._owner_deleted)
        self.pods.add_handlers(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    async def run(self, *, workers: int) -> None:
        try:
            await run_workers(self.queue, self.context.reconciler(self.kind.name, self.reconcile), workers=workers)
        finally:
            self.queue.shutdown()
            for task in self._events:
                task.cancel()

    # ---- event handlers: they only enqueue keys and count what expectations wait for --------

    def _owner_changed(self, owner: Obj) -> None:
        self.queue.add(meta.object_key(owner))

    def _owner_deleted(self, owner: Obj) -> None:
        key = meta.object_key(owner)
        self.expectations.forget(key)
        self.writes.forget(owner)
        self.queue.add(key)

    def _owner_of(self, pod: Obj) -> Obj | None:
        """The owner in the cache that the pod's controller reference names (uid included)."""
        ref = meta.controller_of(pod)
        if ref is None or ref.get("kind") != self.kind.resource.kind:
            return None
        owner = self.owners.get(f"{meta.namespace(pod)}/{ref.get('name')}")
        if owner is None or (owner.get("metadata") or {}).get("uid") != ref.get("uid"):
            return None
        return owner

    def _enqueue_matching(self, pod: Obj) -> None:
        """An orphan changed: every owner in its namespace that selects it may adopt it."""
        for owner in self.owners.by_index(self._namespace_index, meta.namespace(pod)):
            try:
                if self.kind.selector(owner).matches(meta.labels(pod)):
                    self.queue.add(meta.object_key(owner))
            except selectors.ParseError:
                continue

    def _pod_added(self, pod: Obj) -> None:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            self._pod_deleted(pod)  # a restarted informer can first see a pod already going
            return
        if meta.controller_of(pod) is not None:
            if (owner := self._owner_of(pod)) is not None:
                key = meta.object_key(owner)
                self.expectations.creation_observed(key)
                self.queue.add(key)
            return
        self._enqueue_matching(pod)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if (new.get("metadata") or {}).get("deletionTimestamp"):
            self._pod_deleted(new)
            if meta.labels(old) != meta.labels(new):
                self._pod_deleted(old)
            return
        old_ref, new_ref = meta.controller_of(old), meta.controller_of(new)
        if old_ref != new_ref:
            if old_ref is None:
                self._enqueue_matching(old)  # adopted: every owner that could have adopted it looks again
            elif (owner := self._owner_of(old)) is not None:
                self.queue.add(meta.object_key(owner))
        if new_ref is not None:
            if (owner := self._owner_of(new)) is not None:
                self.queue.add(meta.object_key(owner))
            return
        if meta.labels(old) != meta.labels(new) or old_ref != new_ref:
            self._enqueue_matching(new)

    def _pod_deleted(self, pod: Obj) -> None:
        self.writes.forget(pod)
        if (owner := self._owner_of(pod)) is not None:
            key = meta.object_key(owner)
            self.expectations.deletion_observed(key, meta.object_key(pod))
            self.queue.add(key)

    # ---- reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        try:
            await self._reconcile(key)
        except ApiError as err:
            if not is_not_found(err):
                raise
            # The owner was deleted under us: its delete event requeues the key.
            log.debug("%s %s: %s", self.kind.resource.kind, key, err)

    async def _reconcile(self, key: str) -> None:
        owner = self.owners.get(key)
        if owner is None:
            self.expectations.forget(key)
            return
        if self.writes.behind(owner):
            return  # the event of our own last write requeues the key
        try:
            selector = self.kind.selector(owner)
        except selectors.ParseError as err:
            log.warning("%s %s: invalid selector, skipped: %s", self.kind.resource.kind, key, err)
            return
        namespace = meta.namespace(owner)
        active = [p for p in self.pods.by_index(self._namespace_index, namespace) if is_active(p)]
        uid = (owner.get("metadata") or {}).get("uid")
        if any(self.writes.behind(p) for p in active if (meta.controller_of(p) or {}).get("uid") in (None, uid)):
            return  # a pod adopted or released: its event requeues every owner it concerns
        pods = await self._claim(owner, selector, active)
        needs_sync = self.expectations.satisfied(key)
        template_labels = ((((owner.get("spec") or {}).get("template") or {}).get("metadata") or {})
                           .get("labels") or {})
        if needs_sync and not selector.matches(template_labels):
            # The API should have refused it: every pod created would be one more it does not count.
            log.warning("%s %s: the selector does not match the template's labels; no pods are created or deleted",
                        self.kind.resource.kind, key)
            needs_sync = False
        failure: tuple[str, str] | None = None
        error: Exception | None = None
        if needs_sync and not (owner.get("metadata") or {}).get("deletionTimestamp"):
            diff = len(pods) - self._replicas(owner)
            error = await self._manage(key, owner, pods, diff)
            if error is not None:
                failure = ("FailedCreate" if diff < 0 else "FailedDelete", _error_text(error))
        now = time.time()
        status = calculate_status(owner, pods, now=now, failure=failure)
        if status != (owner.get("status") or {}):
            self.writes.wrote(owner, await self.api.update_status(self.kind.resource, {**owner, "status": status}))
        if error is not None:
            raise error
        if (wait := next_availability(owner, pods, now=now)) is not None:
            self.queue.add_after(key, wait)

    @staticmethod
    def _replicas(owner: Obj) -> int:
        replicas = (owner.get("spec") or {}).get("replicas")
        return 1 if replicas is None else int(replicas)

    async def _claim(self, owner: Obj, selector: selectors.LabelSelector, pods: Sequence[Obj]) -> list[Obj]:
        """The owner's pods after adopting matching orphans and releasing owned pods that left."""
        uid = (owner.get("metadata") or {}).get("uid")
        deleting = bool((owner.get("metadata") or {}).get("deletionTimestamp"))
        claimed: list[Obj] = []
        may_adopt: bool | None = None  # checked with a live read, once, when an orphan is found
        for pod in pods:
            ref = meta.controller_of(pod)
            matches = selector.matches(meta.labels(pod))
            if ref is not None:
                if ref.get("uid") != uid:
                    continue
                if matches:
                    claimed.append(pod)
                elif not deleting:
                    await self._set_owner_references(pod, [r for r in meta.owner_references(pod)
                                                           if r.get("uid") != uid])
                continue
            if deleting or not matches:
                continue
            if may_adopt is None:
                may_adopt = await self._still_there(owner)
            if not may_adopt:
                continue
            adopted = await self._set_owner_references(pod, [*meta.owner_references(pod), meta.controller_ref(owner)])
            if adopted is not None:
                claimed.append(adopted)
        return claimed

    async def _still_there(self, owner: Obj) -> bool:
        """A live read (not the cache): the owner exists with the same uid and is not being deleted."""
        try:
            live = await self.api.get(self.kind.resource, namespace=meta.namespace(owner), name=meta.name(owner))
        except ApiError as err:
            if is_not_found(err):
                return False
            raise
        metadata = live.get("metadata") or {}
        return metadata.get("uid") == (owner.get("metadata") or {}).get("uid") and not metadata.get(
            "deletionTimestamp")

    async def _set_owner_references(self, pod: Obj, references: list[Obj]) -> Obj | None:
        """Patch the pod's ownerReferences, if the pod is still as cached; None if it is gone."""
        body = {"metadata": {"ownerReferences": references or None,
                             "resourceVersion": (pod.get("metadata") or {}).get("resourceVersion")}}
        try:
            patched = await self.api.patch(PODS, namespace=meta.namespace(pod), name=meta.name(pod), body=body)
        except ApiError as err:
            if is_not_found(err):
                return None
            raise
        self.writes.wrote(pod, patched)
        return patched

    async def _manage(self, key: str, owner: Obj, pods: Sequence[Obj], diff: int) -> Exception | None:
        """Create or delete the difference; the first error (after recording it), or None."""
        if diff < 0:
            count = min(-diff, BURST_REPLICAS)
            self.expectations.expect_creations(key, count)
            created, error = await slow_start_batch(count, initial=SLOW_START_INITIAL_BATCH,
                                                    call=lambda: self._create_pod(owner))
            for _ in range(count - created):
                self.expectations.creation_observed(key)  # never to be seen by the informer
            return error
        if diff > 0:
            victims = deletion_order(pods, related=self._related_pods(owner))[:min(diff, BURST_REPLICAS)]
            self.expectations.expect_deletions(key, [meta.object_key(p) for p in victims])
            results = await asyncio.gather(*(self._delete_pod(key, owner, p) for p in victims),
                                           return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, Exception):
                    raise result
            return next((r for r in results if isinstance(r, Exception)), None)
        return None

    def _related_pods(self, owner: Obj) -> list[Obj]:
        """Pods of the owner's family: of every owner of this kind with the same controller."""
        family = [owner]
        if (ref := meta.controller_of(owner)) is not None and ref.get("uid"):
            family = self.owners.by_index(self._controller_index, ref["uid"]) or family
        return [pod for member in family
                for pod in self.pods.by_index(self._controller_index, (member.get("metadata") or {}).get("uid", ""))]

    async def _create_pod(self, owner: Obj) -> None:
        template = (owner.get("spec") or {}).get("template") or {}
        template_meta = template.get("metadata") or {}
        metadata: Obj = {"generateName": f"{meta.name(owner)}-", "namespace": meta.namespace(owner),
                         "labels": dict(template_meta.get("labels") or {}),
                         "ownerReferences": [meta.controller_ref(owner)]}
        for field in ("annotations", "finalizers"):
            if template_meta.get(field):
                metadata[field] = copy.deepcopy(template_meta[field])
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
               "spec": copy.deepcopy(template.get("spec") or {})}
        try:
            created = await self.api.create(PODS, pod)
        except Exception as err:
            if _namespace_terminating(err):
                return
            self._event(owner, type="Warning", reason="FailedCreate", message=f"Error creating: {_error_text(err)}")
            raise
        self._event(owner, type="Normal", reason="SuccessfulCreate", message=f"Created pod: {meta.name(created)}")

    async def _delete_pod(self, key: str, owner: Obj, pod: Obj) -> None:
        try:
            await self.api.delete(PODS, namespace=meta.namespace(pod), name=meta.name(pod))
        except Exception as err:
            self.expectations.deletion_observed(key, meta.object_key(pod))  # the informer will not see it go
            if is_not_found(err):
                return
            self._event(owner, type="Warning", reason="FailedDelete", message=f"Error deleting: {_error_text(err)}")
            raise
        self._event(owner, type="Normal", reason="SuccessfulDelete", message=f"Deleted pod: {meta.name(pod)}")

    def _event(self, obj: Obj, *, type: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        task = asyncio.get_running_loop().create_task(
            self.recorder.event(obj, type=type, reason=reason, message=message))
        self._events.add(task)
        task.add_done_callback(self._events.discard)


class ReplicaSetController(_ReplicaController):
    kind = _Kind(name="replicaset", resource=REPLICA_SETS, selector=_label_selector)


class ReplicationControllerController(_ReplicaController):
    kind = _Kind(name="replicationcontroller", resource=REPLICATION_CONTROLLERS, selector=_map_selector)

