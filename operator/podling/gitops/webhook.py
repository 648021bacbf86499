"""Push webhooks from git hosts: verify, then parse into a :class:`PushEvent`. No I/O here.

Invariants:

* Nothing is read from a body before it is authenticated: the order is size (413), provider
  (from its event header), signature (401), then JSON (400), then the event's kind (None:
  not a push, answer 202 and ignore it).
* When any secret is configured, every request must prove one of them: GitHub, Gitea, Gogs
  and Bitbucket Server sign the body with HMAC-SHA256, GitLab sends the secret itself; the
  comparison is constant-time (``hmac.compare_digest``). With no secret configured (empty
  strings do not count) nothing is checked: say so loudly where the server starts.
* A :class:`PushEvent` names the repository by every URL the payload gives (clone, SSH, web)
  and :func:`same_repo` compares them with an Application's ``repoURL`` ignoring scheme,
  credentials, port, case, a trailing ``.git`` and a trailing slash, so whichever form a
  user wrote, the push finds its Application.

Providers are one row each in ``_PROVIDERS``: the header that names the event (which also
tells the provider apart: Gitea sends GitHub's and Gogs' event headers too, so the most
specific comes first), the events that are pushes, and the header that proves the secret.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

MAX_BODY = 1024 * 1024  # bytes; a bigger body is refused (413) before it is read further

_ZERO_SHA = re.compile(r"0+")


@dataclasses.dataclass(frozen=True, slots=True)
class _Provider:
    name: str
    event_header: str  # lower case, as every header is looked up
    push_events: frozenset[str]
    proof_header: str
    signature_prefix: str | None  # HMAC-SHA256 of the body as PREFIX + hex; None: the secret itself


# Most specific first: Gitea also sends X-Gogs-Event and X-GitHub-Event.
_PROVIDERS = (
    _Provider("gitea", "x-gitea-event", frozenset({"push"}), "x-gitea-signature", ""),
    _Provider("gogs", "x-gogs-event", frozenset({"push"}), "x-gogs-signature", ""),
    _Provider("github", "x-github-event", frozenset({"push"}), "x-hub-signature-256", "sha256="),
    _Provider("gitlab", "x-gitlab-event", frozenset({"Push Hook", "Tag Push Hook"}), "x-gitlab-token", None),
    _Provider("bitbucket-server", "x-event-key", frozenset({"repo:refs_changed"}), "x-hub-signature", "sha256="),
)


class WebhookError(Exception):
    """A request to refuse, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class RefUpdate:
    name: str  # branch or tag name: "main", "v1.2"
    is_tag: bool
    after: str  # the commit SHA the ref points to now; "" when the push deleted it


@dataclasses.dataclass(frozen=True, slots=True)
class PushEvent:
    """One push: the repository's URLs and the refs it moved (Bitbucket Server may send several)."""

    provider: str  # github, gitea, gogs, gitlab, bitbucket-server
    repo_urls: tuple[str, ...]
    refs: tuple[RefUpdate, ...]  # never empty

    @property
    def branch(self) -> str:
        """The (first) pushed ref's branch or tag name."""
        return self.refs[0].name

    @property
    def is_tag(self) -> bool:
        return self.refs[0].is_tag

    @property
    def after(self) -> str:
        return self.refs[0].after

    def matches(self, *, repo_url: str, revision: str) -> bool:
        """Whether this push may move what an Application at ``repo_url``/``revision`` resolves to.

        A branch or tag revision matches a push of that ref (short or ``refs/heads/…`` form);
        ``HEAD`` (or empty) matches a push of any branch, since the payload does not always say
        which branch is the default; a commit SHA never moves.
        """
        if not any(same_repo(repo_url, url) for url in self.repo_urls):
            return False
        revision = revision.strip()
        for ref in self.refs:
            full = f"refs/tags/{ref.name}" if ref.is_tag else f"refs/heads/{ref.name}"
            if revision in (ref.name, full) or (revision in ("", "HEAD") and not ref.is_tag):
                return True
        return False


def parse_push(*, headers: Mapping[str, str], body: bytes, secrets: Sequence[str]) -> PushEvent | None:
    """The push a webhook request reports, None if it reports something else (answer 202).

    Raises :class:`WebhookError` with 413 (body over :data:`MAX_BODY`), 401 (a secret is
    configured and the request does not prove it) or 400 (not JSON, or not a push payload).
    """
    if len(body) > MAX_BODY:
        raise WebhookError(413, f"request body over {MAX_BODY} bytes")
    lower = {key.lower(): value for key, value in headers.items()}
    secrets = [secret for secret in secrets if secret]  # an empty secret is no secret
    provider = next((p for p in _PROVIDERS if p.event_header in lower), None)
    if provider is None:
        return None
    proof = lower.get(provider.proof_header)
    if provider.signature_prefix is None:
        _check_token(proof, secrets=secrets)
    else:
        _check_hmac(proof, body=body, secrets=secrets, prefix=provider.signature_prefix)
    if lower[provider.event_header] not in provider.push_events:
        return None
    payload = _payload(body, content_type=lower.get("content-type", ""))
    if provider.name == "bitbucket-server":
        return _bitbucket_server(payload)
    return _single_ref(provider.name, payload)


def same_repo(a: str, b: str) -> bool:
    """Whether two repository URLs name the same repository (see the module's invariants)."""
    return _normal(a) == _normal(b)


# ---- verification --------------------------------------------------------------------------


def _check_hmac(signature: str | None, *, body: bytes, secrets: Sequence[str], prefix: str) -> None:
    if not secrets:
        return
    if not signature:
        raise WebhookError(401, "missing signature")
    given = signature.strip().encode("utf-8", "replace")
    for secret in secrets:
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if hmac.compare_digest((prefix + digest).encode(), given):
            return
    raise WebhookError(401, "signature does not match")


def _check_token(token: str | None, *, secrets: Sequence[str]) -> None:
    if not secrets:
        return
    if not token:
        raise WebhookError(401, "missing token")
    given = token.encode("utf-8", "replace")
    if not any(hmac.compare_digest(secret.encode(), given) for secret in secrets):
        raise WebhookError(401, "token does not match")


# ---- payloads ------------------------------------------------------------------------------


def _payload(body: bytes, *, content_type: str) -> dict[str, Any]:
    """The JSON object of a body, sent as JSON or (GitHub, Gitea) form-encoded as ``payload=``."""
    try:
        text = body.decode("utf-8")
        if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            text = urllib.parse.parse_qs(text).get("payload", [""])[0]
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise WebhookError(400, f"malformed JSON: {e}") from e
    if not isinstance(payload, dict):
        raise WebhookError(400, "malformed payload: not a JSON object")
    return payload


def _single_ref(provider: str, payload: dict[str, Any]) -> PushEvent:
    """GitHub, Gitea, Gogs and GitLab: ``ref``, ``after`` and the repository's URLs."""
    ref, after = payload.get("ref"), payload.get("after")
    if not isinstance(ref, str) or not ref.startswith("refs/"):
        raise WebhookError(400, "malformed push payload: no ref")
    if not isinstance(after, str):
        raise WebhookError(400, "malformed push payload: no after")
    fields = ("project", "repository") if provider == "gitlab" else ("repository",)
    keys = ("git_http_url", "git_ssh_url", "http_url", "ssh_url", "web_url", "url", "homepage") \
        if provider == "gitlab" else ("clone_url", "ssh_url", "html_url", "git_url", "url")
    urls: list[str] = []
    for field in fields:
        repository = payload.get(field)
        if isinstance(repository, dict):
            urls += [repository[key] for key in keys if isinstance(repository.get(key), str) and repository[key]]
    return PushEvent(provider=provider, repo_urls=_repo_urls(urls), refs=(_ref(ref, after),))


def _bitbucket_server(payload: dict[str, Any]) -> PushEvent:
    """Bitbucket Server (Data Center) ``repo:refs_changed``: several ref changes, clone links."""
    repository, changes = payload.get("repository"), payload.get("changes")
    if not isinstance(repository, dict) or not isinstance(changes, list) or not changes:
        raise WebhookError(400, "malformed refs_changed payload: no repository or changes")
    links = repository.get("links")
    clones = links.get("clone") if isinstance(links, dict) else None
    urls = [link["href"] for link in clones or [] if isinstance(link, dict) and isinstance(link.get("href"), str)]
    refs = []
    for change in changes:
        change = change if isinstance(change, dict) else {}
        ref, after = change.get("refId"), change.get("toHash")
        if not isinstance(ref, str) or not ref.startswith("refs/") or not isinstance(after, str):
            raise WebhookError(400, "malformed refs_changed payload: a change without refId or toHash")
        refs.append(_ref(ref, after))
    return PushEvent(provider="bitbucket-server", repo_urls=_repo_urls(urls), refs=tuple(refs))


def _ref(ref: str, after: str) -> RefUpdate:
    is_tag = ref.startswith("refs/tags/")
    name = ref.removeprefix("refs/tags/") if is_tag else ref.removeprefix("refs/heads/")
    return RefUpdate(name=name, is_tag=is_tag, after="" if _ZERO_SHA.fullmatch(after) else after)


def _repo_urls(urls: list[str]) -> tuple[str, ...]:
    if not urls:
        raise WebhookError(400, "malformed push payload: no repository URL")
    return tuple(dict.fromkeys(urls))


def _normal(url: str) -> str:
    """``host/owner/repo`` of a repository URL, lower case; a local path as itself."""
    url = url.strip()
    if url.startswith("file://"):
        url = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    elif "://" in url:
        parts = urllib.parse.urlsplit(url)
        url = f"{(parts.hostname or '')}{parts.path}"
    elif re.match(r"^[^/]*:", url):  # scp-like: [user@]host:owner/repo
        host, _, path = url.partition(":")
        url = f"{host.rpartition('@')[2]}/{path.lstrip('/')}"
    url = url.rstrip("/").removesuffix(".git").rstrip("/")
    return url.lower()
