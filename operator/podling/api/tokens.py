"""Service account tokens: JSON Web Tokens signed RS256, with Kubernetes' legacy claims.

The token controller signs them with the private key; the API server verifies them with the
public key(s). Neither imports the other, so the JWS mechanics live here, on shared ground.

Invariants:

* :func:`sign` and :func:`verify` are the JWS compact serialization (RFC 7515) with
  RSASSA-PKCS1-v1_5 over SHA-256 (``RS256``, RFC 7518 §3.3), and nothing else: ``verify``
  refuses every other ``alg`` (``none``, and ``HS256`` keyed with the public key, the classic
  algorithm-confusion forgery), a token that is not three base64url parts, a signature that
  no given key made, and an ``exp``/``nbf`` outside now. Every refusal is :class:`InvalidToken`.
* The header's ``kid`` is Kubernetes' key id (base64url of the SHA-256 of the public key's
  DER SubjectPublicKeyInfo), so a verifier holding several keys tries the named one first.
* Claims are those of Kubernetes' secret-based (legacy) tokens, which never expire; a token
  is revoked by deleting its Secret or its ServiceAccount (the API server checks both).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER = "kubernetes/serviceaccount"
NAMESPACE_CLAIM = "kubernetes.io/serviceaccount/namespace"
SECRET_NAME_CLAIM = "kubernetes.io/serviceaccount/secret.name"
SERVICE_ACCOUNT_NAME_CLAIM = "kubernetes.io/serviceaccount/service-account.name"
SERVICE_ACCOUNT_UID_CLAIM = "kubernetes.io/serviceaccount/service-account.uid"

SECRET_TYPE = "kubernetes.io/service-account-token"
NAME_ANNOTATION = "kubernetes.io/service-account.name"
UID_ANNOTATION = "kubernetes.io/service-account.uid"
ALL_SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_CLOCK_SKEW = 60  # seconds of leeway on exp and nbf


class InvalidToken(ValueError):
    """Not a token this verifier accepts; the message says why (for logs, never for clients)."""


def username(*, namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def groups(namespace: str) -> tuple[str, ...]:
    """The groups every service account of ``namespace`` is in (``system:authenticated`` too)."""
    return (ALL_SERVICE_ACCOUNTS_GROUP, f"{ALL_SERVICE_ACCOUNTS_GROUP}:{namespace}", "system:authenticated")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LegacyClaims:
    """Whose token it is: the service account (name and uid) and the Secret holding it."""

    namespace: str
    service_account: str
    uid: str
    secret: str

    def to_claims(self) -> dict[str, str]:
        return {
            "iss": ISSUER,
            NAMESPACE_CLAIM: self.namespace,
            SECRET_NAME_CLAIM: self.secret,
            SERVICE_ACCOUNT_NAME_CLAIM: self.service_account,
            SERVICE_ACCOUNT_UID_CLAIM: self.uid,
            "sub": username(namespace=self.namespace, name=self.service_account),
        }

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> LegacyClaims:
        if claims.get("iss") != ISSUER:
            raise InvalidToken(f"issuer {claims.get('iss')!r} is not {ISSUER!r}")
        values = {}
        for field, claim in (("namespace", NAMESPACE_CLAIM), ("service_account", SERVICE_ACCOUNT_NAME_CLAIM),
                             ("uid", SERVICE_ACCOUNT_UID_CLAIM), ("secret", SECRET_NAME_CLAIM)):
            value = claims.get(claim)
            if not isinstance(value, str) or not value:
                raise InvalidToken(f"claim {claim} is missing")
            values[field] = value
        parsed = cls(**values)
        if claims.get("sub") != username(namespace=parsed.namespace, name=parsed.service_account):
            raise InvalidToken(f"subject {claims.get('sub')!r} does not match the service account claims")
        return parsed


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """Kubernetes' ``kid`` of a key: unpadded base64url of SHA-256 over its DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64(hashlib.sha256(der).digest())


def sign(claims: Mapping[str, Any], *, key: rsa.RSAPrivateKey) -> str:
    """The compact JWS of ``claims``, signed RS256 by ``key``."""
    header = {"alg": "RS256", "kid": key_id(key.public_key())}
    signing_input = f"{_b64(_json(header))}.{_b64(_json(claims))}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated parts: worth verifying (opaque tokens from a token file are not)."""
    return token.count(".") == 2


def verify(token: str, *, keys: Sequence[rsa.RSAPublicKey], now: float | None = None) -> dict[str, Any]:
    """The claims of ``token`` if one of ``keys`` signed it RS256 and it is within its times."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("not a JWS compact serialization (want three base64url parts)")
    header = _json_part(parts[0], "header")
    if header.get("alg") != "RS256":
        raise InvalidToken(f"algorithm {header.get('alg')!r} is not RS256")
    signature = _unb64(parts[2], "signature")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    kid = header.get("kid")
    ordered = sorted(keys, key=lambda k: kid is None or key_id(k) != kid)  # the named key first
    if not any(_signed_by(k, signing_input, signature) for k in ordered):
        raise InvalidToken("the signature was not made by any of the service account keys")
    claims = _json_part(parts[1], "claims")
    moment = time.time() if now is None else now
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if isinstance(exp, (int, float)) and moment > exp + _CLOCK_SKEW:
        raise InvalidToken("the token has expired")
    if isinstance(nbf, (int, float)) and moment < nbf - _CLOCK_SKEW:
        raise InvalidToken("the token is not valid yet")
    return claims


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """The RSA private key in the PEM file ``path`` (ValueError naming the file if it is not one)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: not an unencrypted PEM private key: {err}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: service account tokens are signed RS256: the key must be RSA")
    return key


def load_public_keys(path: Path) -> list[rsa.RSAPublicKey]:
    """Every RSA key in the PEM file ``path``: public keys, private keys (their public half), certificates.

    The formats kube-apiserver's ``--service-account-key-file`` takes; a file with none, or
    with a key that is not RSA, is a ValueError naming the file.
    """
    keys: list[rsa.RSAPublicKey] = []
    for match in _PEM_BLOCK.finditer(path.read_bytes()):
        block, label = match.group(0), match.group(1).decode()
        try:
            if label == "CERTIFICATE":
                key: Any = x509.load_pem_x509_certificate(block).public_key()
            elif label.endswith("PRIVATE KEY"):
                key = serialization.load_pem_private_key(block, password=None).public_key()
            elif label.endswith("PUBLIC KEY"):
                key = serialization.load_pem_public_key(block)
            else:
                continue
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: a {label} block cannot be read: {err}") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError(f"{path}: a {label} block is not RSA (service account tokens are RS256)")
        keys.append(key)
    if not keys:
        raise ValueError(f"{path}: no PEM public key, private key or certificate in it")
    return keys


def _signed_by(key: rsa.RSAPublicKey, signing_input: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_unb64(part, what))
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken(f"the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken(f"the {what} is not a JSON object")
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise InvalidToken(f"the {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken(f"the {what} is not base64url") from None
