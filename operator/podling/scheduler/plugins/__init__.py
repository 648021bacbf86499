"""The plugins, one module each, and the registry that maps their names to their classes.

A plugin class takes a :class:`~podling.scheduler.framework.Handle`; it is a filter plugin if
it has ``filter`` (and ``pre_filter``, ``events``), a score plugin if it has ``score`` (and
``pre_score``); one instance per profile serves both.
"""

from __future__ import annotations

from podling.scheduler.plugins.nodeaffinity import NodeAffinity
from podling.scheduler.plugins.nodename import NodeName
from podling.scheduler.plugins.nodeports import NodePorts
from podling.scheduler.plugins.noderesources import NodeResourcesBalancedAllocation, NodeResourcesFit
from podling.scheduler.plugins.nodeunschedulable import NodeUnschedulable
from podling.scheduler.plugins.selectorspread import SelectorSpread
from podling.scheduler.plugins.tainttoleration import TaintToleration
from podling.scheduler.plugins.volumerestrictions import VolumeRestrictions

REGISTRY: dict[str, type] = {cls.name: cls for cls in (
    NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit,
    NodeResourcesBalancedAllocation, VolumeRestrictions, SelectorSpread)}
FILTERS = frozenset(name for name, cls in REGISTRY.items() if hasattr(cls, "filter"))
SCORES = frozenset(name for name, cls in REGISTRY.items() if hasattr(cls, "score"))
