"""Authentication and authorization: who is asking, and may they.

Authentication reads bearer tokens from a static token file in kube-apiserver's
``--token-auth-file`` format (CSV: ``token,user,uid[,"group1,group2"]``), and knows one more:
the API server's own in-memory token (``ServerIdentity``), which it presents to kubelets. A
request with neither is 401, before any handler runs. Authorization is a seam: the
``Authorizer`` protocol decides per request; the default allows every authenticated user
(RBAC comes later and plugs in here).
"""

from __future__ import annotations

import csv
import dataclasses
import hmac
import secrets
import uuid
from pathlib import Path
from typing import Protocol


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
