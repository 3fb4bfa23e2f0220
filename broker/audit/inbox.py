"""Audit events from parts of the system in other processes, carried to the one audit writer.

A part that runs apart from the writer (the dispatcher, an adapter, a gateway worker) uses
`RemoteAuditSink`: each event is published to the `COORD_AUDIT_IN` stream on
`coord.auditin.<service>` with a fresh `Nats-Msg-Id`, retried until JetStream acknowledges it, and
the returned future resolves only then (durable, like a local writer's). At most `in_flight`
publishes are outstanding; past that `record()` waits (backpressure, never a drop).

The writer consumes that stream through its durable consumer (`consume_inbox`) and acks an event only
once its record is stored; a redelivered event (lost ack, writer crash, failover) is recorded again,
and the writer keeps one record per repeated decision: each event becomes exactly one record,
whatever order redeliveries come in.
"""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import structlog

from broker.aio import AsyncResource, Backoff, stop_task
from broker.audit.records import AuditEvent, AuditSink
from broker.clock import rfc3339, utcnow
from broker.errors import BusUnavailable
from broker.nats.bus import Bus
from broker.nats.consume import Delivery, Puller, bound, pull_forever
from broker.nats.names import AUDIT_IN_STREAM, INBOX_DURABLE, inbox_subject

__all__ = ["BATCH", "RemoteAuditSink", "consume_inbox"]

log = structlog.get_logger(__name__)

EVENT_ENCODER = msgspec.json.Encoder()
EVENT_DECODER: msgspec.json.Decoder[AuditEvent] = msgspec.json.Decoder(AuditEvent)
#: events taken from the inbox per fetch
BATCH = 500


class RemoteAuditSink(AsyncResource):
    """Implements `AuditSink` over JetStream for a service outside the writer's process. Use as
    `async with`: it owns its publishes, and leaving waits up to `drain_s` for those still retrying
    (an event its caller did not wait for would otherwise be dropped silently) before it stops them."""

    def __init__(self, bus: Bus, service: str, *, in_flight: int = 1000, drain_s: float = 5.0) -> None:
        self.bus = bus
        self.subject = inbox_subject(service)
        self.drain_s = drain_s
        self._slots = asyncio.Semaphore(in_flight)
        self._pending: set[asyncio.Task[int]] = set()

    async def record(self, ev: AuditEvent) -> asyncio.Future[int]:
        await self._slots.acquire()
        publish = self._publish(EVENT_ENCODER.encode(ev), uuid.uuid4().hex)
        task = asyncio.get_running_loop().create_task(publish)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _close(self) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=self.drain_s)
        if self._pending:
            log.error("audit.remote_unsent", events=len(self._pending))
        for task in list(self._pending):
            await stop_task(task)

    async def _publish(self, data: bytes, msg_id: str) -> int:
        backoff = Backoff(0.1, 2.0)
        try:
            while True:
                try:
                    return (await self.bus.publish(self.subject, data, msg_id=msg_id)).seq
                except BusUnavailable as exc:
                    log.warning("audit.remote_retry", error=str(exc))
                    await backoff.sleep()
        finally:
            self._slots.release()


async def consume_inbox(bus: Bus, writer: AuditSink) -> None:
    """The writer's side: take the other processes' events from COORD_AUDIT_IN, for ever."""

    async def bind() -> Puller:
        return await bound(bus, AUDIT_IN_STREAM, INBOX_DURABLE)

    async def take(msgs: list[Delivery]) -> None:
        """Queue each event, then ack it once its record is stored. A redelivered event (its ack was
        lost, or the writer crashed before storing it, or a failover lost the first delivery) is
        simply recorded again: the writer keeps one record per repeated decision, so redelivery in
        any order neither loses an event nor writes it twice."""
        pending: list[tuple[Delivery, asyncio.Future[int]]] = []
        for m in msgs:
            try:
                ev = EVENT_DECODER.decode(m.data)
            except msgspec.DecodeError:
                log.error("audit.inbox_unreadable", seq=m.seq)  # only our services publish here
                # recorded, not dropped: the log shows that an event arrived and could not be read
                ev = AuditEvent(event="rejected", time=rfc3339(utcnow()), reason="unreadable-event")
            pending.append((m, await writer.record(ev)))
        for m, fut in pending:
            await fut
            await m.ack()

    await pull_forever(bus, bind, take, batch=BATCH, what=INBOX_DURABLE)
