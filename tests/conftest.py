"""Shared fixtures: one real nats-server and one real system (gateway over mTLS, dispatcher,
adapters with stub native systems) per test session, on loopback, in a temp folder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.bus import ACCEPTED_STREAM, Bus, BusSettings
from broker.client import GatewayClient, build_message, seal_message
from broker.natsd import NatsServer
from broker.pki import ensure_defaults, load_signing_key, new_operator, new_sender
from broker.service import System, SystemOptions
from broker.state import StatePaths
from broker.tls import client_context

LABEL_NR = {
    "policy": "NATO",
    "classification": "RESTRICTED",
    "releasable_to": ["EUMAM", "NSATU"],
    "caveats": [],
}
STATUS_BODY = {"topic": "Hub Rzeszow", "state": "GREEN", "summary": "Nominal."}


@pytest_asyncio.fixture(scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsServer]:
    async with NatsServer(tmp_path_factory.mktemp("nats")) as srv:
        yield srv


@pytest.fixture(scope="session")
def state(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    paths = StatePaths(tmp_path_factory.mktemp("state"))
    ensure_defaults(paths)
    new_operator(paths, "low-officer", "EUMAM", "EU:RESTRICTED")
    new_operator(paths, "secret-officer", "NSATU", "NATO:SECRET")
    new_sender(paths, "nsatu-tools", "NSATU", ["status.update"])
    return paths


@pytest_asyncio.fixture(scope="session")
async def system(state: StatePaths, nats_server: NatsServer) -> AsyncIterator[System]:
    opts = SystemOptions(
        state=state.root, port=0, nats_url=nats_server.url, adapter_ack_wait_s=5.0, checkpoint_interval_s=0.5
    )
    async with System(opts) as sys_:
        yield sys_


@pytest_asyncio.fixture(scope="session")
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    async with Bus(BusSettings(servers=(nats_server.url,), name="tests"), ensure_streams=False) as b:
        await b.wait_connected(10)
        yield b


Signer = tuple[str, Ed25519PrivateKey]


def signer(state: StatePaths, ident: str) -> Signer:
    return load_signing_key(state, ident)


ClientFactory = Callable[[str], Awaitable[GatewayClient]]


@pytest_asyncio.fixture(scope="session")
async def client_for(system: System, state: StatePaths) -> AsyncIterator[ClientFactory]:
    opened: dict[str, GatewayClient] = {}

    async def make(ident: str) -> GatewayClient:
        if ident not in opened:
            ctx = client_context(state.ca_crt, state.tls_crt(ident), state.tls_key(ident))
            opened[ident] = await GatewayClient(system.gateway_url, ctx).__aenter__()
        return opened[ident]

    yield make
    for c in opened.values():
        await c.aclose()


def message(
    sender: str = "nsatu-liaison",
    originator: str = "NSATU",
    kind: str = "status.update",
    label: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    return build_message(
        kind=kind,
        sender=sender,
        originator=originator,
        label=label or LABEL_NR,
        body=body or STATUS_BODY,
        **kw,
    )


def sealed(state: StatePaths, msg: dict[str, Any], ident: str | None = None) -> bytes:
    keyid, key = signer(state, ident or msg["sender"])
    return seal_message(msg, keyid, key)


async def accepted_last_seq(bus: Bus) -> int:
    return await bus.last_seq(ACCEPTED_STREAM)


async def eventually(pred: Callable[[], bool], timeout: float = 15.0, step: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)
