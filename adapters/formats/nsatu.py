"""NSATU liaison documents: JSON with NATO display markings (`application/vnd.nsatu.liaison+json`).

One document is one JSON object, one message::

    {
      "doc_type": "delivery.status",
      "classification": "NATO RESTRICTED",
      "releasability": "REL TO EUMAM, NSATU, UDCG",
      "caveats": [],
      "ref": "NSATU-LOG-2026-0042",
      "in_reply_to": null,
      "content": {"pledge_ref": "UDCG-ADC-2026-0117", "stage": "AT_HUB",
                  "quantity_delivered": 24, "as_of": "2026-05-14T09:30:00Z"}
    }

Fields (unknown fields are refused at every level, and so is a JSON key that appears twice):

* `doc_type` (required): a kind of ICD §5.
* `classification` (required): a NATO display marking of ICD §2, exact (`NATO RESTRICTED`,
  `COSMIC TOP SECRET`...). EU markings (including the EU's bare `UNCLASSIFIED`) are refused.
* `releasability` (required): `REL TO ` + organisation codes joined by `, `, sorted, unique.
* `caveats` (required): list of caveat codes, sorted, unique (`[]` for none).
* `content` (required): the kind's body (ICD §5), validated by its schema.
* `ref` (optional): the document's own id (`REF_PATTERN`), or null.
* `in_reply_to` (optional): id of the document/message answered, or null.
* `original_marking`: written by the broker only when the message carries an EU label; `classification`
  is then the NATO marking of the same rank and this field the EU marking. On input it must be exactly
  that EU marking, and the decoded label is then restored to the EU policy.
* `delivered`: written by the broker, `{"originator", "sender", "created"}` of the released message.
  On input it is checked and ignored: who publishes is decided by the adapter's identity, never by the
  document.

On output `ref` is the broker message id. Integers must be canonical (`-0`, `1.0`, `1e2` refused);
NaN/Infinity refused; the document must be UTF-8 without BOM and at most 1 MiB.
"""

from __future__ import annotations

import json
from typing import Any

from adapters.formats.base import (
    DeliveredMessage,
    NativeMessage,
    check_provenance,
    check_ref,
    format_caveats,
    format_releasability,
    make_label,
    parse_caveat_list,
    parse_classification,
    parse_original_marking,
    parse_releasability,
    render_marking,
    short,
    strict_json_loads,
    utf8_text,
)
from adapters.formats.bodies import validate_body
from broker.errors import NativeFormatError

__all__ = ["MEDIA_TYPE", "NsatuCodec"]

MEDIA_TYPE = "application/vnd.nsatu.liaison+json"
_FMT = "NSATU"
_REQUIRED = ("doc_type", "classification", "releasability", "caveats", "content")
_OPTIONAL = ("ref", "in_reply_to", "original_marking", "delivered")
_DELIVERED = ("originator", "sender", "created")


class NsatuCodec:
    """JSON documents with NATO markings; one document, one message."""

    name: str = "nsatu"
    media_type: str = MEDIA_TYPE

    def decode(self, data: bytes) -> list[NativeMessage]:
        doc = strict_json_loads(utf8_text(data, _FMT), f"{_FMT} document")
        if not isinstance(doc, dict):
            raise NativeFormatError(f"{_FMT} document must be one JSON object")
        _check_fields(doc, _REQUIRED, _OPTIONAL, f"{_FMT} document")
        kind = doc["doc_type"]
        body = validate_body(kind, doc["content"], _FMT)
        policy, classification = parse_classification(doc["classification"], "NATO", _FMT)
        if "original_marking" in doc:
            policy = parse_original_marking(doc["original_marking"], "NATO", classification, _FMT)
        rel = parse_releasability(doc["releasability"], _FMT)
        caveats = parse_caveat_list(doc["caveats"], _FMT)
        if "delivered" in doc:
            delivered = doc["delivered"]
            if not isinstance(delivered, dict):
                raise NativeFormatError(f"{_FMT} 'delivered' must be an object")
            _check_fields(delivered, _DELIVERED, (), f"{_FMT} 'delivered'")
            check_provenance(delivered["originator"], delivered["sender"], delivered["created"], _FMT)
        return [
            NativeMessage(
                kind=kind,
                label=make_label(policy, classification, rel, caveats),
                body=body,
                ref=check_ref(doc.get("ref"), "ref"),
                in_reply_to=check_ref(doc.get("in_reply_to"), "in_reply_to"),
            )
        ]

    def encode(self, msg: DeliveredMessage) -> bytes:
        marking, original = render_marking(msg.label, "NATO")
        doc: dict[str, Any] = {
            "doc_type": msg.kind,
            "classification": marking,
            "releasability": format_releasability(list(msg.label.releasable_to)),
            "caveats": format_caveats(list(msg.label.caveats)).split(" ") if msg.label.caveats else [],
            "ref": check_ref(msg.id, "id"),
            "in_reply_to": check_ref(msg.in_reply_to, "in_reply_to"),
            "content": validate_body(msg.kind, msg.body),
        }
        if original is not None:
            doc["original_marking"] = original
        check_provenance(msg.originator, msg.sender, msg.created, _FMT)
        doc["delivered"] = {"originator": msg.originator, "sender": msg.sender, "created": msg.created}
        return json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"


def _check_fields(
    obj: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...], what: str
) -> None:
    allowed = set(required) | set(optional)
    for key in obj:
        if key not in allowed:
            raise NativeFormatError(
                f"{what} has unknown field {short(key)}; allowed fields are {', '.join(sorted(allowed))}"
            )
    missing = [k for k in required if k not in obj]
    if missing:
        raise NativeFormatError(f"{what} is missing required field(s) {', '.join(missing)}")
