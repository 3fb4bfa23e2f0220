"""The signed message of ICD §3 and the DSSE envelope of ICD §4.

The message is one tagged union over the seven kinds (`kind` is the tag), so a single typed
decoder, built once, reads any message and names the JSON path of the first schema error.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec

from schemas.ids import MessageId, OrgCode, PartyId, Timestamp
from schemas.kinds import (
    BODY_TYPES,
    CapabilityPledge,
    DeliveryStatus,
    IndustryExchange,
    LessonLearned,
    StatusUpdate,
    TrainingOffer,
    TrainingRequest,
)
from schemas.label import Label

PAYLOAD_TYPE = "application/vnd.coord.message+json; version=1"


class _Message(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="kind",
    kw_only=True,
    omit_defaults=True,
):
    """Fields common to every kind; `kind` is the union's tag."""

    kind_name: ClassVar[str]

    id: MessageId
    version: Literal[1]
    originator: OrgCode
    sender: PartyId
    created: Timestamp
    label: Label
    in_reply_to: MessageId | None = None

    @property
    def kind(self) -> str:
        return self.kind_name


class StatusUpdateMessage(_Message, tag="status.update", frozen=True):
    kind_name = "status.update"
    body: StatusUpdate


class CapabilityPledgeMessage(_Message, tag="capability.pledge", frozen=True):
    kind_name = "capability.pledge"
    body: CapabilityPledge


class DeliveryStatusMessage(_Message, tag="delivery.status", frozen=True):
    kind_name = "delivery.status"
    body: DeliveryStatus


class TrainingOfferMessage(_Message, tag="training.offer", frozen=True):
    kind_name = "training.offer"
    body: TrainingOffer


class TrainingRequestMessage(_Message, tag="training.request", frozen=True):
    kind_name = "training.request"
    body: TrainingRequest


class LessonLearnedMessage(_Message, tag="lesson.learned", frozen=True):
    kind_name = "lesson.learned"
    body: LessonLearned


class IndustryExchangeMessage(_Message, tag="industry.exchange", frozen=True):
    kind_name = "industry.exchange"
    body: IndustryExchange


Message = (
    StatusUpdateMessage
    | CapabilityPledgeMessage
    | DeliveryStatusMessage
    | TrainingOfferMessage
    | TrainingRequestMessage
    | LessonLearnedMessage
    | IndustryExchangeMessage
)

MESSAGE_TYPES: dict[str, type[Message]] = {
    t.kind_name: t
    for t in (
        StatusUpdateMessage,
        CapabilityPledgeMessage,
        DeliveryStatusMessage,
        TrainingOfferMessage,
        TrainingRequestMessage,
        LessonLearnedMessage,
        IndustryExchangeMessage,
    )
}
assert set(MESSAGE_TYPES) == set(BODY_TYPES)  # noqa: S101 - import-time consistency check


class Signature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    keyid: Annotated[str, msgspec.Meta(max_length=200)]
    sig: Annotated[str, msgspec.Meta(max_length=200)]


class Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """DSSE v1 envelope. `payload` and `sig` are base64 (either alphabet on input)."""

    payload_type: str
    payload: str
    signatures: list[Signature]


MESSAGE_DECODER: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Message)
ENVELOPE_DECODER: msgspec.json.Decoder[Envelope] = msgspec.json.Decoder(Envelope)
ENCODER = msgspec.json.Encoder()
