"""EUMAM liaison documents: XML with EU markings (`application/vnd.eumam.liaison+xml`).

One document is one message::

    <?xml version="1.0" encoding="UTF-8"?>
    <eumam-message kind="training.offer" ref="EUMAM-TRG-2026-017">
      <marking>RESTREINT UE/EU RESTRICTED</marking>
      <releasability>REL TO EUMAM, NSATU</releasability>
      <caveats/>
      <body>
        <course>IRIS-T SLM operator and maintainer course</course>
        <location>Todendorf, DEU</location>
        <start>2026-06-01</start>
        <end>2026-07-24</end>
        <seats>40</seats>
      </body>
    </eumam-message>

Schema (no namespace; anything not listed is refused, and so is anything required that is missing):

* root `eumam-message`; attributes `kind` (required, a kind of ICD §5), `ref` and `in-reply-to`
  (optional document ids), and, written by the broker on delivery, `originator`, `sender`, `created`
  (all three or none; checked, then ignored on input: the publisher is the adapter's identity);
* children, in this order: `marking`, `releasability`, `caveats`, [`ConfidentialityLabel`], `body`;
* `marking`: an exact EU display marking of ICD §2 (`UNCLASSIFIED`, `RESTREINT UE/EU RESTRICTED`,
  `CONFIDENTIEL UE/EU CONFIDENTIAL`, `SECRET UE/EU SECRET`, `TRES SECRET UE/EU TOP SECRET`). NATO markings
  are refused. A message with a NATO label is written with the EU marking of the same rank and the NATO
  marking in the attribute `original` (`<marking original="NATO RESTRICTED">RESTREINT UE/EU RESTRICTED`);
  on input `original`, if present, must be exactly that and restores the NATO policy;
* `releasability`: `REL TO ` + organisation codes joined by `, `, sorted, unique;
* `caveats`: zero or more `<caveat>CODE</caveat>` children, sorted, unique;
* then, optionally, the same label as a STANAG 4774 `<ConfidentialityLabel>` in its own namespace
  (`broker.rules.stanag4774`); the broker always writes it. When present it must say exactly what `marking`
  (with `original`), `releasability` and `caveats` say, or the document is refused; a document without
  it (the form before) is read as before;
* `body`: one element per field of the kind's schema (any order; each at most once). Text fields are the
  element's text, exactly (whitespace kept); integers are canonical decimal (`0`, `42`; never `042`,
  `+42`, ` 42`); nested objects are nested elements (`<delivery_window><from>...</from><to>...</to>`);
  lists are a wrapper element with one `<item>` child per entry (`<parties><item>EDA</item></parties>`,
  `<items><item><designation>...</designation>...</item></items>`), an empty wrapper for an empty list.
  Elements carry no attributes (except the two above); text between elements must be whitespace.

Parsing is done only with defusedxml: DTDs (hence entity expansion such as billion laughs) and
external entities are refused. The document must be UTF-8 (an XML declaration, if any, must say UTF-8),
without BOM, at most 1 MiB. Output escapes `&`, `<`, `>`, quotes, and CR (`&#13;`) so that every text
round-trips exactly.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from typing import Any

import defusedxml
import defusedxml.ElementTree as DET
import msgspec.inspect as mi

from adapters.formats.base import (
    DeliveredMessage,
    NativeMessage,
    check_provenance,
    check_ref,
    format_releasability,
    make_label,
    parse_caveat_list,
    parse_classification,
    parse_original_marking,
    parse_releasability,
    render_marking,
    short,
    utf8_text,
)
from adapters.formats.bodies import validate_body
from broker.errors import MarkingError, NativeFormatError
from broker.rules.stanag4774 import NAMESPACE as _LABEL_NS
from broker.rules.stanag4774 import label_element, label_from_element
from schemas.kinds import BODY_TYPES

__all__ = ["MEDIA_TYPE", "EumamCodec"]

MEDIA_TYPE = "application/vnd.eumam.liaison+xml"
_FMT = "EUMAM"
_ROOT = "eumam-message"
_ROOT_ATTRS = ("kind", "ref", "in-reply-to", "originator", "sender", "created")
_SECTIONS = ("marking", "releasability", "caveats", "body")
_LABEL_TAG = f"{{{_LABEL_NS}}}ConfidentialityLabel"
_DECL = re.compile(r"^<\?xml\s[^>]*?\?>")
_ENCODING = re.compile(r"""\sencoding\s*=\s*["']([^"']*)["']""")
_INT = re.compile(r"^(0|-?[1-9][0-9]{0,17})$")


class EumamCodec:
    """XML documents with EU markings; one document, one message."""

    name: str = "eumam"
    media_type: str = MEDIA_TYPE

    def decode(self, data: bytes) -> list[NativeMessage]:
        text = utf8_text(data, _FMT)
        decl = _DECL.match(text)
        if decl:
            enc = _ENCODING.search(decl.group(0))
            if enc and enc.group(1).upper() not in ("UTF-8", "UTF8"):
                raise NativeFormatError(f"{_FMT} document must declare encoding UTF-8 (or none)")
        try:
            root = DET.fromstring(bytes(data), forbid_dtd=True, forbid_entities=True, forbid_external=True)
        except defusedxml.DTDForbidden:
            raise NativeFormatError(f"{_FMT} document must not contain a DTD (<!DOCTYPE>)") from None
        except defusedxml.EntitiesForbidden:
            raise NativeFormatError(f"{_FMT} document must not declare entities") from None
        except defusedxml.ExternalReferenceForbidden:
            raise NativeFormatError(f"{_FMT} document must not reference external entities") from None
        except defusedxml.DefusedXmlException:
            raise NativeFormatError(f"{_FMT} document uses a forbidden XML feature") from None
        except ET.ParseError as e:
            line, col = e.position
            raise NativeFormatError(
                f"{_FMT} document is not well-formed XML (line {line}, column {col})"
            ) from None
        return [_read_root(root)]

    def encode(self, msg: DeliveredMessage) -> bytes:
        body = validate_body(msg.kind, msg.body)
        marking, original = render_marking(msg.label, "EU")
        check_provenance(msg.originator, msg.sender, msg.created, _FMT)
        attrs = {"kind": msg.kind, "ref": str(check_ref(msg.id, "id"))}
        if msg.in_reply_to is not None:
            attrs["in-reply-to"] = str(check_ref(msg.in_reply_to, "in_reply_to"))
        attrs.update(originator=msg.originator, sender=msg.sender, created=msg.created)
        root = ET.Element(_ROOT, attrs)
        mark = ET.SubElement(root, "marking", {"original": original} if original else {})
        mark.text = marking
        ET.SubElement(root, "releasability").text = format_releasability(list(msg.label.releasable_to))
        cav = ET.SubElement(root, "caveats")
        for c in parse_caveat_list(list(msg.label.caveats), "message"):
            ET.SubElement(cav, "caveat").text = c
        root.append(label_element(msg.label))  # the STANAG 4774 XML label beside the display marking
        _write_struct(ET.SubElement(root, "body"), body, _struct_info(msg.kind))
        ET.indent(root)
        xml = ET.tostring(root, encoding="unicode").replace("\r", "&#13;")
        return ('<?xml version="1.0" encoding="UTF-8"?>\n' + xml + "\n").encode("utf-8")


# ------------------------------------------------------------------------------------------------ reading


def _where(path: str) -> str:
    return f"{_FMT} element <{path}>"


def _no_attrs(elem: ET.Element, path: str, allowed: tuple[str, ...] = ()) -> None:
    for key in elem.attrib:
        if key not in allowed:
            what = f"only {', '.join(allowed)}" if allowed else "none"
            raise NativeFormatError(f"{_where(path)} has unknown attribute {short(key)}; expected {what}")


def _children(elem: ET.Element, path: str) -> list[ET.Element]:
    """Child elements of a container; text around them must be whitespace only."""
    if elem.text and elem.text.strip():
        raise NativeFormatError(f"{_where(path)} must hold only elements, not text")
    kids = list(elem)
    for kid in kids:
        if kid.tail and kid.tail.strip():
            raise NativeFormatError(f"{_where(path)} must hold only elements, not text")
    return kids


def _leaf(elem: ET.Element, path: str) -> str:
    _no_attrs(elem, path)
    if len(elem):
        raise NativeFormatError(f"{_where(path)} must hold text only, not elements")
    return elem.text or ""


def _read_root(root: ET.Element) -> NativeMessage:
    if root.tag != _ROOT:
        raise NativeFormatError(f"{_FMT} document root must be <{_ROOT}> (no namespace)")
    _no_attrs(root, _ROOT, _ROOT_ATTRS)
    if "kind" not in root.attrib:
        raise NativeFormatError(f"{_where(_ROOT)} is missing attribute 'kind'")
    kind = root.attrib["kind"]
    if kind not in BODY_TYPES:
        raise NativeFormatError(f"{_where(_ROOT)} attribute 'kind' must be one of {', '.join(BODY_TYPES)}")
    originator, sender, created = (root.attrib.get(k) for k in ("originator", "sender", "created"))
    if originator is not None or sender is not None or created is not None:
        check_provenance(originator, sender, created, _FMT)
    kids = _children(root, _ROOT)
    tags = tuple(k.tag for k in kids)
    xml_label = None
    if len(kids) == len(_SECTIONS) + 1 and tags[3] == _LABEL_TAG:  # the 4774 label, optional on input
        xml_label = kids.pop(3)
        tags = tuple(k.tag for k in kids)
    if tags != _SECTIONS:
        raise NativeFormatError(
            f"{_where(_ROOT)} must hold exactly <{'>, <'.join(_SECTIONS)}>, in this order (with an optional "
            "STANAG 4774 <ConfidentialityLabel> before <body>)"
        )
    marking, releasability, caveats, body = kids
    _no_attrs(marking, "marking", ("original",))
    if len(marking):
        raise NativeFormatError(f"{_where('marking')} must hold text only")
    policy, classification = parse_classification(marking.text or "", "EU", _FMT)
    if "original" in marking.attrib:
        policy = parse_original_marking(marking.attrib["original"], "EU", classification, _FMT)
    rel = parse_releasability(_leaf(releasability, "releasability"), _FMT)
    _no_attrs(caveats, "caveats")
    cav_list = []
    for kid in _children(caveats, "caveats"):
        if kid.tag != "caveat":
            raise NativeFormatError(f"{_where('caveats')} may hold only <caveat> elements")
        cav_list.append(_leaf(kid, "caveat"))
    cavs = parse_caveat_list(cav_list, _FMT)
    label = make_label(policy, classification, rel, cavs)
    if xml_label is not None and label_from_element(xml_label) != label:
        raise MarkingError(
            f"{_FMT} STANAG 4774 <ConfidentialityLabel> must say what <marking> (with its original), "
            "<releasability> and <caveats> say"
        )
    _no_attrs(body, "body")
    raw = _read_struct(body, _struct_info(kind), "body")
    return NativeMessage(
        kind=kind,
        label=label,
        body=validate_body(kind, raw, _FMT),
        ref=check_ref(root.attrib.get("ref"), "ref"),
        in_reply_to=check_ref(root.attrib.get("in-reply-to"), "in-reply-to"),
    )


@functools.cache
def _struct_info(kind: str) -> mi.StructType:
    """The body schema of `kind`, inspected once per kind (msgspec's inspection is slow: it was 5% of
    the broker's CPU while delivering, computed again for every document)."""
    info = mi.type_info(BODY_TYPES[kind])
    if not isinstance(info, mi.StructType):  # pragma: no cover - schemas.kinds defines Structs only
        raise NativeFormatError(f"schema of {kind} is not an object")
    return info


def _unwrap(t: mi.Type) -> mi.Type:
    while isinstance(t, mi.Metadata):
        t = t.type
    return t


def _read_struct(elem: ET.Element, info: mi.StructType, path: str) -> dict[str, Any]:
    fields = {f.encode_name: f for f in info.fields}
    out: dict[str, Any] = {}
    for kid in _children(elem, path):
        if not isinstance(kid.tag, str) or kid.tag not in fields:
            raise NativeFormatError(
                f"{_where(path)} has unknown element {short(kid.tag)}; expected {', '.join(fields)}"
            )
        if kid.tag in out:
            raise NativeFormatError(f"{_where(path + '/' + kid.tag)} appears more than once")
        out[kid.tag] = _read_value(kid, fields[kid.tag].type, f"{path}/{kid.tag}")
    missing = [name for name, f in fields.items() if f.required and name not in out]
    if missing:
        raise NativeFormatError(f"{_where(path)} is missing element(s) {', '.join(missing)}")
    return out


def _read_value(elem: ET.Element, t: mi.Type, path: str) -> Any:
    t = _unwrap(t)
    if isinstance(t, mi.StrType | mi.LiteralType):
        return _leaf(elem, path)
    if isinstance(t, mi.IntType):
        text = _leaf(elem, path)
        if not _INT.match(text):
            raise NativeFormatError(
                f"{_where(path)} must be an integer in canonical decimal (e.g. 42; no sign, spaces or "
                "leading zeros)"
            )
        return int(text)
    _no_attrs(elem, path)
    if isinstance(t, mi.ListType):
        items = []
        for kid in _children(elem, path):
            if kid.tag != "item":
                raise NativeFormatError(f"{_where(path)} may hold only <item> elements")
            items.append(_read_value(kid, t.item_type, path + "/item"))
        return items
    if isinstance(t, mi.StructType):
        return _read_struct(elem, t, path)
    raise NativeFormatError(f"{_where(path)}: schema type not supported by the EUMAM format")


# ------------------------------------------------------------------------------------------------ writing


def _write_struct(elem: ET.Element, value: dict[str, Any], info: mi.StructType) -> None:
    for f in info.fields:
        if f.encode_name in value:
            _write_value(ET.SubElement(elem, f.encode_name), value[f.encode_name], f.type)


def _write_value(elem: ET.Element, value: Any, t: mi.Type) -> None:
    t = _unwrap(t)
    if isinstance(t, mi.ListType):
        for v in value:
            _write_value(ET.SubElement(elem, "item"), v, t.item_type)
    elif isinstance(t, mi.StructType):
        _write_struct(elem, value, t)
    elif isinstance(t, mi.StrType | mi.LiteralType | mi.IntType):
        elem.text = str(value)
    else:
        raise NativeFormatError(f"schema type of <{elem.tag}> not supported by the EUMAM format")
