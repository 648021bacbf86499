"""Who may call the kubelet's server: bearer tokens checked with the API server's TokenReview.

The kubelet holds no token list of its own. Each token a caller presents (the API server's
in-memory ``system:apiserver`` token, or anyone's) is sent to the API server as an
``authentication.k8s.io/v1`` TokenReview, and the answer is cached the way kubelet's webhook
authenticator caches it: a token found good for 2 minutes, a token found bad for 10 seconds.

Invariants: a token is never kept in memory in the clear (the cache is keyed by its SHA-256);
an API server that cannot be asked (down, or refusing) makes the token bad for this request
only, and nothing is cached, so a recovered API server is asked again at once; concurrent
requests presenting the same uncached token share one review.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable

from podling.api.resources import find
from podling.client.http import ApiClient, ApiError, TransportError

log = logging.getLogger("podling.kubelet.auth")

_TOKEN_REVIEWS = find(group="authentication.k8s.io", version="v1", plural="tokenreviews")
assert _TOKEN_REVIEWS is not None

GOOD_TTL = 120.0
BAD_TTL = 10.0
_MAX_ENTRIES = 4096


class TokenReviewer:
    """``await reviewer(token)``: whether the API server says ``token`` authenticates someone."""

    def __init__(self, api: ApiClient, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self._clock = clock  # a parameter for tests
        self._cache: dict[bytes, tuple[bool, float]] = {}  # sha256(token) -> (good, expires at)
        self._pending: dict[bytes, asyncio.Task[bool]] = {}

    async def __call__(self, token: str) -> bool:
        key = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._review_and_remember(key, token))
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(task)  # one caller giving up does not cancel the others' review

    async def _review_and_remember(self, key: bytes, token: str) -> bool:
        good = await self._review(token)
        if good is not None:
            self._remember(key, good, now=self._clock())
        return bool(good)

    async def _review(self, token: str) -> bool | None:
        """True or False as the API server answers; None when it could not be asked."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        try:
            answer = await self.api.create(_TOKEN_REVIEWS, review)
        except (ApiError, TransportError) as err:
            log.warning("TokenReview failed, refusing the request: %s", err)
            return None
        return bool(((answer or {}).get("status") or {}).get("authenticated"))

    def _remember(self, key: bytes, good: bool, *, now: float) -> None:
        if len(self._cache) >= _MAX_ENTRIES:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            if len(self._cache) >= _MAX_ENTRIES:
                self._cache.clear()
        self._cache[key] = (good, now + (GOOD_TTL if good else BAD_TTL))
