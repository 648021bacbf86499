"""Static pods: pod manifests in a directory, run by the kubelet without the API server.

Invariants:

* The directory is the source of truth: a file's pod runs while the file is there and stops
  when it goes; changing the file replaces the pod. Changes are noticed by watchdog at once
  and by a rescan every ``rescan_period`` seconds in case an event was missed.
* A static pod's uid is a hash of its manifest and the node name, and its name is
  ``NAME-NODE``, as the kubelet names them: the same file gives the same pod after a kubelet
  restart (so its running containers are adopted, not replaced).
* A file that does not load or validate is logged with its file:line and changes nothing:
  the file's last good pod (if any) keeps running.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from podling.api.defaults import apply_defaults
from podling.api.manifests import SUFFIXES, ManifestError, load_file
from podling.api.schema import validator

log = logging.getLogger("podling.kubelet.static")

Obj = dict[str, Any]
SOURCE_ANNOTATION = "kubernetes.io/config.source"
HASH_ANNOTATION = "kubernetes.io/config.hash"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_POD = validator("io.k8s.api.core.v1.Pod")


def static_pod(manifest: Obj, *, node_name: str, source: str) -> Obj:
    """The pod the kubelet runs for a manifest: named NAME-NODE, uid from its content."""
    pod = copy.deepcopy(manifest)
    apply_defaults(kind="Pod", obj=pod)
    metadata = pod.setdefault("metadata", {})
    digest = hashlib.md5(repr((sorted_json(manifest), node_name, source)).encode()).hexdigest()
    metadata["name"] = f"{metadata.get('name', '')}-{node_name}"
    metadata["namespace"] = metadata.get("namespace") or "default"
    metadata["uid"] = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    metadata.setdefault("annotations", {}).update({SOURCE_ANNOTATION: "file", HASH_ANNOTATION: digest})
    pod.setdefault("spec", {})["nodeName"] = node_name
    pod.setdefault("apiVersion", "v1")
    pod.setdefault("kind", "Pod")
    return pod


def sorted_json(value: Any) -> Any:
    if isinstance(value, dict):
        return sorted((k, sorted_json(v)) for k, v in value.items())
    if isinstance(value, list):
        return [sorted_json(v) for v in value]
    return value


class StaticPods:
    """Watches ``directory``; calls ``on_change(pods by uid)`` whenever the set of pods changes."""

    def __init__(self, *, directory: Path, node_name: str, on_change: Callable[[dict[str, Obj]], None],
                 rescan_period: float = 20.0) -> None:
        self.directory = directory
        self.node_name = node_name
        self.on_change = on_change
        self.rescan_period = rescan_period
        self._by_file: dict[Path, Obj] = {}
        self._last: dict[str, Obj] | None = None
        self._wake = asyncio.Event()

    def pods(self) -> dict[str, Obj]:
        return {pod["metadata"]["uid"]: pod for pod in self._by_file.values()}

    def scan(self) -> None:
        found: dict[Path, Obj] = {}
        files = sorted(p for p in self.directory.iterdir() if p.suffix in SUFFIXES and p.is_file()) \
            if self.directory.is_dir() else []
        for path in files:
            pod = self._load(path)
            if pod is not None:
                found[path] = pod
            elif path in self._by_file:
                found[path] = self._by_file[path]  # the last good version keeps running
        self._by_file = found
        pods = self.pods()
        if self._last is None or pods.keys() != self._last.keys():
            self._last = pods
            self.on_change(pods)

    def _load(self, path: Path) -> Obj | None:
        try:
            manifests = load_file(path)
        except ManifestError as err:
            log.error("static pod %s", err)
            return None
        if len(manifests) != 1 or manifests[0].obj.get("kind") != "Pod":
            log.error("static pod %s: a static pod file holds exactly one Pod", path)
            return None
        manifest = manifests[0]
        result = _POD.validate(manifest.obj)
        if result.errors:
            for error in result.errors:
                log.error("static pod %s:%d: %s", path, manifest.line_of(error.path), error)
            return None
        return static_pod(manifest.obj, node_name=self.node_name, source=str(path))

    async def run(self) -> None:
        """Scan now, then on every change in the directory, until cancelled."""
        self.directory.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        wake = self._wake

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                loop.call_soon_threadsafe(wake.set)

        observer = Observer()
        observer.schedule(Handler(), str(self.directory), recursive=False)
        observer.start()
        try:
            while True:
                self.scan()
                try:
                    await asyncio.wait_for(wake.wait(), self.rescan_period)
                except asyncio.TimeoutError:
                    pass
                wake.clear()
                await asyncio.sleep(0.05)  # let an editor finish writing before reading
        finally:
            observer.stop()
            await asyncio.to_thread(observer.join, 5)
