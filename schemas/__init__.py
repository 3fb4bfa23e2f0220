"""Wire types of the coordination broker (ICD §2-§5), as strict msgspec Structs."""

from schemas.kinds import BODY_TYPES, KINDS, Body
from schemas.label import Label
from schemas.message import (
    ENVELOPE_DECODER,
    MESSAGE_DECODER,
    MESSAGE_TYPES,
    PAYLOAD_TYPE,
    Envelope,
    Message,
    Signature,
)

__all__ = [
    "BODY_TYPES",
    "ENVELOPE_DECODER",
    "KINDS",
    "MESSAGE_DECODER",
    "MESSAGE_TYPES",
    "PAYLOAD_TYPE",
    "Body",
    "Envelope",
    "Label",
    "Message",
    "Signature",
]
