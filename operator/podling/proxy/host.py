"""The machine-wide settings a proxy needs, shared by every podling proxy on the machine.

What and why:

* ``net.ipv4.conf.all.route_localnet = 1`` (iptables mode): a node port reached on
  127.0.0.1 is DNATed to a pod; without it the kernel drops a packet leaving with a loopback
  source as martian (kube-proxy sets the same). The source is then masqueraded.
* A local route for the service range (``ip route add local 10.88.128.0/17 dev lo``): cluster
  IPs lie inside the pods' bridge subnet, so a pod asks for a cluster IP by ARP on the bridge,
  and the node answers ARP only for its own addresses. With the route every cluster IP is
  one of the node's, the node answers, and the packet reaches PREROUTING (iptables mode) or
  a listener bound to the cluster IP (userspace mode). It exposes nothing new: pods already
  reach the node at the bridge's gateway address.
* ``hairpin_mode`` on the pods' bridge ports, so a pod reaching its own service (DNATed back
  to itself) gets its packets: a bridge does not send a frame back out of the port it came in
  by without it (the kubelet's ``--hairpin-mode=hairpin-veth`` in Kubernetes). Per port, it
  goes away with the pod's veth; nothing to restore.

Invariants: several proxies (one per node name, as tests run several nodes on one machine)
share the first two settings. Each running proxy holds an exclusive ``flock`` on its own
holder file; the first to arrive records the machine's original values in ``saved.json``,
and the last to leave (no other holder file still locked) puts them back and removes it. A
proxy that was killed leaves its holder unlocked, so it never keeps the settings alive; its
record of the originals stays until a later proxy (or ``podling proxy --cleanup``) leaves last.
Two proxies with one node name cannot run at once: the second's lock fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("podling.proxy.host")

STATE_DIR = Path("/run/podling/proxy")
ROUTE_LOCALNET = Path("/proc/sys/net/ipv4/conf/all/route_localnet")
_SYS_NET = Path("/sys/class/net")
_SIOCGIFADDR = 0x8915


class HostError(Exception):
    """The machine's settings could not be changed (no rights, no ``ip``)."""


class AlreadyRunning(HostError):
    """Another proxy with this node name runs on this machine."""


class HostNetwork:
    def __init__(self, *, tag: str, service_cidr: str, cluster_cidr: str, route_localnet: bool,
                 state_dir: Path = STATE_DIR) -> None:
        self.tag = tag
        self.service_cidr = service_cidr
        self.cluster_cidr = ipaddress.ip_network(cluster_cidr)
        self.route_localnet = route_localnet
        self.state_dir = state_dir
        self.route = False  # the service range is locally routed (listeners may bind cluster IPs)
        self._holder: int | None = None

    # ---- the shared settings -------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "holders").mkdir(exist_ok=True)
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def acquire(self) -> None:
        """Hold the settings for this proxy: AlreadyRunning if another proxy of this node holds them,
        HostError if they cannot be changed."""
        try:
            with self._locked():
                fd = os.open(self.state_dir / "holders" / self.tag, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise AlreadyRunning(f"another podling proxy with tag {self.tag} (this node name) is running") from None
                self._holder = fd
                saved = self._saved()
                if saved is None:
                    saved = {"route_localnet": _read(ROUTE_LOCALNET), "routes_added": []}
                if not _route_exists(self.service_cidr):
                    _ip("route", "add", "local", self.service_cidr, "dev", "lo")
                    saved["routes_added"] = sorted({*saved["routes_added"], self.service_cidr})
                    log.info("added a local route for the service range %s (so pods' ARP for cluster IPs is "
                             "answered)", self.service_cidr)
                self.route = True
                if self.route_localnet and _read(ROUTE_LOCALNET) != "1":
                    ROUTE_LOCALNET.write_text("1\n")
                    log.info("set net.ipv4.conf.all.route_localnet=1 (node ports on 127.0.0.1); it is put back "
                             "to %s when the last podling proxy on this machine stops", saved["route_localnet"])
                (self.state_dir / "saved.json").write_text(json.dumps(saved))
        except OSError as err:
            if self._holder is not None:
                try:
                    self.release()
                except OSError as again:
                    log.warning("cannot put the machine's network settings back: %s", again)
            raise HostError(f"cannot change the machine's network settings: {err}") from err

    def release(self) -> None:
        """Let go (if held); the last proxy to leave puts the machine's original settings back."""
        if self._holder is None:
            return
        with self._locked():
            os.close(self._holder)  # closing drops the flock
            self._holder = None
            (self.state_dir / "holders" / self.tag).unlink(missing_ok=True)
            self._restore_if_last()
        self.route = False

    def cleanup(self) -> None:
        """``podling proxy --cleanup``: drop a killed proxy's holder; restore if nobody is left."""
        with self._locked():
            self._restore_if_last()

    def _restore_if_last(self) -> None:
        if self._others_alive():
            return
        saved = self._saved()
        if saved is None:
            return
        for cidr in saved["routes_added"]:
            if _route_exists(cidr):
                _ip("route", "del", "local", cidr, "dev", "lo")
                log.info("removed the local route for the service range %s", cidr)
        original = saved["route_localnet"]
        if _read(ROUTE_LOCALNET) != original:
            ROUTE_LOCALNET.write_text(original + "\n")
            log.info("put net.ipv4.conf.all.route_localnet back to %s", original)
        (self.state_dir / "saved.json").unlink()

    def _others_alive(self) -> bool:
        """True if another proxy holds its holder file; stale holders (killed proxies) are removed."""
        alive = False
        for path in (self.state_dir / "holders").iterdir():
            if path.name == self.tag and self._holder is not None:
                continue
            fd = os.open(path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                alive = True
            else:
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return alive

    def _saved(self) -> dict[str, object] | None:
        path = self.state_dir / "saved.json"
        return json.loads(path.read_text()) if path.exists() else None

    # ---- hairpin -------------------------------------------------------------------------

    def set_hairpin(self) -> int:
        """Turn hairpin mode on for every port of the pods' bridge(s); how many were turned on."""
        turned = 0
        for bridge in _SYS_NET.iterdir():
            if not (bridge / "bridge").exists() or not self._holds_pods(bridge.name):
                continue
            for port in (bridge / "brif").iterdir():
                mode = port / "hairpin_mode"
                try:
                    if mode.read_text().strip() != "1":
                        mode.write_text("1")
                        turned += 1
                except OSError:  # the port went away meanwhile
                    continue
        return turned

    def _holds_pods(self, ifname: str) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", ifname[:15].encode()))
            except OSError:  # no IPv4 address
                return False
        return ipaddress.ip_address(socket.inet_ntoa(answer[20:24])) in self.cluster_cidr


def _read(path: Path) -> str:
    return path.read_text().strip()


def _ip(*args: str) -> str:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise OSError(f"ip {' '.join(args)}: {err}") from err
    if result.returncode:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _route_exists(cidr: str) -> bool:
    return bool(_ip("route", "show", "table", "local", "type", "local", "exact", cidr).strip())
