"""The OpenAPI 3.1 document of the gateway, generated from `broker.gateway.routes.ROUTES`, the msgspec wire
types and `broker.errors.PROBLEMS` (served at `GET /v1/openapi.json`, written by `broker schemas
export`).

Nothing here describes the API by hand: paths, methods, media types and bodies come from the route
table the gateway registers its handlers from; every error answer is `application/problem+json`
whose `type` is limited to the problem names of that route and status; schemas are msgspec's JSON
Schema (2020-12, the dialect of OpenAPI 3.1) of the same types the gateway decodes and encodes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from broker.errors import MAX_ERRORS, PROBLEM_BASE, PROBLEMS
from broker.gateway.routes import (
    BATCH_MAX_BYTES,
    BATCH_MAX_LINES,
    DEFAULT_MAX_BODY_BYTES,
    NDJSON,
    ROUTES,
    Route,
    route_problems,
)
from schemas.api import BatchProblem, Problem, TailEvent
from schemas.message import Envelope, Message

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"  # ICD v1: a change to the contract is a new version, never a silent edit
PROBLEM_JSON = "application/problem+json"
_REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _schemas(routes: Iterable[Route]) -> dict[str, Any]:
    types: list[Any] = [Envelope, Message, Problem, BatchProblem, TailEvent]
    for r in routes:
        types.extend(a.body for a in r.answers if a.body is not None)
        if r.request_body is not None:
            types.append(r.request_body)
    unique = list(dict.fromkeys(types))
    refs, components = msgspec.json.schema_components(unique, ref_template=_REF)
    components["Message"] = refs[unique.index(Message)]  # the tagged union over the kinds
    return dict(sorted(components.items()))


def _problem_schema(status: int, names: list[str]) -> dict[str, Any]:
    return {
        "allOf": [
            _ref("Problem"),
            {
                "type": "object",
                "properties": {
                    "type": {"enum": [PROBLEM_BASE + n for n in names]},
                    "status": {"const": status},
                },
            },
        ]
    }


def _problem_responses(route: Route) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for name in route_problems(route):
        by_status.setdefault(PROBLEMS[name][0], []).append(name)
    out: dict[str, Any] = {}
    for status, names in sorted(by_status.items()):
        resp: dict[str, Any] = {
            "description": "; ".join(f"`{n}`: {PROBLEMS[n][1]}" for n in names),
            "content": {PROBLEM_JSON: {"schema": _problem_schema(status, names)}},
        }
        if status == 429:
            resp["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfterRequired"}}
        elif status == 503:
            resp["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
        out[str(status)] = resp
    return out


def _request_body(route: Route) -> dict[str, Any] | None:
    if route.request_media_type is None:
        return None
    body = _ref(route.request_body.__name__)
    if route.request_media_type == NDJSON:
        schema: dict[str, Any] = {
            "type": "array",
            "minItems": 1,
            "maxItems": BATCH_MAX_LINES,
            "items": body,
            "description": "sent as NDJSON: each item one line of compact JSON, lines separated by LF",
        }
    else:
        schema = body
    return {
        "required": True,
        "description": route.request_limit,
        "content": {route.request_media_type: {"schema": schema}},
    }


def _operation(route: Route) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for a in route.answers:
        if a.body is not None:
            schema: Any = _ref(a.body.__name__)
            if a.status == 200 and a.body.__name__ == "Stored":  # the duplicate answer says so
                schema = {
                    "allOf": [
                        schema,
                        {"required": ["duplicate"], "properties": {"duplicate": {"const": True}}},
                    ]
                }
        else:
            schema = dict(a.schema or {})
        media: dict[str, Any] = {"schema": schema}
        responses[str(a.status)] = {"description": a.description, "content": {a.media_type: media}}
    responses.update(_problem_responses(route))
    description = route.description
    if route.operator_only:
        description += (
            "\n\nOperators only: the client certificate's CN must be an operator of the policy; any other "
            "identity gets 403 `forbidden`."
        )
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": description,
        "tags": list(route.tags),
        "responses": dict(sorted(responses.items())),
        "x-operator-only": route.operator_only,
    }
    if route.params:
        op["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "description": p.description,
                "required": p.required or p.where == "path",
                "schema": dict(p.schema),
            }
            for p in route.params
        ]
    body = _request_body(route)
    if body is not None:
        op["requestBody"] = body
    return op


_DESCRIPTION = f"""\
The gateway of the EU-NATO coordination broker (ICD v1, section 6). HTTPS with mutual TLS only: the
client certificate's subject CN is the sender or operator id, and every message is also signed
(DSSE, Ed25519). Every error is `application/problem+json` (RFC 9457) with `type`
`{PROBLEM_BASE}<name>`; a problem's `errors` lists at most {MAX_ERRORS} entries, then one entry
counting the rest. 429 always carries `Retry-After` (whole seconds); a 503 may. Bodies: one envelope
at most the policy's `max_body_bytes` ({DEFAULT_MAX_BODY_BYTES} bytes by default); a batch at most
{BATCH_MAX_LINES} lines and {BATCH_MAX_BYTES} bytes. Generated from the broker's route table and wire
types; `x-problem-types` lists every problem name with its status."""


def openapi_document(server_url: str = "https://127.0.0.1:8443") -> dict[str, Any]:
    """The whole document as plain data (deterministic: the same broker gives the same bytes)."""
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "EU-NATO coordination broker gateway",
            "version": API_VERSION,
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
            "x-problem-types": [
                {"type": PROBLEM_BASE + name, "status": status, "title": title}
                for name, (status, title) in PROBLEMS.items()
            ],
        },
        "servers": [{"url": server_url, "description": "`broker up` on this machine"}],
        "security": [{"mutualTLS": []}],
        "tags": [
            {"name": "messages", "description": "publishing signed messages (liaison systems)"},
            {"name": "operators", "description": "the audit log and the tail (operators only)"},
            {"name": "schemas", "description": "machine-readable contract"},
            {"name": "health", "description": "liveness, readiness, metrics"},
        ],
        "paths": paths,
        "components": {
            "schemas": _schemas(ROUTES),
            "securitySchemes": {
                "mutualTLS": {
                    "type": "mutualTLS",
                    "description": "A client certificate issued by the broker's CA is required at the TLS "
                    "handshake; its subject CN (exactly one) is the sender or operator id.",
                }
            },
            "headers": {
                "RetryAfterRequired": {
                    "description": "whole seconds to wait before retrying, at least 1",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
                },
                "RetryAfter": {
                    "description": "whole seconds to wait before retrying, at least 1, when set",
                    "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
                },
            },
        },
    }
