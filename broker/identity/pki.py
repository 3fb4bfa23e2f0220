"""The dev PKI and identities of ICD §9: a certificate authority, TLS certificates, Ed25519 signing keys,
and the policy entries that go with them.

    init_ca                the dev CA (ECDSA P-256), pki/ca.crt + pki/ca.key (0600)
    ensure_server_cert     pki/server.crt + server.key: the gateway's (and NATS') TLS server certificate
    ensure_route_cert      pki/route.crt + route.key: NATS cluster routes (CN nats.route, server+client auth)
    issue_client_cert      identities/<id>/tls.crt + tls.key: mutual-TLS client certificate, CN = id
    new_signing_key        identities/<id>/signing.key (PKCS#8 PEM, 0600) + keyid
    new_sender             certificate + signing key + `[senders.<id>]` in policy.toml (or a new key)
    new_operator           certificate + `[operators.<id>]` in policy.toml
    revoke_key             sets `revoked_at` on a registered key
    default_policy         the base policy: broker section and countersigning key, three organisations
    ensure_defaults        everything `broker up` needs, creating only what is missing

ECDSA P-256 is used for every TLS key: every TLS stack and NATS accept it. Signing keys are Ed25519 (ICD §4).
What exists is reused and never overwritten: an identity made beforehand is honoured. A state folder may
hold an outside CA's certificate without its key (`pki/ca.crt` only); then nothing here can issue certificates
and each identity's `tls.crt`/`tls.key` must be put in place by hand. Private keys are written 0600 and never
logged.
Refusals are `PKIError` (keys, certificates, files) or `PolicyError` (ids, organisations, kinds, roles).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import ipaddress
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.clock import utcnow
from broker.errors import PKIError, PolicyError
from broker.identity.state import StatePaths, write_private, write_public
from broker.policy.model import (
    BROKER_SENDER,
    KEY_NAME_RE,
    PARTY_RE,
    Operator,
    Organisation,
    Policy,
    Sender,
    SigningKey,
    load_policy,
    parse_policy,
    render_policy,
    split_keyid,
    write_policy,
)
from broker.rules.labels import Clearance
from schemas.kinds import KINDS

__all__ = [
    "DEFAULT_BROKER_NAME",
    "DEFAULT_OPERATORS",
    "DEFAULT_ORGANISATIONS",
    "DEFAULT_SENDERS",
    "DEFAULT_SYSTEM_HIGH",
    "ca_available",
    "default_policy",
    "ensure_defaults",
    "ensure_route_cert",
    "ensure_server_cert",
    "init_ca",
    "issue_client_cert",
    "load_ca",
    "load_signing_key",
    "new_operator",
    "new_sender",
    "new_signing_key",
    "revoke_key",
    "route_cert_paths",
]

_log = structlog.get_logger(__name__)

DEFAULT_BROKER_NAME = "local"
DEFAULT_SYSTEM_HIGH = "NATO:SECRET"
#: ICD §9: organisation -> clearance; every kind on each one's need-to-know list.
DEFAULT_ORGANISATIONS: Mapping[str, str] = MappingProxyType(
    {"NSATU": "NATO:SECRET", "EUMAM": "EU:SECRET", "UDCG": "NATO:CONFIDENTIAL"}
)
_ANY = ("status.update", "lesson.learned", "industry.exchange")  # ICD §5: typical originator "any"
_RIGHTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "NSATU": ("status.update", "delivery.status", "training.request", *_ANY[1:]),
        "EUMAM": ("status.update", "training.offer", *_ANY[1:]),
        "UDCG": ("status.update", "capability.pledge", *_ANY[1:]),
    }
)
#: ICD §9: the liaison senders, plus the adapters (which publish native messages), with the same rights.
DEFAULT_SENDERS: Mapping[str, tuple[str, tuple[str, ...]]] = MappingProxyType(
    {
        f"{org.lower()}-{role}": (org, _RIGHTS[org])
        for role in ("liaison", "adapter")
        for org in ("NSATU", "EUMAM", "UDCG")
    }
)
#: ICD §9: operator id -> (organisation, clearance).
DEFAULT_OPERATORS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {"duty-officer": ("NSATU", "NATO:SECRET")}
)

CA_DAYS = 3650
SERVER_DAYS = 825
CLIENT_DAYS = 365
SIGNING_KEY_DAYS = 365
BROKER_KEY_DAYS = 3650
_BACKDATE = timedelta(minutes=5)  # certificates start a little in the past, for clock skew

TLSKey = ec.EllipticCurvePrivateKey
_K = TypeVar("_K")
_V = TypeVar("_V")


# --------------------------------------------------------------------------------------------------
# Files


def _pem_key(key: TLSKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PKIError(f"cannot read {path}: {exc.strerror or exc}") from None


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError:
        raise PKIError(f"{path} is not a PEM certificate") from None


def _check_private_mode(path: Path) -> None:
    with contextlib.suppress(OSError):
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            _log.warning("pki.key_file_readable_by_others", path=str(path))


def _load_private(path: Path) -> object:
    _check_private_mode(path)
    try:
        return serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError):
        raise PKIError(f"{path} is not an unencrypted PEM private key") from None


def _load_tls_key(path: Path) -> TLSKey:
    key = _load_private(path)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{path} is not an ECDSA private key")
    return key


def _same_public(cert: x509.Certificate, key: TLSKey) -> bool:
    pub = cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        return False
    return pub.public_numbers() == key.public_key().public_numbers()


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@contextlib.contextmanager
def _policy_lock(paths: StatePaths) -> Iterator[None]:
    """Serialise read-modify-write of policy.toml between processes sharing the state folder."""
    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.root / ".policy.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------------------------------
# Certificate authority and TLS certificates


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
    write_private(paths.ca_key, _pem_key(key), overwrite=False)
    write_public(paths.ca_crt, _pem_cert(cert), overwrite=False)
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
    cert = _load_cert(crt_path)
    key = _load_tls_key(key_path)
    if not _same_public(cert, key):
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
        cert = _load_cert(crt)
        ok = _same_public(cert, _load_tls_key(key)) and _issued_by(cert, _load_cert(ca_crt))
    except PKIError:
        return False
    return ok and cert.not_valid_after_utc > utcnow()


def _existing_or_new_tls_key(path: Path) -> tuple[TLSKey, bool]:
    if path.exists():
        with contextlib.suppress(PKIError):
            return _load_tls_key(path), False
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
        write_private(paths.server_key, _pem_key(key))
    write_public(paths.server_crt, _pem_cert(cert))
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
        cert = _load_cert(crt)
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
        write_private(key_path, _pem_key(key))
    write_public(crt, _pem_cert(cert))
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
    _check_identity(ident, allow_broker=False)
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
        write_private(paths.tls_key(ident), _pem_key(key))
    write_public(paths.tls_crt(ident), _pem_cert(cert))
    _log.info("pki.client_cert_issued", identity=ident, not_after=end.isoformat())
    return cert


def _ensure_client_cert(paths: StatePaths, ident: str, created: list[str], *, renew_expired: bool) -> None:
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
            cert = _load_cert(crt)
            if _issued_by(cert, _load_cert(paths.ca_crt)) and _same_public(cert, _load_tls_key(key)):
                return  # ours and a pair, only expired: honoured
    had_key = key.exists()
    issue_client_cert(paths, ident, reuse_key=True)
    created.append(paths.relative(crt))
    if not had_key:
        created.append(paths.relative(key))


# --------------------------------------------------------------------------------------------------
# Signing keys


def _check_identity(ident: str, *, allow_broker: bool) -> None:
    if ident == BROKER_SENDER:
        if allow_broker:
            return
        raise PolicyError(f"{BROKER_SENDER!r} is reserved for the broker's own key")
    if not PARTY_RE.fullmatch(ident):
        raise PolicyError(f"id {ident!r} must match ^[a-z][a-z0-9-]{{2,62}}$")


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _store_signing_key(paths: StatePaths, ident: str, keyid: str, key: Ed25519PrivateKey) -> None:
    write_private(paths.signing_key(ident), _pem_key(key))
    write_public(paths.keyid_file(ident), (keyid + "\n").encode("ascii"))
    _log.info("pki.signing_key_written", identity=ident, keyid=keyid)


def new_signing_key(paths: StatePaths, ident: str, key_name: str) -> tuple[str, bytes]:
    """Make an Ed25519 key for `ident` (a sender, or `broker`): `signing.key` (PKCS#8 PEM, 0600) and
    `keyid` (`<ident>:<key_name>`). Replaces the local key (rotation); returns (keyid, raw public key)."""
    _check_identity(ident, allow_broker=True)
    if not KEY_NAME_RE.fullmatch(key_name):
        raise PolicyError(f"key name {key_name!r} must match ^[A-Za-z0-9._-]{{1,64}}$")
    keyid = f"{ident}:{key_name}"
    key = Ed25519PrivateKey.generate()
    _store_signing_key(paths, ident, keyid, key)
    return keyid, _raw_public(key)


def load_signing_key(paths: StatePaths, ident: str) -> tuple[str, Ed25519PrivateKey]:
    """(keyid, private key) of `ident`'s signing key; `load_signing_key(paths, "broker")` is the broker's."""
    _check_identity(ident, allow_broker=True)
    keyid = _read(paths.keyid_file(ident)).decode("ascii", "replace").strip()
    try:
        owner, _ = split_keyid(keyid)
    except ValueError as exc:
        raise PKIError(f"{paths.keyid_file(ident)}: {exc}") from None
    if owner != ident:
        raise PKIError(f"{paths.keyid_file(ident)}: key id {keyid!r} does not belong to {ident!r}")
    key = _load_private(paths.signing_key(ident))
    if not isinstance(key, Ed25519PrivateKey):
        raise PKIError(f"{paths.signing_key(ident)} is not an Ed25519 private key")
    return keyid, key


def _has_signing_key(paths: StatePaths, ident: str) -> bool:
    return paths.signing_key(ident).exists() and paths.keyid_file(ident).exists()


def _now() -> datetime:
    return utcnow().replace(microsecond=0)


def _registered(public: bytes, now: datetime, days: int, keyid: str) -> SigningKey:
    return SigningKey(keyid, public, now, now + timedelta(days=days))


def _default_key_name(now: datetime) -> str:
    return now.strftime("%Y-%m")


def _free_key_name(base: str, ident: str, taken: Iterable[str]) -> str:
    used = set(taken)
    name, n = base, 1
    while f"{ident}:{name}" in used:
        n += 1
        name = f"{base}.{n}"
    return name


# --------------------------------------------------------------------------------------------------
# Policy edits


def _replace_map(m: Mapping[_K, _V], key: _K, value: _V) -> Mapping[_K, _V]:
    d = dict(m)
    d[key] = value
    return MappingProxyType(d)


def _check(paths: StatePaths, policy: Policy) -> None:
    parse_policy(render_policy(policy), str(paths.policy))


def _policy_error(paths: StatePaths, message: str) -> PolicyError:
    return PolicyError(message, path=str(paths.policy))


def _unknown_org(paths: StatePaths, policy: Policy, org: str) -> PolicyError:
    known = ", ".join(sorted(policy.organisations))
    return _policy_error(paths, f"unknown organisation {org!r} (known: {known})")


def _check_kinds(paths: StatePaths, kinds: Iterable[str]) -> frozenset[str]:
    listed = list(kinds)
    for k in listed:
        if k not in KINDS:
            raise _policy_error(paths, f"unknown kind {k!r} (registered: {', '.join(KINDS)})")
    if len(set(listed)) != len(listed):
        raise _policy_error(paths, "a kind is listed twice")
    return frozenset(listed)


def default_policy(paths: StatePaths, name: str = DEFAULT_BROKER_NAME) -> Policy:
    """The base policy of ICD §9: system high NATO:SECRET, the three organisations with every kind on
    their need-to-know, default freshness and rate limits, and the broker's countersigning key
    `broker:<name>` (made at identities/broker/ if missing, honoured if there). No senders or operators:
    `ensure_defaults` adds those. Nothing is written to policy.toml."""
    if not KEY_NAME_RE.fullmatch(name):
        raise PolicyError(f"broker name {name!r} must match ^[A-Za-z0-9._-]{{1,64}}$")
    now = _now()
    if _has_signing_key(paths, BROKER_SENDER):
        keyid, key = load_signing_key(paths, BROKER_SENDER)
        name = split_keyid(keyid)[1]
        public = _raw_public(key)
    else:
        keyid, public = new_signing_key(paths, BROKER_SENDER, name)
    orgs = {
        code: Organisation(code, Clearance.parse(clearance), frozenset(KINDS))
        for code, clearance in DEFAULT_ORGANISATIONS.items()
    }
    return Policy(
        name=name,
        system_high=Clearance.parse(DEFAULT_SYSTEM_HIGH),
        max_age_s=600.0,
        max_skew_s=120.0,
        organisations=MappingProxyType(orgs),
        senders=MappingProxyType({}),
        operators=MappingProxyType({}),
        broker_keys=MappingProxyType({keyid: _registered(public, now, BROKER_KEY_DAYS, keyid)}),
        source=str(paths.policy),
    )


def _ensure_base(paths: StatePaths, name: str, created: list[str]) -> Policy:
    """CA, server certificate, broker key, and the policy (loaded, or the base policy if missing).
    The policy is returned, not written."""
    if init_ca(paths):
        created += [paths.relative(paths.ca_crt), paths.relative(paths.ca_key)]
    had_server_key = paths.server_key.exists()
    if ensure_server_cert(paths):
        created.append(paths.relative(paths.server_crt))
        if not had_server_key:
            created.append(paths.relative(paths.server_key))
    had_broker_key = _has_signing_key(paths, BROKER_SENDER)
    if not paths.policy.exists():
        policy = default_policy(paths, name)
        if not had_broker_key:
            created.append(paths.relative(paths.broker_signing_key))
        return policy
    policy = load_policy(paths.policy)
    if had_broker_key:
        keyid, key = load_signing_key(paths, BROKER_SENDER)
        registered = policy.broker_keys.get(keyid)
        if keyid != policy.broker_keyid or registered is None or registered.public_key != _raw_public(key):
            raise PKIError(
                f"{paths.broker_signing_key} ({keyid}) is not the key {paths.policy} registers as "
                f"{policy.broker_keyid}; restore the matching key, or remove the entry to register this one"
            )
        return policy
    # the policy names a broker key whose private half is gone: make a new one and register it
    keyid, public = new_signing_key(paths, BROKER_SENDER, policy.name)
    created.append(paths.relative(paths.broker_signing_key))
    return dataclasses.replace(
        policy, broker_keys=MappingProxyType({keyid: _registered(public, _now(), BROKER_KEY_DAYS, keyid)})
    )


def _save(paths: StatePaths, policy: Policy, before: Policy | None, created: list[str]) -> Policy:
    if before is not None and policy == before and paths.policy.exists():
        return before
    existed = paths.policy.exists()
    written = write_policy(paths.policy, policy)
    if not existed:
        created.append(paths.relative(paths.policy))
    return written


@dataclass(frozen=True, slots=True)
class _Loaded:
    policy: Policy
    on_disk: Policy | None  # None when policy.toml did not exist


def _load_for_edit(paths: StatePaths, created: list[str]) -> _Loaded:
    on_disk = load_policy(paths.policy) if paths.policy.exists() else None
    policy = _ensure_base(paths, on_disk.name if on_disk else DEFAULT_BROKER_NAME, created)
    return _Loaded(policy, on_disk)


def new_sender(
    paths: StatePaths,
    ident: str,
    org: str,
    publishes: Iterable[str],
    *,
    key_name: str | None = None,
    validity_days: int = SIGNING_KEY_DAYS,
) -> Policy:
    """Make sender `ident` of `org` allowed `publishes`: its TLS client certificate, an Ed25519 signing key
    `<ident>:<key_name>` (default: the current UTC `YYYY-MM`) valid for `validity_days`, and its entry in
    policy.toml; return the policy as written.

    For a sender that exists already this is key rotation: the new key is added (older keys stay registered
    until they expire or are revoked), `publishes` replaces its rights, and the local signing key is replaced.
    Refused (PolicyError) when the organisation or a kind is unknown, the id is an operator, the existing
    sender belongs to another organisation, or the key id is registered already. A missing state folder or
    policy is created first (CA, broker key, base policy without the default identities)."""
    _check_identity(ident, allow_broker=False)
    kinds = _check_kinds(paths, publishes)
    now = _now()
    name = key_name if key_name is not None else _default_key_name(now)
    if not KEY_NAME_RE.fullmatch(name):
        raise PolicyError(f"key name {name!r} must match ^[A-Za-z0-9._-]{{1,64}}$")
    if validity_days <= 0:
        raise PolicyError("validity_days must be positive")
    keyid = f"{ident}:{name}"
    created: list[str] = []
    with _policy_lock(paths):
        loaded = _load_for_edit(paths, created)
        policy = loaded.policy
        if org not in policy.organisations:
            raise _unknown_org(paths, policy, org)
        if ident in policy.operators:
            raise _policy_error(paths, f"{ident!r} is an operator already: one id has one role")
        existing = policy.senders.get(ident)
        if existing is not None and existing.organisation != org:
            raise _policy_error(paths, f"sender {ident!r} belongs to {existing.organisation}, not {org}")
        if existing is not None and keyid in existing.keys:
            raise _policy_error(paths, f"key {keyid!r} is registered already; choose another key name")
        key = Ed25519PrivateKey.generate()
        registered = _registered(_raw_public(key), now, validity_days, keyid)
        if existing is None:
            sender = Sender(ident, org, kinds, MappingProxyType({keyid: registered}))
        else:
            sender = dataclasses.replace(
                existing, publishes=kinds, keys=_replace_map(existing.keys, keyid, registered)
            )
        updated = dataclasses.replace(policy, senders=_replace_map(policy.senders, ident, sender))
        _check(paths, updated)  # refuse before anything is written
        _ensure_client_cert(paths, ident, created, renew_expired=True)
        _store_signing_key(paths, ident, keyid, key)
        written = _save(paths, updated, loaded.on_disk, created)
    _log.info("pki.sender_made", sender=ident, organisation=org, keyid=keyid, rotation=existing is not None)
    return written


def new_operator(paths: StatePaths, ident: str, org: str, clearance: str | Clearance) -> Policy:
    """Make operator `ident` of `org` with `clearance` (`POLICY:LEVEL[:CAVEAT+CAVEAT]`): its TLS client
    certificate (a sound one already under identities/<ident>/ is kept) and its entry in policy.toml; return
    the policy as written. Refused (PolicyError) when the organisation is unknown, the clearance does not
    parse, or the id exists already in either role."""
    _check_identity(ident, allow_broker=False)
    if isinstance(clearance, str):
        try:
            clearance = Clearance.parse(clearance)
        except ValueError as exc:
            raise _policy_error(paths, str(exc)) from None
    created: list[str] = []
    with _policy_lock(paths):
        loaded = _load_for_edit(paths, created)
        policy = loaded.policy
        if org not in policy.organisations:
            raise _unknown_org(paths, policy, org)
        if ident in policy.senders:
            raise _policy_error(paths, f"{ident!r} is a sender already: one id has one role")
        if ident in policy.operators:
            raise _policy_error(paths, f"operator {ident!r} exists already")
        updated = dataclasses.replace(
            policy, operators=_replace_map(policy.operators, ident, Operator(ident, org, clearance))
        )
        _check(paths, updated)
        _ensure_client_cert(paths, ident, created, renew_expired=True)
        written = _save(paths, updated, loaded.on_disk, created)
    _log.info("pki.operator_made", operator=ident, organisation=org, clearance=str(clearance))
    return written


def revoke_key(paths: StatePaths, keyid: str, *, at: datetime | None = None) -> Policy:
    """Set `revoked_at` (default: now) on a sender's registered key; return the policy as written."""
    try:
        owner, _ = split_keyid(keyid)
    except ValueError as exc:
        raise _policy_error(paths, str(exc)) from None
    when = at if at is not None else _now()
    if when.tzinfo is None:
        raise PolicyError("revocation time must be timezone-aware")
    with _policy_lock(paths):
        policy = load_policy(paths.policy)
        sender = policy.senders.get(owner)
        if sender is None or keyid not in sender.keys:
            raise _policy_error(paths, f"no sender key {keyid!r} is registered")
        key = dataclasses.replace(sender.keys[keyid], revoked_at=when)
        sender = dataclasses.replace(sender, keys=_replace_map(sender.keys, keyid, key))
        updated = dataclasses.replace(policy, senders=_replace_map(policy.senders, owner, sender))
        written = write_policy(paths.policy, updated)
    _log.info("pki.key_revoked", keyid=keyid, at=when.isoformat())
    return written


# --------------------------------------------------------------------------------------------------
# Defaults for `broker up`


def _ensure_default_sender(
    paths: StatePaths, policy: Policy, ident: str, org: str, rights: tuple[str, ...], created: list[str]
) -> Policy:
    if ident in policy.operators:
        _log.warning("pki.default_skipped", identity=ident, reason="is an operator in the policy")
        return policy
    sender = policy.senders.get(ident)
    if sender is None and org not in policy.organisations:
        _log.warning("pki.default_skipped", identity=ident, reason=f"organisation {org} not in the policy")
        return policy
    _ensure_client_cert(paths, ident, created, renew_expired=False)
    now = _now()
    if _has_signing_key(paths, ident):
        keyid, key = load_signing_key(paths, ident)
        public = _raw_public(key)
        if sender is not None and keyid in sender.keys:
            if sender.keys[keyid].public_key != public:
                raise PKIError(
                    f"{paths.signing_key(ident)} is not the key {paths.policy} registers as {keyid}; "
                    "restore the matching key or remove that key from the policy"
                )
            return policy
    else:
        taken = sender.keys if sender is not None else ()
        keyid = f"{ident}:{_free_key_name(_default_key_name(now), ident, taken)}"
        new_key = Ed25519PrivateKey.generate()
        public = _raw_public(new_key)
        _store_signing_key(paths, ident, keyid, new_key)
        created.append(paths.relative(paths.signing_key(ident)))
    registered = _registered(public, now, SIGNING_KEY_DAYS, keyid)
    if sender is None:
        sender = Sender(ident, org, frozenset(rights), MappingProxyType({keyid: registered}))
        created.append(f"{paths.relative(paths.policy)}: sender {ident}")
    else:
        sender = dataclasses.replace(sender, keys=_replace_map(sender.keys, keyid, registered))
        created.append(f"{paths.relative(paths.policy)}: key {keyid}")
    return dataclasses.replace(policy, senders=_replace_map(policy.senders, ident, sender))


def _ensure_default_operator(
    paths: StatePaths, policy: Policy, ident: str, org: str, clearance: str, created: list[str]
) -> Policy:
    if ident in policy.senders:
        _log.warning("pki.default_skipped", identity=ident, reason="is a sender in the policy")
        return policy
    if ident not in policy.operators:
        if org not in policy.organisations:
            _log.warning("pki.default_skipped", identity=ident, reason=f"no organisation {org}")
            return policy
        operator = Operator(ident, org, Clearance.parse(clearance))
        policy = dataclasses.replace(policy, operators=_replace_map(policy.operators, ident, operator))
        created.append(f"{paths.relative(paths.policy)}: operator {ident}")
    _ensure_client_cert(paths, ident, created, renew_expired=False)
    return policy


def ensure_defaults(paths: StatePaths, *, name: str = DEFAULT_BROKER_NAME) -> list[str]:
    """Make what `broker up` needs and is missing; return what it made (paths relative to the state folder,
    and `policy.toml: sender X` / `operator X` / `key K` for policy entries). Idempotent.

    The CA, the server certificate, the broker's countersigning key `broker:<name>` (an existing key or
    policy keeps its own name), policy.toml with ICD §9's default policy, the liaison senders
    (`nsatu-liaison`, `eumam-liaison`, `udcg-liaison`), the adapter senders (`nsatu-adapter`, `eumam-adapter`,
    `udcg-adapter`, same rights as their organisation's liaison) and the operator `duty-officer`.

    Whatever exists is honoured and never overwritten: policy entries keep their organisation and rights,
    identity files made beforehand are registered as they are (a signing key found under identities/ but
    not in the policy is added to it). A certificate our CA did not issue is reissued with the same key. A
    local signing key that contradicts the policy's key of the same id is refused (PKIError)."""
    created: list[str] = []
    with _policy_lock(paths):
        on_disk = load_policy(paths.policy) if paths.policy.exists() else None
        policy = _ensure_base(paths, on_disk.name if on_disk else name, created)
        for ident, (org, rights) in DEFAULT_SENDERS.items():
            policy = _ensure_default_sender(paths, policy, ident, org, rights, created)
        for ident, (org, clearance) in DEFAULT_OPERATORS.items():
            policy = _ensure_default_operator(paths, policy, ident, org, clearance, created)
        _save(paths, policy, on_disk, created)
    if created:
        _log.info("pki.defaults_made", created=created)
    return created
