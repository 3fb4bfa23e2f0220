"""A general DSSE v1 verifier (threshold of distinct trusted keys), made only from the broker's
primitives (`broker.dsse`: PAE, base64 in either alphabet, Ed25519): the public DSSE vectors check
those primitives through it. The broker's own rules of who signs what are `broker.rules.signatures`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from broker.dsse import b64decode_any, pae, verify_raw


class Refused(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RawSignature:
    keyid: str | None
    sig: str  # base64 as carried


def verify_threshold(
    payload_type: str,
    payload_b64: str,
    signatures: Sequence[RawSignature],
    trusted: Mapping[str, bytes],
    *,
    threshold: int,
    supported_types: Iterable[str],
) -> bytes:
    """The payload bytes once `threshold` distinct trusted keys signed them; `Refused` otherwise. A
    signature with a key id is checked against that key only; without one, against every key."""
    if not payload_type or payload_type not in set(supported_types):
        raise Refused("unsupported payload type")
    try:
        payload = b64decode_any(payload_b64)
    except ValueError as exc:
        raise Refused(f"payload: {exc}") from None
    message = pae(payload_type, payload)
    signers: set[str] = set()
    for s in signatures:
        try:
            sig = b64decode_any(s.sig)
        except ValueError:
            continue
        candidates = [s.keyid] if s.keyid is not None else list(trusted)
        for name in candidates:
            key = trusted.get(name) if name is not None else None
            if key is not None and name not in signers and verify_raw(key, sig, message):
                signers.add(name)
                break
    if len(signers) < threshold:
        raise Refused(f"{len(signers)} valid signature(s) from distinct trusted keys; need {threshold}")
    return payload
