"""Service proxy benchmark: requests/s and p99 through a NodePort and a ClusterIP, beside a
direct connection to the pod, in iptables mode and in userspace mode, in one run.

It starts a real ``podling apiserver``, ``controller-manager`` (replicaset, deployment,
endpoints), ``kubelet`` (Docker) and ``proxy``, and three Deployments of busybox httpd pods
serving a small page, one per path: ``direct`` (no Service), ``nodeport`` and ``clusterip``
(each behind a NodePort Service with a cluster IP). Load comes from Debian's ``wrk`` on the
host, bounded in time (``--duration`` per run): to a ``direct`` pod's IP:8080, to
127.0.0.1:NODEPORT of ``nodeport`` and to CLUSTERIP:80 of ``clusterip`` (the host reaches
cluster IPs through the nat OUTPUT chain in iptables mode, and through listeners on the
cluster IPs in userspace mode). Each target is measured ``--rounds`` times, interleaved, and
the median round is reported.

Why a pod per path, short runs and long pauses: busybox httpd answers one request per
connection and wrk closes first, so every request leaves a TIME_WAIT socket on the host for
60 s and a conntrack entry for 120 s, and one source address (10.88.0.1: the host, and the
masquerade of the proxied paths) reaching one pod port has ~28,000 ports. Paths sharing a pod
would slow whichever runs after another, and a long run measures port exhaustion, not the
path. So each path has its own pods, runs are short, and each round starts after
``--cooldown`` seconds, once the previous round's connections are forgotten.

All traffic goes to loopback, to a cluster IP inside the pods' bridge subnet, and to the pods
this script creates; every load is bounded in time. Usage:

    .venv/bin/python bench/proxy.py [--replicas 1] [--connections 8] [--duration 2] [--rounds 3]
                                    [--cooldown 121] [--modes iptables,userspace]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from podling_process import ControllerManagerProcess, KubeletProcess, PodlingProcess  # noqa: E402
from proxy_process import ProxyProcess, dnat_targets  # noqa: E402

NS = "bench-proxy"
IMAGE = "podling/busybox:1.35"
TIMEOUT = 120.0  # seconds any one wait may take


def wait(check: Any, what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise TimeoutError(what)


def wrk(url: str, *, connections: int, duration: int) -> tuple[float, float]:
    """(requests/s, p99 latency in ms) of one bounded wrk run."""
    done = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{duration}s", "--latency", url],
                          capture_output=True, text=True, timeout=duration + 30)
    out = done.stdout
    if done.returncode or "Socket errors" in out or "Non-2xx" in out:
        raise RuntimeError(f"wrk {url} failed or saw errors:\n{out}{done.stderr}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return rate, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def measure(targets: dict[str, str], *, connections: int, duration: int, rounds: int,
            cooldown: float) -> dict[str, tuple[float, float]]:
    """Median requests/s (and the p99 of that round) per target, rounds interleaved."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
    names = list(targets)
    for round_ in range(rounds):
        time.sleep(cooldown)
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:  # each path takes each place
            runs[name].append(wrk(targets[name], connections=connections, duration=duration))
    result = {}
    for name, values in runs.items():
        median = statistics.median_low(rate for rate, _ in values)
        result[name] = next(v for v in values if v[0] == median)
    return result


PATHS = ("direct", "nodeport", "clusterip")


def manifests(node: str, *, path: str, replicas: int, cluster_ip: str, node_port: int) -> list[dict[str, Any]]:
    """The Deployment of ``path``'s pods (label ``app=PATH``), and its Service unless it is ``direct``."""
    serve = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": path, "namespace": NS},
                  "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": path}},
                           "template": {"metadata": {"labels": {"app": path}}, "spec": {
                               "nodeName": node, "terminationGracePeriodSeconds": 0,
                               "containers": [{"name": "httpd", "image": IMAGE, "command": ["sh", "-c", serve],
                                               "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}}}
    if path == "direct":
        return [deployment]
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": path, "namespace": NS},
               "spec": {"type": "NodePort", "clusterIP": cluster_ip, "selector": {"app": path},
                        "ports": [{"port": 80, "targetPort": 8080, "nodePort": node_port}]}}
    return [deployment, service]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=1, help="pods per path (the direct runs hit one of them)")
    parser.add_argument("--connections", type=int, default=8,
                        help="wrk connections (busybox httpd listens with a backlog of 9: more drop SYNs)")
    parser.add_argument("--duration", type=int, default=2, help="seconds per wrk run")
    parser.add_argument("--cooldown", type=float, default=121.0,
                        help="seconds before each round (conntrack's TIME_WAIT ends)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per target, interleaved; the median is kept")
    parser.add_argument("--modes", default="iptables,userspace", help="proxy modes to measure, in order")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        api = PodlingProcess(data_dir=root / "apiserver").start()
        node = f"bench-proxy-{uuid.uuid4().hex[:6]}"
        kubelet = KubeletProcess(server=api, node_name=node, root_dir=root / "kubelet", args=("--address", "127.0.0.1"))
        manager = ControllerManagerProcess(server=api, log_dir=root / "controller-manager",
                                           args=("--controllers=replicaset,deployment,endpoints",))
        proxy = ProxyProcess(server=api, node_name=node, log_dir=root / "proxy")
        try:
            kubelet.start()
            manager.start()
            proxy.start()
            api.kubectl("create", "namespace", NS)
            cluster_ips = {path: f"10.88.{random.randint(129, 255)}.{random.randint(1, 254)}" for path in PATHS}
            node_ports = dict(zip(PATHS, random.sample(range(30000, 32768), len(PATHS))))
            for path in PATHS:
                for obj in manifests(node, path=path, replicas=args.replicas, cluster_ip=cluster_ips[path],
                                     node_port=node_ports[path]):
                    api.kubectl("apply", "-f", "-", input=json.dumps(obj))

            def pods(path: str) -> list[str]:
                items = api.kubectl_json("get", "pods", "-n", NS, "-l", f"app={path}")["items"]
                return sorted(p["status"]["podIP"] for p in items if any(
                    c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", ())))

            def programmed() -> bool:
                return all(len(dnat_targets(node, f"{NS}/{path}")) == args.replicas for path in PATHS[1:])

            direct = wait(lambda: ips if len(ips := pods("direct")) == args.replicas else None, "the pods Ready")
            wait(programmed, "the endpoints programmed")
            targets = {"direct to a pod": f"http://{direct[0]}:8080/",
                       "NodePort 127.0.0.1": f"http://127.0.0.1:{node_ports['nodeport']}/",
                       "ClusterIP": f"http://{cluster_ips['clusterip']}/"}
            results: dict[str, dict[str, tuple[float, float]]] = {}
            for mode in args.modes.split(","):
                proxy.stop()
                proxy.args = ("--proxy-mode", mode)
                proxy.start()
                if mode == "iptables":
                    wait(programmed, "the endpoints programmed")
                print(f"measuring {mode} mode", file=sys.stderr)
                results[mode] = measure(targets, connections=args.connections, duration=args.duration,
                                        rounds=args.rounds, cooldown=args.cooldown)

            print(f"{args.replicas} pod(s) per path, wrk -t2 -c{args.connections}, {args.duration}s runs, "
                  f"median of {args.rounds}")
            print(f"{'mode':<10} {'path':<20} {'requests/s':>11} {'p99':>9} {'of direct':>10}")
            for mode, figures in results.items():
                base = figures["direct to a pod"][0]
                for name, (rate, p99) in figures.items():
                    print(f"{mode:<10} {name:<20} {rate:>11,.0f} {p99:>7.2f}ms {rate / base:>9.0%}")
        finally:
            proxy.cleanup()
            for process in (manager, kubelet):
                process.shut_down()
            kubelet.remove_containers()
            api.stop()


if __name__ == "__main__":
    main()
