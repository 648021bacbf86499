"""Restarting on the same data dir keeps every object, and resourceVersions keep increasing."""

from __future__ import annotations

from pathlib import Path

import pytest

from podling_process import PodlingProcess

pytestmark = pytest.mark.e2e


def test_restart_keeps_objects(tmp_path: Path) -> None:
    server = PodlingProcess(data_dir=tmp_path).start()
    try:
        server.kubectl("create", "namespace", "keep")
        server.kubectl("create", "configmap", "kept", "-n", "keep", "--from-literal=a=1")
        before = server.kubectl_json("get", "configmap", "kept", "-n", "keep")
    finally:
        assert server.stop() == 0  # SIGTERM is a clean shutdown
    server.start()
    try:
        after = server.kubectl_json("get", "configmap", "kept", "-n", "keep")
        assert after["metadata"]["uid"] == before["metadata"]["uid"]
        assert after["data"] == {"a": "1"}
        server.kubectl("create", "configmap", "new", "-n", "keep")
        newer = server.kubectl_json("get", "configmap", "new", "-n", "keep")
        assert int(newer["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    finally:
        server.stop()
