"""The OpenAPI 3.1 document: valid, generated from the one route table the gateway registers, served
as generated, and covering every problem type of broker/errors.py with its status."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiohttp import web
from openapi_spec_validator import validate

from broker.cli import build_parser
from broker.errors import PROBLEMS
from broker.gateway.openapi import openapi_document
from broker.gateway.operators import AuditApi
from broker.gateway.routes import ROUTES, route_problems
from broker.gateway.web import Gateway, build_app
from broker.metrics.registry import Registry
from tests.conftest import ClientFactory


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # openapi-spec-validator, OpenAPI 3.1 (JSON Schema 2020-12)


def _app() -> web.Application:
    gw = Gateway(policy=None, bus=None, audit=None, metrics=Registry(), instance="t")  # type: ignore[arg-type]
    audit = SimpleNamespace(subject="coord.audit.t.log")  # a stand-in: only routes are looked at
    api = AuditApi(policy=None, audit=audit, bus=None, instance="t")  # type: ignore[arg-type]
    return build_app(gw, api.add_routes)


def test_the_gateway_registers_exactly_the_route_table() -> None:
    served = {(r.method, r.resource.canonical) for r in _app().router.routes() if r.resource is not None}
    assert served == {(r.method, r.path) for r in ROUTES}
    assert len(ROUTES) == len(served)  # each row once


def test_every_route_of_the_table_is_documented_with_its_media_types() -> None:
    doc = openapi_document()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == {(r.method, r.path) for r in ROUTES}
    for r in ROUTES:
        op = doc["paths"][r.path][r.method.lower()]
        for a in r.answers:
            assert a.media_type in op["responses"][str(a.status)]["content"]
        if r.request_media_type is not None:
            assert list(op["requestBody"]["content"]) == [r.request_media_type]
        assert op["x-operator-only"] is r.operator_only
    media = {
        m
        for ops in doc["paths"].values()
        for op in ops.values()
        for resp in op["responses"].values()
        for m in resp.get("content", {})
    }
    assert {
        "application/json",
        "text/event-stream",
        "application/problem+json",
        "application/schema+json",
        "text/plain",
    } <= media
    assert doc["paths"]["/v1/messages/batch"]["post"]["requestBody"]["content"]["application/x-ndjson"]


def _problem_types(resp: dict[str, Any]) -> list[str]:
    schema = resp["content"]["application/problem+json"]["schema"]
    return [t.removeprefix("urn:coord:problem:") for t in schema["allOf"][1]["properties"]["type"]["enum"]]


def test_every_problem_type_is_documented_under_its_status() -> None:
    doc = openapi_document()
    seen: set[str] = set()
    for r in ROUTES:
        responses = doc["paths"][r.path][r.method.lower()]["responses"]
        for name in route_problems(r):
            status = PROBLEMS[name][0]
            assert name in _problem_types(responses[str(status)]), (r.path, name)
            seen.add(name)
        for status, resp in responses.items():
            if "application/problem+json" in resp.get("content", {}):
                assert all(PROBLEMS[n][0] == int(status) for n in _problem_types(resp))
    assert seen == set(PROBLEMS)  # each problem of the one table is answered somewhere
    listed = {
        p["type"].removeprefix("urn:coord:problem:"): p["status"] for p in doc["info"]["x-problem-types"]
    }
    assert listed == {n: s for n, (s, _) in PROBLEMS.items()}


def test_security_error_cap_and_retry_after_are_in_the_document() -> None:
    doc = openapi_document()
    assert doc["components"]["securitySchemes"]["mutualTLS"]["type"] == "mutualTLS"
    assert doc["security"] == [{"mutualTLS": []}]
    errors = doc["components"]["schemas"]["Problem"]["properties"]["errors"]
    assert errors["maxItems"] == 21  # 20 errors, then one entry counting the rest
    post = doc["paths"]["/v1/messages"]["post"]["responses"]
    assert post["429"]["headers"]["Retry-After"]["$ref"].endswith("/RetryAfterRequired")
    assert doc["components"]["headers"]["RetryAfterRequired"]["required"] is True
    assert "Retry-After" in post["503"]["headers"]


async def test_the_gateway_serves_the_generated_document(client_for: ClientFactory) -> None:
    reply = await (await client_for("nsatu-liaison")).request("GET", "/v1/openapi.json")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.body == json.loads(json.dumps(openapi_document()))


def test_schemas_export_writes_the_document(tmp_path: Path) -> None:
    args = build_parser().parse_args(["schemas", "export", str(tmp_path / "out")])
    assert args.func(args) == 0  # (not main: its logging set-up is process-wide)
    written = json.loads((tmp_path / "out" / "openapi.json").read_text())
    assert written == json.loads(json.dumps(openapi_document()))
    validate(written)
