"""Adapters end to end: what they refuse, how they ride out a native outage, redelivery and poison.

Deliveries published straight onto an organisation's delivery subject (bypassing the dispatcher)
must still be verified: both signatures and the access decision. Refusals land in COORD_DEAD with
a `Coord-Reason` header and an audit `dead-lettered` record; the native system never sees them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.formats import NativeMessage, codec_for
from adapters.runtime import Adapter
from adapters.stub import StubNativeSystem
from broker.app.options import AdapterOptions, GatewayOptions, SystemOptions
from broker.app.system import System
from broker.audit.reader import read_log, split_lines
from broker.client import GatewayClient
from broker.dispatch.dispatcher import countersign
from broker.identity.keys import load_signing_key
from broker.identity.state import StatePaths
from broker.identity.tls import client_context
from broker.nats.bus import Bus
from broker.nats.names import AUDIT_STREAM, DEAD_STREAM, DELIVERY_STREAM, HDR_DIGEST
from schemas.message import ENVELOPE_DECODER
from tests.conftest import ClientFactory
from tests.support.messages import STATUS_BODY, message, sealed
from tests.support.waiting import eventually

NR_ALL = {
    "policy": "NATO",
    "classification": "RESTRICTED",
    "releasable_to": ["EUMAM", "NSATU", "UDCG"],
    "caveats": [],
}
NR_EN = {"policy": "NATO", "classification": "RESTRICTED", "releasable_to": ["EUMAM", "NSATU"], "caveats": []}
NR_NSATU = {"policy": "NATO", "classification": "RESTRICTED", "releasable_to": ["NSATU"], "caveats": []}


# ------------------------------------------------------------------------------------------ helpers


def received(stub: StubNativeSystem, msg_id: str) -> list[NativeMessage]:
    codec = codec_for(stub.name)
    return [n for doc in list(stub.received) for n in codec.decode(doc.body) if n.ref == msg_id]


def received_refs(stub: StubNativeSystem) -> list[str | None]:
    codec = codec_for(stub.name)
    return [n.ref for doc in list(stub.received) for n in codec.decode(doc.body)]


async def audit_records(bus: Bus, start_seq: int = 1) -> list[dict[str, Any]]:
    out = []
    for _seq, data in await read_log(bus, start_seq=start_seq):
        for line in split_lines(data):
            rec = json.loads(line)
            if rec.get("type") == "record":
                out.append(rec)
    return out


async def wait_for(probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Await `probe()` until it returns something truthy; return that."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        got = await probe()
        if got:
            return got
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def dead_letters(bus: Bus, after_seq: int) -> list[tuple[str, bytes, dict[str, str]]]:
    last = await bus.last_seq(DEAD_STREAM)
    out = []
    for seq in range(after_seq + 1, last + 1):
        s = await bus.get(DEAD_STREAM, seq)
        out.append((s.subject, s.data, dict(s.headers)))
    return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def digest(env: bytes) -> str:
    return hashlib.sha256(env).hexdigest()


def with_signatures(env: bytes, sigs: list[dict[str, str]], payload: bytes | None = None) -> bytes:
    doc = json.loads(env)
    doc["signatures"] = sigs
    if payload is not None:
        doc["payload"] = b64(payload)
    return json.dumps(doc, separators=(",", ":")).encode()


def broker_countersigned(state: StatePaths, env: bytes) -> bytes:
    keyid, key = load_signing_key(state, "broker")
    e = ENVELOPE_DECODER.decode(env)
    return countersign(e, base64.b64decode(e.payload), keyid, key)


# ----------------------------------------------------------------------- forged deliveries


async def test_adapter_refuses_forged_deliveries_published_on_its_subject(
    system: System, state: StatePaths, bus: Bus, client_for: ClientFactory
) -> None:
    stub = system.stubs["NSATU"]
    broker_keyid, _ = load_signing_key(state, "broker")
    intruder = Ed25519PrivateKey.generate()

    def msg(**kw: Any) -> dict[str, Any]:
        return message(label=NR_EN, **kw)

    cases: dict[str, tuple[str, bytes]] = {}
    # 1. only the originator's signature: never released through the broker
    m = msg()
    cases[m["id"]] = ("countersignature", sealed(state, m))
    # 2. a countersignature under the broker's key id, made with another key
    m = msg()
    env = sealed(state, m)
    e = ENVELOPE_DECODER.decode(env)
    forged = countersign(e, base64.b64decode(e.payload), broker_keyid, intruder)
    cases[m["id"]] = ("countersignature", forged)
    # 3. the originator's signature copied twice (no broker signature at all)
    m = msg()
    env = sealed(state, m)
    orig = json.loads(env)["signatures"][0]
    cases[m["id"]] = (
        "countersignature",
        with_signatures(env, [orig, {"keyid": broker_keyid, "sig": orig["sig"]}]),
    )
    # 4. the payload altered after the originator signed, then countersigned by the real broker key
    m = msg()
    env = sealed(state, m)
    tampered = dict(m, body={**STATUS_BODY, "state": "RED"})
    tampered_env = with_signatures(env, json.loads(env)["signatures"], json.dumps(tampered).encode())
    cases[m["id"]] = ("originator-signature", broker_countersigned(state, tampered_env))
    # 5. a key of another organisation's sender claiming to speak for NSATU
    m = message(sender="eumam-liaison", originator="NSATU", label=NR_EN)
    cases[m["id"]] = ("originator-signature", broker_countersigned(state, sealed(state, m)))
    # 6. both signatures genuine, but the label is not releasable to NSATU (access decision re-applied)
    m = message(sender="eumam-liaison", originator="EUMAM", label={**NR_EN, "releasable_to": ["EUMAM"]})
    cases[m["id"]] = ("releasability", broker_countersigned(state, sealed(state, m)))

    dead_before = await bus.last_seq(DEAD_STREAM)
    audit_start = await bus.last_seq(AUDIT_STREAM) + 1
    for _id, (_reason, env) in cases.items():
        await bus.publish(
            "coord.deliver.NSATU.1.status.update",
            env,
            msg_id=f"forged-{uuid.uuid4()}",
            headers={HDR_DIGEST: digest(env)},
        )

    async def all_dead() -> list[tuple[str, bytes, dict[str, str]]] | None:
        dl = await dead_letters(bus, dead_before)
        mine = [d for d in dl if any(d[1] == env for _r, env in cases.values())]
        return mine if len(mine) == len(cases) else None

    dead = await wait_for(all_dead)
    by_data = {data: (subject, headers) for subject, data, headers in dead}
    for msg_id, (reason, env) in cases.items():
        subject, headers = by_data[env]
        assert subject == "coord.dead.NSATU"
        assert headers.get("Coord-Reason") == reason, (msg_id, headers)
        assert headers.get("Coord-Organisation") == "NSATU"

    recs = await wait_for(lambda: _dead_audit(bus, audit_start, {digest(env) for _r, env in cases.values()}))
    for reason, env in cases.values():
        assert recs[digest(env)] == reason

    # the adapter goes on delivering genuine messages, and never handed a forged one over
    good = await (await client_for("nsatu-liaison")).post(sealed(state, message(label=NR_EN)))
    assert good.status == 202
    await eventually(lambda: len(received(stub, good.body["id"])) == 1, timeout=20)
    for msg_id in cases:
        assert received(stub, msg_id) == []


async def _dead_audit(bus: Bus, start: int, digests: set[str]) -> dict[str, str] | None:
    recs = {
        r["envelope_sha256"]: r["reason"]
        for r in await audit_records(bus, start)
        if r["event"] == "dead-lettered" and r["actor"] == "NSATU" and r["envelope_sha256"] in digests
    }
    return recs if set(recs) == digests else None


# ------------------------------------------------------------------------------ native outage


async def test_native_system_down_then_back_receives_everything_once_in_order(
    system: System, state: StatePaths, client_for: ClientFactory
) -> None:
    stub = system.stubs["EUMAM"]
    nsatu, eumam = await client_for("nsatu-liaison"), await client_for("eumam-liaison")
    retries_before = system.adapters["EUMAM"].stats.native_retries
    sent: dict[str, list[str]] = {"NSATU": [], "EUMAM": []}
    stub.set_down(True)
    try:
        for i in range(4):
            for org, gw, sender in (("NSATU", nsatu, "nsatu-liaison"), ("EUMAM", eumam, "eumam-liaison")):
                body = {**STATUS_BODY, "summary": f"outage message {i} from {org}"}
                env = sealed(state, message(sender=sender, originator=org, label=NR_EN, body=body))
                r = await gw.post(env)
                assert r.status == 202, r.body
                sent[org].append(r.body["id"])
        # the adapter is retrying against the down system meanwhile
        await eventually(
            lambda: system.adapters["EUMAM"].stats.native_retries >= retries_before + 3, timeout=20
        )
        await asyncio.sleep(1.0)
    finally:
        stub.set_down(False)
    ids = set(sent["NSATU"]) | set(sent["EUMAM"])
    await eventually(lambda: ids <= set(received_refs(stub)), timeout=30)
    refs = received_refs(stub)
    for msg_id in ids:
        assert refs.count(msg_id) == 1, f"{msg_id} received {refs.count(msg_id)} times"
    for org, order in sent.items():
        assert [r for r in refs if r in order] == order, f"{org}'s messages out of order"


# ------------------------------------------------------------------------------ redelivery


async def test_a_repeated_delivery_of_the_same_message_is_not_handed_over_twice(
    system: System, state: StatePaths, client_for: ClientFactory, bus: Bus
) -> None:
    """The same release stored twice on the delivery stream (e.g. republished after the duplicate window)
    reaches JetStream consumers twice; the adapter's delivered-ids bucket stops the second one."""
    stub = system.stubs["NSATU"]
    adapter = system.adapters["NSATU"]
    before = await bus.last_seq(DELIVERY_STREAM)
    r = await (await client_for("nsatu-liaison")).post(sealed(state, message(label=NR_NSATU)))
    assert r.status == 202
    msg_id = r.body["id"]
    await eventually(lambda: len(received(stub, msg_id)) == 1, timeout=20)
    last = await bus.last_seq(DELIVERY_STREAM)
    stored = [
        s
        for s in [await bus.get(DELIVERY_STREAM, q) for q in range(before + 1, last + 1)]
        if s.headers.get("Nats-Msg-Id") == f"{msg_id}:NSATU"
    ]
    assert len(stored) == 1
    skipped = adapter.stats.duplicates_skipped
    await bus.publish(
        stored[0].subject,
        stored[0].data,
        msg_id=f"{msg_id}:NSATU:again",
        headers={HDR_DIGEST: stored[0].headers[HDR_DIGEST]},
    )
    await eventually(lambda: adapter.stats.duplicates_skipped == skipped + 1, timeout=20)
    # a later message is delivered after it: the duplicate was consumed, not stuck
    r2 = await (await client_for("nsatu-liaison")).post(sealed(state, message(label=NR_NSATU)))
    await eventually(lambda: len(received(stub, r2.body["id"])) == 1, timeout=20)
    assert len(received(stub, msg_id)) == 1


@contextlib.asynccontextmanager
async def own_system(tmp: Path, ack_wait_s: float) -> AsyncIterator[System]:
    opts = SystemOptions(
        state=tmp / "state",
        gateway=GatewayOptions(port=0),
        adapters=AdapterOptions(ack_wait_s=ack_wait_s),
        checkpoint_interval_s=0.5,
    )
    async with System(opts) as sys_:
        yield sys_


async def test_ack_timeout_redelivery_never_reaches_the_native_system_twice(tmp_path: Path) -> None:
    """A slow native system (3 s per document) and an ack wait of 1 s: JetStream considers the delivery
    lost while the adapter is still handing it over, and would redeliver it to any consumer of the
    durable - here a second instance of the NSATU adapter (as during a rolling restart)."""
    async with own_system(tmp_path, ack_wait_s=1.0) as sys_:
        paths = sys_.paths
        stub = sys_.stubs["NSATU"]
        stub.delay_s = 3.0
        async with contextlib.AsyncExitStack() as st:
            b = await st.enter_async_context(Bus(sys_.bus_settings("coord-adapter-nsatu-2")))
            second = await st.enter_async_context(
                Adapter(
                    org="NSATU",
                    codec=codec_for("nsatu"),
                    native_url=stub.url,
                    bus=b,
                    policy=sys_.holder,
                    audit=sys_.audit,
                    identity=None,
                    gateway=None,
                    state_dir=tmp_path / "second",
                    ack_wait_s=1.0,
                )
            )
            ctx = client_context(paths.ca_crt, paths.tls_crt("nsatu-liaison"), paths.tls_key("nsatu-liaison"))
            gw = await st.enter_async_context(GatewayClient(sys_.gateway_url, ctx))
            ids = []
            for _ in range(2):
                r = await gw.post(sealed(paths, message(label=NR_NSATU)))
                assert r.status == 202, r.body
                ids.append(r.body["id"])
            await eventually(lambda: set(ids) <= set(received_refs(stub)), timeout=30)
            await asyncio.sleep(4.0)  # time for any redelivery to come round and reach the stub
            refs = received_refs(stub)
            assert [refs.count(i) for i in ids] == [1, 1], refs
            assert sys_.adapters["NSATU"].stats.delivered + second.stats.delivered == 2
            assert refs == ids  # and in order


async def test_restarted_system_does_not_hand_over_what_was_delivered(tmp_path: Path) -> None:
    """Deliver, stop the whole system, start it again on the same state folder and JetStream store: the
    (fresh) native stub receives only what is new."""
    ids = []
    for _run in range(2):
        async with own_system(tmp_path, ack_wait_s=1.0) as sys_:
            paths = sys_.paths
            ctx = client_context(paths.ca_crt, paths.tls_crt("nsatu-liaison"), paths.tls_key("nsatu-liaison"))
            async with GatewayClient(sys_.gateway_url, ctx) as gw:
                r = await gw.post(sealed(paths, message(label=NR_NSATU)))
                assert r.status == 202, r.body
                ids.append(r.body["id"])
                await eventually(lambda s=sys_: ids[-1] in received_refs(s.stubs["NSATU"]), timeout=20)
                await asyncio.sleep(1.5)  # longer than the ack wait: an unacked delivery would be back
                assert received_refs(sys_.stubs["NSATU"]) == [ids[-1]]


# ------------------------------------------------------------------------------------ poison


async def test_poison_document_is_dead_lettered_and_the_next_message_gets_through(
    system: System, state: StatePaths, client_for: ClientFactory, bus: Bus
) -> None:
    stub = system.stubs["NSATU"]
    gw = await client_for("nsatu-liaison")
    dead_before = await bus.last_seq(DEAD_STREAM)
    audit_start = await bus.last_seq(AUDIT_STREAM) + 1
    dead_count = system.adapters["NSATU"].stats.dead_lettered
    poison = message(
        label=NR_NSATU, body={**STATUS_BODY, "summary": "This one is POISON for the native system."}
    )
    r = await gw.post(sealed(state, poison))
    assert r.status == 202
    after = message(label=NR_NSATU)
    r2 = await gw.post(sealed(state, after))
    assert r2.status == 202
    await eventually(lambda: len(received(stub, after["id"])) == 1, timeout=20)
    assert received(stub, poison["id"]) == []
    assert system.adapters["NSATU"].stats.dead_lettered == dead_count + 1

    mine = []
    for subject, data, headers in await dead_letters(bus, dead_before):
        env = json.loads(data)
        payload = json.loads(base64.b64decode(env["payload"]))
        if payload["id"] == poison["id"]:
            mine.append((subject, headers, env))
    assert len(mine) == 1
    subject, headers, env = mine[0]
    assert subject == "coord.dead.NSATU"
    assert headers["Coord-Reason"] == "native-rejected-422"
    assert len(env["signatures"]) == 2  # the countersigned release, kept as released

    async def audited() -> list[dict[str, Any]]:
        return [
            rec
            for rec in await audit_records(bus, audit_start)
            if rec["message_id"] == poison["id"] and rec["event"] in ("dead-lettered", "delivered")
        ]

    recs = await wait_for(audited)
    assert [(x["event"], x["actor"], x["reason"]) for x in recs] == [
        ("dead-lettered", "NSATU", "native-rejected-422")
    ]
