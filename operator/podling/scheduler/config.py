"""Scheduler profiles from a KubeSchedulerConfiguration file (the seed's "algorithm provider").

The file is kube-scheduler's own format (``kubescheduler.config.k8s.io/v1``), of which
podling reads::

    apiVersion: kubescheduler.config.k8s.io/v1
    kind: KubeSchedulerConfiguration
    percentageOfNodesToScore: 0        # 0: adaptive (50% − nodes/125, at least 5%, at least 100 nodes)
    podInitialBackoffSeconds: 1
    podMaxBackoffSeconds: 10
    profiles:
    - schedulerName: default-scheduler
      percentageOfNodesToScore: 0      # optional, per profile
      plugins:
        filter:
          disabled: [{name: NodePorts}]          # "*" disables every default
          enabled: [{name: NodeName}]
        score:
          enabled: [{name: NodeAffinity, weight: 5}]

Plugin sets merge as kube-scheduler merges them: the defaults of an extension point, minus
the disabled ones, with an enabled plugin that is also a default taking the default's place
(its new weight), and the other enabled plugins appended in order. A score weight left out
or 0 is 1, as in kube-scheduler.

Invariant: a configuration is either loaded whole or refused with one :class:`ConfigError`
(a ``ValueError``) naming the file, the line and the field; ``load_config(None)`` is the
default profile.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from podling.api.manifests import Manifest, ManifestError, load_file
from podling.scheduler.plugins import FILTERS, SCORES

API_VERSION = "kubescheduler.config.k8s.io/v1"
KIND = "KubeSchedulerConfiguration"
DEFAULT_SCHEDULER_NAME = "default-scheduler"
DEFAULT_FILTERS = ("NodeUnschedulable", "NodeName", "TaintToleration", "NodeAffinity", "NodePorts",
                   "NodeResourcesFit", "VolumeRestrictions")
# kube-scheduler's default weights; SelectorSpread takes the 2 of its successor, PodTopologySpread.
DEFAULT_SCORES = (("TaintToleration", 3), ("NodeAffinity", 2), ("NodeResourcesFit", 1),
                  ("NodeResourcesBalancedAllocation", 1), ("SelectorSpread", 2))
MAX_WEIGHT = 100
_TOP_FIELDS = ("apiVersion", "kind", "percentageOfNodesToScore", "podInitialBackoffSeconds", "podMaxBackoffSeconds",
               "profiles")
_PROFILE_FIELDS = ("schedulerName", "percentageOfNodesToScore", "plugins")
_POINTS = ("filter", "score")


class ConfigError(ValueError):
    def __init__(self, *, source_file: str, line: int | None, field: str, message: str) -> None:
        where = f"{source_file}:{line}" if line else source_file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")
        self.source_file = source_file
        self.line = line
        self.field = field
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    scheduler_name: str
    filters: tuple[str, ...]  # in the order they run
    scores: tuple[tuple[str, int], ...]  # (plugin, weight)
    percentage_of_nodes_to_score: int | None = None  # None: the configuration's


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerConfig:
    profiles: tuple[Profile, ...]
    percentage_of_nodes_to_score: int = 0
    pod_initial_backoff: float = 1.0  # seconds; doubles per failed attempt
    pod_max_backoff: float = 10.0
    source: str = "<default>"

    def percentage(self, profile: Profile) -> int:
        return (self.percentage_of_nodes_to_score if profile.percentage_of_nodes_to_score is None
                else profile.percentage_of_nodes_to_score)


def default_profile(scheduler_name: str = DEFAULT_SCHEDULER_NAME) -> Profile:
    return Profile(scheduler_name=scheduler_name, filters=DEFAULT_FILTERS, scores=DEFAULT_SCORES)


def load_config(path: str | os.PathLike[str] | None) -> SchedulerConfig:
    """The configuration in ``path``, or the default one (a single default-scheduler profile)."""
    if path is None:
        return SchedulerConfig(profiles=(default_profile(),))
    try:
        manifests = load_file(path)
    except ManifestError as err:
        raise ConfigError(source_file=err.source_file, line=err.line, field="", message=err.message) from None
    if len(manifests) != 1:
        raise ConfigError(source_file=str(path), line=manifests[1].line if manifests else None, field="",
                          message=f"want one {KIND} document, found {len(manifests)}")
    return _Parser(manifests[0]).config()


class _Parser:
    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

    def error(self, path: Sequence[str | int], message: str) -> ConfigError:
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        return ConfigError(source_file=self.manifest.source_file, line=self.manifest.line_of(path), field=field,
                           message=message)

    def mapping(self, value: Any, path: Sequence[str | int], fields: Sequence[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(path, f"must be an object, not {_json_type(value)}")
        for key in value:
            if key not in fields:
                raise self.error([*path, key], f"unknown field (known here: {', '.join(fields)})")
        return value

    def integer(self, value: Any, path: Sequence[str | int], *, low: int, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"must be an integer, not {_json_type(value)}")
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise self.error(path, f"must be {bounds}, not {value}")
        return value

    def config(self) -> SchedulerConfig:
        doc = self.mapping(self.manifest.obj, [], _TOP_FIELDS)
        if doc.get("apiVersion") != API_VERSION:
            raise self.error(["apiVersion"], f"must be {API_VERSION}, not {doc.get('apiVersion')!r}")
        if doc.get("kind") != KIND:
            raise self.error(["kind"], f"must be {KIND}, not {doc.get('kind')!r}")
        percentage = self.integer(doc.get("percentageOfNodesToScore", 0), ["percentageOfNodesToScore"],
                                  low=0, high=100)
        initial = self.integer(doc.get("podInitialBackoffSeconds", 1), ["podInitialBackoffSeconds"], low=1)
        maximum = self.integer(doc.get("podMaxBackoffSeconds", 10), ["podMaxBackoffSeconds"], low=1)
        if maximum < initial:
            raise self.error(["podMaxBackoffSeconds"],
                             f"must be at least podInitialBackoffSeconds ({initial}), not {maximum}")
        profiles_doc = doc.get("profiles")
        if profiles_doc is None:
            profiles: tuple[Profile, ...] = (default_profile(),)
        elif not isinstance(profiles_doc, list) or not profiles_doc:
            raise self.error(["profiles"], "must be a non-empty list of profiles")
        else:
            profiles = tuple(self.profile(item, ["profiles", i]) for i, item in enumerate(profiles_doc))
        seen: dict[str, int] = {}
        for index, profile in enumerate(profiles):
            if profile.scheduler_name in seen:
                first = seen[profile.scheduler_name]
                raise self.error(["profiles", index, "schedulerName"],
                                 f"{profile.scheduler_name!r} is the name of profiles[{first}] too")
            seen[profile.scheduler_name] = index
        return SchedulerConfig(profiles=profiles, percentage_of_nodes_to_score=percentage,
                               pod_initial_backoff=float(initial), pod_max_backoff=float(maximum),
                               source=self.manifest.source_file)

    def profile(self, doc: Any, path: list[str | int]) -> Profile:
        doc = self.mapping(doc, path, _PROFILE_FIELDS)
        name = doc.get("schedulerName", DEFAULT_SCHEDULER_NAME)
        if not isinstance(name, str) or not name:
            raise self.error([*path, "schedulerName"], "must be a non-empty string")
        percentage = None
        if "percentageOfNodesToScore" in doc:
            percentage = self.integer(doc["percentageOfNodesToScore"], [*path, "percentageOfNodesToScore"],
                                      low=0, high=100)
        plugins = self.mapping(doc.get("plugins") or {}, [*path, "plugins"], _POINTS)
        filters = self.plugin_set(plugins.get("filter"), [*path, "plugins", "filter"], known=FILTERS,
                                  defaults=[(name, 0) for name in DEFAULT_FILTERS], weighted=False)
        scores = self.plugin_set(plugins.get("score"), [*path, "plugins", "score"], known=SCORES,
                                 defaults=list(DEFAULT_SCORES), weighted=True)
        return Profile(scheduler_name=name, filters=tuple(name for name, _ in filters), scores=tuple(scores),
                       percentage_of_nodes_to_score=percentage)

    def plugin_set(self, doc: Any, path: list[str | int], *, known: frozenset[str],
                   defaults: list[tuple[str, int]], weighted: bool) -> list[tuple[str, int]]:
        if doc is None:
            return defaults
        doc = self.mapping(doc, path, ("enabled", "disabled"))
        disabled = {name for name, _ in self.plugins(doc.get("disabled"), [*path, "disabled"], known=known,
                                                      weighted=False, wildcard=True)}
        enabled = self.plugins(doc.get("enabled"), [*path, "enabled"], known=known, weighted=weighted,
                               wildcard=False)
        custom = dict(enabled)
        merged = [] if "*" in disabled else [(name, custom.get(name, weight)) for name, weight in defaults
                                             if name not in disabled]
        in_defaults = {name for name, _ in merged}
        return merged + [(name, weight) for name, weight in enabled if name not in in_defaults]

    def plugins(self, doc: Any, path: list[str | int], *, known: frozenset[str], weighted: bool,
                wildcard: bool) -> list[tuple[str, int]]:
        if doc is None:
            return []
        if not isinstance(doc, list):
            raise self.error(path, f"must be a list of {{name: ...}}, not {_json_type(doc)}")
        out: list[tuple[str, int]] = []
        for index, item in enumerate(doc):
            where = [*path, index]
            item = self.mapping(item, where, ("name", "weight") if weighted else ("name",))
            name = item.get("name")
            if not isinstance(name, str) or not (name in known or (wildcard and name == "*")):
                point = path[-2]
                raise self.error([*where, "name"], f"{name!r} is not a {point} plugin "
                                                   f"(known: {', '.join(sorted(known))}{', *' if wildcard else ''})")
            if any(name == seen for seen, _ in out):
                raise self.error([*where, "name"], f"{name} is listed twice")
            weight = 0
            if weighted:
                weight = self.integer(item.get("weight", 0), [*where, "weight"], low=0, high=MAX_WEIGHT) or 1
            out.append((name, weight))
        return out


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
