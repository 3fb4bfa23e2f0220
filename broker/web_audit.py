"""Operators' HTTP API (ICD §6, §7): the latest checkpoint, inclusion proofs, and the live tail.

Only identities the policy lists as operators get past `require_operator` (a sender's certificate
gets 403). The tail shows every audited event with its label's display marking; the message body
is added only where the operator's clearance passes ICD §2 for that message (rules 1-4: an operator
has no need-to-know list), otherwise the event carries `"redacted": true`. A rejected message never
has content: its bytes were never stored.

`AuditApi` needs only an `AuditView`: the writer itself (`AuditWriter`) in the writer's process, or a
`RemoteAuditView` (broker.audit.snapshot) in a gateway process on the same host, which reads the
checkpoint and the leaf hashes from the files the writer keeps. Every proof served is verified
against the checkpoint's root first; audit files that cannot give one answer 503.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from datetime import datetime
from typing import Any, Protocol

import msgspec
import nats.errors
import structlog
from aiohttp import web
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from broker.audit.leaves import AuditFilesError
from broker.audit.note import Checkpoint, MalformedNote, parse_checkpoint
from broker.audit.records import RECORD_DECODER, AuditEvent, AuditRecord
from broker.audit.writer import last_seq_of, split_lines
from broker.bus import ACCEPTED_STREAM, AUDIT_STREAM, Bus
from broker.clock import rfc3339, utcnow
from broker.errors import BusUnavailable, Problem
from broker.intake import accepted_subject, parse_created
from broker.labels import RANK, decide, label_marking
from broker.policy import Operator, Policy
from broker.routes import register
from broker.signing import b64decode_any
from broker.web_gateway import PolicySource, client_identity
from schemas.message import ENVELOPE_DECODER, MESSAGE_DECODER

log = structlog.get_logger(__name__)
_ENC = msgspec.json.Encoder()
UNLABELLED = "UNLABELLED"


class _Line(msgspec.Struct):
    type: str


_LINE = msgspec.json.Decoder(_Line)


class AuditView(Protocol):
    """What the operators' API uses of the audit log (`AuditWriter`, `RemoteAuditView`)."""

    @property
    def subject(self) -> str: ...

    @property
    def checkpoint_note(self) -> str | None: ...

    def proof(self, index: int) -> tuple[Checkpoint, str, list[bytes]]: ...

    def leaf(self, index: int) -> bytes: ...

    async def record(self, ev: AuditEvent) -> asyncio.Future[int]: ...


def _files_unavailable(exc: Exception) -> Problem:
    log.error("audit.files_unavailable", error=str(exc))
    return Problem("unavailable", "the audit checkpoint files are not usable now; retry", retry_after=1)


def require_operator(request: web.Request, policy: Policy) -> Operator:
    ident = client_identity(request)
    op = policy.operators.get(ident)
    if op is None:
        raise Problem("forbidden", "only operators listed in the policy may use this endpoint")
    return op


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


def record_index(text: str) -> int:
    """A record index in a query: ASCII digits only (`int` would also take "٣", "+3", " 3", "1_0")."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)


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


class AuditApi:
    def __init__(self, *, policy: PolicySource, audit: AuditView, bus: Bus, instance: str) -> None:
        self._proofs = asyncio.Semaphore(1)
        self.policy = policy
        self.audit = audit
        self.bus = bus
        self.instance = instance

    def add_routes(self, app: web.Application) -> None:
        register(app, "audit", self)  # the route table (broker/routes.py)

    async def checkpoint(self, request: web.Request) -> web.Response:
        require_operator(request, self.policy.current)
        try:
            note = self.audit.checkpoint_note
            cp = parse_checkpoint(note)[0] if note is not None else None  # fields and note: one reading
        except (AuditFilesError, MalformedNote) as exc:
            raise _files_unavailable(exc) from None
        if cp is None or note is None:
            raise Problem("not-found", "no checkpoint has been signed yet")
        return web.json_response(
            {"origin": cp.origin, "size": cp.size, "root": base64.b64encode(cp.root).decode(), "note": note}
        )

    def _prove(self, index: int) -> tuple[Checkpoint, str, list[bytes], bytes]:
        cp, note, path = self.audit.proof(index)
        return cp, note, path, self.audit.leaf(index)

    async def proof(self, request: web.Request) -> web.Response:
        require_operator(request, self.policy.current)
        try:
            index = record_index(request.query["index"])
        except (KeyError, ValueError):
            raise Problem(
                "invalid", "index=N is required", errors=[{"path": "index", "message": "digits only"}]
            ) from None
        try:
            # O(tree size) hashing (the proof is recomputed from the leaves): off the event loop, so
            # intake goes on while it runs, and one at a time per process, so operators cannot make
            # the gateway spend more than one thread on proofs. `proof` has verified it against the
            # signed root already (never a proof that does not hold).
            async with self._proofs:
                cp, note, path, leaf = await asyncio.to_thread(self._prove, index)
        except IndexError:
            raise Problem("not-found", "no record with that index under the latest checkpoint") from None
        except AuditFilesError as exc:
            raise _files_unavailable(exc) from None
        return web.json_response(
            {
                "index": index,
                "size": cp.size,
                "leaf_hash": base64.b64encode(leaf).decode(),
                "proof": [base64.b64encode(h).decode() for h in path],
                "checkpoint": note,
            }
        )

    async def tail(self, request: web.Request) -> web.StreamResponse:
        policy = self.policy.current
        op = require_operator(request, policy)
        flt = parse_tail_query(request.query)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await resp.prepare(request)
        await self._note(op, "tail-opened")
        try:
            async for rec in self._records(flt):
                event = await self._event(self.policy.current, op, rec)
                await resp.write(
                    b"id: %d\nevent: %s\ndata: %s\n\n" % (rec.index, rec.event.encode(), _ENC.encode(event))
                )
        except ConnectionResetError:
            # the operator went away mid-stream: the stream is over, not the broker broken (a 500 here
            # was logged as an internal error and could not even be sent; schemathesis found it)
            await self._note(op, "tail-closed")
            return resp
        except asyncio.CancelledError:
            await self._note(op, "tail-closed")
            raise
        await self._note(op, "tail-closed")
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp

    async def _note(self, op: Operator, event: str) -> None:
        await self.audit.record(AuditEvent(event=event, time=rfc3339(utcnow()), actor=op.id))  # type: ignore[arg-type]

    async def _records(self, flt: TailFilter) -> Any:
        last = await last_seq_of(self.bus, self.audit.subject)
        if last == 0 and not flt.follow:
            return
        try:
            sub = await self.bus.js.pull_subscribe(
                self.audit.subject,
                stream=AUDIT_STREAM,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=30.0
                ),
            )
        except nats.errors.Error as exc:
            raise BusUnavailable(f"tail: {exc}") from exc
        seq = 0
        try:
            while flt.follow or seq < last:
                try:
                    msgs = await sub.fetch(100, timeout=1.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue
                for m in msgs:
                    seq = m.metadata.sequence.stream
                    for line in split_lines(m.data):
                        if _LINE.decode(line).type != "record":
                            continue
                        rec = RECORD_DECODER.decode(line)
                        if flt.wants(rec):
                            yield rec
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _event(self, policy: Policy, op: Operator, rec: AuditRecord) -> dict[str, Any]:
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
            raw = await self.bus.js.get_msg(ACCEPTED_STREAM, subject=subject)
            env = ENVELOPE_DECODER.decode(raw.data or b"")
            msg = MESSAGE_DECODER.decode(b64decode_any(env.payload))
        except (nats.errors.Error, msgspec.DecodeError, ValueError):
            return None
        if msg.id != rec.message_id or msg.label != rec.label:
            return None  # never show a body under another message's label
        return msgspec.to_builtins(msg.body)
