"""`broker up --demo`: a short coordination scenario through the whole running system.

UDCG pledges air-defence items (a CSV row from its native system), NSATU tracks their delivery,
EUMAM offers training (an XML document from its native system), NSATU requests it, and a lesson
learned is shared. Labels differ, so some bodies are withheld from some organisations. At the end it
prints, per organisation, what its native system received and what was withheld and why, read back
from the audit log.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from adapters.formats import DeliveredMessage, codec_for, sample_bodies
from broker.audit.reader import read_log, split_lines
from broker.audit.records import RECORD_DECODER
from broker.client import GatewayClient, build_message, seal_message, uuid7
from broker.clock import rfc3339, utcnow
from broker.identity.keys import load_signing_key
from broker.identity.tls import client_context
from broker.rules.labels import label_marking
from schemas.label import Label

if TYPE_CHECKING:
    from broker.app.system import System


@dataclass(frozen=True, slots=True)
class Step:
    title: str
    via: str  # a liaison sender id, or "native:<org>"
    kind: str
    label: dict[str, Any]
    body: dict[str, Any]


def _label(policy: str, cls: str, rel: list[str], caveats: list[str] | None = None) -> dict[str, Any]:
    return {"policy": policy, "classification": cls, "releasable_to": rel, "caveats": caveats or []}


ALL = ["EUMAM", "NSATU", "UDCG"]


def scenario() -> list[Step]:
    s = sample_bodies()
    return [
        Step(
            "UDCG pledges air-defence items (CSV from the UDCG liaison system)",
            "native:UDCG",
            "capability.pledge",
            _label("NATO", "RESTRICTED", ALL),
            s["capability.pledge"],
        ),
        Step(
            "NSATU tracks the delivery (NATO SECRET: UDCG is cleared to CONFIDENTIAL)",
            "nsatu-liaison",
            "delivery.status",
            _label("NATO", "SECRET", ALL),
            s["delivery.status"],
        ),
        Step(
            "EUMAM offers training (XML from the EUMAM liaison system)",
            "native:EUMAM",
            "training.offer",
            _label("EU", "RESTRICTED", ALL),
            s["training.offer"],
        ),
        Step(
            "NSATU requests the training (releasable to EUMAM and NSATU only)",
            "nsatu-liaison",
            "training.request",
            _label("NATO", "RESTRICTED", ["EUMAM", "NSATU"]),
            s["training.request"],
        ),
        Step(
            "A lesson learned is shared with everyone",
            "eumam-liaison",
            "lesson.learned",
            _label("EU", "UNCLASSIFIED", ALL),
            s["lesson.learned"],
        ),
        Step(
            "A lesson learned under a caveat nobody holds",
            "udcg-liaison",
            "lesson.learned",
            _label("NATO", "RESTRICTED", ALL, ["JATEC-ONLY"]),
            s["lesson.learned"],
        ),
    ]


async def _post(system: System, sender: str, msg: dict[str, Any]) -> int:
    paths = system.paths
    keyid, key = load_signing_key(paths, sender)
    ctx = client_context(paths.ca_crt, paths.tls_crt(sender), paths.tls_key(sender))
    async with GatewayClient(system.gateway_url, ctx) as gw:
        reply = await gw.post(seal_message(msg, keyid, key))
    return reply.status


def _native_doc(org: str, step: Step) -> bytes:
    codec = codec_for(org.lower())
    dm = DeliveredMessage(
        id=uuid7(),
        kind=step.kind,
        originator=org,
        sender=f"{org.lower()}-liaison",
        created=rfc3339(utcnow()),
        label=msgspec.convert(step.label, Label),
        body=step.body,
    )
    return codec.encode(dm)


async def run_demo(system: System, out: TextIO, timeout_s: float = 60.0) -> None:
    print("\n== demo: coordination of support ==", file=out)
    audit_start = system.writer.tree.size
    expected_decisions = 0
    for i, step in enumerate(scenario(), 1):
        marking = label_marking(msgspec.convert(step.label, Label))
        if step.via.startswith("native:"):
            org = step.via.split(":", 1)[1]
            system.stubs[org].emit(_native_doc(org, step))
            how = f"{org} native system"
        else:
            org = system.holder.current.senders[step.via].organisation
            msg = build_message(
                kind=step.kind, sender=step.via, originator=org, label=step.label, body=step.body
            )
            status = await _post(system, step.via, msg)
            how = f"{step.via} (HTTP {status})"
        expected_decisions += len(system.holder.current.organisations)
        print(f"  {i}. {step.title}\n     [{marking}] {step.kind} via {how}", file=out)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    records: list[Any] = []
    while loop.time() < deadline:
        records = await _records_since(system, audit_start)
        decided = sum(1 for r in records if r.event in ("released", "withheld"))
        released = sum(1 for r in records if r.event == "released")
        delivered = sum(1 for r in records if r.event in ("delivered", "dead-lettered"))
        if decided >= expected_decisions and delivered >= released:
            break
        await asyncio.sleep(0.2)
    print("\n== what each organisation got ==", file=out)
    for org in sorted(system.holder.current.organisations):
        print(f"  {org}", file=out)
        for r in records:
            if r.actor != org or r.event not in ("delivered", "withheld", "dead-lettered"):
                continue
            mark = label_marking(r.label) if r.label is not None else "UNLABELLED"
            if r.event == "delivered":
                print(f"    received  {r.kind:<18} {r.message_id}  [{mark}]", file=out)
            else:
                print(f"    {r.event:<9} {r.kind:<18} {r.message_id}  [{mark}]  rule: {r.reason}", file=out)
    print("", file=out, flush=True)


async def _records_since(system: System, start: int) -> list[Any]:
    out = []
    for _, data in await read_log(system.writer.bus, instance=system.writer.instance):
        for line in split_lines(data):
            if line.startswith(b'{"type":"record"'):
                rec = RECORD_DECODER.decode(line)
                if rec.index >= start:
                    out.append(rec)
    return out
