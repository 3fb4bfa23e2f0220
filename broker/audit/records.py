"""Audit records of ICD §7 and the sink every component writes decisions to.

A record never holds a message body, a key or a certificate: only the fields below. It is encoded
once, compactly, with `"type": "record"`, and those bytes are what the Merkle tree hashes, what the
audit stream stores and what `broker audit export` writes.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

import msgspec

from broker.clock import rfc3339, utcnow
from schemas.label import Label

Event = Literal[
    "accepted",
    "rejected",
    "released",
    "withheld",
    "delivered",
    "dead-lettered",
    "tail-opened",
    "tail-closed",
]


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """What a component reports; the writer adds `index`, `broker` and encodes it."""

    event: Event
    time: str  # RFC 3339 UTC, microseconds, Z
    message_id: str | None = None
    kind: str | None = None
    originator: str | None = None
    label: Label | None = None
    actor: str | None = None
    reason: str | None = None
    envelope_sha256: str | None = None


class About(Protocol):
    """What a record says of a message: a `Message`, a native `DeliveredMessage`, or what intake read
    of a refused one (any of these may be unknown)."""

    @property
    def id(self) -> str | None: ...

    @property
    def kind(self) -> str | None: ...

    @property
    def originator(self) -> str | None: ...

    @property
    def label(self) -> Label | None: ...


def event_about(
    event: Event,
    about: About | None,
    *,
    actor: str | None,
    reason: str | None = None,
    digest: str | None = None,
    time: str | None = None,
) -> AuditEvent:
    """The one way an event about a message is made: its id, kind, originator and label copied from
    `about` (none when it is None), at `time` (default now)."""
    return AuditEvent(
        event=event,
        time=time if time is not None else rfc3339(utcnow()),
        message_id=about.id if about is not None else None,
        kind=about.kind if about is not None else None,
        originator=about.originator if about is not None else None,
        label=about.label if about is not None else None,
        actor=actor,
        reason=reason,
        envelope_sha256=digest,
    )


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="record"):
    """The record as hashed and stored (field order fixed: it is part of the bytes)."""

    index: int
    time: str
    broker: str
    event: Event
    message_id: str | None
    kind: str | None
    originator: str | None
    label: Label | None
    actor: str | None
    reason: str | None
    envelope_sha256: str | None


RECORD_ENCODER = msgspec.json.Encoder()
RECORD_DECODER: msgspec.json.Decoder[AuditRecord] = msgspec.json.Decoder(AuditRecord)


def make_record(index: int, broker: str, ev: AuditEvent) -> AuditRecord:
    return AuditRecord(
        index=index,
        time=ev.time,
        broker=broker,
        event=ev.event,
        message_id=ev.message_id,
        kind=ev.kind,
        originator=ev.originator,
        label=ev.label,
        actor=ev.actor,
        reason=ev.reason,
        envelope_sha256=ev.envelope_sha256,
    )


class AuditSink(Protocol):
    """Where decisions go. `record()` waits while the writer's queue is full (backpressure, never a
    drop) and returns a future that resolves to the record's index once it is durable."""

    async def record(self, ev: AuditEvent) -> asyncio.Future[int]: ...
