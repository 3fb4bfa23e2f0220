"""The dispatcher: per accepted message, per organisation, release or withhold (ICD §2, §4).

A durable pull consumer of the accepted-messages stream. For each message it takes the policy in
force now (a clearance lowered after acceptance releases nothing more), applies `labels.decide` to
every organisation, countersigns what it releases (a second DSSE signature, key `broker:<name>`)
and publishes it to `coord.deliver.<org>.<rank>.<kind>` with `Nats-Msg-Id = <id>:<org>`, so a
redelivered message is released to each organisation once. `withheld` records name the failing
rule. The accepted message is acked only after every release is acknowledged by JetStream and every
audit record of it is durable.

Releases of one fetched batch are published in stream order (one connection, pipelined), so each
organisation's delivery stream keeps the order in which messages were accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import msgspec
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from broker.aio import stop_task
from broker.audit.records import AuditEvent, AuditSink
from broker.clock import rfc3339, utcnow
from broker.dsse import b64decode_any, b64encode, pae, sign, verify_raw
from broker.errors import BusUnavailable
from broker.gateway.web import PolicySource
from broker.metrics.registry import Registry
from broker.nats.bus import (
    ACCEPTED_STREAM,
    DISPATCH_DURABLE,
    HDR_DIGEST,
    HDR_ORG,
    HDR_RECEIVED,
    HDR_SENDER,
    MSG_ID,
    Bus,
    pull_forever,
    translate_errors,
)
from broker.policy.model import Policy
from broker.rules.labels import RANK, decide
from schemas.message import ENVELOPE_DECODER, MESSAGE_DECODER, Envelope, Message

log = structlog.get_logger(__name__)
_ENC = msgspec.json.Encoder()

RELEASE_ACK_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Decision:
    organisation: str
    rule: str | None  # None: released


def delivery_subject(org: str, msg: Message) -> str:
    return f"coord.deliver.{org}.{RANK[msg.label.classification]}.{msg.kind}"


def countersign(env: Envelope, payload: bytes, keyid: str, key: Ed25519PrivateKey) -> bytes:
    """The envelope with the broker's signature appended over the same PAE (ICD §4)."""
    sigs = [{"keyid": s.keyid, "sig": s.sig} for s in env.signatures]
    sigs.append({"keyid": keyid, "sig": b64encode(sign(key, env.payload_type, payload))})
    return _ENC.encode({"payloadType": env.payload_type, "payload": env.payload, "signatures": sigs})


def decisions(policy: Policy, msg: Message) -> list[Decision]:
    out = []
    for code in sorted(policy.organisations):
        org = policy.organisations[code]
        rule = decide(
            msg.label,
            system_high=policy.system_high,
            clearance=org.clearance,
            organisation=code,
            kind=msg.kind,
            need_to_know=org.need_to_know,
        )
        out.append(Decision(code, rule))
    return out


def originator_signature_ok(policy: Policy, env: Envelope, payload: bytes, msg: Message) -> bool:
    """Re-check the stored bytes against the originator's registered key (integrity at rest)."""
    if len(env.signatures) != 1:
        return False
    s = env.signatures[0]
    sender = policy.senders.get(msg.sender)
    key = sender.keys.get(s.keyid) if sender is not None else None
    if key is None:
        return False
    try:
        sig = b64decode_any(s.sig)
    except ValueError:
        return False
    return verify_raw(key.public_key, sig, pae(env.payload_type, payload))


class Dispatcher:
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
        self._task: asyncio.Task[None] | None = None
        self.m_decisions = metrics.counter(
            "coord_release_decisions_total",
            "release decisions by organisation and outcome",
            ("organisation", "outcome"),
        )
        self.processed = 0

    async def __aenter__(self) -> Dispatcher:
        self._task = asyncio.create_task(self._run(), name="dispatcher")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            await stop_task(self._task)

    async def _subscribe(self) -> Any:
        await self.bus.wait_ready()
        with translate_errors("dispatcher subscribe"):
            return await self.bus.js.pull_subscribe(
                "coord.msg.>",
                durable=DISPATCH_DURABLE,
                stream=ACCEPTED_STREAM,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=self.ack_wait_s,
                    max_ack_pending=10 * self.batch,
                    max_deliver=-1,
                ),
            )

    async def _run(self) -> None:
        await pull_forever(self.bus, self._subscribe, self._handle_batch, batch=self.batch, what="dispatcher")

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        """Publish every release of the batch in order, then audit, then ack (at-least-once with
        dedupe ids: a crash anywhere leaves the batch unacked for redelivery)."""
        policy = self.policy.current
        pubs: list[tuple[str, bytes, str, dict[str, str]]] = []
        events: list[AuditEvent] = []
        for m in msgs:
            p, evs = self._decide_one(policy, m)
            pubs += p
            events += evs
        await self._release(msgs, pubs)
        durable = [await self.audit.record(ev) for ev in events]
        await asyncio.gather(*durable)
        # Every release and audit record of the batch is durable: the acks go out pipelined (each
        # still confirmed by the server), not one round trip after another.
        with translate_errors("ack accepted"):
            await asyncio.gather(*(m.ack_sync() for m in msgs))
        self.processed += len(msgs)

    async def _release(self, msgs: list[Msg], pubs: list[tuple[str, bytes, str, dict[str, str]]]) -> None:
        """Publish the releases until JetStream has every one. A failure is retried here, with the same
        Nats-Msg-Ids (what did land dedupes), while the batch is kept in progress, rather than left for
        a redelivery: later accepted messages, fetched meanwhile, would overtake it and break each
        organisation's order. Only cancellation (a stopping dispatcher) ends the wait."""
        delay = 0.5
        while True:
            try:
                acks: list[Awaitable[Any]] = []
                for subject, data, msg_id, headers in pubs:
                    with translate_errors("release publish"):
                        acks.append(
                            await self.bus.js.publish_async(
                                subject, data, headers={MSG_ID: msg_id, **headers}
                            )
                        )
                # a publish_async ack lost with a dying server never resolves: bound the wait
                async with asyncio.timeout(RELEASE_ACK_TIMEOUT_S):
                    with translate_errors("release acks"):
                        await asyncio.gather(*acks)
                return
            except (TimeoutError, BusUnavailable) as exc:
                log.warning(
                    "dispatcher.release_retry", messages=len(msgs), error=f"{type(exc).__name__}: {exc}"
                )
            for m in msgs:
                with contextlib.suppress(Exception):
                    await m.in_progress()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _decide_one(
        self, policy: Policy, m: Msg
    ) -> tuple[list[tuple[str, bytes, str, dict[str, str]]], list[AuditEvent]]:
        try:
            env = ENVELOPE_DECODER.decode(m.data)
            payload = b64decode_any(env.payload)
            msg = MESSAGE_DECODER.decode(payload)
        except (msgspec.DecodeError, ValueError):
            # Only the gateway publishes here and it stored what it checked: this is corruption.
            log.error("dispatcher.unreadable", seq=m.metadata.sequence.stream)
            return [], [
                AuditEvent(event="withheld", time=rfc3339(utcnow()), actor=org, reason="integrity")
                for org in sorted(policy.organisations)
            ]
        headers = m.headers or {}
        digest = headers.get(HDR_DIGEST)
        now = rfc3339(utcnow())
        # `accepted` is recorded here, from what the gateway stored, not by the gateway: every stored
        # message passes through this point before its ack, so no crash between the JetStream ack
        # and an audit write can leave an accepted message without its record.
        accepted = AuditEvent(
            event="accepted",
            time=headers.get(HDR_RECEIVED, now),
            message_id=msg.id,
            kind=msg.kind,
            originator=msg.originator,
            label=msg.label,
            actor=headers.get(HDR_SENDER, msg.sender),
            envelope_sha256=digest,
        )

        def event(name: str, org: str, reason: str | None) -> AuditEvent:
            return AuditEvent(
                event=name,  # type: ignore[arg-type]  # one of "released" / "withheld"
                time=now,
                message_id=msg.id,
                kind=msg.kind,
                originator=msg.originator,
                label=msg.label,
                actor=org,
                reason=reason,
                envelope_sha256=digest,
            )

        if not originator_signature_ok(policy, env, payload, msg):
            log.error("dispatcher.integrity", message_id=msg.id)
            return [], [
                accepted,
                *(event("withheld", org, "integrity") for org in sorted(policy.organisations)),
            ]
        pubs: list[tuple[str, bytes, str, dict[str, str]]] = []
        evs: list[AuditEvent] = [accepted]
        signed: bytes | None = None
        for d in decisions(policy, msg):
            if d.rule is not None:
                self.m_decisions.inc(d.organisation, "withheld")
                evs.append(event("withheld", d.organisation, d.rule))
                continue
            if signed is None:
                signed = countersign(env, payload, self.keyid, self.key)
            self.m_decisions.inc(d.organisation, "released")
            pubs.append(
                (
                    delivery_subject(d.organisation, msg),
                    signed,
                    f"{msg.id}:{d.organisation}",
                    {HDR_ORG: d.organisation, HDR_DIGEST: digest or ""},
                )
            )
            evs.append(event("released", d.organisation, None))
        return pubs, evs
