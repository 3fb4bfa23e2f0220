"""C2SP signed-note / tlog-checkpoint: signing, strict parsing and verification."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.audit.merkle import EMPTY_ROOT
from broker.audit.note import Checkpoint, ed25519_key_id, parse_checkpoint, sign_checkpoint, verify_checkpoint
from broker.errors import BadNoteSignature, MalformedNote, NoteError, UnknownNoteKey, WrongOrigin

ORIGIN = "broker.example/audit"
KEY_NAME = "broker.example/audit"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
TRUSTED = {KEY_NAME: KEY.public_key()}
ROOT = hashlib.sha256(b"root").digest()
CP = Checkpoint(ORIGIN, 1234, ROOT)
DASH = "\u2014"


def _note(cp: Checkpoint = CP, name: str = KEY_NAME, key: Ed25519PrivateKey = KEY) -> str:
    return sign_checkpoint(cp, name, key)


def _sig_line(note: str) -> str:
    return note.split("\n\n", 1)[1]


def test_round_trip_and_format() -> None:
    note = _note()
    root_b64 = base64.b64encode(ROOT).decode()
    body, sig = note.split("\n\n")
    assert body == f"{ORIGIN}\n1234\n{root_b64}"
    assert sig.startswith(f"{DASH} {KEY_NAME} ")
    raw = base64.b64decode(sig.split(" ")[2])
    assert len(raw) == 68
    pub = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert raw[:4] == hashlib.sha256(KEY_NAME.encode() + b"\n\x01" + pub).digest()[:4]
    assert raw[:4] == ed25519_key_id(KEY_NAME, KEY.public_key())
    KEY.public_key().verify(raw[4:], f"{ORIGIN}\n1234\n{root_b64}\n".encode())

    assert verify_checkpoint(note, TRUSTED) == CP
    assert verify_checkpoint(note, TRUSTED, origin=ORIGIN) == CP
    cp, sigs = parse_checkpoint(note)
    assert cp == CP
    assert [(s.key_name, s.key_id) for s in sigs] == [(KEY_NAME, raw[:4])]


def test_go_sumdb_note_reference_vector() -> None:
    """Interop: the golang.org/x/mod/sumdb/note example key and signature (a plain note, not a checkpoint)."""
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    text = (
        "If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n"
    )
    sig = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
    name, key_id, key = vkey.split("+")
    typed_key = base64.b64decode(key)
    assert typed_key[0] == 0x01
    pub = Ed25519PublicKey.from_public_bytes(typed_key[1:])
    assert ed25519_key_id(name, pub) == bytes.fromhex(key_id)
    raw = base64.b64decode(sig)
    assert raw[:4] == bytes.fromhex(key_id)
    pub.verify(raw[4:], text.encode())


def test_empty_tree_checkpoint() -> None:
    cp = Checkpoint(ORIGIN, 0, EMPTY_ROOT)
    assert verify_checkpoint(_note(cp), TRUSTED) == cp
    with pytest.raises(MalformedNote, match="empty-tree root"):
        Checkpoint(ORIGIN, 0, ROOT)


def test_extra_untrusted_signatures_are_ignored() -> None:
    note = _note()
    other = _sig_line(_note(name="witness.example/w1", key=OTHER_KEY))
    combined = note + other
    assert verify_checkpoint(combined, TRUSTED) == CP
    # Order does not matter either.
    combined = note.split("\n\n")[0] + "\n\n" + other + _sig_line(note)
    assert verify_checkpoint(combined, TRUSTED) == CP


def _replace_body_line(note: str, index: int, value: str) -> str:
    body, sig = note.split("\n\n")
    lines = body.split("\n")
    lines[index] = value
    return "\n".join(lines) + "\n\n" + sig


def _flip_signature(note: str) -> str:
    body, sig = note.split("\n\n")
    prefix, b64 = sig.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[10] ^= 0x01
    return f"{body}\n\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"


def _forged_with_trusted_key_id() -> str:
    raw = ed25519_key_id(KEY_NAME, KEY.public_key()) + OTHER_KEY.sign(CP.body().encode())
    return f"{CP.body()}\n{DASH} {KEY_NAME} {base64.b64encode(raw).decode()}\n"


@pytest.mark.parametrize(
    "note",
    [
        pytest.param(_flip_signature(_note()), id="altered-signature"),
        pytest.param(_replace_body_line(_note(), 1, "1235"), id="altered-size"),
        pytest.param(
            _replace_body_line(_note(), 2, base64.b64encode(hashlib.sha256(b"x").digest()).decode()),
            id="altered-root",
        ),
        pytest.param(_replace_body_line(_note(), 0, "broker.example/other"), id="altered-origin"),
        pytest.param(_forged_with_trusted_key_id(), id="trusted-key-id-signed-by-other-key"),
    ],
)
def test_bad_signature(note: str) -> None:
    with pytest.raises(BadNoteSignature):
        verify_checkpoint(note, TRUSTED)


def test_unknown_key() -> None:
    with pytest.raises(UnknownNoteKey):
        verify_checkpoint(_note(name="someone.else/log", key=OTHER_KEY), TRUSTED)
    with pytest.raises(UnknownNoteKey):
        verify_checkpoint(_note(), {})


def test_key_name_collision_with_different_key() -> None:
    # Same key name, different key: the key ID differs, so the signature is not by a trusted key.
    with pytest.raises(UnknownNoteKey):
        verify_checkpoint(_note(key=OTHER_KEY), TRUSTED)


def test_trusted_signature_failure_is_not_masked_by_a_good_one() -> None:
    witness = "witness.example/w1"
    bad = _sig_line(_flip_signature(_note(name=witness, key=OTHER_KEY)))
    trusted = {KEY_NAME: KEY.public_key(), witness: OTHER_KEY.public_key()}
    with pytest.raises(BadNoteSignature):
        verify_checkpoint(_note() + bad, trusted)


def test_wrong_origin() -> None:
    note = _note(Checkpoint("broker.example/other", 5, ROOT))
    assert verify_checkpoint(note, TRUSTED).size == 5
    with pytest.raises(WrongOrigin):
        verify_checkpoint(note, TRUSTED, origin=ORIGIN)


GOOD = _note()
GOOD_BODY, GOOD_SIG = GOOD.split("\n\n")
ROOT_B64 = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    "note",
    [
        pytest.param("", id="empty"),
        pytest.param(GOOD.rstrip("\n"), id="no-final-newline"),
        pytest.param(GOOD_BODY + "\n" + GOOD_SIG, id="no-blank-line"),
        pytest.param(GOOD_BODY + "\n\n", id="no-signatures"),
        pytest.param(GOOD_BODY + "\nextension\n\n" + GOOD_SIG, id="extension-line"),
        pytest.param(f"{ORIGIN}\n1234\n\n" + GOOD_SIG, id="missing-root"),
        pytest.param(_replace_body_line(GOOD, 1, "01234"), id="leading-zero"),
        pytest.param(_replace_body_line(GOOD, 1, "+1234"), id="plus-sign"),
        pytest.param(_replace_body_line(GOOD, 1, "1_234"), id="underscore"),
        pytest.param(_replace_body_line(GOOD, 1, "\u0661\u0662"), id="non-ascii-digits"),
        pytest.param(_replace_body_line(GOOD, 1, "-1"), id="negative"),
        pytest.param(_replace_body_line(GOOD, 1, str(2**64)), id="size-overflow"),
        pytest.param(_replace_body_line(GOOD, 1, "0"), id="size-zero-nonempty-root"),
        pytest.param(_replace_body_line(GOOD, 2, ROOT_B64.rstrip("=")), id="unpadded-root"),
        pytest.param(_replace_body_line(GOOD, 2, "not*base64"), id="bad-base64-root"),
        pytest.param(_replace_body_line(GOOD, 2, base64.b64encode(ROOT[:31]).decode()), id="short-root"),
        pytest.param(_replace_body_line(GOOD, 2, ""), id="empty-root-line"),
        pytest.param(_replace_body_line(GOOD, 0, ""), id="empty-origin"),
        pytest.param(_replace_body_line(GOOD, 0, "a\rb"), id="control-char"),
        pytest.param(GOOD.replace(DASH, "-"), id="hyphen-not-em-dash"),
        pytest.param(GOOD.replace(f"{DASH} ", DASH), id="no-space-after-dash"),
        pytest.param(GOOD.replace(f" {KEY_NAME} ", f" {KEY_NAME}  "), id="double-space"),
        pytest.param(GOOD + GOOD_SIG, id="same-key-twice"),
        pytest.param(GOOD_BODY + "\n\n" + GOOD_SIG + "\n", id="blank-line-after-signatures"),
        pytest.param(GOOD_BODY + "\n\n" + GOOD_SIG.rstrip("\n") + "A\n", id="signature-bad-base64"),
        pytest.param(GOOD_BODY + "\n\n" + f"{DASH} {KEY_NAME} AAAA\n", id="signature-too-short"),
        pytest.param(GOOD_BODY + "\n\n" + GOOD_SIG * 101, id="too-many-signatures"),
    ],
)
def test_malformed(note: str) -> None:
    with pytest.raises(MalformedNote):
        parse_checkpoint(note)
    with pytest.raises(MalformedNote):
        verify_checkpoint(note, TRUSTED)


def test_errors_are_value_errors() -> None:
    assert issubclass(NoteError, ValueError)
    for cls in (MalformedNote, UnknownNoteKey, BadNoteSignature, WrongOrigin):
        assert issubclass(cls, NoteError)


@pytest.mark.parametrize("name", ["", "has space", "has+plus", "tab\tname"])
def test_sign_rejects_bad_key_names(name: str) -> None:
    with pytest.raises(ValueError, match="key name"):
        sign_checkpoint(CP, name, KEY)
