"""Signed audit checkpoints: C2SP ``signed-note`` with a ``tlog-checkpoint`` body and Ed25519 signatures.

This module owns the text form of the checkpoints of ICD section 7 (https://c2sp.org/signed-note,
https://c2sp.org/tlog-checkpoint)::

    <origin>\\n<tree size>\\n<base64 root hash>\\n
    \\n
    — <key name> <base64(4-byte key ID || 64-byte Ed25519 signature)>\\n

The signature covers the three body lines, each with its newline. The key ID is
``SHA-256(key name || 0x0A || 0x01 || raw 32-byte public key)[:4]``.

Parsing is strict: exactly three body lines (no extension lines), a canonical decimal size below 2**64,
canonical standard base64 everywhere, a 32-byte root (the empty-tree root for size 0), no ASCII control
characters other than newline, between 1 and :data:`MAX_SIGNATURES` signature lines and no key
(name and ID) signing twice. Verification follows the signed-note rules: signatures by keys that are not
trusted (name or key ID differs) are ignored, a failing signature by a trusted key rejects the note, and
at least one trusted signature must verify.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.audit.merkle import EMPTY_ROOT, HASH_SIZE
from broker.errors import BadNoteSignature, MalformedNote, UnknownNoteKey, WrongOrigin

__all__ = [
    "MAX_SIGNATURES",
    "Checkpoint",
    "NoteSignature",
    "ed25519_key_id",
    "log_origin",
    "parse_checkpoint",
    "sign_checkpoint",
    "verify_checkpoint",
]

MAX_SIGNATURES = 100
_SIG_PREFIX = "\u2014 "
_ED25519_TYPE = b"\x01"
_ED25519_SIG_SIZE = 64
_KEY_ID_SIZE = 4
_MAX_SIZE = 2**64
_SIZE_RE = re.compile(r"0|[1-9][0-9]*", re.ASCII)







def log_origin(instance: str) -> str:
    """The origin line of one broker instance's checkpoints: `coord-broker/<instance>`."""
    return f"coord-broker/{instance}"


def _has_control(text: str) -> bool:
    return any(c < " " and c != "\n" for c in text)


def _valid_key_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() for c in name) and not _has_control(name)


def _b64decode_canonical(text: str) -> bytes:
    """Decode standard base64, refusing anything that does not re-encode to the same text."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise MalformedNote(f"bad base64 {text!r}: {exc}") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise MalformedNote(f"non-canonical base64 {text!r}")
    return raw


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: log origin, tree size and RFC 9162 root; invalid values raise :class:`MalformedNote`."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _has_control(self.origin):
            raise MalformedNote(f"invalid checkpoint origin {self.origin!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size < _MAX_SIZE:
            raise MalformedNote(f"invalid checkpoint tree size {self.size!r}")
        if len(self.root) != HASH_SIZE:
            raise MalformedNote(f"checkpoint root hash is {len(self.root)} bytes, expected {HASH_SIZE}")
        if self.size == 0 and self.root != EMPTY_ROOT:
            raise MalformedNote("checkpoint of size 0 must carry the empty-tree root")

    def body(self) -> str:
        """Return the signed note text (the three body lines, each ending in a newline)."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode('ascii')}\n"


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key ID and the signature bytes that follow it."""

    key_name: str
    key_id: bytes
    signature: bytes


def ed25519_key_id(key_name: str, public_key: Ed25519PublicKey) -> bytes:
    """Return the signed-note key ID of an Ed25519 key (signature type 0x01)."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(key_name.encode("utf-8") + b"\n" + _ED25519_TYPE + raw).digest()[:_KEY_ID_SIZE]


def sign_checkpoint(cp: Checkpoint, key_name: str, private_key: Ed25519PrivateKey) -> str:
    """Return the full signed note text of ``cp`` with one Ed25519 signature by ``key_name``."""
    if not _valid_key_name(key_name):
        raise ValueError(f"invalid note key name {key_name!r}")
    body = cp.body()
    key_id = ed25519_key_id(key_name, private_key.public_key())
    signature = private_key.sign(body.encode("utf-8"))
    encoded = base64.b64encode(key_id + signature).decode("ascii")
    return f"{body}\n{_SIG_PREFIX}{key_name} {encoded}\n"


def _parse_signature(line: str) -> NoteSignature:
    if not line.startswith(_SIG_PREFIX):
        raise MalformedNote(f"signature line does not start with an em dash and a space: {line!r}")
    parts = line[len(_SIG_PREFIX) :].split(" ")
    if len(parts) != 2 or not _valid_key_name(parts[0]):
        raise MalformedNote(f"signature line is not '— <key name> <base64>': {line!r}")
    raw = _b64decode_canonical(parts[1])
    if len(raw) <= _KEY_ID_SIZE:
        raise MalformedNote(f"signature of {parts[0]!r} is too short")
    return NoteSignature(parts[0], raw[:_KEY_ID_SIZE], raw[_KEY_ID_SIZE:])


def parse_checkpoint(note: str) -> tuple[Checkpoint, list[NoteSignature]]:
    """Parse a signed checkpoint without checking signatures; raise :class:`MalformedNote` if malformed."""
    if _has_control(note):
        raise MalformedNote("note contains ASCII control characters")
    if not note.endswith("\n"):
        raise MalformedNote("note does not end in a newline")
    sep = note.rfind("\n\n")
    if sep < 0:
        raise MalformedNote("note has no blank line before its signatures")
    body, sig_text = note[: sep + 1], note[sep + 2 :]
    if not sig_text:
        raise MalformedNote("note has no signatures")
    sig_lines = sig_text[:-1].split("\n")
    if len(sig_lines) > MAX_SIGNATURES:
        raise MalformedNote(f"note has more than {MAX_SIGNATURES} signatures")
    signatures = [_parse_signature(line) for line in sig_lines]
    if len({(s.key_name, s.key_id) for s in signatures}) != len(signatures):
        raise MalformedNote("the same key signs the note more than once")

    lines = body[:-1].split("\n")
    if len(lines) != 3:
        raise MalformedNote(f"checkpoint body has {len(lines)} lines, expected 3 (origin, size, root)")
    origin, size_text, root_text = lines
    if not _SIZE_RE.fullmatch(size_text):
        raise MalformedNote(f"checkpoint tree size {size_text!r} is not a canonical decimal")
    cp = Checkpoint(origin, int(size_text), _b64decode_canonical(root_text))
    # With canonical size and base64 enforced, cp.body() is exactly the signed text.
    return cp, signatures


def verify_checkpoint(
    note: str, trusted: Mapping[str, Ed25519PublicKey], origin: str | None = None
) -> Checkpoint:
    """Return the checkpoint of ``note`` once a signature by a key of ``trusted`` verifies.

    ``trusted`` maps key names to Ed25519 public keys; when ``origin`` is given the checkpoint must be for
    that log. Raise :class:`MalformedNote`, :class:`UnknownNoteKey`, :class:`BadNoteSignature` or
    :class:`WrongOrigin`.
    """
    cp, signatures = parse_checkpoint(note)
    message = cp.body().encode("utf-8")
    verified = False
    for sig in signatures:
        key = trusted.get(sig.key_name)
        if key is None or ed25519_key_id(sig.key_name, key) != sig.key_id:
            continue
        if len(sig.signature) != _ED25519_SIG_SIZE:
            raise BadNoteSignature(f"signature by {sig.key_name!r} is not {_ED25519_SIG_SIZE} bytes")
        try:
            key.verify(sig.signature, message)
        except InvalidSignature as exc:
            raise BadNoteSignature(f"signature by {sig.key_name!r} does not verify") from exc
        verified = True
    if not verified:
        names = ", ".join(sorted({s.key_name for s in signatures}))
        raise UnknownNoteKey(f"no signature by a trusted key (signed by: {names})")
    if origin is not None and cp.origin != origin:
        raise WrongOrigin(f"checkpoint is for origin {cp.origin!r}, expected {origin!r}")
    return cp
