"""The kubelet's volumes and environment against a real ``podling apiserver``, Docker and git.

Every ConfigMap, Secret and claim is made through the API and read back by the code under
test; files land on the real disk and the real /dev/shm; claims become real Docker volumes
through :class:`DockerRuntime`; gitRepo clones a real repository made with the git CLI.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from podling.api.resources import Resource, find
from podling.client.config import load_kubeconfig
from podling.client.http import ApiClient
from podling.kubelet.env import EnvError, container_env
from podling.kubelet.runtime.base import LABEL_NODE, Mount
from podling.kubelet.runtime.docker import DockerRuntime
from podling.kubelet.volumes import (
    LABEL_PVC_NAME,
    LABEL_PVC_NAMESPACE,
    LABEL_PVC_UID,
    TMPFS_ROOT,
    MountError,
    VolumeManager,
    pvc_volume_name,
)
from podling_process import PodlingProcess

pytestmark = pytest.mark.e2e

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def store_url() -> str:
    """Volumes do not depend on the store: one run, on SQLite, is enough."""
    return "sqlite"


def _resource(plural: str) -> Resource:
    resource = find(group="", version="v1", plural=plural)
    assert resource is not None
    return resource


NAMESPACES, CONFIGMAPS, SECRETS, PVCS = (_resource(p) for p in ("namespaces", "configmaps", "secrets",
                                                                 "persistentvolumeclaims"))


@pytest.fixture
async def api(podling: PodlingProcess) -> AsyncIterator[ApiClient]:
    async with ApiClient(load_kubeconfig(podling.kubeconfig)) as client:
        yield client


@pytest.fixture
async def ns(api: ApiClient) -> str:
    name = f"vol-{uuid.uuid4().hex[:8]}"
    await api.create(NAMESPACES, {"metadata": {"name": name}})
    return name


@pytest.fixture
async def runtime() -> AsyncIterator[DockerRuntime]:
    node = f"vol-test-{uuid.uuid4().hex[:8]}"
    real = DockerRuntime(node_name=node)
    try:
        yield real
    finally:
        await real.close()


@pytest.fixture
def node_name() -> Iterator[str]:
    name = f"vol-test-{uuid.uuid4().hex[:8]}"
    yield name
    shutil.rmtree(TMPFS_ROOT / name, ignore_errors=True)


@pytest.fixture
def manager(api: ApiClient, runtime: DockerRuntime, tmp_path: Path, node_name: str) -> VolumeManager:
    return VolumeManager(api=api, runtime=runtime, root=tmp_path / "kubelet", node_name=node_name,
                         allocatable={"cpu": "4", "memory": "8Gi"})


def _pod(ns: str, volumes: list[Obj], *, containers: list[Obj] | None = None, **metadata: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": ns, "uid": str(uuid.uuid4()), **metadata},
            "spec": {"volumes": volumes, "containers": containers or [{"name": "app", "image": "busybox"}]}}


async def _configmap(api: ApiClient, ns: str, name: str, data: dict[str, str], binary: dict[str, bytes] | None = None) -> None:
    body: Obj = {"metadata": {"name": name}, "data": data}
    if binary:
        body["binaryData"] = {key: base64.b64encode(value).decode() for key, value in binary.items()}
    await api.create(CONFIGMAPS, body, namespace=ns)


async def _secret(api: ApiClient, ns: str, name: str, data: dict[str, str]) -> None:
    await api.create(SECRETS, {"metadata": {"name": name}, "stringData": data}, namespace=ns)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _visible(directory: Path) -> set[str]:
    return {entry.name for entry in directory.iterdir() if not entry.name.startswith("..")}


def _fs_type(path: Path) -> str:
    """The file system type of the mount that holds ``path`` (the longest mount-point prefix)."""
    best, fs_type = "", ""
    real = os.path.realpath(path)
    for line in Path("/proc/mounts").read_text().splitlines():
        _device, mount_point, kind, *_ = line.split()
        if (real == mount_point or real.startswith(mount_point.rstrip("/") + "/")) and len(mount_point) > len(best):
            best, fs_type = mount_point, kind
    return fs_type


# ---- configMap and secret ----------------------------------------------------------------


async def test_configmap_and_secret_files(api: ApiClient, ns: str, manager: VolumeManager, tmp_path: Path) -> None:
    await _configmap(api, ns, "app-config", {"app.conf": "port=80\n", "level": "debug"}, binary={"logo": b"\x89PNG\x00"})
    await _secret(api, ns, "creds", {"user": "admin", "password": "s3cret"})
    pod = _pod(ns, [
        {"name": "cfg", "configMap": {"name": "app-config", "defaultMode": 0o640}},
        {"name": "picked", "configMap": {"name": "app-config", "items": [
            {"key": "app.conf", "path": "etc/app/app.conf", "mode": 0o600},
            {"key": "logo", "path": "logo.png"}]}},
        {"name": "creds", "secret": {"secretName": "creds", "items": [{"key": "password", "path": "pw"}]}},
        {"name": "all-creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
    ])
    volumes = await manager.setup(pod)
    uid = pod["metadata"]["uid"]

    cfg = Path(volumes["cfg"].source)
    assert cfg == tmp_path / "kubelet" / "pods" / uid / "volumes" / "kubernetes.io~configmap" / "cfg"
    assert volumes["cfg"].read_only and volumes["cfg"].type == "bind"
    assert _visible(cfg) == {"app.conf", "level", "logo"}
    assert (cfg / "app.conf").read_text() == "port=80\n" and (cfg / "logo").read_bytes() == b"\x89PNG\x00"
    assert _mode(cfg / "level") == 0o640
    # AtomicWriter's shape: visible names link through ..data to a timestamped directory.
    assert os.readlink(cfg / "level") == "..data/level"
    assert os.readlink(cfg / "..data").startswith("..20")

    picked = Path(volumes["picked"].source)
    assert _visible(picked) == {"etc", "logo.png"}
    assert (picked / "etc/app/app.conf").read_text() == "port=80\n"
    assert _mode(picked / "etc/app/app.conf") == 0o600 and _mode(picked / "logo.png") == 0o644

    creds = Path(volumes["creds"].source)
    assert creds.is_relative_to(TMPFS_ROOT) and _fs_type(creds) == "tmpfs"  # secrets never touch the disk
    assert creds.parts[-4:] == (uid, "volumes", "kubernetes.io~secret", "creds")
    assert _visible(creds) == {"pw"} and (creds / "pw").read_text() == "s3cret"
    all_creds = Path(volumes["all-creds"].source)
    assert {p: (all_creds / p).read_text() for p in _visible(all_creds)} == {"user": "admin", "password": "s3cret"}
    assert _mode(all_creds / "user") == 0o400

    # Running setup again changes nothing: the same ..data version stays.
    before = os.readlink(cfg / "..data")
    await manager.setup(pod)
    assert os.readlink(cfg / "..data") == before


async def test_update_is_atomic_and_seen_after_setup_runs_again(api: ApiClient, ns: str,
                                                                manager: VolumeManager) -> None:
    await _configmap(api, ns, "live", {"a": "1", "b": "2"})
    pod = _pod(ns, [{"name": "cfg", "configMap": {"name": "live"}}])
    cfg = Path((await manager.setup(pod))["cfg"].source)
    old_version = os.readlink(cfg / "..data")
    # What a running container holds open: the bind-mounted directory, read through its links.
    assert (cfg / "a").read_text() == "1"

    current = await api.get(CONFIGMAPS, namespace=ns, name="live")
    await api.update(CONFIGMAPS, {**current, "data": {"a": "one", "c": "3"}})
    await manager.setup(pod)

    assert (cfg / "a").read_text() == "one" and (cfg / "c").read_text() == "3"
    assert _visible(cfg) == {"a", "c"}  # b went away with its link
    new_version = os.readlink(cfg / "..data")
    assert new_version != old_version and not (cfg / old_version).exists()
    assert {entry.name for entry in cfg.iterdir() if entry.name.startswith("..")} == {"..data", new_version}


async def test_optional_sources_may_be_missing(api: ApiClient, ns: str, manager: VolumeManager) -> None:
    await _secret(api, ns, "partial", {"here": "yes"})
    pod = _pod(ns, [
        {"name": "nothing", "configMap": {"name": "absent", "optional": True}},
        {"name": "some", "secret": {"secretName": "partial", "optional": True,
                                    "items": [{"key": "here", "path": "here"}, {"key": "gone", "path": "gone"}]}},
    ])
    volumes = await manager.setup(pod)
    nothing = Path(volumes["nothing"].source)
    assert nothing.is_dir() and _visible(nothing) == set() and (nothing / "..data").is_dir()
    assert _visible(Path(volumes["some"].source)) == {"here"}

    # The ConfigMap appears later: the next setup fills the volume in.
    await _configmap(api, ns, "absent", {"now": "present"})
    await manager.setup(pod)
    assert (nothing / "now").read_text() == "present"


async def test_missing_sources_are_mount_errors(api: ApiClient, ns: str, manager: VolumeManager) -> None:
    await _configmap(api, ns, "has-a", {"a": "1"})
    await _secret(api, ns, "has-s", {"s": "1"})
    cases = [
        ({"name": "cfg", "configMap": {"name": "app-config"}},
         'MountVolume.SetUp failed for volume "cfg" : configmap "app-config" not found'),
        ({"name": "sec", "secret": {"secretName": "tls"}},
         'MountVolume.SetUp failed for volume "sec" : secret "tls" not found'),
        ({"name": "cfg", "configMap": {"name": "has-a", "items": [{"key": "nope", "path": "x"}]}},
         'MountVolume.SetUp failed for volume "cfg" : configmap references non-existent config key: nope'),
        ({"name": "sec", "secret": {"secretName": "has-s", "items": [{"key": "nope", "path": "x"}]}},
         'MountVolume.SetUp failed for volume "sec" : references non-existent secret key: nope'),
        ({"name": "cfg", "configMap": {"name": "has-a", "items": [{"key": "a", "path": "../escape"}]}},
         "MountVolume.SetUp failed for volume \"cfg\" : invalid path: must not contain '..': ../escape"),
        ({"name": "data", "persistentVolumeClaim": {"claimName": "db"}},
         'MountVolume.SetUp failed for volume "data" : persistentvolumeclaim "db" not found'),
        ({"name": "share", "nfs": {"server": "nfs.example", "path": "/export"}},
         'MountVolume.SetUp failed for volume "share" : podling does not support nfs volumes'),
    ]
    for volume, message in cases:
        with pytest.raises(MountError) as err:
            await manager.setup(_pod(ns, [volume]))
        assert str(err.value) == message


# ---- downwardAPI and projected -----------------------------------------------------------


async def test_downward_api_files(api: ApiClient, ns: str, manager: VolumeManager) -> None:
    containers = [{"name": "app", "image": "busybox",
                   "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}]
    pod = _pod(ns, [{"name": "info", "downwardAPI": {"defaultMode": 0o444, "items": [
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}},
        {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}},
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "meta/annotations", "fieldRef": {"fieldPath": "metadata.annotations"}, "mode": 0o400},
        {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
        {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu", "divisor": "1m"}},
        {"path": "mem", "resourceFieldRef": {"containerName": "app", "resource": "requests.memory",
                                             "divisor": "1Mi"}},
        {"path": "mem-limit-unset", "resourceFieldRef": {"containerName": "app", "resource": "limits.memory"}},
    ]}}], containers=containers, labels={"tier": "front", "app": "web"},
        annotations={"build": "42", "quote": 'a "b"'})
    info = Path((await manager.setup(pod))["info"].source)
    read = {path: (info / path).read_text() for path in ("name", "ns", "uid", "labels", "meta/annotations", "tier",
                                                         "cpu", "mem")}
    assert read == {"name": "p", "ns": ns, "uid": pod["metadata"]["uid"], "labels": 'app="web"\ntier="front"',
                    "meta/annotations": 'build="42"\nquote="a \\"b\\""', "tier": "front", "cpu": "250", "mem": "64"}
    assert (info / "mem-limit-unset").read_text() == str(64 * 2**20)  # set: the limit; allocatable only when unset
    assert _mode(info / "name") == 0o444 and _mode(info / "meta/annotations") == 0o400

    pod["metadata"]["labels"]["tier"] = "back"  # the kubelet runs setup again with the pod it now sees
    await manager.setup(pod)
    assert (info / "tier").read_text() == "back"


async def test_projected_volume(api: ApiClient, ns: str, manager: VolumeManager) -> None:
    await _configmap(api, ns, "settings", {"a": "1"})
    await _secret(api, ns, "keys", {"k": "v"})
    pod = _pod(ns, [{"name": "all", "projected": {"defaultMode": 0o440, "sources": [
        {"configMap": {"name": "settings"}},
        {"secret": {"name": "keys", "items": [{"key": "k", "path": "keys/k"}]}},
        {"downwardAPI": {"items": [{"path": "pod", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"configMap": {"name": "absent", "optional": True}},
        {"serviceAccountToken": {"path": "token"}},
    ]}}])
    projected = Path((await manager.setup(pod))["all"].source)
    assert _fs_type(projected) == "tmpfs"
    assert _visible(projected) == {"a", "keys", "pod"}
    assert (projected / "keys/k").read_text() == "v" and (projected / "pod").read_text() == "p"
    assert _mode(projected / "a") == 0o440


# ---- emptyDir, hostPath, subPath ---------------------------------------------------------


async def test_empty_dirs_on_disk_and_in_memory(ns: str, manager: VolumeManager, tmp_path: Path) -> None:
    pod = _pod(ns, [{"name": "scratch", "emptyDir": {}}, {"name": "fast", "emptyDir": {"medium": "Memory",
                                                                                        "sizeLimit": "64Mi"}},
                    {"name": "defaulted"}])
    volumes = await manager.setup(pod)
    scratch, fast = Path(volumes["scratch"].source), Path(volumes["fast"].source)
    assert scratch.is_relative_to(tmp_path) and scratch.name == "scratch" and _mode(scratch) == 0o777
    assert scratch.parent.name == "kubernetes.io~empty-dir" and not volumes["scratch"].read_only
    assert Path(volumes["defaulted"].source).is_dir()
    # Memory: one directory on a tmpfs, which every container of the pod bind-mounts.
    assert fast.is_relative_to(TMPFS_ROOT) and _fs_type(fast) == "tmpfs" and _fs_type(scratch) != "tmpfs"
    mounts = manager.mounts(pod, {"name": "a", "volumeMounts": [{"name": "fast", "mountPath": "/cache"}]}, volumes)
    assert mounts == manager.mounts(pod, {"name": "b", "volumeMounts": [{"name": "fast", "mountPath": "/cache"}]},
                                    volumes)
    assert mounts == [Mount(target="/cache", source=str(fast), type="bind", read_only=False)]
    (scratch / "kept").write_text("x")
    await manager.setup(pod)
    assert (scratch / "kept").read_text() == "x"  # idempotent: setup never empties a live emptyDir


async def test_host_path_types(ns: str, manager: VolumeManager, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "file").write_text("f")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(host / "sock"))

        async def check(path: Path | str, path_type: str) -> str:
            pod = _pod(ns, [{"name": "h", "hostPath": {"path": str(path), "type": path_type}}])
            try:
                volume = (await manager.setup(pod))["h"]
            except MountError as err:
                return str(err).removeprefix('MountVolume.SetUp failed for volume "h" : ')
            assert volume.source == str(path) and not volume.read_only
            return "ok"

        assert await check(host / "absent", "") == "ok"
        assert await check(host / "made/deep", "DirectoryOrCreate") == "ok" and (host / "made/deep").is_dir()
        assert await check(host / "made/deep", "Directory") == "ok"
        assert await check(host / "file", "Directory") == f"hostPath type check failed: {host}/file is not a directory"
        assert await check(host / "nodir", "Directory") == f"hostPath type check failed: {host}/nodir is not a directory"
        assert await check(host / "file", "DirectoryOrCreate") == \
            f"hostPath type check failed: {host}/file is not a directory"
        assert await check(host / "new-file", "FileOrCreate") == "ok" and (host / "new-file").is_file()
        assert (await check(host / "no-parent/file", "FileOrCreate")).startswith("No such file or directory")
        assert await check(host / "file", "File") == "ok"
        assert await check(host, "File") == f"hostPath type check failed: {host} is not a file"
        assert await check(host / "sock", "Socket") == "ok"
        assert await check(host / "file", "Socket") == f"hostPath type check failed: {host}/file is not a socket file"
        assert await check("/dev/null", "CharDevice") == "ok"
        assert await check(host / "file", "CharDevice") == \
            f"hostPath type check failed: {host}/file is not a character device"
        assert await check("/dev/null", "BlockDevice") == "hostPath type check failed: /dev/null is not a block device"
        assert await check(host, "Fifo") == "Fifo is an invalid volume type"
        assert await check("relative/path", "") == "hostPath path 'relative/path' must be absolute"


async def test_sub_paths(api: ApiClient, ns: str, manager: VolumeManager) -> None:
    await _configmap(api, ns, "cfg", {"nginx.conf": "events {}"})
    pod = _pod(ns, [{"name": "work", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}])
    volumes = await manager.setup(pod)
    work, cfg = Path(volumes["work"].source), Path(volumes["cfg"].source)

    def mounts(*volume_mounts: Obj, env: dict[str, str] | None = None) -> list[Mount]:
        return manager.mounts(pod, {"name": "app", "volumeMounts": list(volume_mounts)}, volumes, env=env)

    got = mounts({"name": "work", "mountPath": "/data", "subPath": "a/b", "readOnly": True},
                 {"name": "cfg", "mountPath": "/etc/nginx/nginx.conf", "subPath": "nginx.conf"},
                 {"name": "work", "mountPath": "/logs", "subPathExpr": "logs/$(POD_NAME)"},
                 env={"POD_NAME": "p"})
    assert got == [
        Mount(target="/data", source=str(work / "a/b"), read_only=True),
        # a key of an API data volume resolves to its file in the current version
        Mount(target="/etc/nginx/nginx.conf", source=str((cfg / "nginx.conf").resolve()), read_only=True),
        Mount(target="/logs", source=str(work / "logs/p")),
    ]
    assert (work / "a/b").is_dir() and (work / "logs/p").is_dir()
    assert _mode(work / "a/b") == 0o777  # the volume's own mode

    with pytest.raises(MountError, match=r"unable to provision SubPath `\.\./etc`: must not contain '\.\.'"):
        mounts({"name": "work", "mountPath": "/x", "subPath": "../etc"})
    with pytest.raises(MountError, match=r"unable to provision SubPath `a/\.\./\.\./b`"):
        mounts({"name": "work", "mountPath": "/x", "subPath": "a/../../b"})
    with pytest.raises(MountError, match="error SubPath `/etc` must not be an absolute path"):
        mounts({"name": "work", "mountPath": "/x", "subPath": "/etc"})
    (work / "escape").symlink_to("/etc")
    with pytest.raises(MountError, match='subpath "/etc" not within volume path'):
        mounts({"name": "work", "mountPath": "/x", "subPath": "escape"})
    with pytest.raises(MountError, match="missing value for NODE, ZONE"):
        mounts({"name": "work", "mountPath": "/x", "subPathExpr": "$(ZONE)/$(NODE)"}, env={"ZONE": ""})
    with pytest.raises(MountError, match='cannot find volume "nope" to mount into container "app"'):
        mounts({"name": "nope", "mountPath": "/x"})


# ---- gitRepo -----------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


async def test_git_repo_cloned_once_at_a_revision(ns: str, manager: VolumeManager, tmp_path: Path) -> None:
    origin = tmp_path / "site.git"
    origin.mkdir()
    _git(origin, "init", "-q", "-b", "main")
    (origin / "index.html").write_text("v1")
    _git(origin, "add", "index.html")
    _git(origin, "commit", "-q", "-m", "v1")
    first = _git(origin, "rev-parse", "HEAD")
    (origin / "index.html").write_text("v2")
    _git(origin, "commit", "-q", "-am", "v2")

    pod = _pod(ns, [
        {"name": "pinned", "gitRepo": {"repository": str(origin), "revision": first}},
        {"name": "here", "gitRepo": {"repository": str(origin), "directory": "."}},
        {"name": "named", "gitRepo": {"repository": str(origin), "directory": "web", "revision": "main"}},
    ])
    volumes = await manager.setup(pod)
    pinned, here, named = (Path(volumes[name].source) for name in ("pinned", "here", "named"))
    assert pinned.parent.name == "kubernetes.io~git-repo"
    assert (pinned / "site/index.html").read_text() == "v1"  # git's own directory name for the clone
    assert (here / "index.html").read_text() == "v2" and (here / ".git").is_dir()
    assert (named / "web/index.html").read_text() == "v2"

    (origin / "index.html").write_text("v3")
    _git(origin, "commit", "-q", "-am", "v3")
    await manager.setup(pod)
    assert (here / "index.html").read_text() == "v2"  # cloned once, as Kubernetes does

    bad = _pod(ns, [{"name": "g", "gitRepo": {"repository": str(tmp_path / "missing.git")}}])
    with pytest.raises(MountError, match=r"MountVolume.SetUp failed for volume \"g\" : failed to exec "
                                         r"'git clone -- .*missing.git': .*does not exist"):
        await manager.setup(bad)
    bad_revision = _pod(ns, [{"name": "g", "gitRepo": {"repository": str(origin), "revision": "no-such-rev"}}])
    with pytest.raises(MountError, match="failed to exec 'git checkout no-such-rev'"):
        await manager.setup(bad_revision)


# ---- persistentVolumeClaim ---------------------------------------------------------------


async def test_claim_is_a_named_docker_volume_that_outlives_the_pod(api: ApiClient, ns: str,
                                                                  manager: VolumeManager, node_name: str) -> None:
    pvc = await api.create(PVCS, {"metadata": {"name": "db"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}, namespace=ns)
    name = pvc_volume_name(namespace=ns, claim="db")
    engine = docker.from_env()
    try:
        pod = _pod(ns, [{"name": "data", "persistentVolumeClaim": {"claimName": "db"}},
                        {"name": "ro", "persistentVolumeClaim": {"claimName": "db", "readOnly": True}}])
        volumes = await manager.setup(pod)
        assert await manager.setup(pod) == volumes  # idempotent
        assert volumes["data"].source == name == f"podling-pvc-{ns}-db" and volumes["data"].type == "volume"
        labels = engine.volumes.get(name).attrs["Labels"]
        assert labels == {LABEL_PVC_NAMESPACE: ns, LABEL_PVC_NAME: "db", LABEL_PVC_UID: pvc["metadata"]["uid"],
                          LABEL_NODE: node_name}

        container = {"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/var/lib/db"},
                                                     {"name": "ro", "mountPath": "/ro"},
                                                     {"name": "data", "mountPath": "/r2", "readOnly": True}]}
        assert manager.mounts(pod, container, volumes) == [
            Mount(target="/var/lib/db", source=name, type="volume", read_only=False),
            Mount(target="/ro", source=name, type="volume", read_only=True),
            Mount(target="/r2", source=name, type="volume", read_only=True),
        ]
        with pytest.raises(MountError, match="podling mounts only whole podling.io~docker-volume volumes"):
            manager.mounts(pod, {"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/x",
                                                                  "subPath": "a"}]}, volumes)

        await manager.teardown(pod["metadata"]["uid"])
        assert engine.volumes.get(name).name == name  # the claim's data outlives the pod
    finally:
        engine.volumes.get(name).remove()
        engine.close()


# ---- teardown ----------------------------------------------------------------------------


async def test_teardown_removes_volume_dirs_but_not_host_paths(api: ApiClient, ns: str, manager: VolumeManager,
                                                               tmp_path: Path) -> None:
    await _secret(api, ns, "s", {"k": "v"})
    host = tmp_path / "host-data"
    pod = _pod(ns, [{"name": "scratch", "emptyDir": {}}, {"name": "mem", "emptyDir": {"medium": "Memory"}},
                    {"name": "sec", "secret": {"secretName": "s"}},
                    {"name": "host", "hostPath": {"path": str(host), "type": "DirectoryOrCreate"}}])
    other = _pod(ns, [{"name": "scratch", "emptyDir": {}}])
    volumes = await manager.setup(pod)
    await manager.setup(other)
    uid = pod["metadata"]["uid"]
    (host / "keep.txt").write_text("precious")
    scratch = Path(volumes["scratch"].source)
    (scratch / "link-to-host").symlink_to(host)  # a container may leave links to anywhere
    assert manager.pod_dirs() == sorted([uid, other["metadata"]["uid"]])

    await manager.teardown(uid)
    assert not scratch.exists() and not Path(volumes["mem"].source).exists()
    assert not Path(volumes["sec"].source).exists()
    assert (host / "keep.txt").read_text() == "precious"
    assert manager.pod_dirs() == [other["metadata"]["uid"]]
    await manager.teardown(uid)  # nothing left: still fine

    with pytest.raises(MountError, match="invalid pod uid '..'"):
        await manager.teardown("..")


# ---- the environment against the API -----------------------------------------------------


async def test_env_from_configmaps_and_secrets(api: ApiClient, ns: str) -> None:
    await _configmap(api, ns, "app", {"MODE": "prod", "PORT": "8080"})
    await _secret(api, ns, "db", {"PASSWORD": "pa$$w0rd", "USER": "root"})
    pod = _pod(ns, [])
    container = {"name": "app", "envFrom": [
        {"configMapRef": {"name": "app"}},
        {"secretRef": {"name": "db"}, "prefix": "DB_"},
        {"configMapRef": {"name": "absent", "optional": True}},
    ], "env": [
        {"name": "MODE", "value": "dev"},  # env overrides envFrom
        {"name": "LISTEN", "value": ":$(PORT)"},
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "PASSWORD"}}},
        {"name": "PORT_AGAIN", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "PORT"}}},
        {"name": "SKIPPED", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "nope", "optional": True}}},
        {"name": "SKIPPED_TOO", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "x", "optional": True}}},
    ]}
    gets: list[str] = []
    real_get = api.get

    async def counting_get(resource: Resource, **kwargs: Any) -> Obj:
        gets.append(f"{resource.plural}/{kwargs['name']}")
        return await real_get(resource, **kwargs)

    api.get = counting_get  # type: ignore[method-assign]
    env = await container_env(api=api, pod=pod, container=container)
    assert env == {"MODE": "dev", "PORT": "8080", "DB_PASSWORD": "pa$$w0rd", "DB_USER": "root", "LISTEN": ":8080",
                   "PW": "pa$$w0rd", "PORT_AGAIN": "8080"}
    assert sorted(gets) == ["configmaps/absent", "configmaps/app", "secrets/absent", "secrets/db"]  # each once


async def test_env_errors(api: ApiClient, ns: str) -> None:
    await _configmap(api, ns, "x", {"a": "1"})
    await _secret(api, ns, "s", {"a": "1"})
    pod = _pod(ns, [])
    cases = [
        ({"configMapKeyRef": {"name": "missing", "key": "k"}}, 'configmap "missing" not found'),
        ({"configMapKeyRef": {"name": "x", "key": "k"}}, f"couldn't find key k in ConfigMap {ns}/x"),
        ({"secretKeyRef": {"name": "missing", "key": "k"}}, 'secret "missing" not found'),
        ({"secretKeyRef": {"name": "s", "key": "k"}}, f"couldn't find key k in Secret {ns}/s"),
    ]
    for value_from, message in cases:
        container = {"name": "app", "env": [{"name": "V", "valueFrom": value_from}]}
        with pytest.raises(EnvError) as err:
            await container_env(api=api, pod=pod, container=container)
        assert str(err.value) == message
    with pytest.raises(EnvError, match='^secret "missing" not found$'):
        await container_env(api=api, pod=pod, container={"name": "app", "envFrom": [{"secretRef": {"name": "missing"}}]})
