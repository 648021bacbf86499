"""A real ``podling proxy`` process for end-to-end tests and benchmarks, and reading the node's
iptables rules the way an operator would (``iptables-save``).

Invariant: :meth:`ProxyProcess.cleanup` (``podling proxy --cleanup``) leaves no rule of the
proxy's node behind, whatever state the process ended in; fixtures call it in finalizers.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from podling_process import PodlingProcess, _free_port, _Process


def node_tag(node_name: str) -> str:
    """The six hex digits in the names of a node's chains (``PODLING-TAG-*``)."""
    return hashlib.sha256(node_name.encode()).hexdigest()[:6]


def iptables_save() -> str:
    return subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout


def node_rules(node_name: str) -> list[str]:
    """Every ``-A`` line of the node's chains or jumping to them (chain declarations left out)."""
    prefix = f"PODLING-{node_tag(node_name)}-"
    return [line for line in iptables_save().splitlines() if line.startswith("-A") and prefix in line]


def dnat_targets(node_name: str, service_port: str) -> list[str]:
    """``IP:PORT`` of the DNAT rules of one service port (``namespace/name:port``)."""
    comment = f'--comment "{service_port}"'
    return sorted(re.search(r"--to-destination (\S+)", line).group(1)  # type: ignore[union-attr]
                  for line in node_rules(node_name) if comment in line and "-j DNAT" in line)


class ProxyProcess(_Process):
    def __init__(self, *, server: PodlingProcess, node_name: str, log_dir: Path, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.server = server
        self.node_name = node_name
        self.log_dir = log_dir
        self.args = args
        self.env = env
        self.log = log_dir / "proxy.log"
        self.metrics_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def start(self, *, timeout: float = 30.0) -> ProxyProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        token_file = self.log_dir / "token"
        token_file.write_text(self.server.token)
        self.metrics_port = _free_port()
        log = self.log.open("ab")
        self._offset = log.tell()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "podling.cli.main", "proxy", "--server", self.server.url,
             "--token-file", str(token_file), "--ca-file", str(self.server.ca_file), "--node-name", self.node_name,
             "--metrics-listen", f"127.0.0.1:{self.metrics_port}", *self.args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(self.env or {})},
        )
        deadline = time.monotonic() + timeout
        while b"proxy ready:" not in self.output().encode():
            if self._proc.poll() is not None:
                raise RuntimeError(f"podling proxy exited {self._proc.returncode}:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"podling proxy did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        return self

    def output(self) -> str:
        """What this run of the process logged."""
        return self.log.read_bytes()[self._offset:].decode(errors="replace")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return response.read().decode()

    def cleanup(self) -> None:
        """``podling proxy --cleanup`` for this node: stop a live process first (killing it if it hangs)."""
        self.shut_down()
        subprocess.run([sys.executable, "-m", "podling.cli.main", "proxy", "--cleanup", "--node-name", self.node_name],
                       capture_output=True, check=True, timeout=30)
