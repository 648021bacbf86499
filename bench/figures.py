"""Figures the benchmark scripts print.

Invariant: ``percentile`` is the nearest-rank percentile: the smallest sample with at least
``q`` of all samples at or below it (p99 of 100 samples is the 99th, not the largest).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
