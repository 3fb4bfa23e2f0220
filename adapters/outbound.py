"""An adapter's outbound side: deliveries from the broker to its organisation's native system.

Binds to its durable pull consumer of `coord.deliver.<ORG>.<rank>.>` (made by
the admin identity, filtered to the organisation's clearance ranks) with one message in flight, so
each originator's messages reach the native system in the order they were accepted.
For each delivery: `verify_delivery` (both signatures, the access decision for this organisation),
then a check of the organisation's delivered-ids bucket (a JetStream key-value bucket: a redelivery
never reaches the native system twice), the codec's rendering, and `POST /inbox` with the message
id as `Idempotency-Key`. A native system that is down is retried with backoff for as long as it
takes (the delivery is kept in progress meanwhile, so JetStream does not hand it to anyone else);
one that refuses a document permanently (4xx) sends it to the dead-letter stream, audited
`dead-lettered`. Only then is the delivery acknowledged and audited `delivered`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import msgspec
import structlog

from adapters.formats import Codec, DeliveredMessage
from broker.aio import AsyncResource, Backoff, stop_task
from broker.audit.records import AuditEvent, AuditSink, Event, event_about
from broker.errors import DeliveryRefused, FormatError
from broker.nats.bus import Bus
from broker.nats.consume import Delivery, Puller, bound, pull_forever
from broker.nats.kv import KeyValue
from broker.nats.names import (
    DELIVERY_STREAM,
    HDR_DIGEST,
    HDR_ORG,
    HDR_REASON,
    adapter_durable,
    dead_subject,
    delivered_bucket,
)
from broker.policy.model import PolicySource
from broker.rules.signatures import verify_delivery
from schemas.message import Message

__all__ = ["AdapterStats", "Outbound"]

log = structlog.get_logger(__name__)


@dataclass
class AdapterStats:
    delivered: int = 0
    dead_lettered: int = 0
    duplicates_skipped: int = 0
    native_retries: int = 0
    published: int = 0
    inbound_errors: list[str] = field(default_factory=list)


class Outbound(AsyncResource):
    """Deliveries of one organisation, one at a time, in order, to `native_url`."""

    def __init__(
        self,
        *,
        org: str,
        codec: Codec,
        native_url: str,
        bus: Bus,
        policy: PolicySource,
        audit: AuditSink,
        http: aiohttp.ClientSession,
        stats: AdapterStats,
        saw_native: Callable[[int | None], None],
        ack_wait_s: float,
        max_backoff_s: float,
    ) -> None:
        self.org = org
        self.codec = codec
        self.native_url = native_url
        self.bus = bus
        self.policy = policy
        self.audit = audit
        self.http = http
        self.stats = stats
        self.saw_native = saw_native  # what the adapter's reachability gauge is told
        self.ack_wait_s = ack_wait_s
        self.max_backoff_s = max_backoff_s
        self.durable = adapter_durable(org)
        self._kv: KeyValue | None = None

    async def _open(self) -> None:
        run = pull_forever(self.bus, self._bind, self._deliver_batch, batch=1, what=self.durable)
        self._spawn(run, self.durable)

    async def _bind(self) -> Puller:
        # The bucket and the durable consumer (filtered to this organisation's deliveries up to its
        # clearance) are made by the admin identity (broker.nats.provision): an adapter may only
        # bind to them, so even a compromised adapter cannot widen what it reads.
        await self.bus.wait_ready()
        self._kv = await KeyValue.open(self.bus, delivered_bucket(self.org))
        return await bound(self.bus, DELIVERY_STREAM, self.durable)

    async def _deliver_batch(self, msgs: list[Delivery]) -> None:
        for m in msgs:
            async with self._kept_in_progress(m):
                await self._deliver(m)

    @contextlib.asynccontextmanager
    async def _kept_in_progress(self, m: Delivery) -> AsyncIterator[None]:
        """Tell JetStream, every third of the ack wait, that the delivery is still being worked on, so a
        slow hand-over is never taken for a lost one and given to another consumer of the durable."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.ack_wait_s / 3)
                await m.in_progress()

        task = asyncio.create_task(beat(), name=f"{self.durable}-in-progress")
        try:
            yield
        finally:
            await stop_task(task)

    async def _deliver(self, m: Delivery) -> None:
        digest = m.headers.get(HDR_DIGEST)
        policy = self.policy.current
        try:
            msg = verify_delivery(m.data, self.org, policy)
        except DeliveryRefused as r:
            log.warning("adapter.delivery_refused", org=self.org, reason=r.reason)
            await self._dead_letter(m, r.message, r.reason, digest)
            return
        if await self._already_delivered(msg.id):
            self.stats.duplicates_skipped += 1
            await m.ack()
            return
        dm = DeliveredMessage(
            id=msg.id,
            kind=msg.kind,
            originator=msg.originator,
            sender=msg.sender,
            created=msg.created,
            label=msg.label,
            body=msgspec.to_builtins(msg.body),
            in_reply_to=msg.in_reply_to,
        )
        try:
            doc = self.codec.encode(dm)
        except FormatError:
            await self._dead_letter(m, msg, "unrenderable", digest)
            return
        try:
            status = await self._post_native(m, msg.id, doc)
        except DeliveryRefused as r:  # the policy changed while the native system was unavailable
            log.warning("adapter.delivery_refused", org=self.org, reason=r.reason)
            await self._dead_letter(m, r.message, r.reason, digest)
            return
        if status >= 400:
            await self._dead_letter(m, msg, f"native-rejected-{status}", digest)
            return
        # The delivered-id and the audit record are both made durable before the ack, concurrently:
        # two fsynced writes in parallel instead of one after the other.
        done = await self.audit.record(self._event("delivered", msg, None, digest))
        assert self._kv is not None  # noqa: S101 - bound before any delivery
        await asyncio.gather(self._kv.put(msg.id, b"1"), done)
        await m.ack()
        self.stats.delivered += 1

    async def _already_delivered(self, msg_id: str) -> bool:
        assert self._kv is not None  # noqa: S101 - bound before any delivery
        return await self._kv.get(msg_id) is not None

    async def _post_native(self, m: Delivery, msg_id: str, doc: bytes) -> int:
        """POST until the native system answers for good: 2xx, or a permanent 4xx (returned). Before each
        retry the delivery is verified again with the policy in force (raises DeliveryRefused)."""
        backoff = Backoff(0.1, self.max_backoff_s)
        while True:
            try:
                async with self.http.post(
                    self.native_url + "/inbox",
                    data=doc,
                    headers={"Content-Type": self.codec.media_type, "Idempotency-Key": msg_id},
                ) as resp:
                    self.saw_native(resp.status)
                    if resp.status < 300:
                        return resp.status
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        return resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.saw_native(None)
                log.info("adapter.native_unreachable", org=self.org, error=type(exc).__name__)
            self.stats.native_retries += 1
            await m.in_progress()
            await backoff.sleep()
            verify_delivery(m.data, self.org, self.policy.current)

    async def _dead_letter(self, m: Delivery, msg: Message | None, reason: str, digest: str | None) -> None:
        headers = {HDR_REASON: reason, HDR_ORG: self.org}
        msg_id = f"dead-{m.seq}-{self.org}"
        await self.bus.publish(dead_subject(self.org), m.data, msg_id=msg_id, headers=headers)
        done = await self.audit.record(self._event("dead-lettered", msg, reason, digest))
        await done
        await m.ack()
        self.stats.dead_lettered += 1

    def _event(self, name: Event, msg: Message | None, reason: str | None, digest: str | None) -> AuditEvent:
        return event_about(name, msg, actor=self.org, reason=reason, digest=digest)
