"""The golden request vectors' building blocks: ids, times, the default message, sealing, and the
`Vector` row (broker/contract/vectors.py)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from broker.clock import rfc3339
from broker.contract.vector_keys import _ENC, NOW, seed_key
from broker.dsse import b64encode, pae, sign
from schemas.message import PAYLOAD_TYPE

# -------------------------------------------------------------------------------------------- envelopes


def _id(name: str) -> str:
    """A UUIDv7-shaped id: NOW's milliseconds, then bits from the name."""
    ms = int(NOW.timestamp() * 1000)
    rand = int.from_bytes(hashlib.sha256(b"coord-vectors/id/" + name.encode()).digest()[:10], "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 68) & 0xFFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def _time(delta_s: int) -> str:
    return rfc3339(NOW + timedelta(seconds=delta_s)).replace(".000000Z", "Z")


_LABEL = {
    "policy": "NATO",
    "classification": "RESTRICTED",
    "releasable_to": ["EUMAM", "NSATU"],
    "caveats": [],
}
_STATUS = {
    "topic": "Hub Rzeszow",
    "state": "GREEN",
    "summary": "Two convoys cleared; one held for inspection.",
}


def _message(name: str, **over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "id": _id(name),
        "kind": "status.update",
        "version": 1,
        "originator": "NSATU",
        "sender": "nsatu-liaison",
        "created": _time(-60),
        "label": _LABEL,
        "body": _STATUS,
    }
    msg.update(over)
    return msg


def _seal(
    payload: bytes,
    keyid: str = "nsatu-liaison:v1",
    *,
    key: str | None = None,
    ptype: str = PAYLOAD_TYPE,
    sigs: int = 1,
) -> bytes:
    signer = seed_key(key or keyid)
    sig = b64encode(sign(signer, ptype, payload))
    env = {
        "payloadType": ptype,
        "payload": b64encode(payload),
        "signatures": [{"keyid": keyid, "sig": sig} for _ in range(sigs)],
    }
    return _ENC.encode(env)


@dataclass(frozen=True)
class Vector:
    name: str
    icd: str  # the ICD §6 row
    body: bytes
    status: int
    problem: str | None = None
    client: str = "nsatu-liaison"
    path: str = "/v1/messages"
    content_type: str = "application/json"
    before: tuple[str, ...] = ()
    note: str = ""
    keyid: str | None = None
    payload: bytes | None = None
    expect: dict[str, Any] = field(default_factory=dict)  # more: duplicate, Retry-After, batch results
    live: bool = True  # reproducible against a live gateway as it runs


def _row(x: Vector) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": x.name,
        "icd": x.icd,
        "client": x.client,
        "method": "POST",
        "path": x.path,
        "content_type": x.content_type,
        "body": f"envelopes/{x.name}.body",
        "body_sha256": hashlib.sha256(x.body).hexdigest(),
        "before": list(x.before),
        "status": x.status,
        "problem": x.problem,
    }
    if x.expect:
        row["expect"] = x.expect
    if x.keyid is not None and x.payload is not None:
        ptype = PAYLOAD_TYPE if x.name != "unsupported-payload-type" else "application/json"
        row["keyid"] = x.keyid
        row["payload_sha256"] = hashlib.sha256(x.payload).hexdigest()
        row["pae_sha256"] = hashlib.sha256(pae(ptype, x.payload)).hexdigest()
    if x.note:
        row["note"] = x.note
    if not x.live:
        row["live"] = False
    return row


