"""Ed25519 signing keys of senders and of the broker (ICD §4, §9): `identities/<id>/signing.key`
(PKCS#8 PEM, 0600) and `keyid` (`<id>:<name>`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.errors import PKIError, PolicyError
from broker.identity.pem import load_private, pem_key, read_file
from broker.identity.state import StatePaths, write_private, write_public
from schemas.ids import BROKER_ID, KEY_NAME, PARTY, split_keyid

__all__ = [
    "BROKER_KEY_DAYS",
    "SIGNING_KEY_DAYS",
    "check_identity",
    "default_key_name",
    "free_key_name",
    "has_signing_key",
    "load_signing_key",
    "new_signing_key",
    "raw_public",
    "store_signing_key",
]

_log = structlog.get_logger(__name__)

SIGNING_KEY_DAYS = 365
BROKER_KEY_DAYS = 3650


def check_identity(ident: str, *, allow_broker: bool) -> None:
    if ident == BROKER_ID:
        if allow_broker:
            return
        raise PolicyError(f"{BROKER_ID!r} is reserved for the broker's own key")
    if not PARTY.matches(ident):
        raise PolicyError(f"id {ident!r} must match ^[a-z][a-z0-9-]{{2,62}}$")


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def store_signing_key(paths: StatePaths, ident: str, keyid: str, key: Ed25519PrivateKey) -> None:
    write_private(paths.signing_key(ident), pem_key(key))
    write_public(paths.keyid_file(ident), (keyid + "\n").encode("ascii"))
    _log.info("pki.signing_key_written", identity=ident, keyid=keyid)


def new_signing_key(paths: StatePaths, ident: str, key_name: str) -> tuple[str, bytes]:
    """Make an Ed25519 key for `ident` (a sender, or `broker`): `signing.key` (PKCS#8 PEM, 0600) and
    `keyid` (`<ident>:<key_name>`). Replaces the local key (rotation); returns (keyid, raw public key)."""
    check_identity(ident, allow_broker=True)
    if not KEY_NAME.matches(key_name):
        raise PolicyError(f"key name {key_name!r} must match ^[A-Za-z0-9._-]{{1,64}}$")
    keyid = f"{ident}:{key_name}"
    key = Ed25519PrivateKey.generate()
    store_signing_key(paths, ident, keyid, key)
    return keyid, raw_public(key)


def load_signing_key(paths: StatePaths, ident: str) -> tuple[str, Ed25519PrivateKey]:
    """(keyid, private key) of `ident`'s signing key; `load_signing_key(paths, "broker")` is the broker's."""
    check_identity(ident, allow_broker=True)
    keyid = read_file(paths.keyid_file(ident)).decode("ascii", "replace").strip()
    try:
        owner, _ = split_keyid(keyid)
    except ValueError as exc:
        raise PKIError(f"{paths.keyid_file(ident)}: {exc}") from None
    if owner != ident:
        raise PKIError(f"{paths.keyid_file(ident)}: key id {keyid!r} does not belong to {ident!r}")
    key = load_private(paths.signing_key(ident))
    if not isinstance(key, Ed25519PrivateKey):
        raise PKIError(f"{paths.signing_key(ident)} is not an Ed25519 private key")
    return keyid, key


def has_signing_key(paths: StatePaths, ident: str) -> bool:
    return paths.signing_key(ident).exists() and paths.keyid_file(ident).exists()


def default_key_name(now: datetime) -> str:
    return now.strftime("%Y-%m")


def free_key_name(base: str, ident: str, taken: Iterable[str]) -> str:
    used = set(taken)
    name, n = base, 1
    while f"{ident}:{name}" in used:
        n += 1
        name = f"{base}.{n}"
    return name
