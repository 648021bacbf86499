"""A pod's volumes on the node: prepared before its containers start, removed after they are gone.

Invariants:

* :meth:`VolumeManager.setup` is level-triggered and idempotent: each run re-reads the pod,
  its ConfigMaps, Secrets and PersistentVolumeClaims and brings every volume to match them,
  so running it again on a running pod is how ConfigMap, Secret and downward-API updates
  reach its containers. A gitRepo volume is cloned once (a ready marker records it).
* Kubernetes' layout: a volume of a pod is ``<root>/pods/<uid>/volumes/<plugin>/<name>``
  (``kubernetes.io~empty-dir`` …). What must not touch the disk (emptyDir of medium Memory,
  secret and projected volumes) lives at the same path under ``/dev/shm/podling/<node>``
  instead: one directory on a tmpfs, shared by all the pod's containers.
* API data volumes (configMap, secret, downwardAPI, projected) are written the way
  Kubernetes' AtomicWriter writes them (pkg/volume/util/atomic_writer.go): the files go into
  a fresh timestamped ``..2024_01_02_03_04_05.*`` directory, the ``..data`` symlink is swapped
  to it by a rename, and each visible name is a symlink through ``..data``. A container that
  has the volume mounted sees the whole old version or the whole new one, never a mix.
* The pod's resolv.conf (:meth:`VolumeManager.resolv_conf`) lives with its plugin data, so
  teardown and orphan cleanup remove it with the rest.
* :meth:`VolumeManager.teardown` removes only what setup made under those two roots: never a
  hostPath's content (it is not under them) and never a claim's named volume, whose data
  outlives the pod.
* One pod's setup, mounts and teardown are never called concurrently (its pod worker orders
  them); different pods are independent.

Failures are :class:`MountError` with the text Kubernetes puts in a FailedMount event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from podling.api import meta
from podling.api.quantity import QuantityLike
from podling.api.resources import find
from podling.client.http import ApiClient, ApiError, TransportError, is_not_found
from podling.kubelet.env import PodObjects, SourceKind, expand, object_field, references, resource_field
from podling.kubelet.runtime.base import LABEL_NODE, Mount, Runtime, RuntimeError_

log = logging.getLogger("podling.kubelet.volumes")

Obj = Mapping[str, Any]

PLUGIN_EMPTY_DIR = "kubernetes.io~empty-dir"
PLUGIN_HOST_PATH = "kubernetes.io~host-path"
PLUGIN_CONFIGMAP = "kubernetes.io~configmap"
PLUGIN_SECRET = "kubernetes.io~secret"
PLUGIN_DOWNWARD_API = "kubernetes.io~downward-api"
PLUGIN_PROJECTED = "kubernetes.io~projected"
PLUGIN_GIT_REPO = "kubernetes.io~git-repo"
PLUGIN_PVC = "podling.io~docker-volume"
PLUGIN_DNS = "podling.io~dns"  # the pod's resolv.conf lives with its plugin data, so teardown removes it
RESOLV_CONF = "/etc/resolv.conf"

LABEL_PVC_NAMESPACE = "io.podling.pvc.namespace"
LABEL_PVC_NAME = "io.podling.pvc.name"
LABEL_PVC_UID = "io.podling.pvc.uid"

TMPFS_ROOT = Path("/dev/shm/podling")
DEFAULT_MODE = 0o644  # a file's mode when neither the item nor the volume gives one (0644, as Kubernetes)
_DATA_LINK = "..data"
_DATA_LINK_TMP = "..data_tmp"
_MAX_PATH_LENGTH = 4096
_MAX_FILE_NAME_LENGTH = 255
_GIT_TIMEOUT = 600.0  # seconds a clone or checkout may take before it is killed

_PVCS = find(group="", version="v1", plural="persistentvolumeclaims")
assert _PVCS is not None


class MountError(Exception):
    """A volume cannot be set up or mounted; the message is fit for a FailedMount event and the pod's status."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Volume:
    """A set-up volume: what a container's volumeMounts of it are made from."""

    name: str
    plugin: str  # Kubernetes' plugin directory name (kubernetes.io~configmap …), or PLUGIN_PVC
    source: str  # a host path (type "bind") or a runtime-named volume (type "volume")
    type: Literal["bind", "volume"] = "bind"
    read_only: bool = False  # every mount of it is read-only (API data volumes, readOnly claims)


@dataclasses.dataclass(frozen=True, slots=True)
class _File:
    data: bytes
    mode: int


Payload = dict[str, _File]


def pvc_volume_name(*, namespace: str, claim: str) -> str:
    """The runtime's named volume holding a PersistentVolumeClaim's data."""
    return f"podling-pvc-{namespace}-{claim}"


class VolumeManager:
    """Sets up, mounts and removes the volumes of this node's pods.

    ``allocatable`` is the node's (``cpu``, ``memory``, ``ephemeral-storage``): what a
    downwardAPI resourceFieldRef to an unset limit reads; without it, such a limit reads as 0.
    """

    def __init__(self, *, api: ApiClient, runtime: Runtime, root: Path, node_name: str,
                 allocatable: Mapping[str, QuantityLike] | None = None) -> None:
        self._api = api
        self._runtime = runtime
        self._node_name = node_name
        self._allocatable = dict(allocatable or {})
        self._disk = root / "pods"
        self._tmpfs = TMPFS_ROOT / node_name / "pods"

    # ---- setup -------------------------------------------------------------------------

    async def setup(self, pod: Obj) -> dict[str, Volume]:
        """Prepare every volume of ``pod.spec.volumes``; what to mount, by volume name."""
        uid = _pod_uid(pod)
        objects = PodObjects(api=self._api, namespace=meta.namespace(pod))
        await asyncio.to_thread(_make_dir, self._tmpfs, 0o700)  # secrets: no other host user walks in
        volumes: dict[str, Volume] = {}
        for spec in (pod.get("spec") or {}).get("volumes") or ():
            name = str(spec.get("name") or "")
            try:
                _check_component(name, "volume name")
                volumes[name] = await self._setup_one(pod, uid=uid, name=name, spec=spec, objects=objects)
            except (ValueError, OSError) as err:
                raise MountError(f'MountVolume.SetUp failed for volume "{name}" : {_reason(err)}') from err
        return volumes

    async def _setup_one(self, pod: Obj, *, uid: str, name: str, spec: Obj, objects: PodObjects) -> Volume:
        kind = next((key for key, value in spec.items() if key != "name" and value is not None),
                    "emptyDir")  # the API's default source
        source = spec.get(kind) or {}
        match kind:
            case "emptyDir":
                return await self._empty_dir(uid=uid, name=name, source=source)
            case "hostPath":
                return await _host_path(name=name, source=source)
            case "configMap" | "secret":
                return await self._key_volume(uid=uid, name=name, kind=kind, source=source, objects=objects)
            case "downwardAPI":
                default_mode = _file_mode(source.get("defaultMode"), DEFAULT_MODE)
                payload = self._downward_payload(pod, items=source.get("items"), default_mode=default_mode)
                return await self._write(uid=uid, name=name, plugin=PLUGIN_DOWNWARD_API, payload=payload)
            case "projected":
                return await self._projected(pod, uid=uid, name=name, source=source, objects=objects)
            case "persistentVolumeClaim":
                return await self._claim(pod, name=name, source=source)
            case "gitRepo":
                return await self._git_repo(uid=uid, name=name, source=source)
        raise ValueError(f"podling does not support {kind} volumes")

    def _volume_dir(self, *, uid: str, plugin: str, name: str, tmpfs: bool) -> Path:
        return (self._tmpfs if tmpfs else self._disk) / uid / "volumes" / plugin / name

    async def _empty_dir(self, *, uid: str, name: str, source: Obj) -> Volume:
        medium = source.get("medium") or ""
        if medium not in ("", "Memory"):
            raise ValueError(f"emptyDir medium {medium} is not supported")
        path = self._volume_dir(uid=uid, plugin=PLUGIN_EMPTY_DIR, name=name, tmpfs=medium == "Memory")
        await asyncio.to_thread(_make_dir, path, 0o777)  # any container user may write, as Kubernetes
        return Volume(name=name, plugin=PLUGIN_EMPTY_DIR, source=str(path))

    async def _key_volume(self, *, uid: str, name: str, kind: Literal["configMap", "secret"], source: Obj,
                          objects: PodObjects) -> Volume:
        source_kind: SourceKind = "configmap" if kind == "configMap" else "secret"
        payload = await _key_payload(objects, kind=source_kind,
                                     name=source.get("name" if kind == "configMap" else "secretName") or "",
                                     items=source.get("items"),
                                     default_mode=_file_mode(source.get("defaultMode"), DEFAULT_MODE),
                                     optional=bool(source.get("optional")))
        plugin = PLUGIN_CONFIGMAP if kind == "configMap" else PLUGIN_SECRET
        return await self._write(uid=uid, name=name, plugin=plugin, payload=payload, tmpfs=kind == "secret")

    def _downward_payload(self, pod: Obj, *, items: Any, default_mode: int) -> Payload:
        payload: Payload = {}
        for item in items or ():
            if field := item.get("fieldRef"):
                value = object_field(pod, field.get("fieldPath") or "")
            elif selector := item.get("resourceFieldRef"):
                value = resource_field(pod=pod, container=None, selector=selector, allocatable=self._allocatable)
            else:
                raise ValueError(f"downwardAPI item {item.get('path')!r} has neither fieldRef nor resourceFieldRef")
            payload[str(item.get("path") or "")] = _File(value.encode(), _file_mode(item.get("mode"), default_mode))
        return payload

    async def _projected(self, pod: Obj, *, uid: str, name: str, source: Obj, objects: PodObjects) -> Volume:
        default_mode = _file_mode(source.get("defaultMode"), DEFAULT_MODE)
        payload: Payload = {}
        for projection in source.get("sources") or ():
            for kind in ("configMap", "secret"):
                if ref := projection.get(kind):
                    payload |= await _key_payload(objects, kind="configmap" if kind == "configMap" else "secret",
                                                  name=ref.get("name") or "", items=ref.get("items"),
                                                  default_mode=default_mode, optional=bool(ref.get("optional")))
            if downward := projection.get("downwardAPI"):
                payload |= self._downward_payload(pod, items=downward.get("items"), default_mode=default_mode)
            if "serviceAccountToken" in projection:
                log.warning("pod %s: volume %s: serviceAccountToken projections are not supported; left out",
                            meta.object_key(pod), name)
            unknown = set(projection) - {"configMap", "secret", "downwardAPI", "serviceAccountToken"}
            if unknown:
                raise ValueError(f"podling does not support {', '.join(sorted(unknown))} projections")
        return await self._write(uid=uid, name=name, plugin=PLUGIN_PROJECTED, payload=payload, tmpfs=True)

    async def _write(self, *, uid: str, name: str, plugin: str, payload: Payload, tmpfs: bool = False) -> Volume:
        path = self._volume_dir(uid=uid, plugin=plugin, name=name, tmpfs=tmpfs)
        await asyncio.to_thread(_write_atomic, path, payload)
        return Volume(name=name, plugin=plugin, source=str(path), read_only=True)

    async def _claim(self, pod: Obj, *, name: str, source: Obj) -> Volume:
        namespace, claim = meta.namespace(pod), str(source.get("claimName") or "")
        try:
            pvc = await self._api.get(_PVCS, namespace=namespace, name=claim)
        except ApiError as err:
            if is_not_found(err):
                raise ValueError(f'persistentvolumeclaim "{claim}" not found') from err
            raise ValueError(f"couldn't get persistentvolumeclaim {namespace}/{claim}: {err.message or err}") from err
        except TransportError as err:
            raise ValueError(f"couldn't get persistentvolumeclaim {namespace}/{claim}: {err}") from err
        volume = pvc_volume_name(namespace=namespace, claim=claim)
        labels = {LABEL_PVC_NAMESPACE: namespace, LABEL_PVC_NAME: claim,
                  LABEL_PVC_UID: str((pvc.get("metadata") or {}).get("uid") or ""), LABEL_NODE: self._node_name}
        try:
            await self._runtime.ensure_volume(volume, labels=labels)
        except RuntimeError_ as err:
            raise ValueError(f"volume {volume} of persistentvolumeclaim {namespace}/{claim}: {err}") from err
        return Volume(name=name, plugin=PLUGIN_PVC, source=volume, type="volume",
                      read_only=bool(source.get("readOnly")))

    async def _git_repo(self, *, uid: str, name: str, source: Obj) -> Volume:
        path = self._volume_dir(uid=uid, plugin=PLUGIN_GIT_REPO, name=name, tmpfs=False)
        ready = self._disk / uid / "plugins" / PLUGIN_GIT_REPO / name / "ready"
        await asyncio.to_thread(_clone, path, ready=ready, repository=str(source.get("repository") or ""),
                                revision=str(source.get("revision") or ""),
                                directory=str(source.get("directory") or ""))
        return Volume(name=name, plugin=PLUGIN_GIT_REPO, source=str(path))

    # ---- mounts ------------------------------------------------------------------------

    def mounts(self, pod: Obj, container: Obj, volumes: Mapping[str, Volume], *,
               env: Mapping[str, str] | None = None) -> list[Mount]:
        """The runtime mounts for ``container.volumeMounts`` of ``pod``, from its set-up ``volumes``.

        ``env`` is the container's environment, which ``subPathExpr`` expands. A missing
        subPath directory is created (with its volume's mode), as Kubernetes does.
        """
        container_name = str(container.get("name") or "")
        result = []
        for mount in container.get("volumeMounts") or ():
            volume = volumes.get(mount.get("name") or "")
            if volume is None:
                raise MountError(f'cannot find volume "{mount.get("name")}" to mount into container '
                                 f'"{container_name}" of pod {meta.object_key(pod)}')
            sub_path = str(mount.get("subPath") or "")
            if expression := mount.get("subPathExpr"):
                sub_path = _expand_sub_path(expression, env or {})
            source = volume.source
            if sub_path:
                source = _sub_path(volume, sub_path, container_name=container_name)
            result.append(Mount(target=str(mount.get("mountPath") or ""), source=source, type=volume.type,
                                read_only=bool(mount.get("readOnly")) or volume.read_only))
        return result

    async def resolv_conf(self, pod: Obj, *, text: str) -> Mount:
        """The pod's resolv.conf, written (in place, when it changed) and mounted read-only at /etc/resolv.conf."""
        path = self._disk / _pod_uid(pod) / "plugins" / PLUGIN_DNS / "resolv.conf"
        try:
            await asyncio.to_thread(_write_text, path, text)
        except OSError as err:
            raise MountError(f"cannot write the resolv.conf of pod {meta.object_key(pod)}: {_reason(err)}") from err
        return Mount(target=RESOLV_CONF, source=str(path), read_only=True)

    # ---- teardown ----------------------------------------------------------------------

    async def teardown(self, pod_uid: str) -> None:
        """Remove the pod's volume directories (on disk and on tmpfs); the rest stays."""
        try:
            _check_component(pod_uid, "pod uid")
            await asyncio.to_thread(self._remove, pod_uid)
        except (ValueError, OSError) as err:
            raise MountError(f"UnmountVolume.TearDown failed for pod {pod_uid} : {_reason(err)}") from err

    def _remove(self, uid: str) -> None:
        pod_dir = self._disk / uid
        for path in (pod_dir / "volumes", pod_dir / "plugins", self._tmpfs / uid):
            if path.exists():
                shutil.rmtree(path)  # never follows symlinks: a link to a host path loses only the link
        with contextlib.suppress(OSError):  # other parts of the kubelet may keep files there: then it stays
            pod_dir.rmdir()

    def pod_dirs(self) -> list[str]:
        """The uids of pods that have volume directories on this node (for orphan cleanup)."""
        uids = {entry.parent.name for entry in self._disk.glob("*/volumes")}
        uids |= {entry.parent.name for entry in self._disk.glob("*/plugins")}
        if self._tmpfs.is_dir():
            uids |= {entry.name for entry in self._tmpfs.iterdir()}
        return sorted(uids)


# ---- helpers -----------------------------------------------------------------------------


def _pod_uid(pod: Obj) -> str:
    uid = str((pod.get("metadata") or {}).get("uid") or "")
    try:
        return _check_component(uid, "pod uid")
    except ValueError as err:
        raise MountError(f"pod {meta.object_key(pod)}: {err}") from err


def _check_component(text: str, what: str) -> str:
    """``text``, if it can be one path component (a name never reaches outside its directory)."""
    if text in ("", ".", "..") or "/" in text or "\0" in text:
        raise ValueError(f"invalid {what} {text!r}")
    return text


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return str(err)


def _file_mode(mode: Any, default: int) -> int:
    """An item's ``mode`` or a volume's ``defaultMode``, or ``default`` when it is not given."""
    if mode is None:
        return default
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise ValueError(f"file mode {mode!r} must be between 0 and 0777 (511)")
    return mode


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it says so already; in place, so a bind mount of it sees the change."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _make_dir(path: Path, mode: int) -> None:
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)


async def _host_path(*, name: str, source: Obj) -> Volume:
    path, path_type = str(source.get("path") or ""), str(source.get("type") or "")
    if not os.path.isabs(path):
        raise ValueError(f"hostPath path {path!r} must be absolute")
    await asyncio.to_thread(_check_host_path, path, path_type)
    return Volume(name=name, plugin=PLUGIN_HOST_PATH, source=path)


def _check_host_path(path: str, path_type: str) -> None:
    """Kubernetes' hostPath type check (pkg/volume/hostpath/host_path.go, checkTypeInternal)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    match path_type:
        case "":
            return
        case "DirectoryOrCreate" | "Directory":
            if mode is None and path_type == "DirectoryOrCreate":
                os.makedirs(path, mode=0o755)
            elif mode is None or not stat.S_ISDIR(mode):
                raise ValueError(f"hostPath type check failed: {path} is not a directory")
        case "FileOrCreate" | "File":
            if mode is None and path_type == "FileOrCreate":
                os.close(os.open(path, os.O_CREAT | os.O_RDONLY, 0o644))  # no parent dirs, as Kubernetes
            elif mode is None or not stat.S_ISREG(mode):
                raise ValueError(f"hostPath type check failed: {path} is not a file")
        case "Socket":
            if mode is None or not stat.S_ISSOCK(mode):
                raise ValueError(f"hostPath type check failed: {path} is not a socket file")
        case "CharDevice":
            if mode is None or not stat.S_ISCHR(mode):
                raise ValueError(f"hostPath type check failed: {path} is not a character device")
        case "BlockDevice":
            if mode is None or not stat.S_ISBLK(mode):
                raise ValueError(f"hostPath type check failed: {path} is not a block device")
        case _:
            raise ValueError(f"{path_type} is an invalid volume type")


async def _key_payload(objects: PodObjects, *, kind: SourceKind, name: str, items: Any, default_mode: int,
                       optional: bool) -> Payload:
    """A ConfigMap's or Secret's files (Kubernetes' configmap.MakePayload and secret.MakePayload)."""
    data = await objects.get(kind, name)
    if data is None:
        if not optional:
            raise ValueError(objects.not_found(kind, name))
        data = {}
    if not items:
        return {key: _File(value, default_mode) for key, value in data.items()}
    payload: Payload = {}
    for item in items:
        key = str(item.get("key") or "")
        if key not in data:
            if optional:
                continue
            raise ValueError(f"configmap references non-existent config key: {key}" if kind == "configmap"
                             else f"references non-existent secret key: {key}")
        payload[str(item.get("path") or "")] = _File(data[key], _file_mode(item.get("mode"), default_mode))
    return payload


# ---- the atomic writer -------------------------------------------------------------------


def _check_payload_path(path: str) -> str:
    """The cleaned relative path, or ValueError with AtomicWriter's words (validatePath)."""
    if not path:
        raise ValueError(f"invalid path: must not be empty: {path!r}")
    if path.startswith("/"):
        raise ValueError(f"invalid path: must be relative path: {path}")
    if len(path) > _MAX_PATH_LENGTH:
        raise ValueError(f"invalid path: must be less than or equal to {_MAX_PATH_LENGTH} characters")
    parts = path.split("/")
    for part in parts:
        if part == "..":
            raise ValueError(f"invalid path: must not contain '..': {path}")
        if len(part) > _MAX_FILE_NAME_LENGTH:
            raise ValueError(f"invalid path: filenames must be less than or equal to {_MAX_FILE_NAME_LENGTH} "
                             "characters")
    if parts[0].startswith("..") and len(parts[0]) > 2:
        raise ValueError(f"invalid path: must not start with '..': {path}")
    cleaned = str(PurePosixPath(path))
    if cleaned == ".":
        raise ValueError(f"invalid path: must name a file: {path}")
    return cleaned


def _on_disk(directory: Path) -> Payload:
    """The files under ``directory`` (a timestamped data directory), as a payload."""
    found: Payload = {}
    for parent, _dirs, files in os.walk(directory):
        for file_name in files:
            file_path = Path(parent, file_name)
            found[str(file_path.relative_to(directory))] = _File(file_path.read_bytes(),
                                                                stat.S_IMODE(file_path.lstat().st_mode))
    return found


def _write_atomic(target: Path, payload: Payload) -> None:
    """Make ``target`` hold exactly ``payload``, switching versions with one rename (AtomicWriter.Write)."""
    files = {_check_payload_path(path): file for path, file in payload.items()}
    visible = {path.split("/", 1)[0] for path in files}
    _make_dir(target, 0o755)
    data_link = target / _DATA_LINK
    old = os.readlink(data_link) if data_link.is_symlink() else ""
    stale = {entry.name for entry in target.iterdir() if not entry.name.startswith("..")} - visible
    if old and not stale and (target / old).is_dir() and _on_disk(target / old) == files:
        return
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
    fresh = Path(tempfile.mkdtemp(prefix=stamp, dir=target))
    fresh.chmod(0o755)
    for path, file in files.items():
        file_path = fresh / path
        file_path.parent.mkdir(parents=True, exist_ok=True)
        file_path.write_bytes(file.data)
        file_path.chmod(file.mode)
    tmp_link = target / _DATA_LINK_TMP
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(fresh.name)
    os.replace(tmp_link, data_link)
    for name in visible:
        if not (target / name).is_symlink():
            (target / name).symlink_to(f"{_DATA_LINK}/{name}")
    for name in stale:
        entry = target / name
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink()
        else:
            shutil.rmtree(entry)
    for entry in target.iterdir():  # the old version, and any left by a write cut short
        if entry.name.startswith("..") and entry.name not in (_DATA_LINK, fresh.name) and entry.is_dir() \
                and not entry.is_symlink():
            shutil.rmtree(entry)


# ---- gitRepo -----------------------------------------------------------------------------


def _clone(path: Path, *, ready: Path, repository: str, revision: str, directory: str) -> None:
    """Clone once, then check out ``revision`` (Kubernetes' gitRepo SetUpAt); ``ready`` marks success."""
    if ready.exists():
        return
    if not repository:
        raise ValueError("gitRepo needs a repository")
    if directory and (directory.startswith("/") or ".." in PurePosixPath(directory).parts):
        raise ValueError(f"gitRepo directory {directory!r} must be relative and must not contain '..'")
    if path.exists():
        shutil.rmtree(path)  # a clone cut short: start over
    _make_dir(path, 0o777)
    _git(path, "clone", "--", repository, *([directory] if directory else []))
    if revision:
        if directory and PurePosixPath(directory) == PurePosixPath("."):
            checkout = path
        else:
            entries = list(path.iterdir())
            if len(entries) != 1:
                raise ValueError(f"unexpected directory contents: {sorted(entry.name for entry in entries)}")
            checkout = entries[0]
        _git(checkout, "checkout", revision)
        _git(checkout, "reset", "--hard")
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.touch()


def _git(cwd: Path, *args: str) -> None:
    # Imported here: GitPython refuses to import on a machine without git, and only gitRepo
    # volumes need it.
    try:
        import git
    except ImportError as err:
        raise ValueError(f"gitRepo volumes need git: {err}") from err
    command = git.Git(str(cwd))
    command.update_environment(GIT_TERMINAL_PROMPT="0")  # fail, never wait for a password
    try:
        status, stdout, stderr = command.execute(["git", *args], with_extended_output=True, with_exceptions=False,
                                                 kill_after_timeout=_GIT_TIMEOUT)
    except git.GitError as err:
        raise ValueError(f"failed to exec 'git {' '.join(args)}': {err}") from err
    if status != 0:
        output = (stderr or stdout).strip()
        raise ValueError(f"failed to exec 'git {' '.join(args)}': {output}: exit status {status}")


# ---- subPath -----------------------------------------------------------------------------


def _expand_sub_path(expression: str, env: Mapping[str, str]) -> str:
    """``subPathExpr`` expanded; every variable it names must be set and non-empty (Kubernetes' rule)."""
    if missing := sorted(name for name in references(expression) if not env.get(name)):
        raise MountError(f"missing value for {', '.join(missing)}")
    return expand(expression, env)


def _sub_path(volume: Volume, sub_path: str, *, container_name: str) -> str:
    """The host path of ``sub_path`` inside ``volume``, created as a directory if missing."""
    if os.path.isabs(sub_path):
        raise MountError(f"error SubPath `{sub_path}` must not be an absolute path")
    if ".." in PurePosixPath(sub_path).parts:
        raise MountError(f"unable to provision SubPath `{sub_path}`: must not contain '..'")
    if volume.type != "bind":
        raise MountError(f'subPath `{sub_path}` of volume "{volume.name}": podling mounts only whole '
                         f"{volume.plugin} volumes")
    base = Path(volume.source)
    path = base / sub_path
    if not path.exists() and not path.is_symlink():
        try:
            path.mkdir(parents=True)
            path.chmod(stat.S_IMODE(base.stat().st_mode))
        except OSError as err:
            raise MountError(f'failed to create subPath directory for volumeMount "{volume.name}" of container '
                             f'"{container_name}"') from err
    resolved = path.resolve()
    if not resolved.is_relative_to(base.resolve()):
        raise MountError(f'subpath "{resolved}" not within volume path "{base}"')
    return str(resolved)
