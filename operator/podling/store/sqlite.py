"""The embedded store: an MVCC log in one SQLite file, written by one thread.

Invariant: the table ``kv`` is the log. Every write appends one row whose ``id`` is the
write's revision (``AUTOINCREMENT``, so an id is never handed out twice, not even after its
row was compacted away or the process restarted); nothing but compaction ever changes or
removes a row. A key's current value is its row with the greatest id; its value at revision R
is its row with the greatest id <= R; a row with ``deleted = 1`` is a tombstone. Each row
points at the key's previous row (``prev_revision``), which is where an event's
``prev_value`` comes from: compaction at C removes only rows superseded at or before C, so
the previous row of any row above C is still there.

Threads: a single writer thread owns the only writing connection. It takes every write queued
while the last transaction committed and applies them in one transaction (group commit), then
hands results and events back to the event loop in one callback, so events reach watchers in
revision order. Reads run on a small pool of reader threads with their own connections; WAL
mode lets them read a consistent snapshot while the writer writes. One store object (so one
process) owns the file: the writer keeps the revision counter in memory.

Watch: a watch subscribes to the live feed first, then replays the log from its start up to
the revision published at subscription time, then follows the feed, dropping anything it has
already delivered. A watcher that falls more than ``_WATCH_BACKLOG`` events behind is not
ended: its queue is dropped (so it cannot hold memory or slow anyone) and it catches up from
the log again, exactly as it started. Only compaction past its position ends it, with
:class:`Compacted`, which the API turns into 410 Gone and a re-list.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

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

T = TypeVar("T")

_MAX_BATCH = 1000  # writes in one transaction at most
_READERS = 4  # reader threads (and connections)
_REPLAY_CHUNK = 1000  # log rows a watch replays per read
_COMPACT_STEP = 10_000  # revisions one compaction transaction covers, so writes interleave
_WATCH_BACKLOG = 10_000  # queued events after which a watcher drops its queue and catches up

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the revision of the write
    key TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,        -- the key's previous row, 0 if none
    deleted INTEGER NOT NULL,
    value BLOB                             -- NULL for a tombstone
);
CREATE INDEX IF NOT EXISTS kv_key ON kv (key, id);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_LATEST = "SELECT id, create_revision, deleted, value FROM kv WHERE key = ? ORDER BY id DESC LIMIT 1"
_INSERT = "INSERT INTO kv (id, key, create_revision, prev_revision, deleted, value) VALUES (?, ?, ?, ?, ?, ?)"
_REVISION = "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'kv'), 0)"
_COMPACTED = "SELECT coalesce((SELECT value FROM meta WHERE name = 'compacted'), 0)"
# The index on (key, id) serves both the key range and the key order, so LIMIT stops early.
_LIST = """
SELECT key, value, create_revision, id FROM kv AS cur
WHERE key >= :lower AND key < CAST(:upper AS TEXT) AND key IS NOT :skip
  AND id <= :revision AND deleted = 0
  AND id = (SELECT max(id) FROM kv AS newer WHERE newer.key = cur.key AND newer.id <= :revision)
ORDER BY key LIMIT :limit
"""
_HISTORY = """
SELECT cur.id, cur.key, cur.deleted, cur.value, cur.create_revision, prev.value
FROM kv AS cur LEFT JOIN kv AS prev ON prev.id = cur.prev_revision AND prev.deleted = 0
WHERE cur.id > :after AND cur.id <= :upto AND cur.key >= :prefix AND cur.key < CAST(:upper AS TEXT)
ORDER BY cur.id LIMIT :limit
"""
_COMPACT_SUPERSEDED = "DELETE FROM kv WHERE id IN (SELECT prev_revision FROM kv WHERE id > ? AND id <= ?)"
_COMPACT_TOMBSTONES = "DELETE FROM kv WHERE id > ? AND id <= ? AND deleted = 1"
_SET_COMPACTED = "INSERT OR REPLACE INTO meta (name, value) VALUES ('compacted', ?)"


@dataclasses.dataclass(frozen=True, slots=True)
class _Row:
    """A key's latest row."""

    revision: int
    create_revision: int
    deleted: bool
    value: bytes | None  # None for a tombstone

    def key_value(self, key: str) -> KeyValue:
        value = self.value or b""
        return KeyValue(key=key, value=value, create_revision=self.create_revision, mod_revision=self.revision)


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def _latest(conn: sqlite3.Connection, *, key: str) -> _Row | None:
    row = conn.execute(_LATEST, (key,)).fetchone()
    return None if row is None else _Row(row[0], row[1], bool(row[2]), row[3])


@contextlib.contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction: every query inside sees the same committed state."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")


def _check_revision(conn: sqlite3.Connection, revision: int) -> int:
    """The revision a read is served at (``revision``, or now for 0), if it is still there."""
    current = conn.execute(_REVISION).fetchone()[0]
    compacted = conn.execute(_COMPACTED).fetchone()[0]
    if revision and revision < compacted:
        raise Compacted(f"revision {revision} has been compacted", compacted_revision=compacted)
    if revision > current:
        raise StoreError(f"revision {revision} is in the future (current: {current})")
    return revision or current


def _list(
    conn: sqlite3.Connection, *, prefix: str, revision: int, start_after: str | None, limit: int
) -> tuple[list[KeyValue], int, bool]:
    with _snapshot(conn):
        served = _check_revision(conn, revision)
        after = start_after if start_after is not None and start_after >= prefix else None
        rows = conn.execute(
            _LIST,
            {
                "lower": after or prefix,
                "skip": after,
                "upper": prefix_end(prefix),
                "revision": served,
                "limit": limit + 1 if limit else -1,
            },
        ).fetchall()
    more = bool(limit) and len(rows) > limit
    items = [KeyValue(key=k, value=v, create_revision=c, mod_revision=m) for k, v, c, m in rows[: limit or None]]
    return items, served, more


def _history(conn: sqlite3.Connection, *, prefix: str, after: int, upto: int) -> list[Event]:
    """The next events under ``prefix`` with ``after`` < revision <= ``upto``, oldest first."""
    with _snapshot(conn):
        compacted = conn.execute(_COMPACTED).fetchone()[0]
        if after < compacted:
            raise Compacted(f"revision {after} has been compacted", compacted_revision=compacted)
        rows = conn.execute(
            _HISTORY,
            {"after": after, "upto": upto, "prefix": prefix, "upper": prefix_end(prefix), "limit": _REPLAY_CHUNK},
        ).fetchall()
    return [
        Event(
            type="DELETE" if deleted else "PUT",
            key=key,
            revision=revision,
            value=None if deleted else value,
            prev_value=prev_value,
            create_revision=0 if deleted else create_revision,
        )
        for revision, key, deleted, value, create_revision, prev_value in rows
    ]


@dataclasses.dataclass(slots=True)
class _Write:
    apply: Callable[[], Any]  # runs on the writer thread, inside the batch's transaction
    future: asyncio.Future[Any]


class _Writer:
    """The thread that owns the writing connection and applies queued writes in batches."""

    def __init__(self, *, path: str, loop: asyncio.AbstractEventLoop, on_commit: Callable[..., None]) -> None:
        self._conn = _connect(path)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.executescript(_SCHEMA)
        self.revision = self._conn.execute(_REVISION).fetchone()[0]
        self.compacted = self._conn.execute(_COMPACTED).fetchone()[0]
        self._loop = loop
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._events: list[Event] = []
        self._thread = threading.Thread(target=self._run, name="podling-sqlite-writer", daemon=True)
        self._thread.start()

    def submit(self, write: _Write) -> None:
        self._queue.put(write)

    def stop(self) -> None:
        """Apply what is queued, then end the thread (blocking: call it off the loop)."""
        self._queue.put(None)
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        while True:
            batch, stop = self._take()
            if batch:
                self._commit(batch)
            if stop:
                return

    def _take(self) -> tuple[list[_Write], bool]:
        """Wait for one write, then take whatever else is queued; True once told to stop."""
        batch: list[_Write] = []
        write = self._queue.get()
        while write is not None:
            batch.append(write)
            if len(batch) == _MAX_BATCH:
                return batch, False
            try:
                write = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _commit(self, batch: list[_Write]) -> None:
        revision, compacted = self.revision, self.compacted
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for write in batch:
                try:
                    outcomes.append((write.future, write.apply(), None))
                except StoreError as err:
                    outcomes.append((write.future, None, err))
            self._conn.execute("COMMIT")
        except Exception as err:  # the batch is undone and fails as a whole; the thread lives on
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self.revision, self.compacted = revision, compacted
            self._events = []
            failure = StoreError(f"sqlite write failed: {err}")
            outcomes = [(write.future, None, failure) for write in batch]
        events, self._events = self._events, []
        self._loop.call_soon_threadsafe(self._on_commit, outcomes, events, self.revision, self.compacted)

    # ---- the writes; each runs inside the batch's transaction ----------------------------------

    def create(self, key: str, value: bytes) -> int:
        latest = _latest(self._conn, key=key)
        if latest is not None and not latest.deleted:
            raise KeyExists(key)
        return self._append(key=key, value=value, latest=latest)

    def update(self, key: str, value: bytes, *, revision: int) -> int:
        return self._append(key=key, value=value, latest=self._current(key, revision=revision))

    def delete(self, key: str, *, revision: int | None) -> int:
        return self._append(key=key, value=None, latest=self._current(key, revision=revision))

    def compact(self, revision: int) -> None:
        if revision <= self.compacted:
            return
        self._conn.execute(_COMPACT_SUPERSEDED, (self.compacted, revision))
        self._conn.execute(_COMPACT_TOMBSTONES, (self.compacted, revision))
        self._conn.execute(_SET_COMPACTED, (revision,))
        self.compacted = revision

    def _current(self, key: str, *, revision: int | None) -> _Row:
        latest = _latest(self._conn, key=key)
        if latest is None or latest.deleted:
            raise KeyNotFound(key)
        if revision is not None and latest.revision != revision:
            raise Conflict(
                f"{key}: revision {revision} is stale (current: {latest.revision})", current=latest.key_value(key)
            )
        return latest

    def _append(self, *, key: str, value: bytes | None, latest: _Row | None) -> int:
        """Append the key's next row (a tombstone when ``value`` is None) and its event."""
        self.revision += 1
        live = latest if latest is not None and not latest.deleted else None
        create_revision = live.create_revision if live is not None else self.revision
        prev_revision = latest.revision if latest is not None else 0
        self._conn.execute(_INSERT, (self.revision, key, create_revision, prev_revision, value is None, value))
        self._events.append(
            Event(
                type="DELETE" if value is None else "PUT",
                key=key,
                revision=self.revision,
                value=value,
                prev_value=live.value if live is not None else None,
                create_revision=0 if value is None else create_revision,
            )
        )
        return self.revision


class _Feed:
    """The live events under one prefix for one watch, queued on the event loop."""

    def __init__(self, *, prefix: str, start: int) -> None:
        self.prefix = prefix
        self.start = start  # the last revision published before this feed subscribed
        self.fell_behind = False
        self._queue: collections.deque[Event] = collections.deque()
        self._ended = False
        self._wakeup = asyncio.Event()

    def push(self, events: list[Event]) -> bool:
        """Queue the events under the prefix; False (and the feed ends) if it fell behind."""
        self._queue.extend(event for event in events if event.key.startswith(self.prefix))
        if len(self._queue) > _WATCH_BACKLOG:
            self._queue.clear()
            self.fell_behind = True
            self.end()
        self._wakeup.set()
        return not self.fell_behind

    def end(self) -> None:
        self._ended = True
        self._wakeup.set()

    async def events(self) -> AsyncIterator[Event]:
        while True:
            while self._queue:
                yield self._queue.popleft()
            if self._ended:
                return
            self._wakeup.clear()
            await self._wakeup.wait()


class SqliteStore(Store):
    """See the module docstring."""

    def __init__(self, *, path: str, loop: asyncio.AbstractEventLoop) -> None:
        """Blocking (creates the schema): use :meth:`open`."""
        self._loop = loop
        self._writer = _Writer(path=path, loop=loop, on_commit=self._on_commit)
        self._revision = self._writer.revision  # the last revision published to watchers
        self._compacted = self._writer.compacted
        self._readers = concurrent.futures.ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="podling-sqlite")
        self._connections: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        for _ in range(_READERS):
            self._connections.put(_connect(path))
        # Point reads run on the event loop's own thread: one indexed lookup costs less than
        # the hand-off to a reader thread and back (and the GIL convoy that comes with it).
        self._inline = _connect(path)
        self._feeds: set[_Feed] = set()
        self._closed = False

    @classmethod
    async def open(cls, *, path: str) -> SqliteStore:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return await asyncio.to_thread(cls, path=path, loop=asyncio.get_running_loop())

    # ---- reads ----------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        if self._closed:
            raise StoreError("the store is closed")
        latest = _latest(self._inline, key=key)
        return None if latest is None or latest.deleted else latest.key_value(key)

    async def list(
        self,
        prefix: str,
        *,
        revision: int = 0,
        start_after: str | None = None,
        limit: int = 0,
    ) -> tuple[list[KeyValue], int, bool]:
        return await self._read(
            functools.partial(_list, prefix=prefix, revision=revision, start_after=start_after, limit=limit)
        )

    async def current_revision(self) -> int:
        return self._revision

    async def compacted_revision(self) -> int:
        return self._compacted

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``query`` on a reader thread with a connection of its own."""
        if self._closed:
            raise StoreError("the store is closed")
        return await self._loop.run_in_executor(self._readers, self._with_connection, query)

    def _with_connection(self, query: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connections.get()
        try:
            return query(conn)
        finally:
            self._connections.put(conn)

    # ---- writes ---------------------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> int:
        return await self._write(functools.partial(self._writer.create, key, value))

    async def update(self, key: str, value: bytes, *, revision: int) -> int:
        return await self._write(functools.partial(self._writer.update, key, value, revision=revision))

    async def delete(self, key: str, *, revision: int | None = None) -> int:
        return await self._write(functools.partial(self._writer.delete, key, revision=revision))

    async def compact(self, revision: int) -> None:
        if revision > self._revision:
            raise StoreError(f"revision {revision} is in the future (current: {self._revision})")
        while self._compacted < revision:
            await self._write(functools.partial(self._writer.compact, min(self._compacted + _COMPACT_STEP, revision)))

    async def _write(self, apply: Callable[[], T]) -> T:
        """Queue ``apply`` for the writer thread; its result once its batch has committed."""
        if self._closed:
            raise StoreError("the store is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._writer.submit(_Write(apply=apply, future=future))
        return await future

    def _on_commit(
        self,
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
        events: list[Event],
        revision: int,
        compacted: int,
    ) -> None:
        """On the loop, per committed batch: publish the events, then settle the writes."""
        self._revision, self._compacted = revision, compacted
        if events:
            self._feeds = {feed for feed in self._feeds if feed.push(events)}
        for future, result, error in outcomes:
            if future.done():  # the caller was cancelled; the write stands
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    # ---- watch ----------------------------------------------------------------------------------

    async def watch(self, prefix: str, *, revision: int) -> AsyncIterator[Event]:
        last = revision
        while not self._closed:
            feed = _Feed(prefix=prefix, start=self._revision)
            self._feeds.add(feed)
            try:
                async for event in self._replay(prefix, after=last, upto=feed.start):
                    last = event.revision
                    yield event
                async for event in feed.events():
                    if event.revision > last:
                        last = event.revision
                        yield event
            finally:
                self._feeds.discard(feed)
            if not feed.fell_behind:
                return

    async def _replay(self, prefix: str, *, after: int, upto: int) -> AsyncIterator[Event]:
        """The log's events under ``prefix`` in (after, upto], read a chunk at a time."""
        while after < upto and not self._closed:
            events = await self._read(functools.partial(_history, prefix=prefix, after=after, upto=upto))
            for event in events:
                yield event
            if len(events) < _REPLAY_CHUNK:
                return
            after = events[-1].revision

    # ---- lifecycle ------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for feed in self._feeds:
            feed.end()
        self._feeds.clear()
        await asyncio.to_thread(self._writer.stop)
        await asyncio.to_thread(self._readers.shutdown)
        while not self._connections.empty():
            self._connections.get().close()
        self._inline.close()
