"""`broker tail`: follow `GET /v1/tail` as an operator and render each event with its banner.

Every line starts with the event's marking (coloured by rank on a terminal); `--json` prints the raw
events, one a line. A message's body (or the note that it is redacted) is printed once, under the first
of its events the tail shows (`accepted`, unless `since` starts later); its later events (released,
withheld, delivered…) are one line each. Ctrl-C closes the stream and exits cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from typing import Any, TextIO

import aiohttp

from broker.identity.state import StatePaths
from broker.identity.tls import client_context
from schemas.clearance import RANK

_COLOURS = {0: "\x1b[32m", 1: "\x1b[36m", 2: "\x1b[34m", 3: "\x1b[31m", 4: "\x1b[35m"}
_RESET = "\x1b[0m"


#: message ids whose body was printed, remembered for this many messages (a long tail stays bounded)
SHOWN_MAX = 100_000


def render(event: dict[str, Any], *, colour: bool, body: bool = True) -> str:
    marking = event.get("marking", "UNLABELLED")
    label = event.get("label") or {}
    cls = label.get("classification")
    rank = RANK.get(cls) if isinstance(cls, str) else None
    banner = f"[{marking}]"
    if colour and rank is not None:
        banner = f"{_COLOURS[rank]}{banner}{_RESET}"
    parts = [f"#{event.get('index')}", str(event.get("time")), str(event.get("event"))]
    for key in ("kind", "originator", "actor", "reason", "message_id"):
        if event.get(key):
            parts.append(f"{key}={event[key]}")
    lines = [f"{banner} " + " ".join(parts)]
    if not body:
        return lines[0]
    if "content" in event:
        for ln in json.dumps(event["content"], indent=2, ensure_ascii=False).splitlines():
            lines.append(f"{banner}   {ln}")
    elif event.get("redacted") and event.get("message_id"):
        lines.append(f"{banner}   (content redacted: above your clearance or not releasable to you)")
    return "\n".join(lines)


class Renderer:
    """`render` with each message's body once: under its first event seen, never again (a `rejected`
    one does not count: a later send of the same id may still be accepted, with a body)."""

    def __init__(self, *, colour: bool) -> None:
        self.colour = colour
        self._shown: OrderedDict[str, None] = OrderedDict()

    def __call__(self, event: dict[str, Any]) -> str:
        msg_id = event.get("message_id")
        first = not isinstance(msg_id, str) or msg_id not in self._shown
        if isinstance(msg_id, str) and first and event.get("event") != "rejected":
            self._shown[msg_id] = None
            if len(self._shown) > SHOWN_MAX:
                self._shown.popitem(last=False)
        return render(event, colour=self.colour, body=first)


async def run_tail(paths: StatePaths, url: str, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    ctx = client_context(paths.ca_crt, paths.tls_crt(args.operator), paths.tls_key(args.operator))
    params = {"follow": "false" if args.no_follow else "true"}
    for key in ("kind", "originator", "since"):
        if getattr(args, key):
            params[key] = getattr(args, key)
    colour = out.isatty() and not args.json
    show = Renderer(colour=colour)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx), timeout=timeout) as s,
        s.get(url.rstrip("/") + "/v1/tail", params=params) as resp,
    ):
        if resp.status != 200:
            body = await resp.text()
            print(f"broker tail: {resp.status}: {body}", file=sys.stderr)
            return 1
        async for raw in resp.content:
            line = raw.decode("utf-8").rstrip("\n")
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            print(json.dumps(event) if args.json else show(event), file=out, flush=True)
    return 0
