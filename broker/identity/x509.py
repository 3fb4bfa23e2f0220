"""The dev certificate authority and every TLS certificate the broker issues with it: the gateway's
(and NATS') server certificate, the cluster route certificate, the mutual-TLS client certificates of
senders and operators, and the NATS service identities (ICD §9, docs/nats-security.md). One issuer
(`_leaf`) makes them all.

ECDSA P-256 is used for every TLS key: every TLS stack and NATS accept it. What exists is reused and
never overwritten; a state folder may hold an outside CA's certificate without its key (`pki/ca.crt`
only): then nothing here can issue certificates and each certificate must be put in place by hand.
"""

from __future__ import annotations

import contextlib
import ipaddress
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.clock import utcnow
from broker.errors import PKIError
from broker.identity.keys import check_identity
from broker.identity.pem import TLSKey, issued_by, load_cert, load_tls_key, pem_cert, pem_key, same_public
from broker.identity.state import StatePaths, write_private, write_public

__all__ = [
    "CA_DAYS",
    "CLIENT_DAYS",
    "ROUTE_CN",
    "SERVER_DAYS",
    "ca_available",
    "ensure_client_cert",
    "ensure_route_cert",
    "ensure_server_cert",
    "init_ca",
    "issue_client_cert",
    "issue_service_cert",
    "load_ca",
    "route_cert_paths",
    "service_cert_sound",
]

_log = structlog.get_logger(__name__)

CA_DAYS = 3650
SERVER_DAYS = 825
CLIENT_DAYS = 365
_BACKDATE = timedelta(minutes=5)  # certificates start a little in the past, for clock skew




def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def init_ca(paths: StatePaths, *, days: int = CA_DAYS) -> bool:
    """Create the dev CA unless `pki/ca.crt` exists; True if it created one.

    An existing `ca.crt` with its `ca.key` is checked to be a pair; `ca.crt` alone is an outside CA
    and is left as it is. A `ca.key` without `ca.crt` is refused rather than overwritten."""
    if paths.ca_crt.exists():
        if paths.ca_key.exists():
            load_ca(paths)  # raises if they are not a pair
        return False
    if paths.ca_key.exists():
        raise PKIError(f"{paths.ca_key} exists without {paths.ca_crt}: restore it or move the key away")
    key = ec.generate_private_key(ec.SECP256R1())
    now = utcnow()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Coordination broker (development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Coordination broker dev CA"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(paths.ca_key, pem_key(key), overwrite=False)
    write_public(paths.ca_crt, pem_cert(cert), overwrite=False)
    _log.info("pki.ca_created", path=str(paths.ca_crt))
    return True


def ca_available(paths: StatePaths) -> bool:
    """True when this state folder can issue certificates (it holds the CA's key)."""
    return paths.ca_crt.exists() and paths.ca_key.exists()


def load_ca(
    paths: StatePaths, *, ca_crt_path: Path | None = None, ca_key_path: Path | None = None
) -> tuple[x509.Certificate, TLSKey]:
    """The CA certificate and key (by default the state folder's), checked to be a pair."""
    crt_path = ca_crt_path or paths.ca_crt
    key_path = ca_key_path or paths.ca_key
    if not key_path.exists():
        raise PKIError(
            f"{key_path} is missing: this state folder cannot issue certificates "
            "(with an outside CA, put each identity's tls.crt and tls.key in place yourself)"
        )
    cert = load_cert(crt_path)
    key = load_tls_key(key_path)
    if not same_public(cert, key):
        raise PKIError(f"{crt_path} and {key_path} are not a pair")
    return cert, key


def _leaf(
    subject: str,
    public: ec.EllipticCurvePublicKey,
    ca: tuple[x509.Certificate, TLSKey],
    not_before: datetime,
    not_after: datetime,
    eku: x509.ObjectIdentifier,
    san: list[x509.GeneralName] | None = None,
    *,
    also: tuple[x509.ObjectIdentifier, ...] = (),
) -> x509.Certificate:
    ca_cert, ca_key = ca
    usages = [eku, *also]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=ExtendedKeyUsageOID.SERVER_AUTH in usages,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _pair_ok(crt: Path, key: Path, ca_crt: Path) -> bool:
    """Both files exist, are a pair, and the certificate was issued by `ca_crt` and has not expired."""
    if not (crt.exists() and key.exists() and ca_crt.exists()):
        return False
    try:
        cert = load_cert(crt)
        ok = same_public(cert, load_tls_key(key)) and issued_by(cert, load_cert(ca_crt))
    except PKIError:
        return False
    return ok and cert.not_valid_after_utc > utcnow()


def _existing_or_new_tls_key(path: Path) -> tuple[TLSKey, bool]:
    if path.exists():
        with contextlib.suppress(PKIError):
            return load_tls_key(path), False
    return ec.generate_private_key(ec.SECP256R1()), True



def _loopback_san() -> list[x509.GeneralName]:
    """What the dev server and route certificates name: this host's loopback, by name and address."""
    return [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]

def ensure_server_cert(paths: StatePaths, *, days: int = SERVER_DAYS) -> bool:
    """Make `pki/server.crt`/`server.key` (CN and SAN localhost, SAN 127.0.0.1 and ::1) unless a sound
    pair issued by the CA is there. An existing key is kept; True if it wrote a certificate."""
    if _pair_ok(paths.server_crt, paths.server_key, paths.ca_crt):
        return False
    if not ca_available(paths):
        if paths.server_crt.exists() and paths.server_key.exists():
            return False  # an outside CA's certificate: honoured as it is
        raise PKIError(f"{paths.server_crt} is missing and this state folder has no CA key to issue it")
    ca = load_ca(paths)
    key, fresh = _existing_or_new_tls_key(paths.server_key)
    now = utcnow()
    san = _loopback_san()
    cert = _leaf(
        "localhost", key.public_key(), ca, now - _BACKDATE, now + timedelta(days=days),
        ExtendedKeyUsageOID.SERVER_AUTH, san,
    )  # fmt: skip
    if fresh:
        write_private(paths.server_key, pem_key(key))
    write_public(paths.server_crt, pem_cert(cert))
    _log.info("pki.server_cert_issued", path=str(paths.server_crt))
    return True


ROUTE_CN = "nats.route"


def route_cert_paths(paths: StatePaths) -> tuple[Path, Path]:
    """(certificate, key) of the NATS cluster route identity: `pki/route.crt`, `pki/route.key` (0600)."""
    return paths.pki_dir / "route.crt", paths.pki_dir / "route.key"


def _route_cert_ok(crt: Path, key: Path, ca_crt: Path) -> bool:
    if not _pair_ok(crt, key, ca_crt):
        return False
    try:
        cert = load_cert(crt)
        ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except (PKIError, x509.ExtensionNotFound):
        return False
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return cns == [ROUTE_CN] and {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= ekus


def ensure_route_cert(
    paths: StatePaths,
    *,
    days: int = SERVER_DAYS,
    ca_crt_path: Path | None = None,
    ca_key_path: Path | None = None,
) -> bool:
    """Make `pki/route.crt`/`route.key` unless a sound pair issued by the CA is there; True if it wrote one.

    Cluster nodes dial each other's route port, so each node is TLS server and client at once: the
    certificate has EKU serverAuth and clientAuth, CN `nats.route` (the route user: a route with any
    other certificate of the CA is refused) and SAN localhost, 127.0.0.1, ::1. An existing key is kept.
    `ca_crt_path`/`ca_key_path` sign with another CA (tests)."""
    crt, key_path = route_cert_paths(paths)
    foreign = ca_crt_path is not None
    if not foreign and _route_cert_ok(crt, key_path, paths.ca_crt):
        return False
    if not foreign and not ca_available(paths):
        if crt.exists() and key_path.exists():
            return False  # an outside CA's certificate: honoured as it is
        raise PKIError(f"{crt} is missing and this state folder has no CA key to issue it")
    ca = load_ca(paths, ca_crt_path=ca_crt_path, ca_key_path=ca_key_path)
    key, fresh = _existing_or_new_tls_key(key_path)
    now = utcnow()
    san = _loopback_san()
    cert = _leaf(
        ROUTE_CN, key.public_key(), ca, now - _BACKDATE, now + timedelta(days=days),
        ExtendedKeyUsageOID.SERVER_AUTH, san, also=(ExtendedKeyUsageOID.CLIENT_AUTH,),
    )  # fmt: skip
    if fresh:
        write_private(key_path, pem_key(key))
    write_public(crt, pem_cert(cert))
    _log.info("pki.route_cert_issued", path=str(crt))
    return True


def issue_client_cert(
    paths: StatePaths,
    ident: str,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    days: int = CLIENT_DAYS,
    ca_crt_path: Path | None = None,
    ca_key_path: Path | None = None,
    reuse_key: bool = False,
) -> x509.Certificate:
    """Issue `identities/<ident>/tls.crt` (CN = ident, EKU clientAuth) and write its key `tls.key` (0600).

    The validity window defaults to now (less 5 minutes) .. now + `days`; pass `not_before`/`not_after`
    (aware) for another, e.g. an expired certificate in tests. `ca_crt_path`/`ca_key_path` sign with
    another CA than the state folder's. A fresh key is made unless `reuse_key` and a key is there."""
    check_identity(ident, allow_broker=False)
    now = utcnow()
    start = not_before if not_before is not None else now - _BACKDATE
    end = not_after if not_after is not None else now + timedelta(days=days)
    if start.tzinfo is None or end.tzinfo is None:
        raise PKIError("not_before and not_after must be timezone-aware")
    if not start < end:
        raise PKIError("not_before must be before not_after")
    ca = load_ca(paths, ca_crt_path=ca_crt_path, ca_key_path=ca_key_path)
    if reuse_key:
        key, fresh = _existing_or_new_tls_key(paths.tls_key(ident))
    else:
        key, fresh = ec.generate_private_key(ec.SECP256R1()), True
    cert = _leaf(ident, key.public_key(), ca, start, end, ExtendedKeyUsageOID.CLIENT_AUTH)
    if fresh:
        write_private(paths.tls_key(ident), pem_key(key))
    write_public(paths.tls_crt(ident), pem_cert(cert))
    _log.info("pki.client_cert_issued", identity=ident, not_after=end.isoformat())
    return cert


def ensure_client_cert(paths: StatePaths, ident: str, created: list[str], *, renew_expired: bool) -> None:
    """Keep a sound certificate; issue a missing one; reissue (same key) one our CA did not issue, and an
    expired one when `renew_expired` (`ensure_defaults` leaves an expired one alone: a test may want it)."""
    crt, key = paths.tls_crt(ident), paths.tls_key(ident)
    if _pair_ok(crt, key, paths.ca_crt):
        return
    if not ca_available(paths):
        if crt.exists() and key.exists():
            return  # an outside CA's certificate: honoured as it is
        raise PKIError(f"{crt} is missing and this state folder has no CA key to issue it")
    if crt.exists() and key.exists() and not renew_expired:
        with contextlib.suppress(PKIError):
            cert = load_cert(crt)
            if issued_by(cert, load_cert(paths.ca_crt)) and same_public(cert, load_tls_key(key)):
                return  # ours and a pair, only expired: honoured
    had_key = key.exists()
    issue_client_cert(paths, ident, reuse_key=True)
    created.append(paths.relative(crt))
    if not had_key:
        created.append(paths.relative(key))




def service_cert_sound(crt: Path, key: Path, ca: x509.Certificate, cn: str) -> bool:
    """A service identity's pair is there, ours, a pair, with exactly the subject CN `cn`, and current."""
    try:
        cert, k = load_cert(crt), load_tls_key(key)
    except PKIError:
        return False
    if not (same_public(cert, k) and issued_by(cert, ca)):
        return False
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return cns == [cn] and cert.not_valid_after_utc > utcnow()


def issue_service_cert(
    paths: StatePaths,
    crt: Path,
    key_path: Path,
    cn: str,
    *,
    days: int = CLIENT_DAYS,
    ca_crt_path: Path | None = None,
    ca_key_path: Path | None = None,
) -> x509.Certificate:
    """A service's client certificate (CN `cn`, EKU clientAuth) at `crt`, keeping an existing key at
    `key_path` (a new one is written 0600). `ca_crt_path`/`ca_key_path` sign with another CA (tests)."""
    ca = load_ca(paths, ca_crt_path=ca_crt_path, ca_key_path=ca_key_path)
    key, fresh = _existing_or_new_tls_key(key_path)
    now = utcnow()
    start, end = now - _BACKDATE, now + timedelta(days=days)
    cert = _leaf(cn, key.public_key(), ca, start, end, ExtendedKeyUsageOID.CLIENT_AUTH)
    if fresh:
        write_private(key_path, pem_key(key))
    write_public(crt, pem_cert(cert))
    return cert
