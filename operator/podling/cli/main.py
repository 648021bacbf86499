"""The ``podling`` command: one entry point, a subcommand per job.

``podling up`` runs every component in one process for a single machine; ``podling
apiserver`` (and, as later issues add them, each other component) runs one alone. Bad flags
exit 2 with argparse's message naming the flag; nothing is started.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from podling.cli import kubeconfig


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def _store(value: str) -> str:
    if value == "sqlite" or value.startswith(("sqlite://", "etcd://")):
        return value
    raise argparse.ArgumentTypeError(f"expected sqlite, sqlite:///PATH or etcd://HOST:PORT[,HOST:PORT], got {value!r}")


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value!r}")
    return seconds


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
        p.add_argument("--compaction-interval", type=_seconds, default=300.0, metavar="SECONDS",
                       help="compact store history older than this (default %(default)s)")
    apiserver.add_argument("--token-auth-file", type=Path,
                           help="token,user,uid[,groups] CSV (default: DATA_DIR/tokens.csv, created if missing)")

    validate = sub.add_parser("validate", help="validate manifest files offline against schemas/")
    validate.add_argument("paths", nargs="+", help="files or directories (read recursively)")
    return parser


async def _serve(args: argparse.Namespace) -> int:
    from podling.apiserver import pki
    from podling.apiserver.server import Config, RunningApiserver

    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    token_file = getattr(args, "token_auth_file", None) or data_dir / "tokens.csv"
    token = kubeconfig.ensure_admin_token(token_file)
    cert, key = pki.ensure_serving_cert(data_dir / "pki", host=args.listen.rpartition(":")[0])
    server = RunningApiserver(config=Config(listen=args.listen, store=args.store, data_dir=data_dir,
                                            token_file=token_file, tls_cert=cert, tls_key=key,
                                            compaction_interval=args.compaction_interval))
    await server.start()
    if token is not None:
        path = kubeconfig.write(data_dir / "kubeconfig", server=server.url, token=token,
                                ca=data_dir / "pki" / "ca.crt")
        logging.getLogger("podling").info("kubeconfig: %s (kubectl --kubeconfig %s get pods)", path, path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("podling").info("shutting down")
    await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "validate":
        from podling.cli import validate

        return validate.run(paths=args.paths)
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
