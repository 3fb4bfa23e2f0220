"""DSSE v1 (ICD §4): PAE, base64 in either alphabet, Ed25519 signing and verification, and opening an
envelope into its message.

Bytes are signed, never structures: a verifier checks the exact payload bytes carried and only
then lets anything parse them. The rules of who must have signed what (inbound, at rest, at delivery)
are in `broker.rules.signatures`; this module holds the primitives they share.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import NamedTuple

import msgspec
import nacl.bindings
import nacl.exceptions
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.errors import UnreadableEnvelope
from schemas.message import ENVELOPE_DECODER, MESSAGE_DECODER, Envelope, Message

_STD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def pae(payload_type: str | bytes, payload: bytes) -> bytes:
    """`DSSEv1 SP LEN(type) SP type SP LEN(body) SP body`, LEN the byte length in decimal."""
    t = payload_type.encode("utf-8") if isinstance(payload_type, str) else payload_type
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def b64decode_any(text: str) -> bytes:
    """Decode RFC 4648 §4 or §5 base64 (padding optional); raise ValueError on anything else."""
    raw = text.encode("ascii", "strict") if text.isascii() else None
    if raw is None:
        raise ValueError("base64 text must be ASCII")
    body = raw.rstrip(b"=")
    if len(raw) - len(body) > 2:
        raise ValueError("too much base64 padding")
    chars = set(body)
    if chars <= _STD:
        std = body
    elif chars <= _URL:
        std = body.replace(b"-", b"+").replace(b"_", b"/")
    else:
        raise ValueError("not base64 (characters outside one alphabet)")
    if len(std) % 4 == 1:
        raise ValueError("base64 length is impossible")
    try:
        return base64.b64decode(std + b"=" * (-len(std) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64: {exc}") from None


def b64encode(data: bytes) -> str:
    """RFC 4648 §4 with padding: what the broker writes."""
    return base64.b64encode(data).decode("ascii")


# Verification is libsodium's (PyNaCl): measured about 2x faster than `cryptography`'s here, and
# stricter (it refuses non-canonical encodings and small-order points). Successful verifications are
# remembered by (key, signature, SHA-256 of the message): one process verifies the same originator
# signature at intake, in the dispatcher (integrity at rest) and in each adapter, and a check of
# identical bytes can only give the same answer. Different bytes (a corrupted stored copy, another
# key) never match an entry, so every check still sees its own bytes verified. The digest, not the
# message, is kept: 4096 messages of up to 256 KiB each would hold most of a GiB.
_VERIFIED_MAX = 4096
_verified: dict[tuple[bytes, bytes, bytes], None] = {}


def verify_raw(raw_public_key: bytes, signature: bytes, message: bytes) -> bool:
    entry = (raw_public_key, signature, hashlib.sha256(message).digest())
    if entry in _verified:
        return True
    if len(raw_public_key) != 32 or len(signature) != 64:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, raw_public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        return False
    if len(_verified) >= _VERIFIED_MAX:
        del _verified[next(iter(_verified))]
    _verified[entry] = None
    return True


def sign(private_key: Ed25519PrivateKey, payload_type: str, payload: bytes) -> bytes:
    return private_key.sign(pae(payload_type, payload))


def is_valid_public_key(raw: bytes) -> bool:
    """True iff `raw` is the canonical encoding of an Ed25519 point of the prime-order subgroup (not of
    small or mixed order): libsodium's `crypto_core_ed25519_is_valid_point`. No honest key generator
    makes any other point, so the policy refuses them at load time."""
    return len(raw) == 32 and bool(nacl.bindings.crypto_core_ed25519_is_valid_point(raw))


class Opened(NamedTuple):
    """An envelope read back: the envelope, its payload bytes (as signed) and their reading."""

    envelope: Envelope
    payload: bytes
    message: Message


def open_envelope(data: bytes) -> Opened:
    """Read stored or delivered envelope bytes into (envelope, payload, message); `UnreadableEnvelope`
    when they are not a DSSE envelope of a valid message. Signatures are not checked here."""
    try:
        env = ENVELOPE_DECODER.decode(data)
        payload = b64decode_any(env.payload)
        return Opened(env, payload, MESSAGE_DECODER.decode(payload))
    except (msgspec.DecodeError, ValueError) as exc:
        raise UnreadableEnvelope("not a DSSE envelope of a valid message") from exc
