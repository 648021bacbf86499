"""The store interface: a versioned key-value log that every backend implements the same way.

Invariants every backend keeps (the conformance suite in tests/store checks each one):

* One global revision. Every successful write (create, update, delete) gets the next revision,
  strictly greater than every revision before it, across all keys. Revisions start at 1.
* Compare-and-swap. ``update`` and ``delete`` take the ``mod_revision`` the caller last saw;
  if the key changed since, the write fails with :class:`Conflict` and changes nothing.
* Watch from revision R yields every change with revision > R, exactly once, in revision
  order, with the value before the change (``prev_value``). A watch whose start revision
  has been compacted away raises :class:`Compacted` (the API turns it into 410 Gone).
* Consistent lists. ``list`` returns the keys under a prefix as they were at one revision,
  which it also returns, so a caller can page with ``start_after`` at that same revision and
  then watch from it without missing or repeating a change.

Keys are ``str`` (``/registry/<group>/<plural>/<namespace>/<name>``); values are opaque bytes.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncIterator
from typing import Literal


class StoreError(Exception):
    """Base of every error a store raises on purpose."""


class KeyExists(StoreError):
    """create() on a key that exists."""


class KeyNotFound(StoreError):
    """update()/delete() on a key that does not exist."""


class Conflict(StoreError):
    """update()/delete() whose expected revision is not the key's current mod_revision."""

    def __init__(self, message: str, *, current: KeyValue | None = None) -> None:
        super().__init__(message)
        self.current = current


class Compacted(StoreError):
    """A list or watch at a revision older than the compacted revision."""

    def __init__(self, message: str, *, compacted_revision: int) -> None:
        super().__init__(message)
        self.compacted_revision = compacted_revision


@dataclasses.dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One change. ``type`` is PUT (create or update) or DELETE."""

    type: Literal["PUT", "DELETE"]
    key: str
    revision: int
    value: bytes | None  # the new value; None for DELETE
    prev_value: bytes | None  # the value before the change; None for a create
    create_revision: int = 0  # of the key as it is after a PUT; 0 for DELETE

    @property
    def created(self) -> bool:
        return self.type == "PUT" and self.prev_value is None


class Store(abc.ABC):
    """An async, revisioned key-value store. See the module docstring for the invariants."""

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None:
        """The key's current value, or None."""

    @abc.abstractmethod
    async def list(
        self,
        prefix: str,
        *,
        revision: int = 0,
        start_after: str | None = None,
        limit: int = 0,
    ) -> tuple[list[KeyValue], int, bool]:
        """Keys under ``prefix`` in key order, as of ``revision`` (0: now).

        Returns ``(items, revision_served, more)``: ``more`` is True when ``limit`` cut the
        list. ``start_after`` skips every key <= it (for paging). A revision older than the
        compacted one raises :class:`Compacted`; one newer than the current one raises
        :class:`StoreError`.
        """

    @abc.abstractmethod
    async def create(self, key: str, value: bytes) -> int:
        """Create ``key``; returns the new revision. :class:`KeyExists` if present."""

    @abc.abstractmethod
    async def update(self, key: str, value: bytes, *, revision: int) -> int:
        """Replace ``key`` if its mod_revision is ``revision``; returns the new revision.

        :class:`KeyNotFound` if absent, :class:`Conflict` (carrying the current value) if the
        revision does not match.
        """

    @abc.abstractmethod
    async def delete(self, key: str, *, revision: int | None = None) -> int:
        """Delete ``key`` (only if its mod_revision is ``revision``, when given).

        Returns the revision of the delete. :class:`KeyNotFound` / :class:`Conflict` as
        for update.
        """

    @abc.abstractmethod
    def watch(self, prefix: str, *, revision: int) -> AsyncIterator[Event]:
        """Every change under ``prefix`` with revision > ``revision``, in order, forever.

        Raises :class:`Compacted` (on first iteration) when ``revision`` is older than the
        compacted revision, or later if compaction overtakes a watcher still catching up.
        A ``revision`` in the future is fine: the watch starts there. Closing the iterator
        (``aclose``) ends the watch; so does closing the store (the iterator just stops).
        """

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Forget the history before ``revision``: the state at ``revision`` and every later
        change are kept, so list/watch at ``revision`` still work and older ones raise
        :class:`Compacted`. Compacting at or below the compacted revision does nothing; a
        revision newer than the current one raises :class:`StoreError`.
        """

    @abc.abstractmethod
    async def current_revision(self) -> int:
        """The revision of the latest write (0 for an empty store)."""

    @abc.abstractmethod
    async def compacted_revision(self) -> int:
        """The latest revision compacted away (0 if never compacted)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and end every open watch."""


def prefix_end(prefix: str) -> bytes:
    """The exclusive end of the key range under ``prefix`` (etcd's ``range_end``), as bytes.

    Every key that starts with ``prefix`` sorts below it, every other key >= ``prefix`` at
    or above it (keys compare as their UTF-8 bytes). It need not be valid UTF-8: UTF-8 never
    contains the byte 0xFF, so incrementing the last byte cannot overflow, and b"\\xff"
    bounds every key when the prefix is empty.
    """
    raw = prefix.encode()
    return raw[:-1] + bytes([raw[-1] + 1]) if raw else b"\xff"


async def open_store(url: str, *, data_dir: str | None = None) -> Store:
    """Open the store a ``--store`` URL names.

    ``sqlite`` or ``sqlite:///path/to/db`` (default file: DATA_DIR/podling.db) and
    ``etcd://host:port[,host:port]``.
    """
    if url == "sqlite" or url.startswith("sqlite://"):
        from podling.store.sqlite import SqliteStore

        path = url.removeprefix("sqlite").removeprefix("://")
        if not path:
            if data_dir is None:
                raise ValueError("--store sqlite needs --data-dir (or sqlite:///PATH)")
            path = f"{data_dir}/podling.db"
        return await SqliteStore.open(path=path)
    if url.startswith("etcd://"):
        from podling.store.etcd import EtcdStore

        endpoints = [e for e in url.removeprefix("etcd://").split(",") if e]
        if not endpoints:
            raise ValueError(f"--store {url!r}: no etcd endpoint given")
        return await EtcdStore.open(endpoints=endpoints)
    raise ValueError(f"--store {url!r}: expected 'sqlite', 'sqlite:///PATH' or 'etcd://HOST:PORT[,HOST:PORT]'")
