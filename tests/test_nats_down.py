"""The bus goes away and comes back (ICD §6 `unavailable`): nothing is stored while it is down, the
gateway says so (503, not ready), and the same envelope sent again afterwards is stored exactly once.

This test runs its own nats-server and its own system (no adapters), so stopping NATS does not
disturb the session's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from broker.app.options import GatewayOptions, NatsOptions, SystemOptions
from broker.app.system import System
from broker.audit.reader import read_log
from broker.client import GatewayClient, Reply
from broker.clock import utcnow
from broker.identity.state import StatePaths
from broker.identity.tls import client_context
from broker.nats.bus import Bus, BusSettings
from broker.nats.names import ACCEPTED_STREAM
from broker.nats.server import NatsServer
from broker.policy.defaults import ensure_defaults
from broker.rules.intake import parse_created
from tests.support.messages import message, sealed

DEADLINE_S = 60.0


async def until(
    probe: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], timeout: float, what: str
) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = await probe()
        if ok(value):
            return value
        if loop.time() > end:
            raise AssertionError(f"{what}: last {value!r}")
        await asyncio.sleep(0.1)


async def count_with_id(url: str, msg_id: str) -> int:
    """How many messages of the accepted stream carry `msg_id` (by subject and by payload)."""
    async with Bus(BusSettings(servers=(url,), name="nats-down-check"), ensure_streams=False) as bus:
        await bus.wait_connected(10)
        n = 0
        for seq in range(1, await bus.last_seq(ACCEPTED_STREAM) + 1):
            stored = await bus.get(ACCEPTED_STREAM, seq)
            env = msgspec.json.decode(stored.data)
            payload = msgspec.json.decode(base64.b64decode(env["payload"]))
            if payload["id"] == msg_id:
                assert stored.subject.endswith("." + msg_id)
                n += 1
        return n


async def audited_events(url: str, digest: str) -> list[str]:
    """`event:reason` of every audit record of the envelope with this SHA-256."""
    async with Bus(BusSettings(servers=(url,), name="nats-down-audit"), ensure_streams=False) as bus:
        await bus.wait_connected(10)
        out = []
        for _, data in await read_log(bus):
            for line in data.split(b"\n"):
                rec = msgspec.json.decode(line) if line else None
                if isinstance(rec, dict) and rec.get("type") == "record" and rec["envelope_sha256"] == digest:
                    out.append(f"{rec['event']}:{rec['reason']}")
        return out


async def test_nats_down_then_back(tmp_path: Path) -> None:
    state = StatePaths(tmp_path / "state")
    ensure_defaults(state)
    srv = NatsServer(tmp_path / "nats")
    await srv.start()
    port = srv.port
    restarted: NatsServer | None = None
    try:
        async with asyncio.timeout(DEADLINE_S):
            opts = SystemOptions(
                state=state.root,
                parts=frozenset({"core", "dispatcher"}),
                nats=NatsOptions(url=srv.url),
                gateway=GatewayOptions(port=0),
                checkpoint_interval_s=0.5,
            )
            async with System(opts) as system:
                ctx = client_context(
                    state.ca_crt, state.tls_crt("nsatu-liaison"), state.tls_key("nsatu-liaison")
                )
                async with GatewayClient(system.gateway_url, ctx, timeout_s=20) as gw:
                    await until(lambda: gw.request("GET", "/readyz"), lambda r: r.status == 200, 20, "ready")
                    # the control: with the bus up a message goes through
                    warm = await gw.post(sealed(state, message()))
                    assert warm.status == 202, warm.body

                    msg = message()
                    env = sealed(state, msg)

                    await srv.stop()
                    down = await gw.post(env)
                    assert down.status == 503, down.body
                    assert down.headers["Content-Type"].startswith("application/problem+json")
                    assert down.body["type"] == "urn:coord:problem:unavailable"
                    assert down.body["title"] and down.body["detail"]
                    ready = await until(
                        lambda: gw.request("GET", "/readyz"),
                        lambda r: r.status == 503,
                        10,
                        "not ready while NATS is down",
                    )
                    assert ready.body["ready"] is False
                    # a second try while still down: still 503, and a batch line says so too
                    assert (await gw.post(env)).status == 503
                    batch = await gw.post_batch([env])
                    assert batch.status == 200
                    assert batch.body["results"][0]["problem"]["type"] == "urn:coord:problem:unavailable"
                    health = await gw.request("GET", "/healthz")
                    assert health.status == 200  # alive, only not ready

                    restarted = NatsServer(tmp_path / "nats", port=port)
                    await restarted.start()
                    assert restarted.port == port
                    await until(
                        lambda: gw.request("GET", "/readyz"),
                        lambda r: r.status == 200,
                        30,
                        "ready again after NATS is back",
                    )

                    age = (utcnow() - parse_created(msg["created"])).total_seconds()
                    assert age < system.holder.current.max_age_s, "the test took too long to resend fresh"
                    again: Reply = await gw.post(env)
                    assert again.status in (200, 202), again.body
                    if again.status == 200:
                        assert again.body["duplicate"] is True
                    assert again.body["id"] == msg["id"]
                    once_more = await gw.post(env)
                    assert once_more.status == 200 and once_more.body["seq"] == again.body["seq"]

                    assert await count_with_id(restarted.url, msg["id"]) == 1
                    assert await count_with_id(restarted.url, warm.body["id"]) == 1  # survived the restart
                    # the refusals while down were audited once the log could be written again
                    digest = hashlib.sha256(env).hexdigest()
                    url = restarted.url
                    events = await until(
                        lambda: audited_events(url, digest),
                        lambda ev: ev.count("rejected:unavailable") == 3 and "accepted:None" in ev,
                        15,
                        "the 503s and the acceptance are audited",
                    )
                    intake = sorted(e for e in events if e.split(":")[0] in ("accepted", "rejected"))
                    assert intake == ["accepted:None"] + ["rejected:unavailable"] * 3
    finally:
        if restarted is not None:
            await restarted.stop()
        await srv.stop()
