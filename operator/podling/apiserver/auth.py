"""Authentication and authorization: who is asking, and may they.

Authentication reads bearer tokens from a static token file in kube-apiserver's
``--token-auth-file`` format (CSV: ``token,user,uid[,"group1,group2"]``), accepts service
account tokens (RS256 JWTs, ``ServiceAccountTokens``), and knows one more: the API server's
own in-memory token (``ServerIdentity``), which it presents to kubelets. A request with none
of them is 401, before any handler runs. Authorization is a seam: the
``Authorizer`` protocol decides per request; the default allows every authenticated user
(RBAC comes later and plugs in here).
"""

from __future__ import annotations

import base64
import binascii
import csv
import dataclasses
import hmac
import logging
import secrets
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import rsa

from podling.api import tokens
from podling.apiserver.objectcache import ObjectCache

log = logging.getLogger("podling.apiserver.auth")


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    name: str
    uid: str
    groups: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class RequestAttributes:
    user: User
    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    path: str


class TokenFile:
    """The tokens of one token file, read at start."""

    def __init__(self, *, tokens: dict[str, User]) -> None:
        self._tokens = tokens

    @classmethod
    def load(cls, path: Path) -> TokenFile:
        tokens: dict[str, User] = {}
        with path.open(newline="") as f:
            for lineno, row in enumerate(csv.reader(f), start=1):
                if not row or row[0].startswith("#"):
                    continue
                if len(row) < 3 or not row[0] or not row[1]:
                    raise ValueError(f"{path}:{lineno}: expected token,user,uid[,\"groups\"]")
                groups = tuple(g for g in row[3].split(",") if g) if len(row) > 3 else ()
                tokens[row[0]] = User(name=row[1], uid=row[2], groups=groups)
        return cls(tokens=tokens)

    def lookup(self, presented: str) -> User | None:
        """The user a bearer token belongs to, or None."""
        for token, user in self._tokens.items():
            if hmac.compare_digest(token, presented):
                return user
        return None


class TokenAuthenticator(Protocol):
    async def lookup(self, presented: str) -> User | None:
        """The user a bearer token belongs to, or None."""


class ServiceAccountTokens:
    """Service account tokens (Kubernetes' legacy, Secret-based ones), checked against live objects.

    A token is accepted when one of ``keys`` signed it RS256 with the legacy claims, its
    Secret exists, is not being deleted and holds exactly this token, and its ServiceAccount
    exists, is not being deleted and has the uid the token names: the checks of Kubernetes'
    legacy token validator, so deleting the Secret or the ServiceAccount revokes the token.
    Both are read through watch-fed caches (a store read only for one the cache has not seen).
    The user is ``system:serviceaccount:NS:NAME`` with uid the ServiceAccount's, in groups
    ``system:serviceaccounts``, ``system:serviceaccounts:NS`` and ``system:authenticated``.
    """

    def __init__(self, *, keys: Sequence[rsa.RSAPublicKey], service_accounts: ObjectCache,
                 secrets: ObjectCache) -> None:
        self._keys = list(keys)
        self._service_accounts = service_accounts
        self._secrets = secrets

    async def lookup(self, presented: str) -> User | None:
        if not tokens.looks_like_jwt(presented):
            return None
        try:
            claims = tokens.LegacyClaims.from_claims(tokens.verify(presented, keys=self._keys))
        except tokens.InvalidToken as err:
            log.debug("service account token refused: %s", err)
            return None
        why = await self._revoked(claims, presented)
        if why:
            log.info("service account token of %s/%s refused: %s", claims.namespace, claims.service_account, why)
            return None
        return User(name=tokens.username(namespace=claims.namespace, name=claims.service_account),
                    uid=claims.uid, groups=tokens.groups(claims.namespace))

    async def _revoked(self, claims: tokens.LegacyClaims, presented: str) -> str:
        """Why the token no longer stands ("" if it does)."""
        secret = await self._secrets.fetch(claims.namespace, claims.secret)
        if secret is None or (secret.get("metadata") or {}).get("deletionTimestamp"):
            return f"secret {claims.secret} is gone"
        try:
            stored = base64.b64decode(((secret.get("data") or {}).get("token")) or "", validate=True)
        except (binascii.Error, ValueError):
            stored = b""
        if not hmac.compare_digest(stored, presented.encode()):
            return f"secret {claims.secret} holds another token"
        account = await self._service_accounts.fetch(claims.namespace, claims.service_account)
        if account is None or (account.get("metadata") or {}).get("deletionTimestamp"):
            return "the service account is gone"
        if (account.get("metadata") or {}).get("uid") != claims.uid:
            return f"the service account's uid is not {claims.uid} (it was recreated)"
        return ""


class Authenticator:
    """Bearer tokens: the token file's first, then service account tokens (either may be absent)."""

    def __init__(self, *, token_file: TokenFile | None, service_accounts: ServiceAccountTokens | None) -> None:
        self._token_file = token_file
        self._service_accounts = service_accounts

    async def lookup(self, presented: str) -> User | None:
        user = self._token_file.lookup(presented) if self._token_file is not None else None
        if user is None and self._service_accounts is not None:
            user = await self._service_accounts.lookup(presented)
        return user


@dataclasses.dataclass(frozen=True, slots=True)
class ServerIdentity:
    """The API server's own bearer token (``system:apiserver``), made at start and held only in memory.

    The API server presents it to kubelets, which ask this API server (TokenReview) who it
    is; the token dies with the process, so it never needs rotating or revoking.
    """

    token: str
    user: User

    @classmethod
    def generate(cls) -> ServerIdentity:
        return cls(token=secrets.token_urlsafe(32),
                   user=User(name="system:apiserver", uid=str(uuid.uuid4()), groups=("system:masters",)))

    def matches(self, presented: str) -> bool:
        return hmac.compare_digest(self.token, presented)


def write_token_file(path: Path, *, user: str, groups: tuple[str, ...]) -> str:
    """Create a token file with one new random token for ``user``; returns the token."""
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerow([token, user, user, ",".join(groups)])
    path.chmod(0o600)
    return token


class Authorizer(Protocol):
    def allowed(self, request: RequestAttributes) -> bool: ...


class AllowAuthenticated:
    """Every authenticated user may do everything (until RBAC replaces this)."""

    def allowed(self, request: RequestAttributes) -> bool:
        return True
