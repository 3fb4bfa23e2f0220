"""The straight path: a signed message over mTLS is stored once, and a resend is a duplicate."""

from __future__ import annotations

from broker.app.system import System
from broker.identity.state import StatePaths
from broker.nats.bus import Bus
from broker.nats.names import ACCEPTED_STREAM, HDR_DIGEST
from tests.conftest import ClientFactory
from tests.support.messages import message, sealed


async def test_post_stores_once_and_resend_is_duplicate(
    system: System, state: StatePaths, client_for: ClientFactory, bus: Bus
) -> None:
    gw = await client_for("nsatu-liaison")
    env = sealed(state, message())
    before = await bus.last_seq(ACCEPTED_STREAM)
    r = await gw.post(env)
    assert r.status == 202, r.body
    assert set(r.body) == {"id", "seq"}
    assert r.body["seq"] == before + 1
    stored = await bus.get(ACCEPTED_STREAM, r.body["seq"])
    assert stored.data == env
    assert HDR_DIGEST in stored.headers
    again = await gw.post(env)
    assert again.status == 200
    assert again.body == {"id": r.body["id"], "seq": r.body["seq"], "duplicate": True}
    assert await bus.last_seq(ACCEPTED_STREAM) == before + 1


async def test_schemas_are_served(client_for: ClientFactory) -> None:
    gw = await client_for("nsatu-liaison")
    index = await gw.request("GET", "/v1/schemas")
    assert index.status == 200 and index.headers["Content-Type"].startswith("application/schema+json")
    docs = index.body  # the client decodes any *json media type
    assert {"message", "envelope", "label", "status.update", "industry.exchange"} <= set(docs)
    one = await gw.request("GET", "/v1/schemas/capability.pledge")
    assert one.status == 200 and one.body == docs["capability.pledge"]
    missing = await gw.request("GET", "/v1/schemas/no.such-kind")
    assert missing.status == 404 and missing.body["type"] == "urn:coord:problem:not-found"
