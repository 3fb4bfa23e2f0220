"""One message's trail through the broker, from its audit records (pure; no I/O).

    accepted ──▶ per organisation: released ──▶ delivered | dead-lettered
                                    withheld (the ICD §2 rule that failed)

Each step carries its record index, its time, and its latency: `released`/`withheld` from `accepted`,
`delivered`/`dead-lettered` from that organisation's `released`. A message refused at the gateway has
`rejected` records only (its bytes were never stored, so it has no content either).

The builder also says when a trail is `complete`: accepted, and every organisation decided, and every
released one delivered or dead-lettered. The console stops reading the log there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.audit.records import AuditRecord
from broker.rules.intake import parse_created

#: each step's predecessor, the step its latency is measured from
_AFTER = {
    "released": "accepted",
    "withheld": "accepted",
    "delivered": "released",
    "dead-lettered": "released",
}


def _when(text: str) -> datetime | None:
    try:
        return parse_created(text)
    except ValueError:
        return None


def _ms(later: str, earlier: str | None) -> float | None:
    if earlier is None:
        return None
    a, b = _when(later), _when(earlier)
    if a is None or b is None:
        return None
    return round((a - b).total_seconds() * 1000.0, 3)


def step(rec: AuditRecord, previous: str | None, accepted: str | None) -> dict[str, Any]:
    return {
        "event": rec.event,
        "index": rec.index,
        "time": rec.time,
        "actor": rec.actor,
        "reason": rec.reason,
        "latency_ms": _ms(rec.time, previous),
        "since_accepted_ms": _ms(rec.time, accepted),
    }


@dataclass
class _Org:
    code: str
    outcome: str = "pending"
    rule: str | None = None
    released_at: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Trail:
    """Fed the records of one message in log order (`add`), rendered by `to_dict`."""

    message_id: str
    organisations: tuple[str, ...]  # the policy's, at the time the trail is asked for
    first: AuditRecord | None = None  # the record the trail's label and kind come from
    accepted: AuditRecord | None = None
    rejected: list[AuditRecord] = field(default_factory=list)
    orgs: dict[str, _Org] = field(default_factory=dict)

    def add(self, rec: AuditRecord) -> None:
        if rec.message_id != self.message_id:
            return
        if self.first is None or (rec.event == "accepted" and self.accepted is None):
            self.first = rec
        if rec.event == "accepted":
            if self.accepted is None:  # after a crash `accepted` may be written twice: the first counts
                self.accepted = rec
            return
        if rec.event == "rejected":
            self.rejected.append(rec)
            return
        if rec.actor is None or rec.event not in _AFTER:
            return
        org = self.orgs.setdefault(rec.actor, _Org(rec.actor))
        accepted = self.accepted.time if self.accepted is not None else None
        previous = accepted if _AFTER[rec.event] == "accepted" else org.released_at
        org.steps.append(step(rec, previous, accepted))
        if rec.event == "released":
            org.released_at = org.released_at or rec.time
            if org.outcome == "pending":
                org.outcome = "released"
        elif rec.event == "withheld":
            org.outcome, org.rule = "withheld", rec.reason
        else:  # delivered / dead-lettered: final
            org.outcome = rec.event
            if rec.event == "dead-lettered":
                org.rule = rec.reason

    @property
    def complete(self) -> bool:
        if self.accepted is None:
            return False
        return all(
            code in self.orgs and self.orgs[code].outcome in ("withheld", "delivered", "dead-lettered")
            for code in self.organisations
        )

    def to_dict(self) -> dict[str, Any]:
        first = self.first
        accepted = self.accepted
        codes = sorted({*self.organisations, *self.orgs})
        return {
            "message_id": self.message_id,
            "found": first is not None,
            "kind": first.kind if first else None,
            "originator": first.originator if first else None,
            "accepted": step(accepted, None, None) if accepted is not None else None,
            "rejected": [step(r, None, None) for r in self.rejected],
            "organisations": [
                {
                    "organisation": code,
                    "outcome": self.orgs[code].outcome if code in self.orgs else "pending",
                    "rule": self.orgs[code].rule if code in self.orgs else None,
                    "steps": self.orgs[code].steps if code in self.orgs else [],
                }
                for code in codes
            ]
            if accepted is not None or self.orgs
            else [],
            "complete": self.complete,
        }
