"""Who must have signed what, at each of the three points a message is checked (ICD §4).

    inbound_key        at the gateway: the one signature is by a key the policy registers to the sender
                       named by the client certificate, valid at receipt (unknown-, revoked-, expired-key),
                       and it verifies (bad-signature)
    originator_signed  at rest, in the dispatcher: the stored bytes still carry the originator's valid
                       signature (a corrupted or forged stored copy is withheld from everyone)
    verify_delivery    at delivery, in each adapter: exactly the originator's and the broker's
                       signatures over the same PAE, then the access decision for this organisation with
                       the policy in force (a message put straight onto a delivery subject is refused)

Pure functions over the policy in force: no I/O. The primitives (PAE, base64, Ed25519) are
`broker.dsse`'s.
"""

from __future__ import annotations

from datetime import datetime

from broker.dsse import b64decode_any, open_envelope, pae, verify_raw
from broker.errors import DeliveryRefused, Problem, UnreadableEnvelope
from broker.policy.model import Policy, SigningKey
from broker.rules.labels import decide
from schemas.message import PAYLOAD_TYPE, Envelope, Message

__all__ = ["check_inbound", "inbound_key", "originator_signed", "verifies", "verify_delivery"]


def verifies(raw_key: bytes, sig_b64: str, message: bytes) -> bool:
    """True iff `sig_b64` (base64, either alphabet) is a valid Ed25519 signature of `message`."""
    try:
        sig = b64decode_any(sig_b64)
    except ValueError:
        return False
    return len(sig) == 64 and verify_raw(raw_key, sig, message)


def inbound_key(policy: Policy, client_id: str, keyid: str, now: datetime) -> SigningKey:
    """The key an inbound signature must be made with: registered under `keyid` to the sender the client
    certificate names (never another sender's), and usable at receipt. Raises the ICD §6 problem."""
    sender = policy.senders.get(client_id)
    owner = keyid.partition(":")[0]
    key = sender.keys.get(keyid) if sender is not None and owner == client_id else None
    if key is None:
        raise Problem(
            "unknown-key", "the key id is not registered to the sender named by your client certificate"
        )
    key_problem = key.problem_at(now)
    if key_problem == "revoked-key":
        raise Problem("revoked-key", "this signing key is revoked; sign with a current key")
    if key_problem == "expired-key":
        raise Problem("expired-key", "this signing key is outside its validity period")
    return key


def check_inbound(key: SigningKey, payload_type: str, payload: bytes, sig: bytes) -> None:
    """The inbound signature verifies over PAE(payloadType, payload) with `key` (else bad-signature)."""
    if len(sig) != 64 or not verify_raw(key.public_key, sig, pae(payload_type, payload)):
        raise Problem("bad-signature", "the signature does not verify over PAE(payloadType, payload)")


def originator_signed(policy: Policy, env: Envelope, payload: bytes, msg: Message) -> bool:
    """The stored envelope carries exactly the originator's signature, by a key the policy registers to
    the message's sender, and it verifies over the stored bytes (integrity at rest)."""
    if len(env.signatures) != 1:
        return False
    s = env.signatures[0]
    sender = policy.senders.get(msg.sender)
    key = sender.keys.get(s.keyid) if sender is not None else None
    return key is not None and verifies(key.public_key, s.sig, pae(env.payload_type, payload))


def verify_delivery(data: bytes, org: str, policy: Policy) -> Message:
    """A delivery's message, once both signatures verify and `org` may receive it now; else
    `DeliveryRefused` naming the reason (the failing rule of ICD §2 for a policy refusal)."""
    try:
        env, payload, msg = open_envelope(data)
    except UnreadableEnvelope:
        raise DeliveryRefused("malformed", "not a countersigned DSSE envelope of a valid message") from None
    if env.payload_type != PAYLOAD_TYPE:
        raise DeliveryRefused("malformed", "unexpected payloadType")
    if len(env.signatures) != 2:
        count = len(env.signatures)
        raise DeliveryRefused("countersignature", f"{count} signature(s); need originator + broker")
    signed = pae(env.payload_type, payload)
    orig, brk = env.signatures
    sender = policy.senders.get(msg.sender)
    okey = sender.keys.get(orig.keyid) if sender is not None else None
    if okey is None or not verifies(okey.public_key, orig.sig, signed):
        raise DeliveryRefused("originator-signature", "the originator's signature does not verify")
    if sender is None or sender.organisation != msg.originator:
        raise DeliveryRefused("originator-signature", "the signer is not of the originating organisation")
    bkey = policy.broker_keys.get(brk.keyid)
    if bkey is None or brk.keyid != policy.broker_keyid or not verifies(bkey.public_key, brk.sig, signed):
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
