"""``podling diff|sync PATH`` and ``podling app …`` as a user runs them: the installed command
as a subprocess, a real ``podling apiserver``, real git repositories made with the git CLI,
kubectl for everything a user would do by hand, and (in the last test) a real ``podling operator``.

Without an operator, the Application commands are checked up to what the CLI itself owns: the
plan it computes from git, the tables it prints from a status written through the status
subresource, and the sync request it leaves on the Application.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from podling_process import PodlingProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodlingProcess]:
    process = PodlingProcess(data_dir=tmp_path_factory.mktemp("podling")).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def ns(server: PodlingProcess) -> str:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    server.kubectl("create", "namespace", name)
    return name


def podling(server: PodlingProcess, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``podling ARGS --kubeconfig K`` in ``cwd``, its git cache under ``cwd``."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / ".cache")}
    env.pop("KUBECONFIG", None)
    return subprocess.run([sys.executable, "-m", "podling.cli.main", *args, "--kubeconfig", str(server.kubeconfig)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def configmap(name: str, **data: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n" + "".join(
        f"  {key}: {json.dumps(value)}\n" for key, value in data.items())


DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: podling/busybox:1.35
        command: [httpd, -f, -p, "80"]
"""


def app_labels(server: PodlingProcess, ns: str, kind: str) -> dict[str, str]:
    """name → podling.io/app label of every ``kind`` in ``ns``."""
    items = server.kubectl_json("get", kind, "-n", ns)["items"]
    return {item["metadata"]["name"]: (item["metadata"].get("labels") or {}).get("podling.io/app", "")
            for item in items}


# ---- podling diff|sync PATH ----------------------------------------------------------------


def test_local_sync_create_noop_change_prune_and_invalid(server: PodlingProcess, ns: str, tmp_path: Path) -> None:
    web = tmp_path / "web"
    write(web / "site.yaml", configmap("site", **{"index.html": "<h1>one</h1>\n"}))
    write(web / "extra.yaml", configmap("extra", k="v"))
    write(web / "deploy" / "web.yaml", DEPLOYMENT.format(replicas=2))

    # diff before anything exists: all created, exit 1, and nothing written.
    result = podling(server, "diff", "web", "-n", ns, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"created: [ConfigMap/{ns}/site]" in result.stdout
    assert f"--- live/apps/Deployment/{ns}/web\n+++ desired/apps/Deployment/{ns}/web\n" in result.stdout
    assert result.stdout.rstrip().endswith("ok=0 changed=3 created=3 pruned=0 failed=0")
    assert app_labels(server, ns, "configmaps") == {}

    result = podling(server, "sync", "web", "-n", ns, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"created: [Deployment/{ns}/web]" in result.stdout
    assert result.stdout.rstrip().endswith("ok=0 changed=3 created=3 pruned=0 failed=0")
    assert app_labels(server, ns, "configmaps") == {"site": "web", "extra": "web"}  # the directory's name

    # A no-op resync: every object ok, exit 0, in check mode and for real.
    for args in (("sync", "web", "--check"), ("diff", "web"), ("sync", "web")):
        result = podling(server, *args, "-n", ns, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert sorted(result.stdout.split("\n\n")[0].splitlines()) == [
            f"ok: [ConfigMap/{ns}/extra]", f"ok: [ConfigMap/{ns}/site]", f"ok: [Deployment/{ns}/web]"]
        assert result.stdout.rstrip().endswith("ok=3 changed=0 created=0 pruned=0 failed=0")

    # Objects nobody synced from this directory: made by hand, and another app's.
    server.kubectl("create", "configmap", "by-hand", "-n", ns, "--from-literal=k=v")
    write(tmp_path / "other" / "cm.yaml", configmap("other-cm", k="v"))
    assert podling(server, "sync", "other", "-n", ns, cwd=tmp_path).returncode == 0

    # A change: a diff, exit 1, nothing written in check mode.
    write(web / "site.yaml", configmap("site", **{"index.html": "<h1>two</h1>\n"}))
    result = podling(server, "sync", "web", "--check", "--diff", "-n", ns, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"changed: [ConfigMap/{ns}/site]\n--- live/ConfigMap/{ns}/site\n+++ desired/ConfigMap/{ns}/site\n" \
        in result.stdout
    assert "-    <h1>one</h1>\n" in result.stdout and "+    <h1>two</h1>\n" in result.stdout
    assert result.stdout.rstrip().endswith("ok=2 changed=1 created=0 pruned=0 failed=0")
    site = server.kubectl_json("get", "configmap", "site", "-n", ns)
    assert site["data"]["index.html"] == "<h1>one</h1>\n"
    result = podling(server, "sync", "web", "--check", "-n", ns, cwd=tmp_path)  # without --diff: no diff
    assert result.returncode == 1 and "--- live/" not in result.stdout

    # Removed from the directory: reported, pruned only with --prune, and only this app's objects.
    (web / "extra.yaml").unlink()
    result = podling(server, "sync", "web", "-n", ns, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"changed: [ConfigMap/{ns}/site]" in result.stdout
    assert f"extra: [ConfigMap/{ns}/extra] (not in web; syncing with --prune deletes it)" in result.stdout
    assert "extra" in app_labels(server, ns, "configmaps")
    assert server.kubectl_json("get", "configmap", "site", "-n", ns)["data"]["index.html"] == "<h1>two</h1>\n"
    result = podling(server, "diff", "web", "-n", ns, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr  # the cluster still has more than the directory
    result = podling(server, "diff", "web", "--prune", "-n", ns, cwd=tmp_path)
    assert result.returncode == 1 and f"pruned: [ConfigMap/{ns}/extra]" in result.stdout
    assert "extra" in app_labels(server, ns, "configmaps")
    result = podling(server, "sync", "web", "--prune", "-n", ns, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"pruned: [ConfigMap/{ns}/extra]" in result.stdout
    assert result.stdout.rstrip().endswith("ok=2 changed=1 created=0 pruned=1 failed=0")
    assert app_labels(server, ns, "configmaps") == {"site": "web", "by-hand": "", "other-cm": "other"}
    assert podling(server, "diff", "web", "--prune", "-n", ns, cwd=tmp_path).returncode == 0

    # An invalid manifest next to a valid change: file:line errors, exit 2, nothing changed.
    write(web / "site.yaml", configmap("site", **{"index.html": "<h1>three</h1>\n"}))
    write(web / "bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ndata:\n  a: 1\nfoo: bar\n")
    for command in ("diff", "sync"):
        result = podling(server, command, "web", "--prune", "-n", ns, cwd=tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "web/bad.yaml:6: ConfigMap/bad: data[a]: Invalid value" in result.stderr
        assert "web/bad.yaml:7: ConfigMap/bad: foo: unknown field" in result.stderr
        assert "error: 2 problems in web: nothing was changed" in result.stderr
    assert server.kubectl_json("get", "configmap", "site", "-n", ns)["data"]["index.html"] == "<h1>two</h1>\n"
    assert set(app_labels(server, ns, "configmaps")) == {"site", "by-hand", "other-cm"}


def test_local_prune_of_an_empty_directory_needs_allow_empty(server: PodlingProcess, ns: str, tmp_path: Path) -> None:
    write(tmp_path / "tiny" / "cm.yaml", configmap("only", k="v"))
    assert podling(server, "sync", "tiny", "-n", ns, cwd=tmp_path).returncode == 0
    (tmp_path / "tiny" / "cm.yaml").unlink()
    result = podling(server, "sync", "tiny", "--prune", "-n", ns, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "note: tiny has no objects: nothing is pruned without --allow-empty" in result.stdout
    assert app_labels(server, ns, "configmaps") == {"only": "tiny"}
    result = podling(server, "sync", "tiny", "--prune", "--allow-empty", "-n", ns, cwd=tmp_path)
    assert result.returncode == 0 and f"pruned: [ConfigMap/{ns}/only]" in result.stdout
    assert app_labels(server, ns, "configmaps") == {}


def test_errors_are_one_line_and_exit_2(server: PodlingProcess, tmp_path: Path) -> None:
    write(tmp_path / "d" / "cm.yaml", configmap("x", k="v"))
    env = {**os.environ}
    env.pop("KUBECONFIG", None)
    unreachable = subprocess.run([sys.executable, "-m", "podling.cli.main", "sync", "d", "--server",
                                  "https://127.0.0.1:1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=60)
    assert unreachable.returncode == 2
    assert unreachable.stderr.startswith("error: cannot reach the API server:")
    assert len(unreachable.stderr.strip().splitlines()) == 1
    for args, message in ((("diff", "missing"), "error: missing: no such file or directory"),
                          (("app", "get", "nope", "-n", "default"),
                           "error: application 'nope' not found in namespace 'default'"),
                          (("app", "sync", "nope", "-n", "default"),
                           "error: application 'nope' not found in namespace 'default'"),
                          (("sync", "d", "--app", "not a label"), "name the application with --app")):
        result = podling(server, *args, cwd=tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in result.stderr


# ---- podling app … without an operator -----------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A real git repository: apps/ holds a ConfigMap and a Deployment; one commit on main."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch=main")
    write(path / "apps" / "site.yaml", configmap("site", greeting="one"))
    write(path / "apps" / "web.yaml", DEPLOYMENT.format(replicas=1))
    write(path / "README.md", "not a manifest\n")
    git(path, "add", ".")
    git(path, "commit", "--quiet", "-m", "one")
    return path


def create_application(server: PodlingProcess, *, ns: str, name: str, repo: Path, automated: bool = False) -> None:
    spec = {"source": {"repoURL": str(repo), "targetRevision": "main", "path": "apps"},
            "destination": {"namespace": ns}}
    if automated:
        spec["syncPolicy"] = {"automated": {"prune": True}}
    server.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "podling.io/v1alpha1", "kind": "Application",
        "metadata": {"name": name, "namespace": ns}, "spec": spec}))


def write_status(server: PodlingProcess, *, ns: str, name: str, status: dict) -> None:
    """What the operator would write, through the status subresource."""
    server.kubectl("patch", "application", name, "-n", ns, "--subresource=status", "--type=merge",
                   "-p", json.dumps({"status": status}))


def annotations(server: PodlingProcess, *, ns: str, name: str) -> dict[str, str]:
    return server.kubectl_json("get", "application", name, "-n", ns)["metadata"].get("annotations") or {}


def test_app_diff_plans_the_git_revision(server: PodlingProcess, ns: str, tmp_path: Path, repo: Path) -> None:
    create_application(server, ns=ns, name="shop", repo=repo)
    result = podling(server, "app", "diff", "shop", "-n", ns, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"created: [ConfigMap/{ns}/site]" in result.stdout
    assert f"+++ desired/apps/Deployment/{ns}/web" in result.stdout
    assert result.stdout.rstrip().endswith("ok=0 changed=2 created=2 pruned=0 failed=0")
    assert app_labels(server, ns, "configmaps") == {}
    result = podling(server, "app", "sync", "shop", "--dry-run", "-n", ns, cwd=tmp_path)
    assert result.returncode == 1 and "--- live/" not in result.stdout
    assert "podling.io/sync-request" not in annotations(server, ns=ns, name="shop")

    # Synced by hand from a clone of the same commit (tracked as the app): nothing to do.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
    assert podling(server, "sync", "clone/apps", "--app", "shop", "-n", ns, cwd=tmp_path).returncode == 0
    result = podling(server, "app", "diff", "shop", "-n", ns, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("ok=2 changed=0 created=0 pruned=0 failed=0")

    # A new commit: a change, and a removed object shown as extra (the app does not prune).
    write(repo / "apps" / "web.yaml", DEPLOYMENT.format(replicas=3))
    (repo / "apps" / "site.yaml").unlink()
    git(repo, "commit", "--quiet", "-am", "two")
    result = podling(server, "app", "diff", "shop", "-n", ns, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "-  replicas: 1\n+  replicas: 3\n" in result.stdout
    assert f"extra: [ConfigMap/{ns}/site] (not in git; syncing with --prune deletes it)" in result.stdout
    first = git(repo, "rev-parse", "HEAD~1")
    result = podling(server, "app", "diff", "shop", "--revision", first, "-n", ns, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    # An invalid manifest: file:line:path and exit 2.
    write(repo / "apps" / "bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ndata:\n  a: 1\n")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "bad")
    result = podling(server, "app", "diff", "shop", "-n", ns, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "apps/bad.yaml:6: ConfigMap/bad: data[a]: Invalid value" in result.stderr
    assert "error: revision" in result.stderr


def test_app_list_get_history_from_the_status(server: PodlingProcess, ns: str, tmp_path: Path, repo: Path) -> None:
    create_application(server, ns=ns, name="shop", repo=repo)
    result = podling(server, "app", "list", "-n", ns, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split() == ["shop", "Unknown", "Unknown", "<none>", str(repo)]
    result = podling(server, "app", "history", "shop", "-n", ns, cwd=tmp_path)
    assert result.returncode == 0 and "has not been synced yet" in result.stderr

    one, two = "a" * 40, "b" * 40
    error = "revision bbbbbbbbbbbb is not valid, nothing was applied:\napps/web.yaml:6: Deployment/web: spec.replicas: " \
            "Invalid value"
    write_status(server, ns=ns, name="shop", status={
        "sync": {"status": "OutOfSync", "revision": two},
        "health": {"status": "Progressing", "message": "waiting for rollout to finish"},
        "history": [{"id": 1, "revision": one, "deployedAt": "2025-01-01T00:00:00Z", "result": "Succeeded"},
                    {"id": 2, "revision": two, "deployedAt": "2025-01-02T00:00:00Z", "result": "Succeeded"}],
        "operationState": {"id": "r-1", "phase": "Error", "message": error, "revision": two,
                           "startedAt": "2025-01-02T00:00:00Z", "finishedAt": "2025-01-02T00:00:01Z"},
        "conditions": [{"type": "InvalidManifest", "status": "True", "reason": "InvalidManifest", "message": error,
                        "lastTransitionTime": "2025-01-02T00:00:01Z"}],
        "resources": [{"group": "apps", "version": "v1", "kind": "Deployment", "namespace": ns, "name": "web",
                       "status": "Synced", "health": "Progressing"}],
    })
    result = podling(server, "app", "list", "-A", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [ns, "shop", "OutOfSync", "Progressing", "bbbbbbb", str(repo)] in [
        line.split() for line in result.stdout.splitlines()]

    result = podling(server, "app", "get", "shop", "-n", ns, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"Repo:          {repo}" in lines
    assert "Sync Status:   OutOfSync from main (bbbbbbb)" in lines
    assert "Health Status: Progressing: waiting for rollout to finish" in lines
    assert "Phase:         Error" in lines
    assert "    apps/web.yaml:6: Deployment/web: spec.replicas: Invalid value" in lines
    assert ["apps", "Deployment", ns, "web", "Synced", "Progressing"] in [line.split() for line in lines]

    result = podling(server, "app", "history", "shop", "-n", ns, cwd=tmp_path)
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["ID", "DATE", "REVISION", "RESULT"], ["1", "2025-01-01T00:00:00Z", one, "Succeeded"],
        ["2", "2025-01-02T00:00:00Z", two, "Succeeded"]]

    # Rollback without an operator: the request names entry 1's revision; the wait times out.
    result = podling(server, "app", "rollback", "shop", "--timeout", "1", "-n", ns, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "timed out after 1s waiting for the operator" in result.stderr
    request = json.loads(annotations(server, ns=ns, name="shop")["podling.io/sync-request"])
    assert request["revision"] == one and request["prune"] is False

    server.kubectl("patch", "application", "shop", "-n", ns, "--type=merge",
                   "-p", '{"spec":{"syncPolicy":{"automated":{"selfHeal":true}}}}')
    result = podling(server, "app", "rollback", "shop", "1", "-n", ns, cwd=tmp_path)
    assert result.returncode == 2
    assert "rollback cannot be initiated when auto-sync is enabled" in result.stderr
    assert json.loads(annotations(server, ns=ns, name="shop")["podling.io/sync-request"]) == request  # unchanged


def test_app_sync_and_refresh_leave_requests_for_the_operator(server: PodlingProcess, ns: str, tmp_path: Path,
                                                               repo: Path) -> None:
    create_application(server, ns=ns, name="shop", repo=repo)
    result = podling(server, "app", "sync", "shop", "--timeout", "1", "-n", ns, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: timed out after 1s waiting for the operator" in result.stderr
    assert "waiting for the operator (sync Unknown, health Unknown)" in result.stdout
    request = json.loads(annotations(server, ns=ns, name="shop")["podling.io/sync-request"])
    assert request["revision"] == "" and request["prune"] is False
    assert str(uuid.UUID(request["id"])) == request["id"]

    result = podling(server, "app", "sync", "shop", "--revision", "main", "--prune", "--timeout", "1", "-n", ns,
                     cwd=tmp_path)
    assert result.returncode == 2
    again = json.loads(annotations(server, ns=ns, name="shop")["podling.io/sync-request"])
    assert again["revision"] == git(repo, "rev-parse", "main") and again["prune"] is True
    assert again["id"] != request["id"]

    result = podling(server, "app", "sync", "shop", "--revision", "no-such-branch", "-n", ns, cwd=tmp_path)
    assert result.returncode == 2 and "no-such-branch" in result.stderr

    result = podling(server, "app", "refresh", "shop", "--timeout", "1", "-n", ns, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "shop: Unknown, Unknown"
    assert annotations(server, ns=ns, name="shop")["podling.io/refresh"]


# ---- with a real operator ------------------------------------------------------------------


@pytest.fixture
def operator(tmp_path: Path) -> Iterator[PodlingProcess]:
    """Its own API server with a ``podling operator`` (which reconciles every Application it sees)."""
    server = PodlingProcess(data_dir=tmp_path / "podling-op").start()
    log = tmp_path / "operator.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "podling.cli.main", "operator", "--kubeconfig",
                                 str(server.kubeconfig), "--operator-listen", "127.0.0.1:0", "--cache-dir",
                                 str(tmp_path / "operator-cache")], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while b"GitOps operator running" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        server.stop()


def test_app_sync_history_and_rollback_through_the_operator(operator: PodlingProcess, tmp_path: Path,
                                                            repo: Path) -> None:
    server = operator
    ns = "shop"
    server.kubectl("create", "namespace", ns)
    create_application(server, ns=ns, name="shop", repo=repo)
    first = git(repo, "rev-parse", "HEAD")

    result = podling(server, "app", "sync", "shop", "--timeout", "60", "-n", ns, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Succeeded (revision {first})" in result.stdout
    assert result.stdout.rstrip().endswith("ok=0 changed=2 created=2 pruned=0 failed=0")
    assert server.kubectl_json("get", "deployment", "web", "-n", ns)["spec"]["replicas"] == 1

    write(repo / "apps" / "web.yaml", DEPLOYMENT.format(replicas=2))
    git(repo, "commit", "--quiet", "-am", "two")
    second = git(repo, "rev-parse", "HEAD")
    result = podling(server, "app", "sync", "shop", "--timeout", "60", "-n", ns, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Succeeded (revision {second})" in result.stdout
    assert server.kubectl_json("get", "deployment", "web", "-n", ns)["spec"]["replicas"] == 2

    result = podling(server, "app", "history", "shop", "-n", ns, cwd=tmp_path)
    revisions = [line.split()[2] for line in result.stdout.splitlines()[1:]]
    assert revisions == [first, second], result.stdout

    result = podling(server, "app", "rollback", "shop", "--timeout", "60", "-n", ns, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Succeeded (revision {first})" in result.stdout
    assert server.kubectl_json("get", "deployment", "web", "-n", ns)["spec"]["replicas"] == 1

    result = podling(server, "app", "get", "shop", "-n", ns, cwd=tmp_path)
    assert "Phase:         Succeeded" in result.stdout.splitlines()
    assert f"Sync Revision: {first}" in result.stdout.splitlines()
    result = podling(server, "app", "list", "-n", ns, cwd=tmp_path)
    assert result.stdout.splitlines()[1].split()[:2] == ["shop", "OutOfSync"]  # main is at the second commit
