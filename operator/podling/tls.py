"""Certificates and keys: the few X.509 helpers every podling component that serves TLS needs.

Neutral ground: the API server's PKI (``podling.apiserver.pki``: a CA and the server's
certificate signed by it) and each kubelet's self-signed serving certificate are both built
here, so neither component imports the other's package.

Invariants: keys are ECDSA P-256 written as unencrypted PKCS#8 PEM readable only by their
owner (0600); certificates are valid from five minutes ago (clock skew) and carry the
subject alternative names they are served under; a certificate is reused until it is within
30 days of expiry or lacks a name it should have, then re-issued.
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

RENEW_BEFORE = datetime.timedelta(days=30)
_LOOPBACK = ipaddress.ip_address("127.0.0.1")


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def issue(
    *, subject: str, public_key: ec.EllipticCurvePublicKey, issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey, days: int, ca: bool, sans: list[x509.GeneralName],
) -> x509.Certificate:
    """A certificate for ``subject``: a CA (``ca=True``), or a server certificate for ``sans``.

    ``issuer=None`` makes it self-signed (``signer`` is then the subject's own key).
    """
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - datetime.timedelta(minutes=5))
        .not_valid_after(now() + datetime.timedelta(days=days))
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


def serving_names(host: str) -> list[x509.GeneralName]:
    """The names a server listening on ``host`` is reached by: loopback, this machine's name, and ``host``."""
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(socket.gethostname()),
                                     x509.IPAddress(_LOOPBACK)]
    try:
        ip = ipaddress.ip_address(host)
        if not ip.is_unspecified and ip != _LOOPBACK:
            names.append(x509.IPAddress(ip))
    except ValueError:
        if host and host not in ("localhost", socket.gethostname()):
            names.append(x509.DNSName(host))
    return names


def is_current(cert_path: Path, key_path: Path, *, names: list[x509.GeneralName]) -> bool:
    """Whether the certificate exists with its key, is far from expiry, and names all of ``names``."""
    if not cert_path.exists() or not key_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return cert.not_valid_after_utc - now() > RENEW_BEFORE and all(n in have for n in names)


def ensure_self_signed(cert_dir: Path, *, name: str, host: str, days: int = 365) -> tuple[Path, Path]:
    """(cert, key) in ``cert_dir`` named ``NAME.crt``/``NAME.key``: self-signed, made once and reused."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = cert_dir / f"{name}.crt", cert_dir / f"{name}.key"
    names = serving_names(host)
    if not is_current(cert_path, key_path, names=names):
        key = new_key()
        write_key(key_path, key)
        write_cert(cert_path, issue(subject=name, public_key=key.public_key(), issuer=None, signer=key,
                                    days=days, ca=False, sans=names))
    return cert_path, key_path


def server_context(*, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
