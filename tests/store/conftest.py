"""Fixtures for the store conformance suite: every test runs once per backend.

Each test gets a fresh store: a new SQLite file, or a new etcd process (it starts in a
fraction of a second), so no test sees another's keys, revisions or compaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from podling.store.base import Store
from podling.store.etcd import EtcdStore
from podling.store.sqlite import SqliteStore
from etcd_server import EtcdServer  # tests/, which tests/conftest.py puts on sys.path


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path / "etcd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> str:
    return str(tmp_path / "podling.db")


@pytest.fixture(params=["sqlite", "etcd"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        opened: Store = await SqliteStore.open(path=request.getfixturevalue("sqlite_path"))
    else:
        opened = await EtcdStore.open(endpoints=[request.getfixturevalue("etcd_server").endpoint])
    try:
        yield opened
    finally:
        await opened.close()
