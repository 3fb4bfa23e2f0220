"""What `broker up` makes in a new state folder (ICD §9): the dev CA and server certificate, the
broker's countersigning key, the default policy, the liaison and adapter senders and the duty officer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.errors import PKIError, PolicyError
from broker.identity.keys import (
    BROKER_KEY_DAYS,
    SIGNING_KEY_DAYS,
    default_key_name,
    free_key_name,
    has_signing_key,
    load_signing_key,
    new_signing_key,
    raw_public,
    store_signing_key,
)
from broker.identity.state import StatePaths
from broker.identity.x509 import ensure_client_cert, ensure_server_cert, init_ca
from broker.policy.edits import policy_lock, registration, replace_map, save, today
from broker.policy.loader import load_policy
from broker.policy.model import Operator, Organisation, Policy, Sender
from schemas.clearance import Clearance
from schemas.ids import BROKER_ID, KEY_NAME, split_keyid
from schemas.kinds import KINDS

__all__ = [
    "DEFAULT_BROKER_NAME",
    "DEFAULT_OPERATORS",
    "DEFAULT_ORGANISATIONS",
    "DEFAULT_SENDERS",
    "DEFAULT_SYSTEM_HIGH",
    "default_policy",
    "ensure_base",
    "ensure_defaults",
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

def default_policy(paths: StatePaths, name: str = DEFAULT_BROKER_NAME) -> Policy:
    """The base policy of ICD §9: system high NATO:SECRET, the three organisations with every kind on
    their need-to-know, default freshness and rate limits, and the broker's countersigning key
    `broker:<name>` (made at identities/broker/ if missing, honoured if there). No senders or operators:
    `ensure_defaults` adds those. Nothing is written to policy.toml."""
    if not KEY_NAME.matches(name):
        raise PolicyError(f"broker name {name!r} must match ^[A-Za-z0-9._-]{{1,64}}$")
    now = today()
    if has_signing_key(paths, BROKER_ID):
        keyid, key = load_signing_key(paths, BROKER_ID)
        name = split_keyid(keyid)[1]
        public = raw_public(key)
    else:
        keyid, public = new_signing_key(paths, BROKER_ID, name)
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
        broker_keys=MappingProxyType({keyid: registration(public, now, BROKER_KEY_DAYS, keyid)}),
        source=str(paths.policy),
    )


def ensure_base(paths: StatePaths, name: str, created: list[str]) -> Policy:
    """CA, server certificate, broker key, and the policy (loaded, or the base policy if missing).
    The policy is returned, not written."""
    if init_ca(paths):
        created += [paths.relative(paths.ca_crt), paths.relative(paths.ca_key)]
    had_server_key = paths.server_key.exists()
    if ensure_server_cert(paths):
        created.append(paths.relative(paths.server_crt))
        if not had_server_key:
            created.append(paths.relative(paths.server_key))
    had_broker_key = has_signing_key(paths, BROKER_ID)
    if not paths.policy.exists():
        policy = default_policy(paths, name)
        if not had_broker_key:
            created.append(paths.relative(paths.broker_signing_key))
        return policy
    policy = load_policy(paths.policy)
    if had_broker_key:
        keyid, key = load_signing_key(paths, BROKER_ID)
        registered = policy.broker_keys.get(keyid)
        if keyid != policy.broker_keyid or registered is None or registered.public_key != raw_public(key):
            raise PKIError(
                f"{paths.broker_signing_key} ({keyid}) is not the key {paths.policy} registers as "
                f"{policy.broker_keyid}; restore the matching key, or remove the entry to register this one"
            )
        return policy
    # the policy names a broker key whose private half is gone: make a new one and register it
    keyid, public = new_signing_key(paths, BROKER_ID, policy.name)
    created.append(paths.relative(paths.broker_signing_key))
    return dataclasses.replace(
        policy, broker_keys=MappingProxyType({keyid: registration(public, today(), BROKER_KEY_DAYS, keyid)})
    )


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
    ensure_client_cert(paths, ident, created, renew_expired=False)
    now = today()
    if has_signing_key(paths, ident):
        keyid, key = load_signing_key(paths, ident)
        public = raw_public(key)
        if sender is not None and keyid in sender.keys:
            if sender.keys[keyid].public_key != public:
                raise PKIError(
                    f"{paths.signing_key(ident)} is not the key {paths.policy} registers as {keyid}; "
                    "restore the matching key or remove that key from the policy"
                )
            return policy
    else:
        taken = sender.keys if sender is not None else ()
        keyid = f"{ident}:{free_key_name(default_key_name(now), ident, taken)}"
        new_key = Ed25519PrivateKey.generate()
        public = raw_public(new_key)
        store_signing_key(paths, ident, keyid, new_key)
        created.append(paths.relative(paths.signing_key(ident)))
    registered = registration(public, now, SIGNING_KEY_DAYS, keyid)
    if sender is None:
        sender = Sender(ident, org, frozenset(rights), MappingProxyType({keyid: registered}))
        created.append(f"{paths.relative(paths.policy)}: sender {ident}")
    else:
        sender = dataclasses.replace(sender, keys=replace_map(sender.keys, keyid, registered))
        created.append(f"{paths.relative(paths.policy)}: key {keyid}")
    return dataclasses.replace(policy, senders=replace_map(policy.senders, ident, sender))


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
        policy = dataclasses.replace(policy, operators=replace_map(policy.operators, ident, operator))
        created.append(f"{paths.relative(paths.policy)}: operator {ident}")
    ensure_client_cert(paths, ident, created, renew_expired=False)
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
    with policy_lock(paths):
        on_disk = load_policy(paths.policy) if paths.policy.exists() else None
        policy = ensure_base(paths, on_disk.name if on_disk else name, created)
        for ident, (org, rights) in DEFAULT_SENDERS.items():
            policy = _ensure_default_sender(paths, policy, ident, org, rights, created)
        for ident, (org, clearance) in DEFAULT_OPERATORS.items():
            policy = _ensure_default_operator(paths, policy, ident, org, clearance, created)
        save(paths, policy, on_disk, created)
    if created:
        _log.info("pki.defaults_made", created=created)
    return created
