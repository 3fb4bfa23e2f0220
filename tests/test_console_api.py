"""The console's server side, over real mutual TLS against the session's system: who may load it, the
headers on everything, the trail and the record endpoints, what /readyz adds, and the pure parts (the
trail builder, the metrics reading, `broker tail`'s rendering)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import io
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from broker.app.system import System
from broker.app.tail import Renderer
from broker.audit.lookup import AuditLogReader
from broker.audit.reader import read_log, split_lines
from broker.audit.records import AuditRecord
from broker.client import Reply
from broker.console.health import from_metrics, samples
from broker.console.trail import Trail
from broker.console.web import CSP
from broker.identity.state import StatePaths
from broker.metrics.registry import Registry
from broker.metrics.share import merge
from broker.nats.bus import Bus
from schemas.label import Label
from tests.conftest import ClientFactory
from tests.support.messages import message, sealed

STATIC = Path(__file__).resolve().parent.parent / "broker" / "console" / "static"
SECRET_NSATU = {"policy": "NATO", "classification": "SECRET", "releasable_to": ["NSATU"], "caveats": []}


async def until(
    fetch: Callable[[], Awaitable[Reply]], ok: Callable[[Reply], bool], what: str, timeout: float = 30.0
) -> Reply:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        reply = await fetch()
        if ok(reply):
            return reply
        if loop.time() > end:
            raise AssertionError(
                f"{what}: not within {timeout:g} s; last answer {reply.status} {reply.body!r}"
            )
        await asyncio.sleep(0.1)


def _hardened(headers: dict[str, str] | Any) -> None:
    assert headers["Content-Security-Policy"] == CSP
    assert "frame-ancestors 'none'" in CSP and "default-src 'self'" in CSP and "unsafe" not in CSP
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cross-Origin-Resource-Policy"] == "same-origin"


# ------------------------------------------------------------------------------------ who and what


async def test_console_is_for_operators_only_and_hardened(client_for: ClientFactory) -> None:
    op = await client_for("duty-officer")
    page = await op.request("GET", "/console")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    _hardened(page.headers)
    for asset, ctype in (("console.js", "text/javascript"), ("console.css", "text/css")):
        r = await op.request("GET", f"/console/{asset}")
        assert r.status == 200 and r.headers["Content-Type"].startswith(ctype), asset
        _hardened(r.headers)
    for bad in ("/console/index.html", "/console/..%2Fweb.py", "/console/x.js"):
        assert (await op.request("GET", bad)).status == 404, bad

    sender = await client_for("nsatu-liaison")
    for path in ("/console", "/console/console.js", "/v1/console/session", "/v1/console/record?index=0"):
        r = await sender.request("GET", path)
        assert r.status == 403, path
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert r.body["type"] == "urn:coord:problem:forbidden"
        _hardened(r.headers)
    # the tail, the audit API and /readyz carry the same headers
    for path in ("/v1/tail?follow=false&since=0&kind=none.such", "/v1/audit/checkpoint", "/readyz"):
        _hardened((await op.request("GET", path)).headers)


async def test_console_is_read_only(client_for: ClientFactory) -> None:
    op = await client_for("duty-officer")
    for path in ("/console", "/console/console.js", "/v1/console/session", "/v1/console/trail"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            r = await op.request(method, path, data=b"{}", content_type="application/json")
            assert r.status == 405, (method, path)


def test_page_has_no_inline_script_or_style_and_no_html_sinks() -> None:
    html = (STATIC / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/console/console.js" defer>']
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert ref.startswith("/console/"), ref  # served by the broker, never a CDN
    js = (STATIC / "console.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, sink
    assert "http://" not in js and "https://" not in js  # same origin only
    total = sum(f.stat().st_size for f in STATIC.iterdir())
    assert total < 100_000, f"the console's assets are {total} bytes: keep them small"


async def test_session_names_the_operator_and_the_markings(client_for: ClientFactory) -> None:
    low = await client_for("low-officer")
    s = (await low.request("GET", "/v1/console/session")).body
    assert (s["operator"], s["organisation"], s["clearance"]) == ("low-officer", "EUMAM", "EU:RESTRICTED")
    assert s["clearance_marking"] == "RESTREINT UE/EU RESTRICTED"
    assert (
        s["markings"]["NATO"][3] == "NATO SECRET" and s["markings"]["EU"][4] == "TRES SECRET UE/EU TOP SECRET"
    )
    assert s["organisations"] == ["EUMAM", "NSATU", "UDCG"]
    assert "accepted" in s["events"] and "status.update" in s["kinds"]
    assert s["audit"]["origin"].startswith("coord-broker/") and s["audit"]["keys"][0]["name"].startswith(
        "broker:"
    )


def test_package_exports() -> None:
    mod = importlib.import_module("broker.console")
    assert mod.__all__ == sorted(mod.__all__)
    assert all(hasattr(mod, name) for name in mod.__all__)


# ------------------------------------------------------------------------------------------- trail


async def test_trail_shows_each_organisation_and_redacts_like_the_tail(
    system: System, state: StatePaths, client_for: ClientFactory
) -> None:
    marker = "TRAIL-SECRET-MARKER-91ce"
    msg = message(label=SECRET_NSATU, body={"topic": marker, "state": "RED", "summary": marker})
    start = system.writer.tree.size
    assert (await (await client_for("nsatu-liaison")).post(sealed(state, msg))).status == 202

    op = await client_for("duty-officer")  # NSATU, NATO:SECRET
    r = await until(
        lambda: op.request("GET", f"/v1/console/trail?id={msg['id']}&from={start}"),
        lambda r: r.status == 200 and r.body["complete"],
        "the trail completes (NSATU delivered, EUMAM and UDCG withheld)",
    )
    t = r.body
    assert t["found"] and t["stopped"] == "complete" and t["accepted"]["actor"] == "nsatu-liaison"
    assert t["marking"] == "NATO SECRET // REL TO NSATU"
    assert t["content"]["topic"] == marker and "redacted" not in t
    orgs = {o["organisation"]: o for o in t["organisations"]}
    assert (orgs["NSATU"]["outcome"], orgs["NSATU"]["rule"]) == ("delivered", None)
    assert (orgs["EUMAM"]["outcome"], orgs["EUMAM"]["rule"]) == ("withheld", "releasability")
    assert (orgs["UDCG"]["outcome"], orgs["UDCG"]["rule"]) == ("withheld", "clearance")
    released, delivered = orgs["NSATU"]["steps"]
    assert (released["event"], delivered["event"]) == ("released", "delivered")
    assert released["latency_ms"] >= 0 and delivered["latency_ms"] >= 0
    assert delivered["since_accepted_ms"] == pytest.approx(
        released["latency_ms"] + delivered["latency_ms"], abs=0.01
    )
    assert t["accepted"]["index"] >= start

    # read from the start of the log, the same trail
    whole = (await op.request("GET", f"/v1/console/trail?id={msg['id']}")).body
    assert whole["organisations"] == t["organisations"] and whole["from"] == 0

    low = await client_for("low-officer")  # EUMAM, EU:RESTRICTED: neither cleared nor releasable
    r = await low.request("GET", f"/v1/console/trail?id={msg['id']}&from={start}")
    assert r.status == 200 and r.body["redacted"] is True and "content" not in r.body
    assert marker not in json.dumps(r.body)
    assert {o["organisation"]: o["outcome"] for o in r.body["organisations"]}["NSATU"] == "delivered"


async def test_trail_query_values(client_for: ClientFactory) -> None:
    op = await client_for("duty-officer")
    some = "00000000-0000-7000-8000-000000000000"
    for q in (
        "",
        "id=x",
        "id=01ABCDEF-0000-7000-8000-000000000000",
        f"id={some}&from=-1",
        f"id={some}&from=%C2%B2",
    ):
        r = await op.request("GET", "/v1/console/trail?" + q)
        assert r.status == 422, q
        assert r.body["type"] == "urn:coord:problem:invalid"
    unknown = await op.request("GET", f"/v1/console/trail?id={some}")
    assert unknown.status == 200 and unknown.body["found"] is False and "content" not in unknown.body
    assert unknown.body["stopped"] == "end-of-log"
    sender = await client_for("nsatu-liaison")
    assert (await sender.request("GET", f"/v1/console/trail?id={some}")).status == 403


# ------------------------------------------------------------------------------------------ record


async def test_record_bytes_hash_to_the_proofs_leaf_and_match_the_log(
    system: System, client_for: ClientFactory, bus: Bus
) -> None:
    op = await client_for("duty-officer")
    cp = await until(
        lambda: op.request("GET", "/v1/audit/checkpoint"),
        lambda r: r.status == 200 and r.body["size"] > 3,
        "a checkpoint over a few records",
    )
    size = cp.body["size"]
    exported = [
        ln for _, data in await read_log(bus, instance=system.holder.current.name) for ln in split_lines(data)
    ]
    records = [ln for ln in exported if ln.startswith(b'{"type":"record"')]
    for index in sorted({0, 1, size // 3, size // 2, size - 2, size - 1}):
        rec = await op.request("GET", f"/v1/console/record?index={index}")
        assert rec.status == 200 and rec.headers["Content-Type"].startswith("application/json")
        proof = (await op.request("GET", f"/v1/audit/proof?index={index}")).body
        assert hashlib.sha256(b"\x00" + records[index]).digest().hex() == _b64hex(proof["leaf_hash"])
        assert json.loads(records[index]) == rec.body
    reader = AuditLogReader(bus, system.writer.subject)
    for index in (0, size // 2, size - 1):
        line = await reader.record(index)
        assert line is not None and line.raw == records[index]
    got = [ln.record.index async for ln in reader.records_from(size - 3)]
    assert got[:3] == [size - 3, size - 2, size - 1] and got == sorted(got)
    assert await reader.record(10**12) is None
    assert (await op.request("GET", "/v1/console/record?index=999999999999")).status == 404
    assert (await op.request("GET", "/v1/console/record?index=x")).status == 422


def _b64hex(text: str) -> str:
    return base64.b64decode(text).hex()


# ---------------------------------------------------------------------------------------- /readyz


async def test_readyz_tells_processes_nats_streams_backlogs_and_natives(
    system: System, client_for: ClientFactory
) -> None:
    op = await client_for("duty-officer")
    r = await until(
        lambda: op.request("GET", "/readyz"),
        lambda r: r.status == 200 and all(v["reachable"] for v in r.body["native"].values()),
        "ready, every native system seen reachable",
    )
    d = r.body
    assert d["ready"] is True and d["bus"] == "connected" and d["errors"] == []
    assert d["gateway"]["processes"] == ["core"] and d["gateway"]["worker"] is None
    assert d["nats"]["connected"] and d["nats"]["version"]
    assert {s["name"] for s in d["streams"]} == {
        "COORD_ACCEPTED",
        "COORD_DELIVER",
        "COORD_AUDIT",
        "COORD_AUDIT_IN",
        "COORD_DEAD",
    }
    assert all(s["messages"] >= 0 and s["last_seq"] >= 0 for s in d["streams"])
    roles = {c["role"]: c for c in d["consumers"]}
    assert set(roles) == {"dispatcher", "adapter EUMAM", "adapter NSATU", "adapter UDCG", "audit inbox"}
    assert all(isinstance(c["lag"], int) for c in roles.values())
    assert d["dispatcher"]["lag"] == roles["dispatcher"]["lag"]
    assert set(d["backlog"]) == set(d["dead_letters"]) == {"EUMAM", "NSATU", "UDCG"}
    assert all(isinstance(v, int) for v in (*d["backlog"].values(), *d["dead_letters"].values()))
    assert isinstance(d["audit"]["tree_size"], int) and d["audit"]["queue_depth"] is not None

    stub = system.stubs["UDCG"]
    stub.set_down(True)  # answers 503: the adapter's next outbox poll sees it
    try:
        await until(
            lambda: op.request("GET", "/readyz"),
            lambda r: r.body["native"]["UDCG"]["reachable"] is False,
            "UDCG's native system unreachable",
        )
    finally:
        stub.set_down(False)
    r = await until(
        lambda: op.request("GET", "/readyz"),
        lambda r: r.body["native"]["UDCG"]["reachable"] is True,
        "UDCG's native system back",
    )
    assert r.status == 200  # a native system down never made the gateway not ready


# ------------------------------------------------------------------------------------- pure parts


def _rec(index: int, event: str, actor: str | None, time: str, reason: str | None = None) -> AuditRecord:
    return AuditRecord(
        index=index,
        time=time,
        broker="local",
        event=event,  # type: ignore[arg-type]
        message_id="m-1",
        kind="status.update",
        originator="NSATU",
        label=Label(policy="NATO", classification="RESTRICTED", releasable_to=["EUMAM", "NSATU"], caveats=[]),
        actor=actor,
        reason=reason,
        envelope_sha256=None,
    )


def test_trail_builder_outcomes_latencies_and_completion() -> None:
    t = Trail("m-1", ("EUMAM", "NSATU", "UDCG"))
    t.add(_rec(5, "accepted", "nsatu-liaison", "2026-11-26T10:00:00.000000Z"))
    t.add(_rec(6, "released", "EUMAM", "2026-11-26T10:00:00.010000Z"))
    t.add(_rec(7, "released", "NSATU", "2026-11-26T10:00:00.010000Z"))
    t.add(_rec(8, "withheld", "UDCG", "2026-11-26T10:00:00.010000Z", "releasability"))
    t.add(_rec(9, "delivered", "NSATU", "2026-11-26T10:00:00.250000Z"))
    assert not t.complete  # EUMAM is released, not delivered yet
    t.add(_rec(10, "accepted", "nsatu-liaison", "2026-11-26T10:00:00.000000Z"))  # a repeat after a crash
    t.add(_rec(11, "dead-lettered", "EUMAM", "2026-11-26T10:00:01.010000Z", "native-rejected-422"))
    assert t.complete
    doc = t.to_dict()
    assert doc["accepted"]["index"] == 5
    o = {x["organisation"]: x for x in doc["organisations"]}
    assert (o["UDCG"]["outcome"], o["UDCG"]["rule"]) == ("withheld", "releasability")
    assert (o["EUMAM"]["outcome"], o["EUMAM"]["rule"]) == ("dead-lettered", "native-rejected-422")
    assert [s["latency_ms"] for s in o["NSATU"]["steps"]] == [10.0, 240.0]
    assert (
        o["EUMAM"]["steps"][1]["latency_ms"] == 1000.0
        and o["EUMAM"]["steps"][1]["since_accepted_ms"] == 1010.0
    )
    other = Trail("m-2", ("NSATU",))
    other.add(_rec(1, "accepted", "x", "2026-11-26T10:00:00.000000Z"))  # another message: ignored
    assert other.to_dict()["found"] is False and other.to_dict()["organisations"] == []


def test_metrics_reading_merged_processes_and_natives() -> None:
    core, gw = Registry(), Registry()
    reach = core.labelled_gauge("coord_native_reachable", "x", ("organisation",))
    assert core.labelled_gauge("coord_native_reachable", "x", ("organisation",)) is reach  # one family
    reach.set("NSATU", value=1.0)
    reach.set("UDCG", value=0.0)
    core.gauge("coord_audit_queue_depth", "q", lambda: 3)
    core.gauge("coord_audit_tree_size", "t", lambda: 42)
    gw.counter("coord_http_requests_total", "r", ("path", "status")).inc("/x", "200")
    text = merge({"core": core.render(), "gateway-0": gw.render()})
    assert text.count("# TYPE coord_native_reachable gauge") == 1
    assert ("coord_native_reachable", {"process": "core", "organisation": "NSATU"}, 1.0) in samples(text)
    got = from_metrics(text, ["EUMAM", "NSATU", "UDCG"])
    assert got["processes"] == ["core", "gateway-0"]
    assert got["native"] == {
        "EUMAM": {"reachable": None},
        "NSATU": {"reachable": True},
        "UDCG": {"reachable": False},
    }
    assert got["audit"] == {"queue_depth": 3, "tree_size": 42}
    assert from_metrics(core.render(), ["NSATU"])["processes"] == ["core"]


def test_broker_tail_prints_a_body_once_and_later_events_on_one_line() -> None:
    body = {"topic": "Hub", "state": "GREEN", "summary": "BODY-ONCE"}
    base = {"message_id": "m-1", "kind": "status.update", "originator": "NSATU", "marking": "NATO RESTRICTED"}
    events = [
        {**base, "index": 1, "time": "t1", "event": "accepted", "actor": "nsatu-liaison", "content": body},
        {**base, "index": 2, "time": "t2", "event": "released", "actor": "EUMAM", "content": body},
        {
            **base,
            "index": 3,
            "time": "t3",
            "event": "withheld",
            "actor": "UDCG",
            "reason": "clearance",
            "content": body,
        },
        {**base, "index": 4, "time": "t4", "event": "delivered", "actor": "EUMAM", "content": body},
        {**base, "message_id": "m-2", "index": 5, "time": "t5", "event": "accepted", "redacted": True},
        {**base, "message_id": "m-2", "index": 6, "time": "t6", "event": "released", "redacted": True},
    ]
    show = Renderer(colour=False)
    out = io.StringIO()
    for e in events:
        print(show(e), file=out)
    text = out.getvalue()
    assert text.count("BODY-ONCE") == 1 and text.count("content redacted") == 1
    lines = text.splitlines()
    assert len(lines) == 1 + len(json.dumps(body, indent=2).splitlines()) + 3 + 1 + 1 + 1
    assert lines[-1].startswith("[NATO RESTRICTED] #6 t6 released")
    assert any("withheld" in ln and "reason=clearance" in ln for ln in lines)
