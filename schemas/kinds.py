"""Bodies of the seven message kinds of ICD §5, version 1.

Every inbound type forbids unknown fields. Required fields are the ICD's; optional ones carry
defaults, so that adding one later is not a breaking change (msgspec schema evolution).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.ids import Date, Nation

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
LongText = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Quantity = Annotated[int, msgspec.Meta(ge=0)]


class _Body(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class StatusUpdate(_Body, frozen=True):
    topic: Text
    state: Literal["GREEN", "AMBER", "RED"]
    summary: LongText


class PledgeItem(_Body, frozen=True):
    designation: Text
    category: Text
    quantity: Quantity


class Window(_Body, frozen=True):
    from_: Annotated[Date, msgspec.Meta(title="from")] = msgspec.field(name="from")
    to: Date


class CapabilityPledge(_Body, frozen=True):
    pledge_ref: Text
    nation: Nation
    coalition: Text
    items: Annotated[list[PledgeItem], msgspec.Meta(min_length=1, max_length=500)]
    delivery_window: Window


class DeliveryStatus(_Body, frozen=True):
    pledge_ref: Text
    stage: Literal["PLEDGED", "IN_TRANSIT", "AT_HUB", "HANDED_OVER", "DELAYED", "CANCELLED"]
    quantity_delivered: Quantity
    as_of: Date


class TrainingOffer(_Body, frozen=True):
    course: Text
    location: Text
    start: Date
    end: Date
    seats: Quantity


class TrainingRequest(_Body, frozen=True):
    course: Text
    trainees: Quantity
    earliest_start: Date


class LessonLearned(_Body, frozen=True):
    title: Text
    domain: Text
    observation: LongText
    recommendation: LongText


class IndustryExchange(_Body, frozen=True):
    topic: Text
    parties: Annotated[list[Text], msgspec.Meta(min_length=1, max_length=100)]
    standards: Annotated[list[Text], msgspec.Meta(max_length=100)]
    summary: LongText


Body = (
    StatusUpdate
    | CapabilityPledge
    | DeliveryStatus
    | TrainingOffer
    | TrainingRequest
    | LessonLearned
    | IndustryExchange
)

#: kind name -> body type, in ICD §5 order.
BODY_TYPES: dict[str, type[Body]] = {
    "status.update": StatusUpdate,
    "capability.pledge": CapabilityPledge,
    "delivery.status": DeliveryStatus,
    "training.offer": TrainingOffer,
    "training.request": TrainingRequest,
    "lesson.learned": LessonLearned,
    "industry.exchange": IndustryExchange,
}

KINDS: tuple[str, ...] = tuple(BODY_TYPES)
