"""The broker's policy: who exists, what they may publish and read (ICD §9 `policy.toml`).

The model is immutable; a new file makes a new `Policy`, swapped in whole or not at all.
Below the model: the TOML loader (`load_policy`, `parse_policy`), the renderer (`render_policy`,
`write_policy`) and the watcher (`PolicyHolder`).

The file, exactly this shape (unknown keys are refused at every level)::

    [broker]
    name = "local"                 # broker instance; its countersigning key id is "broker:local"
    system_high = "NATO:SECRET"    # POLICY:LEVEL[:CAVEAT+CAVEAT], spaces in levels as "_"
    max_age_s = 600                # freshness window (ICD §3), > 0
    max_skew_s = 120               # >= 0
    rate_per_s = 1000              # per sender, optional (default 1000), > 0
    rate_burst = 2000              # optional (default 2000), integer >= 1
    max_body_bytes = 262144        # optional (default 256 KiB), integer >= 1

    [broker.keys."broker:local"]   # required: exactly the key "broker:<name>"
    public_key = "<base64 (RFC 4648 §4) of the 32 raw Ed25519 public key bytes>"
    not_before = 2026-11-26T00:00:00Z   # TOML offset date-times only (a local time is refused)
    not_after = 2027-11-26T00:00:00Z    # after not_before
    # revoked_at = 2026-12-01T00:00:00Z   optional

    [organisations.NSATU]          # at least one; code ^[A-Z][A-Z0-9]{1,15}$
    clearance = "NATO:SECRET"      # may exceed system_high: system high caps it anyway
    need_to_know = ["status.update", "capability.pledge"]   # registered kinds, no duplicates

    [senders.nsatu-liaison]        # id ^[a-z][a-z0-9-]{2,62}$, not "broker", not also an operator
    organisation = "NSATU"         # an organisation above
    publishes = ["status.update"]  # registered kinds, no duplicates
    # rate_per_s = 50              optional per-sender override, > 0

    # key id <sender>:<name>, name ^[A-Za-z0-9._-]{1,64}$
    [senders.nsatu-liaison.keys."nsatu-liaison:2026-11"]
    public_key = "..."
    not_before = 2026-11-26T00:00:00Z
    not_after = 2027-11-26T00:00:00Z

    [operators.duty-officer]       # same id form as senders
    organisation = "NSATU"
    clearance = "NATO:SECRET"

A policy that is malformed or inconsistent is refused whole with a `PolicyError` naming the file and the
1-based line of the offending key or table. Integers where numbers are expected are fine; booleans never
are. One public key may not be registered to two owners.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from schemas.clearance import Clearance
from schemas.ids import BROKER_ID

__all__ = [
    "Operator",
    "Organisation",
    "Policy",
    "PolicySource",
    "Sender",
    "SigningKey",
]



@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 public key registered under `keyid` (`<owner>:<name>`)."""

    keyid: str
    public_key: bytes  # 32 raw bytes
    not_before: datetime  # aware, UTC
    not_after: datetime  # aware, UTC
    revoked_at: datetime | None = None

    def problem_at(self, now: datetime) -> str | None:
        """None if usable at `now`, else `revoked-key` or `expired-key` (ICD §6 names)."""
        if self.revoked_at is not None and now >= self.revoked_at:
            return "revoked-key"
        if not (self.not_before <= now <= self.not_after):
            return "expired-key"
        return None


@dataclass(frozen=True, slots=True)
class Organisation:
    code: str
    clearance: Clearance
    need_to_know: frozenset[str]


@dataclass(frozen=True, slots=True)
class Sender:
    id: str
    organisation: str
    publishes: frozenset[str]
    keys: Mapping[str, SigningKey]  # keyid -> key
    rate_per_s: float | None = None  # None: the broker default


@dataclass(frozen=True, slots=True)
class Operator:
    id: str
    organisation: str
    clearance: Clearance


@dataclass(frozen=True, slots=True)
class Policy:
    name: str  # the broker instance name; its countersigning key is `broker:<name>`
    system_high: Clearance
    max_age_s: float
    max_skew_s: float
    organisations: Mapping[str, Organisation]
    senders: Mapping[str, Sender]
    operators: Mapping[str, Operator]
    broker_keys: Mapping[str, SigningKey]  # keyid `broker:<name>` -> key
    rate_per_s: float = 1000.0
    rate_burst: int = 2000
    max_body_bytes: int = 256 * 1024
    source: str = field(default="", compare=False)  # path it was loaded from, for messages

    @property
    def broker_keyid(self) -> str:
        return f"{BROKER_ID}:{self.name}"


class PolicySource(Protocol):
    """What reads the policy in force: `current` is taken once per decision and used throughout
    (`broker.policy.holder.PolicyHolder`, or a fixed policy in tests)."""

    @property
    def current(self) -> Policy: ...
