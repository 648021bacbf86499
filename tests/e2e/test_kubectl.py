"""The real kubectl v1.32 against a real ``podling apiserver``, on SQLite and on etcd."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from podling_process import KUBECTL, PodlingProcess

pytestmark = pytest.mark.e2e

KINDS = [
    "namespaces", "pods", "services", "endpoints", "nodes", "configmaps", "secrets", "serviceaccounts",
    "events", "replicationcontrollers", "resourcequotas", "limitranges", "persistentvolumeclaims",
    "deployments", "replicasets", "statefulsets", "daemonsets", "leases", "applications",
]


def _manifest(ns: str, *, image: str = "web:1.0", env_value: str = "one", tier_label: bool = True) -> str:
    tier = "\n    tier: frontend" if tier_label else ""
    return f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: {ns}
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: {ns}
stringData:
  password: s3cret
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels:
    app: web{tier}
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: {image}
        env:
        - name: MODE
          value: {env_value}
        ports:
        - containerPort: 8080
      - name: sidecar
        image: helper:2.0
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
"""


@pytest.fixture
def ns() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def test_api_resources_lists_every_kind(podling: PodlingProcess) -> None:
    out = podling.kubectl("api-resources", "--no-headers").stdout
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert set(KINDS) <= names, set(KINDS) - names
    assert "deploy" in podling.kubectl("api-resources", "--api-group=apps").stdout


def test_apply_then_reapply_with_edits(podling: PodlingProcess, ns: str) -> None:
    out = podling.kubectl("apply", "-f", "-", input=_manifest(ns)).stdout
    for created in (f"namespace/{ns} created", "configmap/settings created", "secret/creds created",
                    "deployment.apps/web created", "service/web created"):
        assert created in out, out
    deployment = podling.kubectl_json("get", "deployment", "web", "-n", ns)
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert deployment["metadata"]["labels"] == {"app": "web", "tier": "frontend"}
    secret = podling.kubectl_json("get", "secret", "creds", "-n", ns)
    assert secret["data"] == {"password": "czNjcmV0"}

    out = podling.kubectl("apply", "-f", "-",
                          input=_manifest(ns, image="web:2.0", env_value="two", tier_label=False)).stdout
    assert "deployment.apps/web configured" in out, out
    assert "configmap/settings unchanged" in out, out
    deployment = podling.kubectl_json("get", "deployment", "web", "-n", ns)
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("web", "web:2.0"), ("sidecar", "helper:2.0")]
    assert containers[0]["env"] == [{"name": "MODE", "value": "two"}]
    assert containers[0]["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert deployment["metadata"]["labels"] == {"app": "web"}
    assert deployment["metadata"]["generation"] == 2

    again = podling.kubectl("apply", "-f", "-",
                            input=_manifest(ns, image="web:2.0", env_value="two", tier_label=False)).stdout
    assert "deployment.apps/web unchanged" in again, again


def test_get_outputs_and_selectors(podling: PodlingProcess, ns: str) -> None:
    podling.kubectl("apply", "-f", "-", input=_manifest(ns))
    table = podling.kubectl("get", "deployments", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[:2] == ["web", "0/2"]
    wide = podling.kubectl("get", "deployments", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[5:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert "web,sidecar" in wide[1] and "app=web" in wide[1]
    yaml_out = podling.kubectl("get", "configmap", "settings", "-n", ns, "-o", "yaml").stdout
    assert "greeting: hello" in yaml_out
    by_label = podling.kubectl("get", "deploy,svc,cm", "-n", ns, "-l", "app=web", "-o", "name").stdout.split()
    assert by_label == ["deployment.apps/web"]
    assert podling.kubectl("get", "deploy", "-n", ns, "-l", "app!=web", "-o", "name").stdout.strip() == ""
    everywhere = podling.kubectl("get", "configmaps", "-A").stdout
    assert ns in everywhere and "settings" in everywhere
    services = podling.kubectl("get", "svc", "-n", ns).stdout.splitlines()
    assert services[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert services[1].split()[:2] == ["web", "ClusterIP"] and "80/TCP" in services[1]


def test_pod_table_columns_wide(podling: PodlingProcess, ns: str) -> None:
    podling.kubectl("create", "namespace", ns)
    podling.kubectl("run", "solo", "--image=busybox:1.36", "-n", ns)
    header = podling.kubectl("get", "pods", "-n", ns).stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    wide = podling.kubectl("get", "pods", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert wide[1].split()[:3] == ["solo", "0/1", "Pending"]


def test_get_watch_streams_a_change(podling: PodlingProcess, ns: str) -> None:
    podling.kubectl("create", "namespace", ns)
    podling.kubectl("create", "configmap", "watched", "-n", ns, "--from-literal=a=1")
    watcher = subprocess.Popen(
        [KUBECTL, "--kubeconfig", str(podling.kubeconfig), "get", "configmaps", "-n", ns, "-w",
         "-o", "custom-columns=NAME:.metadata.name,A:.data.a", "--no-headers"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline().split()
        assert first == ["watched", "1"]
        podling.kubectl("patch", "configmap", "watched", "-n", ns, "--type", "merge", "-p", '{"data":{"a":"2"}}')
        second = watcher.stdout.readline().split()
        assert second == ["watched", "2"]
    finally:
        watcher.kill()
        watcher.wait()


def test_label_annotate_patch_scale(podling: PodlingProcess, ns: str) -> None:
    podling.kubectl("apply", "-f", "-", input=_manifest(ns))
    podling.kubectl("label", "deployment", "web", "-n", ns, "team=blue")
    podling.kubectl("annotate", "deployment", "web", "-n", ns, "owner=ops")
    podling.kubectl("label", "deployment", "web", "-n", ns, "tier-")
    podling.kubectl("patch", "deployment", "web", "-n", ns, "--type", "merge",
                    "-p", '{"spec":{"minReadySeconds":5}}')
    podling.kubectl("patch", "deployment", "web", "-n", ns, "--type", "json",
                    "-p", '[{"op":"replace","path":"/spec/template/spec/containers/1/image","value":"helper:3.0"}]')
    podling.kubectl("patch", "deployment", "web", "-n", ns, "--type", "strategic",
                    "-p", '{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"web:9"}]}}}}')
    podling.kubectl("scale", "deployment", "web", "-n", ns, "--replicas", "5")
    deployment = podling.kubectl_json("get", "deployment", "web", "-n", ns)
    assert deployment["metadata"]["labels"] == {"app": "web", "team": "blue"}
    assert deployment["metadata"]["annotations"]["owner"] == "ops"
    spec = deployment["spec"]
    assert spec["minReadySeconds"] == 5 and spec["replicas"] == 5
    assert [c["image"] for c in spec["template"]["spec"]["containers"]] == ["web:9", "helper:3.0"]
    failed = podling.kubectl("patch", "deployment", "web", "-n", ns, "--type", "json",
                             "-p", '[{"op":"test","path":"/spec/replicas","value":1}]', check=False)
    assert failed.returncode != 0


def test_delete_waits_until_gone(podling: PodlingProcess, ns: str) -> None:
    podling.kubectl("apply", "-f", "-", input=_manifest(ns))
    out = podling.kubectl("delete", "deployment", "web", "-n", ns).stdout
    assert 'deployment.apps "web" deleted' in out
    missing = podling.kubectl("get", "deployment", "web", "-n", ns, check=False)
    assert missing.returncode == 1 and "NotFound" in missing.stderr
    podling.kubectl("delete", "configmap,secret", "--all", "-n", ns)
    assert podling.kubectl("get", "configmaps,secrets", "-n", ns, "-o", "name").stdout.strip() == ""


def test_explain_reads_openapi(podling: PodlingProcess) -> None:
    out = podling.kubectl("explain", "pod.spec.containers").stdout
    assert "KIND:" in out and "Pod" in out
    assert "image" in out and "livenessProbe" in out
    out = podling.kubectl("explain", "deployment.spec.strategy").stdout
    assert "rollingUpdate" in out


def test_describe_every_kind(podling: PodlingProcess, ns: str) -> None:
    podling.kubectl("apply", "-f", "-", input=_manifest(ns))
    extra = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: solo, namespace: {ns}}}
spec:
  containers: [{{name: c, image: busybox:1.36}}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: robot, namespace: {ns}}}
---
apiVersion: v1
kind: ReplicationController
metadata: {{name: rc, namespace: {ns}}}
spec:
  replicas: 1
  template:
    metadata: {{labels: {{app: rc}}}}
    spec: {{containers: [{{name: c, image: busybox:1.36}}]}}
---
apiVersion: v1
kind: ResourceQuota
metadata: {{name: quota, namespace: {ns}}}
spec: {{hard: {{pods: "10"}}}}
---
apiVersion: v1
kind: LimitRange
metadata: {{name: limits, namespace: {ns}}}
spec:
  limits: [{{type: Container, default: {{cpu: 500m}}}}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: {ns}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: rs, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: rs}}}}
  template:
    metadata: {{labels: {{app: rs}}}}
    spec: {{containers: [{{name: c, image: busybox:1.36}}]}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: sts, namespace: {ns}}}
spec:
  serviceName: sts
  selector: {{matchLabels: {{app: sts}}}}
  template:
    metadata: {{labels: {{app: sts}}}}
    spec: {{containers: [{{name: c, image: busybox:1.36}}]}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: ds, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: ds}}}}
  template:
    metadata: {{labels: {{app: ds}}}}
    spec: {{containers: [{{name: c, image: busybox:1.36}}]}}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {{name: lock, namespace: {ns}}}
spec: {{holderIdentity: me}}
---
apiVersion: podling.io/v1alpha1
kind: Application
metadata: {{name: app, namespace: {ns}}}
spec:
  source: {{repoURL: /srv/git/app.git}}
  destination: {{namespace: {ns}}}
"""
    podling.kubectl("apply", "-f", "-", input=extra)
    for kind, name in [("namespace", ns), ("pod", "solo"), ("service", "web"), ("configmap", "settings"),
                       ("secret", "creds"), ("serviceaccount", "robot"), ("replicationcontroller", "rc"),
                       ("resourcequota", "quota"), ("limitrange", "limits"), ("persistentvolumeclaim", "data"),
                       ("deployment", "web"), ("replicaset", "rs"), ("statefulset", "sts"), ("daemonset", "ds"),
                       ("lease", "lock"), ("application", "app")]:
        out = podling.kubectl("describe", kind, name, "-n", ns).stdout
        assert name in out, (kind, out)
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node-{ns}"}}
    podling.kubectl("create", "-f", "-", input=json.dumps(node))
    assert f"node-{ns}" in podling.kubectl("describe", "node", f"node-{ns}").stdout
    pod_uid = podling.kubectl_json("get", "pod", "solo", "-n", ns)["metadata"]["uid"]
    status, _ = podling.request("POST", f"/api/v1/namespaces/{ns}/events", {
        "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "name": "solo", "namespace": ns, "uid": pod_uid},
        "reason": "Testing", "message": "hello from the test", "type": "Normal",
    })
    assert status == 201
    assert "hello from the test" in podling.kubectl("describe", "pod", "solo", "-n", ns).stdout
    assert "e1" in podling.kubectl("describe", "event", "e1", "-n", ns).stdout


def test_create_namespace_and_refuse_missing_one(podling: PodlingProcess, ns: str) -> None:
    podling.kubectl("create", "namespace", ns)
    assert podling.kubectl_json("get", "namespace", ns)["status"]["phase"] == "Active"
    refused = podling.kubectl("create", "configmap", "x", "-n", f"{ns}-missing", check=False)
    assert refused.returncode != 0 and "not found" in refused.stderr


def test_unauthenticated_is_401(podling: PodlingProcess) -> None:
    status, body = podling.request("GET", "/api/v1/namespaces", token="wrong")
    assert status == 401 and body["reason"] == "Unauthorized"
    status, body = podling.request("GET", "/api/v1/namespaces/default")
    assert status == 200 and body["metadata"]["name"] == "default"


def test_typed_create_commands_send_protobuf(podling: PodlingProcess, ns: str) -> None:
    """kubectl's `create X` commands send Kubernetes protobuf bodies; podling reads them."""
    podling.kubectl("create", "namespace", ns)
    podling.kubectl("create", "configmap", "cfg", "-n", ns, "--from-literal=a=1", "--from-literal=b=two")
    podling.kubectl("create", "secret", "generic", "pw", "-n", ns, "--from-literal=password=s3cret")
    podling.kubectl("create", "service", "clusterip", "svc", "-n", ns, "--tcp=80:8080")
    podling.kubectl("create", "serviceaccount", "robot", "-n", ns)
    podling.kubectl("create", "quota", "q", "-n", ns, "--hard=pods=2,cpu=1")
    podling.kubectl("create", "deployment", "web", "-n", ns, "--image=web:1.0", "--replicas=3", "--port=8080")
    assert podling.kubectl_json("get", "configmap", "cfg", "-n", ns)["data"] == {"a": "1", "b": "two"}
    assert podling.kubectl_json("get", "secret", "pw", "-n", ns)["data"] == {"password": "czNjcmV0"}
    service = podling.kubectl_json("get", "service", "svc", "-n", ns)
    assert service["spec"]["ports"][0]["port"] == 80 and service["spec"]["ports"][0]["targetPort"] == 8080
    assert service["spec"]["selector"] == {"app": "svc"}
    assert podling.kubectl_json("get", "resourcequota", "q", "-n", ns)["spec"]["hard"] == {"pods": "2", "cpu": "1"}
    deployment = podling.kubectl_json("get", "deployment", "web", "-n", ns)
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "web:1.0" and container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert "robot" in podling.kubectl("get", "serviceaccounts", "-n", ns, "-o", "name").stdout
