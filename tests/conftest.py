"""Shared fixtures: one real nats-server and one real system (gateway over mTLS, dispatcher,
adapters with stub native systems) per test session, on loopback, in a temp folder.

The session's nats-server runs the config generated from the session policy (TLS, one certificate-
mapped user per service, docs/nats-security.md) plus one test-only user, `tests-inspector`, with which
the `bus` fixture inspects the streams and forges deliveries. Tests that open a plain `Bus` without
credentials to a system's embedded (locked-down) NATS inspect it as that system's admin identity
(`_plain_buses_inspect_as_admin`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import pytest_asyncio

from broker.app.options import AdapterOptions, GatewayOptions, NatsOptions, SystemOptions
from broker.app.system import System
from broker.client import GatewayClient
from broker.identity.state import StatePaths
from broker.identity.tls import client_context
from broker.nats.bus import Bus, BusSettings
from broker.nats.config import NatsPermissions, NatsUser
from broker.nats.names import ADMIN, nats_user
from broker.nats.security import issue_nats_identity, nats_security
from broker.nats.server import NatsServer
from broker.nats.settings import bus_settings as nats_bus_settings
from broker.policy.admin import new_operator, new_sender
from broker.policy.defaults import ensure_defaults
from broker.policy.loader import load_policy

INSPECTOR = "tests-inspector"
#: Tests only, never in a generated config: everything but the system account.
INSPECTOR_USER = NatsUser(
    nats_user(INSPECTOR),
    NatsPermissions(
        publish_allow=(">",), publish_deny=("$SYS.>",), subscribe_allow=(">",), subscribe_deny=("$SYS.>",)
    ),
    "tests only: inspects the streams and forges deliveries",
)


@pytest_asyncio.fixture(scope="session")
async def nats_server(
    tmp_path_factory: pytest.TempPathFactory, state: StatePaths
) -> AsyncIterator[NatsServer]:
    security = nats_security(state, load_policy(state.policy), extra_users=[INSPECTOR_USER])
    async with NatsServer(tmp_path_factory.mktemp("nats"), security=security) as srv:
        yield srv


@pytest.fixture(scope="session")
def state(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    paths = StatePaths(tmp_path_factory.mktemp("state"))
    ensure_defaults(paths)
    new_operator(paths, "low-officer", "EUMAM", "EU:RESTRICTED")
    new_operator(paths, "secret-officer", "NSATU", "NATO:SECRET")
    new_sender(paths, "nsatu-tools", "NSATU", ["status.update"])
    issue_nats_identity(paths, INSPECTOR)
    return paths


@pytest.fixture(scope="session", autouse=True)
def _plain_buses_inspect_as_admin() -> Iterator[None]:
    """A test that opens `Bus(BusSettings(servers=(system.nats_url,)))` without credentials to inspect a
    system's embedded NATS (which has no anonymous user) connects as that system's admin identity."""
    systems: dict[str, StatePaths] = {}
    original_start, original_init = System._start, Bus.__init__

    async def start(self: System) -> None:
        await original_start(self)
        systems[self.nats_url] = self.paths

    def init(self: Bus, settings: BusSettings, *, ensure_streams: bool | None = None) -> None:
        url = settings.servers[0] if settings.servers else ""
        if settings.tls is None and url.startswith("tls://") and url in systems:
            settings = nats_bus_settings(systems[url], ADMIN, url, name=settings.name, ensure_streams=False)
        original_init(self, settings, ensure_streams=ensure_streams)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(System, "_start", start)
        mp.setattr(Bus, "__init__", init)
        yield


@pytest_asyncio.fixture(scope="session")
async def system(state: StatePaths, nats_server: NatsServer) -> AsyncIterator[System]:
    opts = SystemOptions(
        state=state.root,
        nats=NatsOptions(url=nats_server.url),
        gateway=GatewayOptions(port=0),
        adapters=AdapterOptions(ack_wait_s=5.0),
        checkpoint_interval_s=0.5,
    )
    async with System(opts) as sys_:
        yield sys_


@pytest_asyncio.fixture(scope="session")
async def bus(nats_server: NatsServer, state: StatePaths) -> AsyncIterator[Bus]:
    settings = nats_bus_settings(state, INSPECTOR, nats_server.url, name="tests", ensure_streams=False)
    async with Bus(settings) as b:
        await b.wait_connected(10)
        yield b


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


