"""Storing an admitted message, once (ICD §6): 202 when stored now, 200 `duplicate` for the same
bytes again, 409 `id-conflict` for other bytes under a used id, 503 `unavailable` when the bus cannot
take it (nothing stored, safe to retry with the same id).

JetStream decides duplicates within its window (`Nats-Msg-Id` = the message id); the stored copy's
SHA-256 header then tells "the same bytes" from "other bytes", whichever gateway process or restart
stored the first one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import structlog

from broker.clock import rfc3339, utcnow
from broker.errors import BusUnavailable, Problem
from broker.nats.bus import PubResult, Stored
from broker.nats.names import ACCEPTED_STREAM, HDR_DIGEST, HDR_RECEIVED, HDR_SENDER, accepted_subject
from broker.rules.intake import Admitted
from schemas.clearance import RANK

__all__ = ["AcceptedStore", "StoreResult", "subject_of"]

log = structlog.get_logger(__name__)


class _Bus(Protocol):
    async def publish(
        self, subject: str, data: bytes, *, msg_id: str, headers: dict[str, str] | None = None
    ) -> PubResult: ...

    async def get(self, stream: str, seq: int) -> Stored: ...


@dataclass(frozen=True, slots=True)
class StoreResult:
    seq: int
    duplicate: bool  # True: the same bytes were stored before (answer 200 `duplicate`)


def subject_of(a: Admitted) -> str:
    """Where an admitted message is stored: `coord.msg.<rank>.<originator>.<kind>.<id>`."""
    m = a.message
    return accepted_subject(RANK[m.label.classification], m.originator, m.kind, m.id)


class AcceptedStore:
    """The accepted-messages stream as the gateway writes it."""

    def __init__(self, bus: _Bus) -> None:
        self.bus = bus

    async def store(self, a: Admitted) -> StoreResult:
        """Store `a` durably (the server fsyncs before it acks) or raise the ICD problem."""
        m = a.message
        subject = subject_of(a)
        headers = {HDR_DIGEST: a.digest, HDR_SENDER: a.sender, HDR_RECEIVED: rfc3339(utcnow())}
        try:
            res = await self.bus.publish(subject, a.envelope, msg_id=m.id, headers=headers)
            stored = await self.bus.get(ACCEPTED_STREAM, res.seq) if res.duplicate else None
        except BusUnavailable as exc:
            log.warning("gateway.bus_unavailable", error=str(exc))
            raise Problem("unavailable", "the message bus is down; retry with the same id") from exc
        if stored is None:
            return StoreResult(res.seq, duplicate=False)
        if stored.headers.get(HDR_DIGEST) != a.digest:
            raise Problem("id-conflict", "this id was already used for different bytes; use a new id")
        # The same bytes, found on a retry of this very request: most likely our own first attempt,
        # stored before its ack was lost; the client sent once, so it gets the first answer (202).
        return StoreResult(res.seq, duplicate=not res.retried)
