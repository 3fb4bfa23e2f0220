"""Native documents end to end: stub X's outbox -> adapter X (inbound) -> gateway -> dispatcher ->
the other adapters -> the other stubs, for every kind each adapter may publish; hostile native input
is refused with a clear error and publishes nothing; CSV written for UDCG is formula-safe.

The adapters publish as their own senders (`<org>-adapter`), so the broker gives each message a new
id: messages are found again on the receiving side by a unique token in their body.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import defusedxml.ElementTree as DET

from adapters.formats import DeliveredMessage, NativeMessage, codec_for, sample_bodies
from adapters.formats.base import make_label
from adapters.formats.udcg import DELIVERED_COLUMNS
from adapters.stub import StubNativeSystem
from broker.app.options import ORGANISATIONS
from broker.app.system import System
from broker.identity.state import StatePaths
from broker.nats.bus import Bus
from broker.nats.names import ACCEPTED_STREAM
from broker.policy.defaults import DEFAULT_SENDERS
from schemas.label import Label
from tests.conftest import ClientFactory
from tests.support.messages import message, sealed
from tests.support.waiting import eventually

ALL = ["EUMAM", "NSATU", "UDCG"]
POLICY_OF = {"NSATU": "NATO", "EUMAM": "EU", "UDCG": "NATO"}
#: the body field that carries a unique token, per kind (to find the message on the other side)
TOKEN_FIELD = {
    "status.update": "topic",
    "capability.pledge": "pledge_ref",
    "delivery.status": "pledge_ref",
    "training.offer": "course",
    "training.request": "course",
    "lesson.learned": "title",
    "industry.exchange": "topic",
}


# ------------------------------------------------------------------------------------------ helpers


def tokened_body(kind: str) -> dict[str, Any]:
    body = json.loads(json.dumps(sample_bodies()[kind]))
    field = TOKEN_FIELD[kind]
    body[field] = f"{body[field]} [{uuid.uuid4().hex[:12]}]"
    return body


def nsatu_doc(kind: str, label: Label, body: dict[str, Any], ref: str) -> bytes:
    """An NSATU liaison document as the native system writes it (no broker provenance)."""
    assert label.policy == "NATO"
    marking = {
        "UNCLASSIFIED": "NATO UNCLASSIFIED",
        "RESTRICTED": "NATO RESTRICTED",
        "CONFIDENTIAL": "NATO CONFIDENTIAL",
        "SECRET": "NATO SECRET",
    }[label.classification]
    return json.dumps(
        {
            "doc_type": kind,
            "classification": marking,
            "releasability": "REL TO " + ", ".join(label.releasable_to),
            "caveats": list(label.caveats),
            "ref": ref,
            "in_reply_to": None,
            "content": body,
        },
        indent=2,
    ).encode()


def native_doc(codec_name: str, kind: str, label: Label, body: dict[str, Any], ref: str) -> bytes:
    """A document of `codec_name`'s format as its native system writes it: the codec's rendering with
    the broker-only provenance (originator, sender, created) removed."""
    if codec_name == "nsatu":
        return nsatu_doc(kind, label, body, ref)
    rendered = codec_for(codec_name).encode(
        DeliveredMessage(
            id=ref,
            kind=kind,
            originator="XX",
            sender="placeholder",
            created="2026-01-01T00:00:00Z",
            label=label,
            body=body,
        )
    )
    if codec_name == "eumam":
        root = DET.fromstring(rendered)
        for attr in ("originator", "sender", "created"):
            del root.attrib[attr]
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(
            root, encoding="utf-8", xml_declaration=False
        )
    rows = list(csv.reader(io.StringIO(rendered.decode(), newline="")))
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n").writerows(row[: -len(DELIVERED_COLUMNS)] for row in rows)
    return out.getvalue().encode()


def decoded(stub: StubNativeSystem) -> list[tuple[bytes, NativeMessage]]:
    codec = codec_for(stub.name)
    return [(doc.body, n) for doc in list(stub.received) for n in codec.decode(doc.body)]


def provenance(codec_name: str, raw: bytes) -> tuple[str, str]:
    """(originator, sender) as the broker wrote them into a delivered document."""
    if codec_name == "nsatu":
        d = json.loads(raw)["delivered"]
        return d["originator"], d["sender"]
    if codec_name == "eumam":
        a = DET.fromstring(raw).attrib
        return a["originator"], a["sender"]
    row = next(csv.DictReader(io.StringIO(raw.decode(), newline="")))
    return row["originator"], row["sender"]


def find(stub: StubNativeSystem, kind: str, body: dict[str, Any]) -> list[tuple[bytes, NativeMessage]]:
    return [(raw, n) for raw, n in decoded(stub) if n.kind == kind and n.body == body]


# ---------------------------------------------------------------------------------- round trip


async def test_every_native_format_round_trips_every_kind_it_may_publish(system: System, bus: Bus) -> None:
    policy = system.holder.current
    sent: list[tuple[str, str, Label, dict[str, Any]]] = []  # (org, kind, label, body)
    errors_before = {org: len(a.stats.inbound_errors) for org, a in system.adapters.items()}
    published_before = {org: a.stats.published for org, a in system.adapters.items()}
    per_org: dict[str, int] = {}
    for org, name in ORGANISATIONS.items():
        kinds = sorted(policy.senders[f"{name}-adapter"].publishes)
        assert set(kinds) == set(DEFAULT_SENDERS[f"{name}-adapter"][1])
        label = make_label(POLICY_OF[org], "RESTRICTED", ALL, [])
        for kind in kinds:
            body = tokened_body(kind)
            doc = native_doc(name, kind, label, body, f"{org}-DOC-{uuid.uuid4().hex[:8]}")
            [check] = codec_for(name).decode(doc)  # the document is valid in its own format
            assert (check.kind, check.label, check.body) == (kind, label, body)
            system.stubs[org].emit(doc)
            sent.append((org, kind, label, body))
        per_org[org] = len(kinds)
    assert len(sent) == 5 + 4 + 4

    def arrived() -> bool:
        return all(
            len(find(system.stubs[other], kind, body)) >= 1
            for org, kind, _l, body in sent
            for other in ORGANISATIONS
            if other != org
        )

    await eventually(arrived, timeout=30)
    for org, kind, label, body in sent:
        for other, other_name in ORGANISATIONS.items():
            if other == org:
                continue
            got = find(system.stubs[other], kind, body)
            assert len(got) == 1, f"{org} {kind} reached {other} {len(got)} times"
            raw, n = got[0]
            assert n.label == label, (org, kind, other, n.label)
            assert provenance(other_name, raw) == (org, f"{ORGANISATIONS[org]}-adapter")
    for org, adapter in system.adapters.items():
        assert adapter.stats.inbound_errors[errors_before[org] :] == []
        assert adapter.stats.published == published_before[org] + per_org[org]


# ------------------------------------------------------------------------------- hostile input

BILLION_LAUGHS = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE eumam-message [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<eumam-message kind="status.update">
  <marking>RESTREINT UE/EU RESTRICTED</marking>
  <releasability>REL TO EUMAM, NSATU</releasability>
  <caveats/>
  <body><topic>&lol9;</topic><state>GREEN</state><summary>x</summary></body>
</eumam-message>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE eumam-message [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<eumam-message kind="status.update">
  <marking>RESTREINT UE/EU RESTRICTED</marking>
  <releasability>REL TO EUMAM, NSATU</releasability>
  <caveats/>
  <body><topic>&xxe;</topic><state>GREEN</state><summary>x</summary></body>
</eumam-message>
"""


def _good(org: str) -> bytes:
    name = ORGANISATIONS[org]
    return native_doc(
        name,
        "status.update",
        make_label(POLICY_OF[org], "RESTRICTED", ALL, []),
        tokened_body("status.update"),
        f"{org}-OK-{uuid.uuid4().hex[:8]}",
    )


def _hostile() -> dict[str, list[tuple[bytes, str]]]:
    """Per organisation: (document, a phrase its refusal must contain)."""
    eumam_ok = _good("EUMAM").decode()
    nsatu_ok = json.loads(_good("NSATU"))
    header, row = list(csv.reader(io.StringIO(_good("UDCG").decode(), newline="")))

    def table(*rows: list[str]) -> bytes:
        out = io.StringIO(newline="")
        csv.writer(out, lineterminator="\r\n").writerows(rows)
        return out.getvalue().encode()

    return {
        "EUMAM": [
            (BILLION_LAUGHS, "must not contain a DTD"),
            (EXTERNAL_ENTITY, "must not contain a DTD"),
            (
                eumam_ok.replace("RESTREINT UE/EU RESTRICTED", "RESTREINT UE").encode(),
                "classification marking is not recognised",
            ),
            (eumam_ok.replace("RESTREINT UE/EU RESTRICTED", "NATO RESTRICTED").encode(), "carry EU markings"),
            (
                eumam_ok.replace(
                    "<eumam-message", "<!-- " + "x" * (1024 * 1024) + " -->\n<eumam-message"
                ).encode(),
                "larger than 1048576 bytes",
            ),
        ],
        "NSATU": [
            (
                json.dumps({**nsatu_ok, "classification": "NATO TOP SECRET"}).encode(),
                "classification marking is not recognised",
            ),
            (
                json.dumps({**nsatu_ok, "classification": "Nato Restricted"}).encode(),
                "did you mean 'NATO RESTRICTED'",
            ),
            (
                json.dumps({**nsatu_ok, "classification": "RESTREINT UE/EU RESTRICTED"}).encode(),
                "carry NATO markings",
            ),
            (
                json.dumps(
                    {**nsatu_ok, "content": {**nsatu_ok["content"], "summary": "x" * (1024 * 1024)}}
                ).encode(),
                "larger than 1048576 bytes",
            ),
        ],
        "UDCG": [
            # a header without its last column, and rows to match
            (table(header[:-1], row[:-1]), "header does not match a table"),
            # an extra column
            (table([*header, "notes"], [*row, "x"]), "header does not match a table"),
            # a row with a missing cell, and one with an extra cell
            (table(header, row[:-1]), "cells; expected"),
            (table(header, [*row, "extra"]), "cells; expected"),
            (table(header, ["NATO RESTRICTD", *row[1:]]), "classification marking is not recognised"),
            (table(header, *[row] * 20000), "larger than 1048576 bytes"),
        ],
    }


async def test_hostile_native_input_is_refused_clearly_and_publishes_nothing(
    system: System, bus: Bus
) -> None:
    cases = _hostile()
    before_seq = await bus.last_seq(ACCEPTED_STREAM)
    expected: dict[str, list[tuple[int, str]]] = {}
    errors_before = {org: len(a.stats.inbound_errors) for org, a in system.adapters.items()}
    published_before = {org: a.stats.published for org, a in system.adapters.items()}
    for org, docs in cases.items():
        expected[org] = [(system.stubs[org].emit(doc), phrase) for doc, phrase in docs]

    await eventually(
        lambda: all(
            len(system.adapters[org].stats.inbound_errors) - errors_before[org] >= len(exp)
            for org, exp in expected.items()
        ),
        timeout=30,
    )
    for org, exp in expected.items():
        new = system.adapters[org].stats.inbound_errors[errors_before[org] :]
        assert len(new) == len(exp), new
        for (seq, phrase), err in zip(exp, new, strict=True):
            assert err.startswith(f"document {seq}: "), err
            assert phrase in err, (phrase, err)
            for leaked in ("passwd", "lol9", "xxxxxxxx", "notes", "RESTRICTD", "Nato Restricted"):
                assert leaked not in err, err  # the refusal never echoes document content
        assert system.adapters[org].stats.published == published_before[org]
    assert await bus.last_seq(ACCEPTED_STREAM) == before_seq

    # each adapter still publishes a good document afterwards: exactly one message each
    for org in ORGANISATIONS:
        system.stubs[org].emit(_good(org))
    await eventually(
        lambda: all(system.adapters[o].stats.published == published_before[o] + 1 for o in ORGANISATIONS),
        timeout=30,
    )
    assert await bus.last_seq(ACCEPTED_STREAM) == before_seq + len(ORGANISATIONS)
    senders = set()
    for seq in range(before_seq + 1, before_seq + len(ORGANISATIONS) + 1):
        stored = await bus.get(ACCEPTED_STREAM, seq)
        senders.add(stored.headers.get("Coord-Sender"))
    assert senders == {f"{name}-adapter" for name in ORGANISATIONS.values()}


# ------------------------------------------------------------------------------- CSV injection

TRIGGERS = ("=", "+", "-", "@")


async def test_csv_for_udcg_neutralises_formula_cells(
    system: System, state: StatePaths, client_for: ClientFactory
) -> None:
    stub = system.stubs["UDCG"]
    rel = {
        "policy": "NATO",
        "classification": "RESTRICTED",
        "releasable_to": ["NSATU", "UDCG"],
        "caveats": [],
    }
    tag = uuid.uuid4().hex[:8]
    pledge = {
        "pledge_ref": f'=HYPERLINK("http://evil.example/{tag}","Click")',
        "nation": "DEU",
        "coalition": "@SUM(1+1)*cmd|' /C calc'!A0",
        "items": [
            {"designation": "+IRIS-T SLM launcher", "category": "-2+3+cmd|' /C calc'!A0", "quantity": 2},
            {"designation": "'=already quoted", "category": "air-defence", "quantity": 48},
        ],
        "delivery_window": {"from": "2026-04-01", "to": "2026-09-30"},
    }
    delivery = {
        "pledge_ref": f"-{tag}+1",
        "stage": "AT_HUB",
        "quantity_delivered": 24,
        "as_of": "2026-05-14T09:30:00Z",
    }
    m1 = message(
        sender="udcg-liaison", originator="UDCG", kind="capability.pledge", label={**rel}, body=pledge
    )
    m2 = message(kind="delivery.status", label={**rel}, body=delivery)
    r1 = await (await client_for("udcg-liaison")).post(sealed(state, m1))
    r2 = await (await client_for("nsatu-liaison")).post(sealed(state, m2))
    assert (r1.status, r2.status) == (202, 202), (r1.body, r2.body)

    codec = codec_for("udcg")

    def raw_for(msg_id: str) -> list[bytes]:
        return [d.body for d in list(stub.received) if any(n.ref == msg_id for n in codec.decode(d.body))]

    await eventually(lambda: len(raw_for(m1["id"])) == 1 and len(raw_for(m2["id"])) == 1, timeout=20)
    for msg_id, body in ((m1["id"], pledge), (m2["id"], delivery)):
        [raw] = raw_for(msg_id)
        cells = [c for row in csv.reader(io.StringIO(raw.decode(), newline="")) for c in row]
        for c in cells:
            assert not c.startswith((*TRIGGERS, "\t", "\r")), f"unneutralised cell {c!r}"
        [n] = codec.decode(raw)
        assert n.body == body  # and it reads back exactly
    pledge_cells = [
        c for row in csv.reader(io.StringIO(raw_for(m1["id"])[0].decode(), newline="")) for c in row
    ]
    for value in (
        pledge["pledge_ref"],
        pledge["coalition"],
        pledge["items"][0]["designation"],
        pledge["items"][0]["category"],
    ):
        assert "'" + value in pledge_cells
    assert "''=already quoted" in pledge_cells
    delivery_cells = [
        c for row in csv.reader(io.StringIO(raw_for(m2["id"])[0].decode(), newline="")) for c in row
    ]
    assert "'" + delivery["pledge_ref"] in delivery_cells


# ------------------------------------------------------------------------------- reply threads


async def test_native_reply_quoting_a_delivered_ref_keeps_the_thread(
    system: System, state: StatePaths, client_for: ClientFactory
) -> None:
    """A delivered document's `ref` is the broker's message id (docs/native-formats.md), so that a native
    reply can quote it in `in_reply_to`; the reply reaches the other organisations answering that id."""
    rel = {"policy": "NATO", "classification": "RESTRICTED", "releasable_to": ALL, "caveats": []}
    r = await (await client_for("eumam-liaison")).post(
        sealed(state, message(sender="eumam-liaison", originator="EUMAM", label=rel))
    )
    assert r.status == 202, r.body
    original = r.body["id"]
    nsatu = system.stubs["NSATU"]
    await eventually(lambda: any(n.ref == original for _raw, n in decoded(nsatu)), timeout=20)

    body = tokened_body("status.update")
    doc = json.loads(nsatu_doc("status.update", make_label("NATO", "RESTRICTED", ALL, []), body, "NSATU-R-1"))
    doc["in_reply_to"] = original
    nsatu.emit(json.dumps(doc).encode())
    for org in ("EUMAM", "UDCG"):
        await eventually(lambda o=org: len(find(system.stubs[o], "status.update", body)) == 1, timeout=20)
        [(_raw, reply)] = find(system.stubs[org], "status.update", body)
        assert reply.in_reply_to == original
        assert reply.ref != original
