"""GitOps from the command line: ``podling app …`` for Applications, ``podling diff|sync PATH`` for a directory.

Like kubectl, these commands are API clients and nothing more: they read the cluster through
the API server, and they write to it in two ways only. ``podling sync PATH`` (without
``--check``) applies a local directory itself, with the same render → plan → apply code the
operator runs (:mod:`podling.gitops.render`, :mod:`~podling.gitops.plan`,
:mod:`~podling.gitops.apply`), tracked by the label ``podling.io/app: NAME``. Everything done
to an Application is a request to its operator: ``app sync`` and ``app rollback`` set the
``podling.io/sync-request`` annotation (a JSON ``{"id", "revision", "prune"}``, revision a
commit SHA or "" for the target) and wait for ``status.operationState`` to carry that id;
``app refresh`` sets ``podling.io/refresh``. The CLI never applies an Application's objects
itself, so a sync has one author and one history.

Invariants:

* Read-only unless asked to write: ``diff``, ``sync --check``, ``app diff``,
  ``app sync --dry-run``, ``app list|get|history`` send no write (``apply`` runs with
  ``dry_run``, which sends nothing). An invalid manifest (render errors, each printed as
  ``file:line: Kind/name: path: message``) stops a command before it plans or writes
  anything: nothing changes.
* What is shown is what a sync would do: the plan comes from the same code, against the same
  live objects (every object labelled for the app), with the same prune rule (only objects
  :func:`podling.gitops.plan.owned_by` proves the app created; never any when the source has no
  objects, unless ``--allow-empty`` / ``allowEmpty``).
* Output is Ansible's: one line per object as its result arrives (``ok: [Kind/ns/name]``,
  ``changed:``, ``created:``, ``pruned:``, ``failed: [...]: why``), unified diffs
  (``--- live/…`` ``+++ desired/…``) with ``--diff``, objects the app owns that the source no
  longer has as ``extra:`` when they are not pruned, then the operator's recap
  (``ok=12 changed=3 created=1 pruned=1 failed=0``). Reports go to stdout, errors to stderr.
* Exit codes, as ``kubectl diff`` and ``argocd app diff``: 0 nothing to change (or a sync that
  succeeded), 1 changes found (``diff``, ``--check``, ``--dry-run``; an ``extra:`` object
  counts, since the cluster differs from the source), 2 an error: bad manifests, an
  unreachable API server, a missing Application, a failed sync, a timeout. An error is one
  ``error: …`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podling.api import meta
from podling.cli.flags import seconds
from podling.client.config import ClientConfig, ConfigError, from_flags, load_kubeconfig

if TYPE_CHECKING:
    from podling.client.http import ApiClient
    from podling.gitops.apply import ObjectResult
    from podling.gitops.plan import Key
    from podling.gitops.render import Rendered

# The git, HTTP and operator modules are imported where they are used: every `podling` command
# builds this parser, and most (the API server, the kubelet) never need them.

Obj = dict[str, Any]

COMMANDS = frozenset({"app", "diff", "sync"})

EXIT_OK, EXIT_CHANGES, EXIT_ERROR = 0, 1, 2
_POLL = 0.3  # seconds between reads of an Application while waiting for its operator
_DONE = frozenset({"Succeeded", "Failed", "Error"})
_WORDS: Mapping[str, str] = {"unchanged": "ok", "updated": "changed", "created": "created", "pruned": "pruned",
                             "failed": "failed"}
# Kubernetes' rule for a label value (the app's name is the value of podling.io/app).
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


class CliError(Exception):
    """Something the user must fix or know; printed as one ``error: …`` line, exit 2."""


# ---- the parser --------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``app``, ``diff`` and ``sync`` on the ``podling`` parser's subcommands."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--kubeconfig", type=Path,
                            help="default: $KUBECONFIG, else ./data/kubeconfig if it exists, else ~/.kube/config")
    connection.add_argument("--server", help="the API server's URL, instead of a kubeconfig")
    connection.add_argument("--token-file", type=Path, help="with --server: a file holding the bearer token")
    connection.add_argument("--ca-file", type=Path, help="with --server: the CA that signed the API server's certificate")
    connection.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")

    app = sub.add_parser("app", help="inspect and sync Applications (podling.io/v1alpha1)")
    verbs = app.add_subparsers(dest="app_command", required=True, metavar="VERB")
    listing = verbs.add_parser("list", parents=[connection], help="NAME, SYNC STATUS, HEALTH, REVISION, REPO")
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="Applications of every namespace")
    verbs.add_parser("get", parents=[connection], help="source, policy, status, conditions and resources") \
        .add_argument("name")
    diff = verbs.add_parser("diff", parents=[connection],
                            help="diff the app's git revision with the cluster (exit 0 same, 1 different, 2 error)")
    diff.add_argument("name")
    diff.add_argument("--revision", help="a branch, tag or commit instead of spec.source.targetRevision")
    sync = verbs.add_parser("sync", parents=[connection], help="ask the operator to sync now, and wait")
    sync.add_argument("name")
    sync.add_argument("--revision", help="a branch, tag or commit instead of spec.source.targetRevision")
    sync.add_argument("--prune", action="store_true", help="delete what the app created that git no longer has")
    sync.add_argument("--dry-run", action="store_true",
                      help="compute the sync here and print it; write nothing (exit 0 no change, 1 changes)")
    verbs.add_parser("history", parents=[connection], help="ID, DATE, REVISION, RESULT of past syncs") \
        .add_argument("name")
    rollback = verbs.add_parser("rollback", parents=[connection],
                                help="sync the revision of a history entry (refused while sync is automated)")
    rollback.add_argument("name")
    rollback.add_argument("id", nargs="?", type=int, help="the history ID (default: the entry before the last)")
    rollback.add_argument("--prune", action="store_true", help="delete what the app created that revision lacks")
    for p in (sync, rollback):
        p.add_argument("--timeout", type=seconds, default=300.0, metavar="SECONDS",
                       help="how long to wait for the operator (default %(default)s)")
    refresh = verbs.add_parser("refresh", parents=[connection],
                               help="ask the operator to fetch and compare now; print sync and health")
    refresh.add_argument("name")
    refresh.add_argument("--timeout", type=seconds, default=10.0, metavar="SECONDS",
                         help="how long to wait for a new status (default %(default)s)")

    local_diff = sub.add_parser("diff", parents=[connection],
                                help="diff a directory of manifests with the cluster (exit 0 same, 1 different, 2 error)")
    local_sync = sub.add_parser("sync", parents=[connection], help="apply a directory of manifests (Ansible-style)")
    for p in (local_diff, local_sync):
        p.add_argument("path", help="a directory (read recursively) or a file of manifests")
        p.add_argument("--app", help="the tracking label podling.io/app (default: the directory's name)")
        p.add_argument("--prune", action="store_true",
                       help="delete objects this app created that PATH no longer has")
        p.add_argument("--allow-empty", action="store_true",
                       help="with --prune: prune even when PATH has no objects at all")
    local_sync.add_argument("--check", action="store_true",
                            help="only say what would change (exit 0 no change, 1 changes, 2 error)")
    local_sync.add_argument("--diff", action="store_true", help="show a unified diff of each change")




def run(args: argparse.Namespace) -> int:
    """Carry out a parsed ``app``/``diff``/``sync`` command; the exit code."""
    from podling.client.http import ApiError, TransportError
    from podling.gitops.source import SourceError

    command = _APP_VERBS[args.app_command] if args.command == "app" else _local
    try:
        return asyncio.run(command(args))
    except (CliError, ConfigError, SourceError) as err:
        return _fail(str(err))
    except TransportError as err:
        return _fail(f"cannot reach the API server: {err}")
    except ApiError as err:
        return _fail(f"the API server says {err}")
    except KeyboardInterrupt:
        return 130


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_ERROR


# ---- connecting ----------------------------------------------------------------------------


def default_kubeconfig(*, environ: Mapping[str, str], cwd: Path, home: Path) -> Path:
    """kubectl's choice, plus podling's own: $KUBECONFIG, else ./data/kubeconfig, else ~/.kube/config.

    $KUBECONFIG may list several files (``a:b``); the first that exists is used (the first
    named, when none does, so the error names it).
    """
    listed = [Path(p) for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return next((p for p in listed if p.is_file()), listed[0])
    local = cwd / "data" / "kubeconfig"
    return local if local.is_file() else home / ".kube" / "config"


def _config(args: argparse.Namespace) -> ClientConfig:
    if args.server:
        return from_flags(server=args.server, token_file=args.token_file, ca_file=args.ca_file)
    path = args.kubeconfig or default_kubeconfig(environ=os.environ, cwd=Path.cwd(), home=Path.home())
    return load_kubeconfig(path)


@contextlib.asynccontextmanager
async def _connect(args: argparse.Namespace) -> AsyncIterator[tuple[ApiClient, str]]:
    """An open API client and the namespace to work in (-n, else the context's)."""
    from podling.client.http import ApiClient

    config = _config(args)
    async with ApiClient(config, user_agent="podling-cli") as api:
        yield api, args.namespace or config.namespace


async def _get_app(api: ApiClient, *, namespace: str, name: str) -> Obj:
    from podling.client.http import ApiError, is_not_found
    from podling.gitops.operator import APPLICATIONS

    try:
        return await api.get(APPLICATIONS, namespace=namespace, name=name)
    except ApiError as err:
        if is_not_found(err):
            raise CliError(f"application {name!r} not found in namespace {namespace!r}") from None
        raise


def _cache_dir() -> Path:
    """Where the CLI keeps git mirrors: $XDG_CACHE_HOME/podling/git, else ~/.cache/podling/git."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "podling" / "git"


# ---- formatting (pure) ---------------------------------------------------------------------


def label(key: Key) -> str:
    """``Kind/namespace/name`` (``Kind/name`` when cluster-scoped), as the result lines name objects."""
    return "/".join(part for part in (key.kind, key.namespace, key.name) if part)


def result_line(result: ObjectResult, *, dry_run: bool) -> str:
    """One Ansible-style line: ``changed: [Deployment/shop/web]``; a failure says why after a colon."""
    line = f"{_WORDS[result.action]}: [{label(result.key)}]"
    if result.action == "failed":
        return f"{line}: {result.message}"
    if result.message and not dry_run:  # a dry run's results all say "nothing written"
        return f"{line} ({result.message})"
    return line


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns as kubectl prints them: left-aligned, three spaces apart, no trailing blanks."""
    body = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in body) for i in range(len(headers))]
    return "\n".join("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in body)


def short(sha: str) -> str:
    return sha[:7]


def _status(app: Mapping[str, Any]) -> Obj:
    return app.get("status") or {}


def _spec(app: Mapping[str, Any]) -> Obj:
    return app.get("spec") or {}


def apps_table(apps: Sequence[Mapping[str, Any]], *, all_namespaces: bool) -> str:
    """``app list``: NAME, SYNC STATUS, HEALTH, REVISION (short SHA), REPO; NAMESPACE first with -A."""
    headers = ["NAME", "SYNC STATUS", "HEALTH", "REVISION", "REPO"]
    rows = []
    for app in sorted(apps, key=lambda a: (meta.namespace(a), meta.name(a))):
        status = _status(app)
        row = [meta.name(app), (status.get("sync") or {}).get("status") or "Unknown",
               (status.get("health") or {}).get("status") or "Unknown",
               short((status.get("sync") or {}).get("revision") or "") or "<none>",
               (_spec(app).get("source") or {}).get("repoURL") or ""]
        rows.append([meta.namespace(app), *row] if all_namespaces else row)
    return table(["NAMESPACE", *headers] if all_namespaces else headers, rows)


def history_table(app: Mapping[str, Any]) -> str:
    """``app history``: ID, DATE, REVISION, RESULT, oldest first."""
    entries = sorted(_status(app).get("history") or (), key=lambda e: e.get("id") or 0)
    return table(["ID", "DATE", "REVISION", "RESULT"],
                 [[str(e.get("id", "")), e.get("deployedAt") or "", e.get("revision") or "", e.get("result") or ""]
                  for e in entries])


def sync_policy(app: Mapping[str, Any]) -> str:
    """``Automated (Prune, SelfHeal)``, ``Automated``, or ``Manual``."""
    automated = (_spec(app).get("syncPolicy") or {}).get("automated")
    if automated is None:
        return "Manual"
    flags = [text for field, text in (("prune", "Prune"), ("selfHeal", "SelfHeal"), ("allowEmpty", "AllowEmpty"))
             if automated.get(field)]
    return f"Automated ({', '.join(flags)})" if flags else "Automated"


def sync_text(app: Mapping[str, Any]) -> str:
    """``Synced to HEAD (abc1234)``, ``OutOfSync from main (abc1234)``: status.sync as Argo CD words it."""
    sync = _status(app).get("sync") or {}
    target = (_spec(app).get("source") or {}).get("targetRevision") or "HEAD"
    verdict = sync.get("status") or "Unknown"
    revision = f" ({short(sync['revision'])})" if sync.get("revision") else ""
    if verdict not in ("Synced", "OutOfSync"):
        return f"{verdict}{revision}"
    return f"{verdict} {'to' if verdict == 'Synced' else 'from'} {target}{revision}"


def health_text(app: Mapping[str, Any]) -> str:
    """``Healthy``, ``Progressing: waiting for rollout to finish …``: status.health."""
    health = _status(app).get("health") or {}
    return (health.get("status") or "Unknown") + (f": {health['message']}" if health.get("message") else "")


def state_line(app: Mapping[str, Any]) -> str:
    """``Synced to HEAD (abc1234), Healthy``: what the operator last reported, in one line."""
    return f"{sync_text(app)}, {health_text(app)}"


def describe(app: Mapping[str, Any]) -> str:
    """``app get``: source, destination, policy, sync and health, last operation, conditions, resources."""
    spec, status = _spec(app), _status(app)
    source = spec.get("source") or {}
    fields: list[tuple[str, str]] = [
        ("Name", f"{meta.namespace(app)}/{meta.name(app)}"),
        ("Repo", source.get("repoURL") or ""),
        ("Target", source.get("targetRevision") or "HEAD"),
        ("Path", source.get("path") or "."),
        ("Destination", f"namespace {(spec.get('destination') or {}).get('namespace') or meta.namespace(app)}"),
        ("Sync Policy", sync_policy(app)),
        ("Interval", spec.get("interval") or "60s"),
    ]
    for rule in spec.get("ignoreDifferences") or ():
        target = "/".join(part for part in (rule.get("group"), rule.get("kind"), rule.get("namespace"),
                                            rule.get("name")) if part)
        fields.append(("Ignore", f"{target}: {', '.join(rule.get('jsonPointers') or ())}"))
    fields += [("Sync Status", sync_text(app)), ("Health Status", health_text(app))]
    operation = status.get("operationState")
    if operation:
        fields += [
            ("Operation", f"Sync (request {operation['id']})" if operation.get("id") else "Sync (automated)"),
            ("Phase", operation.get("phase") or ""),
            ("Sync Revision", operation.get("revision") or ""),
            ("Started", operation.get("startedAt") or ""),
            ("Finished", operation.get("finishedAt") or ""),
        ]
        if operation.get("result"):
            fields.append(("Result", operation["result"]))
        if operation.get("message") and operation.get("message") != operation.get("result"):
            fields.append(("Message", operation["message"]))
    lines = _fields(fields)
    conditions = status.get("conditions") or ()
    if conditions:
        lines.append("")
        lines.append("Conditions:")
        for condition in conditions:
            since = f" (since {condition['lastTransitionTime']})" if condition.get("lastTransitionTime") else ""
            lines.append(f"  {condition.get('type')}{since}:")
            lines += [f"    {text}" for text in str(condition.get("message") or "").splitlines()]
    resources = status.get("resources") or ()
    if resources:
        lines.append("")
        lines.append(table(["GROUP", "KIND", "NAMESPACE", "NAME", "STATUS", "HEALTH", "MESSAGE"],
                           [[r.get("group") or "", r.get("kind") or "", r.get("namespace") or "", r.get("name") or "",
                             r.get("status") or "", r.get("health") or "", r.get("message") or ""]
                            for r in resources]))
    return "\n".join(lines)


def _fields(fields: Sequence[tuple[str, str]]) -> list[str]:
    """``Name:   value`` lines, values aligned; a value's later lines indented under its first."""
    width = max(len(name) for name, _ in fields) + 2
    lines = []
    for name, value in fields:
        first, *rest = str(value).splitlines() or [""]
        lines.append(f"{name + ':':<{width}}{first}".rstrip())
        lines += [f"{'':<{width}}{text}" for text in rest]
    return lines


def sync_request(*, revision: str, prune: bool, request_id: str) -> str:
    """The ``podling.io/sync-request`` annotation's value."""
    return json.dumps({"id": request_id, "revision": revision, "prune": prune}, separators=(",", ":"))


def rollback_target(app: Mapping[str, Any], *, history_id: int | None) -> Obj:
    """The history entry ``app rollback`` syncs: ``history_id``'s, or the one before the last.

    CliError when automated sync is on (it would undo the rollback at once, as Argo CD says)
    or there is no such entry.
    """
    if (_spec(app).get("syncPolicy") or {}).get("automated") is not None:
        raise CliError(f"rollback cannot be initiated when auto-sync is enabled: turn it off first "
                       f"(kubectl patch application {meta.name(app)} -n {meta.namespace(app)} --type merge "
                       """-p '{"spec":{"syncPolicy":{"automated":null}}}')""")
    entries = sorted(_status(app).get("history") or (), key=lambda e: e.get("id") or 0)
    if history_id is None:
        if len(entries) < 2:
            raise CliError(f"application {meta.name(app)!r} has no earlier sync to roll back to "
                           f"({len(entries)} in its history)")
        return entries[-2]
    for entry in entries:
        if entry.get("id") == history_id:
            return entry
    known = ", ".join(str(e.get("id")) for e in entries) or "none"
    raise CliError(f"application {meta.name(app)!r} has no history entry {history_id} (IDs: {known})")


def progress_line(app: Mapping[str, Any], *, request_id: str) -> str:
    """What a waiting ``app sync`` shows: the operation's phase once the operator took the request,
    and the app's sync and health status words."""
    status = _status(app)
    words = (f"sync {(status.get('sync') or {}).get('status') or 'Unknown'}, "
             f"health {(status.get('health') or {}).get('status') or 'Unknown'}")
    operation = status.get("operationState") or {}
    if operation.get("id") != request_id:
        return f"waiting for the operator ({words})"
    message = str(operation.get("message") or "").splitlines()
    return f"{operation.get('phase') or 'Running'}{': ' + message[0] if message else ''} ({words})"


def valid_app_name(name: str) -> bool:
    """Whether ``name`` can be the value of the ``podling.io/app`` label."""
    return bool(_LABEL_VALUE.fullmatch(name))


# ---- planning and syncing (shared by the local and the Application commands) ---------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Sync:
    """One plan-and-apply run: whose objects, where, with which prune rule, how to report."""

    app: str
    namespace: str
    origin: str  # how the report names the source: "PATH", "git"
    prune: bool
    allow_empty: bool
    dry_run: bool
    show_diff: bool
    ignore_differences: Sequence[Mapping[str, Any]] = ()


async def _sync(api: ApiClient, objects: Sequence[Obj], how: _Sync) -> int:
    """Plan (and unless a dry run, apply) ``objects``; print each result, extras and the recap; the exit code."""
    from podling.api.resources import RESOURCES
    from podling.gitops.apply import apply, fetch_live
    from podling.gitops.operator import recap
    from podling.gitops.plan import desired_object, key_of, plan_prune

    live = await fetch_live(api=api, app=how.app, resources=RESOURCES)
    keys = set()
    for obj in objects:
        with contextlib.suppress(ValueError):  # a manifest apply cannot use: it reports it as failed
            keys.add(key_of(desired_object(obj, app=how.app, namespace=how.namespace)))
    candidates = plan_prune(app=how.app, live_owned=live.values(), desired_keys=keys)
    refused = how.prune and bool(candidates) and not objects and not how.allow_empty
    doomed = candidates if how.prune and not refused else []

    def report(result: ObjectResult) -> None:
        print(result_line(result, dry_run=how.dry_run), flush=True)
        if how.show_diff and result.plan is not None and result.action in ("created", "updated"):
            print(result.plan.diff, end="", flush=True)

    results = await apply(api=api, app=how.app, objects=objects, live=live, prune=doomed, dry_run=how.dry_run,
                          namespace=how.namespace, ignore_differences=how.ignore_differences, on_progress=report)
    extras = [] if doomed else candidates
    for obj in extras:
        print(f"extra: [{label(key_of(obj))}] (not in {how.origin}; syncing with --prune deletes it)")
    if refused:
        print(f"note: {how.origin} has no objects: nothing is pruned without --allow-empty")
    print()
    print(recap(results), flush=True)
    if any(result.action == "failed" for result in results):
        return EXIT_ERROR
    if how.dry_run and (extras or any(result.action != "unchanged" for result in results)):
        return EXIT_CHANGES
    return EXIT_OK


def _print_render_errors(rendered: Rendered, *, under: Path | None) -> None:
    for error in rendered.errors:
        shown = dataclasses.replace(error, file=str(under / error.file)) if under is not None else error
        print(shown, file=sys.stderr)


# ---- podling diff|sync PATH ----------------------------------------------------------------


async def _local(args: argparse.Namespace) -> int:
    from podling.gitops.render import render

    given = Path(args.path)
    if not given.exists():
        raise CliError(f"{args.path}: no such file or directory")
    root, inside = (given, ".") if given.is_dir() else (given.parent, given.name)
    app = args.app or root.resolve().name
    if not valid_app_name(app):
        raise CliError(f"{app!r} cannot be the tracking label podling.io/app (at most 63 letters, digits, '-', '_' "
                       "or '.', alphanumeric at both ends): name the application with --app")
    check = args.command == "diff" or args.check
    async with _connect(args) as (api, namespace):
        rendered = await asyncio.to_thread(render, root=root, path=inside, default_namespace=namespace)
        if not rendered.ok:
            _print_render_errors(rendered, under=root)
            raise CliError(f"{len(rendered.errors)} problem{'s' * (len(rendered.errors) != 1)} in {args.path}: "
                           "nothing was changed")
        return await _sync(api, [d.obj for d in rendered.objects], _Sync(
            app=app, namespace=namespace, origin=args.path, prune=args.prune, allow_empty=args.allow_empty,
            dry_run=check, show_diff=args.command == "diff" or args.diff))


# ---- podling app … -------------------------------------------------------------------------


async def _app_list(args: argparse.Namespace) -> int:
    from podling.gitops.operator import APPLICATIONS

    async with _connect(args) as (api, namespace):
        apps, _, _ = await api.list(APPLICATIONS, namespace=None if args.all_namespaces else namespace)
    if not apps:
        where = "any namespace" if args.all_namespaces else f"namespace {namespace!r}"
        print(f"No applications found in {where}.", file=sys.stderr)
        return EXIT_OK
    print(apps_table(apps, all_namespaces=args.all_namespaces))
    return EXIT_OK


async def _app_get(args: argparse.Namespace) -> int:
    async with _connect(args) as (api, namespace):
        app = await _get_app(api, namespace=namespace, name=args.name)
    print(describe(app))
    return EXIT_OK


async def _app_history(args: argparse.Namespace) -> int:
    async with _connect(args) as (api, namespace):
        app = await _get_app(api, namespace=namespace, name=args.name)
    if not _status(app).get("history"):
        print(f"Application {args.name!r} has not been synced yet.", file=sys.stderr)
        return EXIT_OK
    print(history_table(app))
    return EXIT_OK


async def _app_diff(args: argparse.Namespace) -> int:
    """``app diff`` and ``app sync --dry-run``: the app's revision planned here, against the cluster."""
    from podling.gitops.render import render
    from podling.gitops.source import GitSource

    async with _connect(args) as (api, namespace):
        app = await _get_app(api, namespace=namespace, name=args.name)
        spec = _spec(app)
        source = spec.get("source") or {}
        repo_url = source.get("repoURL") or ""
        revision = args.revision or source.get("targetRevision") or "HEAD"
        git = GitSource(_cache_dir())
        sha = await git.resolve(repo_url=repo_url, revision=revision)
        tree = await git.checkout(repo_url=repo_url, sha=sha)
        destination = (spec.get("destination") or {}).get("namespace") or meta.namespace(app) or "default"
        rendered = await asyncio.to_thread(render, root=tree, path=source.get("path") or ".",
                                           default_namespace=destination)
        print(f"{args.name}: {revision} is {sha[:12]} in {repo_url}", file=sys.stderr, flush=True)
        if not rendered.ok:
            _print_render_errors(rendered, under=None)
            raise CliError(f"revision {sha[:12]} has {len(rendered.errors)} invalid manifest"
                           f"{'s' * (len(rendered.errors) != 1)}: the operator will not sync it")
        automated = (spec.get("syncPolicy") or {}).get("automated")
        dry_run_sync = args.app_command == "sync"
        return await _sync(api, [d.obj for d in rendered.objects], _Sync(
            app=args.name, namespace=destination, origin="git",
            prune=args.prune if dry_run_sync else bool((automated or {}).get("prune")),
            allow_empty=bool((automated or {}).get("allowEmpty")), dry_run=True, show_diff=not dry_run_sync,
            ignore_differences=spec.get("ignoreDifferences") or ()))


async def _app_sync(args: argparse.Namespace) -> int:
    from podling.gitops.source import GitSource

    if args.dry_run:
        return await _app_diff(args)
    async with _connect(args) as (api, namespace):
        app = await _get_app(api, namespace=namespace, name=args.name)
        sha = ""
        if args.revision:
            repo_url = (_spec(app).get("source") or {}).get("repoURL") or ""
            sha = await GitSource(_cache_dir()).resolve(repo_url=repo_url, revision=args.revision)
        return await _request_sync(api, app=app, revision=sha, prune=args.prune, timeout=args.timeout)


async def _app_rollback(args: argparse.Namespace) -> int:
    async with _connect(args) as (api, namespace):
        app = await _get_app(api, namespace=namespace, name=args.name)
        entry = rollback_target(app, history_id=args.id)
        print(f"rolling back {args.name} to history entry {entry.get('id')}: revision {entry.get('revision')}",
              flush=True)
        return await _request_sync(api, app=app, revision=str(entry.get("revision") or ""), prune=args.prune,
                                   timeout=args.timeout)


async def _request_sync(api: ApiClient, *, app: Obj, revision: str, prune: bool, timeout: float) -> int:
    """Set the sync-request annotation, then follow the Application until the operator answers it."""
    from podling.gitops.operator import SYNC_REQUEST_ANNOTATION

    namespace, name = meta.namespace(app), meta.name(app)
    request_id = str(uuid.uuid4())
    await _annotate(api, namespace=namespace, name=name,
                    value={SYNC_REQUEST_ANNOTATION: sync_request(revision=revision, prune=prune,
                                                                 request_id=request_id)})
    print(f"sync requested (id {request_id}, revision {revision or 'the target'}"
          f"{', with prune' if prune else ''})", flush=True)
    started = time.monotonic()
    shown = ""
    while True:
        app = await _get_app(api, namespace=namespace, name=name)
        operation = _status(app).get("operationState") or {}
        if operation.get("id") == request_id and operation.get("phase") in _DONE:
            return _finished(operation)
        line = progress_line(app, request_id=request_id)
        if line != shown:
            print(f"[{time.monotonic() - started:5.1f}s] {line}", flush=True)
            shown = line
        if time.monotonic() - started >= timeout:
            raise CliError(f"timed out after {timeout:g}s waiting for the operator to answer sync request "
                           f"{request_id} of {namespace}/{name} (is `podling operator` running? "
                           "the request stays on the Application)")
        await asyncio.sleep(_POLL)


def _finished(operation: Mapping[str, Any]) -> int:
    """Print an answered operation; 0 if it Succeeded, else 2."""
    phase = operation.get("phase")
    print(f"{phase} (revision {operation['revision']})" if operation.get("revision") else phase)
    message = str(operation.get("message") or "")
    result = str(operation.get("result") or "")
    if message and message != result:
        print(message)
    if result:
        print()
        print(result)
    return EXIT_OK if phase == "Succeeded" else EXIT_ERROR


async def _app_refresh(args: argparse.Namespace) -> int:
    from podling.gitops.operator import REFRESH_ANNOTATION

    async with _connect(args) as (api, namespace):
        app = await _get_app(api, namespace=namespace, name=args.name)
        before = _status(app)
        token = str(uuid.uuid4())
        await _annotate(api, namespace=namespace, name=args.name, value={REFRESH_ANNOTATION: token})
        started = time.monotonic()
        while True:
            app = await _get_app(api, namespace=namespace, name=args.name)
            # Done when the operator wrote a new status, or took the annotation away (as Argo CD does).
            if _status(app) != before or meta.annotations(app).get(REFRESH_ANNOTATION) != token:
                break
            if time.monotonic() - started >= args.timeout:
                print(f"note: no new status within {args.timeout:g}s (nothing changed, or no operator is "
                      "running): the last status follows", file=sys.stderr)
                break
            await asyncio.sleep(_POLL)
    print(f"{args.name}: {state_line(app)}")
    for condition in _status(app).get("conditions") or ():
        print(f"{condition.get('type')}: {condition.get('message')}")
    return EXIT_OK


async def _annotate(api: ApiClient, *, namespace: str, name: str, value: Mapping[str, str]) -> None:
    from podling.client.http import ApiError, is_not_found
    from podling.gitops.operator import APPLICATIONS

    try:
        await api.patch(APPLICATIONS, namespace=namespace, name=name, body={"metadata": {"annotations": dict(value)}},
                        patch_type="merge")
    except ApiError as err:
        if is_not_found(err):
            raise CliError(f"application {name!r} not found in namespace {namespace!r}") from None
        raise


_APP_VERBS: Mapping[str, Callable[[argparse.Namespace], Any]] = {
    "list": _app_list, "get": _app_get, "diff": _app_diff, "sync": _app_sync, "history": _app_history,
    "rollback": _app_rollback, "refresh": _app_refresh,
}
