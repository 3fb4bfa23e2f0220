"""broker.client, the library for liaison systems: retries with the same bytes after 503, 429, timeouts
and lost connections, honouring Retry-After, and nothing else; against a scripted gateway over real TLS
on loopback, and against the live gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web

from broker.client import GatewayClient, GatewayUnreachable, Retry
from broker.identity.state import StatePaths
from broker.identity.tls import client_context, server_context
from tests.conftest import ClientFactory
from tests.support.messages import message, sealed


@dataclass
class Script:
    """What the fake gateway answers, one entry per request; every request body is kept."""

    answers: list[Callable[[], web.Response] | str]
    bodies: list[bytes] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


def answer(status: int, retry_after: str | None = None) -> Callable[[], web.Response]:
    headers = {"Retry-After": retry_after} if retry_after else None
    return lambda: web.json_response({"status": status}, status=status, headers=headers)


@pytest_asyncio.fixture
async def fake(state: StatePaths) -> AsyncIterator[tuple[Script, str]]:
    script = Script([])

    async def handle(request: web.Request) -> web.StreamResponse:
        script.bodies.append(await request.read())
        script.paths.append(request.path)
        step = script.answers.pop(0)
        if step == "hang":  # longer than the client's timeout
            await asyncio.sleep(5)
        if step == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        assert callable(step)
        return step()

    app = web.Application()
    app.router.add_post("/v1/messages", handle)
    app.router.add_post("/v1/messages/batch", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(
        runner, "127.0.0.1", 0, ssl_context=server_context(state.ca_crt, state.server_crt, state.server_key)
    )
    await site.start()
    port = runner.addresses[0][1]
    yield script, f"https://127.0.0.1:{port}"
    await runner.cleanup()


def client(state: StatePaths, url: str, waits: list[float], **kw: object) -> GatewayClient:
    ctx = client_context(state.ca_crt, state.tls_crt("nsatu-liaison"), state.tls_key("nsatu-liaison"))

    async def sleep(s: float) -> None:
        waits.append(s)

    return GatewayClient(url, ctx, sleep=sleep, **kw)  # type: ignore[arg-type]


async def test_503_and_429_are_retried_with_the_same_bytes_honouring_retry_after(
    state: StatePaths, fake: tuple[Script, str]
) -> None:
    script, url = fake
    script.answers = [answer(503), answer(429, "3"), answer(503, "1"), answer(202)]
    waits: list[float] = []
    async with client(state, url, waits) as gw:
        reply = await gw.send(b'{"the": "envelope"}')
    assert reply.status == 202
    assert script.bodies == [b'{"the": "envelope"}'] * 4  # the same bytes, so the same id
    assert waits == [0.25, 3.0, 1.0]  # back-off, then Retry-After as given


async def test_timeouts_and_lost_connections_are_retried_with_exponential_back_off(
    state: StatePaths, fake: tuple[Script, str]
) -> None:
    script, url = fake
    script.answers = ["hang", "drop", answer(200)]
    waits: list[float] = []
    async with client(state, url, waits, timeout_s=0.5) as gw:
        reply = await gw.send_batch([b"line-1", b"line-2"])
    assert reply.status == 200
    assert script.bodies == [b"line-1\nline-2\n"] * 3
    assert script.paths == ["/v1/messages/batch"] * 3
    assert waits == [0.25, 0.5]


async def test_giving_up(state: StatePaths, fake: tuple[Script, str]) -> None:
    script, url = fake
    script.answers = [answer(503)] * 3
    waits: list[float] = []
    async with client(state, url, waits, retry=Retry(attempts=3, base_s=1, max_s=1.5)) as gw:
        reply = await gw.send(b"x")
    assert reply.status == 503 and len(script.bodies) == 3  # the last answer, after 3 attempts
    assert waits == [1, 1.5]
    script.answers = ["drop", "drop"]
    async with client(state, url, waits, retry=Retry(attempts=2)) as gw:
        with pytest.raises(GatewayUnreachable) as e:
            await gw.send(b"x")
    assert e.value.attempts == 2


@pytest.mark.parametrize("status", [400, 401, 403, 409, 413, 415, 422, 500])
async def test_other_answers_are_final(state: StatePaths, fake: tuple[Script, str], status: int) -> None:
    script, url = fake
    script.answers = [answer(status), answer(202)]
    async with client(state, url, []) as gw:
        assert (await gw.send(b"x")).status == status
    assert len(script.bodies) == 1


def test_retry_after_that_is_not_seconds_falls_back_to_back_off() -> None:
    r = Retry(base_s=0.5, max_s=4, max_retry_after_s=30)
    assert r.delay(0, "2") == 2
    assert r.delay(0, "Wed, 21 Oct 2026 07:28:00 GMT") == 0.5
    assert r.delay(5, None) == 4
    assert r.delay(0, "3600") == 30
    assert r.delay(1, "-1") == 1.0


async def test_send_against_the_live_gateway(state: StatePaths, client_for: ClientFactory) -> None:
    gw = await client_for("nsatu-liaison")
    env = sealed(state, message())
    first = await gw.send(env)
    again = await gw.send(env)
    assert first.status == 202
    assert again.status == 200 and again.body["duplicate"] is True and again.body["id"] == first.body["id"]
