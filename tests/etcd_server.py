"""A throwaway etcd for tests: one real member on free loopback ports, its data in a temp dir.

Invariant: a test that asks for etcd gets a real one or fails loudly; a missing binary is an
error, never a skip, so CI cannot pass without having run the etcd half of a suite.

    server = EtcdServer(tmp_path)
    endpoint = server.start()  # "127.0.0.1:PORT", healthy
    ...
    server.stop()  # start() again restarts it on the same ports with the same data
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

_BINARY = "/usr/bin/etcd"  # Debian's etcd-server; CI installs the same package
_START_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EtcdServer:
    """One etcd process; ``start`` returns its client endpoint once it is healthy."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> str:
        binary = shutil.which("etcd") or _BINARY
        if not Path(binary).exists():
            raise RuntimeError(f"etcd is not installed (no 'etcd' on PATH, no {_BINARY}): apt install etcd-server")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        client, peer = f"http://{self.endpoint}", f"http://127.0.0.1:{self.peer_port}"
        self._log = (self.data_dir / "etcd.log").open("ab")
        self._process = subprocess.Popen(
            [
                binary,
                "--name=test",
                f"--data-dir={self.data_dir / 'data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                "--heartbeat-interval=10",
                "--election-timeout=50",
                "--log-level=error",
                "--logger=zap",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self._wait_healthy(self._process)
        return self.endpoint

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _wait_healthy(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"etcd exited with {process.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=1) as answer:
                    if b'"true"' in answer.read():
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy in {_START_TIMEOUT}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        return (self.data_dir / "etcd.log").read_text(errors="replace")[-2000:]
