"""Waiting in end-to-end tests: poll a check until it holds, bounded in time, and say what was seen.

Invariant: ``wait_for`` returns the check's first truthy value or raises AssertionError naming
what it waited for and the last value seen; it never waits longer than ``timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last saw: {last!r}")
