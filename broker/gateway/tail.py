"""The operators' tail (ICD §6 `GET /v1/tail`): every audited event, as server-sent events, with its
label's display marking; the message body only where the operator's clearance passes ICD §2 for that
message (rules 1-4: an operator has no need-to-know list), otherwise `"redacted": true`. A rejected
message never has content: its bytes were never stored. Bodies come from the accepted stream by
subject and are shown only under the label the record names.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from broker.audit.reader import follow_records
from broker.audit.records import AuditRecord, AuditSink, event_about
from broker.clock import rfc3339
from broker.dsse import open_envelope
from broker.errors import BusUnavailable, Problem, UnreadableEnvelope
from broker.gateway.clients import record_index, require_operator
from broker.nats.bus import Bus
from broker.nats.names import ACCEPTED_STREAM, accepted_subject
from broker.policy.model import Operator, Policy, PolicySource
from broker.rules.intake import parse_created
from broker.rules.labels import decide, label_marking
from schemas.clearance import RANK

__all__ = ["UNLABELLED", "Tail", "TailFilter", "operator_may_read", "parse_tail_query"]

_ENC = msgspec.json.Encoder()
UNLABELLED = "UNLABELLED"


def operator_may_read(policy: Policy, op: Operator, rec: AuditRecord) -> bool:
    if rec.label is None or rec.event == "rejected":
        return False
    return (
        decide(
            rec.label, system_high=policy.system_high, clearance=op.clearance, organisation=op.organisation
        )
        is None
    )


class TailFilter(msgspec.Struct, frozen=True):
    since_index: int = 0
    since_time: str | None = None
    kind: str | None = None
    originator: str | None = None
    follow: bool = False

    def wants(self, rec: AuditRecord) -> bool:
        if rec.index < self.since_index:
            return False
        if self.since_time is not None and rec.time < self.since_time:
            return False
        if self.kind is not None and rec.kind != self.kind:
            return False
        return not (self.originator is not None and rec.originator != self.originator)


def _since_time(text: str) -> str:
    """An RFC 3339 time with `Z` or an explicit offset, as the log's `time` (UTC); ValueError else."""
    if text.endswith("Z"):
        return rfc3339(parse_created(text))
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:  # a bare local time would be read in this host's zone
        raise ValueError(text)
    return rfc3339(when)


def parse_tail_query(q: Any) -> TailFilter:
    since = q.get("since")
    idx, when = 0, None
    if since:
        try:
            if since.isascii() and since.isdigit():
                idx = record_index(since)
            else:
                when = _since_time(since)
        except ValueError:
            raise Problem(
                "invalid",
                "since must be a record index or an RFC 3339 time",
                errors=[{"path": "since", "message": "not an index or RFC 3339 time"}],
            ) from None
    follow = q.get("follow", "false")
    if follow not in ("true", "false"):
        raise Problem(
            "invalid", "follow must be true or false", errors=[{"path": "follow", "message": "true or false"}]
        )
    return TailFilter(idx, when, q.get("kind") or None, q.get("originator") or None, follow == "true")


class Tail:
    """`GET /v1/tail` over the audit log on `subject`."""

    def __init__(self, *, policy: PolicySource, audit: AuditSink, bus: Bus, subject: str) -> None:
        self.policy = policy
        self.audit = audit
        self.bus = bus
        self.subject = subject

    async def _records(
        self, flt: TailFilter, gone: Callable[[], bool] = lambda: False
    ) -> AsyncIterator[AuditRecord]:
        async for rec in follow_records(self.bus, self.subject, follow=flt.follow, gone=gone):
            if flt.wants(rec):
                yield rec

    async def handle(self, request: web.Request) -> web.StreamResponse:
        policy = self.policy.current
        op = require_operator(request, policy)
        flt = parse_tail_query(request.query)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await resp.prepare(request)
        await self._note(op, "tail-opened")
        # a follower that goes away is seen at the next write, or within a second when nothing comes
        # (a console tab closed on a quiet log would otherwise hold its handler until shutdown)
        transport = request.transport
        try:
            async for rec in self._records(flt, lambda: transport is None or transport.is_closing()):
                event = await self.event(self.policy.current, op, rec)
                await resp.write(
                    b"id: %d\nevent: %s\ndata: %s\n\n" % (rec.index, rec.event.encode(), _ENC.encode(event))
                )
        except ConnectionResetError:
            await self._note(op, "tail-closed")
            return resp  # the follower left: the end of its tail, not a failure of the broker
        except asyncio.CancelledError:
            await self._note(op, "tail-closed")
            raise
        await self._note(op, "tail-closed")
        if transport is None or transport.is_closing():
            return resp
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp

    async def _note(self, op: Operator, event: str) -> None:
        await self.audit.record(event_about(event, None, actor=op.id))  # type: ignore[arg-type]

    async def event(self, policy: Policy, op: Operator, rec: AuditRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": rec.index,
            "time": rec.time,
            "event": rec.event,
            "message_id": rec.message_id,
            "kind": rec.kind,
            "originator": rec.originator,
            "actor": rec.actor,
            "reason": rec.reason,
            "label": msgspec.to_builtins(rec.label) if rec.label is not None else None,
            "marking": label_marking(rec.label) if rec.label is not None else UNLABELLED,
        }
        content = None
        if operator_may_read(policy, op, rec):
            content = await self._content(rec)
        if content is None:
            out["redacted"] = True
        else:
            out["content"] = content
        return out

    async def _content(self, rec: AuditRecord) -> Any:
        if rec.label is None or rec.originator is None or rec.kind is None or rec.message_id is None:
            return None
        subject = accepted_subject(RANK[rec.label.classification], rec.originator, rec.kind, rec.message_id)
        try:
            stored = await self.bus.get_last(ACCEPTED_STREAM, subject)
            msg = open_envelope(stored.data).message if stored is not None else None
        except (BusUnavailable, UnreadableEnvelope):
            return None
        if msg is None:
            return None
        if msg.id != rec.message_id or msg.label != rec.label:
            return None  # never show a body under another message's label
        return msgspec.to_builtins(msg.body)
