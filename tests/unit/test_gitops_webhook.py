"""podling.gitops.webhook: push webhooks of five git hosts, verified and parsed."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

from podling.gitops.webhook import MAX_BODY, PushEvent, RefUpdate, WebhookError, parse_push, same_repo

SECRET = "s3cret"
SHA = "bffeb74224043ba2feb48d137756c8a9331c449a"


def _hex(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _github_like(**extra: Any) -> dict[str, Any]:
    return {"ref": "refs/heads/main", "before": "0" * 40, "after": SHA, **extra,
            "repository": {"clone_url": "https://git.example.com/team/app.git",
                           "ssh_url": "git@git.example.com:team/app.git",
                           "html_url": "https://git.example.com/team/app"}}


@dataclasses.dataclass
class Provider:
    name: str
    payload: dict[str, Any]
    push: dict[str, str]  # headers of a push event, without its signature
    other: dict[str, str]  # headers of an event that is not a push
    sign: Callable[[bytes, str], dict[str, str]]  # the signature headers for a body and secret


PROVIDERS = [
    Provider("github", _github_like(), {"X-GitHub-Event": "push"}, {"X-GitHub-Event": "ping"},
             lambda body, secret: {"X-Hub-Signature-256": "sha256=" + _hex(body, secret)}),
    # Gitea sends GitHub's and Gogs' event headers too; its own decide.
    Provider("gitea", _github_like(), {"X-Gitea-Event": "push", "X-Gogs-Event": "push", "X-GitHub-Event": "push"},
             {"X-Gitea-Event": "issues", "X-GitHub-Event": "issues"},
             lambda body, secret: {"X-Gitea-Signature": _hex(body, secret)}),
    Provider("gogs", _github_like(), {"X-Gogs-Event": "push"}, {"X-Gogs-Event": "create"},
             lambda body, secret: {"X-Gogs-Signature": _hex(body, secret)}),
    Provider("gitlab",
             {"object_kind": "push", "ref": "refs/heads/main", "before": "0" * 40, "after": SHA, "checkout_sha": SHA,
              "project": {"git_http_url": "https://gitlab.example.com/team/app.git",
                          "git_ssh_url": "git@gitlab.example.com:team/app.git",
                          "web_url": "https://gitlab.example.com/team/app"}},
             {"X-Gitlab-Event": "Push Hook"}, {"X-Gitlab-Event": "Merge Request Hook"},
             lambda body, secret: {"X-Gitlab-Token": secret}),
    Provider("bitbucket-server",
             {"eventKey": "repo:refs_changed",
              "repository": {"slug": "app", "project": {"key": "TEAM"},
                             "links": {"clone": [{"href": "https://bb.example.com/scm/team/app.git", "name": "http"},
                                                 {"href": "ssh://git@bb.example.com:7999/team/app.git", "name": "ssh"}],
                                       "self": [{"href": "https://bb.example.com/projects/TEAM/repos/app/browse"}]}},
              "changes": [{"ref": {"id": "refs/heads/main", "displayId": "main", "type": "BRANCH"},
                           "refId": "refs/heads/main", "fromHash": "0" * 40, "toHash": SHA, "type": "UPDATE"}]},
             {"X-Event-Key": "repo:refs_changed"}, {"X-Event-Key": "diagnostics:ping"},
             lambda body, secret: {"X-Hub-Signature": "sha256=" + _hex(body, secret)}),
]


@pytest.fixture(params=PROVIDERS, ids=[p.name for p in PROVIDERS])
def provider(request: pytest.FixtureRequest) -> Provider:
    return request.param


def test_a_signed_push_is_an_event(provider: Provider) -> None:
    body = json.dumps(provider.payload).encode()
    event = parse_push(headers={**provider.push, **provider.sign(body, SECRET)}, body=body, secrets=["other", SECRET])
    assert event is not None
    assert (event.provider, event.branch, event.is_tag, event.after) == (provider.name, "main", False, SHA)
    assert event.repo_urls and all(url.startswith(("https://", "git@", "ssh://")) for url in event.repo_urls)
    host = urllib.parse.urlsplit(event.repo_urls[0]).hostname
    assert event.matches(repo_url=f"https://{host}/team/app", revision="main")
    assert event.matches(repo_url=f"https://{host}/team/app", revision="HEAD")
    assert not event.matches(repo_url=f"https://{host}/team/app", revision="release")
    assert not event.matches(repo_url=f"https://{host}/team/other", revision="main")


def test_a_wrong_signature_is_401(provider: Provider) -> None:
    body = json.dumps(provider.payload).encode()
    with pytest.raises(WebhookError) as caught:
        parse_push(headers={**provider.push, **provider.sign(body, "forged")}, body=body, secrets=[SECRET])
    assert caught.value.status == 401


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p.name != "gitlab"],  # GitLab sends no signature
                         ids=lambda p: p.name)
def test_a_signature_of_another_body_is_401(provider: Provider) -> None:
    body = json.dumps(provider.payload).encode()
    with pytest.raises(WebhookError) as caught:
        parse_push(headers={**provider.push, **provider.sign(b"{}", SECRET)}, body=body, secrets=[SECRET])
    assert caught.value.status == 401


def test_a_missing_signature_is_401_when_a_secret_is_configured(provider: Provider) -> None:
    body = json.dumps(provider.payload).encode()
    with pytest.raises(WebhookError) as caught:
        parse_push(headers=provider.push, body=body, secrets=[SECRET])
    assert caught.value.status == 401
    for unset in ([], [""]):  # no secret: nothing to check
        assert parse_push(headers=provider.push, body=body, secrets=unset) is not None


def test_a_body_over_the_limit_is_413_before_anything_else(provider: Provider) -> None:
    body = b" " * (MAX_BODY + 1)
    with pytest.raises(WebhookError) as caught:
        parse_push(headers={**provider.push, **provider.sign(body, SECRET)}, body=body, secrets=[SECRET])
    assert caught.value.status == 413


def test_malformed_json_is_400(provider: Provider) -> None:
    for body in (b'{"ref": ', b"[1, 2]", b"\xff\xfe", json.dumps({"zen": "no ref"}).encode()):
        with pytest.raises(WebhookError) as caught:
            parse_push(headers={**provider.push, **provider.sign(body, SECRET)}, body=body, secrets=[SECRET])
        assert caught.value.status == 400, body


def test_other_events_are_ignored(provider: Provider) -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    assert parse_push(headers={**provider.other, **provider.sign(body, SECRET)}, body=body, secrets=[SECRET]) is None


def test_requests_from_no_known_host_are_ignored() -> None:
    assert parse_push(headers={"Content-Type": "application/json"}, body=b"{}", secrets=[SECRET]) is None


def test_headers_are_case_insensitive() -> None:
    body = json.dumps(_github_like()).encode()
    event = parse_push(headers={"x-github-event": "push", "X-HUB-SIGNATURE-256": "sha256=" + _hex(body)},
                       body=body, secrets=[SECRET])
    assert event is not None and event.provider == "github"


def test_github_form_encoded_payloads() -> None:
    body = urllib.parse.urlencode({"payload": json.dumps(_github_like())}).encode()
    event = parse_push(headers={"X-GitHub-Event": "push", "Content-Type": "application/x-www-form-urlencoded",
                                "X-Hub-Signature-256": "sha256=" + _hex(body)}, body=body, secrets=[SECRET])
    assert event is not None and event.after == SHA


def test_tags_and_deletions() -> None:
    body = json.dumps(_github_like(ref="refs/tags/v1.2")).encode()
    event = parse_push(headers={"X-GitHub-Event": "push"}, body=body, secrets=[])
    assert event is not None and (event.branch, event.is_tag) == ("v1.2", True)
    assert event.matches(repo_url="https://git.example.com/team/app.git", revision="v1.2")
    assert event.matches(repo_url="https://git.example.com/team/app.git", revision="refs/tags/v1.2")
    assert not event.matches(repo_url="https://git.example.com/team/app.git", revision="HEAD")
    body = json.dumps(_github_like(after="0" * 40)).encode()
    deleted = parse_push(headers={"X-GitHub-Event": "push"}, body=body, secrets=[])
    assert deleted is not None and deleted.after == ""


def test_gitlab_tag_push_hook() -> None:
    payload = {"object_kind": "tag_push", "ref": "refs/tags/v2", "after": SHA,
               "project": {"git_http_url": "http://gitlab.local/team/app.git"}}
    event = parse_push(headers={"X-Gitlab-Event": "Tag Push Hook", "X-Gitlab-Token": SECRET},
                       body=json.dumps(payload).encode(), secrets=[SECRET])
    assert event == PushEvent(provider="gitlab", repo_urls=("http://gitlab.local/team/app.git",),
                              refs=(RefUpdate(name="v2", is_tag=True, after=SHA),))


def test_bitbucket_server_reports_every_ref_a_push_moved() -> None:
    payload = PROVIDERS[-1].payload | {"changes": [
        {"refId": "refs/heads/main", "toHash": SHA, "type": "UPDATE"},
        {"refId": "refs/tags/v3", "toHash": SHA, "type": "ADD"},
        {"refId": "refs/heads/old", "toHash": "0" * 40, "type": "DELETE"}]}
    event = parse_push(headers={"X-Event-Key": "repo:refs_changed"}, body=json.dumps(payload).encode(), secrets=[])
    assert event is not None
    assert event.refs == (RefUpdate("main", False, SHA), RefUpdate("v3", True, SHA), RefUpdate("old", False, ""))
    assert event.matches(repo_url="ssh://git@bb.example.com:7999/team/app.git", revision="v3")


@pytest.mark.parametrize(("a", "b"), [
    ("https://github.com/Owner/Repo.git", "https://github.com/owner/repo"),
    ("https://github.com/owner/repo/", "http://github.com/owner/repo.git"),
    ("git@github.com:owner/repo.git", "https://github.com/owner/repo"),
    ("ssh://git@github.com:22/owner/repo.git", "https://token:x-oauth@github.com/owner/repo"),
    ("https://github.com:443/owner/repo", "git://github.com/owner/repo.git"),
    ("file:///srv/git/app.git", "/srv/git/app.git"),
    ("/srv/git/app", "/srv/git/app.git/"),
])
def test_same_repo_ignores_the_form_of_the_url(a: str, b: str) -> None:
    assert same_repo(a, b)


@pytest.mark.parametrize(("a", "b"), [
    ("https://github.com/owner/repo", "https://github.com/owner/repo2"),
    ("https://github.com/owner/repo", "https://gitlab.com/owner/repo"),
    ("https://github.com/owner/repo", "https://github.com/other/repo"),
    ("/srv/git/app", "/srv/git/other"),
])
def test_same_repo_tells_repositories_apart(a: str, b: str) -> None:
    assert not same_repo(a, b)
