"""Source: a repository URL and a revision → a commit SHA → a read-only tree of that commit.

Invariants:

* One cache mirror per repository URL: a bare repository under ``cache_dir/<hash of the
  URL>`` (a local path counts by its absolute form, so ``./repo`` and ``/abs/repo`` share
  one). Every :meth:`GitSource.resolve` fetches branches and tags into it (``--prune``, so a
  deleted branch stops resolving), within ``fetch_timeout`` seconds, except that a caller
  whose question arrived before a fetch of that repository *started* is answered by that
  fetch: a burst of refreshes costs one fetch, and nobody is answered with refs older than
  their question. A full commit SHA already in the mirror resolves without fetching (a
  commit never changes).
* Revisions resolve as Argo CD's do, to a commit: ``HEAD`` (the remote's HEAD), a branch, a
  tag (annotated tags peeled to their commit), a full ref name (``refs/heads/main``), or a
  full or unambiguous short SHA, tried in that order (a branch wins over a tag of the same
  name).
* Checkouts are immutable: ``checkout(sha)`` extracts that commit once into
  ``<mirror>/trees/<sha>`` (atomically: a tree is either complete or absent), makes it
  read-only, and returns the same path on every later call. A repository keeps its last
  ``keep_checkouts`` trees by last use; a tree handed out stays until that many other SHAs
  of the repository have been checked out since, so callers render promptly and do not keep
  paths for later.
* All git work runs off the event loop (``asyncio.to_thread``) and one operation at a time
  per repository (different repositories in parallel); git runs with prompts disabled, so a
  missing credential fails instead of hanging.
* Failures are :class:`SourceError` carrying git's own message with any password or token in
  a URL replaced by ``***`` (:func:`redact`), never a half-updated result.

``LocalRepoWatcher`` notices new commits of local repositories at once (watchdog on their
refs), so ``git commit`` or ``git push`` to a repository on this machine syncs without
waiting for the poll interval or a webhook.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path

import git
from watchdog.events import (
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

ObserveFetch = Callable[[float, bool], None]  # (seconds, ok)

_HEX = re.compile(r"[0-9a-f]{4,64}")
_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SCP_LIKE = re.compile(r"^[^/]*:")  # git's rule: a colon before the first slash is host:path
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_REMOTE_HEAD = "refs/podling/HEAD"  # where the remote's HEAD is fetched to
_BRANCHES_AND_TAGS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")


class SourceError(Exception):
    """A repository could not be fetched, a revision resolved or a commit checked out."""


def redact(text: str) -> str:
    """``text`` with URL passwords and HTTP(S) tokens replaced: ``https://***@host``, ``ssh://git:***@host``."""

    def hide(match: re.Match[str]) -> str:
        scheme, userinfo = match["scheme"], match["userinfo"]
        user, colon, _ = userinfo.partition(":")
        if colon:
            return f"{scheme}{user}:***@"
        return f"{scheme}***@" if scheme.lower().startswith("http") else match[0]

    return _USERINFO.sub(hide, text)


def local_path(repo_url: str) -> Path | None:
    """The directory of a local repository URL (a path or ``file://``), else None."""
    if repo_url.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(repo_url).path))
    if "://" in repo_url or _SCP_LIKE.match(repo_url):
        return None
    return Path(repo_url).expanduser().resolve()


class GitSource:
    def __init__(self, cache_dir: Path, *, keep_checkouts: int = 8, fetch_timeout: float = 60.0,
                 observe_fetch: ObserveFetch | None = None) -> None:
        self.cache_dir = cache_dir
        self.keep_checkouts = keep_checkouts
        self.fetch_timeout = fetch_timeout
        self._observe_fetch = observe_fetch
        self._waiting: dict[str, asyncio.Lock] = {}  # per mirror: callers queue here, on the loop
        self._working: dict[str, threading.Lock] = {}  # per mirror: held by the thread doing git work
        # Per mirror, when the last successful fetch started (monotonic): without and with HEAD.
        self._fetched: dict[str, float] = {}
        self._fetched_head: dict[str, float] = {}

    async def resolve(self, *, repo_url: str, revision: str) -> str:
        """The commit SHA ``revision`` names in ``repo_url`` now (after a fetch)."""
        revision = revision.strip() or "HEAD"
        if revision.startswith("-") or any(c.isspace() for c in revision):
            raise SourceError(f"invalid revision {revision!r}")
        asked = time.monotonic()
        url = _fetch_url(repo_url)
        async with self._waiting.setdefault(url, asyncio.Lock()):
            return await asyncio.to_thread(self._resolve, url=url, revision=revision, asked=asked)

    async def checkout(self, *, repo_url: str, sha: str) -> Path:
        """A read-only directory holding the tree of commit ``sha`` (which resolve has fetched)."""
        if not _FULL_SHA.fullmatch(sha):
            raise SourceError(f"not a full commit SHA: {sha!r}")
        url = _fetch_url(repo_url)
        async with self._waiting.setdefault(url, asyncio.Lock()):
            return await asyncio.to_thread(self._checkout, url=url, sha=sha)

    # ---- in a worker thread, one per mirror at a time ----------------------------------------

    def _resolve(self, *, url: str, revision: str, asked: float) -> str:
        with self._working.setdefault(url, threading.Lock()):
            mirror = self._mirror(url)
            if _FULL_SHA.fullmatch(revision) and self._commit(mirror, revision):
                return revision
            want_head = revision == "HEAD"
            last = (self._fetched_head if want_head else self._fetched).get(url)
            if last is None or last < asked:
                self._fetch(mirror, url, _BRANCHES_AND_TAGS + ((f"+HEAD:{_REMOTE_HEAD}",) if want_head else ()),
                            head=want_head)
            for candidate in _candidates(revision):
                if sha := self._commit(mirror, candidate):
                    return sha
            if _FULL_SHA.fullmatch(revision):  # a commit no branch or tag reaches (yet)
                try:
                    self._fetch(mirror, url, (revision,), head=False)
                except SourceError:
                    pass  # the remote does not have it: the branches and tags were just fetched
                if sha := self._commit(mirror, revision):
                    return sha
            raise SourceError(f"revision {revision!r} not found in {redact(url)}")

    def _checkout(self, *, url: str, sha: str) -> Path:
        with self._working.setdefault(url, threading.Lock()):
            mirror = self._mirror(url)
            trees = mirror / "trees"
            target = trees / sha
            if target.is_dir():
                os.utime(target)
                return target
            if not self._commit(mirror, sha):
                raise SourceError(f"commit {sha} of {redact(url)} is not fetched: resolve a revision that reaches it")
            trees.mkdir(exist_ok=True)
            partial, index = trees / f".{sha}.partial", trees / f".{sha}.index"
            _remove_tree(partial)
            index.unlink(missing_ok=True)
            partial.mkdir()
            try:
                # A private index: read-tree -u writes exactly the commit's files into partial.
                _git(mirror, f"--work-tree={partial}", "read-tree", "--reset", "-u", sha,
                     env={"GIT_INDEX_FILE": str(index)}, timeout=self.fetch_timeout)
                _make_read_only(partial)
                partial.rename(target)
            finally:
                index.unlink(missing_ok=True)
                _remove_tree(partial)
            self._prune(trees, keep=target)
            return target

    def _mirror(self, url: str) -> Path:
        mirror = self.cache_dir / hashlib.sha256(url.encode()).hexdigest()[:20]
        if not (mirror / "HEAD").is_file():
            mirror.mkdir(parents=True, exist_ok=True)
            _git(mirror, "init", "--bare", "--quiet", timeout=self.fetch_timeout)
        return mirror

    def _fetch(self, mirror: Path, url: str, refspecs: Iterable[str], *, head: bool) -> None:
        started = time.monotonic()
        ok = False
        try:
            _git(mirror, "fetch", "--quiet", "--prune", "--no-tags", "--force", "--", url, *refspecs,
                 timeout=self.fetch_timeout)
            ok = True
        finally:
            if self._observe_fetch is not None:
                self._observe_fetch(time.monotonic() - started, ok)
        self._fetched[url] = started
        if head:
            self._fetched_head[url] = started

    def _commit(self, mirror: Path, revision: str) -> str:
        """The commit ``revision`` names in the mirror, or "" if none."""
        status, out, _ = _run(mirror, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}",
                              timeout=self.fetch_timeout)
        return out.strip() if status == 0 else ""

    def _prune(self, trees: Path, *, keep: Path) -> None:
        """Remove all but the ``keep_checkouts`` most recently used trees (never ``keep``)."""
        found = sorted((d for d in trees.iterdir() if not d.name.startswith(".") and d != keep),
                       key=lambda d: d.stat().st_mtime_ns, reverse=True)
        for old in found[max(self.keep_checkouts - 1, 0):]:
            _remove_tree(old)


def _candidates(revision: str) -> list[str]:
    if revision == "HEAD":
        return [_REMOTE_HEAD]
    if revision.startswith("refs/"):
        return [revision]
    found = [f"refs/heads/{revision}", f"refs/tags/{revision}"]
    if _HEX.fullmatch(revision.lower()):
        found.append(revision.lower())
    return found


def _fetch_url(repo_url: str) -> str:
    path = local_path(repo_url)
    return str(path) if path is not None else repo_url


def _run(cwd: Path, *args: str, timeout: float, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    command = git.Git(str(cwd))
    command.update_environment(GIT_TERMINAL_PROMPT="0", **(env or {}))  # fail, never wait for a password
    try:
        status, out, err = command.execute(["git", *args], with_extended_output=True, with_exceptions=False,
                                           kill_after_timeout=timeout)
    except git.GitError as e:
        raise SourceError(redact(f"git {_verb(args)}: {e}")) from e
    return int(status), str(out), str(err)


def _git(cwd: Path, *args: str, timeout: float, env: dict[str, str] | None = None) -> str:
    status, out, err = _run(cwd, *args, timeout=timeout, env=env)
    if status != 0:
        message = (err or out).strip() or f"exit status {status}"
        raise SourceError(redact(f"git {_verb(args)}: {message}"))
    return out


def _verb(args: tuple[str, ...]) -> str:
    return next((arg for arg in args if not arg.startswith("-")), "")


def _make_read_only(top: Path) -> None:
    for dirpath, _, filenames in os.walk(top, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode & ~0o222)
        os.chmod(dirpath, 0o555)


def _remove_tree(top: Path) -> None:
    if not top.exists():
        return
    for dirpath, _, _ in os.walk(top):  # directories writable again, so their entries can go
        os.chmod(dirpath, 0o755)
    shutil.rmtree(top)


# ---- local repositories: notice new commits at once ----------------------------------------------


class LocalRepoWatcher:
    """Calls ``on_change(repo_url)`` on the event loop when a watched local repository's refs move.

    ``watch(urls)`` sets the repositories watched (level-triggered: pass every repository URL
    of every Application each time; non-local ones are ignored, and a path that is not a
    repository yet is tried again on the next call). A commit, a push, a new or moved branch
    or tag, or a switched HEAD fires the callback once per ``debounce`` window (the first
    change opens the window, the call comes at its end, and changes during it ride along);
    reading a repository (``git fetch`` from it, ``git status``) never does. Two URLs naming
    one repository (``/srv/app.git``, ``file:///srv/app.git``) are each called.
    """

    def __init__(self, *, on_change: Callable[[str], None], debounce: float = 0.1) -> None:
        self._on_change = on_change
        self._debounce = debounce
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: BaseObserver | None = None
        self._dirs: dict[str, list[str]] = {}  # watched URL -> its git directories
        self._scheduled: dict[tuple[str, bool], ObservedWatch] = {}  # (directory, recursive) -> watch
        self._pending: dict[str, asyncio.TimerHandle] = {}

    def start(self) -> None:
        """Start watching; call on the event loop the callbacks should run on."""
        self._loop = asyncio.get_running_loop()
        self._observer = Observer()
        self._observer.start()

    async def stop(self) -> None:
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        if self._observer is not None:
            self._observer.stop()
            await asyncio.to_thread(self._observer.join, 5)
            self._observer = None
        self._dirs.clear()
        self._scheduled.clear()

    def watch(self, repo_urls: Iterable[str]) -> None:
        observer = self._observer
        assert observer is not None, "start() first"
        wanted = {url: path for url in repo_urls if (path := local_path(url)) is not None}
        for url in set(self._dirs) - set(wanted):
            del self._dirs[url]
        for url in set(wanted) - set(self._dirs):
            if dirs := _ref_dirs(wanted[url]):
                self._dirs[url] = [str(d) for d in dirs]
        needed = {(d, False) for dirs in self._dirs.values() for d in dirs}
        needed |= {(os.path.join(d, "refs"), True) for d, _ in needed if os.path.isdir(os.path.join(d, "refs"))}
        for key in set(self._scheduled) - needed:
            observer.unschedule(self._scheduled.pop(key))
        handler = _RefHandler(forward=self._forward_threadsafe)
        for key in needed - set(self._scheduled):
            try:
                self._scheduled[key] = observer.schedule(handler, key[0], recursive=key[1])
            except OSError:  # gone meanwhile: forget the repositories in it, try again next time
                for url in [u for u, dirs in self._dirs.items() if key[0].startswith(tuple(dirs))]:
                    del self._dirs[url]

    def _forward_threadsafe(self, path: str) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._changed, path)

    def _changed(self, path: str) -> None:
        assert self._loop is not None
        for url, dirs in self._dirs.items():
            if url not in self._pending and any(_is_ref(path, d) for d in dirs):
                self._pending[url] = self._loop.call_later(self._debounce, self._fire, url)

    def _fire(self, url: str) -> None:
        self._pending.pop(url, None)
        self._on_change(url)


_WRITES = frozenset({EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED, EVENT_TYPE_DELETED})


class _RefHandler(FileSystemEventHandler):
    """On watchdog's thread: forwards the paths of file writes that may be refs (not .lock files)."""

    def __init__(self, *, forward: Callable[[str], None]) -> None:
        self._forward = forward

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _WRITES or event.is_directory:
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = os.fsdecode(raw)
            name = os.path.basename(path)
            if path and not name.endswith(".lock") and (
                    name in ("HEAD", "packed-refs") or f"{os.sep}refs{os.sep}" in path):
                self._forward(path)


def _is_ref(path: str, directory: str) -> bool:
    """Whether ``path`` is the HEAD, packed-refs or a ref of git directory ``directory``."""
    parent, name = os.path.split(path)
    return (parent == directory and name in ("HEAD", "packed-refs")) \
        or path.startswith(os.path.join(directory, "refs") + os.sep)


def _ref_dirs(path: Path) -> list[Path]:
    """The git directories whose HEAD, packed-refs and refs/ say where ``path``'s branches point.

    A bare repository is its own; a work tree's is ``.git`` (or where a ``.git`` file points,
    plus that directory's ``commondir`` for a linked worktree). Empty if ``path`` is neither.
    """
    dotgit = path / ".git"
    if dotgit.is_file():
        text = dotgit.read_text(encoding="utf-8", errors="replace").strip()
        if not text.startswith("gitdir:"):
            return []
        gitdir = (path / text.removeprefix("gitdir:").strip()).resolve()
    elif dotgit.is_dir():
        gitdir = dotgit
    else:
        gitdir = path
    if not (gitdir / "HEAD").is_file():
        return []
    dirs = [gitdir]
    commondir = gitdir / "commondir"
    if commondir.is_file():
        dirs.append((gitdir / commondir.read_text(encoding="utf-8").strip()).resolve())
    return dirs
