"""Common ground of the native-format codecs: message types, the codec protocol, strict helpers.

A codec translates between one coordination body's native documents and the broker's message fields
(ICD §2, §3, §5), both ways, with no I/O:

* `decode(bytes) -> list[NativeMessage]` (native -> broker): a document may hold several messages;
* `encode(DeliveredMessage) -> bytes` (broker -> native): one message, one document.

Rules shared by every codec (docs/native-formats.md tells the whole story):

* A document larger than `MAX_NATIVE_BYTES` (1 MiB) is refused before it is parsed.
* Documents are UTF-8; anything else is refused.
* Every refusal is a `NativeFormatError` (or `MarkingError` for a classification marking) whose message
  says what was expected and never echoes document content beyond a short, truncated field name.
* Classification markings are the exact display markings of ICD §2, parsed with
  `broker.rules.labels.parse_marking`: unknown, ambiguous or mis-cased markings are refused, never guessed.
  Each format accepts the markings of one policy only; a message of the other policy is rendered with the
  equivalent marking of the same rank and the original marking is carried beside it (see `render_marking`).
* Releasability is written `REL TO A, B` (org codes `^[A-Z][A-Z0-9]{1,15}$`, sorted, unique, one
  `", "` between codes). Caveats follow ICD §2 (`^[A-Z][A-Z0-9-]{1,31}$`, sorted, unique); in text form
  (XML-free formats) they are separated by exactly one space, the empty string meaning none.
* Native document ids (`ref`, `in_reply_to`) match `REF_PATTERN`.
* Text in bodies is limited to the characters XML 1.0 can carry (no C0 controls other than tab, LF and
  CR, no surrogates, no U+FFFE/U+FFFF), in every format, so that any message one codec accepts every
  codec can deliver.
* Bodies are validated by converting them through the kind's msgspec type (`schemas.kinds.BODY_TYPES`);
  the `body` handed back is that type's plain JSON form (`validate_body`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from broker.errors import DuplicateKey, MarkingError, NativeFormatError, NonFiniteNumber
from broker.rules.labels import parse_marking
from broker.rules.strict_json import loads_strict
from schemas.clearance import CLASSIFICATIONS, EU_MARKINGS, NATO_MARKINGS, display_marking
from schemas.ids import CAVEAT, ORGANISATION, PARTY, TIMESTAMP, Form
from schemas.label import Label

__all__ = [
    "MAX_NATIVE_BYTES",
    "REF_PATTERN",
    "Codec",
    "DeliveredMessage",
    "NativeMessage",
    "check_provenance",
    "check_ref",
    "clean_error",
    "format_caveats",
    "format_releasability",
    "make_label",
    "parse_caveat_list",
    "parse_caveats",
    "parse_classification",
    "parse_original_marking",
    "parse_releasability",
    "render_marking",
    "short",
    "strict_json_loads",
    "utf8_text",
]

MAX_NATIVE_BYTES = 1024 * 1024
"""The largest native document a codec will parse (1 MiB)."""

#: a native document id (`ref`, `in_reply_to`): UUIDs and ids like `UDCG-PL-2026-0042` fit
REF = Form(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}", "native document id")
REF_PATTERN = REF.pattern

_INT_RE = re.compile(r"^(0|-?[1-9][0-9]{0,17})$")
_ENUM_RE = re.compile(r"^Invalid enum value .* - at `")
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(.*)`(.*)$", re.S)
_MARKINGS = {"NATO": NATO_MARKINGS, "EU": EU_MARKINGS}



@dataclass(frozen=True)
class NativeMessage:
    """One message read from a native document, ready for the broker to wrap and sign."""

    kind: str
    label: Label
    body: dict[str, Any]
    ref: str | None = None
    in_reply_to: str | None = None


@dataclass(frozen=True)
class DeliveredMessage:
    """A message the broker released to an organisation, to be rendered as a native document."""

    id: str
    kind: str
    originator: str
    sender: str
    created: str
    label: Label
    body: dict[str, Any]
    in_reply_to: str | None = None


class Codec(Protocol):
    """A pure, strict translation between one native format and broker messages."""

    name: str
    media_type: str

    def decode(self, data: bytes) -> list[NativeMessage]:
        """Native document -> messages; raises NativeFormatError / MarkingError, never partial output."""
        ...

    def encode(self, msg: DeliveredMessage) -> bytes:
        """Message -> native document; raises NativeFormatError if the message cannot be rendered."""
        ...


# --------------------------------------------------------------------------------------------- helpers


def short(name: object, limit: int = 32) -> str:
    """A field or element name fit for an error message: printable, quoted, at most `limit` chars."""
    text = str(name)
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def utf8_text(data: bytes, fmt: str, *, allow_bom: bool = False) -> str:
    """The document as text: size-checked, strict UTF-8, no byte-order mark unless allowed (then dropped)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise NativeFormatError(f"{fmt} document must be bytes")
    if len(data) > MAX_NATIVE_BYTES:
        raise NativeFormatError(f"{fmt} document is larger than {MAX_NATIVE_BYTES} bytes (1 MiB); refused")
    raw = bytes(data)
    if raw.startswith(b"\xef\xbb\xbf"):
        if not allow_bom:
            raise NativeFormatError(f"{fmt} document must be UTF-8 without a byte-order mark")
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NativeFormatError(f"{fmt} document must be UTF-8 text") from None


def _canonical_int(text: str) -> int:
    if not _INT_RE.match(text):
        raise NativeFormatError("integers must be canonical decimal (no leading zeros, sign or exponent)")
    return int(text)


def strict_json_loads(text: str, what: str) -> Any:
    """JSON with one reading only: duplicate keys, NaN/Infinity and non-canonical integers refused."""
    try:
        return loads_strict(text, parse_int=_canonical_int)
    except DuplicateKey as e:
        key = short(e.key)
        raise NativeFormatError(f"{what}: duplicate JSON key {key}; every key must appear once") from None
    except (NativeFormatError, NonFiniteNumber) as e:
        raise NativeFormatError(f"{what}: {e}") from None
    except (ValueError, RecursionError) as e:
        where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        raise NativeFormatError(f"{what} must be one well-formed JSON value{where}") from None


def check_ref(value: object, field: str) -> str | None:
    """A native document id, or None; anything else refused."""
    if value is None:
        return None
    if not REF.matches(value):
        raise NativeFormatError(
            f"{field} must be null/absent or a document id matching {REF_PATTERN} (e.g. 'UDCG-PL-2026-0042')"
        )
    return value


# -------------------------------------------------------------------------------------------- markings


def parse_classification(text: object, policy: str, fmt: str) -> tuple[str, str]:
    """A classification marking of `policy` (`NATO` or `EU`) -> (policy, classification).

    Raises MarkingError naming the expected markings; the offending text is not echoed.
    """
    expected = ", ".join(repr(m) for m in _MARKINGS[policy])
    if not isinstance(text, str):
        raise MarkingError(f"{fmt} classification must be a text marking, one of {expected}")
    try:
        found_policy, classification = parse_marking(text)
    except MarkingError:
        near = [m for m in _MARKINGS[policy] if m.casefold() == " ".join(text.split()).casefold()]
        hint = f" (did you mean {near[0]!r}? markings are case- and space-exact)" if near else ""
        raise MarkingError(
            f"{fmt} classification marking is not recognised{hint}; expected one of {expected}"
        ) from None
    if found_policy != policy:
        raise MarkingError(
            f"{fmt} documents carry {policy} markings; an {found_policy} marking was given. "
            f"Expected one of {expected}"
        )
    return found_policy, classification


def parse_original_marking(text: object, rendered_policy: str, classification: str, fmt: str) -> str:
    """The `original marking` beside a rendered one: must be the other policy's marking of the same rank.

    Returns the original policy.
    """
    other = "EU" if rendered_policy == "NATO" else "NATO"
    expected = display_marking(other, classification)
    if text != expected:
        raise MarkingError(
            f"{fmt} original marking must be the {other} marking of the same rank as the classification "
            f"({expected!r} here), or absent"
        )
    return other


def render_marking(label: Label, policy: str) -> tuple[str, str | None]:
    """The marking of `label` in `policy` and, if the label is of the other policy, its original marking."""
    if label.classification not in CLASSIFICATIONS:
        raise NativeFormatError("label classification must be one of " + ", ".join(CLASSIFICATIONS))
    marking = display_marking(policy, label.classification)
    if label.policy == policy:
        return marking, None
    return marking, display_marking(label.policy, label.classification)


def parse_releasability(text: object, fmt: str) -> list[str]:
    """`REL TO A, B` -> ["A", "B"]; codes sorted, unique, each `^[A-Z][A-Z0-9]{1,15}$`."""
    expected = "'REL TO ' then organisation codes joined by ', ' (e.g. 'REL TO EUMAM, NSATU')"
    if not isinstance(text, str) or not text.startswith("REL TO "):
        raise MarkingError(f"{fmt} releasability must be {expected}")
    codes = text[len("REL TO ") :].split(", ")
    if not all(ORGANISATION.matches(c) for c in codes):
        raise MarkingError(
            f"{fmt} releasability must be {expected}; each code matching ^[A-Z][A-Z0-9]{{1,15}}$"
        )
    if codes != sorted(set(codes)):
        raise MarkingError(f"{fmt} releasability codes must be sorted and unique, e.g. 'REL TO EUMAM, NSATU'")
    return codes


def format_releasability(codes: list[str]) -> str:
    text = "REL TO " + ", ".join(codes)
    parse_releasability(text, "message")  # never write what we would refuse to read
    return text


def parse_caveat_list(values: object, fmt: str) -> list[str]:
    """Caveats as a list: each `^[A-Z][A-Z0-9-]{1,31}$`, sorted, unique."""
    if not isinstance(values, list) or not all(CAVEAT.matches(v) for v in values):
        raise MarkingError(f"{fmt} caveats must be a list of codes matching ^[A-Z][A-Z0-9-]{{1,31}}$")
    if values != sorted(set(values)):
        raise MarkingError(f"{fmt} caveats must be sorted and unique")
    return list(values)


def parse_caveats(text: object, fmt: str) -> list[str]:
    """Caveats in text form: codes separated by exactly one space; empty text means none."""
    if not isinstance(text, str):
        raise MarkingError(f"{fmt} caveats must be text: codes separated by one space, or empty")
    if text == "":
        return []
    return parse_caveat_list(text.split(" "), fmt)


def format_caveats(caveats: list[str]) -> str:
    parse_caveat_list(list(caveats), "message")
    return " ".join(caveats)


def make_label(policy: str, classification: str, releasable_to: list[str], caveats: list[str]) -> Label:
    """A Label checked against its wire type (patterns, enums)."""
    try:
        return msgspec.convert(
            {
                "policy": policy,
                "classification": classification,
                "releasable_to": releasable_to,
                "caveats": caveats,
            },
            Label,
        )
    except msgspec.ValidationError as e:
        raise MarkingError(f"label is not valid: {clean_error(e)}") from None


def check_provenance(originator: object, sender: object, created: object, fmt: str) -> None:
    """The broker's provenance fields on a delivered document (checked, then ignored on input)."""
    if not (
        isinstance(originator, str)
        and ORGANISATION.matches(originator)
        and isinstance(sender, str)
        and PARTY.matches(sender)
        and isinstance(created, str)
        and TIMESTAMP.matches(created)
    ):
        raise NativeFormatError(
            f"{fmt} delivery provenance must be originator (organisation code), sender (sender id) and "
            "created (RFC 3339 UTC with Z)"
        )


def clean_error(e: msgspec.ValidationError) -> str:
    """msgspec's message without any value taken from the document."""
    text = str(e)
    if _ENUM_RE.match(text):
        return "value is not one of the allowed values - at `" + text.split(" - at `", 1)[1]
    m = _UNKNOWN_RE.match(text)
    if m:
        return f"unknown field {short(m.group(1))}{m.group(2)}; only the kind's schema fields are allowed"
    return text
