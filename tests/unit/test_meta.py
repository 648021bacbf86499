"""Object helpers: metadata readers, owner references, keys, times and conditions."""

from __future__ import annotations

import datetime
import re
import uuid

import pytest

from podling.api import meta

RS = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1", "namespace": "prod", "uid": "u-rs"}}
POD = {
    "metadata": {
        "name": "web-1-abcde",
        "namespace": "prod",
        "labels": {"app": "web"},
        "annotations": {"a": "b"},
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "u-cm"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u-rs", "controller": True},
        ],
    }
}


def test_readers() -> None:
    assert (meta.name(POD), meta.namespace(POD)) == ("web-1-abcde", "prod")
    assert meta.labels(POD) == {"app": "web"} and meta.annotations(POD) == {"a": "b"}
    assert len(meta.owner_references(POD)) == 2
    assert meta.controller_of(POD)["uid"] == "u-rs"
    assert meta.object_key(POD) == "prod/web-1-abcde"
    assert meta.object_key({"metadata": {"name": "node-a"}}) == "node-a"
    for partial in ({}, {"metadata": None}, {"metadata": {"labels": None}}):
        assert (meta.name(partial), meta.namespace(partial), meta.labels(partial)) == ("", "", {})
        assert meta.annotations(partial) == {} and meta.owner_references(partial) == ()
        assert meta.controller_of(partial) is None


def test_keys_round_trip() -> None:
    assert meta.split_key(meta.object_key(POD)) == ("prod", "web-1-abcde")
    assert meta.split_key("node-a") == ("", "node-a")


def test_controller_ref() -> None:
    ref = meta.controller_ref(RS)
    assert ref == {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u-rs",
                   "controller": True, "blockOwnerDeletion": True}
    assert meta.controller_of({"metadata": {"ownerReferences": [ref]}}) == ref


def test_uid_and_times() -> None:
    assert uuid.UUID(meta.new_uid()) and meta.new_uid() != meta.new_uid()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta.now_rfc3339())
    moment = datetime.datetime(2024, 1, 2, 3, 4, 5, 678, tzinfo=datetime.timezone.utc)
    assert meta.format_time(moment) == "2024-01-02T03:04:05Z"
    assert meta.format_time(moment.astimezone(datetime.timezone(datetime.timedelta(hours=2)))) == "2024-01-02T03:04:05Z"
    assert meta.parse_time("2024-01-02T03:04:05Z") == moment.replace(microsecond=0)
    assert meta.parse_time("2024-01-02T05:04:05.000678+02:00") == moment
    assert meta.parse_time("2024-01-02T03:04:05.123456789Z").microsecond == 123456


@pytest.mark.parametrize("text", ["2024-01-02", "2024-01-02T03:04:05", "yesterday", "", None])
def test_parse_time_errors(text: object) -> None:
    with pytest.raises(ValueError, match="want RFC 3339"):
        meta.parse_time(text)  # type: ignore[arg-type]


def test_conditions() -> None:
    status: dict = {}
    assert meta.get_condition(status, "Ready") is None
    assert meta.set_condition(status, type="Ready", status="False", reason="Starting")
    first = meta.get_condition(status, "Ready")
    assert first is not None and first["reason"] == "Starting" and "message" not in first
    first["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    assert not meta.set_condition(status, type="Ready", status="False", reason="Starting")
    assert meta.set_condition(status, type="Ready", status="False", message="pulling")
    assert first == {"type": "Ready", "status": "False", "message": "pulling",
                     "lastTransitionTime": "2000-01-01T00:00:00Z"}
    assert meta.set_condition(status, type="Ready", status="True")
    assert first["lastTransitionTime"] != "2000-01-01T00:00:00Z" and "message" not in first
    assert meta.set_condition(status, type="PodScheduled", status="True")
    assert [c["type"] for c in status["conditions"]] == ["Ready", "PodScheduled"]
