"""Native-format codecs: round trips for every kind and codec, and hostile input refused."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.formats import (
    CODECS,
    MAX_NATIVE_BYTES,
    Codec,
    DeliveredMessage,
    EumamCodec,
    NsatuCodec,
    UdcgCodec,
    codec_for,
    sample_bodies,
)
from adapters.formats.base import make_label
from adapters.formats.bodies import validate_body
from adapters.formats.udcg import neutralise_cell, restore_cell
from broker.errors import BrokerError, MarkingError, NativeFormatError
from schemas.clearance import RANK
from schemas.kinds import KINDS
from schemas.label import Label

MSG_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
REPLY_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"
SECRET = "ZZSECRETCONTENTZZ"
LONG_NAME = "x" * 32 + SECRET  # unknown names are echoed only truncated to 32 characters

NSATU = NsatuCodec()
EUMAM = EumamCodec()
UDCG = UdcgCodec()
ALL = [NSATU, EUMAM, UDCG]
IDS = [c.name for c in ALL]


def nato(level: str = "RESTRICTED", rel: list[str] | None = None, caveats: list[str] | None = None) -> Label:
    return make_label("NATO", level, rel or ["EUMAM", "NSATU", "UDCG"], caveats or [])


def eu(level: str = "RESTRICTED", rel: list[str] | None = None, caveats: list[str] | None = None) -> Label:
    return make_label("EU", level, rel or ["EUMAM", "NSATU"], caveats or [])


def delivered(
    kind: str, body: dict[str, Any] | None = None, label: Label | None = None, **kw: Any
) -> DeliveredMessage:
    return DeliveredMessage(
        id=kw.pop("id", MSG_ID),
        kind=kind,
        originator=kw.pop("originator", "NSATU"),
        sender=kw.pop("sender", "nsatu-liaison"),
        created=kw.pop("created", "2026-05-14T09:30:00Z"),
        label=label or nato(),
        body=sample_bodies()[kind] if body is None else body,
        in_reply_to=kw.pop("in_reply_to", None),
    )


def refused(codec: Codec, data: bytes, *fragments: str, error: type[BrokerError] = NativeFormatError) -> str:
    """Decoding must raise `error` (nothing returned); the message names what was expected."""
    with pytest.raises(error) as info:
        codec.decode(data)
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text, text
    assert SECRET not in text
    assert len(text) < 1200
    return text


# ------------------------------------------------------------------------------------------- round trips


def test_codecs_registry() -> None:
    assert set(CODECS) == {"nsatu", "eumam", "udcg"}
    assert codec_for("NSATU") is CODECS["nsatu"]
    assert CODECS["nsatu"].media_type == "application/vnd.nsatu.liaison+json"
    assert CODECS["eumam"].media_type == "application/vnd.eumam.liaison+xml"
    assert CODECS["udcg"].media_type == "text/csv"
    with pytest.raises(NativeFormatError, match="expected one of"):
        codec_for("nope")


def test_sample_bodies_cover_every_kind_and_validate() -> None:
    bodies = sample_bodies()
    assert tuple(bodies) == KINDS
    for kind, body in bodies.items():
        assert validate_body(kind, body) == body


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("codec", ALL, ids=IDS)
@pytest.mark.parametrize("label", [nato(), eu(), nato("SECRET", caveats=["UKR-EYES"]), eu("UNCLASSIFIED")])
def test_round_trip_every_kind_every_codec(codec: Codec, kind: str, label: Label) -> None:
    msg = delivered(kind, label=label, in_reply_to=REPLY_ID)
    [back] = codec.decode(codec.encode(msg))
    assert back.kind == kind
    assert back.body == msg.body
    assert RANK[back.label.classification] == RANK[label.classification]
    assert back.label == label  # the original policy is carried beside the rendered marking
    assert back.ref == MSG_ID
    assert back.in_reply_to == REPLY_ID


@pytest.mark.parametrize("codec", ALL, ids=IDS)
def test_encode_renders_the_formats_policy(codec: Codec) -> None:
    text = codec.encode(delivered("status.update", label=eu("CONFIDENTIAL"))).decode()
    if codec.name == "eumam":
        assert "<marking>CONFIDENTIEL UE/EU CONFIDENTIAL</marking>" in text
    else:
        assert "NATO CONFIDENTIAL" in text and "CONFIDENTIEL UE/EU CONFIDENTIAL" in text
    text = codec.encode(delivered("status.update", label=nato("TOP SECRET"))).decode()
    if codec.name == "eumam":
        assert '<marking original="COSMIC TOP SECRET">TRES SECRET UE/EU TOP SECRET</marking>' in text
    else:
        assert "COSMIC TOP SECRET" in text and "UE/EU" not in text


NSATU_DOC = {
    "doc_type": "delivery.status",
    "classification": "NATO RESTRICTED",
    "releasability": "REL TO EUMAM, NSATU, UDCG",
    "caveats": [],
    "ref": "NSATU-LOG-2026-0042",
    "in_reply_to": None,
    "content": {
        "pledge_ref": "UDCG-ADC-2026-0117",
        "stage": "AT_HUB",
        "quantity_delivered": 24,
        "as_of": "2026-05-14T09:30:00Z",
    },
}


def nsatu_doc(**changes: Any) -> bytes:
    doc = {**NSATU_DOC, **changes}
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


def test_nsatu_native_document() -> None:
    [m] = NSATU.decode(nsatu_doc())
    assert m.kind == "delivery.status"
    assert m.label == nato("RESTRICTED", ["EUMAM", "NSATU", "UDCG"])
    assert m.ref == "NSATU-LOG-2026-0042" and m.in_reply_to is None
    assert m.body["quantity_delivered"] == 24
    [m] = NSATU.decode(nsatu_doc(ref=..., in_reply_to=..., caveats=["UKR-EYES"]))
    assert m.ref is None and m.label.caveats == ["UKR-EYES"]


EUMAM_DOC = """<?xml version="1.0" encoding="UTF-8"?>
<eumam-message kind="training.offer" ref="EUMAM-TRG-2026-017">
  <marking>RESTREINT UE/EU RESTRICTED</marking>
  <releasability>REL TO EUMAM, NSATU</releasability>
  <caveats/>
  <body>
    <course>IRIS-T SLM operator &amp; maintainer course</course>
    <location>Todendorf, DEU</location>
    <start>2026-06-01</start>
    <end>2026-07-24</end>
    <seats>40</seats>
  </body>
</eumam-message>
"""


def eumam_doc(old: str = "", new: str = "") -> bytes:
    return EUMAM_DOC.replace(old, new).encode() if old else EUMAM_DOC.encode()


def test_eumam_native_document() -> None:
    [m] = EUMAM.decode(eumam_doc())
    assert m.kind == "training.offer" and m.ref == "EUMAM-TRG-2026-017"
    assert m.label == eu("RESTRICTED", ["EUMAM", "NSATU"])
    assert m.body["course"] == "IRIS-T SLM operator & maintainer course"
    assert m.body["seats"] == 40


PLEDGE_HEAD = (
    "marking,releasability,caveats,ref,in_reply_to,pledge_ref,nation,coalition,"
    "window_from,window_to,designation,category,quantity"
)
PLEDGE_ROW = (
    'NATO RESTRICTED,"REL TO NSATU, UDCG",,PL-1,,UDCG-ADC-0117,DEU,IAMD,2026-04-01,2026-09-30,{d},{c},{q}'
)


def pledge_csv(*rows: str, head: str = PLEDGE_HEAD) -> bytes:
    return ("\r\n".join([head, *rows]) + "\r\n").encode()


def test_udcg_pledge_rows_grouped_by_pledge_ref() -> None:
    other = PLEDGE_ROW.replace("UDCG-ADC-0117", "UDCG-ADC-0200").replace("PL-1", "PL-2")
    data = pledge_csv(
        PLEDGE_ROW.format(d="IRIS-T SLM launcher", c="air-defence", q=2),
        PLEDGE_ROW.format(d="IRIS-T SLM missile", c="air-defence-munition", q=48),
        other.format(d="Gepard", c="air-defence", q=15),
    )
    first, second = UDCG.decode(data)
    assert first.kind == second.kind == "capability.pledge"
    assert [i["quantity"] for i in first.body["items"]] == [2, 48]
    assert first.body["delivery_window"] == {"from": "2026-04-01", "to": "2026-09-30"}
    assert first.ref == "PL-1" and second.ref == "PL-2"
    assert second.body["items"] == [{"designation": "Gepard", "category": "air-defence", "quantity": 15}]
    assert first.label == nato("RESTRICTED", ["NSATU", "UDCG"])


def test_udcg_pledge_group_must_agree_and_be_consecutive() -> None:
    row = PLEDGE_ROW.format(d="Gepard", c="air-defence", q=1)
    refused(UDCG, pledge_csv(row, row.replace("DEU", "NLD")), "column nation", "differs")
    other = PLEDGE_ROW.replace("UDCG-ADC-0117", "UDCG-ADC-0200").format(d="x", c="y", q=1)
    refused(UDCG, pledge_csv(row, other, row), "consecutive")


def test_udcg_delivery_table_one_row_a_message() -> None:
    head = "marking,releasability,caveats,ref,in_reply_to,pledge_ref,stage,quantity_delivered,as_of"
    rows = [
        'NATO UNCLASSIFIED,"REL TO NSATU, UDCG",,D-1,,UDCG-ADC-0117,IN_TRANSIT,0,2026-05-01',
        'NATO RESTRICTED,"REL TO NSATU, UDCG",UKR-EYES,,D-1,UDCG-ADC-0117,HANDED_OVER,24,2026-05-20',
    ]
    a, b = UDCG.decode(pledge_csv(*rows, head=head))
    assert a.body["stage"] == "IN_TRANSIT" and a.label.classification == "UNCLASSIFIED"
    assert b.body["quantity_delivered"] == 24 and b.label.caveats == ["UKR-EYES"]
    assert b.ref is None and b.in_reply_to == "D-1"


def test_udcg_generic_table() -> None:
    head = "marking,releasability,caveats,ref,in_reply_to,kind,body_json"
    body = json.dumps(sample_bodies()["lesson.learned"]).replace('"', '""')
    [m] = UDCG.decode(pledge_csv(f'NATO SECRET,REL TO UDCG,,,,lesson.learned,"{body}"', head=head))
    assert m.kind == "lesson.learned" and m.body == sample_bodies()["lesson.learned"]
    body = json.dumps(sample_bodies()["delivery.status"]).replace('"', '""')
    refused(UDCG, pledge_csv(f'NATO SECRET,REL TO UDCG,,,,delivery.status,"{body}"', head=head), "own table")


def test_udcg_accepts_a_leading_bom() -> None:
    data = b"\xef\xbb\xbf" + pledge_csv(PLEDGE_ROW.format(d="Gepard", c="air-defence", q=1))
    assert len(UDCG.decode(data)) == 1


# ------------------------------------------------------------------------------------------- XML attacks

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<eumam-message kind="status.update"><marking>UNCLASSIFIED</marking>
<releasability>REL TO EUMAM</releasability><caveats/>
<body><topic>&lol9;</topic><state>RED</state><summary>x</summary></body></eumam-message>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE eumam-message [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<eumam-message kind="status.update"><marking>UNCLASSIFIED</marking>
<releasability>REL TO EUMAM</releasability><caveats/>
<body><topic>&xxe;</topic><state>RED</state><summary>x</summary></body></eumam-message>
"""


def test_xml_billion_laughs_refused() -> None:
    refused(EUMAM, BILLION_LAUGHS, "DTD")


def test_xml_external_entity_refused() -> None:
    text = refused(EUMAM, XXE, "DTD")
    assert "root:" not in text and "passwd" not in text


def test_xml_plain_dtd_refused() -> None:
    data = eumam_doc('<?xml version="1.0" encoding="UTF-8"?>\n', '<!DOCTYPE eumam-message SYSTEM "x.dtd">\n')
    refused(EUMAM, data, "DTD")


def test_xml_entity_reference_without_dtd_refused() -> None:
    refused(EUMAM, eumam_doc("Todendorf", "&xxe;"), "not well-formed")


def test_xml_declared_non_utf8_encoding_refused() -> None:
    refused(EUMAM, eumam_doc('encoding="UTF-8"', 'encoding="ISO-8859-1"'), "UTF-8")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("<seats>40</seats>", "<seats>040</seats>", "canonical decimal"),
        ("<seats>40</seats>", "<seats>+40</seats>", "canonical decimal"),
        ("<seats>40</seats>", "<seats> 40</seats>", "canonical decimal"),
        ("<seats>40</seats>", "<seats>4e1</seats>", "canonical decimal"),
        ("<seats>40</seats>", "<seats>-0</seats>", "canonical decimal"),
        ("<seats>40</seats>", "", "missing element(s) seats"),
        ("<seats>40</seats>", f"<seats>40</seats><{LONG_NAME}>1</{LONG_NAME}>", "unknown element"),
        ("<seats>40</seats>", "<seats>40</seats><seats>41</seats>", "more than once"),
        ("<course>", '<course lang="en">', "unknown attribute 'lang'"),
        ('ref="EUMAM', f'{LONG_NAME}="1" ref="EUMAM', "unknown attribute"),
        ('kind="training.offer"', 'kind="training.offers"', "must be one of"),
        ("<caveats/>", "", "exactly <marking>, <releasability>, <caveats>, <body>"),
        ("<caveats/>", f"<caveats>{SECRET}</caveats>", "only elements"),
        ("eumam-message", "nato-message", "root must be <eumam-message>"),
        ("<eumam-message ", '<eumam-message xmlns="urn:x" ', "no namespace"),
        ("<seats>40</seats>", f"<seats>40</seats>{SECRET}", "only elements"),
        ("<seats>40</seats>", "<seats><n>40</n></seats>", "text only"),
        ("<end>2026-07-24</end>", "<end>24/07/2026</end>", "$.end"),
        ('ref="EUMAM-TRG-2026-017"', 'ref="bad ref!"', "ref must be"),
        ('ref="EUMAM-TRG-2026-017"', 'ref="x" originator="EUMAM"', "provenance"),
    ],
)
def test_xml_schema_is_strict(old: str, new: str, expected: str) -> None:
    refused(EUMAM, eumam_doc(old, new), expected)


def test_xml_unsorted_caveats_refused() -> None:
    data = eumam_doc("<caveats/>", "<caveats><caveat>B-CAV</caveat><caveat>A-CAV</caveat></caveats>")
    refused(EUMAM, data, "sorted and unique", error=MarkingError)


def test_xml_nato_marking_refused_in_eumam() -> None:
    refused(
        EUMAM, eumam_doc("RESTREINT UE/EU RESTRICTED", "NATO RESTRICTED"), "EU markings", error=MarkingError
    )


def test_xml_original_marking_must_match_rank() -> None:
    data = eumam_doc("<marking>", '<marking original="NATO SECRET">')
    refused(EUMAM, data, "'NATO RESTRICTED' here", error=MarkingError)
    [m] = EUMAM.decode(eumam_doc("<marking>", '<marking original="NATO RESTRICTED">'))
    assert m.label.policy == "NATO" and m.label.classification == "RESTRICTED"


def test_xml_escaping_round_trips() -> None:
    body = {"topic": "<b>&amp;</b> \"q\" 'a' ]]>", "state": "RED", "summary": " lead\r\ntrail\r \t\n "}
    msg = delivered("status.update", body)
    data = EUMAM.encode(msg)
    assert b"<b>" not in data and b"\r" not in data
    [m] = EUMAM.decode(data)
    assert m.body == body


# ------------------------------------------------------------------------------------------------ markings


@pytest.mark.parametrize("codec", ALL, ids=IDS)
@pytest.mark.parametrize(
    ("marking", "expected"),
    [
        ("NATO TOP SECRET", "expected one of"),
        ("Nato Restricted", "did you mean"),
        ("NATO  RESTRICTED", "did you mean"),
        (SECRET, "expected one of"),
        ("", "expected one of"),
    ],
)
def test_unknown_or_miscased_marking_refused(codec: Codec, marking: str, expected: str) -> None:
    msg = delivered("status.update", label=nato() if codec.name != "eumam" else eu())
    text = codec.encode(msg).decode()
    good = "NATO RESTRICTED" if codec.name != "eumam" else "RESTREINT UE/EU RESTRICTED"
    if codec.name == "eumam":
        marking = marking.replace("Nato Restricted", "Restreint UE/EU Restricted").replace(
            "NATO  RESTRICTED", "RESTREINT  UE/EU RESTRICTED"
        )
    message = refused(codec, text.replace(good, marking, 1).encode(), expected, error=MarkingError)
    if "did you mean" in message:
        assert repr(good) in message
    assert "Restricted" not in message and "NATO  R" not in message  # the bad marking is not echoed


def test_eu_marking_in_nsatu_document_refused() -> None:
    refused(
        NSATU, nsatu_doc(classification="RESTREINT UE/EU RESTRICTED"), "NATO markings", error=MarkingError
    )
    refused(NSATU, nsatu_doc(classification="UNCLASSIFIED"), "NATO UNCLASSIFIED", error=MarkingError)


def test_eu_marking_in_udcg_table_refused() -> None:
    row = PLEDGE_ROW.format(d="Gepard", c="air-defence", q=1).replace(
        "NATO RESTRICTED", "SECRET UE/EU SECRET"
    )
    refused(UDCG, pledge_csv(row), "NATO markings", error=MarkingError)


@pytest.mark.parametrize(
    "rel",
    [
        "REL TO NSATU, EUMAM",
        "REL TO EUMAM, EUMAM",
        "REL TO EUMAM,NSATU",
        "REL TO  EUMAM",
        "rel to EUMAM",
        "REL TO eumam",
        "REL TO ",
        "EUMAM, NSATU",
        "REL TO EUMAM, NSATU ",
    ],
)
@pytest.mark.parametrize("codec", ALL, ids=IDS)
def test_bad_releasability_refused(codec: Codec, rel: str) -> None:
    text = codec.encode(delivered("status.update", label=nato(rel=["EUMAM", "NSATU"]))).decode()
    message = refused(
        codec, text.replace("REL TO EUMAM, NSATU", rel, 1).encode(), "REL TO", error=MarkingError
    )
    assert "sorted and unique" in message or "organisation codes" in message


def test_encode_refuses_a_label_it_would_not_read() -> None:
    bad = Label(policy="NATO", classification="RESTRICTED", releasable_to=["NSATU", "EUMAM"], caveats=[])
    for codec in ALL:
        with pytest.raises(MarkingError, match="sorted and unique"):
            codec.encode(delivered("status.update", label=bad))


@pytest.mark.parametrize("caveats", [["B-CAV", "A-CAV"], ["A-CAV", "A-CAV"], ["lower"]])
def test_bad_caveats_refused(caveats: list[str]) -> None:
    refused(NSATU, nsatu_doc(caveats=caveats), "caveats", error=MarkingError)


# ----------------------------------------------------------------------------------------- JSON strictness


def test_duplicate_json_keys_refused() -> None:
    data = nsatu_doc().replace(
        b'"doc_type": "delivery.status"', b'"doc_type": "delivery.status", "doc_type": "x"'
    )
    refused(NSATU, data, "duplicate JSON key 'doc_type'")
    data = nsatu_doc().replace(b'"stage": "AT_HUB"', b'"stage": "AT_HUB", "stage": "DELAYED"')
    refused(NSATU, data, "duplicate JSON key 'stage'")


def test_unknown_json_fields_refused() -> None:
    refused(NSATU, nsatu_doc(**{LONG_NAME: 1}), "unknown field", "allowed fields are")
    content = {**NSATU_DOC["content"], "colour": "red"}  # type: ignore[dict-item]
    refused(NSATU, nsatu_doc(content=content), "unknown field 'colour'")


def test_missing_json_field_refused() -> None:
    refused(NSATU, nsatu_doc(releasability=...), "missing required field(s) releasability")


@pytest.mark.parametrize("number", [b"-0", b"24.0", b"2.4e1", b"NaN", b"Infinity", b"true", b'"24"'])
def test_non_canonical_json_integer_refused(number: str) -> None:
    data = nsatu_doc().replace(b'"quantity_delivered": 24', b'"quantity_delivered": ' + number)
    refused(NSATU, data, "NSATU")


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b"{", b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"[" * 100_000, b'{"a": 1} {"b": 2}'],
)
def test_malformed_json_refused(data: bytes) -> None:
    refused(NSATU, data, "NSATU")


def test_enum_value_not_echoed() -> None:
    content = {**NSATU_DOC["content"], "stage": SECRET}  # type: ignore[dict-item]
    refused(NSATU, nsatu_doc(content=content), "$.stage")


def test_forged_provenance_checked() -> None:
    refused(NSATU, nsatu_doc(delivered={"originator": "EUMAM"}), "missing required field(s) sender, created")
    bad = {"originator": "eumam", "sender": "eumam-liaison", "created": "2026-05-14T09:30:00Z"}
    refused(NSATU, nsatu_doc(delivered=bad), "provenance")


# ------------------------------------------------------------------------------------------ CSV strictness


def test_csv_missing_and_extra_columns_refused() -> None:
    row = PLEDGE_ROW.format(d="Gepard", c="air-defence", q=1)
    refused(UDCG, pledge_csv(row.rsplit(",", 1)[0], head=PLEDGE_HEAD.rsplit(",", 1)[0]), "header")
    refused(UDCG, pledge_csv(row + ",x", head=PLEDGE_HEAD + ",comment"), "header", "expected exactly one of")
    refused(UDCG, pledge_csv(row, head=PLEDGE_HEAD.replace("nation,coalition", "coalition,nation")), "header")
    refused(UDCG, pledge_csv(row, head=PLEDGE_HEAD.upper()), "header")


def test_csv_wrong_cell_counts_refused() -> None:
    row = PLEDGE_ROW.format(d="Gepard", c="air-defence", q=1)
    refused(UDCG, pledge_csv(row.rsplit(",", 1)[0]), "record 2 has 12 cells; expected 13")
    refused(UDCG, pledge_csv(row, row + "," + SECRET), "record 3 has 14 cells; expected 13")
    refused(UDCG, pledge_csv(row, ""), "record 3 is empty")


@pytest.mark.parametrize("q", ["048", "+48", "48.0", " 48", "-0", "4_8", ""])
def test_csv_non_canonical_integer_refused(q: str) -> None:
    refused(UDCG, pledge_csv(PLEDGE_ROW.format(d="Gepard", c="air-defence", q=q)), "canonical decimal")


@pytest.mark.parametrize(
    "data",
    [b"", PLEDGE_HEAD.encode() + b"\r\n", b'marking,"unterminated\r\n', b"\xff\xfe"],
)
def test_csv_malformed_refused(data: bytes) -> None:
    refused(UDCG, data, "UDCG")


def test_csv_duplicate_keys_in_body_json_refused() -> None:
    head = "marking,releasability,caveats,ref,in_reply_to,kind,body_json"
    body = '"{""topic"":""a"",""topic"":""b"",""state"":""RED"",""summary"":""s""}"'
    refused(
        UDCG, pledge_csv(f"NATO SECRET,REL TO UDCG,,,,status.update,{body}", head=head), "duplicate JSON key"
    )


INJECTIONS = [
    '=HYPERLINK("http://x")',
    "+1+2",
    "-2+3",
    "@SUM(A1:A2)",
    "\tTAB",
    "\rCR",
    "'=quoted",
    "''+x",
    "'abc",
]


def test_csv_injection_neutralised_and_round_trips() -> None:
    items = [{"designation": v, "category": v, "quantity": 1} for v in INJECTIONS]
    body = {**sample_bodies()["capability.pledge"], "coalition": "=cmd|' /C calc'!A0", "items": items}
    data = UDCG.encode(delivered("capability.pledge", body))
    cells = [c for row in csv.reader(io.StringIO(data.decode(), newline="")) for c in row]
    assert cells and not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert '\'=HYPERLINK("http://x")' in cells and "''=quoted" in cells and "'''+x" in cells
    assert "'abc" in cells
    [m] = UDCG.decode(data)
    assert m.body == body


def test_csv_cell_neutralisation_is_exactly_inverted() -> None:
    for value in [*INJECTIONS, "", "'", "''", "plain", "-", "'-"]:
        assert restore_cell(neutralise_cell(value)) == value
    assert restore_cell("=1+1") == "=1+1"  # an unprefixed formula from UDCG is just text


# ------------------------------------------------------------------------------------------ shared rules


@pytest.mark.parametrize("codec", ALL, ids=IDS)
def test_oversized_document_refused(codec: Codec) -> None:
    big = codec.encode(delivered("status.update")) + b" " * (MAX_NATIVE_BYTES + 1)
    refused(codec, big, "1 MiB")


@pytest.mark.parametrize("codec", ALL, ids=IDS)
def test_control_characters_refused_both_ways(codec: Codec) -> None:
    body = {**sample_bodies()["status.update"], "summary": "bell\x07"}
    with pytest.raises(NativeFormatError, match=r"\$\.summary"):
        codec.encode(delivered("status.update", body))
    refused(NSATU, nsatu_doc().replace(b'"UDCG-ADC-2026-0117"', b'"UDCG\\u0000"'), "control", "$.pledge_ref")


@pytest.mark.parametrize("codec", ALL, ids=IDS)
def test_encode_refuses_an_invalid_body(codec: Codec) -> None:
    with pytest.raises(NativeFormatError, match="missing required field `summary`"):
        codec.encode(delivered("status.update", {"topic": "t", "state": "RED"}))
    with pytest.raises(NativeFormatError, match="kind must be one of"):
        codec.encode(dataclasses.replace(delivered("status.update"), kind="status.updated"))


# ------------------------------------------------------------------------------------------------ property

_CHARS = st.characters(
    blacklist_categories=("Cs",),
    blacklist_characters=[chr(c) for c in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF)],
)
_TEXT = st.text(_CHARS, min_size=1, max_size=60)


@settings(max_examples=60, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    topic=_TEXT, summary=_TEXT, designation=_TEXT, party=_TEXT, ref=st.from_regex(r"\A[A-Z][A-Z0-9-]{0,20}\Z")
)
def test_random_text_round_trips_in_every_codec(
    topic: str, summary: str, designation: str, party: str, ref: str
) -> None:
    bodies = {
        "status.update": {"topic": topic, "state": "GREEN", "summary": summary},
        "capability.pledge": {
            **sample_bodies()["capability.pledge"],
            "pledge_ref": ref,
            "coalition": summary,
            "items": [
                {"designation": designation, "category": topic, "quantity": 3},
                {"designation": summary, "category": designation, "quantity": 0},
            ],
        },
        "industry.exchange": {
            "topic": topic,
            "parties": [party, designation],
            "standards": [],
            "summary": summary,
        },
        "delivery.status": {**sample_bodies()["delivery.status"], "pledge_ref": designation},
    }
    for codec in ALL:
        for kind, body in bodies.items():
            [m] = codec.decode(codec.encode(delivered(kind, body, label=eu("SECRET"))))
            assert (m.kind, m.body, m.label) == (kind, body, eu("SECRET"))
