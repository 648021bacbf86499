"""The store contract (podling/store/base.py), checked the same way on every backend.

Every test but the last few takes the parametrized ``store`` fixture, so it runs on SQLite and
on a real etcd. The backend-specific tests at the end cover what only one backend has:
SQLite's file across restarts and its slow-watcher catch-up, etcd's endpoint failover and
its watch stream surviving an etcd restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from podling.store import sqlite
from podling.store.base import Compacted, Conflict, Event, KeyExists, KeyNotFound, KeyValue, Store, StoreError
from podling.store.etcd import EtcdStore
from podling.store.sqlite import SqliteStore
from etcd_server import EtcdServer  # tests/, which tests/conftest.py puts on sys.path

P = "/registry/things/"  # the prefix most tests work under


async def take(events: AsyncIterator[Event], count: int) -> list[Event]:
    """The next ``count`` events, or fail after a while."""
    async with asyncio.timeout(20):
        return [await anext(events) for _ in range(count)]


def summary(events: list[Event]) -> list[tuple[str, str, int, bytes | None, bytes | None, int]]:
    return [(e.type, e.key, e.revision, e.value, e.prev_value, e.create_revision) for e in events]


# ---- single-key operations ----------------------------------------------------------------------


async def test_create_get_update_delete(store: Store) -> None:
    created = await store.create(P + "a", b"one")
    assert await store.get(P + "a") == KeyValue(P + "a", b"one", created, created)
    updated = await store.update(P + "a", b"two", revision=created)
    assert updated > created
    assert await store.get(P + "a") == KeyValue(P + "a", b"two", created, updated)
    deleted = await store.delete(P + "a", revision=updated)
    assert deleted > updated
    assert await store.get(P + "a") is None
    assert await store.current_revision() == deleted

    recreated = await store.create(P + "a", b"")  # a new life, and an empty value survives
    assert await store.get(P + "a") == KeyValue(P + "a", b"", recreated, recreated)
    assert await store.delete(P + "a") > recreated  # unconditional
    assert await store.get(P + "a") is None


async def test_create_on_existing_key_raises_key_exists(store: Store) -> None:
    revision = await store.create(P + "a", b"one")
    with pytest.raises(KeyExists):
        await store.create(P + "a", b"two")
    assert await store.get(P + "a") == KeyValue(P + "a", b"one", revision, revision)
    assert await store.current_revision() == revision


async def test_missing_key_raises_key_not_found(store: Store) -> None:
    revision = await store.create(P + "gone", b"x")
    await store.delete(P + "gone")
    for write in (
        store.update(P + "never", b"x", revision=revision),
        store.update(P + "gone", b"x", revision=revision),
        store.update(P + "never", b"x", revision=0),
        store.delete(P + "never"),
        store.delete(P + "gone", revision=revision),
    ):
        with pytest.raises(KeyNotFound):
            await write


async def test_stale_revision_conflicts_and_carries_current_value(store: Store) -> None:
    first = await store.create(P + "a", b"one")
    second = await store.update(P + "a", b"two", revision=first)
    current = KeyValue(P + "a", b"two", first, second)
    for write in (store.update(P + "a", b"three", revision=first), store.delete(P + "a", revision=first)):
        with pytest.raises(Conflict) as caught:
            await write
        assert caught.value.current == current
    assert await store.get(P + "a") == current
    assert await store.current_revision() == second


async def test_one_global_revision_across_keys(store: Store) -> None:
    revisions = [
        await store.create(P + "a", b"1"),
        await store.create(P + "b", b"1"),
        await store.create("/registry/other/c", b"1"),
    ]
    revisions.append(await store.update(P + "a", b"2", revision=revisions[0]))
    revisions.append(await store.delete(P + "b", revision=revisions[1]))
    assert revisions == sorted(set(revisions))
    assert revisions[0] >= 1
    assert await store.current_revision() == revisions[-1]
    assert await store.get(P + "a") == KeyValue(P + "a", b"2", revisions[0], revisions[3])


# ---- lists --------------------------------------------------------------------------------------


async def test_list_by_prefix_in_key_order(store: Store) -> None:
    inside = [P + name for name in ("b", "a", "c/d", "a0", "ä")]
    outside = ["/registry/things", "/registry/thingsx/a", "/registry/thing/a", "/registry/other/a"]
    for key in inside + outside:
        await store.create(key, key.encode())
    await store.delete(P + "a0")
    items, revision, more = await store.list(P)
    assert [kv.key for kv in items] == sorted(set(inside) - {P + "a0"})
    assert all(kv.value == kv.key.encode() for kv in items)
    assert (revision, more) == (await store.current_revision(), False)
    everything, _, _ = await store.list("")
    assert [kv.key for kv in everything] == sorted(set(inside + outside) - {P + "a0"})
    assert (await store.list("/registry/nothing/"))[0] == []


async def test_list_at_a_past_revision_shows_the_past(store: Store) -> None:
    a = await store.create(P + "a", b"1")
    b = await store.create(P + "b", b"1")
    then = await store.current_revision()
    await store.update(P + "a", b"2", revision=a)
    await store.delete(P + "b", revision=b)
    await store.create(P + "c", b"1")
    items, revision, _ = await store.list(P, revision=then)
    assert revision == then
    assert items == [KeyValue(P + "a", b"1", a, a), KeyValue(P + "b", b"1", b, b)]
    with pytest.raises(StoreError):
        await store.list(P, revision=await store.current_revision() + 10)


async def test_paging_at_a_fixed_revision_while_writes_happen(store: Store) -> None:
    for n in range(30):
        await store.create(f"{P}{n:02d}", b"old")
    snapshot, revision, _ = await store.list(P)

    async def churn() -> None:
        for n in range(0, 30, 3):
            kv = await store.get(f"{P}{n:02d}")
            assert kv is not None
            await store.update(kv.key, b"new", revision=kv.mod_revision)
            await store.delete(f"{P}{n + 1:02d}")
            await store.create(f"{P}{n:02d}x", b"new")

    writer = asyncio.create_task(churn())
    pages: list[list[KeyValue]] = []
    start_after, more = None, True
    while more:
        page, served, more = await store.list(P, revision=revision, start_after=start_after, limit=7)
        assert served == revision
        assert more == (len(pages) < 4)  # 30 keys: four full pages, then two
        pages.append(page)
        start_after = page[-1].key
        await asyncio.sleep(0.01)
    await writer
    assert [kv for page in pages for kv in page] == snapshot
    assert [len(page) for page in pages] == [7, 7, 7, 7, 2]
    now, _, _ = await store.list(P)
    assert len(now) == 30 and now != snapshot

    assert (await store.list(P, start_after="/registry/a"))[0] == now  # before the prefix: no effect
    assert (await store.list(P, start_after=P + "zz"))[0] == []
    assert (await store.list(P, limit=30))[2] is False


# ---- watches ------------------------------------------------------------------------------------


async def test_watch_delivers_every_change_once_in_order(store: Store) -> None:
    start = await store.current_revision()
    events = store.watch(P, revision=start)
    try:
        a = await store.create(P + "a", b"1")
        a2 = await store.update(P + "a", b"2", revision=a)
        b = await store.create(P + "b", b"1")
        await store.create("/registry/thingsx/a", b"outside")  # not under the prefix
        gone = await store.delete(P + "a", revision=a2)
        again = await store.create(P + "a", b"3")
        b_gone = await store.delete(P + "b")
        seen = await take(events, 6)
    finally:
        await events.aclose()
    assert summary(seen) == [
        ("PUT", P + "a", a, b"1", None, a),
        ("PUT", P + "a", a2, b"2", b"1", a),
        ("PUT", P + "b", b, b"1", None, b),
        ("DELETE", P + "a", gone, None, b"2", 0),
        ("PUT", P + "a", again, b"3", None, again),
        ("DELETE", P + "b", b_gone, None, b"1", 0),
    ]
    assert [e.created for e in seen] == [True, False, True, False, True, False]


async def test_watch_from_a_past_revision_replays_then_follows(store: Store) -> None:
    revisions = [await store.create(f"{P}{n}", b"x") for n in range(5)]
    events = store.watch(P, revision=revisions[1])
    try:
        replayed = await take(events, 3)
        live = await store.update(P + "0", b"y", revision=revisions[0])
        followed = await take(events, 1)
    finally:
        await events.aclose()
    assert [e.revision for e in replayed + followed] == revisions[2:] + [live]
    assert followed[0].prev_value == b"x"


async def test_reopened_watch_continues_without_gap_or_duplicate(store: Store) -> None:
    start = await store.create(P + "counter", b"0")
    writes = 300

    async def write() -> list[int]:
        revision, revisions = start, []
        for n in range(1, writes + 1):
            revision = await store.update(P + "counter", str(n).encode(), revision=revision)
            revisions.append(revision)
        return revisions

    writer = asyncio.create_task(write())
    seen: list[Event] = []
    last = start
    while len(seen) < writes:  # "reconnect" every 40 events, from the last revision seen
        events = store.watch(P, revision=last)
        try:
            seen += await take(events, min(40, writes - len(seen)))
        finally:
            await events.aclose()
        last = seen[-1].revision
    assert [e.revision for e in seen] == await writer
    assert [e.value for e in seen] == [str(n).encode() for n in range(1, writes + 1)]
    assert [e.prev_value for e in seen] == [str(n).encode() for n in range(writes)]


async def test_watch_sees_concurrent_writers_in_revision_order(store: Store) -> None:
    events = store.watch(P, revision=await store.current_revision())
    try:
        revisions = await asyncio.gather(*(store.create(f"{P}{n:04d}", b"x") for n in range(300)))
        seen = await take(events, 300)
    finally:
        await events.aclose()
    assert [e.revision for e in seen] == sorted(revisions)
    assert {e.key for e in seen} == {f"{P}{n:04d}" for n in range(300)}


async def test_many_open_watches_starve_nothing(store: Store) -> None:
    watches = [store.watch(f"{P}{n}/", revision=await store.current_revision()) for n in range(150)]
    try:
        revisions = await asyncio.gather(*(store.create(f"{P}{n}/a", b"x") for n in range(150)))
        seen = await asyncio.gather(*(take(events, 1) for events in watches))
        assert [events[0].revision for events in seen] == revisions
        assert await store.get(f"{P}0/a") is not None
    finally:
        for events in watches:
            await events.aclose()


async def test_close_ends_open_watches(store: Store) -> None:
    events = store.watch(P, revision=await store.current_revision())
    await store.create(P + "a", b"x")
    assert len(await take(events, 1)) == 1
    waiting = asyncio.create_task(anext(events))
    await asyncio.sleep(0.1)
    await store.close()
    async with asyncio.timeout(10):
        with pytest.raises(StopAsyncIteration):
            await waiting


# ---- compaction ---------------------------------------------------------------------------------


async def test_compaction_forgets_history_but_keeps_current_values(store: Store) -> None:
    a = await store.create(P + "a", b"1")
    a2 = await store.update(P + "a", b"2", revision=a)
    b = await store.create(P + "b", b"1")
    compacted = await store.delete(P + "b", revision=b)
    c = await store.create(P + "c", b"1")
    await store.compact(compacted)
    assert await store.compacted_revision() == compacted

    for old in (a, a2, compacted - 1):
        with pytest.raises(Compacted) as caught:
            await store.list(P, revision=old)
        assert caught.value.compacted_revision == compacted
    for old in (0, a, compacted - 1):
        with pytest.raises(Compacted) as caught:
            await anext(store.watch(P, revision=old))
        assert caught.value.compacted_revision == compacted

    at_compaction, _, _ = await store.list(P, revision=compacted)
    assert at_compaction == [KeyValue(P + "a", b"2", a, a2)]
    now, _, _ = await store.list(P)
    assert now == [KeyValue(P + "a", b"2", a, a2), KeyValue(P + "c", b"1", c, c)]
    assert await store.get(P + "a") == KeyValue(P + "a", b"2", a, a2)

    events = store.watch(P, revision=compacted)
    try:
        assert summary(await take(events, 1)) == [("PUT", P + "c", c, b"1", None, c)]
        a3 = await store.update(P + "a", b"3", revision=a2)
        assert summary(await take(events, 1)) == [("PUT", P + "a", a3, b"3", b"2", a)]
    finally:
        await events.aclose()

    await store.compact(a)  # older than the compacted revision: nothing happens
    await store.compact(compacted)
    assert await store.compacted_revision() == compacted
    with pytest.raises(StoreError):
        await store.compact(await store.current_revision() + 10)


async def test_compacted_revision_starts_at_zero(store: Store) -> None:
    assert await store.compacted_revision() == 0
    await store.create(P + "a", b"1")
    assert await store.compacted_revision() == 0


# ---- concurrency --------------------------------------------------------------------------------


async def test_a_thousand_concurrent_creates_lose_nothing(store: Store) -> None:
    keys = [f"{P}{n:04d}" for n in range(1000)]
    revisions = await asyncio.gather(*(store.create(key, key.encode()) for key in keys))
    assert len(set(revisions)) == 1000
    assert await store.current_revision() == max(revisions)
    items, _, _ = await store.list(P)
    assert [(kv.key, kv.value, kv.mod_revision) for kv in items] == [
        (key, key.encode(), revision) for key, revision in zip(keys, revisions)
    ]


async def test_concurrent_compare_and_swap_increments_lose_nothing(store: Store) -> None:
    key, writers = P + "counter", 100
    await store.create(key, b"0")

    async def increment() -> int:
        current = await store.get(key)
        assert current is not None
        while True:
            try:
                return await store.update(key, str(int(current.value) + 1).encode(), revision=current.mod_revision)
            except Conflict as conflict:
                assert conflict.current is not None
                current = conflict.current

    revisions = await asyncio.gather(*(increment() for _ in range(writers)))
    final = await store.get(key)
    assert final is not None and final.value == str(writers).encode()
    assert len(set(revisions)) == writers and final.mod_revision == max(revisions)


# ---- SQLite only --------------------------------------------------------------------------------


async def test_sqlite_reopen_keeps_keys_compaction_and_revision(sqlite_path: str) -> None:
    store = await SqliteStore.open(path=sqlite_path)
    try:
        kept = await store.create(P + "kept", b"x")
        gone = await store.create(P + "gone", b"x")
        last = await store.delete(P + "gone", revision=gone)  # the newest row: a tombstone
        await store.compact(last)  # ... which compaction removes
    finally:
        await store.close()

    store = await SqliteStore.open(path=sqlite_path)
    try:
        assert await store.get(P + "kept") == KeyValue(P + "kept", b"x", kept, kept)
        assert await store.get(P + "gone") is None
        assert await store.compacted_revision() == last
        assert await store.current_revision() == last
        with pytest.raises(Compacted):
            await store.list(P, revision=kept)
        assert await store.create(P + "new", b"x") == last + 1
    finally:
        await store.close()


async def test_sqlite_slow_watcher_catches_up_without_blocking_writers(
    sqlite_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "_WATCH_BACKLOG", 20)
    store = await SqliteStore.open(path=sqlite_path)
    try:
        events = store.watch(P, revision=0)
        first = await store.create(P + "first", b"x")
        assert [e.revision for e in await take(events, 1)] == [first]
        async with asyncio.timeout(10):  # the watcher reads nothing meanwhile
            revisions = [await store.create(f"{P}{n:03d}", b"x") for n in range(500)]
        assert [e.revision for e in await take(events, 500)] == revisions
        later = await store.create(P + "later", b"x")
        assert [e.revision for e in await take(events, 1)] == [later]
        await events.aclose()
    finally:
        await store.close()


# ---- etcd only ----------------------------------------------------------------------------------


async def test_etcd_fails_over_to_the_next_endpoint(etcd_server: EtcdServer) -> None:
    dead = EtcdServer(etcd_server.data_dir / "never-started").endpoint
    store = await EtcdStore.open(endpoints=[dead, etcd_server.endpoint])
    try:
        revision = await store.create(P + "a", b"x")
        assert await store.get(P + "a") == KeyValue(P + "a", b"x", revision, revision)
    finally:
        await store.close()
    with pytest.raises(StoreError):
        await EtcdStore.open(endpoints=[dead])


async def test_etcd_watch_resumes_after_etcd_restarts(etcd_server: EtcdServer) -> None:
    store = await EtcdStore.open(endpoints=[etcd_server.endpoint])
    try:
        events = store.watch(P, revision=0)
        before = await store.create(P + "before", b"x")
        assert [e.revision for e in await take(events, 1)] == [before]
        await asyncio.to_thread(etcd_server.stop)
        await asyncio.to_thread(etcd_server.start)
        after = [await store.create(f"{P}after{n}", b"x") for n in range(3)]
        assert [e.revision for e in await take(events, 3)] == after
        await events.aclose()
    finally:
        await store.close()
