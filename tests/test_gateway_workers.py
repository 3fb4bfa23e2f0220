"""The gateway as two worker processes on one port (`broker up --gateway-workers 2`, broker/workers.py).

Each test reaches a chosen worker by opening keep-alive connections until `/healthz` on that
connection names it, then sends on the same connection. What ICD §6 makes one across the system must
stay one whichever process a request lands on: a resend is a duplicate, other bytes under the same id
a 409, a sender's rate limit one bucket; every rejection is audited once, by the one writer; the
operators' checkpoint and proofs are the writer's.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import signal
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from broker.app.options import AdapterOptions, GatewayOptions, SystemOptions
from broker.app.system import System
from broker.audit.merkle import verify_inclusion
from broker.audit.note import parse_checkpoint
from broker.audit.reader import read_log, split_lines
from broker.client import seal_message
from broker.identity.keys import load_signing_key
from broker.identity.state import StatePaths
from broker.identity.tls import client_context
from broker.nats.bus import Bus, BusSettings
from broker.nats.names import ACCEPTED_STREAM
from broker.policy.admin import new_operator, new_sender
from broker.policy.defaults import ensure_defaults
from broker.policy.loader import load_policy
from broker.policy.model import Policy
from broker.policy.render import write_policy
from tests.support.messages import message
from tests.support.waiting import eventually

ENC = msgspec.json.Encoder()
SLOW = "slow-sender"  # 2 messages/s, burst 6
OPS = "ops-officer"


def _limit(p: Policy) -> Policy:
    s = dataclasses.replace(p.senders[SLOW], rate_per_s=2.0)
    return dataclasses.replace(p, rate_burst=6, senders={**p.senders, SLOW: s})


@pytest_asyncio.fixture(scope="module")
async def workers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    paths = StatePaths(tmp_path_factory.mktemp("workers-state"))
    ensure_defaults(paths)
    new_sender(paths, SLOW, "NSATU", ["status.update"])
    new_operator(paths, OPS, "NSATU", "NATO:SECRET")
    write_policy(paths.policy, _limit(load_policy(paths.policy)))
    opts = SystemOptions(
        state=paths.root,
        gateway=GatewayOptions(port=0, workers=2),
        adapters=AdapterOptions(ack_wait_s=5.0),
        checkpoint_interval_s=0.3,
    )
    async with System(opts) as sys_:
        assert sys_.workers is not None and len(sys_.workers.pids) == 2
        yield sys_


def _ctx(sys_: System, ident: str) -> ssl.SSLContext:
    return client_context(sys_.paths.ca_crt, sys_.paths.tls_crt(ident), sys_.paths.tls_key(ident))


class Conn:
    """One keep-alive connection to one worker."""

    def __init__(self, session: aiohttp.ClientSession, url: str, worker: int) -> None:
        self.session, self.url, self.worker = session, url, worker

    async def post(self, body: bytes, path: str = "/v1/messages") -> tuple[int, dict[str, Any], Any]:
        ctype = "application/x-ndjson" if path.endswith("batch") else "application/json"
        async with self.session.post(self.url + path, data=body, headers={"Content-Type": ctype}) as r:
            return r.status, dict(r.headers), await r.json(content_type=None)

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.url + path) as r:
            return r.status, await r.json(content_type=None)


@pytest_asyncio.fixture
async def conns() -> AsyncIterator[list[aiohttp.ClientSession]]:
    opened: list[aiohttp.ClientSession] = []
    yield opened
    for s in opened:
        await s.close()


async def connect(sys_: System, ident: str, worker: int, opened: list[aiohttp.ClientSession]) -> Conn:
    """A connection that lands on `worker` (the kernel picks per connection: try until it does)."""
    for _ in range(200):
        s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_ctx(sys_, ident), limit=1))
        try:
            async with s.get(sys_.gateway_url + "/healthz") as r:
                doc = await r.json()
        except aiohttp.ClientConnectionError:
            # a connection queued on a worker that was just killed is reset: a client tries again
            await s.close()
            await asyncio.sleep(0.05)
            continue
        if doc.get("worker") == worker:
            opened.append(s)
            return Conn(s, sys_.gateway_url, worker)
        await s.close()
    raise AssertionError(f"no connection reached worker {worker} in 200 tries")


def sealed(sys_: System, msg: dict[str, Any]) -> bytes:
    keyid, key = load_signing_key(sys_.paths, msg["sender"])
    return seal_message(msg, keyid, key)


async def test_both_workers_take_connections(workers: System, conns: list[aiohttp.ClientSession]) -> None:
    for w in (0, 1):
        c = await connect(workers, "nsatu-liaison", w, conns)
        status, doc = await c.get("/healthz")
        assert (status, doc["worker"]) == (200, w)
        status, doc = await c.get("/readyz")
        assert status == 200 and doc["ready"] is True


async def test_resend_is_a_duplicate_and_other_bytes_a_conflict_on_either_worker(
    workers: System, conns: list[aiohttp.ClientSession]
) -> None:
    a = await connect(workers, "nsatu-liaison", 0, conns)
    b = await connect(workers, "nsatu-liaison", 1, conns)
    msg = message()
    env = sealed(workers, msg)
    status, _, doc = await a.post(env)
    assert status == 202, doc
    seq = doc["seq"]
    status, _, doc = await b.post(env)
    assert (status, doc) == (200, {"id": msg["id"], "seq": seq, "duplicate": True})
    other = sealed(workers, {**msg, "body": {**msg["body"], "summary": "Changed."}})
    async with Bus(BusSettings(servers=(workers.nats_url,), name="tests-q"), ensure_streams=False) as bus:
        await bus.wait_connected(10)
        before = await bus.last_seq(ACCEPTED_STREAM)
        for conn in (b, a):
            status, _, doc = await conn.post(other)
            assert status == 409 and doc["type"] == "urn:coord:problem:id-conflict", doc
        assert await bus.last_seq(ACCEPTED_STREAM) == before


async def test_rate_limit_is_one_bucket_across_workers(
    workers: System, conns: list[aiohttp.ClientSession]
) -> None:
    """Burst 6 at 2/s: alternating between the workers, 6 pass at once, then both refuse. Two
    per-process buckets would have let 12 through."""
    a = await connect(workers, SLOW, 0, conns)
    b = await connect(workers, SLOW, 1, conns)
    await asyncio.sleep(3.5)  # the bucket is full again, whatever earlier tests took
    results: list[tuple[int, int]] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(12):
        conn = (a, b)[i % 2]
        status, headers, _ = await conn.post(sealed(workers, message(sender=SLOW)))
        results.append((conn.worker, status))
        if status == 429:
            assert 1 <= int(headers["Retry-After"]) <= 3
    elapsed = loop.time() - t0
    granted = sum(1 for _, st in results if st == 202)
    assert all(st in (202, 429) for _, st in results), results
    # one bucket: the burst plus what refilled while the requests ran, never twice the burst
    assert 6 <= granted <= 6 + int(2.0 * elapsed) + 1, (granted, elapsed, results)
    assert {w for w, st in results if st == 429} == {0, 1}, results


async def audit_records(sys_: System) -> list[dict[str, Any]]:
    async with Bus(BusSettings(servers=(sys_.nats_url,), name="tests-audit"), ensure_streams=False) as bus:
        await bus.wait_connected(10)
        log = await read_log(bus, instance=sys_.holder.current.name)
    lines = [json.loads(line) for _, data in log for line in split_lines(data)]
    return [r for r in lines if r.get("type") == "record"]


async def test_rejections_on_a_worker_are_audited_once(
    workers: System, conns: list[aiohttp.ClientSession]
) -> None:
    c = await connect(workers, "nsatu-liaison", 1, conns)
    status, _, doc = await c.post(b"{not json")
    assert status == 400 and doc["type"] == "urn:coord:problem:malformed"

    def mine(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in recs if r["event"] == "rejected" and r.get("reason") == "malformed"]

    for _ in range(100):
        if mine(await audit_records(workers)):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # an inbox redelivery would show as a second record by now
    recs = mine(await audit_records(workers))
    assert len(recs) == 1, recs
    assert recs[0]["actor"] == "nsatu-liaison"


async def test_operators_checkpoint_and_proof_on_either_worker_are_the_writers(
    workers: System, conns: list[aiohttp.ClientSession]
) -> None:
    ops = OPS
    poster = await connect(workers, "nsatu-liaison", 0, conns)
    for _ in range(3):  # records of its own, whatever ran before (accepted, released, delivered)
        status, _, doc = await poster.post(sealed(workers, message()))
        assert status == 202, doc
    await eventually(lambda: workers.writer.checkpoint is not None and workers.writer.checkpoint.size > 2)
    for w in (0, 1):
        c = await connect(workers, ops, w, conns)
        status, cp = await c.get("/v1/audit/checkpoint")
        assert status == 200, cp
        checkpoint, _ = parse_checkpoint(cp["note"])
        assert checkpoint.size == cp["size"] and checkpoint.size >= 2
        for index in (0, cp["size"] // 2, cp["size"] - 1):
            status, pr = await c.get(f"/v1/audit/proof?index={index}")
            assert status == 200, pr
            note, _ = parse_checkpoint(pr["checkpoint"])
            verify_inclusion(
                base64.b64decode(pr["leaf_hash"]),
                index,
                pr["size"],
                [base64.b64decode(h) for h in pr["proof"]],
                note.root,
            )
            assert base64.b64decode(pr["leaf_hash"]) == workers.writer.leaf(index)
        status, pr = await c.get(f"/v1/audit/proof?index={cp['size'] + 10_000_000}")
        assert status == 404
        # a non-operator is refused on every worker
        plain = await connect(workers, "nsatu-liaison", w, conns)
        status, doc = await plain.get("/v1/audit/checkpoint")
        assert status == 403, doc


async def test_a_killed_worker_is_restarted_and_the_port_keeps_answering(
    workers: System, conns: list[aiohttp.ClientSession]
) -> None:
    assert workers.workers is not None
    victim = workers.workers.pids[1]
    restarts = workers.workers.restarts
    os.kill(victim, signal.SIGKILL)
    # meanwhile the other worker takes every new connection
    c = await connect(workers, "nsatu-liaison", 0, conns)
    status, _, doc = await c.post(sealed(workers, message()))
    assert status == 202, doc
    await eventually(lambda: workers.workers is not None and workers.workers.restarts > restarts, timeout=30)
    assert victim not in workers.workers.pids
    c1 = await connect(workers, "nsatu-liaison", 1, conns)
    status, _, doc = await c1.post(sealed(workers, message()))
    assert status == 202, doc


async def test_a_policy_change_applies_in_every_worker(
    workers: System, conns: list[aiohttp.ClientSession]
) -> None:
    """Each worker follows the policy file itself: withdrawing a right is refused by both, and
    restoring it is accepted by both (no worker keeps a stale policy)."""
    a = await connect(workers, "nsatu-liaison", 0, conns)
    b = await connect(workers, "nsatu-liaison", 1, conns)
    ident = "nsatu-liaison"
    original = load_policy(workers.paths.policy)
    kinds = original.senders[ident].publishes

    def without_status(p: Policy) -> Policy:
        s = dataclasses.replace(p.senders[ident], publishes=kinds - {"status.update"})
        return dataclasses.replace(p, senders={**p.senders, ident: s})

    async def statuses() -> tuple[int, int]:
        out = []
        for conn in (a, b):
            status, _, _ = await conn.post(sealed(workers, message()))
            out.append(status)
        return out[0], out[1]

    write_policy(workers.paths.policy, without_status(original))
    try:
        for _ in range(100):  # each worker polls the file: both refuse within a few seconds
            if await statuses() == (403, 403):
                break
            await asyncio.sleep(0.1)
        status, _, doc = await b.post(sealed(workers, message()))
        assert status == 403 and doc["type"] == "urn:coord:problem:not-permitted", doc
        status, _, doc = await a.post(sealed(workers, message()))
        assert status == 403 and doc["type"] == "urn:coord:problem:not-permitted", doc
    finally:
        write_policy(workers.paths.policy, original)
    for _ in range(100):
        if await statuses() == (202, 202):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("a worker kept the withdrawn right's policy")


async def test_metrics_on_either_worker_cover_every_process(
    workers: System, conns: list[aiohttp.ClientSession]
) -> None:
    """A scrape lands on one worker, and the core serves no HTTP: /metrics still shows every
    process, labelled, with what another worker just accepted."""
    b = await connect(workers, "nsatu-liaison", 1, conns)
    status, _, doc = await b.post(sealed(workers, message()))
    assert status == 202, doc
    a = await connect(workers, "nsatu-liaison", 0, conns)
    text = ""
    for _ in range(50):
        async with a.session.get(a.url + "/metrics") as r:
            assert r.status == 200
            text = await r.text()
        if 'coord_messages_accepted_total{process="gateway-1"}' in text:
            break
        await asyncio.sleep(0.1)
    assert 'coord_messages_accepted_total{process="gateway-1"}' in text, text[:2000]
    assert 'coord_audit_tree_size{process="core"}' in text
    assert 'process="gateway-0"' in text
    types = [line for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))


async def test_console_trail_and_readyz_details_on_either_worker(
    workers: System, conns: list[aiohttp.ClientSession]
) -> None:
    """The operators' console is on every worker: its page, a trail read from the one log, and a
    /readyz that names every process reporting metrics and sees the core's adapters' native systems."""
    b = await connect(workers, "nsatu-liaison", 1, conns)
    msg = message()
    status, _, doc = await b.post(sealed(workers, msg))
    assert status == 202, doc
    for w in (0, 1):
        op = await connect(workers, OPS, w, conns)
        async with op.session.get(op.url + "/console") as r:
            assert r.status == 200 and "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        trail: Any = None
        ready: Any = None
        for _ in range(100):
            _, trail = await op.get(f"/v1/console/trail?id={msg['id']}")
            status, ready = await op.get("/readyz")
            natives = [v["reachable"] for v in ready["native"].values()]
            processes = set(ready["gateway"]["processes"])
            if trail["complete"] and all(natives) and processes >= {"core", "gateway-0", "gateway-1"}:
                break
            await asyncio.sleep(0.1)
        assert status == 200 and ready["gateway"]["worker"] == w, ready
        assert trail["complete"], trail
        assert all(v["reachable"] for v in ready["native"].values()), ready["native"]
        assert set(ready["gateway"]["processes"]) >= {"core", "gateway-0", "gateway-1"}, ready["gateway"]
        assert trail["content"] == msg["body"]
