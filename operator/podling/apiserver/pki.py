"""The cluster's keys: a CA made once per data dir, the API server's serving cert, the token key.

kubectl (like every client-go program) sends bearer tokens only over TLS, so the API always
serves HTTPS. The CA is created on first start and kept, so kubeconfigs stay valid across
restarts; the serving certificate is re-issued when it is missing, near expiry, or lacks a
host the server now answers on. The X.509 mechanics are shared with the kubelet in
``podling.tls``.

The service account key pair (``sa.key``, RSA, 0600, and ``sa.pub``) is made once too: the
controller manager signs tokens with ``sa.key`` and the API server verifies them with
``sa.pub`` (or the keys of ``--service-account-key-file``), so tokens outlive restarts.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from podling import tls

_CA_DAYS = 3650
_SERVING_DAYS = 365
_SA_KEY_BITS = 2048  # what kubeadm makes for sa.key


def ensure_ca(pki_dir: Path) -> Path:
    """DIR/ca.crt (created with its key on first use); returns its path."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = pki_dir / "ca.crt", pki_dir / "ca.key"
    if not cert_path.exists() or not key_path.exists():
        key = tls.new_key()
        tls.write_key(key_path, key)
        tls.write_cert(cert_path, tls.issue(subject="podling-ca", public_key=key.public_key(), issuer=None,
                                            signer=key, days=_CA_DAYS, ca=True, sans=[]))
    return cert_path


def ensure_serving_cert(pki_dir: Path, *, host: str) -> tuple[Path, Path]:
    """(cert, key) for the API server, signed by the CA, valid for ``host`` and loopback."""
    ca_cert_path = ensure_ca(pki_dir)
    cert_path, key_path = pki_dir / "apiserver.crt", pki_dir / "apiserver.key"
    wanted = [*tls.serving_names(host), x509.DNSName("kubernetes.default.svc")]
    if tls.is_current(cert_path, key_path, names=wanted):
        return cert_path, key_path
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = tls.new_key()
    tls.write_key(key_path, key)
    tls.write_cert(cert_path, tls.issue(subject="podling-apiserver", public_key=key.public_key(),
                                        issuer=ca_cert.subject, signer=ca_key, days=_SERVING_DAYS, ca=False,
                                        sans=wanted))
    return cert_path, key_path


def ensure_service_account_key(pki_dir: Path) -> tuple[Path, Path]:
    """(DIR/sa.key, DIR/sa.pub): the RSA key pair of service account tokens, made on first use.

    The private key is created with mode 0600 from the start (never briefly readable by
    others); a missing ``sa.pub`` is derived again from ``sa.key``.
    """
    pki_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = pki_dir / "sa.key", pki_dir / "sa.pub"
    if not key_path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=_SA_KEY_BITS)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        tmp = key_path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(pem)
        tmp.replace(key_path)
        pub_path.unlink(missing_ok=True)
    if not pub_path.exists():
        private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        pub_path.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                               serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path


def server_context(*, cert: Path, key: Path) -> ssl.SSLContext:
    return tls.server_context(cert=cert, key=key)


def client_context(*, ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))
