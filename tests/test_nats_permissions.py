"""NATS enforces who may read and write what (issue #5), checked against a real nats-server running the
config `broker up` generates from the policy, with the real per-service certificates.

Every forbidden act must fail with NATS's own refusal: a permissions violation the server reports to the
client (`-ERR 'Permissions Violation ...'`, seen by nats-py's error callback; the request itself is
dropped and times out), or a refused connection. None of this goes through the broker's code: the probes
below are bare nats-py connections holding one service's certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from broker.app.options import AdapterOptions, GatewayOptions, SystemOptions
from broker.app.system import System
from broker.client import GatewayClient
from broker.identity.state import StatePaths
from broker.identity.tls import client_context
from broker.identity.x509 import init_ca
from broker.nats.names import (
    ACCEPTED_STREAM,
    ADMIN,
    AUDIT,
    AUDIT_STREAM,
    DEAD_STREAM,
    DELIVERY_STREAM,
    DISPATCHER,
    FIXED_SERVICES,
    GATEWAY,
    READER,
    adapter_durable,
    adapter_service,
    audit_subject,
    inbox_prefix,
)
from broker.nats.permissions import delivery_filter_subjects
from broker.nats.security import credential_paths, issue_nats_identity
from broker.policy.loader import load_policy
from broker.policy.model import Policy
from broker.policy.render import write_policy
from schemas.clearance import Clearance
from tests.support.messages import message, sealed
from tests.support.waiting import eventually

NSATU, EUMAM, UDCG = adapter_service("NSATU"), adapter_service("EUMAM"), adapter_service("UDCG")
ALL_SERVICES = (*FIXED_SERVICES, NSATU, EUMAM, UDCG)
LABEL_SECRET_ALL = {
    "policy": "NATO",
    "classification": "SECRET",
    "releasable_to": ["EUMAM", "NSATU", "UDCG"],
    "caveats": [],
}
LABEL_NR = {
    "policy": "NATO",
    "classification": "RESTRICTED",
    "releasable_to": ["EUMAM", "NSATU"],
    "caveats": [],
}


@pytest_asyncio.fixture(scope="module")
async def secure(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    """The production path: `broker up`'s System with its embedded, generated, locked-down NATS."""
    opts = SystemOptions(
        state=tmp_path_factory.mktemp("secure-state"),
        gateway=GatewayOptions(port=0),
        adapters=AdapterOptions(ack_wait_s=5.0),
        checkpoint_interval_s=0.5,
    )
    async with System(opts) as sys_:
        assert sys_.nats is not None and sys_.nats.secure and sys_.nats_url.startswith("tls://")
        yield sys_


def _log(sys_: System) -> str:
    assert sys_.nats is not None
    return (sys_.nats.dir / "nats-server.log").read_text(encoding="utf-8", errors="replace")


class Probe:
    """A bare nats-py connection as one NATS identity, recording what the server reports."""

    def __init__(self, nc: Client, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors
        self.js: JetStreamContext = nc.jetstream(timeout=1.0)

    async def denied(self, kind: str, subject: str, act: Callable[[], Awaitable[Any]]) -> None:
        """`act` is refused by the server: a `permissions violation for <kind> to "<subject>"` arrives, and
        a request `act` makes is never answered (it is given up once the refusal is in)."""
        before = len(self.errors)
        want = f'permissions violation for {kind} to "{subject.lower()}"'
        task = asyncio.ensure_future(act())
        try:
            await eventually(lambda: any(want in e for e in self.errors[before:]) or task.done(), timeout=5)
            if kind == "publish" and task.done() and not isinstance(task.exception(), TimeoutError):
                raise AssertionError(f"{subject}: the server answered a request it should have refused")
            await eventually(lambda: any(want in e for e in self.errors[before:]), timeout=5)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, nats.errors.Error, TimeoutError):
                await task

    async def allowed_subscription(self, subject: str) -> None:
        before = len(self.errors)
        sub = await self.nc.subscribe(subject)
        await self.nc.flush(timeout=2)
        await asyncio.sleep(0.2)
        assert not self.errors[before:], self.errors[before:]
        await sub.unsubscribe()


@contextlib.asynccontextmanager
async def probe(sys_: System, service: str) -> AsyncIterator[Probe]:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    crt, key = credential_paths(sys_.paths, service)
    nc = await nats.connect(
        sys_.nats_url,
        name=f"probe-{service}",
        tls=client_context(sys_.paths.ca_crt, crt, key),
        tls_handshake_first=True,
        inbox_prefix=inbox_prefix(service),
        error_cb=on_error,
        allow_reconnect=False,
        connect_timeout=3,
    )
    try:
        yield Probe(nc, errors)
    finally:
        await nc.close()


async def _post(sys_: System, label: dict[str, Any], sender: str = "nsatu-liaison") -> str:
    paths = sys_.paths
    ctx = client_context(paths.ca_crt, paths.tls_crt(sender), paths.tls_key(sender))
    async with GatewayClient(sys_.gateway_url, ctx) as gw:
        org = sender.split("-")[0].upper()
        r = await gw.post(sealed(paths, message(sender=sender, originator=org, label=label)))
    assert r.status == 202, r.body
    return str(r.body["id"])


def _received(sys_: System, org: str, msg_id: str) -> bool:
    return any(msg_id.encode() in doc.body for doc in list(sys_.stubs[org].received))


# ------------------------------------------------------------------------------------- allowed paths


async def test_every_allowed_path_works_and_nothing_is_refused(secure: System) -> None:
    """End to end under the locked-down config: accepted, released up to each clearance, delivered,
    audited; the services' own connections never hit a permissions violation."""
    msg_id = await _post(secure, LABEL_SECRET_ALL)
    await eventually(lambda: _received(secure, "NSATU", msg_id) and _received(secure, "EUMAM", msg_id), 30)
    assert not _received(secure, "UDCG", msg_id)  # UDCG is NATO:CONFIDENTIAL
    nr_id = await _post(secure, LABEL_NR, sender="eumam-liaison")
    await eventually(lambda: _received(secure, "NSATU", nr_id), 30)
    log = _log(secure)
    assert "Violation" not in log, [ln for ln in log.splitlines() if "Violation" in ln]
    assert "TLS required for client connections" in log


async def test_adapter_consumers_are_rank_limited_by_the_bootstrap(secure: System) -> None:
    async with probe(secure, ADMIN) as admin:
        for org, top in (("NSATU", 3), ("EUMAM", 3), ("UDCG", 2)):
            info = await admin.js.consumer_info(DELIVERY_STREAM, adapter_durable(org))
            assert info.config.filter_subjects == delivery_filter_subjects(org, top)
            assert not info.config.filter_subject


# ------------------------------------------------------------------------------------------- adapters


async def test_adapter_cannot_subscribe_to_another_organisations_deliveries(secure: System) -> None:
    async with probe(secure, NSATU) as p:
        for subject in ("coord.deliver.EUMAM.>", "coord.deliver.EUMAM.1.status.update", "coord.deliver.>"):
            await p.denied("subscription", subject, lambda s=subject: p.nc.subscribe(s))
        # nor pull from EUMAM's consumer
        sub = await p.js.pull_subscribe_bind(durable=adapter_durable("EUMAM"), stream=DELIVERY_STREAM)
        nxt = f"$JS.API.CONSUMER.MSG.NEXT.{DELIVERY_STREAM}.{adapter_durable('EUMAM')}"
        await p.denied("publish", nxt, lambda: sub.fetch(1, timeout=1))
        await p.denied(
            "publish",
            f"$JS.API.CONSUMER.INFO.{DELIVERY_STREAM}.{adapter_durable('EUMAM')}",
            lambda: p.js.consumer_info(DELIVERY_STREAM, adapter_durable("EUMAM")),
        )


async def test_adapter_cannot_subscribe_above_its_clearance(secure: System) -> None:
    """UDCG is cleared NATO:CONFIDENTIAL (rank 2)."""
    async with probe(secure, UDCG) as p:
        for subject in (
            "coord.deliver.UDCG.3.>",
            "coord.deliver.UDCG.4.status.update",
            "coord.deliver.UDCG.>",
        ):
            await p.denied("subscription", subject, lambda s=subject: p.nc.subscribe(s))
        # it cannot widen its own consumer's filter either (no consumer create/update at all)
        wider = ConsumerConfig(
            name=adapter_durable("UDCG"),
            durable_name=adapter_durable("UDCG"),
            filter_subject="coord.deliver.UDCG.>",
            ack_policy=AckPolicy.EXPLICIT,
        )
        create = f"$JS.API.CONSUMER.CREATE.{DELIVERY_STREAM}.{adapter_durable('UDCG')}.coord.deliver.UDCG.>"
        await p.denied("publish", create, lambda: p.js.add_consumer(DELIVERY_STREAM, config=wider))
        # its own (rank-limited) consumer is what it reads
        before = len(p.errors)
        info = await p.js.consumer_info(DELIVERY_STREAM, adapter_durable("UDCG"))
        assert info.config.filter_subjects == delivery_filter_subjects("UDCG", 2)
        sub = await p.js.pull_subscribe_bind(durable=adapter_durable("UDCG"), stream=DELIVERY_STREAM)
        with contextlib.suppress(nats.errors.TimeoutError, TimeoutError):
            await sub.fetch(1, timeout=0.3)
        await p.nc.flush(timeout=2)
        assert not p.errors[before:], p.errors[before:]
    async with probe(secure, DISPATCHER) as d:  # and nothing above rank 2 is ever released to UDCG
        subject = "coord.deliver.UDCG.3.status.update"
        await d.denied("publish", subject, lambda: d.js.publish(subject, b"{}", headers={"Nats-Msg-Id": "x"}))


async def test_adapter_cannot_read_the_accepted_stream(secure: System) -> None:
    async with probe(secure, NSATU) as p:
        await p.denied("subscription", "coord.msg.>", lambda: p.nc.subscribe("coord.msg.>"))
        api = "$JS.API"
        await p.denied(
            "publish", f"{api}.STREAM.MSG.GET.{ACCEPTED_STREAM}", lambda: p.js.get_msg(ACCEPTED_STREAM, 1)
        )
        await p.denied(
            "publish",
            f"{api}.DIRECT.GET.{ACCEPTED_STREAM}",
            lambda: p.js.get_msg(ACCEPTED_STREAM, 1, direct=True),
        )
        await p.denied(
            "publish", f"{api}.STREAM.INFO.{ACCEPTED_STREAM}", lambda: p.js.stream_info(ACCEPTED_STREAM)
        )
        sub = await p.js.pull_subscribe_bind(durable="dispatcher", stream=ACCEPTED_STREAM)
        await p.denied(
            "publish",
            f"{api}.CONSUMER.MSG.NEXT.{ACCEPTED_STREAM}.dispatcher",
            lambda: sub.fetch(1, timeout=1),
        )


async def test_no_consumer_can_be_created_on_the_accepted_stream(secure: System) -> None:
    api = "$JS.API"
    named = ConsumerConfig(
        name="spy", durable_name="spy", filter_subject="coord.msg.>", ack_policy=AckPolicy.NONE
    )
    ephemeral = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL)
    for service in (NSATU, GATEWAY, AUDIT, READER, DISPATCHER):
        async with probe(secure, service) as p:
            await p.denied(
                "publish",
                f"{api}.CONSUMER.CREATE.{ACCEPTED_STREAM}.spy.coord.msg.>",
                lambda p=p: p.js.add_consumer(ACCEPTED_STREAM, config=named),
            )
            await p.denied(
                "publish",
                f"{api}.CONSUMER.CREATE.{ACCEPTED_STREAM}",
                lambda p=p: p.js.add_consumer(ACCEPTED_STREAM, config=ephemeral),
            )


async def test_adapter_has_no_stream_management(secure: System) -> None:
    api = "$JS.API"
    async with probe(secure, EUMAM) as p:
        for stream in (DELIVERY_STREAM, ACCEPTED_STREAM, AUDIT_STREAM, DEAD_STREAM):
            await p.denied("publish", f"{api}.STREAM.INFO.{stream}", lambda s=stream: p.js.stream_info(s))
            await p.denied("publish", f"{api}.STREAM.DELETE.{stream}", lambda s=stream: p.js.delete_stream(s))
            await p.denied("publish", f"{api}.STREAM.PURGE.{stream}", lambda s=stream: p.js.purge_stream(s))
        ephemeral = ConsumerConfig(ack_policy=AckPolicy.NONE)
        await p.denied(
            "publish",
            f"{api}.CONSUMER.CREATE.{DELIVERY_STREAM}",
            lambda: p.js.add_consumer(DELIVERY_STREAM, config=ephemeral),
        )


# -------------------------------------------------------------------------------------- publishing


async def test_only_the_gateway_publishes_accepted_messages(secure: System) -> None:
    subject = f"coord.msg.1.NSATU.status.update.{uuid.uuid4()}"
    for service in (NSATU, EUMAM, DISPATCHER, AUDIT, READER, ADMIN):
        async with probe(secure, service) as p:
            await p.denied("publish", subject, lambda p=p: p.js.publish(subject, b"{}"))
    async with probe(secure, GATEWAY) as gw:
        # not even the gateway above an originator's ceiling (UDCG: CONFIDENTIAL; system high: SECRET)
        for above in (
            f"coord.msg.3.UDCG.status.update.{uuid.uuid4()}",
            f"coord.msg.4.NSATU.x.y.{uuid.uuid4()}",
        ):
            await gw.denied("publish", above, lambda s=above: gw.js.publish(s, b"{}"))


async def test_only_the_dispatcher_publishes_deliveries(secure: System) -> None:
    subject = "coord.deliver.NSATU.1.status.update"
    for service in (GATEWAY, NSATU, EUMAM, AUDIT, READER, ADMIN):
        async with probe(secure, service) as p:
            await p.denied("publish", subject, lambda p=p: p.js.publish(subject, b"{}"))


async def test_only_the_audit_writer_publishes_audit_records(secure: System) -> None:
    subject = audit_subject(secure.holder.current.name)
    for service in (GATEWAY, DISPATCHER, NSATU, READER, ADMIN):
        async with probe(secure, service) as p:
            await p.denied("publish", subject, lambda p=p: p.js.publish(subject, b"{}"))


async def test_adapter_dead_letters_only_as_its_own_organisation(secure: System) -> None:
    async with probe(secure, NSATU) as p:
        await p.denied("publish", "coord.dead.EUMAM", lambda: p.js.publish("coord.dead.EUMAM", b"{}"))


# ------------------------------------------------------------------------------------------- audit


async def test_nobody_may_delete_or_purge_the_audit_stream(secure: System) -> None:
    api = "$JS.API"
    for service in ALL_SERVICES:
        async with probe(secure, service) as p:
            await p.denied(
                "publish", f"{api}.STREAM.PURGE.{AUDIT_STREAM}", lambda p=p: p.js.purge_stream(AUDIT_STREAM)
            )
            await p.denied(
                "publish", f"{api}.STREAM.DELETE.{AUDIT_STREAM}", lambda p=p: p.js.delete_stream(AUDIT_STREAM)
            )
            await p.denied(
                "publish",
                f"{api}.STREAM.MSG.DELETE.{AUDIT_STREAM}",
                lambda p=p: p.js.delete_msg(AUDIT_STREAM, 1),
            )
    async with probe(secure, ADMIN) as admin:
        info = await admin.js.stream_info(AUDIT_STREAM)
        assert info.state.messages > 0 and info.state.first_seq == 1


async def test_the_system_account_is_not_reachable(secure: System) -> None:
    for service in ALL_SERVICES:
        async with probe(secure, service) as p:
            await p.denied("subscription", "$SYS.>", lambda p=p: p.nc.subscribe("$SYS.>"))
            await p.denied(
                "publish",
                "$SYS.REQ.SERVER.PING",
                lambda p=p: p.nc.request("$SYS.REQ.SERVER.PING", b"", timeout=1),
            )


async def test_no_service_can_listen_to_another_services_replies(secure: System) -> None:
    async with probe(secure, NSATU) as p:
        for other in ("_INBOX.>", f"{inbox_prefix(DISPATCHER)}.>", f"{inbox_prefix(EUMAM)}.>"):
            await p.denied("subscription", other, lambda s=other: p.nc.subscribe(s))
        await p.allowed_subscription(f"{inbox_prefix(NSATU)}.mine")


# ------------------------------------------------------------------------------------- connections


async def refused(url: str, **kw: Any) -> Exception:
    """Connect once (no retries); return why it failed. The half-open client is closed either way."""
    nc = Client()
    try:
        await nc.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2, **kw)
    except Exception as exc:
        return exc
    else:
        raise AssertionError(f"connected to {url} although it should have been refused")
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
        transport = getattr(nc, "_transport", None)
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()
                await transport.wait_closed()


async def test_a_connection_without_a_client_certificate_is_refused(secure: System) -> None:
    ctx = client_context(secure.paths.ca_crt)  # trusts the server, presents nothing
    await refused(secure.nats_url, tls=ctx, tls_handshake_first=True)
    await eventually(lambda: "client didn't provide a certificate" in _log(secure), timeout=5)


async def test_a_certificate_of_our_ca_without_a_nats_identity_is_refused(secure: System) -> None:
    """A sender's mutual-TLS certificate (CN nsatu-liaison) is sound TLS but no NATS user."""
    paths = secure.paths
    ctx = client_context(paths.ca_crt, paths.tls_crt("nsatu-liaison"), paths.tls_key("nsatu-liaison"))
    exc = await refused(secure.nats_url, tls=ctx, tls_handshake_first=True)
    assert "authorization violation" in str(exc).lower(), repr(exc)


async def test_a_plaintext_connection_is_refused(secure: System) -> None:
    host, port = secure.nats_url.removeprefix("tls://").rsplit(":", 1)

    def talk() -> bytes:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\nSUB coord.> 1\r\n')
            got = b""
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                while chunk := s.recv(4096):
                    got += chunk
            return got

    got = await asyncio.to_thread(talk)
    assert b"INFO" not in got and b"PONG" not in got and b"MSG" not in got, got
    await refused(secure.nats_url.replace("tls://", "nats://"))  # no INFO ever comes in plaintext
    await eventually(lambda: "TLS handshake error" in _log(secure), timeout=5)


async def test_a_certificate_from_another_ca_is_refused(secure: System, tmp_path: Path) -> None:
    """Same name as the gateway's NATS identity, issued by another CA."""
    other = StatePaths(tmp_path / "other")
    init_ca(other)
    issue_nats_identity(other, GATEWAY)
    crt, key = credential_paths(other, GATEWAY)
    ctx = client_context(secure.paths.ca_crt, crt, key)
    await refused(secure.nats_url, tls=ctx, tls_handshake_first=True)
    await eventually(lambda: "certificate signed by unknown authority" in _log(secure), timeout=5)


# ------------------------------------------------------------------------------------ policy change


def _with_clearance(p: Policy, org: str, clearance: str) -> Policy:
    orgs = dict(p.organisations)
    orgs[org] = dataclasses.replace(orgs[org], clearance=Clearance.parse(clearance))
    return dataclasses.replace(p, organisations=MappingProxyType(orgs))


async def test_a_policy_change_regenerates_and_reloads_the_permissions(secure: System) -> None:
    """UDCG lowered to RESTRICTED: the reloaded server refuses the dispatcher a CONFIDENTIAL release to
    UDCG, and the bootstrap narrows UDCG's consumer; raised back, both follow again."""
    paths = secure.paths
    before = load_policy(paths.policy)
    subject = "coord.deliver.UDCG.2.status.update"

    async def filters() -> list[str]:
        async with probe(secure, ADMIN) as admin:
            info = await admin.js.consumer_info(DELIVERY_STREAM, adapter_durable("UDCG"))
            return list(info.config.filter_subjects or [])

    async def wait_filters(want: list[str]) -> None:
        for _ in range(100):
            if await filters() == want:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"UDCG's consumer filter is {await filters()}, not {want}")

    write_policy(paths.policy, _with_clearance(before, "UDCG", "NATO:RESTRICTED"))
    try:
        await eventually(lambda: secure.holder.current.organisations["UDCG"].clearance.rank == 1, timeout=10)
        await wait_filters(delivery_filter_subjects("UDCG", 1))
        assert secure.nats is not None
        conf = secure.nats.config_path.read_text()
        assert '"coord.deliver.UDCG.1.>"' in conf and '"coord.deliver.UDCG.2.>"' not in conf
        await eventually(lambda: "Reloaded server configuration" in _log(secure), timeout=5)
        async with probe(secure, DISPATCHER) as d:
            await d.denied(
                "publish",
                subject,
                lambda: d.js.publish(subject, b"{}", headers={"Nats-Msg-Id": str(uuid.uuid4())}),
            )
    finally:
        write_policy(paths.policy, before)
    await eventually(lambda: secure.holder.current.organisations["UDCG"].clearance.rank == 2, timeout=10)
    await wait_filters(delivery_filter_subjects("UDCG", 2))
    # and the system delivers as before
    msg_id = await _post(secure, {**LABEL_SECRET_ALL, "classification": "CONFIDENTIAL"})
    await eventually(lambda: _received(secure, "UDCG", msg_id), 30)


def test_the_generated_config_is_what_the_server_runs(secure: System) -> None:
    assert secure.nats is not None
    conf = secure.nats.config_path.read_text()
    assert "verify_and_map: true" in conf and "handshake_first: true" in conf
    settings = [ln.split(":", 1)[0].strip() for ln in conf.splitlines() if not ln.lstrip().startswith("#")]
    assert "no_auth_user" not in settings and "password" not in settings and "allow_non_tls" not in settings
    users = [ln.strip() for ln in conf.splitlines() if ln.strip().startswith("user:")]
    assert users == [f"user: {json.dumps('CN=nats.' + s)}" for s in ALL_SERVICES[:5]] + [
        f"user: {json.dumps('CN=nats.' + adapter_service(o))}" for o in ("EUMAM", "NSATU", "UDCG")
    ]
