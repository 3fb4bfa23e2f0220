"""What the bench sends: one bench sender in a fresh dev state, and its signed envelopes.

Every message is a `delivery.status` of about 1 KB, NATO RESTRICTED, releasable to all three
organisations, so each one fans out to EUMAM, NSATU and UDCG.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
from pathlib import Path

BENCH_SENDER = "bench-nsatu"
BENCH_ORGS = ("EUMAM", "NSATU", "UDCG")
LABEL = {"policy": "NATO", "classification": "RESTRICTED", "releasable_to": list(BENCH_ORGS), "caveats": []}
BODY = {
    "pledge_ref": (
        "UDCG-ADC-2026-0117/IRIS-T-SLM/LOT-3: launchers, missiles and the TRML-4D radar of pledge "
        "0117, consolidated at the Rzeszow hub for hand-over to the receiving unit; escorted road move "
        "planned, customs pre-cleared, spares and tooling packed with the lot, training cohort 2 informed "
        "of the hand-over window; "
        "next report when the lot is handed over or if the window slips by more than 24 h"
    ),
    "stage": "AT_HUB",
    "quantity_delivered": 24,
    "as_of": "2026-05-14T09:30:00Z",
}
# a message id (UUIDv7) inside a delivered document: how the stubs tell which message arrived
MESSAGE_ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def prepare_state(root: Path) -> None:
    """The dev PKI and policy `broker up` makes, plus a bench sender of NSATU with a high rate limit."""
    from broker.identity.state import StatePaths
    from broker.policy.admin import new_sender
    from broker.policy.defaults import ensure_defaults
    from broker.policy.loader import load_policy
    from broker.policy.render import write_policy

    paths = StatePaths(root)
    ensure_defaults(paths)
    new_sender(paths, BENCH_SENDER, "NSATU", ["delivery.status"])
    policy = load_policy(paths.policy)
    sender = dataclasses.replace(policy.senders[BENCH_SENDER], rate_per_s=1e9)
    write_policy(paths.policy, dataclasses.replace(policy, senders={**policy.senders, BENCH_SENDER: sender}))


class Sealer:
    """Signed envelopes of the bench sender; each call makes fresh ids and `created` times."""

    def __init__(self, root: Path) -> None:
        from broker.identity.keys import load_signing_key
        from broker.identity.state import StatePaths

        self.paths = StatePaths(root)
        self.keyid, self.key = load_signing_key(self.paths, BENCH_SENDER)

    def make(self, n: int) -> list[tuple[str, bytes]]:
        from broker.client import build_message, seal_message

        out = []
        for _ in range(n):
            msg = build_message(
                kind="delivery.status", sender=BENCH_SENDER, originator="NSATU", label=LABEL, body=BODY
            )
            out.append((str(msg["id"]), seal_message(msg, self.keyid, self.key)))
        return out

    def client_ssl(self) -> ssl.SSLContext:
        from broker.identity.tls import client_context

        p = self.paths
        return client_context(p.ca_crt, p.tls_crt(BENCH_SENDER), p.tls_key(BENCH_SENDER))
