"""Release per ICD §2 end to end: gateway -> dispatcher -> adapters -> stub native systems.

Every message is identified by its id (the `ref` of the native document the adapter renders), since
the session system is shared. Each withheld decision is checked in the audit log with its rule name.
Tests that change the policy build their own System (own state folder, embedded nats-server).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from adapters.formats import NativeMessage, codec_for
from adapters.stub import StubNativeSystem
from broker.app.options import AdapterOptions, GatewayOptions, SystemOptions
from broker.app.system import System
from broker.audit.reader import read_log, split_lines
from broker.client import GatewayClient
from broker.identity.state import StatePaths
from broker.identity.tls import client_context
from broker.nats.bus import Bus, BusSettings
from broker.nats.names import ACCEPTED_STREAM, AUDIT_STREAM, DISPATCH_DURABLE, accepted_subject
from broker.policy.loader import load_policy
from broker.policy.model import Policy
from broker.policy.render import write_policy
from schemas.clearance import Clearance
from tests.conftest import ClientFactory
from tests.support.messages import message, sealed
from tests.support.waiting import eventually

ORGS = ("EUMAM", "NSATU", "UDCG")
ALL = ["EUMAM", "NSATU", "UDCG"]


def label(
    policy: str, classification: str, rel: list[str], caveats: list[str] | None = None
) -> dict[str, Any]:
    return {
        "policy": policy,
        "classification": classification,
        "releasable_to": rel,
        "caveats": caveats or [],
    }


# ------------------------------------------------------------------------------------------ helpers


def received(stub: StubNativeSystem, msg_id: str) -> list[NativeMessage]:
    """What `stub` received for message `msg_id`, decoded with its own codec."""
    codec = codec_for(stub.name)
    return [n for doc in list(stub.received) for n in codec.decode(doc.body) if n.ref == msg_id]


async def audit_records(bus: Bus, start_seq: int = 1) -> list[dict[str, Any]]:
    out = []
    for _seq, data in await read_log(bus, start_seq=start_seq):
        for line in split_lines(data):
            rec = json.loads(line)
            if rec.get("type") == "record":
                out.append(rec)
    return out


async def wait_audit(
    bus: Bus, start_seq: int, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        recs = await audit_records(bus, start_seq)
        if pred(recs):
            return recs
        if loop.time() > end:
            raise AssertionError(f"audit condition not met in time; last records: {recs[-10:]}")
        await asyncio.sleep(0.1)


def decisions_of(recs: list[dict[str, Any]], msg_id: str) -> dict[str, tuple[str, str | None]]:
    """organisation -> (released|withheld, reason) for one message."""
    return {
        r["actor"]: (r["event"], r["reason"])
        for r in recs
        if r["message_id"] == msg_id and r["event"] in ("released", "withheld")
    }


def delivered_to(recs: list[dict[str, Any]], msg_id: str) -> set[str]:
    return {r["actor"] for r in recs if r["message_id"] == msg_id and r["event"] == "delivered"}


async def post(gw: GatewayClient, env: bytes) -> str:
    r = await gw.post(env)
    assert r.status == 202, r.body
    return str(r.body["id"])


async def expect_release(
    system: System,
    bus: Bus,
    start: int,
    msg_id: str,
    sent_label: dict[str, Any],
    released: dict[str, None],
    withheld: dict[str, str],
) -> None:
    """Wait until every organisation has its decision and each released one delivered; check stubs."""
    recs = await wait_audit(
        bus,
        start,
        lambda rs: len(decisions_of(rs, msg_id)) == len(ORGS) and delivered_to(rs, msg_id) >= set(released),
    )
    want = {org: ("released", None) for org in released} | {
        org: ("withheld", r) for org, r in withheld.items()
    }
    assert decisions_of(recs, msg_id) == want
    assert delivered_to(recs, msg_id) == set(released)
    for org in released:
        await eventually(lambda o=org: len(received(system.stubs[o], msg_id)) == 1, timeout=20)
        got = received(system.stubs[org], msg_id)
        assert len(got) == 1, f"{org} received {msg_id} {len(got)} times"
        assert got[0].label.policy == sent_label["policy"]
        assert got[0].label.classification == sent_label["classification"]
        assert list(got[0].label.releasable_to) == sent_label["releasable_to"]
        assert list(got[0].label.caveats) == sent_label["caveats"]
    for org in withheld:
        assert received(system.stubs[org], msg_id) == [], f"{org} must not receive {msg_id}"


# --------------------------------------------------------------------------- session system


async def test_nato_secret_reaches_nsatu_and_eumam_not_udcg(
    system: System, state: StatePaths, client_for: ClientFactory, bus: Bus
) -> None:
    start = await bus.last_seq(AUDIT_STREAM) + 1
    lab = label("NATO", "SECRET", ALL)
    msg_id = await post(await client_for("nsatu-liaison"), sealed(state, message(label=lab)))
    await expect_release(
        system,
        bus,
        start,
        msg_id,
        lab,
        released={"NSATU": None, "EUMAM": None},
        withheld={"UDCG": "clearance"},
    )


async def test_nato_restricted_rel_nsatu_only_reaches_nsatu_only(
    system: System, state: StatePaths, client_for: ClientFactory, bus: Bus
) -> None:
    start = await bus.last_seq(AUDIT_STREAM) + 1
    lab = label("NATO", "RESTRICTED", ["NSATU"])
    msg_id = await post(await client_for("nsatu-liaison"), sealed(state, message(label=lab)))
    await expect_release(
        system,
        bus,
        start,
        msg_id,
        lab,
        released={"NSATU": None},
        withheld={"EUMAM": "releasability", "UDCG": "releasability"},
    )


async def test_eu_restricted_rel_all_reaches_all_three(
    system: System, state: StatePaths, client_for: ClientFactory, bus: Bus
) -> None:
    start = await bus.last_seq(AUDIT_STREAM) + 1
    lab = label("EU", "RESTRICTED", ALL)
    env = sealed(state, message(sender="eumam-liaison", originator="EUMAM", label=lab))
    msg_id = await post(await client_for("eumam-liaison"), env)
    await expect_release(
        system, bus, start, msg_id, lab, released={"NSATU": None, "EUMAM": None, "UDCG": None}, withheld={}
    )


async def test_caveat_nobody_holds_reaches_nobody(
    system: System, state: StatePaths, client_for: ClientFactory, bus: Bus
) -> None:
    start = await bus.last_seq(AUDIT_STREAM) + 1
    lab = label("NATO", "RESTRICTED", ALL, ["UKR-EYES"])
    msg_id = await post(await client_for("nsatu-liaison"), sealed(state, message(label=lab)))
    await expect_release(
        system,
        bus,
        start,
        msg_id,
        lab,
        released={},
        withheld={"NSATU": "caveats", "EUMAM": "caveats", "UDCG": "caveats"},
    )
    await asyncio.sleep(0.5)  # a late delivery would show up here
    for org in ORGS:
        assert received(system.stubs[org], msg_id) == []


async def test_withheld_records_name_the_first_failing_rule(
    system: System, state: StatePaths, client_for: ClientFactory, bus: Bus
) -> None:
    """One batch of messages, each failing a different rule for UDCG; the audit names exactly that rule."""
    gw = await client_for("nsatu-liaison")
    start = await bus.last_seq(AUDIT_STREAM) + 1
    cases = {
        # NATO SECRET: above UDCG's NATO:CONFIDENTIAL (clearance precedes releasability and caveats)
        "clearance": label("NATO", "SECRET", ["NSATU"], ["UKR-EYES"]),
        "releasability": label("NATO", "RESTRICTED", ["EUMAM", "NSATU"], ["UKR-EYES"]),
        "caveats": label("NATO", "CONFIDENTIAL", ALL, ["UKR-EYES"]),
    }
    ids = {rule: await post(gw, sealed(state, message(label=lab))) for rule, lab in cases.items()}
    recs = await wait_audit(bus, start, lambda rs: all(len(decisions_of(rs, i)) == 3 for i in ids.values()))
    for rule, msg_id in ids.items():
        assert decisions_of(recs, msg_id)["UDCG"] == ("withheld", rule)
        withheld = [r for r in recs if r["message_id"] == msg_id and r["event"] == "withheld"]
        assert all(r["reason"] in ("clearance", "releasability", "caveats") for r in withheld)
        assert all(r["kind"] == "status.update" and r["originator"] == "NSATU" for r in withheld)


# ------------------------------------------------------------------------------ own systems


@contextlib.asynccontextmanager
async def own_system(tmp: Path) -> AsyncIterator[tuple[System, StatePaths, Bus]]:
    """A whole system on its own embedded nats-server and state folder (default policy, ICD §9)."""
    opts = SystemOptions(
        state=tmp / "state",
        gateway=GatewayOptions(port=0),
        adapters=AdapterOptions(ack_wait_s=5.0),
        checkpoint_interval_s=0.5,
    )
    async with System(opts) as sys_:
        async with Bus(BusSettings(servers=(sys_.nats_url,), name="tests-own"), ensure_streams=False) as b:
            await b.wait_connected(10)
            yield sys_, sys_.paths, b


@contextlib.asynccontextmanager
async def own_client(sys_: System, paths: StatePaths, ident: str) -> AsyncIterator[GatewayClient]:
    ctx = client_context(paths.ca_crt, paths.tls_crt(ident), paths.tls_key(ident))
    async with GatewayClient(sys_.gateway_url, ctx) as c:
        yield c


async def change_policy(sys_: System, paths: StatePaths, edit: Callable[[Policy], Policy]) -> Policy:
    """Edit policy.toml as an administrator would and wait until the running system holds the new policy."""
    new = write_policy(paths.policy, edit(load_policy(paths.policy)))
    await eventually(lambda: sys_.holder.current == new, timeout=10)
    return new


def with_org(p: Policy, code: str, **changes: Any) -> Policy:
    orgs = dict(p.organisations)
    orgs[code] = dataclasses.replace(orgs[code], **changes)
    return dataclasses.replace(p, organisations=MappingProxyType(orgs))


async def hold_dispatcher(b: Bus) -> None:
    """Pause the dispatcher's durable consumer (server side): accepted messages wait in COORD_ACCEPTED."""

    async def exists() -> bool:
        try:
            await b.js.consumer_info(ACCEPTED_STREAM, DISPATCH_DURABLE)
        except Exception:
            return False
        return True

    for _ in range(200):
        if await exists():
            break
        await asyncio.sleep(0.05)
    res = await b.js.pause_consumer(ACCEPTED_STREAM, DISPATCH_DURABLE, "2999-01-01T00:00:00Z")
    assert res.paused


async def test_need_to_know_removes_a_kind_from_an_organisation(tmp_path: Path) -> None:
    async with own_system(tmp_path) as (sys_, paths, b), own_client(sys_, paths, "nsatu-liaison") as gw:
        udcg = sys_.holder.current.organisations["UDCG"]
        await change_policy(
            sys_, paths, lambda p: with_org(p, "UDCG", need_to_know=udcg.need_to_know - {"status.update"})
        )
        start = await b.last_seq(AUDIT_STREAM) + 1
        lab = label("NATO", "RESTRICTED", ALL)
        status_id = await post(gw, sealed(paths, message(label=lab)))
        lesson = {
            "title": "Night decoys",
            "domain": "air-defence",
            "observation": "Decoys first.",
            "recommendation": "Discriminate acoustically.",
        }
        lesson_id = await post(gw, sealed(paths, message(kind="lesson.learned", label=lab, body=lesson)))
        await expect_release(
            sys_,
            b,
            start,
            status_id,
            lab,
            released={"NSATU": None, "EUMAM": None},
            withheld={"UDCG": "need-to-know"},
        )
        # another kind, still on UDCG's list, is released to UDCG as before
        await expect_release(
            sys_, b, start, lesson_id, lab, released={"NSATU": None, "EUMAM": None, "UDCG": None}, withheld={}
        )


async def test_clearance_lowered_while_messages_wait_stops_their_release(tmp_path: Path) -> None:
    """Accepted under the old policy (EUMAM EU:SECRET), released under the new (EUMAM EU:RESTRICTED)."""
    async with own_system(tmp_path) as (sys_, paths, b), own_client(sys_, paths, "nsatu-liaison") as gw:
        await hold_dispatcher(b)
        start = await b.last_seq(AUDIT_STREAM) + 1
        secret = label("NATO", "SECRET", ["EUMAM", "NSATU"])
        restricted = label("NATO", "RESTRICTED", ["EUMAM", "NSATU"])
        stored_before = await b.last_seq(ACCEPTED_STREAM)
        secret_id = await post(gw, sealed(paths, message(label=secret)))
        restricted_id = await post(gw, sealed(paths, message(label=restricted)))
        # both accepted (stored: the 202s came after the JetStream acks), neither released while the
        # dispatcher is held (it also writes their `accepted` records, so none are there yet)
        assert await b.last_seq(ACCEPTED_STREAM) == stored_before + 2
        await asyncio.sleep(1.0)
        recs = await audit_records(b, start)
        assert not decisions_of(recs, secret_id) and not decisions_of(recs, restricted_id)

        await change_policy(
            sys_, paths, lambda p: with_org(p, "EUMAM", clearance=Clearance.parse("EU:RESTRICTED"))
        )
        await b.js.resume_consumer(ACCEPTED_STREAM, DISPATCH_DURABLE)

        await expect_release(
            sys_,
            b,
            start,
            secret_id,
            secret,
            released={"NSATU": None},
            withheld={"EUMAM": "clearance", "UDCG": "clearance"},
        )
        await expect_release(
            sys_,
            b,
            start,
            restricted_id,
            restricted,
            released={"NSATU": None, "EUMAM": None},
            withheld={"UDCG": "releasability"},
        )


async def test_system_high_lowered_while_messages_wait_withholds_from_everyone(tmp_path: Path) -> None:
    async with own_system(tmp_path) as (sys_, paths, b), own_client(sys_, paths, "nsatu-liaison") as gw:
        await hold_dispatcher(b)
        start = await b.last_seq(AUDIT_STREAM) + 1
        lab = label("NATO", "CONFIDENTIAL", ALL)
        msg_id = await post(gw, sealed(paths, message(label=lab)))
        await change_policy(
            sys_, paths, lambda p: dataclasses.replace(p, system_high=Clearance.parse("NATO:RESTRICTED"))
        )
        await b.js.resume_consumer(ACCEPTED_STREAM, DISPATCH_DURABLE)
        await expect_release(
            sys_,
            b,
            start,
            msg_id,
            lab,
            released={},
            withheld={"NSATU": "system-high", "EUMAM": "system-high", "UDCG": "system-high"},
        )


async def test_clearance_lowered_while_deliveries_wait_at_the_adapter_stops_them(tmp_path: Path) -> None:
    """Released to EUMAM under the old policy, but EUMAM's native system is down; the clearance is lowered
    before it comes back: the adapter re-applies the decision with the policy in force and hands nothing
    over (the deliveries are dead-lettered with the failing rule)."""
    async with own_system(tmp_path) as (sys_, paths, b), own_client(sys_, paths, "nsatu-liaison") as gw:
        stub = sys_.stubs["EUMAM"]
        adapter = sys_.adapters["EUMAM"]
        start = await b.last_seq(AUDIT_STREAM) + 1
        secret = label("NATO", "SECRET", ["EUMAM", "NSATU"])
        stub.set_down(True)
        try:
            ids = [await post(gw, sealed(paths, message(label=secret))) for _ in range(2)]
            recs = await wait_audit(
                b, start, lambda rs: all(decisions_of(rs, i).get("EUMAM") == ("released", None) for i in ids)
            )
            await eventually(lambda: adapter.stats.native_retries >= 2, timeout=10)  # first one is in flight
            await change_policy(
                sys_, paths, lambda p: with_org(p, "EUMAM", clearance=Clearance.parse("EU:RESTRICTED"))
            )
        finally:
            stub.set_down(False)
        recs = await wait_audit(
            b,
            start,
            lambda rs: all(
                any(
                    r["message_id"] == i
                    and r["actor"] == "EUMAM"
                    and r["event"] in ("delivered", "dead-lettered")
                    for r in rs
                )
                for i in ids
            ),
        )
        for i in ids:
            outcome = [
                (r["event"], r["reason"])
                for r in recs
                if r["message_id"] == i
                and r["actor"] == "EUMAM"
                and r["event"] in ("delivered", "dead-lettered")
            ]
            assert outcome == [("dead-lettered", "clearance")], (i, outcome)
            assert received(stub, i) == []
        # NSATU (still cleared) got both
        await eventually(lambda: all(len(received(sys_.stubs["NSATU"], i)) == 1 for i in ids), timeout=20)


@pytest.mark.parametrize("damage", ["bad-signature", "unreadable"])
async def test_stored_bytes_that_fail_integrity_are_withheld_from_everyone(
    damage: str, system: System, state: StatePaths, bus: Bus
) -> None:
    """A stored message whose originator signature no longer verifies (or that no longer decodes) was
    not what the gateway checked: the dispatcher withholds it from every organisation, reason
    `integrity`, and nothing is delivered. Forged here with the tests' inspector identity, standing
    for corruption at rest."""
    msg = message(label=label("NATO", "RESTRICTED", ALL))
    envelope = json.loads(sealed(state, msg))
    if damage == "bad-signature":
        sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
        sig[0] ^= 0x01
        envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
        data = json.dumps(envelope).encode()
    else:
        data = b'{"payloadType": "application/vnd.coord.message+json", "payload": "!!", "signatures": []}'
    start = await bus.last_seq(AUDIT_STREAM) + 1
    await bus.publish(accepted_subject(1, "NSATU", "status.update", msg["id"]), data, msg_id=msg["id"])

    def integrity(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in recs if r["event"] == "withheld" and r.get("reason") == "integrity"]

    recs = await wait_audit(bus, start, lambda rs: len(integrity(rs)) >= 3)
    assert sorted(r["actor"] for r in integrity(recs)) == sorted(ORGS)
    assert not [r for r in recs if r["event"] == "released" and r.get("message_id") == msg["id"]]
    await asyncio.sleep(0.5)  # a late delivery would show up here
    for org in ORGS:
        assert received(system.stubs[org], msg["id"]) == []
