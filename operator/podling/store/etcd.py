"""The etcd store: the Store contract over etcd v3's JSON gateway (``/v3/...``), with aiohttp.

Invariant: etcd holds all state; this module only translates. Keys and values travel as
base64, int64 fields as JSON strings, and fields at their zero value are left out (an empty
value, ``succeeded: false``, event type PUT), so every read of a field has a default.

* create is a txn "create_revision == 0 → put"; update and delete are a txn
  "mod_revision == expected and version > 0 → put/delete, else range", so a failure carries
  the current value for :class:`Conflict` (or its absence for :class:`KeyNotFound`).
* A request goes to the endpoint that last answered; when connecting fails it moves on to
  the next. Reads (and compaction, which is idempotent here) also move on when a connection
  breaks before the answer; writes do not, since the first endpoint may have applied them.
* A watch asks etcd for start_revision R rather than R+1 and drops events at revision <= R:
  etcd reports compaction for start_revision < compacted revision, so this makes "R older
  than the compacted revision" raise :class:`Compacted` exactly as the contract says. When
  the stream breaks it reopens from the last revision delivered, on any endpoint, so
  delivery stays exactly-once and in order.
* etcd does not report its compacted revision directly; a watch from revision 1 does, and
  that is how :meth:`EtcdStore.compacted_revision` and :class:`Compacted` learn it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from podling.store.base import (
    Compacted,
    Conflict,
    Event,
    KeyExists,
    KeyNotFound,
    KeyValue,
    Store,
    StoreError,
    prefix_end,
)

Json = dict[str, Any]

_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=5)
_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5)
_POOL = 100  # connections for requests (watches have their own)
_RECONNECT_FOR = 30.0  # seconds a broken watch keeps trying to reconnect before it gives up
_PROBE_KEY = "\x00"  # a key nobody writes: ranges and watches that only want a header use it
_COMPACTED_MESSAGE = "required revision has been compacted"
_FUTURE_MESSAGE = "required revision is a future revision"


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


def _key_range(first: str, *, prefix: str) -> Json:
    """The keys from ``first`` to the end of ``prefix``'s range (etcd refuses an empty key)."""
    return {"key": _b64(first or "\x00"), "range_end": _b64(prefix_end(prefix))}


def _key_value(raw: Json) -> KeyValue:
    return KeyValue(
        key=_unb64(raw["key"]).decode(),
        value=_unb64(raw.get("value", "")),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
    )


def _event(raw: Json) -> Event:
    kv, prev = raw["kv"], raw.get("prev_kv")
    deleted = raw.get("type") == "DELETE"
    return Event(
        type="DELETE" if deleted else "PUT",
        key=_unb64(kv["key"]).decode(),
        revision=int(kv["mod_revision"]),
        value=None if deleted else _unb64(kv.get("value", "")),
        prev_value=None if prev is None else _unb64(prev.get("value", "")),
        create_revision=0 if deleted else int(kv["create_revision"]),
    )


def _revision(response: Json) -> int:
    return int(response["header"].get("revision", 0))


def _compare(key: str, *, target: str, value: int, result: str = "EQUAL") -> Json:
    field = {"CREATE": "create_revision", "MOD": "mod_revision", "VERSION": "version"}[target]
    return {"target": target, "key": _b64(key), field: str(value), "result": result}


def _watch_request(prefix: str, *, after: int) -> Json:
    """Watch from ``after`` itself (see the module docstring), with each event's previous value."""
    request = {**_key_range(prefix, prefix=prefix), "start_revision": str(max(after, 1)), "prev_kv": True}
    return {"create_request": request}


def _watch_events(result: Json, *, after: int) -> list[Event]:
    """The events of one watch message with revision > ``after``; :class:`Compacted` if it says so."""
    if "compact_revision" in result:
        compacted = int(result["compact_revision"])
        raise Compacted(f"revision {after} has been compacted", compacted_revision=compacted)
    return [event for event in map(_event, result.get("events", [])) if event.revision > after]


def _mendable(err: BaseException) -> bool:
    """Whether reopening the watch can mend what ended its stream: not if etcd said no."""
    return not isinstance(err, (Compacted, _GatewayError))


class _GatewayError(StoreError):
    """An error answer from etcd: a gRPC status, carried as JSON."""

    @property
    def compacted(self) -> bool:
        return _COMPACTED_MESSAGE in str(self)


class _StreamBroken(StoreError):
    """The gateway lost its stream to etcd (the member is stopping, or lost its leader)."""


class EtcdStore(Store):
    """See the module docstring."""

    def __init__(self, *, endpoints: list[str]) -> None:
        """Use :meth:`open`, which also checks that etcd answers."""
        self._endpoints = endpoints
        self._current = 0  # the index of the endpoint that last answered
        # Requests share a bounded pool; every watch holds a connection of its own for as long
        # as it lives, so watches get an unbounded pool and can never starve the requests.
        self._requests = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=_POOL), timeout=_TIMEOUT)
        self._watches = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=_STREAM_TIMEOUT)
        self._streams: set[aiohttp.ClientResponse] = set()
        self._closed = False

    @classmethod
    async def open(cls, *, endpoints: list[str]) -> EtcdStore:
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        store = cls(endpoints=list(endpoints))
        try:
            await store.current_revision()
        except BaseException:
            await store.close()
            raise
        return store

    # ---- reads ----------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        response = await self._call("/v3/kv/range", {"key": _b64(key)})
        kvs = response.get("kvs", [])
        return _key_value(kvs[0]) if kvs else None

    async def list(
        self,
        prefix: str,
        *,
        revision: int = 0,
        start_after: str | None = None,
        limit: int = 0,
    ) -> tuple[list[KeyValue], int, bool]:
        first = prefix
        if start_after is not None and start_after >= prefix:
            first = start_after + "\x00"  # the smallest key after start_after
        request = {**_key_range(first, prefix=prefix), "revision": str(revision)}
        if limit:
            request["limit"] = str(limit)
        try:
            response = await self._call("/v3/kv/range", request)
        except _GatewayError as err:
            if err.compacted:
                raise Compacted(str(err), compacted_revision=await self._probe_compacted_revision()) from None
            raise
        items = [_key_value(kv) for kv in response.get("kvs", [])]
        return items, revision or _revision(response), bool(response.get("more"))

    async def current_revision(self) -> int:
        return _revision(await self._call("/v3/kv/range", {"key": _b64(_PROBE_KEY), "count_only": True}))

    async def compacted_revision(self) -> int:
        """Found by asking for history at revision 1: it is only gone if something was compacted.

        A compaction at revision 1 itself keeps everything, so it reads as 0.
        """
        try:
            await self._call("/v3/kv/range", {"key": _b64(_PROBE_KEY), "revision": "1", "count_only": True})
        except _GatewayError as err:
            if err.compacted:
                return await self._probe_compacted_revision()
            if _FUTURE_MESSAGE not in str(err):  # an empty etcd: revision 1 is yet to come
                raise
        return 0

    async def _probe_compacted_revision(self) -> int:
        """The compacted revision, when it is known to be > 1: a watch from 1 reports it."""
        request = {"create_request": {"key": _b64(_PROBE_KEY), "start_revision": "1"}}
        async for result in self._stream(request):
            if "compact_revision" in result:
                return int(result["compact_revision"])
        raise StoreError("etcd closed the stream before reporting the compacted revision")

    # ---- writes ---------------------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> int:
        response = await self._txn(
            compare=[_compare(key, target="CREATE", value=0)],
            success={"request_put": {"key": _b64(key), "value": _b64(value)}},
            key=key,
        )
        if not response.get("succeeded"):
            raise KeyExists(key)
        return _revision(response)

    async def update(self, key: str, value: bytes, *, revision: int) -> int:
        return await self._write_existing(
            key, revision=revision, request={"request_put": {"key": _b64(key), "value": _b64(value)}}
        )

    async def delete(self, key: str, *, revision: int | None = None) -> int:
        return await self._write_existing(key, revision=revision, request={"request_delete_range": {"key": _b64(key)}})

    async def compact(self, revision: int) -> None:
        try:
            await self._call("/v3/kv/compaction", {"revision": str(revision)})
        except _GatewayError as err:
            if not err.compacted:  # compacted already: nothing to do
                raise

    async def _write_existing(self, key: str, *, revision: int | None, request: Json) -> int:
        """Apply ``request`` to ``key`` if it exists (at mod_revision ``revision``, if given)."""
        compare = [_compare(key, target="VERSION", value=0, result="GREATER")]
        if revision is not None:
            compare.append(_compare(key, target="MOD", value=revision))
        response = await self._txn(compare=compare, success=request, key=key)
        if response.get("succeeded"):
            return _revision(response)
        kvs = response["responses"][0]["response_range"].get("kvs", [])
        if not kvs:
            raise KeyNotFound(key)
        current = _key_value(kvs[0])
        raise Conflict(f"{key}: revision {revision} is stale (current: {current.mod_revision})", current=current)

    async def _txn(self, *, compare: list[Json], success: Json, key: str) -> Json:
        """One txn: ``success`` if every comparison holds, else a range of ``key``."""
        body = {"compare": compare, "success": [success], "failure": [{"request_range": {"key": _b64(key)}}]}
        return await self._call("/v3/kv/txn", body, idempotent=False)

    # ---- watch ----------------------------------------------------------------------------------

    async def watch(self, prefix: str, *, revision: int) -> AsyncIterator[Event]:
        last = revision
        broken_since: float | None = None
        while not self._closed:
            try:
                async for result in self._stream(_watch_request(prefix, after=last)):
                    broken_since = None
                    for event in _watch_events(result, after=last):
                        last = event.revision
                        yield event
                error: BaseException = StoreError("the stream ended")
            except (aiohttp.ClientError, asyncio.TimeoutError, StoreError) as err:
                if not _mendable(err):
                    raise
                error = err
            if self._closed:
                return
            broken_since = broken_since or time.monotonic()
            if time.monotonic() - broken_since > _RECONNECT_FOR:
                raise StoreError(f"etcd watch on {prefix!r} broke and could not reconnect: {error!r}") from error
            await asyncio.sleep(0.1)  # then reopen from ``last``, on whichever endpoint answers

    async def _stream(self, request: Json) -> AsyncIterator[Json]:
        """The ``result`` messages of one watch stream, until it ends or breaks."""
        response = await self._post(self._watches, "/v3/watch", request, idempotent=True)
        self._streams.add(response)
        try:
            async for message in _json_lines(response):
                if "error" in message:  # e.g. {"grpc_code": 14, "message": "transport is closing"}
                    raise _StreamBroken(f"etcd watch: {message['error'].get('message')}")
                result = message["result"]
                if result.get("canceled") and "compact_revision" not in result:
                    raise _GatewayError(f"etcd cancelled the watch: {result.get('cancel_reason')}")
                yield result
        finally:
            self._streams.discard(response)
            response.close()

    # ---- transport ------------------------------------------------------------------------------

    async def _call(self, path: str, body: Json, *, idempotent: bool = True) -> Json:
        """One request and its JSON answer; an error answer raises :class:`_GatewayError`."""
        response = await self._post(self._requests, path, body, idempotent=idempotent)
        try:
            async with response:
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as err:
            raise StoreError(f"etcd {path}: {err!r}") from err
        if response.status != 200 or "error" in answer:
            raise _GatewayError(f"etcd {path}: {answer.get('message') or answer.get('error') or response.status}")
        return answer

    async def _post(
        self, session: aiohttp.ClientSession, path: str, body: Json, *, idempotent: bool
    ) -> aiohttp.ClientResponse:
        """POST to the endpoint that last answered, moving on to the next while that fails."""
        if self._closed:
            raise StoreError("the store is closed")
        retry_on = aiohttp.ClientConnectionError if idempotent else aiohttp.ClientConnectorError
        failures = []
        for turn in range(len(self._endpoints)):
            index = (self._current + turn) % len(self._endpoints)
            endpoint = self._endpoints[index]
            try:
                response = await session.post(f"http://{endpoint}{path}", json=body)
            except retry_on as err:
                failures.append(f"{endpoint}: {err}")
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as err:
                raise StoreError(f"etcd {endpoint}{path}: {err!r}") from err
            self._current = index
            return response
        raise StoreError(f"no etcd endpoint answers ({'; '.join(failures)})")

    async def close(self) -> None:
        self._closed = True
        for response in list(self._streams):
            response.close()
        await self._requests.close()
        await self._watches.close()


async def _json_lines(response: aiohttp.ClientResponse) -> AsyncIterator[Json]:
    """The newline-separated JSON messages of a streamed answer.

    Not ``readline``: aiohttp caps a line at 128 KiB, and one watch message can be larger.
    """
    buffer = bytearray()
    async for chunk in response.content.iter_any():
        buffer += chunk
        if b"\n" not in chunk:  # a message can span many chunks: split once it is whole
            continue
        *lines, rest = buffer.split(b"\n")
        buffer = bytearray(rest)
        for line in lines:
            if line.strip():
                yield json.loads(line)
    if buffer.strip():  # the gateway ends a stream with an error message and no newline
        yield json.loads(buffer)
