"""Object <-> store bytes.

Objects are stored as compact JSON without ``metadata.resourceVersion``: the store's
mod_revision *is* the resourceVersion, so it is set on every read and can never disagree
with the store.
"""

from __future__ import annotations

import json
from typing import Any

from podling.store.base import KeyValue

Obj = dict[str, Any]

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(obj: Obj) -> bytes:
    metadata = obj.get("metadata") or {}
    rv = metadata.pop("resourceVersion", None)
    try:
        return _encoder.encode(obj).encode()
    finally:
        if rv is not None:
            metadata["resourceVersion"] = rv


def decode(value: bytes, *, revision: int) -> Obj:
    obj = json.loads(value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return obj


def from_kv(kv: KeyValue) -> Obj:
    return decode(kv.value, revision=kv.mod_revision)


def dumps(obj: Any) -> bytes:
    """Response bodies: compact JSON bytes."""
    return _encoder.encode(obj).encode()
