"""The one small base every adapter (NSATU, EUMAM, UDCG) runs on: outbound and inbound.

Outbound (broker -> native): binds to its durable pull consumer of `coord.deliver.<ORG>.<rank>.>` (made by
the admin identity, filtered to the organisation's clearance ranks) with one message in flight, so
each originator's messages reach the native system in the order they were accepted.
For each delivery: `verify_delivery` (both signatures, the access decision for this organisation),
then a check of the organisation's delivered-ids bucket (a JetStream key-value bucket: a redelivery
never reaches the native system twice), the codec's rendering, and `POST /inbox` with the message
id as `Idempotency-Key`. A native system that is down is retried with backoff for as long as it
takes (the delivery is kept in progress meanwhile, so JetStream does not hand it to anyone else);
one that refuses a document permanently (4xx) sends it to the dead-letter stream, audited
`dead-lettered`. Only then is the delivery acknowledged and audited `delivered`.

Inbound (native -> broker): polls the native system's outbox, decodes each document strictly with
the codec, and posts each message through the gateway as the adapter's own sender (signed, mutual
TLS). A refused document is reported in `inbound_errors` and the log, and nothing of it is
published. The outbox cursor is kept in a file, advanced only after the gateway answered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import msgspec
import nats.errors
import nats.js.errors
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.msg import Msg

from adapters.formats import Codec, DeliveredMessage, NativeFormatError
from adapters.verify import DeliveryRefused, verify_delivery
from broker.aio import stop_task
from broker.audit.records import AuditEvent, AuditSink
from broker.bus import DELIVERY_STREAM, HDR_DIGEST, MSG_ID, Bus, pull_forever, translate_errors
from broker.client import GatewayClient, build_message, seal_message
from broker.clock import rfc3339, utcnow
from broker.errors import MarkingError
from broker.metrics import Registry
from broker.nats_auth import adapter_durable, delivered_bucket
from broker.web_gateway import PolicySource

log = structlog.get_logger(__name__)

_MESSAGE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _message_id(ref: str | None) -> str | None:
    """A native `in_reply_to` that quotes a broker message id (a delivered document's `ref`) is kept as
    the message's `in_reply_to`; a native system's own document ids mean nothing to the broker."""
    return ref if ref is not None and _MESSAGE_ID.match(ref) else None


@dataclass(frozen=True, slots=True)
class AdapterIdentity:
    sender: str
    keyid: str
    key: Ed25519PrivateKey


@dataclass
class AdapterStats:
    delivered: int = 0
    dead_lettered: int = 0
    duplicates_skipped: int = 0
    native_retries: int = 0
    published: int = 0
    inbound_errors: list[str] = field(default_factory=list)


class Adapter:
    """Bridges one organisation's native system and the broker, both ways."""

    def __init__(
        self,
        *,
        org: str,
        codec: Codec,
        native_url: str,
        bus: Bus,
        policy: PolicySource,
        audit: AuditSink,
        identity: AdapterIdentity | None,
        gateway: GatewayClient | None,
        state_dir: Path,
        ack_wait_s: float = 30.0,
        poll_s: float = 0.2,
        max_backoff_s: float = 5.0,
        metrics: Registry | None = None,
    ) -> None:
        self.org = org
        self.codec = codec
        self.native_url = native_url.rstrip("/")
        self.bus = bus
        self.policy = policy
        self.audit = audit
        self.identity = identity
        self.gateway = gateway
        self.state_dir = state_dir
        self.ack_wait_s = ack_wait_s
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self.stats = AdapterStats()
        # 1: the native system answered its last request (inbox or outbox) other than 408/429/5xx;
        # 0: no answer, or "retry later". Unset until the first request (the console's health panel)
        self.m_reachable = (metrics or Registry()).labelled_gauge(
            "coord_native_reachable", "native system answering, as its adapter last saw it", ("organisation",)
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._kv: Any = None

    @property
    def durable(self) -> str:
        return adapter_durable(self.org)

    async def __aenter__(self) -> Adapter:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._tasks.append(asyncio.create_task(self._outbound(), name=f"{self.durable}-out"))
        if self.identity is not None and self.gateway is not None:
            self._tasks.append(asyncio.create_task(self._inbound(), name=f"{self.durable}-in"))
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.gather(*(stop_task(t) for t in self._tasks))
        self._tasks.clear()
        if self._http is not None:
            await self._http.close()

    # -- outbound ---------------------------------------------------------------------------------

    async def _setup_outbound(self) -> Any:
        await self.bus.wait_ready()
        js = self.bus.js
        # The bucket and the durable consumer (filtered to this organisation's deliveries up to its
        # clearance) are made by the admin identity (broker.nats_auth.provision): an adapter may only
        # bind to them, so even a compromised adapter cannot widen what it reads.
        with translate_errors("adapter setup"):
            self._kv = await js.key_value(delivered_bucket(self.org))
            return await js.pull_subscribe_bind(durable=self.durable, stream=DELIVERY_STREAM)

    async def _outbound(self) -> None:
        await pull_forever(self.bus, self._setup_outbound, self._deliver_batch, batch=1, what=self.durable)

    async def _deliver_batch(self, msgs: list[Msg]) -> None:
        for m in msgs:
            async with self._kept_in_progress(m):
                await self._deliver(m)

    @contextlib.asynccontextmanager
    async def _kept_in_progress(self, m: Msg) -> AsyncIterator[None]:
        """Tell JetStream, every third of the ack wait, that the delivery is still being worked on, so a
        slow hand-over is never taken for a lost one and given to another consumer of the durable."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.ack_wait_s / 3)
                with contextlib.suppress(Exception):
                    await m.in_progress()

        task = asyncio.create_task(beat(), name=f"{self.durable}-in-progress")
        try:
            yield
        finally:
            await stop_task(task)

    async def _deliver(self, m: Msg) -> None:
        digest = (m.headers or {}).get(HDR_DIGEST)
        policy = self.policy.current
        try:
            msg = verify_delivery(m.data, self.org, policy)
        except DeliveryRefused as r:
            log.warning("adapter.delivery_refused", org=self.org, reason=r.reason)
            await self._dead_letter(m, r.message, r.reason, digest)
            return
        if await self._already_delivered(msg.id):
            self.stats.duplicates_skipped += 1
            await m.ack_sync()
            return
        dm = DeliveredMessage(
            id=msg.id,
            kind=msg.kind,
            originator=msg.originator,
            sender=msg.sender,
            created=msg.created,
            label=msg.label,
            body=msgspec.to_builtins(msg.body),
            in_reply_to=msg.in_reply_to,
        )
        try:
            doc = self.codec.encode(dm)
        except (NativeFormatError, MarkingError):
            await self._dead_letter(m, msg, "unrenderable", digest)
            return
        try:
            status = await self._post_native(m, msg.id, doc)
        except DeliveryRefused as r:  # the policy changed while the native system was unavailable
            log.warning("adapter.delivery_refused", org=self.org, reason=r.reason)
            await self._dead_letter(m, r.message, r.reason, digest)
            return
        if status >= 400:
            await self._dead_letter(m, msg, f"native-rejected-{status}", digest)
            return
        # The delivered-id and the audit record are both made durable before the ack, concurrently:
        # two fsynced writes in parallel instead of one after the other.
        done = await self.audit.record(self._event("delivered", msg, None, digest))
        with translate_errors("record delivered"):
            await asyncio.gather(self._kv.put(msg.id, b"1"), done)
        await m.ack_sync()
        self.stats.delivered += 1

    async def _already_delivered(self, msg_id: str) -> bool:
        try:
            await self._kv.get(msg_id)
        except nats.js.errors.KeyNotFoundError:
            return False
        return True

    async def _post_native(self, m: Msg, msg_id: str, doc: bytes) -> int:
        """POST until the native system answers for good: 2xx, or a permanent 4xx (returned). Before each
        retry the delivery is verified again with the policy in force (raises DeliveryRefused)."""
        assert self._http is not None  # noqa: S101 - set in __aenter__
        delay = 0.1
        while True:
            try:
                async with self._http.post(
                    self.native_url + "/inbox",
                    data=doc,
                    headers={"Content-Type": self.codec.media_type, "Idempotency-Key": msg_id},
                ) as resp:
                    self._saw_native(resp.status)
                    if resp.status < 300:
                        return resp.status
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        return resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._saw_native(None)
                log.info("adapter.native_unreachable", org=self.org, error=type(exc).__name__)
            self.stats.native_retries += 1
            with contextlib.suppress(Exception):
                await m.in_progress()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
            verify_delivery(m.data, self.org, self.policy.current)

    def _saw_native(self, status: int | None) -> None:
        up = status is not None and status < 500 and status not in (408, 429)
        self.m_reachable.set(self.org, value=1.0 if up else 0.0)

    async def _dead_letter(self, m: Msg, msg: Any, reason: str, digest: str | None) -> None:
        headers = {
            MSG_ID: f"dead-{m.metadata.sequence.stream}-{self.org}",
            "Coord-Reason": reason,
            "Coord-Organisation": self.org,
        }
        with translate_errors("dead letter"):
            await self.bus.js.publish(f"coord.dead.{self.org}", m.data, headers=headers)
        done = await self.audit.record(self._event("dead-lettered", msg, reason, digest))
        await done
        await m.ack_sync()
        self.stats.dead_lettered += 1

    def _event(self, name: str, msg: Any, reason: str | None, digest: str | None) -> AuditEvent:
        return AuditEvent(
            event=name,  # type: ignore[arg-type]  # "delivered" or "dead-lettered"
            time=rfc3339(utcnow()),
            message_id=msg.id if msg is not None else None,
            kind=msg.kind if msg is not None else None,
            originator=msg.originator if msg is not None else None,
            label=msg.label if msg is not None else None,
            actor=self.org,
            reason=reason,
            envelope_sha256=digest,
        )

    # -- inbound ----------------------------------------------------------------------------------

    @property
    def _cursor_file(self) -> Path:
        return self.state_dir / "outbox.cursor"

    def _read_cursor(self) -> int:
        try:
            return int(self._cursor_file.read_text().strip() or "0")
        except FileNotFoundError:
            return 0

    def _write_cursor(self, n: int) -> None:
        tmp = self._cursor_file.with_suffix(".tmp")
        tmp.write_text(str(n))
        os.replace(tmp, self._cursor_file)

    async def _inbound(self) -> None:
        assert self._http is not None  # noqa: S101 - set in __aenter__
        cursor = self._read_cursor()
        while True:
            try:
                async with self._http.get(self.native_url + "/outbox", params={"after": str(cursor)}) as resp:
                    self._saw_native(resp.status)
                    if resp.status != 200:
                        await asyncio.sleep(self.poll_s * 5)
                        continue
                    page = await resp.json()
                for item in page["items"]:
                    await self._publish_native(int(item["seq"]), base64.b64decode(item["body_b64"]))
                    cursor = int(item["seq"])
                    self._write_cursor(cursor)
                if not page["items"]:
                    await asyncio.sleep(self.poll_s)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._saw_native(None)
                log.info("adapter.native_outbox_unreachable", org=self.org, error=type(exc).__name__)
                await asyncio.sleep(self.poll_s * 5)

    async def _publish_native(self, seq: int, doc: bytes) -> None:
        assert self.identity is not None and self.gateway is not None  # noqa: S101 - checked by caller
        try:
            natives = self.codec.decode(doc)
        except (NativeFormatError, MarkingError) as exc:
            self.stats.inbound_errors.append(f"document {seq}: {exc}")
            log.warning("adapter.native_refused", org=self.org, seq=seq, error=str(exc))
            return
        envelopes = []
        for n in natives:
            msg = build_message(
                kind=n.kind,
                sender=self.identity.sender,
                originator=self.org,
                label=msgspec.to_builtins(n.label),
                body=n.body,
                in_reply_to=_message_id(n.in_reply_to),
            )
            envelopes.append(seal_message(msg, self.identity.keyid, self.identity.key))
        for env in envelopes:
            delay = 0.2
            while True:
                try:
                    reply = await self.gateway.post(env)
                except (aiohttp.ClientError, TimeoutError):
                    reply = None
                if reply is not None and reply.status in (200, 202):
                    self.stats.published += 1
                    break
                if reply is not None and reply.status < 500 and reply.status != 429:
                    problem = reply.body if isinstance(reply.body, dict) else {}
                    self.stats.inbound_errors.append(
                        f"document {seq}: gateway refused: {problem.get('type')}"
                    )
                    log.warning("adapter.gateway_refused", org=self.org, seq=seq, problem=problem.get("type"))
                    break
                await asyncio.sleep(delay)  # gateway or bus down, or rate-limited: same envelope, same id
                delay = min(delay * 2, self.max_backoff_s)
