"""Every check of ICD §3-§6 on one inbound envelope, in one fixed order, as one pure function.

`Intake.check()` takes the request bytes, the TLS client identity and the time of receipt, and
either returns an `Admitted` (what to store, where, under which id) or raises `Problem`. It does no
I/O, so the gateway, the batch endpoint and the tests share it. The order, each step naming the
problem it raises:

 1. envelope JSON, strict, one signature, payload and sig base64   -> malformed
 2. payloadType                                                    -> unsupported-media-type
 3. key id is the client's own (owner == certificate CN), registered -> unknown-key
 4. key valid at receipt                                           -> revoked-key, expired-key
 5. Ed25519 over PAE(payloadType, payload bytes)                   -> bad-signature
 6. payload UTF-8, JSON, no duplicated key at any level            -> malformed
 7. schema (msgspec, unknown fields refused everywhere)            -> invalid (errors: JSON paths)
 8. sender == certificate CN                                       -> sender-mismatch
 9. originator == sender's organisation                            -> originator-mismatch
10. kind in the sender's rights                                    -> not-permitted
11. label rules (sorted, known organisations, originator included) -> invalid
12. label <= system high                                           -> above-system-high
13. label <= the originating organisation's clearance              -> above-clearance
14. created within [now - max_age, now + max_skew]                  -> stale
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from broker.dsse import b64decode_any
from broker.errors import Problem, Refused
from broker.policy.model import Policy
from broker.rules.labels import label_problems
from broker.rules.signatures import check_inbound, inbound_key
from broker.rules.strict_json import has_duplicate_keys
from schemas.clearance import RANK
from schemas.message import ENVELOPE_DECODER, MESSAGE_DECODER, PAYLOAD_TYPE, Envelope, Message


@dataclass(frozen=True, slots=True)
class Partial:
    """What is known of a message when it is refused after its signature verified (for audit)."""

    id: str | None = None
    kind: str | None = None
    originator: str | None = None
    label: Any = None


@dataclass(frozen=True, slots=True)
class Admitted:
    """A message that passed every check: the envelope bytes exactly as received, and its reading."""

    envelope: bytes
    digest: str  # SHA-256 hex of the envelope bytes
    message: Message
    sender: str
    keyid: str


_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.DOTALL)


def schema_error(exc: msgspec.ValidationError) -> dict[str, str]:
    """A msgspec error as `{path, message}`, with any echoed value or field name removed."""
    m = _PATH.match(str(exc))
    msg, path = (m.group("msg"), m.group("path")) if m else (str(exc), None)
    if msg.startswith(("Invalid value", "Invalid enum value")):  # msgspec quotes the value after these
        msg = "value is not one of the allowed values"
    elif msg.startswith("Object contains unknown field"):
        msg = "unknown field (unknown fields are refused at every level)"
    return {"path": path or "$", "message": msg}


def parse_created(text: str) -> datetime:
    """RFC 3339 UTC `...Z`, fractions to any precision (truncated to microseconds). The schema has
    already matched `YYYY-MM-DDTHH:MM:SS(.f{1,9})?Z`; `fromisoformat` (6 times faster than `strptime`)
    refuses what is not a real date with ValueError, as `strptime` did."""
    head, _, frac = text[:-1].partition(".")
    if len(head) != 19:
        raise ValueError("not YYYY-MM-DDTHH:MM:SS")
    base = datetime.fromisoformat(head).replace(tzinfo=UTC)
    return base + timedelta(microseconds=int((frac + "000000")[:6])) if frac else base


class Intake:
    """The checks, bound to nothing but the policy passed to each call."""

    def check(self, raw: bytes, client_id: str, policy: Policy, now: datetime) -> Admitted:
        digest = hashlib.sha256(raw).hexdigest()
        try:
            return self._check(raw, digest, client_id, policy, now)
        except Refused:
            raise
        except Problem as p:
            raise Refused(p, digest, Partial()) from None

    def _check(self, raw: bytes, digest: str, client_id: str, policy: Policy, now: datetime) -> Admitted:
        try:
            env: Envelope = ENVELOPE_DECODER.decode(raw)
        except msgspec.DecodeError:
            raise Problem(
                "malformed",
                "the body must be a DSSE envelope: a JSON object with payloadType, payload and signatures",
            ) from None
        if len(env.signatures) != 1:
            raise Problem(
                "malformed",
                f"an inbound envelope carries exactly one signature, this one has {len(env.signatures)}",
            )
        try:
            payload = b64decode_any(env.payload)
            sig = b64decode_any(env.signatures[0].sig)
        except ValueError as exc:
            raise Problem("malformed", f"payload and sig must be base64 (RFC 4648 §4 or §5): {exc}") from None
        if env.payload_type != PAYLOAD_TYPE:
            raise Problem("unsupported-media-type", f"payloadType must be {PAYLOAD_TYPE!r}")

        keyid = env.signatures[0].keyid
        key = inbound_key(policy, client_id, keyid, now)
        check_inbound(key, env.payload_type, payload, sig)
        sender = policy.senders[client_id]

        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem("malformed", "the payload must be UTF-8") from None
        try:
            duplicated = has_duplicate_keys(text)
        except RecursionError:  # nesting far beyond any schema; the scan is recursive
            raise Problem("malformed", "the payload nests too deeply") from None
        if duplicated:
            raise Problem(
                "malformed",
                "the payload repeats a key in some object: the signed bytes must have one reading",
            )
        try:
            msg = MESSAGE_DECODER.decode(payload)
        except msgspec.ValidationError as exc:
            err = schema_error(exc)
            raise Problem("invalid", f"schema violation at {err['path']}", errors=[err]) from None
        except msgspec.DecodeError:
            raise Problem("malformed", "the payload is not a JSON object") from None

        partial = Partial(msg.id, msg.kind, msg.originator, msg.label)
        try:
            return self._authorise(raw, digest, msg, sender.id, keyid, client_id, policy, now)
        except Problem as p:
            raise Refused(p, digest, partial) from None

    def _authorise(
        self,
        raw: bytes,
        digest: str,
        msg: Message,
        sender_id: str,
        keyid: str,
        client_id: str,
        policy: Policy,
        now: datetime,
    ) -> Admitted:
        sender = policy.senders[sender_id]
        if msg.sender != client_id:
            raise Problem("sender-mismatch", "the message's sender must equal your client certificate's CN")
        if msg.originator != sender.organisation:
            raise Problem("originator-mismatch", "the originator must be your sender's organisation")
        if msg.kind not in sender.publishes:
            raise Problem("not-permitted", f"your sender may not publish kind {msg.kind!r}")
        errors = label_problems(msg.label, msg.originator, policy.organisations)
        if errors:
            raise Problem("invalid", "the label breaks ICD §2", errors=errors)
        rank = RANK[msg.label.classification]
        if rank > policy.system_high.rank:
            raise Problem("above-system-high", f"this broker is accredited up to {policy.system_high}")
        org = policy.organisations[sender.organisation]
        if rank > org.clearance.rank:
            raise Problem("above-clearance", f"your organisation is cleared up to {org.clearance}")
        try:
            created = parse_created(msg.created)
        except ValueError:
            raise Problem(
                "invalid",
                "created is not a real date",
                errors=[{"path": "$.created", "message": "not a date"}],
            ) from None
        earliest = now - timedelta(seconds=policy.max_age_s)
        if not (earliest <= created <= now + timedelta(seconds=policy.max_skew_s)):
            raise Problem(
                "stale",
                f"created must lie within {int(policy.max_age_s)} s before and {int(policy.max_skew_s)} s "
                "after the broker's clock; re-sign with a new id and time",
            )
        return Admitted(raw, digest, msg, sender_id, keyid)
