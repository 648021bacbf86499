"""What ``podling app|diff|sync`` print and decide, as pure functions: lines, tables, recaps,
the kubeconfig it picks, the sync request it writes, and which revision a rollback takes.

The plans in these tests are real ones (``plan_object``), so the diff headers are the ones users see.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from podling.cli import app as cli
from podling.cli.main import _parser
from podling.gitops.apply import ObjectResult
from podling.gitops.operator import recap
from podling.gitops.plan import Key, desired_object, plan_object

Obj = dict[str, Any]
WEB = Key("apps", "Deployment", "shop", "web")
NS = Key("", "Namespace", "", "shop")


def application(*, status: Obj | None = None, automated: Obj | None = None, name: str = "web") -> Obj:
    spec: Obj = {"source": {"repoURL": "https://git.example/shop.git", "targetRevision": "main", "path": "apps"},
                 "destination": {"namespace": "shop"}}
    if automated is not None:
        spec["syncPolicy"] = {"automated": automated}
    return {"apiVersion": "podling.io/v1alpha1", "kind": "Application",
            "metadata": {"name": name, "namespace": "argo"}, "spec": spec, "status": status or {}}


# ---- result lines and recap --------------------------------------------------------------


def test_result_lines_are_ansible_style() -> None:
    assert cli.result_line(ObjectResult(key=WEB, action="unchanged"), dry_run=False) == "ok: [Deployment/shop/web]"
    assert cli.result_line(ObjectResult(key=WEB, action="updated"), dry_run=False) == "changed: [Deployment/shop/web]"
    assert cli.result_line(ObjectResult(key=NS, action="created"), dry_run=False) == "created: [Namespace/shop]"
    assert cli.result_line(ObjectResult(key=WEB, action="pruned", message="already gone"), dry_run=False) \
        == "pruned: [Deployment/shop/web] (already gone)"
    assert cli.result_line(ObjectResult(key=WEB, action="failed", message="422 Invalid: spec.replicas"),
                           dry_run=False) == "failed: [Deployment/shop/web]: 422 Invalid: spec.replicas"


def test_dry_run_lines_leave_out_the_nothing_written_note_but_keep_failures() -> None:
    note = "dry run: nothing written"
    assert cli.result_line(ObjectResult(key=WEB, action="updated", message=note), dry_run=True) \
        == "changed: [Deployment/shop/web]"
    assert cli.result_line(ObjectResult(key=WEB, action="failed", message="bad"), dry_run=True) \
        == "failed: [Deployment/shop/web]: bad"


def test_recap_counts_like_ansible() -> None:
    results = [ObjectResult(key=WEB, action=action)
               for action in ("unchanged", "unchanged", "updated", "created", "pruned", "failed")]
    assert recap(results) == "ok=2 changed=3 created=1 pruned=1 failed=1"


def test_a_plan_diff_names_live_and_desired() -> None:
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "site", "namespace": "shop"},
                "data": {"a": "1"}}
    desired = desired_object(manifest, app="shop")
    live = {**desired_object({**manifest, "data": {"a": "0"}}, app="shop"),
            "metadata": {**desired["metadata"], "resourceVersion": "7", "uid": "u"}}
    plan = plan_object(desired=desired, live=live, last_applied=None)
    assert plan.action == "update"
    lines = plan.diff.splitlines()
    assert lines[:2] == ["--- live/ConfigMap/shop/site", "+++ desired/ConfigMap/shop/site"]
    assert "-  a: '0'" in lines and "+  a: '1'" in lines


# ---- tables ------------------------------------------------------------------------------


def test_table_aligns_columns_three_spaces_apart() -> None:
    assert cli.table(["NAME", "X"], [["a", "1"], ["longer", ""]]).splitlines() == [
        "NAME     X",
        "a        1",
        "longer",
    ]


def test_app_list_table() -> None:
    synced = application(status={"sync": {"status": "Synced", "revision": "0123456789abcdef" * 2 + "01234567"},
                                 "health": {"status": "Healthy"}})
    fresh = application(name="api")
    assert cli.apps_table([synced, fresh], all_namespaces=False).splitlines() == [
        "NAME   SYNC STATUS   HEALTH    REVISION   REPO",
        "api    Unknown       Unknown   <none>     https://git.example/shop.git",
        "web    Synced        Healthy   0123456    https://git.example/shop.git",
    ]
    assert cli.apps_table([fresh], all_namespaces=True).splitlines()[0].split() == \
        ["NAMESPACE", "NAME", "SYNC", "STATUS", "HEALTH", "REVISION", "REPO"]
    assert cli.apps_table([fresh], all_namespaces=True).splitlines()[1].split()[:2] == ["argo", "api"]


def test_history_table_is_oldest_first() -> None:
    app = application(status={"history": [
        {"id": 2, "revision": "b" * 40, "deployedAt": "2025-01-02T00:00:00Z", "result": "Failed"},
        {"id": 1, "revision": "a" * 40, "deployedAt": "2025-01-01T00:00:00Z", "result": "Succeeded"},
    ]})
    rows = [line.split() for line in cli.history_table(app).splitlines()]
    assert rows == [["ID", "DATE", "REVISION", "RESULT"],
                    ["1", "2025-01-01T00:00:00Z", "a" * 40, "Succeeded"],
                    ["2", "2025-01-02T00:00:00Z", "b" * 40, "Failed"]]


def test_describe_shows_policy_operation_conditions_and_resources() -> None:
    app = application(automated={"prune": True, "selfHeal": True}, status={
        "sync": {"status": "OutOfSync", "revision": "c" * 40},
        "health": {"status": "Degraded", "message": "pod failed"},
        "operationState": {"id": "req-1", "phase": "Error", "revision": "c" * 40,
                           "message": "revision ccc is not valid, nothing was applied:\n"
                                      "apps/web.yaml:14: Deployment/web: spec.replicas: Invalid value",
                           "startedAt": "2025-01-01T00:00:00Z", "finishedAt": "2025-01-01T00:00:01Z"},
        "conditions": [{"type": "InvalidManifest", "status": "True", "reason": "InvalidManifest",
                        "message": "revision ccc is not valid, nothing was applied:\n"
                                   "apps/web.yaml:14: Deployment/web: spec.replicas: Invalid value",
                        "lastTransitionTime": "2025-01-01T00:00:01Z"}],
        "resources": [{"group": "apps", "version": "v1", "kind": "Deployment", "namespace": "shop", "name": "web",
                       "status": "OutOfSync", "health": "Degraded", "message": "pod failed"}],
    })
    text = cli.describe(app)
    lines = text.splitlines()
    assert "Name:          argo/web" in lines
    assert "Sync Policy:   Automated (Prune, SelfHeal)" in lines
    assert f"Sync Status:   OutOfSync from main ({'c' * 7})" in lines
    assert "Health Status: Degraded: pod failed" in lines
    assert "Operation:     Sync (request req-1)" in lines
    assert "Phase:         Error" in lines
    assert "               apps/web.yaml:14: Deployment/web: spec.replicas: Invalid value" in lines
    assert "  InvalidManifest (since 2025-01-01T00:00:01Z):" in lines
    assert "    apps/web.yaml:14: Deployment/web: spec.replicas: Invalid value" in lines
    assert lines[-2].split() == ["GROUP", "KIND", "NAMESPACE", "NAME", "STATUS", "HEALTH", "MESSAGE"]
    assert lines[-1].split() == ["apps", "Deployment", "shop", "web", "OutOfSync", "Degraded", "pod", "failed"]


def test_describe_a_new_manual_application() -> None:
    lines = cli.describe(application()).splitlines()
    assert "Sync Policy:   Manual" in lines
    assert "Sync Status:   Unknown" in lines
    assert not any(line.startswith(("Operation:", "Conditions:")) for line in lines)


# ---- requests ----------------------------------------------------------------------------


def test_sync_request_is_the_operators_json() -> None:
    text = cli.sync_request(revision="a" * 40, prune=True, request_id="42")
    assert json.loads(text) == {"id": "42", "revision": "a" * 40, "prune": True}
    assert json.loads(cli.sync_request(revision="", prune=False, request_id="x"))["revision"] == ""


def test_progress_waits_for_the_requests_own_id() -> None:
    app = application(status={"sync": {"status": "OutOfSync"}, "health": {"status": "Healthy"},
                              "operationState": {"id": "older", "phase": "Succeeded", "message": "done"}})
    assert cli.progress_line(app, request_id="mine") == "waiting for the operator (sync OutOfSync, health Healthy)"
    app["status"]["operationState"] = {"id": "mine", "phase": "Running", "message": "wave 0\nmore"}
    assert cli.progress_line(app, request_id="mine") == "Running: wave 0 (sync OutOfSync, health Healthy)"


HISTORY = [{"id": 1, "revision": "a" * 40}, {"id": 2, "revision": "b" * 40}, {"id": 3, "revision": "c" * 40}]


def test_rollback_takes_the_entry_before_the_last_or_the_one_named() -> None:
    app = application(status={"history": list(reversed(HISTORY))})
    assert cli.rollback_target(app, history_id=None)["revision"] == "b" * 40
    assert cli.rollback_target(app, history_id=1)["revision"] == "a" * 40
    with pytest.raises(cli.CliError, match=r"no history entry 9 \(IDs: 1, 2, 3\)"):
        cli.rollback_target(app, history_id=9)
    with pytest.raises(cli.CliError, match="no earlier sync"):
        cli.rollback_target(application(status={"history": HISTORY[:1]}), history_id=None)


@pytest.mark.parametrize("automated", [{}, {"prune": True}])
def test_rollback_is_refused_while_sync_is_automated(automated: Obj) -> None:
    app = application(automated=automated, status={"history": HISTORY})
    with pytest.raises(cli.CliError, match="rollback cannot be initiated when auto-sync is enabled"):
        cli.rollback_target(app, history_id=1)


# ---- configuration and names -------------------------------------------------------------


def test_kubeconfig_from_the_environment_then_data_then_home(tmp_path: Path) -> None:
    home, cwd = tmp_path / "home", tmp_path / "work"
    cwd.mkdir()
    assert cli.default_kubeconfig(environ={}, cwd=cwd, home=home) == home / ".kube" / "config"
    (cwd / "data").mkdir()
    (cwd / "data" / "kubeconfig").write_text("{}")
    assert cli.default_kubeconfig(environ={}, cwd=cwd, home=home) == cwd / "data" / "kubeconfig"
    listed = tmp_path / "b.yaml"
    listed.write_text("{}")
    assert cli.default_kubeconfig(environ={"KUBECONFIG": f"{tmp_path / 'a.yaml'}:{listed}"}, cwd=cwd, home=home) \
        == listed
    assert cli.default_kubeconfig(environ={"KUBECONFIG": str(tmp_path / "none.yaml")}, cwd=cwd, home=home) \
        == tmp_path / "none.yaml"


@pytest.mark.parametrize(("name", "ok"), [("web", True), ("my.app_2", True), ("a" * 63, True), ("a" * 64, False),
                                           ("-web", False), ("my app", False), ("", False)])
def test_app_names_must_be_label_values(name: str, ok: bool) -> None:
    assert cli.valid_app_name(name) is ok


def _parse(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(list(argv))


def test_the_commands_parse_as_documented() -> None:
    args = _parse("sync", "apps", "--check", "--diff", "--prune", "-n", "shop", "--app", "web")
    assert (args.command, args.path, args.check, args.diff, args.prune, args.namespace, args.app) == \
        ("sync", "apps", True, True, True, "shop", "web")
    args = _parse("app", "sync", "web", "--revision", "v1", "--dry-run", "--timeout", "5")
    assert (args.app_command, args.name, args.revision, args.dry_run, args.timeout) == ("sync", "web", "v1", True, 5.0)
    assert _parse("app", "rollback", "web", "3").id == 3
    assert _parse("app", "list", "-A").all_namespaces
    assert {"app", "diff", "sync"} == cli.COMMANDS
    with pytest.raises(SystemExit):
        _parse("app", "sync", "web", "--timeout", "0")
