"""Load generator and checker for the fault suite (issue: nothing acknowledged is ever lost).

The load generator posts fresh signed messages from several senders, with labels that release to
different sets of organisations, and retries a message that got no answer (connection refused or
reset, timeout, 5xx) with the very same envelope until it is answered: a 202 or a 200 `duplicate`
counts as acknowledged. The checker reads what each stub native system recorded and reports, per
organisation: lost (acknowledged, cleared, never delivered), unexpected (delivered, never
acknowledged), duplicated (delivered more than once) and misdelivered (delivered to an organisation
the access decision does not clear).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from adapters.formats import codec_for
from adapters.stub import StubNativeSystem
from broker.client import GatewayClient, build_message, seal_message
from broker.dispatch.dispatcher import decisions
from broker.identity.keys import load_signing_key
from broker.identity.state import StatePaths
from broker.identity.tls import client_context
from broker.policy.model import Policy
from schemas.message import MESSAGE_DECODER

SENDERS = {"nsatu-liaison": "NSATU", "eumam-liaison": "EUMAM", "udcg-liaison": "UDCG"}
LABELS: list[dict[str, Any]] = [
    {"policy": "NATO", "classification": "RESTRICTED", "releasable_to": ["EUMAM", "NSATU", "UDCG"]},
    {"policy": "EU", "classification": "RESTRICTED", "releasable_to": ["EUMAM", "NSATU", "UDCG"]},
    {"policy": "NATO", "classification": "CONFIDENTIAL", "releasable_to": ["EUMAM", "NSATU"]},
    {"policy": "NATO", "classification": "SECRET", "releasable_to": ["EUMAM", "NSATU", "UDCG"]},
]


@dataclass(frozen=True)
class Item:
    sender: str
    id: str
    envelope: bytes
    expected: frozenset[str]  # organisations the access decision clears


@dataclass
class LoadReport:
    sent: int = 0
    acknowledged: dict[str, frozenset[str]] = field(default_factory=dict)  # id -> orgs expected to receive it
    seq: dict[str, int] = field(default_factory=dict)  # id -> its sequence in COORD_ACCEPTED
    retries: int = 0
    ack_times: list[float] = field(default_factory=list)  # monotonic time of every first answer
    unanswered: int = 0  # gave up at the deadline without an answer
    refused: Counter[str] = field(default_factory=Counter)  # 4xx by status (should stay empty)


class LoadGenerator:
    """`rate` messages/s in total across `workers` connections, for `seconds`; then stops."""

    def __init__(
        self,
        state: StatePaths,
        policy: Policy,
        gateway_url: str,
        *,
        rate: float = 50.0,
        workers: int = 4,
        seed: int = 7,
    ) -> None:
        self.state = state
        self.policy = policy
        self.url = gateway_url
        self.rate = rate
        self.workers = workers
        self.rng = random.Random(seed)
        self.report = LoadReport()
        self._keys = {s: load_signing_key(state, s) for s in SENDERS}

    def _envelope(self) -> Item:
        sender = self.rng.choice(sorted(SENDERS))
        org = SENDERS[sender]
        cleared = self.policy.organisations[org].clearance.rank
        candidates = [lb for lb in LABELS if org in lb["releasable_to"] and _rank(lb) <= cleared]
        label = {**self.rng.choice(candidates), "caveats": []}
        msg = build_message(
            kind="status.update",
            sender=sender,
            originator=org,
            label=label,
            body={"topic": "fault-suite", "state": "GREEN", "summary": "load"},
        )
        keyid, key = self._keys[sender]
        env = seal_message(msg, keyid, key)
        decoded = MESSAGE_DECODER.decode(msgspec.json.encode(msg))
        expected = frozenset(d.organisation for d in decisions(self.policy, decoded) if d.rule is None)
        return Item(sender, msg["id"], env, expected)

    async def run(self, seconds: float, deadline_extra: float = 60.0) -> LoadReport:
        """Send for `seconds`; then keep retrying what is unanswered until `deadline_extra` passes."""
        queues = {s: asyncio.Queue[Item]() for s in SENDERS}
        stop_at = time.monotonic() + seconds
        give_up_at = stop_at + deadline_extra

        async def producer() -> None:
            interval = 1.0 / self.rate
            nxt = time.monotonic()
            while time.monotonic() < stop_at:
                item = self._envelope()
                await queues[item.sender].put(item)
                self.report.sent += 1
                nxt += interval
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))

        async def worker(sender: str) -> None:
            ctx = client_context(self.state.ca_crt, self.state.tls_crt(sender), self.state.tls_key(sender))
            client = GatewayClient(self.url, ctx, timeout_s=5.0)
            await client.__aenter__()
            try:
                q = queues[sender]
                while time.monotonic() < stop_at or not q.empty():
                    try:
                        item = await asyncio.wait_for(q.get(), 0.2)
                    except TimeoutError:
                        continue
                    await self._post_until_answered(client, item, give_up_at)
            finally:
                await client.aclose()

        tasks = [asyncio.create_task(worker(s)) for s in sorted(SENDERS) for _ in range(self.workers)]
        await producer()
        await asyncio.gather(*tasks)
        return self.report

    async def _post_until_answered(self, client: GatewayClient, item: Item, give_up_at: float) -> None:
        delay = 0.05
        while time.monotonic() < give_up_at:
            try:
                reply = await client.post(item.envelope)
            except (aiohttp.ClientError, TimeoutError, OSError):
                reply = None
            if reply is not None and reply.status in (200, 202):
                self.report.acknowledged[item.id] = item.expected
                self.report.seq[item.id] = int(reply.body["seq"])
                self.report.ack_times.append(time.monotonic())
                return
            if reply is not None and 400 <= reply.status < 500 and reply.status != 429:
                self.report.refused[str(reply.status)] += 1
                return
            self.report.retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        self.report.unanswered += 1


def longest_gap(times: Sequence[float], after: float) -> float:
    """The longest time without an acknowledgement from `after` on: how long the fault stalled intake."""
    ts = sorted(t for t in times if t >= after)
    if not ts:
        return 0.0
    return max([ts[0] - after, *(b - a for a, b in itertools.pairwise(ts))])


def _rank(label: Mapping[str, Any]) -> int:
    return ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET", "TOP SECRET"].index(
        label["classification"]
    )


@dataclass
class CheckResult:
    sent: int
    acknowledged: int
    delivered: dict[str, int]
    lost: list[tuple[str, str]]
    unexpected: list[tuple[str, str]]
    duplicated: list[tuple[str, str]]
    misdelivered: list[tuple[str, str]]
    misordered: list[tuple[str, str]]  # (org, id) delivered after a message accepted later

    @property
    def clean(self) -> bool:
        return not (self.lost or self.unexpected or self.duplicated or self.misdelivered or self.misordered)

    def row(self) -> str:
        per = ", ".join(f"{o} {n}" for o, n in sorted(self.delivered.items()))
        return (
            f"sent {self.sent}, acknowledged {self.acknowledged}, delivered {per}; lost {len(self.lost)}, "
            f"unexpected {len(self.unexpected)}, duplicated {len(self.duplicated)}, "
            f"misdelivered {len(self.misdelivered)}, misordered {len(self.misordered)}"
        )


def received_ids(stubs: Mapping[str, StubNativeSystem]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for org, stub in stubs.items():
        codec = codec_for(org.lower())
        ids: list[str] = []
        for doc in stub.received:
            ids += [m.ref or "" for m in codec.decode(doc.body)]
        out[org] = ids
    return out


def check(
    report: LoadReport, stubs: Mapping[str, StubNativeSystem], *, ignore: Sequence[str] = ()
) -> CheckResult:
    got = received_ids(stubs)
    acked = report.acknowledged
    lost, unexpected, duplicated, misdelivered = [], [], [], []
    for org, ids in got.items():
        counts = Counter(i for i in ids if i not in ignore)
        for i, n in counts.items():
            if n > 1:
                duplicated.append((org, i))
            if i not in acked:
                unexpected.append((org, i))
            elif org not in acked[i]:
                misdelivered.append((org, i))
    for i, orgs in acked.items():
        for org in orgs:
            if i not in got.get(org, ()):
                lost.append((org, i))
    return CheckResult(
        report.sent,
        len(acked),
        {o: len(set(v)) for o, v in got.items()},
        lost,
        unexpected,
        duplicated,
        misdelivered,
        misordered(got, report.seq),
    )


def misordered(got: Mapping[str, Sequence[str]], seq: Mapping[str, int]) -> list[tuple[str, str]]:
    """Each organisation must get its messages in the order the broker accepted them (stream
    sequence): every first arrival that comes after one accepted later is listed."""
    out = []
    for org, ids in got.items():
        seen: set[str] = set()
        highest = 0
        for i in ids:
            if i in seen or i not in seq:
                continue  # a repeat or an unexpected id: counted above
            seen.add(i)
            if seq[i] < highest:
                out.append((org, i))
            highest = max(highest, seq[i])
    return out


async def wait_delivered(report: LoadReport, stubs: Mapping[str, StubNativeSystem], timeout: float) -> float:
    """Seconds until every acknowledged message reached every cleared organisation (or timeout)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = {org: set(ids) for org, ids in received_ids(stubs).items()}
        if all(i in got.get(org, set()) for i, orgs in report.acknowledged.items() for org in orgs):
            return time.monotonic() - t0
        await asyncio.sleep(0.2)
    return time.monotonic() - t0


@contextlib.asynccontextmanager
async def stubs_for(orgs: Sequence[str], *, idempotent: bool = False) -> Any:
    async with contextlib.AsyncExitStack() as st:
        out = {}
        for org in orgs:
            codec = codec_for(org.lower())
            stub = StubNativeSystem(org.lower(), codec.media_type, idempotent=idempotent)
            out[org] = await st.enter_async_context(stub)
        yield out


@dataclass
class AuditCompleteness:
    missing: list[str]  # "accepted <id>", "released <id> <org>", "delivered <id> <org>"
    delivered_twice: list[tuple[str, str]]
    released_to_uncleared: list[tuple[str, str]]
    repeated_records: int  # accepted/released records written again after a crash (harmless)


def audit_completeness(lines: Sequence[bytes], report: LoadReport) -> AuditCompleteness:
    """Every acknowledged message has its `accepted`, and every cleared organisation its `released`
    and exactly one `delivered` record: the audit log proves what happened, not only that it is intact."""
    seen: Counter[tuple[str, str, str]] = Counter()
    for line in lines:
        rec = msgspec.json.decode(line)
        if rec.get("type") == "record" and rec.get("message_id") in report.acknowledged:
            actor = rec["actor"] if rec["event"] != "accepted" else ""
            seen[(rec["event"], rec["message_id"], actor)] += 1
    missing: list[str] = []
    for msg_id, orgs in report.acknowledged.items():
        if not seen[("accepted", msg_id, "")]:
            missing.append(f"accepted {msg_id}")
        for org in orgs:
            missing += [
                f"{ev} {msg_id} {org}" for ev in ("released", "delivered") if not seen[(ev, msg_id, org)]
            ]
    twice = [(i, o) for (ev, i, o), n in seen.items() if ev == "delivered" and n > 1]
    uncleared = [
        (i, o) for (ev, i, o) in seen if ev in ("released", "delivered") and o not in report.acknowledged[i]
    ]
    repeats = sum(n - 1 for (ev, _, _), n in seen.items() if ev in ("accepted", "released") and n > 1)
    return AuditCompleteness(missing, twice, uncleared, repeats)
