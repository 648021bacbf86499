"""Service accounts, tokens, quotas and limit ranges end to end.

A real ``podling apiserver``, a real ``podling controller-manager`` running the
serviceaccount, serviceaccount-token and resourcequota controllers (signing with the API
server's ``pki/sa.key``), a real Docker ``podling kubelet`` for the token mount, and the real
kubectl. Each test works in a namespace of its own; pods that must run name the node
themselves (no scheduler runs here), the others stay Pending, which is all quota needs.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from podling_process import ControllerManagerProcess, KubeletProcess, PodlingProcess
from waiting import wait_for

IMAGE = "podling/busybox:1.35"
MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PodlingProcess, KubeletProcess]]:
    server = PodlingProcess(data_dir=tmp_path_factory.mktemp("apiserver")).start()
    manager = ControllerManagerProcess(server=server, log_dir=tmp_path_factory.mktemp("controller-manager"), args=(
        "--controllers=serviceaccount,serviceaccount-token,resourcequota",
        "--service-account-private-key-file", str(server.data_dir / "pki" / "sa.key")))
    root = tmp_path_factory.mktemp("kubelet")
    kubelet = KubeletProcess(server=server, node_name=f"sa-{uuid.uuid4().hex[:6]}", root_dir=root,
                             args=("--address", "127.0.0.1"))
    try:
        manager.start()
        kubelet.start()
        yield server, kubelet
    finally:
        try:
            kubelet.stop()
            manager.stop()
        finally:
            kubelet.remove_containers()
            server.stop()


@pytest.fixture
def api(cluster: tuple[PodlingProcess, KubeletProcess]) -> PodlingProcess:
    return cluster[0]


@pytest.fixture
def node(cluster: tuple[PodlingProcess, KubeletProcess]) -> str:
    return cluster[1].node_name


@pytest.fixture
def ns(api: PodlingProcess) -> str:
    name = f"acct-{uuid.uuid4().hex[:6]}"
    api.kubectl("create", "namespace", name)
    return name



def get(api: PodlingProcess, *args: str) -> dict[str, Any] | None:
    result = api.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def token_secret(api: PodlingProcess, ns: str, account: str = "default") -> dict[str, Any]:
    """The account's token Secret, once the token controller has made and referenced it."""
    def made() -> dict[str, Any] | None:
        sa = get(api, "serviceaccount", account, "-n", ns)
        names = [s["name"] for s in (sa or {}).get("secrets") or ()]
        secret = get(api, "secret", names[0], "-n", ns) if names else None
        return secret if secret and secret.get("data", {}).get("token") else None
    return wait_for(made, timeout=20, what=f"the token secret of {ns}/{account}")


def token_of(secret: dict[str, Any]) -> str:
    return base64.b64decode(secret["data"]["token"]).decode()


def create(api: PodlingProcess, obj: dict[str, Any], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return api.kubectl("create", "-f", "-", input=json.dumps(obj), check=check)


def pod(name: str, ns: str, *, node: str = "", resources: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    container = {"name": "app", "image": IMAGE, "command": ["sleep", "3600"], "resources": resources or {}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 1,
                     **({"nodeName": node} if node else {}), **spec}}


# ---- service accounts and tokens --------------------------------------------------------------


def test_every_namespace_gets_a_default_account_with_a_token(api: PodlingProcess, ns: str) -> None:
    secret = token_secret(api, ns)
    account = get(api, "serviceaccount", "default", "-n", ns)
    assert account is not None
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"] == {"kubernetes.io/service-account.name": "default",
                                                 "kubernetes.io/service-account.uid": account["metadata"]["uid"]}
    data = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    assert data["namespace"] == ns.encode()
    assert data["ca.crt"] == api.ca_file.read_bytes()
    payload = token_of(secret).split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims == {
        "iss": "kubernetes/serviceaccount", "sub": f"system:serviceaccount:{ns}:default",
        "kubernetes.io/serviceaccount/namespace": ns,
        "kubernetes.io/serviceaccount/secret.name": secret["metadata"]["name"],
        "kubernetes.io/serviceaccount/service-account.name": "default",
        "kubernetes.io/serviceaccount/service-account.uid": account["metadata"]["uid"],
    }
    assert "default" in api.kubectl("get", "sa", "-n", ns).stdout


def test_a_deleted_default_account_comes_back_and_its_old_token_goes(api: PodlingProcess, ns: str) -> None:
    old = token_secret(api, ns)
    api.kubectl("delete", "serviceaccount", "default", "-n", ns)
    wait_for(lambda: get(api, "secret", old["metadata"]["name"], "-n", ns) is None, timeout=20,
             what="the old token secret deleted")
    new = token_secret(api, ns)
    assert new["metadata"]["name"] != old["metadata"]["name"]
    status, _ = api.request("GET", f"/api/v1/namespaces/{ns}/pods", token=token_of(old))
    assert status == 401


def test_the_token_authenticates_and_revoking_it_works(api: PodlingProcess, ns: str) -> None:
    secret = token_secret(api, ns)
    token = token_of(secret)
    status, body = api.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default", token=token)
    assert status == 200 and body["metadata"]["name"] == "default"
    listed = api.kubectl("--token", token, "get", "serviceaccounts", "-n", ns, "-o", "name")
    assert listed.stdout.strip() == "serviceaccount/default"

    status, review = api.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                                 {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                  "spec": {"token": token}})
    assert status == 201 and review["status"]["authenticated"] is True
    assert review["status"]["user"]["username"] == f"system:serviceaccount:{ns}:default"
    assert review["status"]["user"]["groups"] == ["system:serviceaccounts", f"system:serviceaccounts:{ns}",
                                                  "system:authenticated"]

    header, payload, signature = token.split(".")
    forged = payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB")
    for bad in (f"{header}.{forged}.{signature}", token + "x", "not-a-token"):
        status, body = api.request("GET", f"/api/v1/namespaces/{ns}/pods", token=bad)
        assert (status, body["reason"]) == (401, "Unauthorized")

    api.kubectl("delete", "secret", secret["metadata"]["name"], "-n", ns)
    wait_for(lambda: api.request("GET", f"/api/v1/namespaces/{ns}/pods", token=token)[0] == 401, timeout=10,
             what="the token revoked with its secret")
    assert token_of(token_secret(api, ns)) != token  # a new one was made


def test_a_pod_gets_the_token_mounted(api: PodlingProcess, ns: str, node: str) -> None:
    secret = token_secret(api, ns)
    create(api, pod("reader", ns, node=node))
    created = get(api, "pod", "reader", "-n", ns)
    assert created is not None and created["spec"]["serviceAccountName"] == "default"
    assert {"name": secret["metadata"]["name"], "readOnly": True, "mountPath": MOUNT} in \
        created["spec"]["containers"][0]["volumeMounts"]
    wait_for(lambda: (get(api, "pod", "reader", "-n", ns) or {}).get("status", {}).get("phase") == "Running",
             timeout=60, what="pod reader Running")
    assert api.kubectl("exec", "-n", ns, "reader", "--", "cat", f"{MOUNT}/namespace").stdout == ns
    mounted = api.kubectl("exec", "-n", ns, "reader", "--", "cat", f"{MOUNT}/token").stdout
    assert mounted == token_of(secret)
    assert api.kubectl("exec", "-n", ns, "reader", "--", "cat", f"{MOUNT}/ca.crt").stdout.encode() == \
        api.ca_file.read_bytes()
    status, _ = api.request("GET", f"/api/v1/namespaces/{ns}/pods/reader", token=mounted)
    assert status == 200
    written = api.kubectl("exec", "-n", ns, "reader", "--", "sh", "-c", f"echo x > {MOUNT}/token", check=False)
    assert written.returncode != 0  # read-only
    api.kubectl("delete", "pod", "reader", "-n", ns, "--wait=false")


def test_accounts_must_exist_and_automount_can_be_declined(api: PodlingProcess, ns: str) -> None:
    token_secret(api, ns)
    refused = create(api, pod("lost", ns, serviceAccountName="robot"), check=False)
    assert refused.returncode != 0
    assert (f'pods "lost" is forbidden: error looking up service account {ns}/robot: '
            'serviceaccount "robot" not found') in refused.stderr
    api.kubectl("create", "serviceaccount", "robot", "-n", ns)
    robot = token_secret(api, ns, "robot")
    create(api, pod("found", ns, serviceAccountName="robot"))
    volumes = get(api, "pod", "found", "-n", ns)["spec"]["volumes"]  # type: ignore[index]
    assert volumes == [{"name": robot["metadata"]["name"],
                        "secret": {"secretName": robot["metadata"]["name"], "defaultMode": 420}}]
    create(api, pod("private", ns, automountServiceAccountToken=False))
    assert not get(api, "pod", "private", "-n", ns)["spec"].get("volumes")  # type: ignore[index]


# ---- quotas ------------------------------------------------------------------------------------


def quota_status(api: PodlingProcess, ns: str, name: str) -> dict[str, Any]:
    return (get(api, "resourcequota", name, "-n", ns) or {}).get("status") or {}


def test_a_quota_refuses_the_pod_over_its_limit(api: PodlingProcess, ns: str) -> None:
    token_secret(api, ns)
    api.kubectl("create", "quota", "pods", "-n", ns, "--hard=pods=2,count/configmaps=3")
    wait_for(lambda: quota_status(api, ns, "pods").get("hard") == {"pods": "2", "count/configmaps": "3"},
             timeout=20, what="status.hard")
    assert quota_status(api, ns, "pods")["used"] == {"pods": "0", "count/configmaps": "0"}
    create(api, pod("one", ns))
    create(api, pod("two", ns))
    refused = create(api, pod("three", ns), check=False)
    assert refused.returncode != 0
    assert ('Error from server (Forbidden): error when creating "STDIN": pods "three" is forbidden: '
            "exceeded quota: pods, requested: pods=1, used: pods=2, limited: pods=2") in refused.stderr
    wait_for(lambda: quota_status(api, ns, "pods").get("used", {}).get("pods") == "2", timeout=20,
             what="status.used pods=2")
    described = api.kubectl("describe", "quota", "pods", "-n", ns).stdout
    assert "pods" in described and "2" in described

    api.kubectl("delete", "pod", "one", "-n", ns, "--wait=false")
    wait_for(lambda: quota_status(api, ns, "pods").get("used", {}).get("pods") == "1", timeout=20,
             what="status.used back to pods=1")
    create(api, pod("three", ns))
    for i in range(3):
        api.kubectl("create", "configmap", f"c{i}", "-n", ns)
    over = api.kubectl("create", "configmap", "c3", "-n", ns, check=False)
    assert "exceeded quota: pods, requested: count/configmaps=1, used: count/configmaps=3, " \
           "limited: count/configmaps=3" in over.stderr


def test_racing_creates_through_the_api_stop_at_the_quota(api: PodlingProcess, ns: str) -> None:
    token_secret(api, ns)
    api.kubectl("create", "quota", "few", "-n", ns, "--hard=pods=4")
    wait_for(lambda: quota_status(api, ns, "few").get("hard"), timeout=20, what="status.hard")

    def create_one(i: int) -> int:
        status, _ = api.request("POST", f"/api/v1/namespaces/{ns}/pods", pod(f"racer-{i}", ns))
        return status

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(create_one, range(16)))
    assert sorted(statuses) == [201] * 4 + [403] * 12
    wait_for(lambda: quota_status(api, ns, "few").get("used") == {"pods": "4"}, timeout=20, what="used pods=4")


def test_compute_quota_needs_requests_and_counts_them(api: PodlingProcess, ns: str) -> None:
    token_secret(api, ns)
    create(api, {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute", "namespace": ns},
                 "spec": {"hard": {"requests.cpu": "1", "limits.memory": "1Gi"}}})
    wait_for(lambda: quota_status(api, ns, "compute").get("hard"), timeout=20, what="status.hard")
    bare = create(api, pod("bare", ns), check=False)
    assert ('pods "bare" is forbidden: failed quota: compute: must specify limits.memory for: app; '
            "requests.cpu for: app") in bare.stderr
    sized = {"requests": {"cpu": "600m"}, "limits": {"memory": "256Mi"}}
    create(api, pod("first", ns, resources=sized))
    second = create(api, pod("second", ns, resources=sized), check=False)
    assert ("exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, "
            "limited: requests.cpu=1") in second.stderr
    wait_for(lambda: quota_status(api, ns, "compute").get("used") == {"requests.cpu": "600m",
                                                                      "limits.memory": "256Mi"},
             timeout=20, what="status.used of the first pod")


# ---- limit ranges ----------------------------------------------------------------------------


def test_a_limit_range_fills_in_defaults_and_bounds_containers(api: PodlingProcess, ns: str) -> None:
    token_secret(api, ns)
    create(api, {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits", "namespace": ns},
                 "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"},
                                      "default": {"cpu": "300m", "memory": "128Mi"},
                                      "defaultRequest": {"cpu": "100m"}}]}})
    stored = get(api, "limitrange", "limits", "-n", ns)
    assert stored is not None
    assert stored["spec"]["limits"][0]["defaultRequest"] == {"cpu": "100m", "memory": "128Mi"}
    create(api, pod("defaulted", ns))
    defaulted = get(api, "pod", "defaulted", "-n", ns)
    assert defaulted is not None
    assert defaulted["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                                               "limits": {"cpu": "300m", "memory": "128Mi"}}
    assert defaulted["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == (
        "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app")
    assert defaulted["status"]["qosClass"] == "Burstable"
    big = create(api, pod("big", ns, resources={"limits": {"cpu": "2"}}), check=False)
    assert 'pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2' in big.stderr


# ---- flags -------------------------------------------------------------------------------------


def test_key_flags_are_checked_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("hello\n")
    apiserver = subprocess.run([sys.executable, "-m", "podling.cli.main", "apiserver", "--data-dir", str(tmp_path),
                                "--service-account-key-file", str(bad)], capture_output=True, text=True, timeout=30)
    assert apiserver.returncode == 2
    assert f"--service-account-key-file: {bad}: no PEM public key, private key or certificate in it" in apiserver.stderr
    manager = subprocess.run([sys.executable, "-m", "podling.cli.main", "controller-manager",
                              "--server", "https://127.0.0.1:1", "--controllers=serviceaccount-token"],
                             capture_output=True, text=True, timeout=30)
    assert manager.returncode == 2 and "--service-account-private-key-file" in manager.stderr
