"""`podling validate` as a user runs it: the installed command, real files, exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podling.cli.main", "validate", *map(str, paths)],
                          capture_output=True, text=True, timeout=60)


def test_broken_manifest_names_file_line_and_path(tmp_path: Path) -> None:
    good = tmp_path / "apps" / "good.yaml"
    good.parent.mkdir()
    good.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\ndata:\n  a: b\n")
    bad = tmp_path / "apps" / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok2\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: three\n"
        "  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n"
        "    spec:\n      containers:\n      - image: nginx\n"
    )
    result = _validate(tmp_path / "apps")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert f"{bad}:11: Deployment/web: spec.replicas:" in out, out
    assert f"{bad}:17: Deployment/web: spec.template.spec.containers[0].name: Required value" in out, out
    assert str(good) not in out


def test_valid_manifests_exit_zero(tmp_path: Path) -> None:
    manifest = tmp_path / "ok.yaml"
    manifest.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: fine\n")
    result = _validate(manifest)
    assert result.returncode == 0, result.stdout + result.stderr
