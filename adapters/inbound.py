"""An adapter's inbound side: documents from its native system into the broker.

Polls the native system's outbox, decodes each document strictly with
the codec, and posts each message through the gateway as the adapter's own sender (signed, mutual
TLS). A refused document is reported in `inbound_errors` and the log, and nothing of it is
published. The outbox cursor is kept in a file, advanced only after the gateway answered.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from pathlib import Path

import aiohttp
import msgspec
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.formats import Codec
from adapters.outbound import AdapterStats
from broker.aio import AsyncResource, Backoff
from broker.client import GatewayClient, build_message, seal_message
from broker.errors import FormatError
from schemas.ids import MESSAGE_ID

__all__ = ["Inbound"]

log = structlog.get_logger(__name__)


def _message_id(ref: str | None) -> str | None:
    """A native `in_reply_to` that quotes a broker message id (a delivered document's `ref`) is kept as
    the message's `in_reply_to`; a native system's own document ids mean nothing to the broker."""
    return ref if MESSAGE_ID.matches(ref) else None


class Inbound(AsyncResource):
    """Polls `native_url`'s outbox and posts each document's messages as the adapter's own sender."""

    def __init__(
        self,
        *,
        org: str,
        codec: Codec,
        native_url: str,
        http: aiohttp.ClientSession,
        sender: str,
        keyid: str,
        key: Ed25519PrivateKey,
        gateway: GatewayClient,
        state_dir: Path,
        stats: AdapterStats,
        saw_native: Callable[[int | None], None],
        poll_s: float,
        max_backoff_s: float,
    ) -> None:
        self.org = org
        self.codec = codec
        self.native_url = native_url
        self.http = http
        self.sender = sender
        self.keyid = keyid
        self.key = key
        self.gateway = gateway
        self.state_dir = state_dir
        self.stats = stats
        self.saw_native = saw_native  # what the adapter's reachability gauge is told
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s

    async def _open(self) -> None:
        self._spawn(self._run(), f"adapter-{self.org.lower()}-in")

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

    async def _run(self) -> None:
        cursor = self._read_cursor()
        while True:
            try:
                async with self.http.get(self.native_url + "/outbox", params={"after": str(cursor)}) as resp:
                    self.saw_native(resp.status)
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
                self.saw_native(None)
                log.info("adapter.native_outbox_unreachable", org=self.org, error=type(exc).__name__)
                await asyncio.sleep(self.poll_s * 5)

    async def _publish_native(self, seq: int, doc: bytes) -> None:
        try:
            natives = self.codec.decode(doc)
        except FormatError as exc:
            self.stats.inbound_errors.append(f"document {seq}: {exc}")
            log.warning("adapter.native_refused", org=self.org, seq=seq, error=str(exc))
            return
        envelopes = []
        for n in natives:
            msg = build_message(
                kind=n.kind,
                sender=self.sender,
                originator=self.org,
                label=msgspec.to_builtins(n.label),
                body=n.body,
                in_reply_to=_message_id(n.in_reply_to),
            )
            envelopes.append(seal_message(msg, self.keyid, self.key))
        for env in envelopes:
            backoff = Backoff(0.2, self.max_backoff_s)
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
                await backoff.sleep()  # gateway or bus down, or rate-limited: same envelope, same id
