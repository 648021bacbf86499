"""iptables mode: ServicePorts -> NAT and filter rules in podling's own chains, as kube-proxy's.

Chains (``T`` is the proxy's tag, six hex digits of its node name, so proxies of several
nodes on one machine, as tests run them, never touch each other's rules)::

    nat     PREROUTING, OUTPUT -> PODLING-T-SERVICES      one rule per cluster IP and LB IP:port,
                                                          last: local addresses -> PODLING-T-NODEPORTS
            PODLING-T-NODEPORTS                            node port -> PODLING-T-EXT-h
            PODLING-T-EXT-h                                mark for masquerade, -> PODLING-T-SVC-h
            PODLING-T-SVC-h                                off-cluster sources to the cluster IP are
                                                          masqueraded; affinity (-m recent --rcheck),
                                                          then endpoint i with probability 1/(n-i)
            PODLING-T-SEP-h                                hairpin masquerade; DNAT (-m recent --set)
            POSTROUTING -> PODLING-T-POSTROUTING           masquerade packets carrying the mark
            PODLING-T-MARK-MASQ                            sets the mark
    filter  INPUT (new connections) -> PODLING-T-SERVICES  REJECT (icmp-port-unreachable) service
                                                          ports without ready endpoints
            FORWARD -> PODLING-T-FORWARD                   accept marked (node port) traffic

Invariants:

* :func:`render` is pure: the same ServicePorts and settings give the same text. Chain names
  are hashes of the tag and the service port (and endpoint), so they are stable across
  restarts and processes.
* A sync is one ``iptables-restore --noflush`` per run: every chain of ours is declared
  (which flushes it) and rewritten whole, chains of ours no longer wanted are deleted, and
  the jumps from the built-in chains are made exactly one each (added when missing,
  duplicates deleted), from the state ``iptables-save`` showed just before. Nothing outside
  our chains and our jumps is ever changed, and rebuilding after a restart or a crash never
  duplicates a rule.
* :func:`cleanup_input` removes every chain of the tag and every jump to one: after a clean
  shutdown (or ``podling proxy --cleanup``) nothing of ours is left.

Why the service range is also a local route (see ``host``): ClusterIPs lie inside the pods'
bridge subnet, so a pod resolves a ClusterIP by ARP on the bridge; the node answers only for
local addresses. With the route, the packet reaches the node and PREROUTING's DNAT. Why the
REJECT rules sit in INPUT (kube-proxy puts them in OUTPUT and FORWARD too): a cluster IP is a
local address here, so a connection to one that is not DNATed is delivered locally, from
pods and from the node alike. Other addresses and ports of the range are not rejected: they
reach the node's own sockets (as the bridge's gateway address already does for pods), and
another cluster's userspace proxy or a DNS server may listen there.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence

from podling.proxy.model import ServicePort

log = logging.getLogger("podling.proxy.iptables")

TABLES = ("nat", "filter")
_CHAIN_MAX = 28  # iptables' limit on a chain name


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    tag: str  # six hex digits, from the node name (tag_for)
    cluster_cidr: str  # the pods' addresses: sources outside it are masqueraded to cluster IPs
    masquerade_mark: int = 1 << 14  # kube-proxy's bit (0x4000)

    @property
    def prefix(self) -> str:
        return f"PODLING-{self.tag}-"

    def chain(self, name: str) -> str:
        return self.prefix + name

    @property
    def mark(self) -> str:
        return f"{self.masquerade_mark:#x}/{self.masquerade_mark:#x}"


def tag_for(node_name: str) -> str:
    return hashlib.sha256(node_name.encode()).hexdigest()[:6]


def _hash(*parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return base64.b32encode(digest).decode()[:8]


def svc_chain(settings: Settings, port: ServicePort) -> str:
    return settings.chain("SVC-" + _hash(settings.tag, port.key))


def ext_chain(settings: Settings, port: ServicePort) -> str:
    return settings.chain("EXT-" + _hash(settings.tag, port.key))


def sep_chain(settings: Settings, port: ServicePort, endpoint: str) -> str:
    return settings.chain("SEP-" + _hash(settings.tag, port.key, endpoint))


# The jumps from built-in chains: (table, built-in chain, our chain's suffix, match before -j).
JUMPS: tuple[tuple[str, str, str, str], ...] = (
    ("nat", "PREROUTING", "SERVICES", '-m comment --comment "podling service portals"'),
    ("nat", "OUTPUT", "SERVICES", '-m comment --comment "podling service portals"'),
    ("nat", "POSTROUTING", "POSTROUTING", '-m comment --comment "podling postrouting rules"'),
    ("filter", "INPUT", "SERVICES", '-m conntrack --ctstate NEW -m comment --comment "podling service portals"'),
    ("filter", "FORWARD", "FORWARD", '-m comment --comment "podling forwarding rules"'),
)
_BUILTIN = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}


@dataclasses.dataclass(slots=True)
class Table:
    """One table's chains (in order) and rules (``-A CHAIN ...`` lines)."""

    chains: list[str] = dataclasses.field(default_factory=list)
    rules: list[str] = dataclasses.field(default_factory=list)

    def add(self, chain: str, spec: str) -> None:
        self.rules.append(f"-A {chain} {spec}")


@dataclasses.dataclass(slots=True)
class Ruleset:
    nat: Table
    filter: Table
    sep_services: dict[str, str]  # SEP chain -> "namespace/name", to read connection counters by

    def table(self, name: str) -> Table:
        return self.nat if name == "nat" else self.filter

    def rule_count(self) -> dict[str, int]:
        return {"nat": len(self.nat.rules), "filter": len(self.filter.rules)}


def _match(port: ServicePort, *, dest: str = "", dport: int) -> str:
    proto = port.protocol.lower()
    destination = f"-d {dest}/32 " if dest else ""
    return f"{destination}-p {proto} -m {proto} --dport {dport}"


def _comment(text: str) -> str:
    return f'-m comment --comment "{text}"'


def render(ports: Iterable[ServicePort], settings: Settings) -> Ruleset:
    """The whole desired state of our chains for these ServicePorts (pure)."""
    s = settings
    services, nodeports, postrouting, mark_masq = (s.chain(n) for n in ("SERVICES", "NODEPORTS", "POSTROUTING",
                                                                         "MARK-MASQ"))
    nat = Table(chains=[services, nodeports, postrouting, mark_masq])
    reject = s.chain("SERVICES")
    forward = s.chain("FORWARD")
    filt = Table(chains=[reject, forward])
    sep_services: dict[str, str] = {}
    masq = f"-j {mark_masq}"
    nat.add(mark_masq, f"-j MARK --or-mark {s.masquerade_mark:#x}")
    nat.add(postrouting, f"-m mark ! --mark {s.mark} -j RETURN")
    nat.add(postrouting, f"-j MARK --xor-mark {s.masquerade_mark:#x}")  # clear it: a packet is masqueraded once
    nat.add(postrouting, f"{_comment('podling service traffic requiring SNAT')} -j MASQUERADE --random-fully")
    rejected = "-j REJECT --reject-with icmp-port-unreachable"
    for port in sorted(ports, key=lambda p: p.key):
        external = [(ip, port.port) for ip in port.load_balancer_ips]
        if not port.endpoints:
            text = _comment(f"{port.key} has no endpoints")
            if port.cluster_ip:
                filt.add(reject, f"{_match(port, dest=port.cluster_ip, dport=port.port)} {text} {rejected}")
            for ip, number in external:
                filt.add(reject, f"{_match(port, dest=ip, dport=number)} {text} {rejected}")
            if port.node_port:
                filt.add(reject, f"-m addrtype --dst-type LOCAL {_match(port, dport=port.node_port)} {text} {rejected}")
            continue
        svc = svc_chain(s, port)
        nat.chains.append(svc)
        if port.cluster_ip:
            nat.add(services, f"{_match(port, dest=port.cluster_ip, dport=port.port)} "
                              f"{_comment(port.key + ' cluster IP')} -j {svc}")
            nat.add(svc, f"! -s {s.cluster_cidr} {_match(port, dest=port.cluster_ip, dport=port.port)} "
                         f"{_comment(port.key + ' cluster IP')} {masq}")
        if port.node_port or external:
            ext = ext_chain(s, port)
            nat.chains.append(ext)
            nat.add(ext, f"{_comment('masquerade traffic for ' + port.key + ' external destinations')} {masq}")
            nat.add(ext, f"-j {svc}")
            for ip, number in external:
                nat.add(services, f"{_match(port, dest=ip, dport=number)} "
                                  f"{_comment(port.key + ' loadbalancer IP')} -j {ext}")
            if port.node_port:
                nat.add(nodeports, f"{_match(port, dport=port.node_port)} {_comment(port.key)} -j {ext}")
        seps = [(endpoint, sep_chain(s, port, str(endpoint))) for endpoint in port.endpoints]
        if port.affinity_seconds:
            for endpoint, sep in seps:
                nat.add(svc, f"{_comment(f'{port.key} -> {endpoint}')} -m recent --name {sep} --mask 255.255.255.255 "
                             f"--rsource --rcheck --seconds {port.affinity_seconds} --reap -j {sep}")
        for i, (endpoint, sep) in enumerate(seps):
            remaining = len(seps) - i
            chance = "" if remaining == 1 else f"-m statistic --mode random --probability {1 / remaining:.10f} "
            nat.add(svc, f"{_comment(f'{port.key} -> {endpoint}')} {chance}-j {sep}")
        for endpoint, sep in seps:
            nat.chains.append(sep)
            sep_services[sep] = port.service
            nat.add(sep, f"-s {endpoint.ip}/32 {_comment(port.key)} {masq}")  # hairpin: a pod reaching itself
            recent = (f"-m recent --name {sep} --mask 255.255.255.255 --rsource --set "
                      if port.affinity_seconds else "")
            proto = port.protocol.lower()
            nat.add(sep, f"-p {proto} {_comment(port.key)} {recent}-m {proto} -j DNAT --to-destination {endpoint}")
    nat.add(services, f"{_comment('podling service nodeports; must be the last rule in this chain')} "
                      f"-m addrtype --dst-type LOCAL -j {nodeports}")
    filt.add(forward, f"-m mark --mark {s.mark} {_comment('podling forwarding rules')} -j ACCEPT")
    filt.add(forward, f"-m conntrack --ctstate RELATED,ESTABLISHED {_comment('podling forwarding replies')} -j ACCEPT")
    assert all(len(c) <= _CHAIN_MAX for c in nat.chains + filt.chains)
    return Ruleset(nat=nat, filter=filt, sep_services=sep_services)


# ---- what is on the node now ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    chain: str
    spec: str  # everything after "-A CHAIN "
    packets: int
    bytes: int

    @property
    def target(self) -> str:
        found = re.search(r"(?:^|\s)-j\s+(\S+)", self.spec)
        return found.group(1) if found else ""


@dataclasses.dataclass(slots=True)
class Saved:
    """One table as ``iptables-save -c`` printed it."""

    chains: list[str] = dataclasses.field(default_factory=list)
    rules: list[Rule] = dataclasses.field(default_factory=list)


_COUNTED = re.compile(r"^\[(\d+):(\d+)\]\s+-A\s+(\S+)\s*(.*)$")
_PLAIN = re.compile(r"^-A\s+(\S+)\s*(.*)$")


def parse_save(text: str) -> dict[str, Saved]:
    """``iptables-save [-c]`` output -> table name -> chains and rules (with counters when given)."""
    tables: dict[str, Saved] = {}
    current: Saved | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), Saved())
        elif current is None or not line or line.startswith("#") or line == "COMMIT":
            continue
        elif line.startswith(":"):
            current.chains.append(line[1:].split()[0])
        elif found := _COUNTED.match(line):
            current.rules.append(Rule(found.group(3), found.group(4), int(found.group(1)), int(found.group(2))))
        elif found := _PLAIN.match(line):
            current.rules.append(Rule(found.group(1), found.group(2), 0, 0))
    return tables


def _ours(settings: Settings, chain: str) -> bool:
    return chain.startswith(settings.prefix)


def restore_input(desired: Ruleset, current: Mapping[str, Saved], settings: Settings) -> str:
    """iptables-restore --noflush input turning ``current`` into ``desired`` (pure)."""
    out: list[str] = []
    for name in TABLES:
        table, saved = desired.table(name), current.get(name) or Saved()
        stale = [c for c in saved.chains if _ours(settings, c) and c not in table.chains]
        out.append(f"*{name}")
        out += [f":{chain} - [0:0]" for chain in [*table.chains, *stale]]
        out += table.rules
        out += _jump_fixes(name, saved, settings)
        out += [f"-X {chain}" for chain in stale]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def _jump_fixes(table: str, saved: Saved, settings: Settings) -> list[str]:
    """Exactly one jump per JUMPS entry: delete extras and strays, insert what is missing."""
    fixes: list[str] = []
    wanted = {(builtin, settings.chain(suffix)): match for t, builtin, suffix, match in JUMPS if t == table}
    seen: set[tuple[str, str]] = set()
    for rule in saved.rules:
        if rule.chain in _BUILTIN and _ours(settings, rule.target):
            key = (rule.chain, rule.target)
            if key in wanted and key not in seen:
                seen.add(key)
            else:
                fixes.append(f"-D {rule.chain} {rule.spec}")
    for (builtin, chain), match in wanted.items():
        if (builtin, chain) not in seen:
            fixes.append(f"-I {builtin} 1 {match} -j {chain}")
    return fixes


def cleanup_input(current: Mapping[str, Saved], settings: Settings) -> str:
    """iptables-restore --noflush input removing every chain of ours and every jump to one ("" if none)."""
    out: list[str] = []
    for name in TABLES:
        saved = current.get(name) or Saved()
        chains = [c for c in saved.chains if _ours(settings, c)]
        jumps = [f"-D {r.chain} {r.spec}" for r in saved.rules if r.chain in _BUILTIN and _ours(settings, r.target)]
        if chains or jumps:
            out += [f"*{name}", *jumps, *(f":{c} - [0:0]" for c in chains), *(f"-X {c}" for c in chains), "COMMIT"]
    return "\n".join(out) + "\n" if out else ""


def count_rules(current: Mapping[str, Saved], settings: Settings) -> int:
    """Rules in our chains plus jumps to them, over both tables."""
    return sum(1 for saved in current.values() for rule in saved.rules
               if _ours(settings, rule.chain) or _ours(settings, rule.target))


def connections(saved_nat: Saved, sep_services: Mapping[str, str]) -> dict[str, int]:
    """Connections per service: the packet counters of the DNAT rules (the nat table sees only a
    connection's first packet)."""
    counts: dict[str, int] = {}
    for rule in saved_nat.rules:
        service = sep_services.get(rule.chain)
        if service is not None and rule.target == "DNAT":
            counts[service] = counts.get(service, 0) + rule.packets
    return counts


# ---- running it -------------------------------------------------------------------------


class IptablesError(Exception):
    """iptables could not be run, or refused the input."""


@dataclasses.dataclass(frozen=True, slots=True)
class Iptables:
    """The system's ``iptables-save`` and ``iptables-restore`` (whichever backend, nft or legacy)."""

    save_path: str
    restore_path: str

    @classmethod
    def find(cls) -> Iptables:
        """The binaries on PATH; IptablesError naming what is missing."""
        save, restore = shutil.which("iptables-save"), shutil.which("iptables-restore")
        if not save or not restore:
            raise IptablesError(f"{'iptables-save' if not save else 'iptables-restore'} is not on PATH")
        return cls(save_path=save, restore_path=restore)

    async def _run(self, *argv: str, stdin: str = "") -> str:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as err:
            raise IptablesError(f"{argv[0]}: {err}") from err
        try:
            out, err = await process.communicate(stdin.encode() if stdin else None)
        except asyncio.CancelledError:
            # Let it finish (iptables-restore applies all of its input or none): a restore still
            # running after a cancelled sync could otherwise land after the shutdown's cleanup.
            await process.wait()
            raise
        if process.returncode:
            raise IptablesError(f"{' '.join(argv)} exited {process.returncode}: {err.decode().strip()}")
        return out.decode()

    async def save(self, *, tables: Sequence[str] = TABLES) -> dict[str, Saved]:
        saved: dict[str, Saved] = {}
        for table in tables:
            saved.update(parse_save(await self._run(self.save_path, "-c", "-t", table)))
        return saved

    async def restore(self, text: str) -> None:
        if text:
            await self._run(self.restore_path, "--noflush", "-w", "5", stdin=text)

    async def check(self) -> None:
        """Raises IptablesError unless we can read and write the nat and filter tables."""
        await self.save()
        await self.restore("*nat\nCOMMIT\n*filter\nCOMMIT\n")
