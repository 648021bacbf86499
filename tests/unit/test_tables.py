"""Table cells computed for ``kubectl get`` (server-side printing), as kubectl's printers show them."""

from __future__ import annotations

from typing import Any

import pytest

from podling.api.resources import find
from podling.api.tables import row

NODES = find(group="", version="v1", plural="nodes")


def node_status(ready: str | None, *, unschedulable: bool = False) -> Any:
    conditions = [] if ready is None else [{"type": "Ready", "status": ready}]
    node = {"metadata": {"name": "n1"}, "spec": {"unschedulable": unschedulable}, "status": {"conditions": conditions}}
    names = [c.name for c in NODES.columns]
    return row(NODES, node, include_object="None")["cells"][names.index("Status")]


@pytest.mark.parametrize(("ready", "shown"), [("True", "Ready"), ("False", "NotReady"), ("Unknown", "NotReady"),
                                              (None, "Unknown")])
def test_node_status_is_kubectls(ready: str | None, shown: str) -> None:
    assert node_status(ready) == shown


def test_a_cordoned_node_says_scheduling_disabled() -> None:
    assert node_status("True", unschedulable=True) == "Ready,SchedulingDisabled"
    assert node_status("Unknown", unschedulable=True) == "NotReady,SchedulingDisabled"
