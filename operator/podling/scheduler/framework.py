"""One scheduling profile: filter plugins in order, weighted score plugins, and the fit error.

Invariants:

* Plugins answer with values, never exceptions: ``filter`` returns None when the node fits
  or a :class:`Status` saying why not; ``pre_filter``/``pre_score`` may return SKIP (the
  plugin has nothing to say about this pod this cycle: it is not run) or, for
  ``pre_filter``, a rejection that applies to every node. A plugin that raises is a bug:
  the cycle ends with an error status and the pod is retried with backoff.
* Filters run per node in the profile's order and stop at the first rejection, so a node's
  status holds the reasons of one plugin (Kubernetes' ``RunFilterPlugins``). Scores are
  computed per plugin over all feasible nodes at once (``score`` returns one score per
  node, already normalised to 0–100, since normalising needs them all), multiplied by
  the plugin's weight and summed. The highest total wins; ties are broken uniformly at random.
* Nodes are walked from a rotating start index and filtering stops once enough feasible
  nodes are found (``num_feasible_nodes_to_find``: kube-scheduler's adaptive
  percentageOfNodesToScore), so a large cluster costs a bounded number of checks per pod
  and every node still gets its turn.
* Plugin timing is sampled: in one cycle out of ten each plugin is timed at each extension
  point (a filter over each batch of nodes, not node by node), and its total for the cycle
  is observed once.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import operator
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from podling.scheduler.cache import Cache
from podling.scheduler.info import NodeInfo, PodInfo

MAX_NODE_SCORE = 100
MIN_FEASIBLE_NODES = 100  # kube-scheduler's minFeasibleNodesToFind
MIN_FEASIBLE_PERCENTAGE = 5  # minFeasibleNodesPercentageToFind
NO_NODES_MESSAGE = "no nodes available to schedule pods"  # kube-scheduler's ErrNoNodesAvailable
MEMO_ENTRIES = 64  # what a node's memo may hold before it is emptied
SAMPLE_PERCENT = 10  # cycles whose plugin durations are measured (kube-scheduler's pluginMetricsSamplePercent)

CycleState = dict[str, Any]

# Cluster events that can make a rejected pod fit; filter plugins list the ones that matter to them.
NODE_ADD = "NodeAdd"
NODE_UPDATE = "NodeUpdate"  # a change of what scheduling reads: labels, taints, allocatable, readiness
POD_DELETE = "PodDelete"  # a counted pod deleted or finished: its resources, ports, disks are free
CLAIM_CHANGE = "ClaimChange"  # a PersistentVolumeClaim added or changed


class Code(enum.Enum):
    UNSCHEDULABLE = "Unschedulable"  # this node does not fit now; it may after a change
    UNRESOLVABLE = "UnschedulableAndUnresolvable"  # this node will not fit this pod
    ERROR = "Error"  # something is wrong (a bug, a missing object): not a verdict on the node
    SKIP = "Skip"  # pre_filter/pre_score: this plugin has nothing to check for this pod


@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    code: Code
    reasons: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)


def unschedulable(*reasons: str) -> Status:
    return Status(Code.UNSCHEDULABLE, reasons)


def unresolvable(*reasons: str) -> Status:
    return Status(Code.UNRESOLVABLE, reasons)


SKIP = Status(Code.SKIP)


@dataclasses.dataclass(frozen=True, slots=True)
class Handle:
    """What plugins may read: the cache, and PersistentVolumeClaims by ``namespace/name``."""

    cache: Cache
    claim: Callable[[str], dict[str, Any] | None]


class FilterPlugin(Protocol):
    name: str
    events: frozenset[str]  # cluster events that can make a node this plugin rejected fit

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None: ...

    def filter(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[Status | None]:
        """Per node, in the order of ``nodes``: None if the pod fits there, else why not."""
        ...


class ScorePlugin(Protocol):
    name: str

    def pre_score(self, state: CycleState, pod: PodInfo) -> Status | None: ...

    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        """One score in 0–100 per node, in the order of ``nodes``."""
        ...


_MISSING = object()


def memoized(key: str, nodes: Sequence[NodeInfo], compute: Callable[[NodeInfo], Any]) -> list[Any]:
    """Each node's ``compute(node)``, kept in the node's memo under ``key`` until the node changes.

    ``key`` must name the plugin and everything of the pod that ``compute`` reads (such as
    ``NodeResourcesFit/filter:1000:0``): the memo is emptied whenever the node or its pods
    change, so a stream of pods of one kind recomputes only the nodes changed since the
    last cycle. (A string key: its hash is computed once, not once per node.)
    """
    values = [node.memo.get(key, _MISSING) for node in nodes]
    if _MISSING in values:
        for index, value in enumerate(values):
            if value is _MISSING:
                memo = nodes[index].memo
                if len(memo) >= MEMO_ENTRIES:  # many kinds of pods and a node that never changes
                    memo.clear()
                values[index] = memo[key] = compute(nodes[index])
    return values


def default_normalize(scores: list[int], *, reverse: bool = False) -> list[int]:
    """Kubernetes' ``DefaultNormalizeScore``: scale to 0–100 by the highest score (reversed: 100 − that)."""
    highest = max(scores, default=0)
    if highest == 0:
        return [MAX_NODE_SCORE] * len(scores) if reverse else scores
    if reverse:
        return [MAX_NODE_SCORE - MAX_NODE_SCORE * s // highest for s in scores]
    return [MAX_NODE_SCORE * s // highest for s in scores]


def num_feasible_nodes_to_find(percentage: int, nodes: int) -> int:
    """How many feasible nodes to find before scoring (kube-scheduler's ``numFeasibleNodesToFind``).

    ``percentage`` 0 is adaptive: 50% minus one point per 125 nodes, at least 5%; never
    fewer than 100 nodes (or all, in a smaller cluster).
    """
    if nodes < MIN_FEASIBLE_NODES or percentage >= 100:
        return nodes
    if percentage <= 0:
        percentage = max(50 - nodes // 125, MIN_FEASIBLE_PERCENTAGE)
    return max(nodes * percentage // 100, MIN_FEASIBLE_NODES)


# ---- results -----------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class FitError:
    """Why no node fits: a rejection before filtering, or each rejected node's status."""

    nodes: int  # nodes in the cluster
    pre_filter: Status | None = None
    statuses: dict[str, Status] = dataclasses.field(default_factory=dict)  # node name -> status
    plugins: frozenset[str] = frozenset()  # the plugins that rejected the pod

    @property
    def message(self) -> str:
        """Kubernetes' message: ``0/3 nodes are available: 1 Insufficient cpu, 2 node(s) ....``

        The histogram of reasons (one node can give several: "Insufficient cpu" and
        "Insufficient memory") is sorted as strings, count first, as kube-scheduler's
        ``FitError.Error`` sorts it.
        """
        if self.nodes == 0:
            return NO_NODES_MESSAGE
        message = f"0/{self.nodes} nodes are available:"
        if self.pre_filter is not None:
            return f"{message} {self.pre_filter.message}."
        counts: dict[str, int] = {}
        for status in self.statuses.values():
            for reason in status.reasons:
                counts[reason] = counts.get(reason, 0) + 1
        histogram = sorted(f"{count} {reason}" for reason, count in counts.items())
        return f"{message} {', '.join(histogram)}." if histogram else message


@dataclasses.dataclass(slots=True)
class Placement:
    node: str
    evaluated: int  # nodes filtered
    feasible: int  # nodes that fit, of those


class PluginTimer:
    """Sums each plugin's time per extension point over one sampled cycle.

    The status of a total is the plugin's answer (Success, Skip, ...); for Filter, which
    answers once per node, it is Success unless the plugin rejected some node.
    """

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str, str], float] = {}

    def add(self, plugin: str, point: str, status: str, seconds: float) -> None:
        key = (plugin, point, status)
        self.totals[key] = self.totals.get(key, 0.0) + seconds

    def wrap(self, plugin: str, point: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, timed as one call to ``plugin`` at ``point``."""

        def timed(*args: Any) -> Any:
            start = time.perf_counter()
            result = fn(*args)
            self.add(plugin, point, result.code.value if isinstance(result, Status) else "Success",
                     time.perf_counter() - start)
            return result

        return timed


class Framework:
    """The plugins of one profile, ready to place pods."""

    def __init__(self, *, name: str, filters: Sequence[FilterPlugin],
                 scores: Sequence[tuple[ScorePlugin, int]], percentage_of_nodes_to_score: int,
                 rng: random.Random | None = None) -> None:
        self.name = name
        self.filters = tuple(filters)
        self.scores = tuple(scores)
        self.percentage = percentage_of_nodes_to_score
        self._rng = rng or random.Random()

    def schedule(self, pod: PodInfo, nodes: Sequence[NodeInfo], *, start: int = 0,
                 timer: PluginTimer | None = None) -> Placement | FitError:
        """Choose a node for ``pod`` among ``nodes``, walking them from index ``start``."""
        if not nodes:
            return FitError(nodes=0)
        state: CycleState = {}
        filters: list[tuple[str, Callable[..., list[Status | None]]]] = []
        for plugin in self.filters:
            pre = timer.wrap(plugin.name, "PreFilter", plugin.pre_filter) if timer else plugin.pre_filter
            status = pre(state, pod)
            if status is SKIP:
                continue
            if status is not None:
                return FitError(nodes=len(nodes), pre_filter=status, plugins=frozenset({plugin.name}))
            filters.append((plugin.name, plugin.filter))
        limit = num_feasible_nodes_to_find(self.percentage, len(nodes))
        start %= len(nodes)
        feasible, statuses, evaluated = _find_feasible(state, pod, itertools.chain(nodes[start:], nodes[:start]),
                                                       filters, limit, timer)
        if not feasible:
            return FitError(nodes=len(nodes), statuses={name: status for name, (status, _) in statuses.items()},
                            plugins=frozenset(plugin for _, plugin in statuses.values()))
        if len(feasible) == 1:
            return Placement(node=feasible[0].name, evaluated=evaluated, feasible=1)
        totals = self._prioritize(state, pod, feasible, timer)
        best = max(totals)
        winners = [node for node, total in zip(feasible, totals) if total == best]
        chosen = winners[0] if len(winners) == 1 else self._rng.choice(winners)
        return Placement(node=chosen.name, evaluated=evaluated, feasible=len(feasible))

    def _prioritize(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo],
                    timer: PluginTimer | None) -> list[int]:
        totals = [0] * len(nodes)
        for plugin, weight in self.scores:
            pre = timer.wrap(plugin.name, "PreScore", plugin.pre_score) if timer else plugin.pre_score
            if pre(state, pod) is SKIP:
                continue
            score = timer.wrap(plugin.name, "Score", plugin.score) if timer else plugin.score
            raw = score(state, pod, nodes)
            if weight != 1:
                raw = list(map(operator.mul, raw, itertools.repeat(weight)))
            totals = list(map(operator.add, totals, raw))
        return totals


def _find_feasible(state: CycleState, pod: PodInfo, nodes: Iterable[NodeInfo],
                   filters: Sequence[tuple[str, Callable[..., list[Status | None]]]], limit: int,
                   timer: PluginTimer | None) -> tuple[list[NodeInfo], dict[str, tuple[Status, str]], int]:
    """(feasible nodes, up to ``limit``; rejected node -> (status, plugin); nodes evaluated).

    Nodes are taken in batches of as many as are still missing, and each filter runs over
    the batch's survivors in turn. That gives each node the verdict of the first filter
    that rejects it, as running the filters node by node would (filters only read), and
    lets a plugin answer a batch at C speed (from memos).
    """
    feasible: list[NodeInfo] = []
    rejected: dict[str, tuple[Status, str]] = {}
    evaluated = 0
    remaining = iter(nodes)
    while len(feasible) < limit:
        batch = list(itertools.islice(remaining, limit - len(feasible)))
        if not batch:
            break
        evaluated += len(batch)
        for name, check in filters:
            started = time.perf_counter() if timer else 0.0
            statuses = check(state, pod, batch)
            passed = statuses.count(None) == len(statuses)
            if timer:
                timer.add(name, "Filter", "Success" if passed else "Unschedulable", time.perf_counter() - started)
            if passed:
                continue
            survivors = []
            for node, status in zip(batch, statuses):
                if status is None:
                    survivors.append(node)
                else:
                    rejected[node.name] = (status, name)
            batch = survivors
        feasible += batch
    return feasible, rejected, evaluated
