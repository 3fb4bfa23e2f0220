"""The operators' console in a real browser: Debian's headless chromium driven by Playwright, against the
session's system over real mutual TLS (Playwright presents the operator's client certificate; the dev
CA is trusted with `ignore_https_errors`, which only skips the server-certificate check in this test
browser).

Every page is watched for console errors, page errors, and requests to any other origin; every
response body is recorded (and every server-sent event, through the DevTools protocol, since a
streamed response has no end to read), so a test can say a body reached the browser nowhere. Waits
are on the DOM, never fixed sleeps. Screenshots go to the test's own tmp_path; their paths are printed.

Run only these with `-m browser`. They are part of the default run: without chromium they fail and say
how to install it, they are never skipped.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from broker.app.system import System
from broker.audit.reader import read_log, split_lines
from broker.identity.state import StatePaths
from broker.nats.bus import Bus
from tests.conftest import ClientFactory
from tests.support.messages import message, sealed

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]
WAIT_MS = 20_000

NATO_R = {
    "policy": "NATO",
    "classification": "RESTRICTED",
    "releasable_to": ["EUMAM", "NSATU"],
    "caveats": [],
}
EU_R = {"policy": "EU", "classification": "RESTRICTED", "releasable_to": ["EUMAM", "NSATU"], "caveats": []}
NATO_S = {"policy": "NATO", "classification": "SECRET", "releasable_to": ["NSATU"], "caveats": []}


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the console's browser tests need Debian's chromium "
            "(as root: apt-get install -y chromium; .ci/run does it). Never `playwright install`."
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover - the [test] extra installs it
        pytest.fail("playwright is missing: .venv/bin/pip install -e '.[test]'")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


@dataclass
class Watched:
    """A page and what it did: console errors, requests, every response body and event received."""

    page: Any
    origin: str
    response: Any = None  # of the page's own load
    errors: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    bodies: dict[str, list[bytes]] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    pending: list[asyncio.Task[None]] = field(default_factory=list)

    async def received(self) -> bytes:
        """Everything the server sent this page so far: bodies and server-sent events."""
        await asyncio.gather(*self.pending)
        chunks = [b for bs in self.bodies.values() for b in bs]
        return b"\n".join([*chunks, *(e.encode() for e in self.events)])

    def sent_content(self, marker: str) -> bool:
        return any(marker in e for e in self.events)


@asynccontextmanager
async def console(
    browser: Any, system: System, state: StatePaths, who: str, *, path: str = "/console"
) -> AsyncIterator[Watched]:
    origin = system.gateway_url
    ctx = await browser.new_context(
        ignore_https_errors=True,
        viewport={"width": 1360, "height": 860},
        client_certificates=[
            {"origin": origin, "certPath": str(state.tls_crt(who)), "keyPath": str(state.tls_key(who))}
        ],
    )
    page = await ctx.new_page()
    w = Watched(page, origin)
    page.on(
        "console",
        lambda m: (
            w.errors.append(f"console {m.type}: {m.text} ({m.location.get('url')})")
            if m.type == "error"
            else None
        ),
    )
    page.on("pageerror", lambda e: w.errors.append(f"pageerror: {e}"))
    page.on("request", lambda r: w.urls.append(r.url))

    async def keep(resp: Any) -> None:
        if "text/event-stream" in (resp.headers.get("content-type") or ""):
            return  # a stream has no end to read: its events are recorded below
        try:
            body = await resp.body()
        except Exception:  # a response cut short by navigation: nothing was delivered to read
            return
        w.bodies.setdefault(resp.url, []).append(body)

    page.on("response", lambda r: w.pending.append(asyncio.ensure_future(keep(r))))
    cdp = await ctx.new_cdp_session(page)
    await cdp.send("Network.enable")
    cdp.on("Network.eventSourceMessageReceived", lambda e: w.events.append(e["data"]))
    try:
        w.response = await page.goto(origin + path)
        yield w
        await asyncio.gather(*w.pending)
        foreign = [u for u in w.urls if f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" != origin]
        assert foreign == [], f"requests to another origin: {foreign}"
        assert w.errors == [], w.errors
    finally:
        await ctx.close()


async def live(w: Watched, since: int) -> None:
    """Restart the page's tail at record `since` and wait until it is live."""
    await w.page.wait_for_selector("#conn.live", timeout=WAIT_MS)
    await w.page.fill("#f-since", str(since))
    await w.page.click("#apply")
    await w.page.wait_for_selector("#conn.live", timeout=WAIT_MS)


async def post(client_for: ClientFactory, state: StatePaths, msg: dict[str, Any]) -> str:
    reply = await (await client_for(msg["sender"])).post(sealed(state, msg))
    assert reply.status == 202, reply.body
    return str(msg["id"])


async def banner(w: Watched, text: str, rank: str) -> None:
    for where in ("#banner-top", "#banner-bottom"):
        await w.page.wait_for_function(
            "([sel, text, rank]) => { const b = document.querySelector(sel);"
            " return b.textContent === text && b.dataset.rank === rank; }",
            arg=[where, text, rank],
            timeout=WAIT_MS,
        )


def shot(w: Watched, tmp_path: Path, name: str) -> Any:
    path = tmp_path / f"{name}.png"
    print(f"screenshot: {path}")
    return w.page.screenshot(path=str(path), full_page=False)


def row(msg_id: str) -> str:
    return f'article.msg[data-id="{msg_id}"]'


# -------------------------------------------------------------------------------------------- tests


async def test_page_loads_for_an_operator_and_is_refused_for_a_sender(
    browser: Any, system: System, state: StatePaths, tmp_path: Path
) -> None:
    async with console(browser, system, state, "duty-officer") as w:
        assert w.response.status == 200
        csp = w.response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        await w.page.wait_for_selector("#conn.live", timeout=WAIT_MS)
        who = await w.page.text_content("#who")
        assert who == "duty-officer (NSATU), cleared NATO SECRET"
        assert await w.page.title() == "Operators' console \u2014 coordination broker"
        await shot(w, tmp_path, "console-loaded")

    ctx = await browser.new_context(
        ignore_https_errors=True,
        client_certificates=[
            {
                "origin": system.gateway_url,
                "certPath": str(state.tls_crt("nsatu-liaison")),
                "keyPath": str(state.tls_key("nsatu-liaison")),
            }
        ],
    )
    try:
        page = await ctx.new_page()
        resp = await page.goto(system.gateway_url + "/console")
        assert resp.status == 403
        assert resp.headers["content-type"].startswith("application/problem+json")
        problem = json.loads(await resp.body())
        assert problem["type"] == "urn:coord:problem:forbidden"
        assert await page.query_selector("#banner-top") is None  # no console for a sender
    finally:
        await ctx.close()


async def test_banners_show_the_highest_marking_on_screen_in_nato_and_eu_forms(
    browser: Any, system: System, state: StatePaths, client_for: ClientFactory, tmp_path: Path
) -> None:
    async with console(browser, system, state, "duty-officer") as w:
        await live(w, system.writer.tree.size)
        await banner(w, "UNCLASSIFIED", "none")  # nothing held yet

        # posted while the page is open: the row appears, with its content and its own marking
        eu = await post(client_for, state, message(sender="eumam-liaison", originator="EUMAM", label=EU_R))
        await w.page.wait_for_selector(f"{row(eu)} pre.content", state="attached", timeout=WAIT_MS)
        chip = await w.page.text_content(f"{row(eu)} .row .chip")
        assert chip == "RESTREINT UE/EU RESTRICTED // REL TO EUMAM, NSATU"
        await banner(w, "RESTREINT UE/EU RESTRICTED", "1")

        nato = await post(client_for, state, message(label=NATO_R))
        await w.page.wait_for_selector(f"{row(nato)} pre.content", state="attached", timeout=WAIT_MS)
        await banner(w, "NATO RESTRICTED \u00b7 RESTREINT UE/EU RESTRICTED", "1")  # equal ranks: both forms

        secret = await post(client_for, state, message(label=NATO_S))
        await w.page.wait_for_selector(f"{row(secret)} pre.content", state="attached", timeout=WAIT_MS)
        await banner(w, "NATO SECRET", "3")
        assert "rank-3" in (await w.page.get_attribute("#banner-bottom", "class") or "")
        assert await w.page.text_content(f"{row(secret)} .row .chip") == "NATO SECRET // REL TO NSATU"
        # each event carries its own marking too
        await w.page.click(f"{row(secret)} .row")
        markings = await w.page.eval_on_selector_all(
            f"{row(secret)} .events .chip", "els => els.map(e => e.textContent)"
        )
        assert markings and set(markings) == {"NATO SECRET // REL TO NSATU"}
        await shot(w, tmp_path, "console-banners")

        # hiding rows keeps their content in the page, and the banner with it; Clear drops both
        await w.page.select_option("#f-org", "UDCG")
        await w.page.uncheck('#f-events input[value="withheld"]')
        await w.page.wait_for_selector(f"{row(secret)}.filtered", state="attached", timeout=WAIT_MS)
        await banner(w, "NATO SECRET", "3")
        await w.page.click("#clear")
        await banner(w, "UNCLASSIFIED", "none")


async def test_low_clearance_sees_redacted_and_the_content_reaches_the_browser_nowhere(
    browser: Any, system: System, state: StatePaths, client_for: ClientFactory, tmp_path: Path
) -> None:
    hidden = "LOW-MUST-NOT-SEE-5b2e"
    shown = "LOW-MAY-SEE-0c7d"
    async with console(browser, system, state, "low-officer") as w:  # EUMAM, EU:RESTRICTED
        await live(w, system.writer.tree.size)
        secret = await post(
            client_for,
            state,
            message(label=NATO_S, body={"topic": hidden, "state": "RED", "summary": hidden}),
        )
        await w.page.wait_for_selector(f"{row(secret)} .detail .redacted", state="attached", timeout=WAIT_MS)
        await w.page.click(f"{row(secret)} .row")
        text = await w.page.text_content(f"{row(secret)} .detail .redacted")
        assert text is not None and text.startswith("redacted")
        assert await w.page.text_content(f"{row(secret)} .row .chip") == "NATO SECRET // REL TO NSATU"
        await banner(w, "UNCLASSIFIED", "none")  # a redacted row holds no content

        await w.page.click(f"{row(secret)} .trail-btn")
        await w.page.wait_for_selector(
            '#trail tr[data-org="NSATU"][data-outcome="delivered"]', timeout=WAIT_MS
        )
        assert (await w.page.text_content("#trail .redacted") or "").startswith("redacted")

        ok = await post(
            client_for,
            state,
            message(label=NATO_R, body={"topic": shown, "state": "GREEN", "summary": shown}),
        )
        await w.page.wait_for_selector(f"{row(ok)} pre.content", state="attached", timeout=WAIT_MS)
        await banner(w, "NATO RESTRICTED", "1")
        await shot(w, tmp_path, "console-low-clearance")

        dom = await w.page.content()
        received = await w.received()
        assert hidden not in dom and hidden.encode() not in received
        assert not [u for u in w.urls if hidden in u or shown in u]  # no content in any URL
        # the recording sees content when it is sent: the cleared body came through the tail
        assert shown in dom and w.sent_content(shown)
        assert any("/v1/console/trail" in u for u in w.bodies)


async def test_trail_shows_each_organisation_with_the_rule_of_each_withholding(
    browser: Any, system: System, state: StatePaths, client_for: ClientFactory, tmp_path: Path
) -> None:
    async with console(browser, system, state, "duty-officer") as w:
        await live(w, system.writer.tree.size)
        shared = await post(client_for, state, message(label=NATO_R))
        secret = await post(client_for, state, message(label=NATO_S))
        await w.page.wait_for_selector(f"{row(secret)} pre.content", state="attached", timeout=WAIT_MS)
        await w.page.click(f"{row(secret)} .row")
        await w.page.click(f"{row(secret)} .trail-btn")
        # the trail follows the message: it is shown pending and updated as deliveries land
        await w.page.wait_for_selector(
            '#trail tr[data-org="NSATU"][data-outcome="delivered"]', timeout=WAIT_MS
        )
        outcomes = await w.page.eval_on_selector_all(
            "#trail tr[data-org]",
            "trs => trs.map(tr => [tr.dataset.org, tr.querySelector('.outcome').textContent,"
            " tr.querySelector('.rule').textContent, tr.querySelector('.steps').textContent])",
        )
        got = {org: (outcome, rule) for org, outcome, rule, _ in outcomes}
        assert got == {
            "EUMAM": ("withheld", "releasability"),
            "NSATU": ("delivered", ""),
            "UDCG": ("withheld", "clearance"),
        }
        steps = {org: s for org, _, _, s in outcomes}
        assert "released #" in steps["NSATU"] and "delivered #" in steps["NSATU"] and " ms" in steps["NSATU"]
        assert "withheld #" in steps["UDCG"]
        assert "accepted" in (await w.page.text_content("#trail dl") or "")
        assert (await w.page.text_content("#trail pre.content") or "").find("Hub Rzeszow") >= 0
        await shot(w, tmp_path, "console-trail")

        # a client-side filter: only deliveries to EUMAM; the secret message was never delivered there
        for ev in (
            "accepted",
            "released",
            "withheld",
            "tail-opened",
            "tail-closed",
            "rejected",
            "dead-lettered",
        ):
            await w.page.uncheck(f'#f-events input[value="{ev}"]')
        await w.page.select_option("#f-org", "EUMAM")
        await w.page.wait_for_selector(
            f'{row(shared)} li[data-event="delivered"][data-actor="EUMAM"]', state="attached", timeout=WAIT_MS
        )
        await w.page.wait_for_selector(f"{row(shared)}:not(.filtered)", timeout=WAIT_MS)
        await w.page.wait_for_selector(f"{row(secret)}.filtered", state="attached", timeout=WAIT_MS)


async def test_pause_holds_the_stream_and_resume_catches_up(
    browser: Any, system: System, state: StatePaths, client_for: ClientFactory
) -> None:
    async with console(browser, system, state, "duty-officer") as w:
        await live(w, system.writer.tree.size)
        before = await post(client_for, state, message(label=NATO_R))
        await w.page.wait_for_selector(row(before), state="attached", timeout=WAIT_MS)
        await w.page.click("#pause")
        await w.page.wait_for_selector("#conn.paused", timeout=WAIT_MS)
        during = await post(client_for, state, message(label=NATO_R))
        # evidence that it would have shown by now: the broker has recorded its delivery
        op = await client_for("duty-officer")
        for _ in range(300):
            t = (await op.request("GET", f"/v1/console/trail?id={during}")).body
            if t["complete"]:
                break
            await asyncio.sleep(0.1)
        assert t["complete"]
        assert await w.page.query_selector(row(during)) is None
        await w.page.click("#pause")  # Resume
        await w.page.wait_for_selector(row(during), state="attached", timeout=WAIT_MS)
        await w.page.wait_for_selector("#conn.live", timeout=WAIT_MS)
        # caught up from where it stopped: each event once
        n = await w.page.eval_on_selector_all(f'{row(during)} li[data-event="accepted"]', "els => els.length")
        assert n == 1


async def test_health_panel_shows_streams_backlogs_and_native_systems(
    browser: Any, system: System, state: StatePaths, tmp_path: Path
) -> None:
    async with console(browser, system, state, "duty-officer") as w:
        await w.page.wait_for_selector("#conn.live", timeout=WAIT_MS)
        await w.page.click("#tab-btn-health")
        await w.page.wait_for_selector("#health-ready.ok", timeout=WAIT_MS)
        for org in ("EUMAM", "NSATU", "UDCG"):
            await w.page.wait_for_selector(
                f'.health-orgs tr[data-org="{org}"][data-native="true"]', timeout=WAIT_MS
            )
        streams = await w.page.eval_on_selector_all(
            ".health-streams tr td:first-child", "tds => tds.map(t => t.textContent)"
        )
        assert sorted(streams) == [
            "COORD_ACCEPTED",
            "COORD_AUDIT",
            "COORD_AUDIT_IN",
            "COORD_DEAD",
            "COORD_DELIVER",
        ]
        roles = await w.page.eval_on_selector_all(
            ".health-consumers tr td:first-child", "tds => tds.map(t => t.textContent)"
        )
        assert "dispatcher" in roles and "adapter UDCG" in roles
        assert "dispatcher lag:" in (await w.page.text_content("#health") or "")
        system.stubs["UDCG"].set_down(True)
        try:
            await w.page.wait_for_selector(
                '.health-orgs tr[data-org="UDCG"][data-native="false"]', timeout=WAIT_MS
            )
            await shot(w, tmp_path, "console-health")
        finally:
            system.stubs["UDCG"].set_down(False)
        await w.page.wait_for_selector(
            '.health-orgs tr[data-org="UDCG"][data-native="true"]', timeout=WAIT_MS
        )


def _flip_proof(body: bytes) -> bytes:
    doc = json.loads(body)
    first = bytearray(base64.b64decode(doc["proof"][0]))
    first[7] ^= 0x01
    doc["proof"][0] = base64.b64encode(bytes(first)).decode()
    return json.dumps(doc).encode()


def _flip_signature(body: bytes) -> bytes:
    doc = json.loads(body)
    head, _, sig_line = doc["checkpoint"].rstrip("\n").rpartition("\n")
    prefix, _, b64sig = sig_line.rpartition(" ")
    raw = bytearray(base64.b64decode(b64sig))
    raw[-1] ^= 0x01  # the signature's last byte; the key ID before it still names the key
    doc["checkpoint"] = f"{head}\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"
    return json.dumps(doc).encode()


async def test_a_proof_verifies_in_the_browser_and_a_tampered_one_fails(
    browser: Any, system: System, state: StatePaths, tmp_path: Path
) -> None:
    async with console(browser, system, state, "duty-officer") as w:
        await w.page.wait_for_selector("#conn.live", timeout=WAIT_MS)
        await w.page.click("#tab-btn-audit")
        await w.page.wait_for_selector("#checkpoint[data-size]", timeout=WAIT_MS)
        size = int(await w.page.get_attribute("#checkpoint", "data-size") or "0")
        assert size >= 8, "the session's log has a few records by now"
        index = size // 2 + 1

        async def prove() -> list[tuple[str, str]]:
            await w.page.fill("#prove-index", str(index))
            await w.page.eval_on_selector("#proof-verdict", "v => { delete v.dataset.result; }")
            await w.page.click("#prove")
            await w.page.wait_for_selector("#proof-verdict[data-result]", timeout=WAIT_MS)
            return [
                (c[0], c[1])
                for c in await w.page.eval_on_selector_all(
                    "#proof-checks li", "lis => lis.map(li => [li.dataset.check, li.textContent])"
                )
            ]

        checks = await prove()
        assert await w.page.get_attribute("#proof-verdict", "data-result") == "ok"
        assert [state_ for state_, _ in checks] == ["ok"] * len(checks) and len(checks) == 6
        assert any("Ed25519 signature" in text and "verifies" in text for _, text in checks)
        assert (await w.page.text_content("#proof-verdict") or "").startswith("VERIFIED")
        await shot(w, tmp_path, "console-proof")

        for tamper, failing in ((_flip_proof, "inclusion path"), (_flip_signature, "Ed25519 signature")):

            def tampering(tamper: Any) -> Any:
                async def handle(route: Any) -> None:
                    resp = await route.fetch()
                    await route.fulfill(response=resp, body=tamper(await resp.body()))

                return handle

            await w.page.route("**/v1/audit/proof?*", tampering(tamper))
            checks = await prove()
            assert await w.page.get_attribute("#proof-verdict", "data-result") == "fail"
            assert (await w.page.text_content("#proof-verdict") or "").startswith("FAILED")
            failed = [text for s, text in checks if s == "fail"]
            assert len(failed) == 1 and failing in failed[0], checks
            await w.page.unroute("**/v1/audit/proof?*")
        await shot(w, tmp_path, "console-proof-tampered")

        # and from the stream: "prove" on an event of the oldest row (under the checkpoint by now)
        await w.page.click("#tab-btn-stream")
        oldest = "#rows > article.msg:last-child"
        await w.page.wait_for_selector(f"{oldest} .prove-btn", state="attached", timeout=WAIT_MS)
        wanted = await w.page.get_attribute(f"{oldest} .prove-btn", "data-index")
        await w.page.eval_on_selector("#proof-verdict", "v => { delete v.dataset.result; }")
        await w.page.click(f"{oldest} .row")
        await w.page.click(f"{oldest} .prove-btn")
        await w.page.wait_for_selector("#proof-verdict[data-result]", timeout=WAIT_MS)
        assert await w.page.get_attribute("#proof-verdict", "data-result") == "ok"
        assert await w.page.input_value("#prove-index") == wanted


async def test_closing_the_page_ends_its_tail_on_the_server(
    browser: Any, system: System, state: StatePaths, bus: Bus
) -> None:
    """A closed tab is noticed within about a second even when the log is quiet (no write to fail):
    `tail-closed` is recorded and the handler ends, instead of lingering until shutdown."""
    instance = system.holder.current.name

    async def tail_events(event: str) -> list[int]:
        lines = [ln for _, data in await read_log(bus, instance=instance) for ln in split_lines(data)]
        recs = [json.loads(ln) for ln in lines if ln.startswith(b'{"type":"record"')]
        return [r["index"] for r in recs if r["event"] == event and r["actor"] == "secret-officer"]

    opened_before = len(await tail_events("tail-opened"))
    closed_before = len(await tail_events("tail-closed"))
    async with console(browser, system, state, "secret-officer") as w:
        await w.page.wait_for_selector("#conn.live", timeout=WAIT_MS)
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while len(await tail_events("tail-opened")) <= opened_before:  # the page's tail is on the server
            assert loop.time() < end, "the page's tail-opened was never recorded"
            await asyncio.sleep(0.1)
    end = loop.time() + 10
    while len(await tail_events("tail-closed")) <= closed_before:
        assert loop.time() < end, "closing the page did not end its tail on the server"
        await asyncio.sleep(0.1)


NO_ED25519 = """
(() => {
  const real = crypto.subtle.importKey.bind(crypto.subtle);
  crypto.subtle.importKey = (format, key, alg, ...rest) =>
    (alg && (alg === "Ed25519" || alg.name === "Ed25519"))
      ? Promise.reject(new DOMException("no Ed25519 here", "NotSupportedError"))
      : real(format, key, alg, ...rest);
})();
"""


async def test_without_ed25519_in_webcrypto_the_proof_says_the_signature_was_not_checked(
    browser: Any, system: System, state: StatePaths
) -> None:
    async with console(browser, system, state, "duty-officer") as w:
        await w.page.add_init_script(NO_ED25519)  # as a browser without Ed25519 would be
        await w.page.reload()
        await w.page.wait_for_selector("#conn.live", timeout=WAIT_MS)
        await w.page.click("#tab-btn-audit")
        await w.page.wait_for_selector("#checkpoint[data-size]", timeout=WAIT_MS)
        await w.page.fill("#prove-index", "1")
        await w.page.click("#prove")
        await w.page.wait_for_selector("#proof-verdict[data-result]", timeout=WAIT_MS)
        assert await w.page.get_attribute("#proof-verdict", "data-result") == "ok"
        verdict = await w.page.text_content("#proof-verdict") or ""
        assert "inclusion verified; signature not checked" in verdict
        states = await w.page.eval_on_selector_all(
            "#proof-checks li", "lis => lis.map(li => li.dataset.check)"
        )
        assert states == ["ok", "ok", "ok", "ok", "ok", "skip"]
