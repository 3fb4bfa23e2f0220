"""The ready-to-paste example `broker up` prints: a signed envelope on disk and a curl using it."""

from __future__ import annotations

import shlex

from broker.client import build_message, seal_message
from broker.identity.keys import load_signing_key
from broker.identity.state import StatePaths

EXAMPLE_SENDER = "nsatu-liaison"


def example_curl(paths: StatePaths, gateway_url: str) -> str:
    keyid, key = load_signing_key(paths, EXAMPLE_SENDER)
    msg = build_message(
        kind="status.update",
        sender=EXAMPLE_SENDER,
        originator="NSATU",
        label={
            "policy": "NATO",
            "classification": "RESTRICTED",
            "releasable_to": ["EUMAM", "NSATU"],
            "caveats": [],
        },
        body={
            "topic": "Air-defence hub Rzeszow",
            "state": "GREEN",
            "summary": "Hub operating normally; two convoys cleared today.",
        },
    )
    out = paths.root / "examples" / "status-update.envelope.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(seal_message(msg, keyid, key))
    ident = paths.identity_dir(EXAMPLE_SENDER)
    q = shlex.quote
    return (
        f"curl --cacert {q(str(paths.ca_crt))} \\\n"
        f"  --cert {q(str(ident / 'tls.crt'))} --key {q(str(ident / 'tls.key'))} \\\n"
        f"  -H 'Content-Type: application/json' --data-binary @{q(str(out))} \\\n"
        f"  {gateway_url}/v1/messages"
    )
