"""A real ``podling`` process for end-to-end tests, and the real ``kubectl`` pointed at it.

The server runs as users run it (a subprocess of the installed package, listening on a free
loopback port); tests talk to it only through its kubeconfig, kubectl and HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")


class _Process:
    """A podling subprocess: stopped with SIGTERM (as users stop it), or killed."""

    _proc: subprocess.Popen[bytes] | None = None

    def stop(self, *, timeout: float = 20.0) -> int:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            raise

    def kill(self) -> None:
        assert self._proc is not None
        self._proc.kill()
        self._proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def shut_down(self) -> None:
        """For finalizers: stop it if it runs, killing it if the stop fails; a process never
        started or already ended is left as it is."""
        if not self.running:
            return
        try:
            self.stop()
        except Exception:
            self.kill()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid


class PodlingProcess(_Process):
    def __init__(self, *, data_dir: Path, store: str = "sqlite", command: str = "apiserver",
                 args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.args = args
        self.store = store
        self.command = command
        self.kubeconfig = data_dir / "kubeconfig"
        self.log = data_dir / f"{command}.log"
        self.ca_file = data_dir / "pki" / "ca.crt"
        self.url = ""
        self.token = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 30.0) -> PodlingProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig.unlink(missing_ok=True)
        log = self.log.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "podling.cli.main", self.command, "--data-dir", str(self.data_dir),
             "--listen", "127.0.0.1:0", "--store", self.store, *self.args],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not self.kubeconfig.exists():
            if self._proc.poll() is not None:
                raise RuntimeError(f"podling {self.command} exited {self._proc.returncode}:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"podling {self.command} did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        config = YAML(typ="safe").load(self.kubeconfig.read_text())
        self.url = config["clusters"][0]["cluster"]["server"]
        self.token = config["users"][0]["user"]["token"]
        return self

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}:\n"
                                 f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json", token: str | None = None) -> tuple[int, Any]:
        """A raw HTTP request; returns (status, parsed JSON body or text)."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token if token is None else token}")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.ssl_context()) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()


class KubeletProcess(_Process):
    """A real ``podling kubelet`` process for one node, against a running API server.

    Its containers carry the label ``io.podling.node=NODE`` on the one Docker engine;
    ``remove_containers()`` removes them all (tests call it when they are done with a node).
    """

    def __init__(self, *, server: PodlingProcess, node_name: str, root_dir: Path,
                 args: tuple[str, ...] = ()) -> None:
        self.server = server
        self.node_name = node_name
        self.root_dir = root_dir
        self.args = args
        self.log = root_dir / "kubelet.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 30.0) -> KubeletProcess:
        self.root_dir.mkdir(parents=True, exist_ok=True)
        token_file = self.root_dir / "token"
        token_file.write_text(self.server.token)
        log = self.log.open("ab")
        offset = log.tell()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "podling.cli.main", "kubelet", "--server", self.server.url,
             "--token-file", str(token_file), "--ca-file", str(self.server.ca_file),
             "--node-name", self.node_name, "--root-dir", str(self.root_dir), "--kubelet-port", "0", *self.args],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"podling kubelet exited {self._proc.returncode}:\n{self.log.read_text()}")
            if f"kubelet {self.node_name} ready at".encode() in self.log.read_bytes()[offset:]:
                return self
            if time.monotonic() > deadline:
                raise TimeoutError(f"podling kubelet did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def containers(self, *, pod: str = "", all: bool = True) -> list[str]:
        """Docker ids of this node's containers (sandboxes included), of one pod if named."""
        result = subprocess.run(["docker", "ps", "-q", *(["-a"] if all else []), "--no-trunc",
                                 "--filter", f"label=io.podling.node={self.node_name}",
                                 *(["--filter", f"label=io.podling.pod.name={pod}"] if pod else [])],
                                capture_output=True, text=True, check=True)
        return result.stdout.split()

    def remove_containers(self) -> None:
        """Remove this node's containers and the volumes of its claims."""
        if ids := self.containers():
            subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True, check=False)
        volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=io.podling.node={self.node_name}"],
                                 capture_output=True, text=True, check=True).stdout.split()
        if volumes:
            subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True, check=False)


class ControllerManagerProcess(_Process):
    """A real ``podling controller-manager`` process against a running API server.

    ``args`` are its flags (``--controllers``, shortened timeouts); it is started when it logs
    that its controllers run (every informer synced), and serves /metrics on a free port.
    """

    def __init__(self, *, server: PodlingProcess, log_dir: Path, args: tuple[str, ...] = ()) -> None:
        self.server = server
        self.log_dir = log_dir
        self.args = args
        self.log = log_dir / "controller-manager.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 30.0) -> ControllerManagerProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        token_file = self.log_dir / "token"
        token_file.write_text(self.server.token)
        log = self.log.open("ab")
        offset = log.tell()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "podling.cli.main", "controller-manager", "--server", self.server.url,
             "--token-file", str(token_file), "--ca-file", str(self.server.ca_file),
             "--metrics-listen", "127.0.0.1:0", *self.args],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"podling controller-manager exited {self._proc.returncode}:\n{self.log.read_text()}")
            if b"controller manager running:" in self.log.read_bytes()[offset:]:
                return self
            if time.monotonic() > deadline:
                raise TimeoutError(f"podling controller-manager did not start:\n{self.log.read_text()}")
            time.sleep(0.1)


def _free_port() -> int:
    import socket  # here, so this file's earlier part stays as it was

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SchedulerProcess(_Process):
    """A real ``podling scheduler`` process against a running API server.

    ``args`` are its flags (``--scheduler-config``); it is started when it has logged that it
    is ready (its informers synced) and its /metrics on ``metrics_port`` answers.
    """

    def __init__(self, *, server: PodlingProcess, log_dir: Path, args: tuple[str, ...] = ()) -> None:
        self.server = server
        self.log_dir = log_dir
        self.args = args
        self.log = log_dir / "scheduler.log"
        self.metrics_port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 30.0) -> SchedulerProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        token_file = self.log_dir / "token"
        token_file.write_text(self.server.token)
        self.metrics_port = _free_port()
        log = self.log.open("ab")
        offset = log.tell()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "podling.cli.main", "scheduler", "--server", self.server.url,
             "--token-file", str(token_file), "--ca-file", str(self.server.ca_file),
             "--metrics-listen", f"127.0.0.1:{self.metrics_port}", *self.args],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"podling scheduler exited {self._proc.returncode}:\n{self.log.read_text()}")
            if b"scheduler ready:" in self.log.read_bytes()[offset:]:
                try:  # /metrics opens just after the scheduler is ready
                    urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=5).close()
                    return self
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"podling scheduler did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def metrics(self) -> str:
        """Its /metrics page (Prometheus text)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return response.read().decode()
