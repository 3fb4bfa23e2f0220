"""What the administrator's commands do to policy.toml (ICD §9 `broker keys new`): make a sender (its
TLS client certificate, an Ed25519 signing key and its `[senders.<id>]` entry, or a new key for one
that exists: rotation), make an operator, revoke a key. Every edit is a read-modify-write of the file
under a lock shared by every process on the state folder, checked before it is written.
Refusals are `PKIError` (keys, certificates, files) or `PolicyError` (ids, organisations, kinds, roles).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.errors import PolicyError
from broker.identity.keys import (
    SIGNING_KEY_DAYS,
    check_identity,
    default_key_name,
    raw_public,
    store_signing_key,
)
from broker.identity.state import StatePaths
from broker.identity.x509 import ensure_client_cert
from broker.policy.defaults import DEFAULT_BROKER_NAME, ensure_base
from broker.policy.edits import (
    check,
    check_kinds,
    policy_error,
    policy_lock,
    registration,
    replace_map,
    save,
    today,
    unknown_org,
)
from broker.policy.loader import load_policy
from broker.policy.model import Operator, Policy, Sender
from broker.policy.render import write_policy
from schemas.clearance import Clearance
from schemas.ids import KEY_NAME, split_keyid

__all__ = ["Loaded", "load_for_edit", "new_operator", "new_sender", "revoke_key"]

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Loaded:
    policy: Policy
    on_disk: Policy | None  # None when policy.toml did not exist


def load_for_edit(paths: StatePaths, created: list[str]) -> Loaded:
    on_disk = load_policy(paths.policy) if paths.policy.exists() else None
    policy = ensure_base(paths, on_disk.name if on_disk else DEFAULT_BROKER_NAME, created)
    return Loaded(policy, on_disk)



def _load_for_role(paths: StatePaths, created: list[str], ident: str, org: str, *, other_role: str) -> Loaded:
    """The policy to edit, once `org` is known and `ident` is not in `other_role` (one id, one role)."""
    loaded = load_for_edit(paths, created)
    policy = loaded.policy
    if org not in policy.organisations:
        raise unknown_org(paths, policy, org)
    taken = policy.operators if other_role == "operators" else policy.senders
    if ident in taken:
        role = "an operator" if other_role == "operators" else "a sender"
        raise policy_error(paths, f"{ident!r} is {role} already: one id has one role")
    return loaded


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
    check_identity(ident, allow_broker=False)
    kinds = check_kinds(paths, publishes)
    now = today()
    name = key_name if key_name is not None else default_key_name(now)
    if not KEY_NAME.matches(name):
        raise PolicyError(f"key name {name!r} must match ^[A-Za-z0-9._-]{{1,64}}$")
    if validity_days <= 0:
        raise PolicyError("validity_days must be positive")
    keyid = f"{ident}:{name}"
    created: list[str] = []
    with policy_lock(paths):
        loaded = _load_for_role(paths, created, ident, org, other_role="operators")
        policy = loaded.policy
        existing = policy.senders.get(ident)
        if existing is not None and existing.organisation != org:
            raise policy_error(paths, f"sender {ident!r} belongs to {existing.organisation}, not {org}")
        if existing is not None and keyid in existing.keys:
            raise policy_error(paths, f"key {keyid!r} is registered already; choose another key name")
        key = Ed25519PrivateKey.generate()
        registered = registration(raw_public(key), now, validity_days, keyid)
        if existing is None:
            sender = Sender(ident, org, kinds, MappingProxyType({keyid: registered}))
        else:
            sender = dataclasses.replace(
                existing, publishes=kinds, keys=replace_map(existing.keys, keyid, registered)
            )
        updated = dataclasses.replace(policy, senders=replace_map(policy.senders, ident, sender))
        check(paths, updated)  # refuse before anything is written
        ensure_client_cert(paths, ident, created, renew_expired=True)
        store_signing_key(paths, ident, keyid, key)
        written = save(paths, updated, loaded.on_disk, created)
    _log.info("pki.sender_made", sender=ident, organisation=org, keyid=keyid, rotation=existing is not None)
    return written


def new_operator(paths: StatePaths, ident: str, org: str, clearance: str | Clearance) -> Policy:
    """Make operator `ident` of `org` with `clearance` (`POLICY:LEVEL[:CAVEAT+CAVEAT]`): its TLS client
    certificate (a sound one already under identities/<ident>/ is kept) and its entry in policy.toml; return
    the policy as written. Refused (PolicyError) when the organisation is unknown, the clearance does not
    parse, or the id exists already in either role."""
    check_identity(ident, allow_broker=False)
    if isinstance(clearance, str):
        try:
            clearance = Clearance.parse(clearance)
        except ValueError as exc:
            raise policy_error(paths, str(exc)) from None
    created: list[str] = []
    with policy_lock(paths):
        loaded = _load_for_role(paths, created, ident, org, other_role="senders")
        policy = loaded.policy
        if ident in policy.operators:
            raise policy_error(paths, f"operator {ident!r} exists already")
        updated = dataclasses.replace(
            policy, operators=replace_map(policy.operators, ident, Operator(ident, org, clearance))
        )
        check(paths, updated)
        ensure_client_cert(paths, ident, created, renew_expired=True)
        written = save(paths, updated, loaded.on_disk, created)
    _log.info("pki.operator_made", operator=ident, organisation=org, clearance=str(clearance))
    return written


def revoke_key(paths: StatePaths, keyid: str, *, at: datetime | None = None) -> Policy:
    """Set `revoked_at` (default: now) on a sender's registered key; return the policy as written."""
    try:
        owner, _ = split_keyid(keyid)
    except ValueError as exc:
        raise policy_error(paths, str(exc)) from None
    when = at if at is not None else today()
    if when.tzinfo is None:
        raise PolicyError("revocation time must be timezone-aware")
    with policy_lock(paths):
        policy = load_policy(paths.policy)
        sender = policy.senders.get(owner)
        if sender is None or keyid not in sender.keys:
            raise policy_error(paths, f"no sender key {keyid!r} is registered")
        key = dataclasses.replace(sender.keys[keyid], revoked_at=when)
        sender = dataclasses.replace(sender, keys=replace_map(sender.keys, keyid, key))
        updated = dataclasses.replace(policy, senders=replace_map(policy.senders, owner, sender))
        written = write_policy(paths.policy, updated)
    _log.info("pki.key_revoked", keyid=keyid, at=when.isoformat())
    return written
