"""The gateway's HTTP API (ICD §6): intake over mutual TLS into JetStream.

Handlers are thin: read the body within its limit, find the client's identity in its certificate,
pass the bytes to `Intake`, publish what it admits, answer. Every refusal is audited as `rejected`
and rendered by `web_problems`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import structlog
from aiohttp import web

from broker.audit.records import AuditSink, event_about
from broker.clock import utcnow
from broker.errors import Problem, Refused
from broker.gateway.clients import client_identity, read_limited, require_media_type
from broker.gateway.limiter import Limiter, RateLimiter
from broker.gateway.openapi import openapi_document
from broker.gateway.problems import problem_middleware, problem_response
from broker.gateway.routes import BATCH_MAX_BYTES, BATCH_MAX_LINES, register
from broker.gateway.store import AcceptedStore
from broker.metrics.registry import Registry
from broker.nats.bus import Bus
from broker.policy.model import Policy
from broker.rules.intake import Admitted, Intake, Partial
from schemas.export import all_schemas

log = structlog.get_logger(__name__)
_ENC = msgspec.json.Encoder()



class PolicySource(Protocol):
    @property
    def current(self) -> Policy: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: dict[str, Any]
    problem: Problem | None = None


class Gateway:
    """Owns the checks-and-store path; `routes()` exposes it over HTTP."""

    def __init__(
        self,
        *,
        policy: PolicySource,
        bus: Bus,
        audit: AuditSink,
        metrics: Registry,
        instance: str,
        limiter: Limiter | None = None,
        worker: int | None = None,
        render_metrics: Callable[[], str] | None = None,
    ) -> None:
        self.policy = policy
        self.worker = worker  # which of several gateway processes this is (None: the only one)
        self.bus = bus
        self.audit = audit
        self.instance = instance
        self.intake = Intake()
        self.store = AcceptedStore(bus)
        self.limiter: Limiter = limiter if limiter is not None else RateLimiter()  # one process alone
        self.m_requests = metrics.counter(
            "coord_http_requests_total", "HTTP requests by path and status", ("path", "status")
        )
        self.m_accepted = metrics.counter("coord_messages_accepted_total", "messages stored")
        self.m_duplicates = metrics.counter("coord_messages_duplicate_total", "identical resends")
        self.m_rejected = metrics.counter(
            "coord_messages_rejected_total", "messages refused, by problem", ("reason",)
        )
        self.m_latency = metrics.histogram("coord_http_request_seconds", "request latency")
        self.metrics = metrics
        # several processes: every process's metrics, merged (broker/metrics_share.py)
        self.render_metrics = render_metrics if render_metrics is not None else metrics.render
        docs = all_schemas()
        self.schemas = {name: _ENC.encode(doc) for name, doc in docs.items()}
        self.schema_index_body = _ENC.encode(docs)  # encoded once, served as is
        # more of what /readyz says (broker/console/health.py); never changes its 200/503 meaning
        self.readiness_details: Callable[[], Awaitable[dict[str, Any]]] | None = None
        self._openapi_body: bytes | None = None

    # -- the path of one message -------------------------------------------------------------

    async def submit(self, raw: bytes, client: str, policy: Policy) -> Outcome:
        """Check, store and audit one envelope; never raises for the message's own faults."""
        try:
            admitted = self.intake.check(raw, client, policy, utcnow())
            return await self._store(admitted)
        except Refused as r:
            await self._rejected(r, client)
            return Outcome(r.status, r.to_dict(), r)

    async def _store(self, a: Admitted) -> Outcome:
        m = a.message
        try:
            res = await self.store.store(a)
        except Problem as p:
            raise self._refuse(a, p) from p
        if res.duplicate:
            self.m_duplicates.inc()
            return Outcome(200, {"id": m.id, "seq": res.seq, "duplicate": True})
        self.m_accepted.inc()
        # the `accepted` record is written by the dispatcher from the stored message (see there)
        return Outcome(202, {"id": m.id, "seq": res.seq})

    @staticmethod
    def _refuse(a: Admitted, p: Problem) -> Refused:
        m = a.message
        return Refused(p, a.digest, Partial(m.id, m.kind, m.originator, m.label))

    async def _rejected(self, r: Refused, client: str) -> None:
        self.m_rejected.inc(r.name)
        ev = event_about("rejected", r.partial, actor=client, reason=r.name, digest=r.digest)
        await self.audit.record(ev)

    def _rate(self, client: str, policy: Policy, n: int) -> None:
        sender = policy.senders.get(client)
        own = sender.rate_per_s if sender is not None else None
        rate = own if own is not None else policy.rate_per_s
        wait = self.limiter.take(client, n, rate, policy.rate_burst)
        if wait > 0:
            retry = max(1, math.ceil(wait)) if wait != float("inf") else 60
            raise Problem("rate-limited", f"at most {rate:g} messages/s per sender", retry_after=retry)

    async def _rejected_request(self, client: str | None, p: Problem) -> None:
        """Audit a request refused before any envelope in it was judged (ICD §6: every rejection)."""
        self.m_rejected.inc(p.name)
        await self.audit.record(event_about("rejected", None, actor=client, reason=p.name))

    async def _identified(self, request: web.Request) -> str:
        """The client's id from its certificate; a certificate without exactly one CN is refused, and
        that refusal audited like any other (with no actor: there is none to name)."""
        try:
            return client_identity(request)
        except Problem as p:
            await self._rejected_request(None, p)
            raise

    async def _rate_checked(self, client: str, policy: Policy, n: int) -> None:
        try:
            self._rate(client, policy, n)
        except Problem as p:
            await self._rejected_request(client, p)
            raise

    # -- HTTP ---------------------------------------------------------------------------------

    async def post_message(self, request: web.Request) -> web.Response:
        client = await self._identified(request)
        policy = self.policy.current
        try:
            require_media_type(request, "application/json")
            raw = await read_limited(request, policy.max_body_bytes)
        except Problem as p:
            await self._rejected_request(client, p)
            raise
        await self._rate_checked(client, policy, 1)
        out = await self.submit(raw, client, policy)
        if out.problem is not None:
            return problem_response(out.problem)
        return web.Response(status=out.status, body=_ENC.encode(out.body), content_type="application/json")

    async def post_batch(self, request: web.Request) -> web.Response:
        client = await self._identified(request)
        policy = self.policy.current
        try:
            require_media_type(request, "application/x-ndjson")
            raw = await read_limited(request, BATCH_MAX_BYTES)
            lines = raw.split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
            if len(lines) > BATCH_MAX_LINES:
                raise Problem("too-large", f"a batch holds at most {BATCH_MAX_LINES} lines")
            if not lines:
                raise Problem("malformed", "a batch holds at least one envelope line")
        except Problem as p:
            await self._rejected_request(client, p)
            raise
        await self._rate_checked(client, policy, len(lines))
        outs = await asyncio.gather(*(self._batch_line(line, client, policy) for line in lines))
        results = [o.body if o.status < 400 else {"problem": o.body} for o in outs]
        return web.Response(
            status=200, body=_ENC.encode({"results": results}), content_type="application/json"
        )

    async def _batch_line(self, line: bytes, client: str, policy: Policy) -> Outcome:
        if len(line) > policy.max_body_bytes:
            p = Problem("too-large", f"one envelope is limited to {policy.max_body_bytes} bytes")
            r = Refused(p, hashlib.sha256(line).hexdigest(), Partial())
            await self._rejected(r, client)
            return Outcome(r.status, r.to_dict())
        return await self.submit(line.rstrip(b"\r"), client, policy)  # refusals (503 too) are outcomes

    async def healthz(self, request: web.Request) -> web.Response:
        doc: dict[str, Any] = {"status": "ok", "instance": self.instance}
        if self.worker is not None:
            doc["worker"] = self.worker
        return web.json_response(doc)

    async def readyz(self, request: web.Request) -> web.Response:
        ready = self.bus.ready
        doc: dict[str, Any] = {"ready": ready, "bus": "connected" if self.bus.connected else "down"}
        if self.readiness_details is not None:
            doc.update(await self.readiness_details())
        return web.json_response(doc, status=200 if ready else 503)

    async def metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(
            text=self.render_metrics(),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Prometheus-Format": "0.0.4"},
        )

    async def schema_index(self, request: web.Request) -> web.Response:
        return web.Response(body=self.schema_index_body, content_type="application/schema+json")

    async def schema_one(self, request: web.Request) -> web.Response:
        name = request.match_info["kind"]
        body = self.schemas.get(name)
        if body is None:
            raise Problem("not-found", f"no schema {name!r}; known: {', '.join(self.schemas)}")
        return web.Response(body=body, content_type="application/schema+json")

    async def openapi(self, request: web.Request) -> web.Response:
        if self._openapi_body is None:  # built on first use, then served as is
            self._openapi_body = _ENC.encode(openapi_document())
        return web.Response(body=self._openapi_body, content_type="application/json")

    def add_routes(self, app: web.Application) -> None:
        register(app, "gateway", self)  # the route table (gateway/routes.py), also the OpenAPI document's

    @web.middleware
    async def observe(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        t0 = time.perf_counter()
        resp = await handler(request)
        self.m_latency.observe(time.perf_counter() - t0)
        route = request.match_info.route.resource
        path = route.canonical if route is not None else "other"
        self.m_requests.inc(path, str(resp.status))
        return resp


def build_app(gateway: Gateway, extra: Callable[[web.Application], None] | None = None) -> web.Application:
    app = web.Application(
        middlewares=[gateway.observe, problem_middleware], client_max_size=BATCH_MAX_BYTES + 1
    )
    gateway.add_routes(app)
    if extra is not None:
        extra(app)
    return app
