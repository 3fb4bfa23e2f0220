"""The golden vectors' fixed world: their "now", test keys from fixed seeds, and the policy they are
judged by (broker/contract/vectors.py)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from types import MappingProxyType

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.policy.defaults import DEFAULT_ORGANISATIONS, DEFAULT_SENDERS
from broker.policy.model import Operator, Organisation, Policy, Sender, SigningKey
from schemas.clearance import Clearance
from schemas.kinds import KINDS

NOW = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
BROKER_NAME = "vectors"
_ENC = msgspec.json.Encoder()
_T0 = datetime(2026, 1, 1, tzinfo=UTC)
_T_END = datetime(2030, 1, 1, tzinfo=UTC)
#: keyid -> (not_before, not_after, revoked_at)
_KEYS: dict[str, tuple[datetime, datetime, datetime | None]] = {
    "broker:vectors": (_T0, _T_END, None),
    "nsatu-liaison:v1": (_T0, _T_END, None),
    "nsatu-liaison:revoked": (_T0, _T_END, datetime(2026, 6, 1, tzinfo=UTC)),
    "nsatu-liaison:expired": (datetime(2025, 1, 1, tzinfo=UTC), _T0, None),
    "eumam-liaison:v1": (_T0, _T_END, None),
    "udcg-liaison:v1": (_T0, _T_END, None),
}
_UNREGISTERED = "nsatu-liaison:unregistered"
MAX_BODY_BYTES = 4096
RATE_BURST = 10


def seed_key(keyid: str) -> Ed25519PrivateKey:
    """The test key of `keyid`: its 32-byte seed is SHA-256("coord-vectors/" + keyid)."""
    return Ed25519PrivateKey.from_private_bytes(_seed(keyid))


def _seed(keyid: str) -> bytes:
    return hashlib.sha256(b"coord-vectors/" + keyid.encode()).digest()


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def vector_policy() -> Policy:
    """The policy the envelope vectors are judged by: ICD §9's defaults, the liaison senders with the
    test keys above, a 4096-byte body limit and a burst of 10 (so 413 and 429 are small to show)."""

    def keys(owner: str) -> MappingProxyType[str, SigningKey]:
        return MappingProxyType(
            {
                kid: SigningKey(kid, _raw_public(seed_key(kid)), nb, na, rv)
                for kid, (nb, na, rv) in _KEYS.items()
                if kid.split(":")[0] == owner
            }
        )

    orgs = {
        c: Organisation(c, Clearance.parse(cl), frozenset(KINDS)) for c, cl in DEFAULT_ORGANISATIONS.items()
    }
    senders = {
        ident: Sender(ident, org, frozenset(rights), keys(ident))
        for ident, (org, rights) in DEFAULT_SENDERS.items()
        if ident.endswith("-liaison")
    }
    return Policy(
        name=BROKER_NAME,
        system_high=Clearance.parse("NATO:SECRET"),
        max_age_s=600.0,
        max_skew_s=120.0,
        organisations=MappingProxyType(orgs),
        senders=MappingProxyType(senders),
        operators=MappingProxyType(
            {"duty-officer": Operator("duty-officer", "NSATU", Clearance.parse("NATO:SECRET"))}
        ),
        broker_keys=keys("broker"),
        rate_burst=RATE_BURST,
        max_body_bytes=MAX_BODY_BYTES,
    )


