"""The dispatcher: per accepted message, per organisation, release or withhold (ICD §2, §4).

A durable pull consumer of the accepted-messages stream. For each message it takes the policy in
force now (a clearance lowered after acceptance releases nothing more), applies the release
decision (`broker.rules.release`) to every organisation, countersigns what it releases (a second
DSSE signature, key `broker:<name>`) and publishes it to `coord.deliver.<org>.<rank>.<kind>` with
`Nats-Msg-Id = <id>:<org>`, so a redelivered message is released to each organisation once.
`withheld` records name the failing rule. The accepted message is acked only after every release
is acknowledged by JetStream and every audit record of it is durable.

Releases of one fetched batch are published in stream order (one connection, pipelined), so each
organisation's delivery stream keeps the order in which messages were accepted.
"""

from __future__ import annotations

import asyncio

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.aio import AsyncResource, Backoff
from broker.audit.records import AuditEvent, AuditSink, event_about
from broker.dsse import open_envelope
from broker.errors import BusUnavailable, UnreadableEnvelope
from broker.metrics.registry import Registry
from broker.nats.bus import Bus
from broker.nats.consume import Delivery, Puller, durable, pull_forever
from broker.nats.names import (
    ACCEPTED_STREAM,
    DISPATCH_DURABLE,
    HDR_DIGEST,
    HDR_ORG,
    HDR_RECEIVED,
    HDR_SENDER,
    delivery_subject,
)
from broker.policy.model import Policy, PolicySource
from broker.rules.release import countersign, decisions
from broker.rules.signatures import originator_signed
from schemas.clearance import RANK

log = structlog.get_logger(__name__)

RELEASE_ACK_TIMEOUT_S = 10.0

#: one release: (subject, countersigned envelope, Nats-Msg-Id, headers)
Release = tuple[str, bytes, str, dict[str, str]]


class Dispatcher(AsyncResource):
    """Use as `async with Dispatcher(...)`: runs until closed; survives bus outages."""

    def __init__(
        self,
        bus: Bus,
        *,
        policy: PolicySource,
        audit: AuditSink,
        broker_keyid: str,
        broker_key: Ed25519PrivateKey,
        metrics: Registry,
        batch: int = 100,
        ack_wait_s: float = 30.0,
    ) -> None:
        self.bus = bus
        self.policy = policy
        self.audit = audit
        self.keyid = broker_keyid
        self.key = broker_key
        self.batch = batch
        self.ack_wait_s = ack_wait_s
        self.m_decisions = metrics.counter(
            "coord_release_decisions_total",
            "release decisions by organisation and outcome",
            ("organisation", "outcome"),
        )
        self.processed = 0

    async def _open(self) -> None:
        self._spawn(self._run(), "dispatcher")

    async def _subscribe(self) -> Puller:
        return await durable(
            self.bus,
            ACCEPTED_STREAM,
            DISPATCH_DURABLE,
            filter_subject="coord.msg.>",
            ack_wait_s=self.ack_wait_s,
            max_ack_pending=10 * self.batch,
        )

    async def _run(self) -> None:
        await pull_forever(self.bus, self._subscribe, self._handle_batch, batch=self.batch, what="dispatcher")

    async def _handle_batch(self, msgs: list[Delivery]) -> None:
        """Publish every release of the batch in order, then audit, then ack (at-least-once with
        dedupe ids: a crash anywhere leaves the batch unacked for redelivery)."""
        policy = self.policy.current
        pubs: list[Release] = []
        events: list[AuditEvent] = []
        for m in msgs:
            p, evs = self._decide_one(policy, m)
            pubs += p
            events += evs
        await self._release(msgs, pubs)
        written = [await self.audit.record(ev) for ev in events]
        await asyncio.gather(*written)
        # Every release and audit record of the batch is durable: the acks go out pipelined (each
        # still confirmed by the server), not one round trip after another.
        await asyncio.gather(*(m.ack() for m in msgs))
        self.processed += len(msgs)

    async def _release(self, msgs: list[Delivery], pubs: list[Release]) -> None:
        """Publish the releases until JetStream has every one. A failure is retried here, with the same
        Nats-Msg-Ids (what did land dedupes), while the batch is kept in progress, rather than left for
        a redelivery: later accepted messages, fetched meanwhile, would overtake it and break each
        organisation's order. Only cancellation (a stopping dispatcher) ends the wait."""
        backoff = Backoff(0.5, 5.0)
        while True:
            try:
                await self.bus.publish_pipelined(pubs, timeout=RELEASE_ACK_TIMEOUT_S)
                return
            except BusUnavailable as exc:
                log.warning("dispatcher.release_retry", messages=len(msgs), error=str(exc))
            for m in msgs:
                await m.in_progress()
            await backoff.sleep()

    def _decide_one(self, policy: Policy, m: Delivery) -> tuple[list[Release], list[AuditEvent]]:
        try:
            env, payload, msg = open_envelope(m.data)
        except UnreadableEnvelope:
            # Only the gateway publishes here and it stored what it checked: this is corruption.
            log.error("dispatcher.unreadable", seq=m.seq)
            orgs = sorted(policy.organisations)
            return [], [event_about("withheld", None, actor=org, reason="integrity") for org in orgs]
        headers = m.headers
        digest = headers.get(HDR_DIGEST)
        # `accepted` is recorded here, from what the gateway stored, not by the gateway: every stored
        # message passes through this point before its ack, so no crash between the JetStream ack
        # and an audit write can leave an accepted message without its record.
        accepted = event_about(
            "accepted",
            msg,
            actor=headers.get(HDR_SENDER, msg.sender),
            digest=digest,
            time=headers.get(HDR_RECEIVED),
        )
        if not originator_signed(policy, env, payload, msg):
            log.error("dispatcher.integrity", message_id=msg.id)
            return [], [
                accepted,
                *(
                    event_about("withheld", msg, actor=org, reason="integrity", digest=digest)
                    for org in sorted(policy.organisations)
                ),
            ]
        pubs: list[Release] = []
        evs: list[AuditEvent] = [accepted]
        signed: bytes | None = None
        for d in decisions(policy, msg):
            if d.rule is not None:
                self.m_decisions.inc(d.organisation, "withheld")
                evs.append(event_about("withheld", msg, actor=d.organisation, reason=d.rule, digest=digest))
                continue
            if signed is None:
                signed = countersign(env, payload, self.keyid, self.key)
            self.m_decisions.inc(d.organisation, "released")
            subject = delivery_subject(d.organisation, RANK[msg.label.classification], msg.kind)
            headers = {HDR_ORG: d.organisation, HDR_DIGEST: digest or ""}
            pubs.append((subject, signed, f"{msg.id}:{d.organisation}", headers))
            evs.append(event_about("released", msg, actor=d.organisation, digest=digest))
        return pubs, evs
