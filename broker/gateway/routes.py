"""The gateway's HTTP API (ICD §6) as one table of data.

The gateway registers its routes from `ROUTES` (`register`), and `broker.gateway.openapi` writes
the OpenAPI document from the same rows: a path, a media type or a problem added here is served and
documented at once, and neither can drift from the other. A row names its handler by attribute on
its owner (`gateway`: `broker.gateway.web.Gateway`; `audit`: `broker.gateway.operators.AuditApi`).

Problems are named, never numbered: the status and title of each come from `broker.errors.PROBLEMS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from schemas.api import Checkpoint, Health, Proof, Ready, Stored
from schemas.message import Envelope

BATCH_MAX_LINES = 1000
BATCH_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 256 * 1024  # the policy's `max_body_bytes` unless it says otherwise

JSON = "application/json"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
SCHEMA_JSON = "application/schema+json"
PROMETHEUS = "text/plain"

Owner = Literal["gateway", "audit"]


@dataclass(frozen=True, slots=True)
class Answer:
    """One success answer: status, media type, and the msgspec type of the body (None: not JSON, or
    described by `schema`, a JSON Schema given as is)."""

    status: int
    media_type: str
    description: str
    body: Any = None
    schema: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Param:
    """A query or path parameter; `schema` is its JSON Schema."""

    name: str
    where: Literal["query", "path"]
    description: str
    schema: Mapping[str, Any]
    required: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    method: Literal["GET", "POST"]
    path: str  # aiohttp's template, also OpenAPI's: `{name}` for a path parameter
    owner: Owner
    handler: str
    operation_id: str
    summary: str
    description: str
    answers: tuple[Answer, ...]
    problems: tuple[str, ...] = ()  # names in broker.errors.PROBLEMS this route may answer
    request_media_type: str | None = None
    request_body: Any = None  # the msgspec type of the body (of each line, for NDJSON)
    request_limit: str = ""
    params: tuple[Param, ...] = ()
    operator_only: bool = False
    tags: tuple[str, ...] = field(default=())


#: Answered by every route: a method the path does not have, and a failure of the broker itself.
COMMON_PROBLEMS: tuple[str, ...] = ("method-not-allowed", "internal")

#: The problems of intake (ICD §6's table), in the order of broker/intake.py's checks.
INTAKE_PROBLEMS: tuple[str, ...] = (
    "malformed",
    "unsupported-media-type",
    "unknown-key",
    "revoked-key",
    "expired-key",
    "bad-signature",
    "invalid",
    "sender-mismatch",
    "originator-mismatch",
    "not-permitted",
    "above-system-high",
    "above-clearance",
    "stale",
)

_SINCE = {
    "anyOf": [
        {"type": "string", "pattern": "^[0-9]+$", "description": "a record index"},
        {
            "type": "string",
            "pattern": r"^([1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
            r"-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
            r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$",
            "description": "an RFC 3339 time with upper-case T and Z or an explicit offset, from year 0001 "
            "and without a leap second; a date that does not exist (February 30) is refused",
        },
        {"type": "string", "maxLength": 0, "description": "empty: from the first record, as if absent"},
    ]
}

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/v1/messages",
        "gateway",
        "post_message",
        "postMessage",
        "Publish one signed message",
        "One DSSE envelope (ICD §4) whose payload is a message (ICD §3). Stored durably before the "
        "answer; an identical resend answers 200 `duplicate` and stores nothing twice; a 503 is safe "
        "to retry with the same bytes.",
        (
            Answer(202, JSON, "stored durably", Stored),
            Answer(200, JSON, "the same bytes were stored before (idempotent resend)", Stored),
        ),
        (
            *INTAKE_PROBLEMS,
            "forbidden",
            "id-conflict",
            "too-large",
            "rate-limited",
            "unavailable",
        ),
        request_media_type=JSON,
        request_body=Envelope,
        request_limit="at most the policy's max_body_bytes (256 KiB by default)",
        tags=("messages",),
    ),
    Route(
        "POST",
        "/v1/messages/batch",
        "gateway",
        "post_batch",
        "postBatch",
        "Publish up to 1000 signed messages, one envelope a line",
        "NDJSON: one DSSE envelope a line (a trailing newline is allowed), at most 1000 lines and 4 MiB, "
        "each line at most max_body_bytes. Each line is judged, stored and audited alone; the answer "
        "has one result a line, in order. The rate limit takes one token a line, all or nothing.",
        (
            Answer(
                200,
                JSON,
                "one result a line, in order",
                schema={
                    "type": "object",
                    "required": ["results"],
                    "properties": {
                        "results": {
                            "type": "array",
                            "maxItems": BATCH_MAX_LINES,
                            "items": {
                                "anyOf": [
                                    {"$ref": "#/components/schemas/Stored"},
                                    {"$ref": "#/components/schemas/BatchProblem"},
                                ]
                            },
                        }
                    },
                },
            ),
        ),
        ("malformed", "forbidden", "too-large", "unsupported-media-type", "rate-limited"),
        request_media_type=NDJSON,
        request_body=Envelope,
        request_limit=f"at most {BATCH_MAX_LINES} lines and {BATCH_MAX_BYTES} bytes",
        tags=("messages",),
    ),
    Route(
        "GET",
        "/v1/tail",
        "audit",
        "tail.handle",
        "tail",
        "Follow the audited stream (operators)",
        "Server-sent events, one per audit record (`id:` the record index, `event:` its event, `data:` a "
        "TailEvent). Message content only where the operator's clearance passes ICD §2 rules 1-4, "
        "otherwise `redacted: true`. Without follow=true the stream ends after the events so far.",
        (
            Answer(
                200,
                SSE,
                "a text/event-stream of audit events; each `data` is a TailEvent",
                schema={  # one event (OpenAPI 3.1 has no itemSchema: `schema` describes each event)
                    "type": "object",
                    "required": ["id", "event", "data"],
                    "properties": {
                        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the record index"},
                        "event": {"type": "string", "description": "the audit event"},
                        "data": {
                            "type": "string",
                            "contentMediaType": JSON,
                            "contentSchema": {"$ref": "#/components/schemas/TailEvent"},
                        },
                    },
                },
            ),
        ),
        ("forbidden", "invalid"),
        params=(
            Param("since", "query", "first record: an index, or an RFC 3339 time", _SINCE),
            Param("kind", "query", "only records of this kind (empty: any)", {"type": "string"}),
            Param("originator", "query", "only records of this originator (empty: any)", {"type": "string"}),
            Param(
                "follow",
                "query",
                "keep the stream open for new events",
                {"type": "string", "enum": ["true", "false"], "default": "false"},
            ),
        ),
        operator_only=True,
        tags=("operators",),
    ),
    Route(
        "GET",
        "/v1/audit/checkpoint",
        "audit",
        "checkpoint",
        "auditCheckpoint",
        "The latest signed checkpoint of the audit log (operators)",
        "ICD §7: the C2SP tlog-checkpoint signed note, and its origin, size and root.",
        (Answer(200, JSON, "the latest checkpoint", Checkpoint),),
        ("forbidden", "not-found", "unavailable"),
        operator_only=True,
        tags=("operators",),
    ),
    Route(
        "GET",
        "/v1/audit/proof",
        "audit",
        "proof",
        "auditProof",
        "An inclusion proof of one audit record (operators)",
        "RFC 9162 inclusion proof of record `index` against the latest checkpoint, verified before it "
        "is served.",
        (Answer(200, JSON, "the proof and the checkpoint it is against", Proof),),
        ("forbidden", "invalid", "not-found", "unavailable"),
        params=(
            Param(
                "index",
                "query",
                "the record index (ASCII digits)",
                {"type": "string", "pattern": "^[0-9]+$"},
                required=True,
            ),
        ),
        operator_only=True,
        tags=("operators",),
    ),
    Route(
        "GET",
        "/v1/schemas",
        "gateway",
        "schema_index",
        "schemas",
        "Every JSON Schema: message, envelope, label and each kind",
        "ICD §5.",
        (
            Answer(
                200,
                SCHEMA_JSON,
                "schema name -> JSON Schema (2020-12)",
                schema={"type": "object", "additionalProperties": {"type": "object"}},
            ),
        ),
        tags=("schemas",),
    ),
    Route(
        "GET",
        "/v1/schemas/{kind}",
        "gateway",
        "schema_one",
        "schema",
        "One JSON Schema",
        "`message`, `envelope`, `label`, or a kind of ICD §5.",
        (Answer(200, SCHEMA_JSON, "a JSON Schema (2020-12)", schema={"type": "object"}),),
        ("not-found",),
        params=(Param("kind", "path", "a schema name", {"type": "string"}, required=True),),
        tags=("schemas",),
    ),
    Route(
        "GET",
        "/v1/openapi.json",
        "gateway",
        "openapi",
        "openapi",
        "This document",
        "OpenAPI 3.1, generated from the route table and the wire types the gateway uses.",
        (Answer(200, JSON, "the OpenAPI document", schema={"type": "object"}),),
        tags=("schemas",),
    ),
    Route(
        "GET",
        "/healthz",
        "gateway",
        "healthz",
        "healthz",
        "Liveness",
        "200 while the process serves.",
        (Answer(200, JSON, "alive", Health),),
        tags=("health",),
    ),
    Route(
        "GET",
        "/readyz",
        "gateway",
        "readyz",
        "readyz",
        "Readiness",
        "Ready = the bus is connected and the streams exist. Not ready is 503 with the same JSON body, "
        "not a problem: the request itself was fine.",
        (
            Answer(200, JSON, "ready", Ready),
            Answer(503, JSON, "not ready (bus down or streams missing)", Ready),
        ),
        tags=("health",),
    ),
    Route(
        "GET",
        "/metrics",
        "gateway",
        "metrics_text",
        "metrics",
        "Prometheus metrics",
        "Prometheus text format 0.0.4, every gateway process merged and labelled by `process`.",
        (Answer(200, PROMETHEUS, "Prometheus text format", schema={"type": "string"}),),
        tags=("health",),
    ),
)


def route_problems(route: Route) -> tuple[str, ...]:
    """Every problem `route` may answer, its own and the common ones, each once."""
    out = list(route.problems)
    if route.method == "POST" and "too-large" not in out:
        out.append("too-large")  # aiohttp's own body limit
    out.extend(p for p in COMMON_PROBLEMS if p not in out)
    return tuple(out)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def register(app: web.Application, owner: Owner, component: object) -> None:
    """Add every route of `owner` to `app`, each bound to `component`'s handler of that (dotted) name."""
    for r in ROUTES:
        if r.owner == owner:
            target = component
            for part in r.handler.split("."):
                target = getattr(target, part)
            handler: Handler = target  # type: ignore[assignment]
            app.router.add_route(r.method, r.path, handler)
