"""Service account tokens: RS256 signing and verification, the key pair, and the API server's checks.

The authenticator runs over a real SQLite store and the API server's real watch-fed caches.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from podling.api import tokens
from podling.api.resources import find
from podling.apiserver import codec, pki
from podling.apiserver.auth import Authenticator, ServiceAccountTokens, TokenFile, User
from podling.apiserver.objectcache import Caches
from podling.store.base import Store
from podling.store.sqlite import SqliteStore

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CLAIMS = tokens.LegacyClaims(namespace="team", service_account="robot", uid="uid-1", secret="robot-token-abcde")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode_part(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# ---- JWS ------------------------------------------------------------------------------------------


def test_sign_and_verify_round_trip_with_kubernetes_legacy_claims() -> None:
    token = tokens.sign(CLAIMS.to_claims(), key=KEY)
    header, payload, _ = token.split(".")
    assert decode_part(header) == {"alg": "RS256", "kid": tokens.key_id(KEY.public_key())}
    assert decode_part(payload) == {
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": "team",
        "kubernetes.io/serviceaccount/secret.name": "robot-token-abcde",
        "kubernetes.io/serviceaccount/service-account.name": "robot",
        "kubernetes.io/serviceaccount/service-account.uid": "uid-1",
        "sub": "system:serviceaccount:team:robot",
    }
    claims = tokens.verify(token, keys=[OTHER_KEY.public_key(), KEY.public_key()])
    assert tokens.LegacyClaims.from_claims(claims) == CLAIMS


def test_key_id_is_kubernetes_sha256_of_the_public_key_der() -> None:
    der = KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert tokens.key_id(KEY.public_key()) == b64url(hashlib.sha256(der).digest())


def test_a_token_signed_by_another_key_is_refused() -> None:
    token = tokens.sign(CLAIMS.to_claims(), key=OTHER_KEY)
    with pytest.raises(tokens.InvalidToken, match="signature"):
        tokens.verify(token, keys=[KEY.public_key()])


def test_a_changed_payload_breaks_the_signature() -> None:
    header, _, signature = tokens.sign(CLAIMS.to_claims(), key=KEY).split(".")
    forged = {**CLAIMS.to_claims(), "kubernetes.io/serviceaccount/namespace": "kube-system"}
    with pytest.raises(tokens.InvalidToken, match="signature"):
        tokens.verify(f"{header}.{b64url(json.dumps(forged).encode())}.{signature}", keys=[KEY.public_key()])


def test_alg_none_and_hs256_keyed_with_the_public_key_are_refused() -> None:
    payload = b64url(json.dumps(CLAIMS.to_claims()).encode())
    none = f"{b64url(json.dumps({'alg': 'none'}).encode())}.{payload}."
    with pytest.raises(tokens.InvalidToken, match="not RS256"):
        tokens.verify(none, keys=[KEY.public_key()])
    public_pem = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64url(json.dumps({'alg': 'HS256'}).encode())}.{payload}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(tokens.InvalidToken, match="not RS256"):
        tokens.verify(f"{signing_input}.{b64url(mac)}", keys=[KEY.public_key()])


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "!!.e30.", "e30.e30.%%%"])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(token, keys=[KEY.public_key()])


def test_exp_and_nbf_are_honoured_when_present() -> None:
    token = tokens.sign({**CLAIMS.to_claims(), "exp": 1000, "nbf": 500}, key=KEY)
    assert tokens.verify(token, keys=[KEY.public_key()], now=900)["exp"] == 1000
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.verify(token, keys=[KEY.public_key()], now=2000)
    with pytest.raises(tokens.InvalidToken, match="not valid yet"):
        tokens.verify(token, keys=[KEY.public_key()], now=100)


def test_legacy_claims_must_be_complete_and_consistent() -> None:
    with pytest.raises(tokens.InvalidToken, match="issuer"):
        tokens.LegacyClaims.from_claims({**CLAIMS.to_claims(), "iss": "someone"})
    claims = CLAIMS.to_claims()
    del claims["kubernetes.io/serviceaccount/secret.name"]
    with pytest.raises(tokens.InvalidToken, match="secret.name"):
        tokens.LegacyClaims.from_claims(claims)
    with pytest.raises(tokens.InvalidToken, match="subject"):
        tokens.LegacyClaims.from_claims({**CLAIMS.to_claims(), "sub": "system:serviceaccount:team:admin"})


# ---- keys -----------------------------------------------------------------------------------------


def test_service_account_key_pair_is_made_once_private_and_matching(tmp_path: Path) -> None:
    key_path, pub_path = pki.ensure_service_account_key(tmp_path / "pki")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    private = tokens.load_private_key(key_path)
    assert tokens.load_public_keys(pub_path)[0].public_numbers() == private.public_key().public_numbers()
    first = key_path.read_bytes()
    pub_path.unlink()
    assert pki.ensure_service_account_key(tmp_path / "pki") == (key_path, pub_path)
    assert key_path.read_bytes() == first and pub_path.exists()  # kept, and the public half made again


def test_key_files_take_public_keys_private_keys_and_certificates(tmp_path: Path) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sa")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(OTHER_KEY.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(OTHER_KEY, hashes.SHA256()))
    bundle = tmp_path / "keys.pem"
    bundle.write_bytes(
        KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.NoEncryption())
        + cert.public_bytes(serialization.Encoding.PEM))
    keys = tokens.load_public_keys(bundle)
    assert [k.public_numbers() for k in keys] == [KEY.public_key().public_numbers(),
                                                  OTHER_KEY.public_key().public_numbers()]
    assert tokens.verify(tokens.sign(CLAIMS.to_claims(), key=OTHER_KEY), keys=keys)


def test_key_files_without_rsa_keys_are_refused_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    with pytest.raises(ValueError, match="empty.pem: no PEM"):
        tokens.load_public_keys(empty)
    ecdsa = tmp_path / "ec.pem"
    ecdsa.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ValueError, match="ec.pem: a PUBLIC KEY block is not RSA"):
        tokens.load_public_keys(ecdsa)


# ---- the API server's authenticator ---------------------------------------------------------------

ACCOUNTS = find(group="", version="v1", plural="serviceaccounts")
SECRETS = find(group="", version="v1", plural="secrets")
assert ACCOUNTS is not None and SECRETS is not None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await SqliteStore.open(path=str(tmp_path / "podling.db"))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def caches(store: Store) -> AsyncIterator[Caches]:
    caches = Caches.over(store)
    await caches.start()
    try:
        yield caches
    finally:
        await caches.stop()


async def settled(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the caches did not follow the store within 2s")


async def put(store: Store, resource: object, obj: dict) -> None:
    metadata = obj["metadata"]
    key = resource.key(metadata["namespace"], metadata["name"])  # type: ignore[attr-defined]
    current = await store.get(key)
    if current is None:
        await store.create(key, codec.encode(obj))
    else:
        await store.update(key, codec.encode(obj), revision=current.mod_revision)


def account(uid: str = "uid-1") -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "robot", "namespace": "team", "uid": uid}}


def token_secret(token: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": tokens.SECRET_TYPE,
            "metadata": {"name": "robot-token-abcde", "namespace": "team",
                         "annotations": {tokens.NAME_ANNOTATION: "robot", tokens.UID_ANNOTATION: "uid-1"}},
            "data": {"token": base64.b64encode(token.encode()).decode()}}


async def test_a_token_authenticates_while_its_secret_and_account_stand(store: Store, caches: Caches) -> None:
    authenticator = ServiceAccountTokens(keys=[KEY.public_key()], service_accounts=caches.service_accounts,
                                         secrets=caches.token_secrets)
    token = tokens.sign(CLAIMS.to_claims(), key=KEY)
    assert await authenticator.lookup(token) is None  # neither exists yet
    await put(store, ACCOUNTS, account())
    await put(store, SECRETS, token_secret(token))
    assert await authenticator.lookup(token) == User(  # read from the store: the caches may not have them yet
        name="system:serviceaccount:team:robot", uid="uid-1",
        groups=("system:serviceaccounts", "system:serviceaccounts:team", "system:authenticated"))

    # The caches follow the store's watch: each change is waited for before the token is tried.
    await put(store, SECRETS, token_secret("another-token"))
    await settled(lambda: caches.token_secrets.get("team", "robot-token-abcde")["data"] != token_secret(token)["data"])
    assert await authenticator.lookup(token) is None  # the Secret no longer holds this token
    await put(store, SECRETS, token_secret(token))
    await put(store, ACCOUNTS, account(uid="uid-2"))
    await settled(lambda: caches.service_accounts.get("team", "robot")["metadata"]["uid"] == "uid-2")
    assert await authenticator.lookup(token) is None  # the account was recreated
    await put(store, ACCOUNTS, account())
    await settled(lambda: caches.service_accounts.get("team", "robot")["metadata"]["uid"] == "uid-1")
    assert await authenticator.lookup(token) is not None
    await store.delete(SECRETS.key("team", "robot-token-abcde"))
    await settled(lambda: caches.token_secrets.get("team", "robot-token-abcde") is None)
    assert await authenticator.lookup(token) is None  # deleting the Secret revokes it


async def test_the_token_file_comes_first_and_opaque_tokens_skip_jwt_parsing(tmp_path: Path, caches: Caches) -> None:
    token_file = tmp_path / "tokens.csv"
    token_file.write_text('s3cret,admin,admin,"system:masters"\n')
    authenticator = Authenticator(
        token_file=TokenFile.load(token_file),
        service_accounts=ServiceAccountTokens(keys=[KEY.public_key()], service_accounts=caches.service_accounts,
                                              secrets=caches.token_secrets))
    assert await authenticator.lookup("s3cret") == User(name="admin", uid="admin", groups=("system:masters",))
    assert await authenticator.lookup("wrong") is None
    assert await authenticator.lookup(tokens.sign(CLAIMS.to_claims(), key=OTHER_KEY)) is None
