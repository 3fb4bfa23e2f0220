"""The audit log of a running system: restart continuity, operators' endpoints, the tail's
redaction, and that a rejected message's bytes are nowhere."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.app.options import GatewayOptions, NatsOptions, SystemOptions
from broker.app.system import System
from broker.audit.merkle import leaf_hash, verify_inclusion
from broker.audit.note import verify_checkpoint
from broker.audit.reader import read_log, split_lines
from broker.audit.verify import verify_export
from broker.audit.writer import AuditWriter
from broker.client import GatewayClient
from broker.errors import RecordEdited
from broker.identity.keys import load_signing_key
from broker.identity.state import StatePaths
from broker.identity.tls import client_context
from broker.metrics.registry import Registry
from broker.nats.bus import Bus, BusSettings
from broker.nats.names import AUDIT_STREAM
from broker.nats.server import NatsServer
from broker.policy.defaults import ensure_defaults
from broker.policy.loader import load_policy
from tests.conftest import ClientFactory
from tests.support.messages import message, sealed
from tests.support.waiting import eventually


def _trusted(state: StatePaths) -> tuple[dict[str, Ed25519PublicKey], str]:
    policy = load_policy(state.policy)
    keys = {k: Ed25519PublicKey.from_public_bytes(v.public_key) for k, v in policy.broker_keys.items()}
    return keys, f"coord-broker/{policy.name}"


async def _export(bus: Bus) -> list[bytes]:
    return [line for _, data in await read_log(bus) for line in split_lines(data)]


async def _sse(client: GatewayClient, query: str) -> tuple[int, list[dict[str, Any]], bytes]:
    reply = await client.request("GET", "/v1/tail?" + query)
    raw = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
    events = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]
    return reply.status, events, raw


async def test_restart_continues_the_tree_and_verifies(tmp_path: Path) -> None:
    state = StatePaths(tmp_path / "state")
    ensure_defaults(state)
    async with NatsServer(tmp_path / "nats") as srv:
        opts = SystemOptions(
            state=state.root,
            parts=frozenset({"core", "dispatcher"}),
            nats=NatsOptions(url=srv.url),
            gateway=GatewayOptions(port=0),
            checkpoint_interval_s=0.2,
        )
        sizes = []
        for round_ in range(2):
            async with System(opts) as system:
                ctx = client_context(
                    state.ca_crt, state.tls_crt("eumam-liaison"), state.tls_key("eumam-liaison")
                )
                async with GatewayClient(system.gateway_url, ctx) as gw:
                    for _ in range(5):
                        msg = message(sender="eumam-liaison", originator="EUMAM")
                        assert (await gw.post(sealed(state, msg))).status == 202
                await eventually(lambda s=system: s.dispatcher.processed >= 5)
                if round_ == 1:
                    assert system.writer.tree.size > sizes[0]  # continued, not restarted at 0
                await eventually(
                    lambda s=system: (
                        s.writer.checkpoint is not None and s.writer.checkpoint.size == s.writer.tree.size
                    )
                )
                sizes.append(system.writer.tree.size)
        async with Bus(BusSettings(servers=(srv.url,)), ensure_streams=False) as bus:
            await bus.wait_connected(10)
            lines = await _export(bus)
    trusted, origin = _trusted(state)
    report = verify_export(lines, trusted, origin)
    assert report.records == sizes[-1]
    assert report.verified_size == sizes[-1]
    indices = [json.loads(ln)["index"] for ln in lines if ln.startswith(b'{"type":"record"')]
    assert indices == list(range(sizes[-1]))
    # the same export with one field edited is refused and named
    i = next(n for n, ln in enumerate(lines) if b'"event":"accepted"' in ln)
    edited = [*lines[:i], lines[i].replace(b'"event":"accepted"', b'"event":"rejected"'), *lines[i + 1 :]]
    try:
        verify_export(edited, trusted, origin)
    except RecordEdited:
        pass
    else:
        raise AssertionError("an edited record verified")


async def test_full_queue_slows_producers_and_drops_nothing(tmp_path: Path) -> None:
    state = StatePaths(tmp_path / "state")
    ensure_defaults(state)
    keyid, key = load_signing_key(state, "broker")
    from broker.audit.records import AuditEvent

    async with NatsServer(tmp_path / "nats") as srv, Bus(BusSettings(servers=(srv.url,), name="q")) as bus:
        await bus.wait_connected(10)
        async with AuditWriter(
            bus, instance="queue-test", key_name=keyid, signing_key=key, metrics=Registry(), queue_max=4
        ) as w:
            await asyncio.wait_for(w.ready.wait(), 30)
            start = w.tree.size
            futs = await asyncio.gather(
                *(
                    w.record(
                        AuditEvent(event="tail-opened", time="2026-11-26T00:00:00.000000Z", actor=f"op-{i}")
                    )
                    for i in range(300)
                )
            )
            indices = await asyncio.gather(*futs)
    assert sorted(indices) == list(range(start, start + 300))


async def test_checkpoint_and_proof_for_operators_only(
    system: System, state: StatePaths, client_for: ClientFactory
) -> None:
    gw = await client_for("nsatu-liaison")
    assert (await gw.post(sealed(state, message()))).status == 202
    await eventually(lambda: system.writer.checkpoint is not None and system.writer.checkpoint.size > 0)
    op = await client_for("duty-officer")
    cp = await op.request("GET", "/v1/audit/checkpoint")
    assert cp.status == 200
    trusted, origin = _trusted(state)
    checkpoint = verify_checkpoint(cp.body["note"], trusted, origin)
    proof = await op.request("GET", f"/v1/audit/proof?index={checkpoint.size - 1}")
    assert proof.status == 200
    p = proof.body
    cp2 = verify_checkpoint(p["checkpoint"], trusted, origin)
    verify_inclusion(
        base64.b64decode(p["leaf_hash"]),
        p["index"],
        cp2.size,
        [base64.b64decode(h) for h in p["proof"]],
        cp2.root,
    )
    assert (await op.request("GET", "/v1/audit/proof?index=999999999")).status == 404
    for path in ("/v1/audit/checkpoint", "/v1/audit/proof?index=0", "/v1/tail"):
        r = await gw.request("GET", path)
        assert r.status == 403, path
        assert r.body["type"] == "urn:coord:problem:forbidden"


async def test_proof_leaf_is_the_stored_record(system: System, bus: Bus) -> None:
    await eventually(lambda: system.writer.checkpoint is not None and system.writer.checkpoint.size > 0)
    lines = [ln for ln in await _export(bus) if ln.startswith(b'{"type":"record"')]
    cp = system.writer.checkpoint
    assert cp is not None
    index = cp.size // 2
    _, _, path = system.writer.proof(index)
    verify_inclusion(leaf_hash(lines[index]), index, cp.size, path, cp.root)


async def test_tail_redacts_above_clearance_and_shows_to_cleared(
    system: System, state: StatePaths, client_for: ClientFactory
) -> None:
    marker = "CONFIDENTIAL-BODY-MARKER-7f3a"
    label = {
        "policy": "NATO",
        "classification": "CONFIDENTIAL",
        "releasable_to": ["EUMAM", "NSATU", "UDCG"],
        "caveats": [],
    }
    msg = message(label=label, body={"topic": marker, "state": "AMBER", "summary": marker})
    gw = await client_for("nsatu-liaison")
    start = system.writer.tree.size
    assert (await gw.post(sealed(state, msg))).status == 202
    await eventually(lambda: system.dispatcher.processed > 0 and system.writer.tree.size >= start + 4)

    low = await client_for("low-officer")  # EUMAM, EU:RESTRICTED
    status, events, raw = await _sse(low, f"since={start}")
    assert status == 200
    mine = [e for e in events if e["message_id"] == msg["id"]]
    assert {e["event"] for e in mine} >= {"accepted", "released"}
    assert all(e["marking"].startswith("NATO CONFIDENTIAL") and e.get("redacted") is True for e in mine)
    assert all("content" not in e for e in mine)
    assert marker.encode() not in raw

    high = await client_for("secret-officer")  # NSATU, NATO:SECRET
    status, events, raw = await _sse(high, f"since={start}&kind=status.update&originator=NSATU")
    assert status == 200
    shown = [e for e in events if e["message_id"] == msg["id"] and e["event"] == "accepted"]
    assert shown and shown[0]["content"]["topic"] == marker
    assert all(e["kind"] == "status.update" and e["originator"] == "NSATU" for e in events if e["kind"])
    assert (await high.request("GET", "/v1/tail?follow=maybe")).status == 422


async def test_rejected_body_is_nowhere(
    system: System, state: StatePaths, client_for: ClientFactory, nats_server: NatsServer
) -> None:
    marker = "REJECTED-BODY-MARKER-c41d"
    from adapters.formats import sample_bodies

    body = {**sample_bodies()["capability.pledge"], "coalition": marker, "pledge_ref": marker}
    msg = message(kind="capability.pledge", body=body)
    env = sealed(state, msg)  # nsatu-liaison may not publish capability.pledge: 403 not-permitted
    gw = await client_for("nsatu-liaison")
    start = system.writer.tree.size
    reply = await gw.post(env)
    assert reply.status == 403
    await eventually(lambda: system.writer.tree.size > start)
    op = await client_for("secret-officer")
    _, events, raw = await _sse(op, f"since={start}")
    assert any(
        e["event"] == "rejected" and e["message_id"] == msg["id"] and e.get("redacted") for e in events
    )
    assert marker.encode() not in raw
    payload_b64 = msgspec.json.decode(env)["payload"].encode()
    needles = [marker.encode(), payload_b64[40:80]]
    for root in (state.root, nats_server.dir):
        for f in Path(root).rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                for needle in needles:
                    assert needle not in data, f"{needle[:20]!r} found in {f}"


async def test_audit_stream_denies_delete_and_purge(bus: Bus) -> None:
    info = await bus.js.stream_info(AUDIT_STREAM)
    assert info.config.deny_delete and info.config.deny_purge
    import nats.js.errors

    for act in (lambda: bus.js.purge_stream(AUDIT_STREAM), lambda: bus.js.delete_msg(AUDIT_STREAM, 1)):
        try:
            await act()
        except nats.js.errors.Error:
            continue
        raise AssertionError("the audit stream allowed a delete or purge")


async def test_a_repeated_decision_is_recorded_once(tmp_path: Path) -> None:
    """A service that redoes a step after a crash reports the same decision again: one record."""
    from broker.audit.records import AuditEvent

    state = StatePaths(tmp_path / "state")
    ensure_defaults(state)
    keyid, key = load_signing_key(state, "broker")

    def ev(event: str, actor: str, reason: str | None = None) -> AuditEvent:
        return AuditEvent(
            event=event,
            time="2026-11-26T00:00:00.000000Z",  # type: ignore[arg-type]
            message_id="m-1",
            actor=actor,
            reason=reason,
        )

    async with NatsServer(tmp_path / "nats") as srv, Bus(BusSettings(servers=(srv.url,), name="r")) as bus:
        await bus.wait_connected(10)
        async with AuditWriter(bus, instance="rep", key_name=keyid, signing_key=key, metrics=Registry()) as w:
            await asyncio.wait_for(w.ready.wait(), 30)
            first = await (await w.record(ev("delivered", "NSATU")))
            again = await (await w.record(ev("delivered", "NSATU")))
            other = await (await w.record(ev("delivered", "EUMAM")))
            both = await asyncio.gather(
                *[await w.record(ev("withheld", "UDCG", "clearance")) for _ in range(2)]
            )
            changed = await (await w.record(ev("withheld", "UDCG", "caveats")))
            rejected = [await (await w.record(ev("rejected", "x", "stale"))) for _ in range(2)]
            assert again == first and other != first
            assert both[0] == both[1] and changed != both[0]
            assert rejected[0] != rejected[1]  # two requests refused are two events
            assert w.tree.size == 6
        # a restarted writer remembers what the log holds
        async with AuditWriter(
            bus, instance="rep", key_name=keyid, signing_key=key, metrics=Registry()
        ) as w2:
            await asyncio.wait_for(w2.ready.wait(), 30)
            assert await (await w2.record(ev("delivered", "NSATU"))) == first
            assert w2.tree.size == 6


@pytest.mark.parametrize(
    "query",
    [
        "/v1/audit/proof",
        "/v1/audit/proof?index=",
        "/v1/audit/proof?index=abc",
        "/v1/audit/proof?index=-1",
        "/v1/audit/proof?index=1.5",
        "/v1/audit/proof?index=+3",
        "/v1/audit/proof?index=%D9%A3",  # Arabic-Indic three: int() would take it
        "/v1/tail?since=%C2%B2",  # superscript two: isdigit() but not int()-able (was a 500)
        "/v1/tail?since=%D9%A3",
        "/v1/tail?since=2024-01-01",  # no offset: would be read in this host's zone
        "/v1/tail?since=2024-01-01T00:00:00",
        "/v1/tail?since=yesterday",
        "/v1/tail?follow=maybe",
    ],
)
async def test_operators_api_refuses_malformed_queries(client_for: ClientFactory, query: str) -> None:
    op = await client_for("duty-officer")
    r = await op.request("GET", query)
    assert r.status == 422, (query, r.status, r.body)
    assert r.body["type"] == "urn:coord:problem:invalid"


async def test_tail_since_accepts_an_offset_time(client_for: ClientFactory) -> None:
    op = await client_for("duty-officer")
    for since in ("2024-01-01T00:00:00Z", "2024-01-01T02:00:00%2B02:00", "0"):
        status, _, _ = await _sse(op, f"since={since}")
        assert status == 200, since
