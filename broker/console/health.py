"""What `/readyz` reports beyond ready-or-not: processes, NATS, streams, consumers, backlogs, natives.

`/readyz` keeps its meaning (200 when the bus is connected and the streams exist, 503 otherwise); these
details only ride along in its JSON, for the console's health panel and for whoever looks. They come
from two places:

- NATS, through the operators' read identity (`coord-reader`, docs/nats-security.md): stream info of
  every broker stream (with its cluster leader and replicas), consumer info of the dispatcher's, each
  adapter's and the audit inbox's durables (`num_pending` not yet handed out, `num_ack_pending` handed
  out and not yet acknowledged: their sum is the backlog), and the dead letters per organisation;
- `/metrics` as this process renders it (every gateway process's and the core's, merged, with
  `--gateway-workers`): which processes report, each native system's reachability as its adapter last
  saw it (`coord_native_reachable`), the audit writer's queue and tree size.

Nothing here holds message content. One answer is kept for `ttl_s`, and NATS gets `timeout_s` in all,
so a probe polling `/readyz` cannot turn into a load on NATS or hang the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Callable
from typing import Any

from broker.errors import BusUnavailable
from broker.nats.bus import Bus
from broker.nats.inspect import consumer_summary, server_summary, stream_summary, subject_counts
from broker.nats.names import (
    ACCEPTED_STREAM,
    AUDIT_IN_STREAM,
    AUDIT_STREAM,
    DEAD_STREAM,
    DELIVERY_STREAM,
    DISPATCH_DURABLE,
    INBOX_DURABLE,
    adapter_durable,
    dead_subject,
)
from broker.policy.model import PolicySource

STREAMS = (ACCEPTED_STREAM, DELIVERY_STREAM, AUDIT_STREAM, AUDIT_IN_STREAM, DEAD_STREAM)
NATIVE_GAUGE = "coord_native_reachable"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a Prometheus text exposition: (name, labels, value); comments and junk skipped."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, value))
    return out


def from_metrics(text: str, organisations: list[str]) -> dict[str, Any]:
    found = samples(text)
    processes = sorted({lab["process"] for _, lab, _ in found if "process" in lab})
    native: dict[str, bool | None] = dict.fromkeys(organisations)
    queue = tree = None
    for name, lab, value in found:
        if name == NATIVE_GAUGE and "organisation" in lab:
            seen = native.get(lab["organisation"])
            native[lab["organisation"]] = bool(value) or bool(seen)  # one adapter per organisation
        elif name == "coord_audit_queue_depth":
            queue = int(value) + (queue or 0)
        elif name == "coord_audit_tree_size":
            tree = max(int(value), tree or 0)
    return {
        "processes": processes or ["core"],  # unlabelled: one process runs every part
        "native": {org: {"reachable": up} for org, up in sorted(native.items())},
        "audit": {"queue_depth": queue, "tree_size": tree},
    }


class Health:
    """`await health.details()`: the JSON `/readyz` adds (a dict of plain values)."""

    def __init__(
        self,
        bus: Bus,
        policy: PolicySource,
        render_metrics: Callable[[], str],
        *,
        worker: int | None = None,
        ttl_s: float = 1.0,
        timeout_s: float = 2.0,
    ) -> None:
        self.bus = bus
        self.policy = policy
        self.render_metrics = render_metrics
        self.worker = worker
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._at = -1e18
        self._doc: dict[str, Any] = {}

    async def details(self) -> dict[str, Any]:
        async with self._lock:  # one collection at a time; callers meanwhile get its result
            if time.monotonic() - self._at >= self.ttl_s:
                self._doc = await self._collect()
                self._at = time.monotonic()
            return self._doc

    async def _collect(self) -> dict[str, Any]:
        orgs = sorted(self.policy.current.organisations)
        errors: list[str] = []
        doc = from_metrics(self.render_metrics(), orgs)
        native, audit = doc.pop("native"), doc.pop("audit")
        out: dict[str, Any] = {
            "gateway": {"pid": os.getpid(), "worker": self.worker, "processes": doc["processes"]},
            "nats": server_summary(self.bus),
            "streams": [],
            "consumers": [],
            "dispatcher": None,
            "backlog": dict.fromkeys(orgs),
            "dead_letters": dict.fromkeys(orgs),
            "native": native,
            "audit": audit,
            "errors": errors,
        }
        if not self.bus.connected:
            errors.append("nats: not connected")
            return out
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._from_nats(out, orgs, errors)
        except TimeoutError:
            errors.append(f"nats: no complete answer within {self.timeout_s:g} s")
        return out

    async def _from_nats(self, out: dict[str, Any], orgs: list[str], errors: list[str]) -> None:
        async def stream(name: str) -> dict[str, Any]:
            try:
                return await stream_summary(self.bus, name)
            except BusUnavailable as exc:
                errors.append(str(exc))
                return {"name": name, "error": "no answer"}

        async def consumer(stream_name: str, durable: str, role: str) -> dict[str, Any]:
            try:
                c = await consumer_summary(self.bus, stream_name, durable, timeout=self.timeout_s)
            except BusUnavailable as exc:
                errors.append(str(exc))
                return {"stream": stream_name, "consumer": durable, "role": role, "error": "no answer"}
            return {
                "stream": stream_name,
                "consumer": durable,
                "role": role,
                **c,
                "lag": c["num_pending"] + c["num_ack_pending"],
            }

        async def dead() -> dict[str, int]:
            with contextlib.suppress(BusUnavailable):
                subjects = await subject_counts(self.bus, DEAD_STREAM, "coord.dead.>")
                return {org: subjects.get(dead_subject(org), 0) for org in orgs}
            errors.append("dead letters: no answer")
            return {}

        wanted = [
            (ACCEPTED_STREAM, DISPATCH_DURABLE, "dispatcher"),
            *((DELIVERY_STREAM, adapter_durable(org), f"adapter {org}") for org in orgs),
            (AUDIT_IN_STREAM, INBOX_DURABLE, "audit inbox"),
        ]
        streams, consumers, dead_by_org = await asyncio.gather(
            asyncio.gather(*(stream(s) for s in STREAMS)),
            asyncio.gather(*(consumer(s, d, r) for s, d, r in wanted)),
            dead(),
        )
        out["streams"], out["consumers"] = list(streams), list(consumers)
        for c in consumers:
            if "lag" not in c:
                continue
            if c["role"] == "dispatcher":
                out["dispatcher"] = {k: c[k] for k in ("lag", "num_pending", "num_ack_pending")}
            elif c["role"].startswith("adapter "):
                out["backlog"][c["role"][len("adapter ") :]] = c["lag"]
        out["dead_letters"].update(dead_by_org)
