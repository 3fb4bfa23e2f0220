"""What the schemathesis runs (tests/test_schemathesis.py) found, each kept as a plain test against the
live gateway over mutual TLS, so that it stays fixed whatever the fuzzer happens to try next time."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp
import jsonschema
import pytest
from structlog.testing import capture_logs

from broker.app.system import System
from broker.gateway.openapi import openapi_document
from broker.identity.state import StatePaths
from broker.identity.tls import client_context
from broker.nats.bus import Bus
from broker.nats.names import AUDIT_STREAM
from tests.conftest import ClientFactory
from tests.test_gateway_problems import wait_audited


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("TRACE", "/healthz", "GET"),
        ("DELETE", "/v1/messages", "POST"),
        ("PUT", "/v1/messages/batch", "POST"),
        ("POST", "/v1/tail", "GET"),
        ("PATCH", "/v1/schemas/status.update", "GET"),
    ],
)
async def test_405_lists_the_allowed_methods(
    client_for: ClientFactory, method: str, path: str, allowed: str
) -> None:
    """Finding 1 (ST204): a 405 had no `Allow` header (RFC 9110 §15.5.6 requires one)."""
    gw = await client_for("nsatu-liaison")
    reply = await gw.request(method, path)
    assert reply.status == 405
    assert reply.headers["Allow"] == allowed
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert reply.body["type"] == "urn:coord:problem:method-not-allowed"


async def test_an_operator_leaving_the_tail_is_not_an_internal_error(
    system: System, state: StatePaths, client_for: ClientFactory, bus: Bus
) -> None:
    """Finding 2: an operator that closed `GET /v1/tail` mid-stream made the next write raise to the
    problem middleware, which logged `gateway.internal_error` and tried to answer 500 on a response
    already sent. Now the stream just ends, with its `tail-closed` record."""
    start = await bus.last_seq(AUDIT_STREAM) + 1
    ctx = client_context(state.ca_crt, state.tls_crt("duty-officer"), state.tls_key("duty-officer"))
    sender = await client_for("nsatu-liaison")
    with capture_logs() as logs:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s,
            s.get(system.gateway_url + "/v1/tail", params={"follow": "true"}) as resp,
        ):
            assert resp.status == 200
            await wait_audited(
                bus, start, lambda r: r["event"] == "tail-opened" and r["actor"] == "duty-officer"
            )
            resp.connection.transport.abort()  # type: ignore[union-attr]  # gone, mid-stream
        # records keep coming: the tail's next write meets the closed connection
        for _ in range(3):
            assert (await sender.post(b"{}")).status == 400
        await wait_audited(bus, start, lambda r: r["event"] == "tail-closed" and r["actor"] == "duty-officer")
    assert not [e for e in logs if e.get("event") == "gateway.internal_error"], logs


def _since_schema() -> dict[str, Any]:
    doc = openapi_document()
    params = doc["paths"]["/v1/tail"]["get"]["parameters"]
    return next(p["schema"] for p in params if p["name"] == "since")


@pytest.mark.parametrize(
    ("since", "served"),
    [
        ("", True),  # finding 3: empty is "from the first record", as if absent; the document said no
        ("0", True),
        ("2026-01-01T00:00:00Z", True),
        ("2026-01-01T00:00:00.25+02:00", True),
        ("2026-01-01t00:00:00z", False),  # finding 4: `format: date-time` promised lower case t/z
        ("2026-01-01T23:59:60Z", False),  # ... and leap seconds, which the broker refuses
        ("0000-01-01T00:00:00Z", False),  # ... and year 0000
        ("2026-01-01 00:00:00Z", None),  # read by the broker, not promised by the document
        ("yesterday", False),
    ],
)
async def test_the_document_and_the_tail_agree_on_since(
    client_for: ClientFactory, since: str, served: bool | None
) -> None:
    """Findings 3 and 4: what the document says of `since` is what the gateway serves."""
    schema = _since_schema()
    documented = jsonschema.Draft202012Validator(schema).is_valid(since)
    if served is not None:
        assert documented is served
    op = await client_for("duty-officer")
    reply = await asyncio.wait_for(
        op.request("GET", "/v1/tail?follow=false&since=" + quote(since, safe="")), 30
    )
    if served or served is None:
        assert reply.status == 200
    else:
        assert reply.status == 422
        assert reply.body["type"] == "urn:coord:problem:invalid"
