"""The operators' web console on the gateway: the page, its assets, and the two JSON views it adds.

    GET /console                        the page (broker/console/static/index.html)
    GET /console/{asset}                console.js, console.css, favicon.svg: fixed names, no others
    GET /v1/console/session             who the operator is, the ICD §2 marking tables, organisations,
                                        kinds, events, the audit log's origin and checkpoint keys
    GET /v1/console/trail?id=M[&from=N] message M's trail (broker/console/trail.py), read from the log
                                        from record N (default 0) until it is complete or the log ends
    GET /v1/console/record?index=N      record N's exact bytes, for the browser to hash into its leaf

Every one is for operators only (`require_operator`: a sender's certificate gets 403 problem+json),
over the gateway's mutual TLS, and read-only: there is no state-changing endpoint, so none needs a
CSRF token yet. Content reaches the page only through the tail and the trail, and both decide it the
same way, server side (`Tail.event`: ICD §2 rules 1-4 for this operator, under the policy in force
now); everything else it is sent holds no message body. Message ids and record indexes are the only
values that ever go into a URL.

`install` also puts the browser hardening headers on every response of the gateway (`SECURITY_HEADERS`):
a Content-Security-Policy with no inline script or style, `frame-ancestors 'none'`, `no-store`,
`nosniff`, no referrer, same-origin resource and opener policies.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import typing
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from aiohttp import web

from broker.audit.lookup import AuditLogReader
from broker.audit.records import Event
from broker.console.trail import Trail
from broker.errors import AuditFilesError, BusUnavailable, Problem
from broker.gateway.clients import record_index, require_operator
from broker.gateway.operators import AuditApi
from broker.policy.model import PolicySource
from schemas.clearance import CLASSIFICATIONS, EU_MARKINGS, NATO_MARKINGS, display_marking
from schemas.message import MESSAGE_TYPES

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'none'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}

ASSETS: dict[str, str] = {
    "index.html": "text/html",
    "console.js": "text/javascript",
    "console.css": "text/css",
    "favicon.svg": "image/svg+xml",
}

#: a trail reads at most this many records, and for at most this long, then answers with what it has;
#: at most TRAIL_AT_ONCE trails are read at a time per process (the others wait their turn)
TRAIL_SCAN_MAX = 200_000
TRAIL_TIMEOUT_S = 10.0
TRAIL_AT_ONCE = 2

_MESSAGE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _load_assets() -> dict[str, bytes]:
    folder = resources.files("broker.console") / "static"
    return {name: (folder / name).read_bytes() for name in ASSETS}


async def _harden(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value


def _index(q: Any, name: str, default: int | None = None) -> int:
    text = q.get(name)
    if text is None and default is not None:
        return default
    try:
        return record_index(text if text is not None else "")
    except ValueError:
        raise Problem(
            "invalid",
            f"{name}=N is required (a record index)",
            errors=[{"path": name, "message": "digits only"}],
        ) from None


@contextlib.asynccontextmanager
async def _bus_problem() -> AsyncIterator[None]:
    try:
        yield
    except BusUnavailable as exc:
        raise Problem("unavailable", "the audit log cannot be read now; retry", retry_after=1) from exc


class Console:
    """Use `install(app)` once, on the gateway's application."""

    def __init__(self, *, policy: PolicySource, api: AuditApi, log: AuditLogReader) -> None:
        self.policy = policy
        self.api = api
        self.log = log
        self.assets = _load_assets()
        self._trails = asyncio.Semaphore(TRAIL_AT_ONCE)

    def install(self, app: web.Application) -> None:
        app.on_response_prepare.append(_harden)
        app.router.add_get("/console", self.page)
        app.router.add_get("/console/{asset}", self.asset)
        app.router.add_get("/v1/console/session", self.session)
        app.router.add_get("/v1/console/trail", self.trail)
        app.router.add_get("/v1/console/record", self.record)

    async def page(self, request: web.Request) -> web.Response:
        require_operator(request, self.policy.current)
        return web.Response(body=self.assets["index.html"], content_type="text/html", charset="utf-8")

    async def asset(self, request: web.Request) -> web.Response:
        require_operator(request, self.policy.current)
        name = request.match_info["asset"]
        if name not in ASSETS or name == "index.html":
            raise Problem("not-found", f"no console asset {name!r}")
        charset = None if name.endswith(".svg") else "utf-8"
        return web.Response(body=self.assets[name], content_type=ASSETS[name], charset=charset)

    async def session(self, request: web.Request) -> web.Response:
        policy = self.policy.current
        op = require_operator(request, policy)
        cl = op.clearance
        return web.json_response(
            {
                "operator": op.id,
                "organisation": op.organisation,
                "clearance": str(cl),
                "clearance_marking": " // ".join(
                    [display_marking(cl.policy, cl.classification), *sorted(cl.caveats)]
                ),
                "classifications": list(CLASSIFICATIONS),
                "markings": {"NATO": list(NATO_MARKINGS), "EU": list(EU_MARKINGS)},
                "organisations": sorted(policy.organisations),
                "kinds": sorted(MESSAGE_TYPES),
                "events": list(typing.get_args(Event)),
                "audit": {
                    "origin": f"coord-broker/{policy.name}",
                    "signed": self._signed(),
                    "keys": [
                        {"name": name, "public_key": base64.b64encode(k.public_key).decode()}
                        for name, k in sorted(policy.broker_keys.items())
                    ],
                },
            }
        )

    def _signed(self) -> bool | None:
        """Whether a checkpoint has been signed (None: the audit files cannot tell now)."""
        try:
            return self.api.audit.checkpoint_note is not None
        except AuditFilesError:
            return None

    async def trail(self, request: web.Request) -> web.Response:
        policy = self.policy.current
        op = require_operator(request, policy)
        msg_id = request.query.get("id", "")
        if not _MESSAGE_ID.match(msg_id):
            raise Problem(
                "invalid", "id must be a message id", errors=[{"path": "id", "message": "a lowercase UUID"}]
            )
        start = _index(request.query, "from", default=0)
        trail = Trail(msg_id, tuple(sorted(policy.organisations)))
        scanned, stopped = 0, "end-of-log"
        try:
            async with self._trails, asyncio.timeout(TRAIL_TIMEOUT_S), _bus_problem():
                async with contextlib.aclosing(self.log.records_from(start)) as lines:
                    async for line in lines:
                        scanned += 1
                        trail.add(line.record)
                        if trail.complete:
                            stopped = "complete"
                            break
                        if scanned >= TRAIL_SCAN_MAX:
                            stopped = "limit"
                            break
        except TimeoutError:
            stopped = "time"
        doc = trail.to_dict()
        doc.update({"from": start, "scanned": scanned, "stopped": stopped})
        if trail.first is not None:
            # the tail's own decision, for this operator and the policy now: content or "redacted"
            event = await self.api.tail.event(self.policy.current, op, trail.first)
            doc["label"], doc["marking"] = event["label"], event["marking"]
            if "content" in event:
                doc["content"] = event["content"]
            else:
                doc["redacted"] = True
        return web.json_response(doc)

    async def record(self, request: web.Request) -> web.Response:
        require_operator(request, self.policy.current)
        index = _index(request.query, "index")
        async with _bus_problem():
            line = await self.log.record(index)
        if line is None:
            raise Problem("not-found", "no record with that index in the log")
        return web.Response(body=line.raw, content_type="application/json")
