"""The request handlers serving long-lived streams (log follows, exec sessions) of one server.

Invariant: a handler is registered exactly while it runs inside ``track()``, so ``close()``
cancels every stream still open and returns once they have all ended; a server's shutdown
never waits on a client that keeps a stream open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any


class OpenStreams:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Register the current handler's task until the block ends."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            yield
        finally:
            self._tasks.discard(task)

    async def close(self) -> None:
        tasks = [*self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
