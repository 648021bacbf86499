"""The cluster's certificates: a CA made once per data dir, and the API server's serving cert.

kubectl (like every client-go program) sends bearer tokens only over TLS, so the API always
serves HTTPS. The CA is created on first start and kept, so kubeconfigs stay valid across
restarts; the serving certificate is re-issued when it is missing, near expiry, or lacks a
host the server now answers on. The X.509 mechanics are shared with the kubelet in
``podling.tls``.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from podling import tls

_CA_DAYS = 3650
_SERVING_DAYS = 365


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


def server_context(*, cert: Path, key: Path) -> ssl.SSLContext:
    return tls.server_context(cert=cert, key=key)


def client_context(*, ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))
