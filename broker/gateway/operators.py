"""Operators' HTTP API (ICD §6, §7): the latest checkpoint, inclusion proofs, and the tail
(`broker.gateway.tail`). Only identities the policy lists as operators get past `require_operator`
(a sender's certificate gets 403).

`AuditApi` needs only an `AuditView`: the writer itself (`AuditWriter`) in the writer's process, or a
`RemoteAuditView` (broker.audit.snapshot) in a gateway process on the same host, which reads the
checkpoint and the leaf hashes from the files the writer keeps. Every proof served is verified
against the checkpoint's root first; audit files that cannot give one answer 503.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Protocol

import msgspec
import structlog
from aiohttp import web

from broker.audit.note import Checkpoint, parse_checkpoint
from broker.audit.records import AuditEvent
from broker.errors import AuditFilesError, MalformedNote, Problem
from broker.gateway.clients import record_index, require_operator
from broker.gateway.routes import register
from broker.gateway.tail import Tail
from broker.nats.bus import Bus
from broker.policy.model import PolicySource

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


class AuditApi:
    def __init__(self, *, policy: PolicySource, audit: AuditView, bus: Bus, instance: str) -> None:
        self._proofs = asyncio.Semaphore(1)
        self.policy = policy
        self.audit = audit
        self.bus = bus
        self.instance = instance
        self.tail = Tail(policy=policy, audit=audit, bus=bus, subject=audit.subject)

    def add_routes(self, app: web.Application) -> None:
        register(app, "audit", self)  # the route table (broker/gateway/routes.py)

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
