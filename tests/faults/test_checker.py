"""The fault suite's checker must see each kind of failure it exists to catch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapters.formats import DeliveredMessage, codec_for
from adapters.stub import Document
from broker.client import uuid7
from schemas.label import Label
from tests.faults.harness import LoadReport, check, longest_gap, misordered

LABEL = Label(
    policy="NATO", classification="RESTRICTED", releasable_to=["EUMAM", "NSATU", "UDCG"], caveats=[]
)


@dataclass
class FakeStub:
    received: list[Document] = field(default_factory=list)


def _doc(org: str, msg_id: str) -> Document:
    dm = DeliveredMessage(
        id=msg_id,
        kind="status.update",
        originator="NSATU",
        sender="nsatu-liaison",
        created="2026-11-26T10:00:00Z",
        label=LABEL,
        body={"topic": "t", "state": "GREEN", "summary": "s"},
    )
    return Document(1, codec_for(org.lower()).encode(dm), "x")


def test_checker_names_lost_unexpected_duplicated_misdelivered() -> None:
    a, b, c, d = (uuid7() for _ in range(4))
    report = LoadReport(sent=3)
    report.acknowledged = {a: frozenset({"NSATU", "EUMAM"}), b: frozenset({"NSATU"}), d: frozenset({"NSATU"})}
    stubs: dict[str, Any] = {
        "NSATU": FakeStub([_doc("NSATU", a), _doc("NSATU", a), _doc("NSATU", d)]),  # a twice; b lost
        "EUMAM": FakeStub([_doc("EUMAM", a), _doc("EUMAM", b), _doc("EUMAM", c)]),  # b not cleared; c unknown
        "UDCG": FakeStub([]),
    }
    r = check(report, stubs)
    assert r.duplicated == [("NSATU", a)]
    assert r.lost == [("NSATU", b)]
    assert r.misdelivered == [("EUMAM", b)]
    assert r.unexpected == [("EUMAM", c)]
    assert not r.clean
    clean = check(
        LoadReport(sent=1, acknowledged={d: frozenset({"NSATU"})}), {"NSATU": FakeStub([_doc("NSATU", d)])}
    )
    assert clean.clean


def test_longest_gap() -> None:
    assert longest_gap([1.0, 2.0, 6.0, 6.5], after=1.5) == 4.0
    assert longest_gap([], after=0.0) == 0.0


def test_audit_completeness_names_missing_and_doubled_records() -> None:
    import json

    from tests.faults.harness import audit_completeness

    a, b = uuid7(), uuid7()
    report = LoadReport(sent=2, acknowledged={a: frozenset({"NSATU"}), b: frozenset({"NSATU"})})

    def rec(event: str, msg_id: str, actor: str) -> bytes:
        return json.dumps({"type": "record", "event": event, "message_id": msg_id, "actor": actor}).encode()

    lines = [
        rec("accepted", a, "nsatu-liaison"),
        rec("released", a, "NSATU"),
        rec("delivered", a, "NSATU"),
        rec("delivered", a, "NSATU"),
        rec("accepted", b, "nsatu-liaison"),
        rec("released", b, "EUMAM"),
    ]
    c = audit_completeness(lines, report)
    assert c.missing == [f"released {b} NSATU", f"delivered {b} NSATU"]
    assert c.delivered_twice == [(a, "NSATU")]
    assert c.released_to_uncleared == [(b, "EUMAM")]


def test_checker_names_what_arrived_after_a_later_accepted_message() -> None:
    got = {"EUMAM": ["a", "c", "b", "b", "d"], "NSATU": ["a", "b", "c"]}
    seq = {"a": 1, "b": 2, "c": 3, "d": 4}
    assert misordered(got, seq) == [("EUMAM", "b")]
    assert misordered({"UDCG": ["x", "a"]}, seq) == []  # an unexpected id is not an order fault
