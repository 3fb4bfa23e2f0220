"""Audit events from a service in another process, carried to the one audit writer.

A service that runs apart from the writer (the dispatcher or an adapter under `broker run`) uses
`RemoteAuditSink`: each event is published to the `COORD_AUDIT_IN` stream on
`coord.auditin.<service>` with a fresh `Nats-Msg-Id`, retried until JetStream acknowledges it, and
the returned future resolves only then (durable, like a local writer's). At most `in_flight`
publishes are outstanding; past that `record()` waits (backpressure, never a drop).

The writer consumes that stream through its durable consumer (`AuditWriter` with `inbox=True`) and
acks an event only once its record is stored; a redelivered event (lost ack, writer crash, failover)
is recorded again, and the writer keeps one record per repeated decision: each event becomes exactly
one record, whatever order redeliveries come in.
"""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import structlog

from broker.audit.records import AuditEvent
from broker.errors import BusUnavailable
from broker.nats.bus import Bus

log = structlog.get_logger(__name__)

INBOX_DURABLE = "audit-inbox"
EVENT_ENCODER = msgspec.json.Encoder()
EVENT_DECODER: msgspec.json.Decoder[AuditEvent] = msgspec.json.Decoder(AuditEvent)


def inbox_subject(service: str) -> str:
    return f"coord.auditin.{service}"


class RemoteAuditSink:
    """Implements `AuditSink` over JetStream for a service outside the writer's process."""

    def __init__(self, bus: Bus, service: str, *, in_flight: int = 1000) -> None:
        self.bus = bus
        self.subject = inbox_subject(service)
        self._slots = asyncio.Semaphore(in_flight)

    async def record(self, ev: AuditEvent) -> asyncio.Future[int]:
        await self._slots.acquire()
        return asyncio.ensure_future(self._publish(EVENT_ENCODER.encode(ev), uuid.uuid4().hex))

    async def _publish(self, data: bytes, msg_id: str) -> int:
        delay = 0.1
        try:
            while True:
                try:
                    return (await self.bus.publish(self.subject, data, msg_id=msg_id)).seq
                except BusUnavailable as exc:
                    log.warning("audit.remote_retry", error=str(exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            self._slots.release()
