"""The release decision (ICD §2, §4): per accepted message, which organisations may receive it now, and
the broker's countersignature on what it releases. Pure: the dispatcher does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.dsse import b64encode, sign
from broker.policy.model import Policy
from broker.rules.labels import decide
from schemas.message import Envelope, Message

__all__ = ["Decision", "countersign", "decisions"]

_ENC = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Decision:
    organisation: str
    rule: str | None  # None: released


def decisions(policy: Policy, msg: Message) -> list[Decision]:
    out = []
    for code in sorted(policy.organisations):
        org = policy.organisations[code]
        rule = decide(
            msg.label,
            system_high=policy.system_high,
            clearance=org.clearance,
            organisation=code,
            kind=msg.kind,
            need_to_know=org.need_to_know,
        )
        out.append(Decision(code, rule))
    return out


def countersign(env: Envelope, payload: bytes, keyid: str, key: Ed25519PrivateKey) -> bytes:
    """The envelope with the broker's signature appended over the same PAE (ICD §4)."""
    sigs = [{"keyid": s.keyid, "sig": s.sig} for s in env.signatures]
    sigs.append({"keyid": keyid, "sig": b64encode(sign(key, env.payload_type, payload))})
    return _ENC.encode({"payloadType": env.payload_type, "payload": env.payload, "signatures": sigs})
