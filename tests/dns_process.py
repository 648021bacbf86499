"""A real ``podling dns`` process for end-to-end tests, and a resolver for it.

Queries go only to the process's own address and port (loopback, unless a test has pods
reach it), over UDP or TCP, with dnslib building and parsing the messages.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dnslib import DNSRecord

from podling_process import PodlingProcess, _free_port, _Process


class DNSProcess(_Process):
    """``podling dns`` against ``server``, answering on ``host``:``port`` (UDP and TCP; a free port).

    ``host`` is loopback unless pods must reach the server (through the kube-dns ClusterIP):
    then it is the pod network's gateway, 10.88.0.1, and the process waits until it can bind.
    """

    def __init__(self, *, server: PodlingProcess, log_dir: Path, host: str = "127.0.0.1",
                 args: tuple[str, ...] = ()) -> None:
        self.server = server
        self.log_dir = log_dir
        self.host = host
        self.args = args
        self.log = log_dir / "dns.log"
        self.port = 0
        self.metrics_port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 30.0) -> DNSProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        token_file = self.log_dir / "token"
        token_file.write_text(self.server.token)
        self.port, self.metrics_port = _free_port(), _free_port()
        log = self.log.open("ab")
        offset = log.tell()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "podling.cli.main", "dns", "--server", self.server.url,
             "--token-file", str(token_file), "--ca-file", str(self.server.ca_file),
             "--dns-listen", f"{self.host}:{self.port}", "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
             *self.args],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while f"dns serving on {self.host}:{self.port}".encode() not in self.log.read_bytes()[offset:]:
            if self._proc.poll() is not None:
                raise RuntimeError(f"podling dns exited {self._proc.returncode}:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"podling dns did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        return self

    def query(self, name: str, qtype: str = "A", *, tcp: bool = False) -> DNSRecord:
        reply = DNSRecord.question(name, qtype).send(self.host, self.port, tcp=tcp, timeout=5)
        return DNSRecord.parse(reply)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return response.read().decode()
