"""PEM files of the state folder: private keys (PKCS#8, 0600) and certificates, read and checked."""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.errors import PKIError

__all__ = [
    "TLSKey",
    "issued_by",
    "load_cert",
    "load_private",
    "load_tls_key",
    "pem_cert",
    "pem_key",
    "read_file",
    "same_public",
]

_log = structlog.get_logger(__name__)

TLSKey = ec.EllipticCurvePrivateKey


def pem_key(key: TLSKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PKIError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(read_file(path))
    except ValueError:
        raise PKIError(f"{path} is not a PEM certificate") from None


def _check_private_mode(path: Path) -> None:
    with contextlib.suppress(OSError):
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            _log.warning("pki.key_file_readable_by_others", path=str(path))


def load_private(path: Path) -> object:
    _check_private_mode(path)
    try:
        return serialization.load_pem_private_key(read_file(path), password=None)
    except (ValueError, TypeError):
        raise PKIError(f"{path} is not an unencrypted PEM private key") from None


def load_tls_key(path: Path) -> TLSKey:
    key = load_private(path)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{path} is not an ECDSA private key")
    return key


def same_public(cert: x509.Certificate, key: TLSKey) -> bool:
    pub = cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        return False
    return pub.public_numbers() == key.public_key().public_numbers()


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
