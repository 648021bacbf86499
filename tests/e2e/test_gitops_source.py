"""podling.gitops.source against real git repositories made with the git CLI."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from pathlib import Path

import pytest

from podling.gitops.source import GitSource, LocalRepoWatcher, SourceError, local_path, redact

pytestmark = pytest.mark.e2e

ENV = {**os.environ, "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
       "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
       "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout.strip()


def commit(work: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    return git(work, "rev-parse", "HEAD")


class Repo:
    """A bare repository (the "server") and a clone of it to commit and push from."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "origin.git"
        self.work = root / "work"
        git(root, "init", "-q", "--bare", "--initial-branch=main", str(self.bare))
        git(root, "clone", "-q", str(self.bare), str(self.work))
        git(self.work, "checkout", "-q", "-b", "main")

    def push(self, files: dict[str, str], message: str = "change", *, branch: str = "main") -> str:
        sha = commit(self.work, files, message)
        git(self.work, "push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        return sha


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


@pytest.fixture
def fetches() -> list[bool]:
    return []


@pytest.fixture
def source(tmp_path: Path, fetches: list[bool]) -> GitSource:
    return GitSource(tmp_path / "cache", observe_fetch=lambda seconds, ok: fetches.append(ok))


async def test_resolves_branches_tags_and_shas_and_checks_out_each_commit(repo: Repo, source: GitSource) -> None:
    first = repo.push({"apps/cm.yaml": "v: 1\n", "README.md": "hi\n"}, "first")
    git(repo.work, "tag", "-a", "v1", "-m", "release 1")
    git(repo.work, "push", "-q", "origin", "v1")
    second = repo.push({"apps/cm.yaml": "v: 2\n"}, "second")
    url = str(repo.bare)

    assert await source.resolve(repo_url=url, revision="main") == second
    assert await source.resolve(repo_url=url, revision="refs/heads/main") == second
    assert await source.resolve(repo_url=url, revision="HEAD") == second
    assert await source.resolve(repo_url=url, revision="v1") == first  # an annotated tag, peeled
    assert await source.resolve(repo_url=url, revision=first[:7]) == first
    assert await source.resolve(repo_url=url, revision=first[:9].upper()) == first
    assert await source.resolve(repo_url=f"file://{repo.bare}", revision=first) == first

    old, new = [await source.checkout(repo_url=url, sha=sha) for sha in (first, second)]
    assert (old / "apps/cm.yaml").read_text() == "v: 1\n" and (old / "README.md").is_file()
    assert (new / "apps/cm.yaml").read_text() == "v: 2\n"
    assert not (old / ".git").exists()
    assert not os.stat(new / "apps/cm.yaml").st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert await source.checkout(repo_url=url, sha=second) == new  # extracted once


async def test_each_resolve_sees_the_latest_push(repo: Repo, source: GitSource, fetches: list[bool]) -> None:
    url = str(repo.bare)
    first = repo.push({"a.yaml": "1\n"})
    assert await source.resolve(repo_url=url, revision="main") == first
    second = repo.push({"a.yaml": "2\n"})
    assert await source.resolve(repo_url=url, revision="main") == second
    assert (await source.checkout(repo_url=url, sha=second) / "a.yaml").read_text() == "2\n"
    assert fetches == [True, True]
    # A pinned commit already fetched needs no fetch at all.
    assert await source.resolve(repo_url=url, revision=first) == first
    assert fetches == [True, True]


async def test_a_burst_of_resolves_shares_fetches(repo: Repo, source: GitSource, fetches: list[bool]) -> None:
    sha = repo.push({"a.yaml": "1\n"})
    results = await asyncio.gather(*(source.resolve(repo_url=str(repo.bare), revision="main") for _ in range(10)))
    assert results == [sha] * 10
    assert 1 <= len(fetches) <= 2, fetches


async def test_deleted_branches_and_unknown_revisions_do_not_resolve(repo: Repo, source: GitSource) -> None:
    url = str(repo.bare)
    repo.push({"a.yaml": "1\n"})
    feature = repo.push({"b.yaml": "1\n"}, branch="feature")
    assert await source.resolve(repo_url=url, revision="feature") == feature
    git(repo.work, "push", "-q", "origin", "--delete", "feature")
    with pytest.raises(SourceError, match="revision 'feature' not found"):
        await source.resolve(repo_url=url, revision="feature")
    with pytest.raises(SourceError, match="revision 'nope' not found"):
        await source.resolve(repo_url=url, revision="nope")
    with pytest.raises(SourceError, match=f"revision '{'f' * 40}' not found"):
        await source.resolve(repo_url=url, revision="f" * 40)
    with pytest.raises(SourceError, match="invalid revision"):
        await source.resolve(repo_url=url, revision="--upload-pack=touch /tmp/x")


async def test_a_commit_no_branch_reaches_is_fetched_by_sha(repo: Repo, source: GitSource) -> None:
    url = str(repo.bare)
    repo.push({"a.yaml": "1\n"})
    assert await source.resolve(repo_url=url, revision="main")
    hidden = commit(repo.work, {"a.yaml": "hidden\n"}, "not on a branch")
    git(repo.work, "push", "-q", "origin", "HEAD:refs/pending/1")
    assert await source.resolve(repo_url=url, revision=hidden) == hidden
    assert (await source.checkout(repo_url=url, sha=hidden) / "a.yaml").read_text() == "hidden\n"


async def test_bad_urls_give_gits_message_without_secrets(tmp_path: Path, source: GitSource,
                                                          fetches: list[bool]) -> None:
    with pytest.raises(SourceError) as caught:
        await source.resolve(repo_url=str(tmp_path / "missing.git"), revision="main")
    assert "does not appear to be a git repository" in str(caught.value)
    with pytest.raises(SourceError) as caught:
        await source.resolve(repo_url="http://alice:hunter2@127.0.0.1:1/team/app.git", revision="main")
    message = str(caught.value)
    assert "127.0.0.1" in message and "hunter2" not in message, message
    assert "alice:***@" in message or "alice" not in message, message
    assert fetches == [False, False]


async def test_a_fetch_that_hangs_is_cut_off(tmp_path: Path) -> None:
    fetches: list[bool] = []
    source = GitSource(tmp_path / "cache", fetch_timeout=0.5, observe_fetch=lambda seconds, ok: fetches.append(ok))
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)  # accepts, never answers
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(SourceError, match="did not complete in 0.5 secs"):
            await source.resolve(repo_url=f"git://127.0.0.1:{port}/app.git", revision="main")
    assert fetches == [False]


def test_urls_are_redacted_and_local_paths_recognised(tmp_path: Path) -> None:
    assert redact("unable to access 'https://alice:pw@host/x': https://tok@host/y ssh://git@host/z") == (
        "unable to access 'https://alice:***@host/x': https://***@host/y ssh://git@host/z")
    assert local_path(f"file://{tmp_path}/a%20b.git") == tmp_path / "a b.git"
    assert local_path("repo") == Path.cwd() / "repo"
    assert [local_path(url) for url in ("git@host:x/y.git", "https://host/x", "ssh://host/x")] == [None] * 3


async def test_checkout_needs_a_fetched_commit_and_old_trees_are_pruned(repo: Repo, tmp_path: Path) -> None:
    source = GitSource(tmp_path / "cache", keep_checkouts=2)
    url = str(repo.bare)
    shas = [repo.push({"a.yaml": f"{n}\n"}) for n in range(3)]
    with pytest.raises(SourceError, match="not fetched"):
        await source.checkout(repo_url=url, sha=shas[0])
    for sha in shas:
        assert await source.resolve(repo_url=url, revision=sha[:10]) == sha
    trees = [await source.checkout(repo_url=url, sha=sha) for sha in shas]
    assert [tree.exists() for tree in trees] == [False, True, True]
    again = await source.checkout(repo_url=url, sha=shas[0])  # extracted anew
    assert (again / "a.yaml").read_text() == "0\n"
    assert [tree.exists() for tree in trees] == [True, False, True]


async def _wait_for(changes: list[str], count: int) -> None:
    async with asyncio.timeout(5):
        while len(changes) < count:
            await asyncio.sleep(0.02)


async def test_the_watcher_sees_a_push_to_a_bare_repository_and_a_local_commit(repo: Repo, source: GitSource) -> None:
    repo.push({"a.yaml": "1\n"})
    changes: list[str] = []
    watcher = LocalRepoWatcher(on_change=changes.append)
    watcher.start()
    try:
        watcher.watch([str(repo.bare), str(repo.work), "https://example.com/remote.git"])
        await asyncio.sleep(0.2)
        # Reading a repository (as resolve does) is not a change.
        await source.resolve(repo_url=str(repo.bare), revision="main")
        git(repo.work, "status")
        await asyncio.sleep(0.3)
        assert changes == []

        commit(repo.work, {"a.yaml": "2\n"}, "local")
        await _wait_for(changes, 1)
        assert changes == [str(repo.work)]  # a commit in a work tree: that repository only

        git(repo.work, "push", "-q", "origin", "main")
        await _wait_for(changes, 2)
        await asyncio.sleep(0.3)
        assert str(repo.bare) in changes
        # The push also moved the clone's refs/remotes/origin/main: one call per repository.
        assert sorted(changes) == sorted([str(repo.work), str(repo.work), str(repo.bare)])

        watcher.watch([str(repo.work)])  # the bare one is no longer watched
        changes.clear()
        git(repo.work, "push", "-q", "origin", "HEAD:refs/heads/other")
        await _wait_for(changes, 1)
        await asyncio.sleep(0.3)
        assert changes == [str(repo.work)]
    finally:
        await watcher.stop()


async def test_the_watcher_coalesces_a_burst(repo: Repo) -> None:
    repo.push({"a.yaml": "1\n"})
    changes: list[str] = []
    watcher = LocalRepoWatcher(on_change=changes.append, debounce=0.5)
    watcher.start()
    try:
        watcher.watch([f"file://{repo.bare}", str(repo.bare)])  # one repository, two ways to say it
        await asyncio.sleep(0.1)
        for n in range(3):
            git(repo.bare, "update-ref", f"refs/heads/b{n}", "main")
        await _wait_for(changes, 2)
        await asyncio.sleep(0.7)
        assert sorted(changes) == [str(repo.bare), f"file://{repo.bare}"]
    finally:
        await watcher.stop()
