"""The ``podling`` command: one entry point, a subcommand per job.

``podling up`` runs every component in one process for a single machine; ``podling
apiserver|kubelet|scheduler|controller-manager|proxy|dns|operator`` runs one alone against a shared API
server. Bad flags
exit 2 with argparse's message naming the flag; nothing is started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from podling.cli import app, kubeconfig
from podling.cli.flags import seconds
from podling.client.config import ClientConfig, ConfigError, from_flags, load_kubeconfig


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def _store(value: str) -> str:
    if value == "sqlite" or value.startswith(("sqlite://", "etcd://")):
        return value
    raise argparse.ArgumentTypeError(f"expected sqlite, sqlite:///PATH or etcd://HOST:PORT[,HOST:PORT], got {value!r}")




def _kubelet_flags(p: argparse.ArgumentParser, *, alone: bool) -> None:
    p.add_argument("--node-name", default=socket.gethostname(), help="the Node's name (default: the hostname)")
    p.add_argument("--manifest-dir", type=Path, help="a directory of static pod manifests, run without the API")
    p.add_argument("--root-dir", type=Path, help="where pod volumes live (default: DATA_DIR/kubelet)" if not alone
                   else "where pod volumes and the kubelet's certificate live (default /var/lib/podling/kubelet)")
    p.add_argument("--address", default="", help="the node's InternalIP (default: the address facing the API server)")
    p.add_argument("--kubelet-port", type=int, default=10250, metavar="PORT",
                   help="the kubelet's HTTPS port for logs and exec (default %(default)s; 0: any free port)")
    p.add_argument("--max-pods", type=int, default=110, help="pods this node takes (default %(default)s)")
    p.add_argument("--runtime", choices=["docker", "hollow"], default="docker",
                   help="docker (default), or hollow: a simulation without containers, for control-plane scale tests")
    p.add_argument("--hollow-start-delay", type=seconds, default=0.5, metavar="SECONDS",
                   help="with --runtime hollow: how long a simulated container takes to start")
    p.add_argument("--node-status-update-frequency", type=seconds, default=10.0, metavar="SECONDS",
                   help="how often the node's status is written (default %(default)s)")
    p.add_argument("--node-lease-renew-interval", type=seconds, default=10.0, metavar="SECONDS",
                   help="how often the node's Lease in kube-node-lease is renewed (default %(default)s)")
    p.add_argument("--pod-network", default="podling", help="the Docker bridge network pods join (default %(default)s)")
    p.add_argument("--pod-subnet", default="10.88.0.0/16", help="its subnet, created if missing (default %(default)s)")
    p.add_argument("--resolv-conf", type=Path, default=Path("/etc/resolv.conf"), metavar="FILE",
                   help="the resolver configuration of pods with dnsPolicy Default (default %(default)s)")


def _ip_list(value: str) -> tuple[str, ...]:
    import ipaddress

    try:
        return tuple(str(ipaddress.IPv4Address(ip.strip())) for ip in value.split(",") if ip.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected IPv4 addresses separated by commas: {err}") from None


def _cluster_dns_flags(p: argparse.ArgumentParser, *, server: bool) -> None:
    """Cluster DNS: what pods' resolv.conf says (kubelet) and where the DNS server listens (``server``)."""
    p.add_argument("--cluster-dns", type=_ip_list, default="10.88.128.10", metavar="IP[,IP]",
                   help="the cluster DNS Service's ClusterIP: the nameserver of pods with dnsPolicy ClusterFirst "
                        "('' for none: they get the node's resolv.conf) (default %(default)s)")
    p.add_argument("--cluster-domain", default="cluster.local", help="the cluster's DNS domain (default %(default)s)")
    if server:
        p.add_argument("--dns-listen", type=_listen, action="append", metavar="HOST:PORT",
                       help="where the DNS server answers, on UDP and TCP (repeatable; the first is kube-dns's "
                            "endpoint; default 10.88.0.1:53, the pod network's gateway, bound once it exists)")


def _service_range_flags(p: argparse.ArgumentParser) -> None:
    from podling.apiserver.allocator import (DEFAULT_CLUSTER_IP_RANGE, DEFAULT_NODE_PORT_RANGE,
                                             parse_cluster_ip_range, parse_node_port_range)

    def checked(parse: Any) -> Any:
        def check(value: str) -> str:
            try:
                parse(value)
            except ValueError as err:
                raise argparse.ArgumentTypeError(str(err)) from None
            return value
        return check

    p.add_argument("--service-cluster-ip-range", type=checked(parse_cluster_ip_range),
                   default=DEFAULT_CLUSTER_IP_RANGE, metavar="CIDR",
                   help="where Services' clusterIPs come from (default %(default)s)")
    p.add_argument("--service-node-port-range", type=checked(parse_node_port_range),
                   default=DEFAULT_NODE_PORT_RANGE, metavar="FIRST-LAST",
                   help="where Services' nodePorts come from (default %(default)s)")


def _controller_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--controllers", default="*", help="controllers to run: * for all, *,-name to leave one out, "
                                                       "or a comma-separated list (default %(default)s)")
    p.add_argument("--concurrent-syncs", type=int, default=5, metavar="N", help="workers per controller")
    p.add_argument("--node-monitor-period", type=seconds, default=5.0, metavar="SECONDS")
    p.add_argument("--node-monitor-grace-period", type=seconds, default=40.0, metavar="SECONDS",
                   help="a node whose lease is older than this is NotReady/Unknown (default %(default)s)")
    p.add_argument("--node-startup-grace-period", type=seconds, default=60.0, metavar="SECONDS")
    p.add_argument("--default-toleration-seconds", type=int, default=300, metavar="SECONDS",
                   help="how long pods stay on a not-ready or unreachable node (default %(default)s)")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16", help="podCIDRs for nodes (default %(default)s)")
    p.add_argument("--node-cidr-mask-size", type=int, default=24)
    p.add_argument("--service-account-private-key-file", type=Path, metavar="FILE",
                   help="the RS256 key that signs service account tokens (podling up: DATA_DIR/pki/sa.key)")


def _ipv4_cidr(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.IPv4Network(value))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected an IPv4 CIDR such as 10.88.128.0/17: {err}") from None


def _proxy_flags(p: argparse.ArgumentParser, *, alone: bool) -> None:
    p.add_argument("--proxy-mode", choices=["iptables", "userspace"], default="iptables",
                   help="iptables NAT rules (default), or userspace listeners relaying connections (also chosen, "
                        "with a log line saying why, when iptables cannot be used)")
    if not alone:
        return
    p.add_argument("--node-name", default=socket.gethostname(), help="this node's name (default: the hostname)")
    p.add_argument("--service-cluster-ip-range", type=_ipv4_cidr, default="10.88.128.0/17", metavar="CIDR",
                   help="the cluster IPs' range, routed locally on the node (default %(default)s)")
    p.add_argument("--cluster-cidr", type=_ipv4_cidr, default="10.88.0.0/17", metavar="CIDR",
                   help="the pods' addresses; other sources reaching a cluster IP are masqueraded "
                        "(default %(default)s)")
    p.add_argument("--masquerade-bit", type=int, choices=range(32), default=14, metavar="BIT",
                   help="the packet mark bit meaning 'masquerade this' (default %(default)s, kube-proxy's)")
    p.add_argument("--sync-period", type=seconds, default=30.0, metavar="SECONDS",
                   help="how often every rule is rewritten even without changes (default %(default)s)")
    p.add_argument("--min-sync-period", type=seconds, default=1.0, metavar="SECONDS",
                   help="after two syncs in a row, at most one per this long; a lone change is synced at once "
                        "(default %(default)s)")
    p.add_argument("--cleanup", action="store_true",
                   help="remove the rules and settings a proxy of --node-name left on this machine, and exit")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podling", description="A Kubernetes-compatible orchestrator driven by git.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run everything on this machine (all-in-one)")
    apiserver = sub.add_parser("apiserver", help="run the API server alone")
    for p in (up, apiserver):
        p.add_argument("--data-dir", type=Path, required=True, help="where the store, tokens and kubeconfig live")
        p.add_argument("--listen", type=_listen, default="127.0.0.1:6443", help="HOST:PORT (default %(default)s)")
        p.add_argument("--store", type=_store, default="sqlite",
                       help="sqlite (DATA_DIR/podling.db), sqlite:///PATH or etcd://HOST:PORT[,HOST:PORT]")
        p.add_argument("--compaction-interval", type=seconds, default=300.0, metavar="SECONDS",
                       help="compact store history older than this (default %(default)s)")
        _service_range_flags(p)
    apiserver.add_argument("--token-auth-file", type=Path,
                           help="token,user,uid[,groups] CSV (default: DATA_DIR/tokens.csv, created if missing)")
    apiserver.add_argument("--service-account-key-file", type=Path, metavar="FILE",
                           help="PEM RSA public keys (or private keys, certificates) that verify service account "
                                "tokens (default: DATA_DIR/pki/sa.pub, made with sa.key if missing)")
    _kubelet_flags(up, alone=False)

    gitops = sub.add_parser("operator", help="run the GitOps operator against an API server")
    kubelet = sub.add_parser("kubelet", help="run a node's kubelet against an API server")
    scheduler = sub.add_parser("scheduler", help="run the scheduler against an API server")
    manager = sub.add_parser("controller-manager", help="run the controllers against an API server")
    proxy = sub.add_parser("proxy", help="run a node's service proxy against an API server")
    dns = sub.add_parser("dns", help="run the cluster DNS server against an API server")
    for p in (kubelet, scheduler, manager, gitops, proxy, dns):
        p.add_argument("--server", help="the API server's URL, such as https://127.0.0.1:6443")
        p.add_argument("--token-file", type=Path, help="a file holding the bearer token to use")
        p.add_argument("--ca-file", type=Path, help="the CA certificate that signed the API server's")
        p.add_argument("--kubeconfig", type=Path, help="a kubeconfig instead of --server/--token-file/--ca-file")
    _kubelet_flags(kubelet, alone=True)
    _cluster_dns_flags(kubelet, server=False)
    _cluster_dns_flags(up, server=True)
    _cluster_dns_flags(dns, server=True)
    _proxy_flags(up, alone=False)
    _proxy_flags(proxy, alone=True)
    for p in (up, scheduler):
        p.add_argument("--scheduler-config", type=Path, metavar="FILE",
                       help="scheduler profiles (plugins and weights) as YAML; default: one default-scheduler profile")
    for p in (up, manager):
        _controller_flags(p)
    for p in (up, gitops):
        p.add_argument("--operator-listen", type=_listen, default="127.0.0.1:8090", metavar="HOST:PORT",
                       help="the operator's /api/webhook and /metrics (plain HTTP; default %(default)s)")
        p.add_argument("--webhook-secret-file", type=Path, metavar="FILE",
                       help="a file holding the global webhook secret (HMAC key, or GitLab's token)")
    gitops.add_argument("--cache-dir", type=Path, default=Path("/var/lib/podling/gitops"),
                        help="where git mirrors and checkouts live (default %(default)s)")
    up.add_argument("--repo", metavar="PATH_OR_URL",
                    help="create (or update) an Application syncing this git repository, automated with prune "
                         "and selfHeal")
    up.add_argument("--repo-path", default=".", metavar="DIR", help="the directory inside --repo (default %(default)s)")
    for p, port in ((up, 10257), (manager, 10257), (scheduler, 10259), (proxy, 10249)):
        p.add_argument("--metrics-listen", type=_listen, default=f"127.0.0.1:{port}", metavar="HOST:PORT",
                       help="plain-HTTP /metrics of the scheduler and controller manager (default %(default)s)")

    dns.add_argument("--metrics-listen", type=_listen, default="127.0.0.1:9153", metavar="HOST:PORT",
                     help="plain-HTTP /metrics of the DNS server (default %(default)s)")

    validate = sub.add_parser("validate", help="validate manifest files offline against schemas/")
    validate.add_argument("paths", nargs="+", help="files or directories (read recursively)")
    app.add_commands(sub)
    return parser


async def _start_apiserver(args: argparse.Namespace, stack: contextlib.AsyncExitStack) -> ClientConfig:
    from podling.apiserver import pki
    from podling.apiserver.server import Config, RunningApiserver

    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    token_file = getattr(args, "token_auth_file", None) or data_dir / "tokens.csv"
    token = kubeconfig.ensure_admin_token(token_file)
    cert, key = pki.ensure_serving_cert(data_dir / "pki", host=args.listen.rpartition(":")[0])
    server = RunningApiserver(config=Config(listen=args.listen, store=args.store, data_dir=data_dir,
                                            token_file=token_file, tls_cert=cert, tls_key=key,
                                            service_account_key_file=getattr(args, "service_account_key_file", None),
                                            compaction_interval=args.compaction_interval,
                                            service_cluster_ip_range=args.service_cluster_ip_range,
                                            service_node_port_range=args.service_node_port_range))
    await server.start()
    stack.push_async_callback(server.stop)
    if token is not None:
        path = kubeconfig.write(data_dir / "kubeconfig", server=server.url, token=token,
                                ca=data_dir / "pki" / "ca.crt")
        logging.getLogger("podling").info("kubeconfig: %s (kubectl --kubeconfig %s get pods)", path, path)
    return ClientConfig(server=server.url, token=token or "", ca_file=data_dir / "pki" / "ca.crt")


async def _start_kubelet(args: argparse.Namespace, client: ClientConfig, root_dir: Path,
                         stack: contextlib.AsyncExitStack) -> None:
    from podling.client.http import ApiClient
    from podling.kubelet.dns import ClusterDNSConfig
    from podling.kubelet.kubelet import Kubelet, KubeletConfig
    from podling.kubelet.runtime.base import Runtime

    runtime: Runtime
    if args.runtime == "hollow":
        from podling.kubelet.runtime.hollow import HollowRuntime

        runtime = HollowRuntime(node_name=args.node_name, start_delay=args.hollow_start_delay)
    else:
        from podling.kubelet.runtime.docker import DockerRuntime

        runtime = DockerRuntime(node_name=args.node_name, network=args.pod_network, subnet=args.pod_subnet)
    stack.push_async_callback(runtime.close)
    api = await ApiClient(client, user_agent=f"podling-kubelet/{args.node_name}").open()
    stack.push_async_callback(api.close)
    kubelet = Kubelet(api=api, runtime=runtime, config=KubeletConfig(
        node_name=args.node_name, root_dir=(args.root_dir or root_dir).resolve(), manifest_dir=args.manifest_dir,
        address=args.address, port=args.kubelet_port, max_pods=args.max_pods,
        status_period=args.node_status_update_frequency, lease_period=args.node_lease_renew_interval,
        dns=ClusterDNSConfig(servers=args.cluster_dns, domain=args.cluster_domain, resolv_conf=args.resolv_conf)))
    await kubelet.start()
    stack.push_async_callback(kubelet.stop)


async def _api(client: ClientConfig, *, agent: str, stack: contextlib.AsyncExitStack) -> Any:
    from podling.client.http import ApiClient

    api = await ApiClient(client, user_agent=f"podling-{agent}").open()
    stack.push_async_callback(api.close)
    return api


async def _start_controller_manager(args: argparse.Namespace, client: ClientConfig, key_file: Path | None,
                                    stack: contextlib.AsyncExitStack) -> Any:
    from podling.controllers.base import ControllerOptions
    from podling.controllers.manager import ControllerManager, select

    options = ControllerOptions(
        node_monitor_period=args.node_monitor_period, node_monitor_grace_period=args.node_monitor_grace_period,
        node_startup_grace_period=args.node_startup_grace_period,
        default_toleration_seconds=args.default_toleration_seconds, cluster_cidr=args.cluster_cidr,
        node_cidr_mask_size=args.node_cidr_mask_size,
        service_account_key_file=args.service_account_private_key_file or key_file)
    manager = ControllerManager(api=await _api(client, agent="controller-manager", stack=stack), options=options,
                                controllers=select(args.controllers), workers=args.concurrent_syncs)
    await manager.start()
    stack.push_async_callback(manager.stop)
    return manager.metrics.registry


async def _start_scheduler(args: argparse.Namespace, client: ClientConfig, stack: contextlib.AsyncExitStack) -> Any:
    from podling.scheduler.config import load_config
    from podling.scheduler.scheduler import Scheduler

    scheduler = Scheduler(api=await _api(client, agent="scheduler", stack=stack),
                          config=load_config(args.scheduler_config))
    await scheduler.start()
    stack.push_async_callback(scheduler.stop)
    return scheduler.metrics.registry


def _proxy_config(args: argparse.Namespace) -> Any:
    from podling.proxy.proxy import ProxyConfig

    if args.command != "proxy":  # podling up: the proxy's defaults (and the API server's service range, if given)
        service_range = getattr(args, "service_cluster_ip_range", None)
        return ProxyConfig(node_name=args.node_name, mode=args.proxy_mode,
                           **({"service_cidr": str(service_range)} if service_range else {}))
    return ProxyConfig(node_name=args.node_name, mode=args.proxy_mode, service_cidr=args.service_cluster_ip_range,
                       cluster_cidr=args.cluster_cidr, masquerade_bit=args.masquerade_bit,
                       sync_period=args.sync_period, min_sync_period=args.min_sync_period)


async def _start_proxy(args: argparse.Namespace, client: ClientConfig, stack: contextlib.AsyncExitStack) -> Any:
    from podling.proxy.proxy import Proxy

    proxy = Proxy(api=await _api(client, agent=f"proxy/{args.node_name}", stack=stack), config=_proxy_config(args))
    await proxy.start()
    stack.push_async_callback(proxy.stop)
    return proxy.metrics.registry


async def _start_dns(args: argparse.Namespace, client: ClientConfig, stack: contextlib.AsyncExitStack) -> Any:
    from podling.dns.server import ClusterDNS, DNSConfig

    dns = ClusterDNS(api=await _api(client, agent="dns", stack=stack), config=DNSConfig(
        listen=tuple(args.dns_listen or ("10.88.0.1:53",)), domain=args.cluster_domain, service_ip=args.cluster_dns[0]))
    await dns.start()
    stack.push_async_callback(dns.stop)
    return dns.metrics.registry


async def _start_operator(args: argparse.Namespace, client: ClientConfig, cache_dir: Path,
                          stack: contextlib.AsyncExitStack) -> Any:
    from podling.gitops.operator import GitOpsOperator

    secrets = [args.webhook_secret_file.read_text().strip()] if args.webhook_secret_file else []
    operator = GitOpsOperator(api=await _api(client, agent="operator", stack=stack), cache_dir=cache_dir,
                              listen=args.operator_listen, webhook_secrets=secrets)
    await operator.start()
    stack.push_async_callback(operator.stop)
    return operator


async def _ensure_application(client: ClientConfig, *, repo: str, path: str, stack: contextlib.AsyncExitStack) -> None:
    """``podling up --repo``: one Application for the repository, automated with prune and selfHeal."""
    from podling.client.http import is_not_found
    from podling.gitops.operator import APPLICATIONS

    local = Path(repo).expanduser()
    repo_url = str(local.resolve()) if local.exists() else repo
    name = re.sub(r"[^a-z0-9-]+", "-", Path(repo_url.rstrip("/")).name.removesuffix(".git").lower()).strip("-") or "app"
    spec = {"source": {"repoURL": repo_url, "targetRevision": "HEAD", "path": path},
            "destination": {"namespace": "default"},
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}}}
    api = await _api(client, agent="up", stack=stack)
    try:
        await api.patch(APPLICATIONS, namespace="default", name=name, body={"spec": spec})
    except Exception as err:
        if not is_not_found(err):
            raise
        await api.create(APPLICATIONS, {"apiVersion": APPLICATIONS.api_version, "kind": APPLICATIONS.kind,
                                        "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    logging.getLogger("podling").info("Application default/%s syncs %s (kubectl get applications)", name, repo_url)


async def _serve(args: argparse.Namespace) -> int:
    # Signals are caught before anything starts: a SIGTERM that lands while the components come
    # up (after one of them has logged that it is ready) still unwinds the stack, so a proxy
    # removes its rules and a kubelet leaves its pods as they are.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        if args.command in ("up", "apiserver"):
            client = await _start_apiserver(args, stack)
        else:
            client = _client_config(args)
        registries = []
        if args.command == "up":
            registries.append(await _start_controller_manager(args, client, args.data_dir.resolve() / "pki" / "sa.key",
                                                              stack))
            registries.append(await _start_scheduler(args, client, stack))
            await _start_kubelet(args, client, args.data_dir / "kubelet", stack)
            registries.append(await _start_proxy(args, client, stack))
            if args.cluster_dns:
                registries.append(await _start_dns(args, client, stack))
            await _start_operator(args, client, args.data_dir.resolve() / "gitops", stack)
            if args.repo:
                await _ensure_application(client, repo=args.repo, path=args.repo_path, stack=stack)
        elif args.command == "operator":
            await _start_operator(args, client, args.cache_dir, stack)
        elif args.command == "kubelet":
            await _start_kubelet(args, client, Path("/var/lib/podling/kubelet"), stack)
        elif args.command == "scheduler":
            registries.append(await _start_scheduler(args, client, stack))
        elif args.command == "controller-manager":
            registries.append(await _start_controller_manager(args, client, None, stack))
        elif args.command == "proxy":
            registries.append(await _start_proxy(args, client, stack))
        elif args.command == "dns":
            registries.append(await _start_dns(args, client, stack))
        if registries:
            from podling.metrics_server import MetricsServer

            metrics = MetricsServer(listen=args.metrics_listen, registries=registries)
            await metrics.start()
            stack.push_async_callback(metrics.stop)
        await stop.wait()
        logging.getLogger("podling").info("shutting down")
    return 0


def _client_config(args: argparse.Namespace) -> ClientConfig:
    if args.kubeconfig:
        return load_kubeconfig(args.kubeconfig)
    return from_flags(server=args.server, token_file=args.token_file, ca_file=args.ca_file)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "validate":
        from podling.cli import validate

        return validate.run(paths=args.paths)
    if args.command in app.COMMANDS:
        return app.run(args)
    if args.command == "proxy" and args.cleanup:
        from podling.proxy.proxy import cleanup

        removed = asyncio.run(cleanup(_proxy_config(args)))
        logging.getLogger("podling").info("proxy cleanup: removed %d rules of node %s", removed, args.node_name)
        return 0
    if args.command == "dns" and not args.cluster_dns:
        parser.error("--cluster-dns: the DNS server needs the IP of its Service kube-system/kube-dns")
    if args.command in ("kubelet", "scheduler", "controller-manager", "operator", "proxy", "dns"):
        try:
            _client_config(args)
        except ConfigError as err:
            parser.error(str(err))
    if args.command == "apiserver" and args.service_account_key_file:
        from podling.api.tokens import load_public_keys

        try:
            load_public_keys(args.service_account_key_file)
        except (OSError, ValueError) as err:
            parser.error(f"--service-account-key-file: {err}")
    if args.command in ("up", "scheduler") and args.scheduler_config is not None:
        from podling.scheduler.config import load_config

        try:
            load_config(args.scheduler_config)
        except (OSError, ValueError) as err:
            parser.error(f"--scheduler-config: {err}")
    if args.command in ("up", "controller-manager"):
        from podling.controllers.manager import select

        try:
            chosen = select(args.controllers)
        except ValueError as err:
            parser.error(f"--controllers: {err}")
        if args.command == "controller-manager" and "serviceaccount-token" in chosen \
                and not args.service_account_private_key_file:
            parser.error("the serviceaccount-token controller signs tokens with --service-account-private-key-file "
                         "(the API server's DATA_DIR/pki/sa.key); give it, or leave the controller out "
                         "(--controllers=*,-serviceaccount-token)")
    import uvloop  # libuv's event loop: a relayed connection costs half the CPU of asyncio's own

    return uvloop.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
