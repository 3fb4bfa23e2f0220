"""What an adapter checks before it hands a delivery to its native system.

A delivery must carry exactly two signatures over the same PAE: the originator's (a key the policy
registers to the message's sender) and the broker's (`broker:<name>`). The adapter also re-applies
the access decision for its own organisation with the policy in force: even a message published
straight onto its delivery subject, by anyone, is refused unless both hold.
"""

from __future__ import annotations

import msgspec

from broker.dsse import b64decode_any, pae, verify_raw
from broker.policy.model import Policy
from broker.rules.labels import decide
from schemas.message import ENVELOPE_DECODER, MESSAGE_DECODER, PAYLOAD_TYPE, Message


class DeliveryRefused(ValueError):
    """A delivery that must not reach the native system; `reason` is a short code for the audit.
    `message` is the delivery's message when both signatures verified (so the audit can name it)."""

    def __init__(self, reason: str, detail: str, message: Message | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.message = message


def verify_delivery(data: bytes, org: str, policy: Policy) -> Message:
    try:
        env = ENVELOPE_DECODER.decode(data)
        payload = b64decode_any(env.payload)
        msg = MESSAGE_DECODER.decode(payload)
    except (msgspec.DecodeError, ValueError):
        raise DeliveryRefused("malformed", "not a countersigned DSSE envelope of a valid message") from None
    if env.payload_type != PAYLOAD_TYPE:
        raise DeliveryRefused("malformed", "unexpected payloadType")
    if len(env.signatures) != 2:
        raise DeliveryRefused(
            "countersignature", f"{len(env.signatures)} signature(s); need originator + broker"
        )
    message = pae(env.payload_type, payload)
    orig, brk = env.signatures
    sender = policy.senders.get(msg.sender)
    okey = sender.keys.get(orig.keyid) if sender is not None else None
    if okey is None or not _verifies(okey.public_key, orig.sig, message):
        raise DeliveryRefused("originator-signature", "the originator's signature does not verify")
    if sender is None or sender.organisation != msg.originator:
        raise DeliveryRefused("originator-signature", "the signer is not of the originating organisation")
    bkey = policy.broker_keys.get(brk.keyid)
    if bkey is None or brk.keyid != policy.broker_keyid or not _verifies(bkey.public_key, brk.sig, message):
        raise DeliveryRefused("countersignature", "the broker's countersignature is missing or forged")
    o = policy.organisations.get(org)
    if o is None:
        raise DeliveryRefused("policy", "this organisation is not in the policy", msg)
    rule = decide(
        msg.label,
        system_high=policy.system_high,
        clearance=o.clearance,
        organisation=org,
        kind=msg.kind,
        need_to_know=o.need_to_know,
    )
    if rule is not None:
        raise DeliveryRefused(rule, "the label does not allow release to this organisation", msg)
    return msg


def _verifies(raw_key: bytes, sig_b64: str, message: bytes) -> bool:
    try:
        sig = b64decode_any(sig_b64)
    except ValueError:
        return False
    return len(sig) == 64 and verify_raw(raw_key, sig, message)
