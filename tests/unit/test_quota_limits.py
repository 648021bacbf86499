"""Quota arithmetic, LimitRange defaulting and bounds, and both admission plugins on a real store.

The admission tests run the API server's real chain and storage over a SQLite store, with
creates racing in separate tasks as concurrent requests do.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from podling.api import errors, quota
from podling.api.quantity import parse_quantity
from podling.api.resources import Resource, find
from podling.apiserver.admission import default_chain
from podling.apiserver.limitranger import (claim_violations, default_limit_range, pod_violations, set_pod_defaults,
                                           validate_limit_range)
from podling.apiserver.objectcache import Caches
from podling.apiserver.storage import Storage
from podling.store.sqlite import SqliteStore


def resource(plural: str, group: str = "") -> Resource:
    found = find(group=group, version="v1", plural=plural)
    assert found is not None
    return found


PODS, SERVICES, CLAIMS = resource("pods"), resource("services"), resource("persistentvolumeclaims")


def q(text: str | int) -> Any:
    return parse_quantity(text)


def container(name: str, requests: dict | None = None, limits: dict | None = None, **extra: Any) -> dict:
    resources = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
    return {"name": name, "image": "busybox", "resources": resources, **extra}


def pod(*containers: dict, init: tuple[dict, ...] = (), name: str = "p", **extra: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **extra.pop("metadata", {})},
            "spec": {"containers": list(containers), "initContainers": list(init)}, **extra}


# ---- usage ----------------------------------------------------------------------------------------


def test_pod_usage_sums_containers_and_takes_init_containers_at_their_peak() -> None:
    spec_pod = pod(container("a", {"cpu": "100m", "memory": "64Mi"}, {"cpu": "200m"}),
                   container("b", {"cpu": "150m"}, {"memory": "1Gi"}),
                   init=(container("setup", {"cpu": "500m", "nvidia.com/gpu": "1"}),))
    assert quota.usage(PODS, spec_pod) == {
        "count/pods": q(1), "pods": q(1),
        "cpu": q("500m"), "requests.cpu": q("500m"), "limits.cpu": q("200m"),
        "memory": q("64Mi"), "requests.memory": q("64Mi"), "limits.memory": q("1Gi"),
        "requests.nvidia.com/gpu": q(1),
    }


def test_sidecar_init_containers_run_alongside_and_add_up() -> None:
    spec = pod(container("app", {"cpu": "1"}),
               init=(container("proxy", {"cpu": "200m"}, restartPolicy="Always"),
                     container("migrate", {"cpu": "1"})))["spec"]
    # the app and the proxy run together (1.2); migrate runs beside the proxy only (1.2): 1.2 either way
    assert quota.pod_resources(spec, "requests") == {"cpu": q("1200m")}
    spec["initContainers"][1]["resources"]["requests"]["cpu"] = "2"
    assert quota.pod_resources(spec, "requests") == {"cpu": q("2200m")}


def test_terminal_and_expired_pods_hold_only_their_object_count() -> None:
    done = pod(container("a", {"cpu": "1"}), status={"phase": "Succeeded"})
    assert quota.usage(PODS, done) == {"count/pods": q(1)}
    leaving = pod(container("a", {"cpu": "1"}), metadata={"deletionTimestamp": "2020-01-01T00:00:00Z",
                                                          "deletionGracePeriodSeconds": 30})
    assert quota.usage(PODS, leaving) == {"count/pods": q(1)}
    terminating = pod(container("a", {"cpu": "1"}), metadata={"deletionTimestamp": "2999-01-01T00:00:00Z",
                                                              "deletionGracePeriodSeconds": 30})
    assert quota.usage(PODS, terminating)["pods"] == q(1)


def test_services_claims_and_other_kinds() -> None:
    balancer = {"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}}
    assert quota.usage(SERVICES, balancer) == {"count/services": q(1), "services": q(1),
                                               "services.loadbalancers": q(1), "services.nodeports": q(2)}
    claim = {"spec": {"resources": {"requests": {"storage": "5Gi"}}}}
    assert quota.usage(CLAIMS, claim) == {"count/persistentvolumeclaims": q(1), "persistentvolumeclaims": q(1),
                                          "requests.storage": q("5Gi")}
    assert quota.usage(resource("configmaps"), {}) == {"count/configmaps": q(1), "configmaps": q(1)}
    assert quota.usage(resource("deployments", "apps"), {}) == {"count/deployments.apps": q(1)}


@pytest.mark.parametrize(("name", "tracked"), [
    ("pods", ("", "pods")), ("requests.cpu", ("", "pods")), ("limits.memory", ("", "pods")), ("cpu", ("", "pods")),
    ("requests.storage", ("", "persistentvolumeclaims")), ("services.nodeports", ("", "services")),
    ("secrets", ("", "secrets")), ("count/deployments.apps", ("apps", "deployments")),
    ("count/pods", ("", "pods")), ("widgets", None),
])
def test_which_objects_a_quota_resource_counts(name: str, tracked: tuple[str, str] | None) -> None:
    assert quota.tracked_by(name) == tracked


# ---- messages -------------------------------------------------------------------------------------


def test_containers_must_state_what_a_compute_quota_limits() -> None:
    spec = pod(container("app", {"cpu": "1"}), container("log"), init=(container("init", limits={"cpu": "1"}),))["spec"]
    assert quota.missing_per_container(spec, ["pods", "requests.cpu", "limits.cpu", "limits.memory"]) == (
        "must specify limits.cpu for: app,log; limits.memory for: app,init,log; requests.cpu for: init,log")
    assert quota.missing_per_container(spec, ["pods", "requests.storage"]) == ""


def test_exceeded_message_is_kubernetes_masked_to_what_was_exceeded() -> None:
    message = quota.exceeded_message(
        quota="compute", requested={"pods": q(1), "requests.cpu": q("600m")},
        used={"pods": q(2), "requests.cpu": q("600m")}, hard={"pods": q(2), "requests.cpu": q(1)},
        exceeded=["pods", "requests.cpu"])
    assert message == ("exceeded quota: compute, requested: pods=1,requests.cpu=600m, "
                       "used: pods=2,requests.cpu=600m, limited: pods=2,requests.cpu=1")


# ---- LimitRanges ----------------------------------------------------------------------------------


def test_limit_range_items_are_defaulted_as_kubernetes_defaults_them() -> None:
    limit_range = {"spec": {"limits": [
        {"type": "Container", "max": {"cpu": "2", "memory": "1Gi"}, "min": {"memory": "16Mi"},
         "default": {"memory": "256Mi"}},
        {"type": "Pod", "max": {"cpu": "4"}},
    ]}}
    default_limit_range(limit_range)
    container_item, pod_item = limit_range["spec"]["limits"]
    assert container_item["default"] == {"cpu": "2", "memory": "256Mi"}  # max where no default
    assert container_item["defaultRequest"] == {"cpu": "2", "memory": "256Mi"}  # the default, else the min
    assert "default" not in pod_item


def test_invalid_limit_ranges_are_refused_with_kubernetes_messages() -> None:
    limit_range = {"spec": {"limits": [
        {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}, "maxLimitRequestRatio": {"memory": "500m"}},
        {"type": "Pod", "default": {"cpu": "1"}},
        {"type": "Node"},
        {"type": "Container", "max": {"cpu": "lots"}},
    ]}}
    messages = [(c["field"], c["message"]) for c in validate_limit_range(limit_range)]
    assert ("spec.limits[0].min[cpu]", 'Invalid value: "2": min value 2 is greater than max value 1') in messages
    assert ("spec.limits[0].maxLimitRequestRatio[memory]",
            'Invalid value: "500m": ratio 500m is less than 1') in messages
    assert ("spec.limits[1].default", "Forbidden: may not be specified when `type` is 'Pod'") in messages
    assert any(field == "spec.limits[2].type" and "Unsupported value" in m for field, m in messages)
    assert any(field == "spec.limits[3].max[cpu]" for field, _ in messages)


def test_pod_defaults_fill_only_what_is_missing_and_say_so() -> None:
    ranges = [{"spec": {"limits": [{"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"},
                                    "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}]}}]
    target = pod(container("app"), container("side", {"cpu": "50m"}), init=(container("init", limits={"cpu": "1"}),))
    assert set_pod_defaults(target, ranges)
    app, side = target["spec"]["containers"]
    assert app["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"cpu": "500m", "memory": "128Mi"}}
    assert side["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert target["spec"]["initContainers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "128Mi"}
    assert target["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == (
        "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app; "
        "memory request for container side; cpu, memory limit for container side; "
        "cpu, memory request for init container init; memory limit for init container init")
    assert not set_pod_defaults(target, ranges)  # nothing left to fill in


def test_pod_bounds_give_kubernetes_messages() -> None:
    ranges = [{"spec": {"limits": [
        {"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "64Mi"}, "maxLimitRequestRatio": {"cpu": "2"}},
        {"type": "Pod", "max": {"memory": "1Gi"}},
    ]}}]
    fits = pod(container("app", {"cpu": "500m", "memory": "128Mi"}, {"cpu": "1", "memory": "512Mi"}))
    assert pod_violations(fits, ranges) == []
    too_big = pod(container("app", {"cpu": "250m", "memory": "32Mi"}, {"cpu": "2", "memory": "2Gi"}))
    assert pod_violations(too_big, ranges) == [
        "minimum memory usage per Container is 64Mi, but request is 32Mi",
        "maximum cpu usage per Container is 1, but limit is 2",
        "cpu max limit to request ratio per Container is 2, but provided ratio is 8.000000",
        "maximum memory usage per Pod is 1Gi, but limit is 2Gi",
    ]
    unbounded = pod(container("app", {"memory": "128Mi"}))
    assert pod_violations(unbounded, ranges) == [
        "maximum cpu usage per Container is 1.  No limit is specified",
        "cpu max limit to request ratio per Container is 2, but no request is specified or request is 0",
        "maximum memory usage per Pod is 1Gi.  No limit is specified",
    ]


def test_claim_bounds() -> None:
    ranges = [{"spec": {"limits": [{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"},
                                    "max": {"storage": "10Gi"}}]}}]
    claim = {"spec": {"resources": {"requests": {"storage": "20Gi"}}}}
    assert claim_violations(claim, ranges) == ["maximum storage usage per PersistentVolumeClaim is 10Gi, "
                                               "but request is 20Gi"]
    claim["spec"]["resources"]["requests"]["storage"] = "512Mi"
    assert claim_violations(claim, ranges) == ["minimum storage usage per PersistentVolumeClaim is 1Gi, "
                                               "but request is 512Mi"]


# ---- admission on a real store --------------------------------------------------------------------

NS = "team"


class SlowCreates(SqliteStore):
    """A real SQLite store whose creates land 20 ms after they are asked for.

    Only for these tests: racing admissions then all decide before any of their objects is
    written, which is the race quota admission has to win without help from timing.
    """

    async def create(self, key: str, value: bytes) -> int:
        await asyncio.sleep(0.02)
        return await super().create(key, value)


@dataclasses.dataclass
class Server:
    """The API server's storage and admission chain, and the caches admission reads."""

    storage: Storage
    caches: Caches


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    store = await SlowCreates.open(path=str(tmp_path / "podling.db"))
    caches = Caches.over(store)
    await caches.start()
    chain = default_chain(store=store, caches=caches)
    await chain.start()
    storage = Storage(store=store, admission=chain)
    await storage.create(resource("namespaces"), namespace=None, obj={"metadata": {"name": NS}})
    try:
        yield Server(storage=storage, caches=caches)
    finally:
        await chain.stop()
        await caches.stop()
        await store.close()


async def settled(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the API server's caches did not follow the store within 2s")


async def create_quota(server: Server, hard: dict[str, str], name: str = "q") -> None:
    await server.storage.create(resource("resourcequotas"), namespace=NS,
                                obj={"metadata": {"name": name}, "spec": {"hard": hard}})
    await settled(lambda: server.caches.resource_quotas.get(NS, name) is not None)


async def create_pod(server: Server, name: str, *containers: dict, dry_run: bool = False) -> dict:
    """A pod create in a task of its own, as each request is."""
    obj, _ = await asyncio.create_task(server.storage.create(
        PODS, namespace=NS, obj=pod(*(containers or (container("app"),)), name=name), dry_run=dry_run))
    return obj


async def test_racing_creates_never_exceed_the_quota(server: Server) -> None:
    await create_quota(server, {"pods": "3"})
    results = await asyncio.gather(*(create_pod(server, f"p{i}") for i in range(12)),
                                   return_exceptions=True)
    created = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, errors.StatusError)]
    assert len(created) == 3 and len(refused) == 9
    assert {r.code for r in refused} == {403}
    assert all(r.message.endswith("is forbidden: exceeded quota: q, requested: pods=1, used: pods=3, limited: pods=3")
               for r in refused)


async def test_dry_runs_and_refused_creates_leave_nothing_reserved(server: Server) -> None:
    await create_quota(server, {"pods": "1"})
    await create_pod(server, "dry", dry_run=True)
    await create_pod(server, "real")
    with pytest.raises(errors.StatusError) as refused:
        await create_pod(server, "real")
    assert "exceeded quota" in refused.value.message  # quota is judged before the name is
    await server.storage.delete(PODS, namespace=NS, name="real", options={})
    await create_pod(server, "again")


async def test_compute_quota_needs_requests_and_counts_them(server: Server) -> None:
    await create_quota(server, {"requests.cpu": "1", "limits.memory": "1Gi"}, name="compute")
    with pytest.raises(errors.StatusError) as refused:
        await create_pod(server, "bare")
    assert refused.value.code == 403 and refused.value.message == (
        'pods "bare" is forbidden: failed quota: compute: must specify limits.memory for: app; '
        "requests.cpu for: app")
    sized = container("app", {"cpu": "600m"}, {"memory": "256Mi"})
    await create_pod(server, "first", sized)
    with pytest.raises(errors.StatusError) as refused:
        await create_pod(server, "second", sized)
    assert refused.value.message == (
        'pods "second" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, '
        "used: requests.cpu=600m, limited: requests.cpu=1")


async def test_limit_range_defaults_come_before_quota(server: Server) -> None:
    limit_ranges = server.caches.limit_ranges
    await server.storage.create(resource("limitranges"), namespace=NS, obj={"metadata": {"name": "limits"}, "spec": {
        "limits": [{"type": "Container", "default": {"cpu": "300m", "memory": "128Mi"}, "max": {"cpu": "1"}}]}})
    await settled(lambda: limit_ranges.get(NS, "limits") is not None)
    stored = limit_ranges.get(NS, "limits")
    assert stored["spec"]["limits"][0]["defaultRequest"] == {"cpu": "300m", "memory": "128Mi"}
    await create_quota(server, {"requests.cpu": "500m"})
    first = await create_pod(server, "first")
    assert first["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "300m", "memory": "128Mi"},
                                                           "limits": {"cpu": "300m", "memory": "128Mi"}}
    assert first["status"]["qosClass"] == "Guaranteed"
    with pytest.raises(errors.StatusError) as refused:
        await create_pod(server, "second")
    assert "requested: requests.cpu=300m, used: requests.cpu=300m, limited: requests.cpu=500m" in refused.value.message
    with pytest.raises(errors.StatusError) as refused:
        await create_pod(server, "big", container("app", limits={"cpu": "2"}))
    assert refused.value.message == 'pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2'


async def test_quota_objects_must_hold_quantities(server: Server) -> None:
    with pytest.raises(errors.StatusError) as refused:
        await server.storage.create(resource("resourcequotas"), namespace=NS,
                             obj={"metadata": {"name": "bad"}, "spec": {"hard": {"pods": "many", "cpu": "-1"}}})
    assert refused.value.code == 422
    fields = [c["field"] for c in refused.value.details["causes"]]
    assert fields == ["spec.hard[pods]", "spec.hard[cpu]"]
