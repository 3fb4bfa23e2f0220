"""DSSE: every public vector, plus the broker's own PAE and base64 rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.dsse import b64decode_any, b64encode, pae, sign
from tests.support.dsse import RawSignature, Refused, verify_threshold

VECTORS = json.loads((Path(__file__).parent / "data" / "dsse-vectors.json").read_text())


def _keys() -> dict[str, bytes]:
    return {name: bytes.fromhex(k["public"]) for name, k in VECTORS["keys"].items()}


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=[v["id"] for v in VECTORS["vectors"]])
def test_dsse_vector(vector: dict[str, Any]) -> None:
    env = vector["envelope"]
    payload = b64decode_any(env["payload"])
    if "pae" in vector and vector["expect"] == "accept":
        assert pae(env["payloadType"], payload).hex() == vector["pae"]
    trusted = {k: v for k, v in _keys().items() if k in vector["trustedKeys"]}
    sigs = [RawSignature(s.get("keyid"), s["sig"]) for s in env["signatures"]]
    args = (env["payloadType"], env["payload"], sigs, trusted)
    kw: dict[str, Any] = {
        "threshold": vector["threshold"],
        "supported_types": vector["supportedPayloadTypes"],
    }
    if vector["expect"] == "accept":
        assert verify_threshold(*args, **kw) == payload
    else:
        with pytest.raises(Refused):
            verify_threshold(*args, **kw)


def test_seeds_give_the_listed_public_keys() -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    for k in VECTORS["keys"].values():
        sk = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(k["seed"]))
        assert sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex() == k["public"]


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("tÿpe", "é".encode()) == b"DSSEv1 5 t\xc3\xbfpe 2 \xc3\xa9"


@pytest.mark.parametrize(
    "text",
    ["", "QQ", "QQ==", "-_8=", "+/8=", "+_8="[:0] + "aGk"],
)
def test_b64_either_alphabet(text: str) -> None:
    b64decode_any(text)


@pytest.mark.parametrize("text", ["+_8=", "aGk===", "a", "aGk!", "aGé=", "Q=Q="])
def test_b64_refuses_mixed_or_broken(text: str) -> None:
    with pytest.raises(ValueError):
        b64decode_any(text)


def test_sign_then_verify_and_tamper() -> None:
    sk = Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pub = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    payload = b'{"a":1}'
    sig = b64encode(sign(sk, "t", payload))
    ok = verify_threshold(
        "t", b64encode(payload), [RawSignature("k", sig)], {"k": pub}, threshold=1, supported_types=["t"]
    )
    assert ok == payload
    with pytest.raises(Refused):
        verify_threshold(
            "t",
            b64encode(b'{"a":2}'),
            [RawSignature("k", sig)],
            {"k": pub},
            threshold=1,
            supported_types=["t"],
        )
