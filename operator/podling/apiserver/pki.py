"""The cluster's certificates: a CA made once per data dir, and the API server's serving cert.

kubectl (like every client-go program) sends bearer tokens only over TLS, so the API always
serves HTTPS. The CA is created on first start and kept, so kubeconfigs stay valid across
restarts; the serving certificate is re-issued when it is missing, near expiry, or lacks a
host the server now answers on.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_CA_DAYS = 3650
_SERVING_DAYS = 365


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _issue(
    *, subject: str, public_key: ec.EllipticCurvePublicKey, issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey, days: int, ca: bool, sans: list[x509.GeneralName],
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def ensure_ca(pki_dir: Path) -> Path:
    """DIR/ca.crt (created with its key on first use); returns its path."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = pki_dir / "ca.crt", pki_dir / "ca.key"
    if not cert_path.exists() or not key_path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(subject="podling-ca", public_key=key.public_key(), issuer=None, signer=key,
                      days=_CA_DAYS, ca=True, sans=[])
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def _sans(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(socket.gethostname()),
                                     x509.DNSName("kubernetes.default.svc"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        ip = ipaddress.ip_address(host)
        if not ip.is_unspecified and ip != ipaddress.ip_address("127.0.0.1"):
            names.append(x509.IPAddress(ip))
    except ValueError:
        if host not in ("localhost", socket.gethostname()):
            names.append(x509.DNSName(host))
    return names


def ensure_serving_cert(pki_dir: Path, *, host: str) -> tuple[Path, Path]:
    """(cert, key) for the API server, signed by the CA, valid for ``host`` and loopback."""
    ca_cert_path = ensure_ca(pki_dir)
    cert_path, key_path = pki_dir / "apiserver.crt", pki_dir / "apiserver.key"
    wanted = _sans(host)
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if cert.not_valid_after_utc - _now() > datetime.timedelta(days=30) and all(n in have for n in wanted):
            return cert_path, key_path
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(subject="podling-apiserver", public_key=key.public_key(), issuer=ca_cert.subject,
                  signer=ca_key, days=_SERVING_DAYS, ca=False, sans=wanted)
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(*, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def client_context(*, ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))
