"""Messages and envelopes for tests: the default label and body, build, seal, edit."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.client import build_message, seal_message
from broker.identity.keys import load_signing_key
from broker.identity.state import StatePaths

LABEL_NR = {
    "policy": "NATO",
    "classification": "RESTRICTED",
    "releasable_to": ["EUMAM", "NSATU"],
    "caveats": [],
}
STATUS_BODY = {"topic": "Hub Rzeszow", "state": "GREEN", "summary": "Nominal."}

Signer = tuple[str, Ed25519PrivateKey]


def signer(state: StatePaths, ident: str) -> Signer:
    return load_signing_key(state, ident)


def message(
    sender: str = "nsatu-liaison",
    originator: str = "NSATU",
    kind: str = "status.update",
    label: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    return build_message(
        kind=kind,
        sender=sender,
        originator=originator,
        label=label or LABEL_NR,
        body=body or STATUS_BODY,
        **kw,
    )


def sealed(state: StatePaths, msg: dict[str, Any], ident: str | None = None) -> bytes:
    keyid, key = signer(state, ident or msg["sender"])
    return seal_message(msg, keyid, key)


def env_edit(env: bytes, fn: Callable[[dict[str, Any]], None]) -> bytes:
    """The envelope with `fn` applied to its JSON (re-encoded compactly)."""
    doc: dict[str, Any] = json.loads(env)
    fn(doc)
    return json.dumps(doc, separators=(",", ":")).encode()
