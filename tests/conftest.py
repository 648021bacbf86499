"""Shared fixtures: real servers for the end-to-end tests.

``store_url`` is parametrized over both stores, so every test that asks for ``podling``
runs once on SQLite and once on a real etcd this fixture starts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from etcd_server import EtcdServer  # noqa: E402
from podling_process import PodlingProcess  # noqa: E402


@pytest.fixture(scope="module", params=["sqlite", "etcd"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite"
        return
    etcd = EtcdServer(tmp_path_factory.mktemp("etcd"))
    endpoint = etcd.start()
    try:
        yield f"etcd://{endpoint}"
    finally:
        etcd.stop()


@pytest.fixture(scope="module")
def podling(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodlingProcess]:
    """A running ``podling apiserver`` for a test module (on each store)."""
    server = PodlingProcess(data_dir=tmp_path_factory.mktemp("podling"), store=store_url).start()
    try:
        yield server
    finally:
        server.stop()
