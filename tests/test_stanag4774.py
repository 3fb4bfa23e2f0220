# ruff: noqa: E501  (XML test documents read better on one line each)
"""The ICD §2 label to and from STANAG 4774 XML (broker/rules/stanag4774.py), `broker label export|import`,
and the EUMAM native format carrying the 4774 label beside its display marking."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import defusedxml.ElementTree as DET
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.formats import CODECS, DeliveredMessage
from adapters.formats.bodies import sample_bodies
from broker.cli import build_parser
from broker.errors import MarkingError
from broker.rules.stanag4774 import NAMESPACE, NATO_POLICY_URI, label_from_xml, label_to_xml
from schemas.clearance import CLASSIFICATIONS
from schemas.label import Label

NS = NAMESPACE
ORGS = st.from_regex(r"\A[A-Z][A-Z0-9]{1,15}\Z")
CAVEATS = st.from_regex(r"\A[A-Z][A-Z0-9-]{1,31}\Z")


@st.composite
def labels(draw: st.DrawFn) -> Label:
    return Label(
        policy=draw(st.sampled_from(["NATO", "EU"])),
        classification=draw(st.sampled_from(CLASSIFICATIONS)),
        releasable_to=sorted(draw(st.sets(ORGS, min_size=1, max_size=6))),
        caveats=sorted(draw(st.sets(CAVEATS, max_size=4))),
    )


def doc(info: str, *, root: str = "ConfidentialityLabel", ns: str = NS, extra: str = "") -> bytes:
    return f'<{root} xmlns="{ns}"><ConfidentialityInformation>{info}</ConfidentialityInformation>{extra}</{root}>'.encode()


NATO_R = '<PolicyIdentifier URI="urn:oid:1.3.26.1.3.1">NATO</PolicyIdentifier><Classification>RESTRICTED</Classification>'
REL = '<Category TagName="Releasable To" Type="PERMISSIVE"><GenericValue>EUMAM</GenericValue><GenericValue>NSATU</GenericValue></Category>'


@given(labels())
@settings(max_examples=300)
def test_label_to_xml_and_back_is_the_same_label(label: Label) -> None:
    assert label_from_xml(label_to_xml(label)) == label


@given(labels(), st.randoms())
@settings(max_examples=200)
def test_values_in_any_order_import_as_the_sorted_label(label: Label, rnd: object) -> None:
    """A category is a set: another labelling tool may write its values in another order."""
    rel = list(label.releasable_to)
    cav = list(label.caveats)
    rnd.shuffle(rel)  # type: ignore[attr-defined]
    rnd.shuffle(cav)  # type: ignore[attr-defined]
    uri = f' URI="{NATO_POLICY_URI}"' if label.policy == "NATO" else ""
    info = (
        f"<PolicyIdentifier{uri}>{label.policy}</PolicyIdentifier><Classification>{label.classification}</Classification>"
        + '<Category TagName="Releasable To" Type="PERMISSIVE">'
        + "".join(f"<GenericValue>{v}</GenericValue>" for v in rel)
        + "</Category>"
    )
    if cav:
        info += (
            '<Category TagName="Caveats" Type="RESTRICTIVE">'
            + "".join(f"<GenericValue>{v}</GenericValue>" for v in cav)
            + "</Category>"
        )
    imported = label_from_xml(doc(info))
    assert imported == label
    assert label_to_xml(imported) == label_to_xml(label)  # one written form per label


def test_the_written_form() -> None:
    xml = label_to_xml(Label("NATO", "SECRET", ["NSATU", "UDCG"], ["UKR-EYES"]))
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    root = DET.fromstring(xml)
    assert root.tag == f"{{{NS}}}ConfidentialityLabel"
    (info,) = list(root)
    pid, cls, rel, cav = list(info)
    assert (pid.tag, pid.text, pid.attrib) == (f"{{{NS}}}PolicyIdentifier", "NATO", {"URI": NATO_POLICY_URI})
    assert (cls.tag, cls.text) == (f"{{{NS}}}Classification", "SECRET")
    assert rel.attrib == {"TagName": "Releasable To", "Type": "PERMISSIVE"}
    assert [v.text for v in rel] == ["NSATU", "UDCG"]
    assert cav.attrib == {"TagName": "Caveats", "Type": "RESTRICTIVE"}
    assert [v.text for v in cav] == ["UKR-EYES"]
    eu = DET.fromstring(label_to_xml(Label("EU", "UNCLASSIFIED", ["EUMAM"], [])))
    pid = eu[0][0]
    assert (pid.text, pid.attrib) == ("EU", {})  # no OID for the EU policy; no caveats, no category
    assert len(eu[0]) == 3


def test_the_originator_root_of_4778_bindings_is_read_too() -> None:
    assert label_from_xml(doc(NATO_R + REL, root="originatorConfidentialityLabel")) == Label(
        "NATO", "RESTRICTED", ["EUMAM", "NSATU"], []
    )


REFUSED = {
    "no namespace": doc(NATO_R + REL, ns=""),
    "another namespace": doc(NATO_R + REL, ns="urn:example:labels"),
    "another root": doc(NATO_R + REL, root="SecurityLabel"),
    "creation time": doc(NATO_R + REL, extra="<CreationDateTime>2026-01-01T00:00:00Z</CreationDateTime>"),
    "review date on the root": f'<ConfidentialityLabel xmlns="{NS}" ReviewDateTime="2030-01-01T00:00:00Z">'
    f"<ConfidentialityInformation>{NATO_R}{REL}</ConfidentialityInformation></ConfidentialityLabel>".encode(),
    "privacy mark": doc(NATO_R + "<PrivacyMark>IN CONFIDENCE</PrivacyMark>" + REL),
    "context category": doc(
        NATO_R
        + REL
        + '<Category TagName="Context" Type="PERMISSIVE"><GenericValue>NATO</GenericValue></Category>'
    ),
    "informative category": doc(
        NATO_R
        + REL
        + '<Category TagName="Caveats" Type="INFORMATIVE"><GenericValue>X1</GenericValue></Category>'
    ),
    "releasable to as restrictive": doc(
        NATO_R
        + '<Category TagName="Releasable To" Type="RESTRICTIVE"><GenericValue>NSATU</GenericValue></Category>'
    ),
    "caveats as permissive": doc(
        NATO_R
        + REL
        + '<Category TagName="Caveats" Type="PERMISSIVE"><GenericValue>X1</GenericValue></Category>'
    ),
    "no releasable to": doc(NATO_R),
    "releasable to twice": doc(NATO_R + REL + REL),
    "a value twice": doc(
        NATO_R
        + '<Category TagName="Releasable To" Type="PERMISSIVE"><GenericValue>NSATU</GenericValue><GenericValue>NSATU</GenericValue></Category>'
    ),
    "an empty category": doc(NATO_R + '<Category TagName="Releasable To" Type="PERMISSIVE"/>'),
    "not an organisation code": doc(
        NATO_R
        + '<Category TagName="Releasable To" Type="PERMISSIVE"><GenericValue>Releasable</GenericValue></Category>'
    ),
    "a padded value": doc(
        NATO_R
        + '<Category TagName="Releasable To" Type="PERMISSIVE"><GenericValue> NSATU</GenericValue></Category>'
    ),
    "an integer value": doc(
        NATO_R
        + '<Category TagName="Releasable To" Type="PERMISSIVE"><IntegerValue>1</IntegerValue></Category>'
    ),
    "another policy": doc(
        "<PolicyIdentifier>UK</PolicyIdentifier><Classification>SECRET</Classification>" + REL
    ),
    "NATO under another OID": doc(
        '<PolicyIdentifier URI="urn:oid:1.2.3">NATO</PolicyIdentifier><Classification>SECRET</Classification>'
        + REL
    ),
    "EU with an OID": doc(
        f'<PolicyIdentifier URI="{NATO_POLICY_URI}">EU</PolicyIdentifier><Classification>SECRET</Classification>'
        + REL
    ),
    "a display marking as classification": doc(
        "<PolicyIdentifier>NATO</PolicyIdentifier><Classification>NATO RESTRICTED</Classification>" + REL
    ),
    "lower-case classification": doc(
        "<PolicyIdentifier>NATO</PolicyIdentifier><Classification>secret</Classification>" + REL
    ),
    "classification first": doc(
        "<Classification>SECRET</Classification><PolicyIdentifier>NATO</PolicyIdentifier>" + REL
    ),
    "text between elements": doc(NATO_R + "stray" + REL),
    "not well-formed": b"<ConfidentialityLabel",
    "a DTD": b'<!DOCTYPE x [<!ENTITY a "aaaa">]>' + doc(NATO_R + REL),
    "an external entity": b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
    # the shape of NATO's own test labels (a Context category, nations and NATO in Releasable To):
    # NATO-wide releasability is not an organisation of this broker's label
    "a NATO test label's shape": doc(
        "<PolicyIdentifier>NATO</PolicyIdentifier><Classification>RESTRICTED</Classification>"
        '<Category TagName="Context" Type="PERMISSIVE"><GenericValue>NATO</GenericValue></Category>'
        '<Category TagName="Releasable To" Type="PERMISSIVE"><GenericValue>NATO</GenericValue>'
        "<GenericValue>UKR</GenericValue></Category>"
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_does_not_map_is_refused_with_a_clear_error(name: str) -> None:
    with pytest.raises(MarkingError) as e:
        label_from_xml(REFUSED[name])
    assert len(str(e.value)) > 20


def test_a_refusal_never_echoes_the_document() -> None:
    secret = "ZQXSECRETQXZ"
    for data in (
        doc(
            NATO_R
            + f'<Category TagName="Releasable To" Type="PERMISSIVE"><GenericValue>{secret.lower()}</GenericValue></Category>'
        ),
        doc(f"<PolicyIdentifier>{secret}</PolicyIdentifier><Classification>SECRET</Classification>" + REL),
        doc(f"<PolicyIdentifier>NATO</PolicyIdentifier><Classification>{secret}</Classification>" + REL),
        doc(
            NATO_R
            + REL
            + f'<Category TagName="{secret}" Type="PERMISSIVE"><GenericValue>A1</GenericValue></Category>'
        ),
    ):
        with pytest.raises(MarkingError) as e:
            label_from_xml(data)
        assert secret not in str(e.value).upper()


def test_an_oversized_label_is_refused_before_parsing() -> None:
    with pytest.raises(MarkingError, match="limited"):
        label_from_xml(b"<a>" + b" " * 70_000 + b"</a>")


# -- the command line ------------------------------------------------------------------------------


def cli(*argv: str) -> int:
    """A `broker` command in this process, without `main`'s logging set-up (which is process-wide and
    would change what later tests in the session log); `main`'s exit code 2 for a BrokerError is
    tests/test_cli.py's business."""
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


def test_cli_label_export_and_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    label = {
        "policy": "EU",
        "classification": "CONFIDENTIAL",
        "releasable_to": ["EUMAM", "NSATU"],
        "caveats": ["X1"],
    }
    (tmp_path / "l.json").write_text(json.dumps(label))
    assert cli("label", "export", str(tmp_path / "l.json"), "--out", str(tmp_path / "l.xml")) == 0
    assert label_from_xml((tmp_path / "l.xml").read_bytes()) == Label(**label)
    assert cli("label", "import", str(tmp_path / "l.xml")) == 0
    assert json.loads(capsys.readouterr().out) == label


@pytest.mark.parametrize(
    "bad",
    [
        '{"policy": "UK", "classification": "SECRET", "releasable_to": ["NSATU"], "caveats": []}',
        '{"policy": "NATO", "classification": "SECRET", "releasable_to": ["UDCG", "NSATU"], "caveats": []}',
        '{"policy": "NATO", "classification": "SECRET", "releasable_to": [], "caveats": []}',
        "not json",
    ],
)
def test_cli_label_export_refuses_what_is_not_an_icd_label(tmp_path: Path, bad: str) -> None:
    (tmp_path / "l.json").write_text(bad)
    with pytest.raises(MarkingError, match="not an ICD §2 label"):
        cli("label", "export", str(tmp_path / "l.json"))


def test_cli_label_import_refuses_what_does_not_map(tmp_path: Path) -> None:
    """As a process: exit code 2 and the reason on standard error, nothing on standard output."""
    (tmp_path / "l.xml").write_bytes(REFUSED["privacy mark"])
    broker = Path(sys.executable).with_name("broker")
    proc = subprocess.run(
        [broker, "label", "import", tmp_path / "l.xml"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "does not map" in proc.stderr
    assert proc.stdout == ""


# -- EUMAM documents carry the 4774 label ----------------------------------------------------------

EUMAM = CODECS["eumam"]


def delivered(label: Label, kind: str = "training.offer") -> DeliveredMessage:
    return DeliveredMessage(
        id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        kind=kind,
        originator="EUMAM",
        sender="eumam-liaison",
        created="2026-05-14T09:30:00Z",
        label=label,
        body=sample_bodies()[kind],
        in_reply_to=None,
    )


@given(labels())
@settings(max_examples=150)
def test_eumam_documents_carry_the_4774_label_and_read_back(label: Label) -> None:
    data = EUMAM.encode(delivered(label))
    root = DET.fromstring(data)
    tags = [k.tag for k in root]
    assert tags == ["marking", "releasability", "caveats", f"{{{NS}}}ConfidentialityLabel", "body"]
    (msg,) = EUMAM.decode(data)
    assert msg.label == label


def test_eumam_documents_without_the_4774_label_are_read_as_before() -> None:
    label = Label("NATO", "RESTRICTED", ["EUMAM", "NSATU"], [])
    data = EUMAM.encode(delivered(label))
    start, end = data.index(b"<ConfidentialityLabel"), data.index(b"</ConfidentialityLabel>")
    old = data[:start] + data[end + len(b"</ConfidentialityLabel>") :]
    assert b"ConfidentialityLabel" not in old
    (msg,) = EUMAM.decode(old)
    assert msg.label == label


@pytest.mark.parametrize(
    ("find", "replace"),
    [
        (b"<Classification>RESTRICTED<", b"<Classification>SECRET<"),  # another rank
        (b">NATO</PolicyIdentifier>", b">EU</PolicyIdentifier>"),  # the original policy lost
        (b"<GenericValue>NSATU</GenericValue>", b""),  # narrower releasability
    ],
)
def test_eumam_refuses_a_4774_label_that_disagrees_with_the_marking(find: bytes, replace: bytes) -> None:
    data = EUMAM.encode(delivered(Label("NATO", "RESTRICTED", ["EUMAM", "NSATU"], [])))
    if find == b">NATO</PolicyIdentifier>":
        data = data.replace(b' URI="urn:oid:1.3.26.1.3.1"', b"")
    bad = data.replace(find, replace, 1)
    assert bad != data
    with pytest.raises(MarkingError, match="must say what"):
        EUMAM.decode(bad)


def test_eumam_refuses_a_4774_label_that_does_not_map() -> None:
    data = EUMAM.encode(delivered(Label("EU", "RESTRICTED", ["EUMAM", "NSATU"], [])))
    bad = data.replace(
        b"</ConfidentialityInformation>", b"<PrivacyMark>X</PrivacyMark></ConfidentialityInformation>"
    )
    with pytest.raises(MarkingError, match="does not map"):
        EUMAM.decode(bad)
