"""The straight path: a signed message over mTLS is stored once, and a resend is a duplicate."""

from __future__ import annotations

from broker.bus import ACCEPTED_STREAM, HDR_DIGEST, Bus
from broker.service import System
from broker.state import StatePaths
from tests.conftest import ClientFactory, message, sealed


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
