"""The ICD §2 label in the XML form of STANAG 4774 / ADatP-4774 (confidentiality metadata label).

What is written, for `{"policy": "NATO", "classification": "RESTRICTED", "releasable_to": ["EUMAM",
"NSATU"], "caveats": ["UKR-EYES"]}`::

    <ConfidentialityLabel xmlns="urn:nato:stanag:4774:confidentialitymetadatalabel:1:0">
      <ConfidentialityInformation>
        <PolicyIdentifier URI="urn:oid:1.3.26.1.3.1">NATO</PolicyIdentifier>
        <Classification>RESTRICTED</Classification>
        <Category TagName="Releasable To" Type="PERMISSIVE">
          <GenericValue>EUMAM</GenericValue>
          <GenericValue>NSATU</GenericValue>
        </Category>
        <Category TagName="Caveats" Type="RESTRICTIVE">
          <GenericValue>UKR-EYES</GenericValue>
        </Category>
      </ConfidentialityInformation>
    </ConfidentialityLabel>

The mapping, both ways (docs/integration.md cites the sources; docs/decisions.md the choices):

* `policy` is the `PolicyIdentifier` text, `NATO` or `EU`. NATO's carries `URI="urn:oid:1.3.26.1.3.1"`,
  the object identifier of the NATO security policy; the EU has no published identifier, so its
  `PolicyIdentifier` carries none. On input a URI, if present, must be exactly that one.
* `classification` is the `Classification` text, the policy's classification name (`UNCLASSIFIED` ..
  `TOP SECRET`, as in ICD §2), not the display marking.
* `releasable_to` is the permissive category `Releasable To`: one `GenericValue` per organisation.
  Permissive: a reader needs one of the values (its own organisation), as ICD §2 rule 3 says.
* `caveats` is the restrictive category `Caveats`: one `GenericValue` per caveat; a reader needs all of
  them (ICD §2 rule 4). No caveats, no category.

Everything else is refused with a `MarkingError` that says what was expected and never echoes the
document: other roots, attributes, categories (`Context`, informative ones), `PrivacyMark`,
`CreationDateTime` and the like, a category twice, a value twice, values not of the ICD's form, a DTD or
entity. Nothing is dropped silently: what the ICD label cannot carry cannot be imported. Values may come
in any order (a category is a set); the label gets them sorted, and export writes them sorted.

Parsing is defusedxml only (no DTD, no entities, no external references).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable

import defusedxml
import defusedxml.ElementTree as DET
import msgspec

from broker.errors import MarkingError
from schemas.clearance import CLASSIFICATIONS
from schemas.label import Label

__all__ = [
    "CAVEATS_TAG",
    "MAX_LABEL_BYTES",
    "NAMESPACE",
    "NATO_POLICY_URI",
    "RELEASABLE_TO_TAG",
    "label_element",
    "label_from_element",
    "label_from_xml",
    "label_to_xml",
]

NAMESPACE = "urn:nato:stanag:4774:confidentialitymetadatalabel:1:0"
#: The NATO security policy's object identifier, as NATO's security policy information file gives it.
NATO_POLICY_URI = "urn:oid:1.3.26.1.3.1"
_POLICY_URI: dict[str, str | None] = {"NATO": NATO_POLICY_URI, "EU": None}
RELEASABLE_TO_TAG = "Releasable To"
CAVEATS_TAG = "Caveats"
_CATEGORIES = {RELEASABLE_TO_TAG: "PERMISSIVE", CAVEATS_TAG: "RESTRICTIVE"}
_ROOTS = ("ConfidentialityLabel", "originatorConfidentialityLabel")
MAX_LABEL_BYTES = 64 * 1024
_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'


def _q(name: str) -> str:
    return f"{{{NAMESPACE}}}{name}"


# -------------------------------------------------------------------------------------------- writing


def label_element(label: Label) -> ET.Element:
    """The label as an element tree, ready to serialise (alone or inside another document).

    The namespace is declared on the root as the default one, so every element of the label is in it
    however the tree is embedded (written as an `xmlns` attribute: ElementTree would otherwise invent
    an `ns0:` prefix, or need a process-wide prefix registration).
    """
    root = ET.Element("ConfidentialityLabel", {"xmlns": NAMESPACE})
    info = ET.SubElement(root, "ConfidentialityInformation")
    uri = _POLICY_URI[label.policy]
    ET.SubElement(info, "PolicyIdentifier", {"URI": uri} if uri else {}).text = label.policy
    ET.SubElement(info, "Classification").text = label.classification
    _category(info, RELEASABLE_TO_TAG, label.releasable_to)
    if label.caveats:
        _category(info, CAVEATS_TAG, label.caveats)
    return root


def _category(parent: ET.Element, tag: str, values: Iterable[str]) -> None:
    cat = ET.SubElement(parent, "Category", {"TagName": tag, "Type": _CATEGORIES[tag]})
    for v in sorted(values):
        ET.SubElement(cat, "GenericValue").text = v


def label_to_xml(label: Label) -> bytes:
    """The label as a standalone UTF-8 XML document."""
    root = label_element(_checked(label))
    ET.indent(root)
    return (_DECL + ET.tostring(root, encoding="unicode") + "\n").encode("utf-8")


def _checked(label: Label) -> Label:
    """A label built in code without validation (msgspec Structs do not validate on construction)."""
    try:
        return msgspec.convert(msgspec.to_builtins(label), Label)
    except msgspec.ValidationError as e:
        raise MarkingError(f"the label is not an ICD §2 label: {e}") from None


# -------------------------------------------------------------------------------------------- reading


def label_from_xml(data: bytes) -> Label:
    """A standalone STANAG 4774 XML label -> the ICD §2 label; MarkingError for what does not map."""
    if len(data) > MAX_LABEL_BYTES:
        raise MarkingError(f"a STANAG 4774 label is limited to {MAX_LABEL_BYTES} bytes")
    try:
        root = DET.fromstring(bytes(data), forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException:
        raise MarkingError(
            "a STANAG 4774 label must not hold a DTD, entities or external references"
        ) from None
    except ET.ParseError as e:
        line, col = e.position
        raise MarkingError(
            f"the STANAG 4774 label is not well-formed XML (line {line}, column {col})"
        ) from None
    return label_from_element(root)


def _name(elem: ET.Element) -> str:
    """The element's local name if it is in the 4774 namespace, else its whole tag (never matching)."""
    tag = elem.tag if isinstance(elem.tag, str) else ""
    prefix = f"{{{NAMESPACE}}}"
    return tag[len(prefix) :] if tag.startswith(prefix) else tag


def _short(text: str) -> str:
    return repr(text if len(text) <= 32 else text[:32] + "...")


def _only_elements(elem: ET.Element, where: str) -> list[ET.Element]:
    if elem.text and elem.text.strip():
        raise MarkingError(f"<{where}> must hold only elements, not text")
    kids = list(elem)
    if any(k.tail and k.tail.strip() for k in kids):
        raise MarkingError(f"<{where}> must hold only elements, not text")
    return kids


def _text(elem: ET.Element, where: str) -> str:
    if len(elem):
        raise MarkingError(f"<{where}> must hold text only, not elements")
    return elem.text or ""


def _attrs(elem: ET.Element, where: str, allowed: tuple[str, ...]) -> None:
    for key in elem.attrib:
        if key not in allowed:
            expected = ", ".join(allowed) if allowed else "none"
            raise MarkingError(
                f"<{where}> has attribute {_short(key)}, which does not map; expected {expected}"
            )


def label_from_element(root: ET.Element) -> Label:
    """A parsed `ConfidentialityLabel` element (namespaced tags) -> the ICD §2 label."""
    name = _name(root)
    if name not in _ROOTS or root.tag != _q(name):
        raise MarkingError(
            f"a STANAG 4774 label is a <ConfidentialityLabel> (or <originatorConfidentialityLabel>) in the "
            f"namespace {NAMESPACE}"
        )
    _attrs(root, name, ())
    kids = _only_elements(root, name)
    if [_name(k) for k in kids] != ["ConfidentialityInformation"] or kids[0].tag != _q(
        "ConfidentialityInformation"
    ):
        raise MarkingError(
            f"<{name}> must hold exactly one <ConfidentialityInformation> and nothing else (no creation "
            "time, originator id or review date: the ICD §2 label has no place for them)"
        )
    info = kids[0]
    _attrs(info, "ConfidentialityInformation", ())
    parts = _only_elements(info, "ConfidentialityInformation")
    names = [_name(p) for p in parts]
    if names[:2] != ["PolicyIdentifier", "Classification"] or any(p.tag != _q(_name(p)) for p in parts):
        raise MarkingError(
            "<ConfidentialityInformation> must begin with <PolicyIdentifier>, <Classification>"
        )
    policy = _policy(parts[0])
    classification = _classification(parts[1])
    categories: dict[str, list[str]] = {}
    for cat in parts[2:]:
        if _name(cat) != "Category":
            raise MarkingError(
                f"<ConfidentialityInformation> holds {_short(_name(cat))}, which does not map: after "
                "<Classification> only <Category> elements (no privacy mark)"
            )
        tag, values = _read_category(cat)
        if tag in categories:
            raise MarkingError(f"the category {tag!r} appears more than once")
        categories[tag] = values
    if RELEASABLE_TO_TAG not in categories:
        raise MarkingError(
            f"the label needs the permissive category {RELEASABLE_TO_TAG!r} (ICD §2 releasable_to)"
        )
    doc = {
        "policy": policy,
        "classification": classification,
        "releasable_to": sorted(categories[RELEASABLE_TO_TAG]),
        "caveats": sorted(categories.get(CAVEATS_TAG, [])),
    }
    try:
        return msgspec.convert(doc, Label)
    except msgspec.ValidationError as e:
        where = str(e).rsplit(" - at ", 1)[-1] if " - at " in str(e) else "$"
        raise MarkingError(
            f"a GenericValue is not of the ICD §2 form at {where}: organisation codes "
            "^[A-Z][A-Z0-9]{1,15}$, caveats ^[A-Z][A-Z0-9-]{1,31}$"
        ) from None


def _policy(elem: ET.Element) -> str:
    _attrs(elem, "PolicyIdentifier", ("URI",))
    text = _text(elem, "PolicyIdentifier")
    if text not in _POLICY_URI:
        raise MarkingError("<PolicyIdentifier> must be NATO or EU (ICD §2 policies)")
    uri = elem.attrib.get("URI")
    if uri is not None and uri != _POLICY_URI[text]:
        expected = f"{_POLICY_URI[text]} or none" if _POLICY_URI[text] else "none (the EU policy has no OID)"
        raise MarkingError(f"<PolicyIdentifier> URI of the {text} policy must be {expected}")
    return text


def _classification(elem: ET.Element) -> str:
    _attrs(elem, "Classification", ())
    text = _text(elem, "Classification")
    if text not in CLASSIFICATIONS:
        raise MarkingError(
            f"<Classification> must be one of {', '.join(CLASSIFICATIONS)} (the policy's classification "
            "name, exact; display markings such as 'NATO RESTRICTED' are not classification names)"
        )
    return text


def _read_category(cat: ET.Element) -> tuple[str, list[str]]:
    _attrs(cat, "Category", ("TagName", "Type"))
    tag, kind = cat.attrib.get("TagName"), cat.attrib.get("Type")
    if tag not in _CATEGORIES or kind != _CATEGORIES[tag]:
        raise MarkingError(
            "a <Category> that does not map: only TagName 'Releasable To' Type PERMISSIVE (releasable_to) "
            "and TagName 'Caveats' Type RESTRICTIVE (caveats)"
        )
    values = []
    for v in _only_elements(cat, "Category"):
        if v.tag != _q("GenericValue"):
            raise MarkingError(f"the category {tag!r} may hold only <GenericValue> elements")
        _attrs(v, "GenericValue", ())
        values.append(_text(v, "GenericValue"))
    if not values:
        raise MarkingError(f"the category {tag!r} holds no <GenericValue>")
    if len(set(values)) != len(values):
        raise MarkingError(f"the category {tag!r} holds a value more than once")
    return tag, values
