"""The identifier and value forms of the ICD (§1-§5), each written once.

Every form is a `Form`: its regular expression body, `pattern` (anchored, for msgspec and the JSON
Schemas) and `matches()` (a whole-value match, for code outside the schemas: the policy loader, the
state folder, the native formats). The msgspec types the wire Structs use are built from the same
forms below, so a form changes in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, TypeGuard

import msgspec

__all__ = [
    "BROKER_ID",
    "CAVEAT",
    "DATE",
    "KEY_ID",
    "KEY_NAME",
    "MESSAGE_ID",
    "NATION",
    "ORGANISATION",
    "PARTY",
    "TIMESTAMP",
    "Caveat",
    "Date",
    "Form",
    "MessageId",
    "Nation",
    "OrgCode",
    "PartyId",
    "Timestamp",
    "split_keyid",
]


@dataclass(frozen=True, slots=True)
class Form:
    """One identifier or value form: `body` is the regular expression without anchors."""

    body: str
    description: str = ""
    _rx: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rx", re.compile(self.body))

    @property
    def pattern(self) -> str:
        """Anchored, as msgspec and JSON Schema take it."""
        return f"^{self.body}$"

    def matches(self, value: object) -> TypeGuard[str]:
        """True iff `value` is a string that matches the whole form."""
        return isinstance(value, str) and self._rx.fullmatch(value) is not None


#: an organisation code (ICD §1)
ORGANISATION = Form(r"[A-Z][A-Z0-9]{1,15}", "organisation code")
#: a sender or operator id (ICD §1); the broker's own identity `broker` has the same form
PARTY = Form(r"[a-z][a-z0-9-]{2,62}", "sender or operator id")
#: the name part of a key id `<owner>:<name>` (ICD §1)
KEY_NAME = Form(r"[A-Za-z0-9._-]{1,64}", "key name")
KEY_ID = Form(f"{PARTY.body}:{KEY_NAME.body}", "key id <sender>:<name>")
#: the broker's own identity: reserved, never a sender's or operator's; its keys are `broker:<name>`
BROKER_ID = "broker"
#: a caveat of a label (ICD §2)
CAVEAT = Form(r"[A-Z][A-Z0-9-]{1,31}", "caveat")
#: a message id: RFC 9562 UUID, lowercase canonical text (ICD §3)
MESSAGE_ID = Form(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
    "RFC 9562 UUID, lowercase canonical text",
)
#: `created`: RFC 3339 UTC with Z (ICD §3)
TIMESTAMP = Form(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z", "RFC 3339 UTC with Z")
#: dates in bodies: RFC 3339 date or date-time (ICD §5)
DATE = Form(
    r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2}))?", "RFC 3339 date or date-time"
)
#: ISO 3166-1 alpha-3 (ICD §5)
NATION = Form(r"[A-Z]{3}", "ISO 3166-1 alpha-3 code")

OrgCode = Annotated[str, msgspec.Meta(pattern=ORGANISATION.pattern)]
PartyId = Annotated[str, msgspec.Meta(pattern=PARTY.pattern)]
Caveat = Annotated[str, msgspec.Meta(pattern=CAVEAT.pattern)]
MessageId = Annotated[str, msgspec.Meta(pattern=MESSAGE_ID.pattern, description=MESSAGE_ID.description)]
Timestamp = Annotated[str, msgspec.Meta(pattern=TIMESTAMP.pattern, description=TIMESTAMP.description)]
Date = Annotated[str, msgspec.Meta(pattern=DATE.pattern, description=DATE.description)]
Nation = Annotated[str, msgspec.Meta(pattern=NATION.pattern)]


def split_keyid(keyid: str) -> tuple[str, str]:
    """`owner:name` -> (owner, name), owner a sender id or `broker`; ValueError when it is not of that
    form (ICD §1)."""
    owner, sep, name = keyid.partition(":")
    owner_ok = owner == BROKER_ID or PARTY.matches(owner)
    if not sep or not owner_ok or not KEY_NAME.matches(name):
        raise ValueError(
            f"key id {keyid!r} must be <owner>:<name>, owner a sender id, name ^[A-Za-z0-9._-]{{1,64}}$"
        )
    return owner, name
